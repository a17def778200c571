package fetch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/netip"
)

// BlockedReason exposes the address classification to the black-box tests,
// which cannot reach public addresses offline.
func BlockedReason(ip netip.Addr) string { return blockedReason(ip) }

// SetLookup replaces the resolver the proxy path uses, so that tests can
// have names resolve to what they need without a DNS server.
func SetLookup(f *Fetcher, lookup func(ctx context.Context, host string) ([]netip.Addr, error)) {
	f.dialer.lookup = lookup
}

// TrustRoots makes f trust the test servers' certificates.
func TrustRoots(f *Fetcher, pool *x509.CertPool) {
	f.client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool}
}

package fetch_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/fetch"
	"github.com/imaginebot/imaginebot/core/netproxy"
	"github.com/imaginebot/imaginebot/core/netproxy/netproxytest"
)

// The image downloads through each kind of proxy keep the guarantee of a
// direct one: the target is resolved and checked before the proxy hears of
// it, and the proxy is asked for the checked address, not the name.

// proxied is a Fetcher through p whose names resolve with hosts (any other
// name fails to resolve), so that no test needs DNS.
func proxied(t *testing.T, p *netproxytest.Proxy, cfg fetch.Config, hosts map[string][]string) *fetch.Fetcher {
	t.Helper()
	var opts []netproxy.Option
	if p.Pool != nil {
		opts = append(opts, netproxy.WithTLSConfig(&tls.Config{RootCAs: p.Pool}))
	}
	f := fetch.New(cfg, fetch.WithProxy(netproxy.NewDialer(p.URL, opts...)))
	if hosts != nil {
		fetch.SetLookup(f, func(_ context.Context, host string) ([]netip.Addr, error) {
			addrs, ok := hosts[strings.ToLower(host)]
			if !ok {
				return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
			}
			var out []netip.Addr
			for _, a := range addrs {
				out = append(out, netip.MustParseAddr(a))
			}
			return out, nil
		})
	}
	return f
}

// counting serves body and counts the requests.
func counting(body []byte) (http.Handler, *atomic.Int32) {
	var n atomic.Int32
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(body)
	}), &n
}

func TestFetchThroughProxy(t *testing.T) {
	body := pngData(t)
	for _, scheme := range netproxy.Schemes {
		t.Run(scheme, func(t *testing.T) {
			t.Run("http image by name", func(t *testing.T) {
				h, _ := counting(body)
				_, port := newServer(t, h)
				p := netproxytest.New(t, scheme, netproxytest.WithAuth("alice", "pw"))
				// Allowed by the address it resolves to, so the check runs.
				f := proxied(t, p, fetch.Config{AllowedHosts: []string{"127.0.0.0/8"}}, map[string][]string{"img.test": {"127.0.0.1"}})
				img, err := f.Fetch(context.Background(), "http://img.test:"+port+"/fox.png?sig=a%2Fb")
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(img.Data, body) {
					t.Fatalf("got %d bytes", len(img.Data))
				}
				asked := p.Requests()
				if len(asked) != 1 || asked[0].Target != "127.0.0.1:"+port || asked[0].Kind == http.MethodGet {
					t.Fatalf("proxy was asked %+v, want one tunnel to the checked address", asked)
				}
				if asked[0].First != "GET /fox.png?sig=a%2Fb HTTP/1.1" {
					t.Fatalf("tunnel carried %q", asked[0].First)
				}
			})
			t.Run("https image keeps the host name for TLS", func(t *testing.T) {
				var serverName atomic.Value
				srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					serverName.Store(r.TLS.ServerName)
					_, _ = w.Write(body)
				}))
				t.Cleanup(srv.Close)
				_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
				p := netproxytest.New(t, scheme)
				// example.com is a name the test certificate holds.
				f := proxied(t, p, fetch.Config{AllowedHosts: []string{"127.0.0.1/32"}}, map[string][]string{"example.com": {"127.0.0.1"}})
				pool := x509.NewCertPool()
				pool.AddCert(srv.Certificate())
				fetch.TrustRoots(f, pool)
				if _, err := f.Fetch(context.Background(), "https://example.com:"+port+"/fox.png"); err != nil {
					t.Fatal(err)
				}
				if got := serverName.Load(); got != "example.com" {
					t.Fatalf("TLS server name %v, want example.com", got)
				}
				if asked := p.Requests(); len(asked) != 1 || asked[0].Target != "127.0.0.1:"+port || asked[0].First != "" {
					t.Fatalf("proxy was asked %+v", asked)
				}
			})
		})
	}
}

func TestFetchThroughProxyRefusesPrivateAddresses(t *testing.T) {
	body := pngData(t)
	for _, scheme := range netproxy.Schemes {
		t.Run(scheme, func(t *testing.T) {
			h, hits := counting(body)
			_, port := newServer(t, h)
			tests := []struct {
				name    string
				url     string
				allowed []string
				hosts   map[string][]string
			}{
				{"loopback literal", "http://127.0.0.1:" + port + "/a.png", nil, nil},
				{"mapped literal", "http://[::ffff:127.0.0.1]:" + port + "/a.png", nil, nil},
				{"name resolving to loopback", "http://internal.test:" + port + "/a.png", nil, map[string][]string{"internal.test": {"127.0.0.1"}}},
				{"every address private", "http://lan.test:" + port + "/a.png", nil, map[string][]string{"lan.test": {"10.0.0.7", "::1", "169.254.169.254"}}},
				// The real resolver, the name every host has.
				{"localhost", "http://localhost:" + port + "/a.png", nil, nil},
				{"allowed name is not an allowed address", "http://img.test:" + port + "/a.png", []string{"127.0.0.1"}, map[string][]string{"img.test": {"127.0.0.1"}}},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					p := netproxytest.New(t, scheme)
					f := proxied(t, p, fetch.Config{AllowedHosts: tt.allowed}, tt.hosts)
					_, err := f.Fetch(context.Background(), tt.url)
					wantRejected(t, err, fetch.ErrBlockedAddress)
					if asked := p.Requests(); len(asked) != 0 {
						t.Fatalf("the proxy was asked %+v", asked)
					}
				})
			}
			if n := hits.Load(); n != 0 {
				t.Fatalf("the private server got %d requests", n)
			}
		})
	}
}

// A name is never handed to the proxy, which would resolve it again: it
// gets the address that was checked, whatever the name resolves to later.
func TestFetchThroughProxyAsksForTheCheckedAddress(t *testing.T) {
	for _, scheme := range netproxy.Schemes {
		t.Run(scheme, func(t *testing.T) {
			p := netproxytest.New(t, scheme)
			// 203.0.113.0/24 is public as far as the guard knows (TEST-NET-3);
			// the test proxy refuses it rather than connecting anywhere.
			f := proxied(t, p, fetch.Config{}, map[string][]string{
				"rebind.test": {"127.0.0.1", "203.0.113.10"},
			})
			_, err := f.Fetch(context.Background(), "http://rebind.test:8080/a.png")
			if core.ErrorCode(err) != core.CodeUpstreamFailed {
				t.Fatalf("err = %v, want the proxy's refusal as a network failure", err)
			}
			asked := p.Requests()
			if len(asked) != 1 || asked[0].Target != "203.0.113.10:8080" || !asked[0].Refused {
				t.Fatalf("proxy was asked %+v, want only the public address", asked)
			}
		})
	}
}

func TestFetchThroughProxyRedirectToPrivate(t *testing.T) {
	for _, scheme := range netproxy.Schemes {
		t.Run(scheme, func(t *testing.T) {
			secret, hits := counting(pngData(t))
			_, secretPort := newServer(t, secret)
			_, port := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://metadata.test:"+secretPort+"/latest", http.StatusFound)
			}))
			p := netproxytest.New(t, scheme)
			f := proxied(t, p, fetch.Config{AllowedHosts: []string{"cdn.test"}}, map[string][]string{
				"cdn.test": {"127.0.0.1"}, "metadata.test": {"127.0.0.1"},
			})
			_, err := f.Fetch(context.Background(), "http://cdn.test:"+port+"/a.png")
			wantRejected(t, err, fetch.ErrBlockedAddress)
			if asked := p.AskedPort(secretPort); len(asked) != 0 || hits.Load() != 0 {
				t.Fatalf("the redirect target was reached: %+v, %d hits", asked, hits.Load())
			}
			if asked := p.Asked("127.0.0.1:" + port); len(asked) != 1 {
				t.Fatalf("the allowed host went %+v", p.Requests())
			}
		})
	}
}

// A proxy that is down is a network failure, worth a retry, not a refusal.
func TestFetchThroughProxyDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	u, _ := netproxy.Parse("socks5://" + addr)
	f := fetch.New(allowLoopback(fetch.Config{}), fetch.WithProxy(netproxy.NewDialer(u)))
	_, err = f.Fetch(context.Background(), "http://127.0.0.1:9/a.png")
	if core.ErrorCode(err) != core.CodeUpstreamFailed || !strings.Contains(err.Error(), addr) {
		t.Fatalf("err = %v", err)
	}
}

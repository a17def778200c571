package fetch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// allowlist holds the hosts that may reach addresses the guard otherwise
// refuses (a self-hosted gateway on the LAN, say).
type allowlist struct {
	names map[string]bool // lower-case host names, no trailing dot
	addrs map[netip.Addr]bool
	cidrs []netip.Prefix
}

// parseAllowlist splits entries into names, IP literals and CIDRs, and
// reports the entries it could not use.
func parseAllowlist(entries []string) (allowlist, []error) {
	a := allowlist{names: map[string]bool{}, addrs: map[netip.Addr]bool{}}
	var errs []error
	for _, raw := range entries {
		e := strings.TrimSpace(raw)
		switch {
		case e == "":
			errs = append(errs, errors.New("fetch: allowed host: empty entry"))
		case strings.Contains(e, "/"):
			p, err := netip.ParsePrefix(e)
			if err != nil {
				errs = append(errs, fmt.Errorf("fetch: allowed host %q: not a CIDR: %w", e, err))
				continue
			}
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			a.cidrs = append(a.cidrs, p.Masked())
		default:
			if ip, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil {
				a.addrs[ip.WithZone("").Unmap()] = true
				continue
			}
			if strings.ContainsAny(e, ":@?#* \t") {
				errs = append(errs, fmt.Errorf("fetch: allowed host %q: want a bare host name, IP or CIDR (no scheme, port or wildcard)", e))
				continue
			}
			a.names[strings.TrimSuffix(strings.ToLower(e), ".")] = true
		}
	}
	return a, errs
}

// allowsHost reports whether the host named in the URL (before resolution)
// is allowed by name or IP literal.
func (a allowlist) allowsHost(host string) bool {
	if ip, err := netip.ParseAddr(host); err == nil {
		return a.addrs[ip.WithZone("").Unmap()] || a.allowsIP(ip)
	}
	return a.names[strings.TrimSuffix(strings.ToLower(host), ".")]
}

// allowsIP reports whether a resolved address is inside an allowed CIDR.
func (a allowlist) allowsIP(ip netip.Addr) bool {
	ip = ip.WithZone("").Unmap()
	for _, p := range a.cidrs {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// dialer picks, per connection, between an open dialer (for allowed hosts)
// and a guarded one whose Control hook vets the address actually being
// connected to. Checking there, after resolution, is what covers redirects
// and DNS rebinding: a name that resolved to a public address for a check
// made earlier can resolve to 127.0.0.1 by the time we connect.
//
// Through a proxy there is no connect of ours to vet: the dialer resolves
// the name itself, checks the addresses and asks the proxy for a checked
// one (dialProxy).
type dialer struct {
	allow   allowlist
	open    *net.Dialer
	guarded *net.Dialer
	proxy   ProxyDialer
	lookup  func(ctx context.Context, host string) ([]netip.Addr, error)
}

// maxProxyTries caps the addresses of one name tried through the proxy, as
// a direct dial tries a primary and a fallback: a proxy that is down would
// otherwise be dialled once per address.
const maxProxyTries = 2

func newDialer(allow allowlist, proxy ProxyDialer) *dialer {
	d := &dialer{
		allow: allow,
		open:  &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second},
		proxy: proxy,
		lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		},
	}
	d.guarded = &net.Dialer{
		Timeout:        30 * time.Second,
		KeepAlive:      30 * time.Second,
		ControlContext: d.control,
	}
	return d
}

// DialContext is the Transport's dialer; addr is the URL's host:port (the
// Transport has no proxy of its own), so the allowlist is checked against
// what the URL named, not against what it resolved to.
func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("fetch: dial %q: %w", addr, err)
	}
	if d.proxy != nil {
		return d.dialProxy(ctx, network, host, port)
	}
	if d.allow.allowsHost(host) {
		return d.open.DialContext(ctx, network, addr)
	}
	// An IP literal needs no resolution: refuse it before creating a socket.
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := d.check(ip); err != nil {
			return nil, fmt.Errorf("dial %s %s: %w", network, addr, err)
		}
	}
	return d.guarded.DialContext(ctx, network, addr)
}

// dialProxy connects through the proxy to an address of host that passed
// the check, made here before the proxy hears of it. The proxy is asked for
// that IP, so what it connects to is what was checked: it resolves nothing.
func (d *dialer) dialProxy(ctx context.Context, network, host, port string) (net.Conn, error) {
	addr := net.JoinHostPort(host, port)
	ips, err := d.resolve(ctx, network, host)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", network, addr, err)
	}
	// Named in the allowlist: its addresses may be private.
	trusted := d.allow.allowsHost(host)
	var blocked, failed error
	tried := 0
	for _, ip := range ips {
		if !trusted {
			if err := d.check(ip); err != nil {
				blocked = cmp.Or(blocked, err)
				continue
			}
		}
		if tried == maxProxyTries {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("dial %s %s: %w", network, addr, err)
		}
		tried++
		conn, err := d.proxy.DialContext(ctx, "tcp", net.JoinHostPort(ip.WithZone("").Unmap().String(), port))
		if err == nil {
			return conn, nil
		}
		failed = cmp.Or(failed, err)
	}
	if failed != nil {
		// A refusal of the proxy's is a network failure, not a blocked
		// address, even when another address of the name was blocked.
		return nil, fmt.Errorf("dial %s %s through the proxy: %w", network, addr, failed)
	}
	return nil, fmt.Errorf("dial %s %s: %w", network, addr, cmp.Or(blocked, errors.New("no address")))
}

// resolve returns host's addresses for network; an IP literal is its own.
func (d *dialer) resolve(ctx context.Context, network, host string) ([]netip.Addr, error) {
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		found, err := d.lookup(ctx, host)
		if err != nil {
			return nil, err
		}
		ips = found
	}
	var out []netip.Addr
	for _, ip := range ips {
		v4 := ip.Unmap().Is4()
		if network == "tcp" || (network == "tcp4" && v4) || (network == "tcp6" && !v4) {
			out = append(out, ip)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no %s address for %s", network, host)
	}
	return out, nil
}

// control runs after resolution and before connect, once per address tried.
func (d *dialer) control(_ context.Context, network, address string, _ syscall.RawConn) error {
	if network != "tcp4" && network != "tcp6" {
		return fmt.Errorf("%w: network %s", ErrBlockedAddress, network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		// Fail closed: an address we cannot read is an address we cannot vet.
		return fmt.Errorf("%w: unparsable address %q", ErrBlockedAddress, address)
	}
	return d.check(ap.Addr())
}

func (d *dialer) check(ip netip.Addr) error {
	if d.allow.allowsIP(ip) {
		return nil
	}
	if why := blockedReason(ip); why != "" {
		return fmt.Errorf("%w %s (%s)", ErrBlockedAddress, ip, why)
	}
	return nil
}

// blockedReason says why ip must not be reached from a URL an upstream
// handed us, or "" when it is an ordinary public address. IPv4-mapped and
// NAT64 forms are judged by the IPv4 address they lead to.
func blockedReason(ip netip.Addr) string {
	ip = ip.WithZone("").Unmap()
	switch {
	case !ip.IsValid():
		return "invalid"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		return "private"
	case ip.IsLinkLocalUnicast():
		return "link-local"
	case ip.IsInterfaceLocalMulticast(), ip.IsLinkLocalMulticast(), ip.IsMulticast():
		return "multicast"
	}
	if ip.Is4() {
		b := ip.As4()
		switch {
		case b[0] == 0:
			return "this-network" // 0.0.0.0/8: connects to the local host on Linux
		case b[0] == 100 && b[1]&0xc0 == 64:
			return "shared address space" // 100.64.0.0/10, CGNAT
		case b[0] == 192 && b[1] == 0 && b[2] == 0:
			return "IETF protocol assignments" // 192.0.0.0/24
		case b[0] == 198 && b[1]&0xfe == 18:
			return "benchmarking" // 198.18.0.0/15, often used for internal networks
		case b[0] >= 240:
			return "reserved" // 240.0.0.0/4, including broadcast
		}
		return ""
	}
	b := ip.As16()
	switch {
	case b[0] == 0 && isZero(b[1:12]):
		return "IPv4-compatible" // ::/96, deprecated; its IPv4 part would be reached
	case b[0] == 0xfe && b[1]&0xc0 == 0xc0:
		return "site-local" // fec0::/10, deprecated but still routed inside some sites
	case b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b:
		// 64:ff9b::/96 and 64:ff9b:1::/48 reach IPv4 through NAT64.
		v4 := netip.AddrFrom4([4]byte(b[12:16]))
		if why := blockedReason(v4); why != "" {
			return "NAT64 to " + why
		}
	case b[0] == 0x20 && b[1] == 0x02:
		// 2002::/16 embeds the IPv4 address of a 6to4 relay target.
		v4 := netip.AddrFrom4([4]byte(b[2:6]))
		if why := blockedReason(v4); why != "" {
			return "6to4 to " + why
		}
	}
	return ""
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

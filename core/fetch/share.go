package fetch

import (
	"net/netip"
	"net/url"
	"strings"
)

// localSuffixes are special-use names that never lead outside the
// operator's network (RFC 6761 localhost, RFC 6762 local, RFC 8375
// home.arpa, ICANN's reserved internal).
var localSuffixes = []string{"localhost", "local", "home.arpa", "internal"}

// Shareable reports whether rawURL may be handed to users as a link: an
// http(s) URL without userinfo whose host is a public DNS name or a public
// IP, and is none of privateHosts (entries as in Config.AllowedHosts, read
// the same way; a CIDR entry covers IP literals in it). It looks nothing up:
// a name is judged by its form alone, so single-label names (a container's
// "one-api"), special-use names and names a browser would read as an IPv4
// address ("127.1", "0x7f.1") are not shareable.
func Shareable(rawURL string, privateHosts []string) bool {
	u, err := url.Parse(strings.TrimSpace(rawURL))
	if err != nil || checkURL(u) != nil || u.User != nil {
		return false
	}
	host := u.Hostname()
	if host == "" {
		return false
	}
	allow, _ := parseAllowlist(privateHosts) // bad entries are refused by Config.Validate
	if allow.allowsHost(host) {
		return false
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return blockedReason(ip) == ""
	}
	return publicName(host)
}

// publicName reports whether a host name that is no IP literal could be a
// name in the public DNS.
func publicName(host string) bool {
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	labels := strings.Split(name, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" {
			return false
		}
	}
	// WHATWG URL parsers read a host whose last label is a number as IPv4.
	last := labels[len(labels)-1]
	if strings.HasPrefix(last, "0x") || strings.Trim(last, "0123456789") == "" {
		return false
	}
	for _, s := range localSuffixes {
		if name == s || strings.HasSuffix(name, "."+s) {
			return false
		}
	}
	return true
}

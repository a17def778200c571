package fetch_test

import (
	"testing"

	"github.com/imaginebot/imaginebot/core/fetch"
)

func TestShareable(t *testing.T) {
	private := []string{"gateway.example.com", "127.0.0.1", "203.0.113.0/24", "2001:db8::/32", "Images.Corp.Example."}
	tests := []struct {
		name string
		url  string
		want bool
	}{
		{"public name", "https://cdn.example.net/img/a.png?sig=a%2Fb%3D", true},
		{"public name over http", "http://cdn.example.net/a.png", true},
		{"public name with a port", "https://cdn.example.net:8443/a.png", true},
		{"fully qualified name", "https://cdn.example.net./a.png", true},
		{"upper-case scheme", "HTTPS://cdn.example.net/a.png", true},
		{"public IPv4", "http://8.8.8.8/a.png", true},
		{"public IPv6", "http://[2606:4700::1111]/a.png", true},

		{"private name", "http://gateway.example.com:3000/a.png", false},
		{"private name in another case", "http://GATEWAY.example.COM./a.png", false},
		{"private name listed with a dot", "https://images.corp.example/a.png", false},
		{"private IP listed", "http://127.0.0.1:3000/a.png", false},
		{"IP in a private CIDR", "http://203.0.113.9/a.png", false},
		{"IPv6 in a private CIDR", "http://[2001:db8::7]/a.png", false},
		{"IPv4-mapped private IP", "http://[::ffff:127.0.0.1]/a.png", false},

		{"loopback", "http://127.0.0.2/a.png", false},
		{"IPv6 loopback", "http://[::1]:3000/a.png", false},
		{"RFC 1918", "http://10.1.2.3/a.png", false},
		{"RFC 1918 172.16/12", "http://172.20.0.5/a.png", false},
		{"RFC 1918 192.168/16", "http://192.168.1.1/a.png", false},
		{"link-local", "http://169.254.169.254/latest/meta-data", false},
		{"IPv6 link-local with zone", "http://[fe80::1%25eth0]/a.png", false},
		{"unique local", "http://[fd12:3456::1]/a.png", false},
		{"CGNAT", "http://100.64.0.1/a.png", false},
		{"unspecified", "http://0.0.0.0/a.png", false},
		{"percent-encoded loopback", "http://%31%32%37.0.0.1/a.png", false},

		{"single-label name", "http://one-api:3000/a.png", false},
		{"localhost", "http://localhost:3000/a.png", false},
		{"localhost subdomain", "http://img.localhost/a.png", false},
		{"mDNS name", "http://nas.local/a.png", false},
		{"home.arpa", "http://gw.home.arpa/a.png", false},
		{"internal", "http://gw.internal/a.png", false},
		{"short IPv4 form", "http://127.1/a.png", false},
		{"hex IPv4 form", "http://0x7f.0.0.0x1/a.png", false},
		{"decimal IPv4 form", "http://2130706433/a.png", false},

		{"userinfo", "https://user:pass@cdn.example.net/a.png", false},
		{"user only", "https://user@cdn.example.net/a.png", false},
		{"data URI", "data:image/png;base64,iVBORw0KGgo=", false},
		{"ftp", "ftp://cdn.example.net/a.png", false},
		{"javascript", "javascript:alert(1)", false},
		{"no scheme", "cdn.example.net/a.png", false},
		{"no host", "https:///a.png", false},
		{"empty", "", false},
		{"malformed", "http://[::1/a.png", false},
		{"empty label", "http://cdn..example.net/a.png", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fetch.Shareable(tt.url, private); got != tt.want {
				t.Errorf("Shareable(%q) = %t, want %t", tt.url, got, tt.want)
			}
		})
	}
	// With no private hosts only the address ranges and name forms count.
	for url, want := range map[string]bool{
		"http://gateway.example.com:3000/a.png": true,
		"http://127.0.0.1:3000/a.png":           false,
		"http://203.0.113.9/a.png":              true,
	} {
		if got := fetch.Shareable(url, nil); got != want {
			t.Errorf("Shareable(%q, nil) = %t, want %t", url, got, want)
		}
	}
}

package netproxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/core/netproxy"
	"github.com/imaginebot/imaginebot/core/netproxy/netproxytest"
)

const secret = "pr0xy-s3cret"

func TestParse(t *testing.T) {
	tests := []struct {
		name, in, want, err string
	}{
		{"http", "http://127.0.0.1:3128", "http://127.0.0.1:3128", ""},
		{"https with user", "https://alice:" + secret + "@proxy.example:8443", "https://proxy.example:8443", ""},
		{"socks5 no port", "socks5://127.0.0.1", "socks5://127.0.0.1:1080", ""},
		{"trailing slash", "http://proxy.example/", "http://proxy.example:80", ""},
		{"ipv6", "socks5://[::1]:1080", "socks5://[::1]:1080", ""},
		{"empty", "", "", "is empty"},
		{"no scheme", "127.0.0.1:1080", "", "has no scheme"},
		{"ftp", "ftp://proxy.example", "", `scheme "ftp"`},
		{"socks5h", "socks5h://proxy.example", "", "write socks5://"},
		{"socks4", "socks4://proxy.example", "", `scheme "socks4"`},
		{"no host", "http://:3128", "", "has no host"},
		{"bad port", "http://alice:" + secret + "@proxy.example:99999", "", "port out of range"},
		{"unparsable", "http://alice:" + secret + "@proxy.example:x", "", "is not a URL"},
		{"path", "http://proxy.example/pac", "", "has a path"},
		{"query", "http://proxy.example?x=1", "", "has a path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := netproxy.Parse(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Parse(%q) error = %v, want %q", tt.in, err, tt.err)
				}
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got := netproxy.Redact(u); got != tt.want {
				t.Fatalf("Redact = %q, want %q", got, tt.want)
			}
		})
	}
	if got := netproxy.Redact(nil); got != "direct" {
		t.Fatalf("Redact(nil) = %q", got)
	}
}

// origin is the server the tunnels lead to.
func origin(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello from "+r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	return srv, srv.Listener.Addr().String()
}

// get sends one request over conn and returns the body.
func get(t *testing.T, conn net.Conn, path string) string {
	t.Helper()
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func dialerFor(p *netproxytest.Proxy) *netproxy.Dialer {
	var opts []netproxy.Option
	if p.Pool != nil {
		opts = append(opts, netproxy.WithTLSConfig(&tls.Config{RootCAs: p.Pool}))
	}
	return netproxy.NewDialer(p.URL, opts...)
}

func TestDialerThroughEachScheme(t *testing.T) {
	for _, scheme := range netproxy.Schemes {
		t.Run(scheme, func(t *testing.T) {
			_, addr := origin(t)
			_, port, _ := net.SplitHostPort(addr)
			p := netproxytest.New(t, scheme, netproxytest.WithAuth("alice", secret))
			d := dialerFor(p)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()

			// An address is asked for as it is.
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if body := get(t, conn, "/by-ip"); body != "hello from /by-ip" {
				t.Fatalf("body %q", body)
			}
			// A name is left to the proxy.
			conn, err = d.DialContext(ctx, "tcp", "localhost:"+port)
			if err == nil {
				get(t, conn, "/by-name")
			}
			asked := p.Requests()
			if len(asked) < 2 || asked[0].Target != addr || asked[1].Target != "localhost:"+port {
				t.Fatalf("proxy was asked %+v", asked)
			}
			if !asked[0].Auth || asked[0].First != "GET /by-ip HTTP/1.1" {
				t.Fatalf("first tunnel %+v", asked[0])
			}
		})
	}
}

func TestDialerWrongPassword(t *testing.T) {
	for _, scheme := range netproxy.Schemes {
		t.Run(scheme, func(t *testing.T) {
			_, addr := origin(t)
			p := netproxytest.New(t, scheme, netproxytest.WithAuth("alice", "the-right-one"))
			u := *p.URL
			u.User = url.UserPassword("alice", secret)
			var opts []netproxy.Option
			if p.Pool != nil {
				opts = append(opts, netproxy.WithTLSConfig(&tls.Config{RootCAs: p.Pool}))
			}
			_, err := netproxy.NewDialer(&u, opts...).DialContext(context.Background(), "tcp", addr)
			if err == nil {
				t.Fatal("dialled with the wrong password")
			}
			if scheme != "socks5" && !errors.Is(err, netproxy.ErrRefused) {
				t.Fatalf("err = %v, want ErrRefused", err)
			}
			if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), p.Addr()) {
				t.Fatalf("err = %v: want the proxy's address and not the password", err)
			}
		})
	}
}

// A proxy that never answers: ctx ends the handshake.
func TestDialerContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for _, scheme := range netproxy.Schemes {
		t.Run(scheme, func(t *testing.T) {
			d := netproxy.NewDialer(&url.URL{Scheme: scheme, Host: ln.Addr().String()})
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := d.DialContext(ctx, "tcp", "127.0.0.1:1")
			if err == nil {
				t.Fatal("dialled a silent proxy")
			}
			if time.Since(start) > 3*time.Second {
				t.Fatalf("took %s", time.Since(start))
			}
		})
	}
}

// Bytes the proxy sends right behind its 200 belong to the tunnel.
func TestDialerKeepsBytesAfterTheAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nearly bytes")
	}()
	conn, err := netproxy.NewDialer(&url.URL{Scheme: "http", Host: ln.Addr().String()}).DialContext(context.Background(), "tcp", "127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b, _ := io.ReadAll(conn)
	if string(b) != "early bytes" {
		t.Fatalf("read %q", b)
	}
}

func TestDialerRefusesOtherNetworks(t *testing.T) {
	d := netproxy.NewDialer(&url.URL{Scheme: "socks5", Host: "127.0.0.1:1"})
	if _, err := d.DialContext(context.Background(), "udp", "127.0.0.1:53"); err == nil {
		t.Fatal("dialled udp through a proxy")
	}
}

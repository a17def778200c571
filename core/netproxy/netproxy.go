// Package netproxy reaches the outside world through an outbound proxy, for
// hosts where Telegram, Discord or the gateway are blocked: http:// and
// https:// proxies (HTTP CONNECT) and socks5:// ones.
//
// HTTP clients need none of it but Parse: net/http's Transport.Proxy speaks
// all three schemes (http.ProxyURL). Dialer is for the connections net/http
// does not make — the Discord gateway's websocket, and image downloads that
// must name the address they checked — and speaks SOCKS5 through
// golang.org/x/net/proxy, the client the Go team keeps (and net/http
// bundles). HTTP CONNECT is written here: neither net/http nor x/net
// exports a CONNECT dialer.
//
// Proxy URLs may hold credentials: no error or log line of this package
// shows more of one than Redact does.
package netproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/proxy"
)

// Schemes are the proxy URL schemes Parse accepts.
var Schemes = []string{"http", "https", "socks5"}

// Parse reads a proxy URL: scheme://[user[:password]@]host[:port] with
// scheme http, https or socks5. Its errors never quote raw, which may hold a
// password; they say what is wrong with it.
func Parse(raw string) (*url.URL, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, errors.New("is empty")
	}
	if !strings.Contains(raw, "://") {
		return nil, errors.New("has no scheme")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the whole URL, credentials included.
		return nil, errors.New("is not a URL")
	}
	switch u.Scheme {
	case "http", "https", "socks5":
	case "socks5h":
		return nil, errors.New(`has the scheme "socks5h"; write socks5:// (host names are left to the proxy to resolve already, but for image downloads, which are checked and sent as addresses)`)
	default:
		return nil, fmt.Errorf("has the scheme %q; use http, https or socks5", u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, errors.New("has no host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, errors.New("has a port out of range (1 to 65535)")
		}
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, errors.New("has a path, query or fragment; a proxy URL is only scheme://host:port")
	}
	u.Path = ""
	return u, nil
}

// Redact renders u for logs and errors: scheme://host:port, without the
// credentials.
func Redact(u *url.URL) string {
	if u == nil {
		return "direct"
	}
	return u.Scheme + "://" + hostPort(u)
}

// hostPort is the proxy's address, with the scheme's usual port when the
// URL has none (the ones net/http assumes).
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443", "socks5": "1080"}[u.Scheme]
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// Option configures a Dialer.
type Option func(*Dialer)

// WithTLSConfig sets the TLS configuration of the hop to an https proxy (a
// proxy behind a private CA; tests). ServerName defaults to the proxy's host.
func WithTLSConfig(c *tls.Config) Option { return func(d *Dialer) { d.tls = c } }

// WithForward sets the dialer that reaches the proxy itself.
func WithForward(f *net.Dialer) Option { return func(d *Dialer) { d.forward = f } }

// Dialer opens connections through one proxy. It is safe for concurrent use.
type Dialer struct {
	url     *url.URL
	forward *net.Dialer
	tls     *tls.Config
	socks   proxy.ContextDialer
}

// NewDialer returns a Dialer through the proxy at u (from Parse). A scheme
// Parse would refuse fails every dial.
func NewDialer(u *url.URL, opts ...Option) *Dialer {
	d := &Dialer{url: u, forward: &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}}
	for _, o := range opts {
		o(d)
	}
	if u.Scheme == "socks5" {
		var auth *proxy.Auth
		if u.User != nil {
			pw, _ := u.User.Password()
			auth = &proxy.Auth{User: u.User.Username(), Password: pw}
		}
		// SOCKS5 fails only for a nil forward dialer, which this is not.
		s, err := proxy.SOCKS5("tcp", hostPort(u), auth, d.forward)
		if cd, ok := s.(proxy.ContextDialer); ok && err == nil {
			d.socks = cd
		}
	}
	return d
}

// DialContext connects to addr (host:port) through the proxy. The proxy
// resolves a host name; an IP address is asked for as it is, so a caller
// that checked an address knows the proxy connects to that one.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if network != "tcp" && network != "tcp4" && network != "tcp6" {
		return nil, fmt.Errorf("netproxy: %s: network %q cannot be proxied", Redact(d.url), network)
	}
	switch d.url.Scheme {
	case "socks5":
		if d.socks == nil {
			return nil, fmt.Errorf("netproxy: %s: no SOCKS5 dialer", Redact(d.url))
		}
		c, err := d.socks.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("netproxy: %s: %w", Redact(d.url), err)
		}
		return c, nil
	case "http", "https":
		return d.connect(ctx, addr)
	default:
		return nil, fmt.Errorf("netproxy: proxy scheme %q is not http, https or socks5", d.url.Scheme)
	}
}

// connect opens a tunnel to addr with HTTP CONNECT.
func (d *Dialer) connect(ctx context.Context, addr string) (c net.Conn, err error) {
	where := Redact(d.url)
	conn, err := d.forward.DialContext(ctx, "tcp", hostPort(d.url))
	if err != nil {
		return nil, fmt.Errorf("netproxy: %s: %w", where, err)
	}
	// ctx bounds the handshake with the proxy: its deadline, and its end,
	// which cuts the connection short wherever the handshake is.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() && err == nil {
			err = fmt.Errorf("netproxy: %s: CONNECT %s: %w", where, addr, ctx.Err())
		}
		if err != nil {
			conn.Close()
			c = nil
			return
		}
		_ = conn.SetDeadline(time.Time{})
	}()

	if d.url.Scheme == "https" {
		cfg := &tls.Config{}
		if d.tls != nil {
			cfg = d.tls.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = d.url.Hostname()
		}
		// The hop to the proxy speaks HTTP/1.1 CONNECT, whatever the
		// tunnel carries.
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("netproxy: %s: TLS: %w", where, err)
		}
		conn = tc
	}

	req := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: addr},
		Host:   addr,
		Header: http.Header{},
	}
	if u := d.url.User; u != nil {
		pw, _ := u.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)))
	}
	if err := req.Write(conn); err != nil {
		return nil, fmt.Errorf("netproxy: %s: CONNECT %s: %w", where, addr, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, fmt.Errorf("netproxy: %s: CONNECT %s: %w", where, addr, err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// StatusText, not resp.Status: the reason phrase is the proxy's text.
		return nil, fmt.Errorf("netproxy: %s: CONNECT %s: %w %d %s", where, addr, ErrRefused, resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	if br.Buffered() > 0 {
		// Bytes of the tunnel the reader took with the answer.
		return &bufferedConn{Conn: conn, r: br}, nil
	}
	return conn, nil
}

// ErrRefused is wrapped by the error of a proxy that answered CONNECT with
// anything but 2xx (407: the credentials; 403: the proxy's rules).
var ErrRefused = errors.New("proxy refused the tunnel")

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

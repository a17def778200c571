// Package netproxytest runs small outbound proxies for tests, one per
// scheme the bot supports: an HTTP proxy (CONNECT tunnels and absolute-form
// requests), the same over TLS (an https:// proxy) and a SOCKS5 server
// (RFC 1928, with RFC 1929 passwords). Each records what it was asked
// before it connects anywhere, so a test can tell what never reached it.
//
// They connect only to loopback addresses and the name "localhost":
// anything else is refused unasked, so a test can never send traffic
// beyond the machine.
package netproxytest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Request is one thing a proxy was asked.
type Request struct {
	// Kind is CONNECT (an HTTP tunnel), SOCKS5 (a SOCKS CONNECT) or, for a
	// request sent to an HTTP proxy in absolute form, its method.
	Kind string
	// Target is the host:port asked for, as the client wrote it: a name, or
	// an IP address.
	Target string
	// Path is an absolute-form request's path (no query).
	Path string
	// Auth: the proxy's credentials came with it (true when it needs none).
	Auth bool
	// Refused: the proxy would not connect there (not loopback).
	Refused bool
	// First is, for a tunnel, the first line the client sent through it when
	// that is plain text, such as "GET /gateway HTTP/1.1"; "" for TLS.
	First string
}

// Proxy is a running test proxy.
type Proxy struct {
	// URL is the proxy's, with the credentials when it needs them.
	URL *url.URL
	// Pool trusts an https proxy's certificate (nil for the others).
	Pool *x509.CertPool

	user, pass string
	srv        *httptest.Server // http and https
	ln         net.Listener     // socks5
	fwd        *http.Transport

	mu    sync.Mutex
	reqs  []*Request
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// Option configures a Proxy.
type Option func(*Proxy)

// WithAuth makes the proxy require user and password (Basic
// Proxy-Authorization, or SOCKS5's username/password method).
func WithAuth(user, password string) Option {
	return func(p *Proxy) { p.user, p.pass = user, password }
}

// HTTP starts an http:// proxy.
func HTTP(t testing.TB, opts ...Option) *Proxy { return New(t, "http", opts...) }

// HTTPS starts an https:// proxy: an HTTP proxy spoken to over TLS. Its
// certificate is trusted by Pool, and by CertPEM written to SSL_CERT_FILE.
func HTTPS(t testing.TB, opts ...Option) *Proxy { return New(t, "https", opts...) }

// SOCKS5 starts a socks5:// proxy.
func SOCKS5(t testing.TB, opts ...Option) *Proxy { return New(t, "socks5", opts...) }

// New starts a proxy of scheme http, https or socks5, stopped when t ends.
func New(t testing.TB, scheme string, opts ...Option) *Proxy {
	t.Helper()
	p := &Proxy{conns: map[net.Conn]bool{}}
	for _, o := range opts {
		o(p)
	}
	p.fwd = &http.Transport{DialContext: p.dial, DisableKeepAlives: true}
	var host string
	switch scheme {
	case "http", "https":
		p.srv = httptest.NewUnstartedServer(p)
		// Hijacked tunnels are not the server's to track: Close ends them.
		if scheme == "https" {
			p.srv.StartTLS()
			p.Pool = x509.NewCertPool()
			p.Pool.AddCert(p.srv.Certificate())
		} else {
			p.srv.Start()
		}
		host = p.srv.Listener.Addr().String()
	case "socks5":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p.ln = ln
		p.wg.Add(1)
		go p.acceptSOCKS()
		host = ln.Addr().String()
	default:
		t.Fatalf("netproxytest: no %q proxy", scheme)
	}
	p.URL = &url.URL{Scheme: scheme, Host: host}
	if p.user != "" {
		p.URL.User = url.UserPassword(p.user, p.pass)
	}
	t.Cleanup(p.Close)
	return p
}

// CertPEM is an https proxy's certificate in PEM, for SSL_CERT_FILE.
func (p *Proxy) CertPEM() []byte {
	if p.srv == nil || p.srv.TLS == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.URL.Host }

// Close stops the proxy and cuts every tunnel.
func (p *Proxy) Close() {
	if p.srv != nil {
		p.srv.Close()
	}
	if p.ln != nil {
		p.ln.Close()
	}
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	p.fwd.CloseIdleConnections()
}

// Requests returns what the proxy was asked so far, in order.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Request, len(p.reqs))
	for i, r := range p.reqs {
		out[i] = *r
	}
	return out
}

// Asked returns the requests for target (host:port).
func (p *Proxy) Asked(target string) []Request {
	var out []Request
	for _, r := range p.Requests() {
		if r.Target == target {
			out = append(out, r)
		}
	}
	return out
}

// AskedPort returns the requests for any host on port: what a test checks
// to be sure nothing at all asked for a server.
func (p *Proxy) AskedPort(port string) []Request {
	var out []Request
	for _, r := range p.Requests() {
		if _, pt, err := net.SplitHostPort(r.Target); err == nil && pt == port {
			out = append(out, r)
		}
	}
	return out
}

func (p *Proxy) record(r Request) *Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	rp := &r
	p.reqs = append(p.reqs, rp)
	return rp
}

func (p *Proxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
}

// loopback reports whether the proxy may connect to host.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

var errNotLoopback = errors.New("netproxytest: only loopback targets are served")

func (p *Proxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if !loopback(host) {
		return nil, errNotLoopback
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	return d.DialContext(ctx, "tcp", addr)
}

func (p *Proxy) authorized(header string) bool {
	if p.user == "" {
		return true
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.user+":"+p.pass))
	return subtle.ConstantTimeCompare([]byte(header), []byte(want)) == 1
}

// ServeHTTP is the HTTP proxy: CONNECT tunnels and absolute-form requests.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Counted while the server still tracks the request, so that a tunnel
	// started here is counted before Close waits.
	p.wg.Add(1)
	defer p.wg.Done()
	auth := p.authorized(r.Header.Get("Proxy-Authorization"))
	if r.Method == http.MethodConnect {
		p.serveConnect(w, r, auth)
		return
	}
	if !r.URL.IsAbs() {
		http.Error(w, "netproxytest: not a proxy request", http.StatusBadRequest)
		return
	}
	host, _, _ := net.SplitHostPort(canonical(r.URL))
	rec := p.record(Request{Kind: r.Method, Target: canonical(r.URL), Path: r.URL.Path, Auth: auth, Refused: !loopback(host)})
	if !auth {
		w.Header().Set("Proxy-Authenticate", `Basic realm="netproxytest"`)
		w.WriteHeader(http.StatusProxyAuthRequired)
		return
	}
	if rec.Refused {
		http.Error(w, errNotLoopback.Error(), http.StatusForbidden)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.Header.Del("Proxy-Authorization")
	out.Header.Del("Proxy-Connection")
	resp, err := p.fwd.RoundTrip(out)
	if err != nil {
		http.Error(w, "netproxytest: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	// Flushed as it comes: SSE streams pass through live.
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			_ = rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

func canonical(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

func (p *Proxy) serveConnect(w http.ResponseWriter, r *http.Request, auth bool) {
	host, _, err := net.SplitHostPort(r.Host)
	rec := p.record(Request{Kind: http.MethodConnect, Target: r.Host, Auth: auth, Refused: err != nil || !loopback(host)})
	if !auth {
		w.Header().Set("Proxy-Authenticate", `Basic realm="netproxytest"`)
		w.WriteHeader(http.StatusProxyAuthRequired)
		return
	}
	if rec.Refused {
		http.Error(w, errNotLoopback.Error(), http.StatusForbidden)
		return
	}
	target, err := p.dial(r.Context(), "tcp", r.Host)
	if err != nil {
		http.Error(w, "netproxytest: "+err.Error(), http.StatusBadGateway)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		target.Close()
		return
	}
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		conn.Close()
		target.Close()
		return
	}
	var client io.Reader = conn
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		client = io.MultiReader(bytes.NewReader(append([]byte(nil), b...)), conn)
	}
	p.pipe(rec, conn, client, target)
}

// pipe joins a client and a target until either ends, noting the first
// line the client sends when it is plain text.
func (p *Proxy) pipe(rec *Request, conn net.Conn, client io.Reader, target net.Conn) {
	p.track(conn, true)
	p.track(target, true)
	p.wg.Add(2)
	closeBoth := func() {
		conn.Close()
		target.Close()
		p.track(conn, false)
		p.track(target, false)
	}
	go func() {
		defer p.wg.Done()
		defer closeBoth()
		buf := make([]byte, 32<<10)
		first := true
		for {
			n, err := client.Read(buf)
			if n > 0 {
				if first {
					first = false
					if line, ok := textLine(buf[:n]); ok {
						p.mu.Lock()
						rec.First = line
						p.mu.Unlock()
					}
				}
				if _, werr := target.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		defer p.wg.Done()
		defer closeBoth()
		_, _ = io.Copy(conn, target)
	}()
}

// textLine is b's first line when it is printable ASCII (an HTTP request
// line, not a TLS handshake).
func textLine(b []byte) (string, bool) {
	i := bytes.Index(b, []byte("\r\n"))
	if i <= 0 {
		return "", false
	}
	for _, c := range b[:i] {
		if c < 0x20 || c > 0x7e {
			return "", false
		}
	}
	return string(b[:i]), true
}

func (p *Proxy) acceptSOCKS() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serveSOCKS(c)
		}()
	}
}

// SOCKS5 replies (RFC 1928 section 6).
const (
	socksOK          = 0x00
	socksNotAllowed  = 0x02
	socksUnreachable = 0x04
	socksNoCommand   = 0x07
	socksNoAddrType  = 0x08
)

func (p *Proxy) serveSOCKS(c net.Conn) {
	p.track(c, true)
	handedOff := false
	defer func() {
		if !handedOff {
			c.Close()
			p.track(c, false)
		}
	}()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(r, hdr); err != nil || hdr[0] != 5 {
		return
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return
	}
	want := byte(0x00)
	if p.user != "" {
		want = 0x02
	}
	if !bytes.Contains(methods, []byte{want}) {
		_, _ = c.Write([]byte{5, 0xff})
		return
	}
	_, _ = c.Write([]byte{5, want})
	auth := true
	if want == 0x02 {
		user, pass, err := readUserPass(r)
		if err != nil {
			return
		}
		auth = subtle.ConstantTimeCompare([]byte(user+"\x00"+pass), []byte(p.user+"\x00"+p.pass)) == 1
		status := byte(0)
		if !auth {
			status = 1
		}
		_, _ = c.Write([]byte{1, status})
		if !auth {
			p.record(Request{Kind: "SOCKS5", Auth: false})
			return
		}
	}
	req := make([]byte, 4)
	if _, err := io.ReadFull(r, req); err != nil || req[0] != 5 {
		return
	}
	var host string
	switch req[3] {
	case 1, 4:
		b := make([]byte, map[byte]int{1: 4, 4: 16}[req[3]])
		if _, err := io.ReadFull(r, b); err != nil {
			return
		}
		ip, _ := netip.AddrFromSlice(b)
		host = ip.Unmap().String()
	case 3:
		n, err := r.ReadByte()
		if err != nil {
			return
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return
		}
		host = string(b)
	default:
		socksReply(c, socksNoAddrType)
		return
	}
	pb := make([]byte, 2)
	if _, err := io.ReadFull(r, pb); err != nil {
		return
	}
	target := net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(pb))))
	rec := p.record(Request{Kind: "SOCKS5", Target: target, Auth: auth, Refused: !loopback(host)})
	switch {
	case req[1] != 1: // CONNECT only
		socksReply(c, socksNoCommand)
		return
	case rec.Refused:
		socksReply(c, socksNotAllowed)
		return
	}
	t, err := p.dial(context.Background(), "tcp", target)
	if err != nil {
		socksReply(c, socksUnreachable)
		return
	}
	socksReply(c, socksOK)
	_ = c.SetDeadline(time.Time{})
	handedOff = true
	p.track(c, false)
	var client io.Reader = c
	if n := r.Buffered(); n > 0 {
		b, _ := r.Peek(n)
		client = io.MultiReader(bytes.NewReader(append([]byte(nil), b...)), c)
	}
	p.pipe(rec, c, client, t)
}

func readUserPass(r *bufio.Reader) (string, string, error) {
	ver, err := r.ReadByte()
	if err != nil || ver != 1 {
		return "", "", fmt.Errorf("netproxytest: bad auth version")
	}
	read := func() (string, error) {
		n, err := r.ReadByte()
		if err != nil {
			return "", err
		}
		b := make([]byte, n)
		_, err = io.ReadFull(r, b)
		return string(b), err
	}
	user, err := read()
	if err != nil {
		return "", "", err
	}
	pass, err := read()
	return user, pass, err
}

func socksReply(c net.Conn, code byte) {
	_, _ = c.Write([]byte{5, code, 0, 1, 0, 0, 0, 0, 0, 0})
}

// Test credentials of WithSchemes' proxies.
const (
	User     = "alice"
	Password = "pr0xy-pw"
)

// WithSchemes runs f as a subtest against an http and a socks5 proxy that
// want User and Password. (An https proxy needs its certificate trusted by
// the client's own transport: the binary's end-to-end test covers it.)
func WithSchemes(t *testing.T, f func(t *testing.T, p *Proxy)) {
	for _, scheme := range []string{"http", "socks5"} {
		t.Run(scheme, func(t *testing.T) { f(t, New(t, scheme, WithAuth(User, Password))) })
	}
}

// AskedWithAuth is Asked(target), failing t when a request came without
// the credentials or when there was none.
func (p *Proxy) AskedWithAuth(t testing.TB, target string) []Request {
	t.Helper()
	asked := p.Asked(target)
	if len(asked) == 0 {
		t.Fatalf("the proxy was asked %+v, not %s", p.Requests(), target)
	}
	for _, r := range asked {
		if !r.Auth {
			t.Fatalf("a call came without the credentials: %+v", r)
		}
	}
	return asked
}

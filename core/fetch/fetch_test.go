package fetch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/fetch"
)

func allowLoopback(cfg fetch.Config) fetch.Config {
	cfg.AllowedHosts = append(cfg.AllowedHosts, "127.0.0.1")
	return cfg
}

func TestFetchImages(t *testing.T) {
	tests := []struct {
		name        string
		body        []byte
		contentType string
		wantMIME    string
	}{
		{"png", pngData(t), "image/png", "image/png"},
		{"jpeg", jpegData(t), "image/jpeg", "image/jpeg"},
		{"webp", webpData(), "image/webp", "image/webp"},
		{"gif", gifData(t), "image/gif", "image/gif"},
		{"png served as text/html", pngData(t), "text/html", "image/png"},
		{"jpeg served as octet-stream", jpegData(t), "application/octet-stream", "image/jpeg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := newServer(t, serveBytes(tt.body, tt.contentType))
			f := fetch.New(allowLoopback(fetch.Config{}))
			ref := srv.URL + "/out/image.bin?sig=abc"
			img, err := f.Fetch(context.Background(), ref)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if img.MIME != tt.wantMIME {
				t.Errorf("MIME = %q, want %q", img.MIME, tt.wantMIME)
			}
			if !bytes.Equal(img.Data, tt.body) {
				t.Errorf("Data differs: got %d bytes, want %d", len(img.Data), len(tt.body))
			}
			if img.Source != ref {
				t.Errorf("Source = %q, want %q", img.Source, ref)
			}
		})
	}
}

func TestFetchKeepsURLBytes(t *testing.T) {
	tests := []struct {
		name        string
		pathQuery   string
		wantPath    string
		wantQuery   string
		wantRequest string
	}{
		{
			name:        "escaped slash and padding",
			pathQuery:   "/img%2Fa.png?sig=ab%2Fcd%3D%3D&x=1",
			wantPath:    "/img%2Fa.png",
			wantQuery:   "sig=ab%2Fcd%3D%3D&x=1",
			wantRequest: "/img%2Fa.png?sig=ab%2Fcd%3D%3D&x=1",
		},
		{
			name:        "oss style signature",
			pathQuery:   "/bucket/2024/a%20b.png?OSSAccessKeyId=K&Expires=1700000000&Signature=q%2Bw%2F%3D",
			wantPath:    "/bucket/2024/a%20b.png",
			wantQuery:   "OSSAccessKeyId=K&Expires=1700000000&Signature=q%2Bw%2F%3D",
			wantRequest: "/bucket/2024/a%20b.png?OSSAccessKeyId=K&Expires=1700000000&Signature=q%2Bw%2F%3D",
		},
		{
			name:        "unescaped plus and equals kept",
			pathQuery:   "/x.png?a=b+c==&d=%7E",
			wantPath:    "/x.png",
			wantQuery:   "a=b+c==&d=%7E",
			wantRequest: "/x.png?a=b+c==&d=%7E",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var gotPath, gotQuery, gotRequest, gotUA string
			body := pngData(t)
			srv, _ := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				gotPath, gotQuery, gotRequest, gotUA = r.URL.EscapedPath(), r.URL.RawQuery, r.RequestURI, r.UserAgent()
				mu.Unlock()
				_, _ = w.Write(body)
			}))
			f := fetch.New(allowLoopback(fetch.Config{UserAgent: "imaginebot-test"}))
			if _, err := f.Fetch(context.Background(), srv.URL+tt.pathQuery); err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if gotPath != tt.wantPath {
				t.Errorf("escaped path = %q, want %q", gotPath, tt.wantPath)
			}
			if gotQuery != tt.wantQuery {
				t.Errorf("raw query = %q, want %q", gotQuery, tt.wantQuery)
			}
			if gotRequest != tt.wantRequest {
				t.Errorf("request URI = %q, want %q", gotRequest, tt.wantRequest)
			}
			if gotUA != "imaginebot-test" {
				t.Errorf("User-Agent = %q", gotUA)
			}
		})
	}
}

func TestFetchBlocksPrivateAddresses(t *testing.T) {
	var hits atomic.Int32
	body := pngData(t)
	_, port := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write(body)
	}))
	tests := []struct {
		name    string
		url     string
		allowed []string
		wantIP  string // shown in the operator detail
	}{
		{"localhost name, only its IP allowed", "http://localhost:" + port + "/a.png", []string{"127.0.0.1"}, "127.0.0.1"},
		{"localhost name", "http://localhost:" + port + "/a.png", nil, "127.0.0.1"},
		{"loopback literal without allowlist", "http://127.0.0.1:" + port + "/a.png", nil, "127.0.0.1"},
		{"other loopback address", "http://127.0.0.2:" + port + "/a.png", []string{"127.0.0.1"}, "127.0.0.2"},
		{"cloud metadata", "http://169.254.169.254/latest/meta-data/", nil, "169.254.169.254"},
		{"ipv6 loopback", "http://[::1]:" + port + "/a.png", nil, "::1"},
		{"unspecified v4", "http://0.0.0.0:" + port + "/a.png", nil, "0.0.0.0"},
		{"unspecified v6", "http://[::]:" + port + "/a.png", nil, "::"},
		{"this network", "http://0.1.2.3/", nil, "0.1.2.3"},
		{"ipv4-mapped loopback", "http://[::ffff:127.0.0.1]:" + port + "/a.png", nil, "127.0.0.1"},
		{"ipv4-mapped metadata", "http://[::ffff:169.254.169.254]/", nil, "169.254.169.254"},
		{"rfc1918 10/8", "http://10.0.0.1/", nil, "10.0.0.1"},
		{"rfc1918 172.16/12", "http://172.16.5.4/", nil, "172.16.5.4"},
		{"rfc1918 192.168/16", "http://192.168.1.1/", nil, "192.168.1.1"},
		{"cgnat", "http://100.64.0.1/", nil, "100.64.0.1"},
		{"broadcast", "http://255.255.255.255/", nil, "255.255.255.255"},
		{"multicast v4", "http://224.0.0.1/", nil, "224.0.0.1"},
		{"unique local v6", "http://[fc00::1]/", nil, "fc00::1"},
		{"link-local v6", "http://[fe80::1]/", nil, "fe80::1"},
		{"multicast v6", "http://[ff02::1]/", nil, "ff02::1"},
		{"nat64 to loopback", "http://[64:ff9b::7f00:1]/", nil, "64:ff9b::7f00:1"},
		{"https metadata", "https://169.254.169.254/", nil, "169.254.169.254"},
		{"cidr allowlist elsewhere", "http://127.0.0.1:" + port + "/a.png", []string{"10.0.0.0/8"}, "127.0.0.1"},
		{"name allowlist elsewhere", "http://127.0.0.1:" + port + "/a.png", []string{"gateway.internal"}, "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := hits.Load()
			f := fetch.New(fetch.Config{AllowedHosts: tt.allowed})
			_, err := f.Fetch(context.Background(), tt.url)
			ce := wantRejected(t, err, fetch.ErrBlockedAddress)
			if !strings.Contains(ce.Err.Error(), tt.wantIP) {
				t.Errorf("detail %q does not name %s", ce.Err, tt.wantIP)
			}
			if hits.Load() != before {
				t.Errorf("the server was reached")
			}
		})
	}
}

func TestFetchAllowedHosts(t *testing.T) {
	body := pngData(t)
	_, port := newServer(t, serveBytes(body, "image/png"))
	tests := []struct {
		name    string
		url     string
		allowed []string
	}{
		{"ip literal", "http://127.0.0.1:" + port + "/a.png", []string{"127.0.0.1"}},
		{"host name, case-insensitive", "http://LocalHost:" + port + "/a.png", []string{"LOCALHOST"}},
		{"host name with trailing dot entry", "http://localhost:" + port + "/a.png", []string{"localhost."}},
		{"cidr covers the resolved address", "http://localhost:" + port + "/a.png", []string{"127.0.0.0/8"}},
		{"cidr covers a literal", "http://127.0.0.1:" + port + "/a.png", []string{"127.0.0.0/8"}},
		{"mapped literal of an allowed ip", "http://[::ffff:127.0.0.1]:" + port + "/a.png", []string{"127.0.0.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fetch.New(fetch.Config{AllowedHosts: tt.allowed})
			img, err := f.Fetch(context.Background(), tt.url)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if img.MIME != "image/png" || !bytes.Equal(img.Data, body) {
				t.Errorf("got %s, %d bytes", img.MIME, len(img.Data))
			}
		})
	}
}

func TestFetchRedirects(t *testing.T) {
	body := pngData(t)
	mux := http.NewServeMux()
	// /hop/N redirects N more times, then serves the image.
	mux.HandleFunc("/hop/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.PathValue("n"))
		if n == 0 {
			_, _ = w.Write(body)
			return
		}
		http.Redirect(w, r, fmt.Sprintf("/hop/%d?sig=x%%2Fy", n-1), http.StatusFound)
	})
	// /to redirects to the (unescaped) query.
	mux.HandleFunc("/to", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", r.URL.Query().Get("u"))
		w.WriteHeader(http.StatusFound)
	})
	srv, port := newServer(t, mux)
	to := func(u string) string { return srv.URL + "/to?u=" + strings.ReplaceAll(u, "&", "%26") }

	tests := []struct {
		name         string
		url          string
		maxRedirects int
		want         error // nil: success
	}{
		{"no redirect", srv.URL + "/hop/0", 0, nil},
		{"three redirects", srv.URL + "/hop/3", 0, nil},
		{"four redirects", srv.URL + "/hop/4", 0, fetch.ErrTooManyRedirects},
		{"one redirect, limit one", srv.URL + "/hop/1", 1, nil},
		{"two redirects, limit one", srv.URL + "/hop/2", 1, fetch.ErrTooManyRedirects},
		{"redirects disabled", srv.URL + "/hop/1", -1, fetch.ErrTooManyRedirects},
		{"to cloud metadata", to("http://169.254.169.254/latest/meta-data/"), 0, fetch.ErrBlockedAddress},
		{"to localhost name", to("http://localhost:" + port + "/hop/0"), 0, fetch.ErrBlockedAddress},
		{"to private network", to("http://10.1.2.3/x.png"), 0, fetch.ErrBlockedAddress},
		{"to file", to("file:///etc/passwd"), 0, fetch.ErrScheme},
		{"to ftp", to("ftp://example.com/x.png"), 0, fetch.ErrScheme},
		{"to gopher", to("gopher://127.0.0.1:" + port + "/_GET"), 0, fetch.ErrScheme},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fetch.New(allowLoopback(fetch.Config{MaxRedirects: tt.maxRedirects}))
			img, err := f.Fetch(context.Background(), tt.url)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Fetch: %v", err)
				}
				if !bytes.Equal(img.Data, body) || img.Source != tt.url {
					t.Errorf("got %d bytes from %q", len(img.Data), img.Source)
				}
				return
			}
			wantRejected(t, err, tt.want)
		})
	}
}

func TestFetchRefusesSchemes(t *testing.T) {
	tests := []struct {
		name string
		ref  string
		want error
	}{
		{"file", "file:///etc/passwd", fetch.ErrScheme},
		{"ftp", "ftp://example.com/a.png", fetch.ErrScheme},
		{"gopher", "gopher://127.0.0.1:6379/_INFO", fetch.ErrScheme},
		{"javascript", "javascript:alert(1)", fetch.ErrScheme},
		{"ws", "ws://example.com/a.png", fetch.ErrScheme},
		{"no scheme", "//example.com/a.png", fetch.ErrScheme},
		{"relative path", "/a.png", fetch.ErrScheme},
		{"no host", "http:///a.png", fetch.ErrMalformed},
		{"bad escape", "http://example.com/%zz", fetch.ErrMalformed},
		{"control character", "http://example.com/a\x00.png", fetch.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fetch.New(fetch.Config{})
			_, err := f.Fetch(context.Background(), tt.ref)
			wantRejected(t, err, tt.want)
		})
	}
}

func TestFetchSizeCap(t *testing.T) {
	const limit = 1024
	png := pngData(t)
	padded := func(n int) []byte { return append(bytes.Clone(png), make([]byte, n-len(png))...) }
	tests := []struct {
		name    string
		handler http.HandlerFunc
		wantErr bool
		detail  string
	}{
		{
			name: "exactly the limit",
			handler: func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write(padded(limit))
			},
		},
		{
			name: "chunked body over the limit",
			handler: func(w http.ResponseWriter, r *http.Request) {
				// Flushing first forces chunked encoding: no Content-Length to go by.
				w.(http.Flusher).Flush()
				for range 8 {
					if _, err := w.Write(padded(512)); err != nil {
						return
					}
					w.(http.Flusher).Flush()
				}
			},
			wantErr: true,
			detail:  "body exceeds the 1024-byte limit",
		},
		{
			name: "one byte over, chunked",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.(http.Flusher).Flush()
				_, _ = w.Write(padded(limit + 1))
			},
			wantErr: true,
			detail:  "body exceeds",
		},
		{
			name: "large Content-Length rejected before reading",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "104857600")
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(png)
			},
			wantErr: true,
			detail:  "Content-Length 104857600 exceeds the 1024-byte limit",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := newServer(t, tt.handler)
			f := fetch.New(allowLoopback(fetch.Config{MaxBytes: limit}))
			img, err := f.Fetch(context.Background(), srv.URL+"/big.png")
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Fetch: %v", err)
				}
				if len(img.Data) != limit {
					t.Errorf("got %d bytes, want %d", len(img.Data), limit)
				}
				return
			}
			ce := wantRejected(t, err, fetch.ErrTooLarge)
			if !strings.Contains(ce.Err.Error(), tt.detail) {
				t.Errorf("detail %q does not contain %q", ce.Err, tt.detail)
			}
			if ce.Limit != limit {
				t.Errorf("Limit = %d, want %d", ce.Limit, limit)
			}
		})
	}
}

func TestFetchRefusesNonImages(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		contentType string
		sniffed     string
	}{
		{"html", "<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "text/html", "text/html"},
		{"html claiming png", "<html><script>alert(1)</script></html>", "image/png", "text/html"},
		{"svg", `<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`, "image/svg+xml", "text/plain"},
		{"svg with xml declaration", `<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>`, "image/svg+xml", "text/xml"},
		{"json", `{"error":{"message":"quota"}}`, "image/png", "text/plain"},
		{"empty", "", "image/png", "empty body"},
		{"pdf", "%PDF-1.7\n", "image/png", "application/pdf"},
		{"bmp", "BM\x00\x00\x00\x00\x00\x00\x00\x00", "image/bmp", "image/bmp"},
		{"truncated png signature", "\x89PNG\r\n", "image/png", "text/plain"},
		{"binary junk", "\x00\x01\x02\x03junk", "image/png", "application/octet-stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := newServer(t, serveBytes([]byte(tt.body), tt.contentType))
			f := fetch.New(allowLoopback(fetch.Config{}))
			_, err := f.Fetch(context.Background(), srv.URL+"/a.png")
			ce := wantRejected(t, err, fetch.ErrNotImage)
			if !strings.Contains(ce.Err.Error(), tt.sniffed) {
				t.Errorf("detail %q does not mention %q", ce.Err, tt.sniffed)
			}
		})
	}
}

func TestFetchRefusesErrorStatus(t *testing.T) {
	png := pngData(t)
	tests := []struct {
		name   string
		status int
		detail string
	}{
		{"not found", http.StatusNotFound, "404 Not Found"},
		{"forbidden (expired signature)", http.StatusForbidden, "403 Forbidden"},
		{"server error", http.StatusBadGateway, "502 Bad Gateway"},
		{"redirect without location", http.StatusFound, "302 Found"},
		{"not modified", http.StatusNotModified, "304 Not Modified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				_, _ = w.Write(png) // an image body does not make an error status acceptable
			}))
			f := fetch.New(allowLoopback(fetch.Config{}))
			_, err := f.Fetch(context.Background(), srv.URL+"/a.png")
			ce := wantRejected(t, err, fetch.ErrStatus)
			if !strings.Contains(ce.Err.Error(), tt.detail) {
				t.Errorf("detail %q does not contain %q", ce.Err, tt.detail)
			}
		})
	}
}

func TestFetchTimeouts(t *testing.T) {
	png := pngData(t)
	slowHeaders := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	slowBody := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(png)+10))
		_, _ = w.Write(png)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	tests := []struct {
		name    string
		handler http.Handler
		ctxWait time.Duration // 0: no deadline on ctx
		timeout time.Duration // Config.Timeout
	}{
		{"ctx deadline before headers", slowHeaders, 100 * time.Millisecond, 0},
		{"ctx deadline during body", slowBody, 100 * time.Millisecond, 0},
		{"config timeout before headers", slowHeaders, 0, 100 * time.Millisecond},
		{"config timeout during body", slowBody, 0, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := newServer(t, tt.handler)
			f := fetch.New(allowLoopback(fetch.Config{Timeout: tt.timeout}))
			ctx := context.Background()
			if tt.ctxWait > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctxWait)
				defer cancel()
			}
			start := time.Now()
			_, err := f.Fetch(ctx, srv.URL+"/slow.png?sig=s3cr3t")
			wantCode(t, err, core.CodeTimeout, context.DeadlineExceeded)
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %s", d)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("error leaks the query: %v", err)
			}
		})
	}
}

func TestFetchCancelled(t *testing.T) {
	srv, _ := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	f := fetch.New(allowLoopback(fetch.Config{}))
	tests := []struct {
		name  string
		after time.Duration // cancel after; <0: before the call
	}{
		{"cancelled before the call", -1},
		{"cancelled while waiting", 50 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.after < 0 {
				cancel()
			} else {
				time.AfterFunc(tt.after, cancel)
			}
			_, err := f.Fetch(ctx, srv.URL+"/a.png?sig=s3cr3t")
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			var ce *core.Error
			if errors.As(err, &ce) {
				t.Errorf("a cancellation came back as %s, want the ctx error", ce.Code)
			}
			if got := core.ErrorCode(err); got != core.CodeInterrupted {
				t.Errorf("ErrorCode = %s, want %s", got, core.CodeInterrupted)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("error leaks the query: %v", err)
			}
		})
	}
}

func TestFetchNetworkFailure(t *testing.T) {
	// A port that was just listening and is now closed: connection refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	hangUp := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	srv, _ := newServer(t, hangUp)
	tests := []struct {
		name string
		url  string
	}{
		{"connection refused", "http://" + addr + "/a.png?sig=s3cr3t"},
		{"server hangs up", srv.URL + "/a.png?sig=s3cr3t"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fetch.New(allowLoopback(fetch.Config{}))
			_, err := f.Fetch(context.Background(), tt.url)
			wantCode(t, err, core.CodeUpstreamFailed, nil)
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("error leaks the query: %v", err)
			}
		})
	}
}

// TestFetchRedactsSecrets checks that neither errors nor logs carry the
// query of a signed URL or credentials in it.
func TestFetchRedactsSecrets(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/missing.png", http.NotFound)
	mux.HandleFunc("/html.png", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("<html>SECRET</html>"))
	})
	mux.HandleFunc("/to-metadata", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "http://169.254.169.254/latest/?token=SECRET")
		w.WriteHeader(http.StatusFound)
	})
	mux.HandleFunc("/bad-location", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "http://[bad host/x?sig=SECRET")
		w.WriteHeader(http.StatusFound)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "/elsewhere?sig=SECRET")
		w.WriteHeader(http.StatusFound)
	})
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "/elsewhere?sig=SECRET")
		w.WriteHeader(http.StatusFound)
	})
	srv, _ := newServer(t, mux)
	const q = "?X-Amz-Signature=SECRET&X-Amz-Credential=SECRET%2F2024"
	tests := []struct {
		name string
		ref  string
		want string // the redacted form expected in the error
	}{
		{"not found", srv.URL + "/missing.png" + q, srv.URL + "/missing.png"},
		{"not an image", srv.URL + "/html.png" + q, srv.URL + "/html.png"},
		{"redirect to metadata", srv.URL + "/to-metadata" + q, "http://169.254.169.254/latest/"},
		{"relative redirect loop", srv.URL + "/loop" + q, "/loop (redirected to " + srv.URL + "/elsewhere)"},
		{"unparsable redirect", srv.URL + "/bad-location" + q, srv.URL + "/bad-location"},
		{"blocked", "http://10.0.0.1/a.png" + q, "http://10.0.0.1/a.png"},
		{"userinfo", "http://user:SECRET@10.0.0.1/a.png", "http://10.0.0.1/a.png"},
		{"bad scheme", "ftp://example.com/a.png" + q, "ftp://example.com/a.png"},
		{"data uri", "data:image/png;base64,U0VDUkVU", "data URI"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			f := fetch.New(allowLoopback(fetch.Config{}), fetch.WithLogger(log))
			_, err := f.Fetch(context.Background(), tt.ref)
			if err == nil {
				t.Fatal("got no error")
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error leaks a secret: %v", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not show %q", err, tt.want)
			}
			if logs.Len() == 0 {
				t.Error("nothing was logged")
			}
			if strings.Contains(logs.String(), "SECRET") {
				t.Errorf("log leaks a secret: %s", logs.String())
			}
		})
	}
}

func TestBlockedReason(t *testing.T) {
	tests := []struct {
		ip      string
		blocked bool
	}{
		{"8.8.8.8", false},
		{"1.1.1.1", false},
		{"100.63.255.255", false},
		{"100.64.0.0", true},
		{"100.127.255.255", true},
		{"100.128.0.0", false},
		{"172.15.255.255", false},
		{"172.16.0.0", true},
		{"172.31.255.255", true},
		{"172.32.0.0", false},
		{"169.254.169.254", true},
		{"127.255.255.254", true},
		{"0.0.0.0", true},
		{"0.255.255.255", true},
		{"192.0.0.8", true},
		{"198.18.0.1", true},
		{"198.20.0.1", false},
		{"239.255.255.250", true},
		{"240.0.0.1", true},
		{"255.255.255.255", true},
		{"2606:4700:4700::1111", false},
		{"2001:4860:4860::8888", false},
		{"::", true},
		{"::1", true},
		{"::127.0.0.1", true},
		{"::ffff:8.8.8.8", false},
		{"::ffff:10.0.0.1", true},
		{"::ffff:0.0.0.0", true},
		{"fc00::1", true},
		{"fdff:ffff::1", true},
		{"fe80::1", true},
		{"fe80::1%eth0", true},
		{"fec0::1", true},
		{"ff02::1", true},
		{"ff01::1", true},
		{"64:ff9b::808:808", false},
		{"64:ff9b::a9fe:a9fe", true},
		{"2002:808:808::1", false},
		{"2002:7f00:1::1", true},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			why := fetch.BlockedReason(netip.MustParseAddr(tt.ip))
			if (why != "") != tt.blocked {
				t.Errorf("BlockedReason(%s) = %q, want blocked=%v", tt.ip, why, tt.blocked)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  fetch.Config
		want []string // substrings of the error; none: valid
	}{
		{"zero", fetch.Config{}, nil},
		{"good allowlist", fetch.Config{AllowedHosts: []string{"gateway.lan", "10.0.0.0/8", "192.168.1.5", "::1", "fd00::/8"}}, nil},
		{
			name: "every problem at once",
			cfg: fetch.Config{
				MaxBytes:     -1,
				Timeout:      -time.Second,
				AllowedHosts: []string{"10.0.0.0/33", "http://gateway.lan", "gateway.lan:8080", " ", "*.lan"},
			},
			want: []string{"max bytes", "timeout", `"10.0.0.0/33"`, `"http://gateway.lan"`, `"gateway.lan:8080"`, "empty entry", `"*.lan"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted a bad config")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestFetchConcurrent(t *testing.T) {
	body := pngData(t)
	srv, _ := newServer(t, serveBytes(body, "image/png"))
	f := fetch.New(allowLoopback(fetch.Config{}))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() {
			ref := fmt.Sprintf("%s/%d.png", srv.URL, i)
			if i%2 == 1 {
				ref = fmt.Sprintf("http://10.0.0.%d/a.png", i)
			}
			_, err := f.Fetch(context.Background(), ref)
			if (err == nil) != (i%2 == 0) {
				errs <- fmt.Errorf("%s: %v", ref, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestFetchIgnoresProxyEnv: a proxy would do the dialling for us and so
// bypass the address check; the environment must not switch one on.
func TestFetchIgnoresProxyEnv(t *testing.T) {
	var hits atomic.Int32
	body := pngData(t)
	proxy, _ := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write(body)
	}))
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		t.Setenv(k, proxy.URL)
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	f := fetch.New(allowLoopback(fetch.Config{}))
	_, err := f.Fetch(context.Background(), "http://10.0.0.1/a.png")
	wantRejected(t, err, fetch.ErrBlockedAddress)
	if n := hits.Load(); n != 0 {
		t.Errorf("the proxy got %d requests", n)
	}
}

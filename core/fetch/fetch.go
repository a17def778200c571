// Package fetch downloads the images an upstream gateway points to. Those
// references are untrusted: the guard refuses schemes other than http(s) and
// data:, private and special addresses (checked on the address actually
// dialled, so redirects and DNS rebinding are covered; through a proxy, on
// the address the proxy is asked to connect to), oversized bodies and
// anything that does not sniff as PNG, JPEG, WebP or GIF.
package fetch

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/imaginebot/imaginebot/core"
)

// Defaults for the zero Config.
const (
	DefaultMaxBytes     = 20 << 20
	DefaultMaxRedirects = 3
	DefaultTimeout      = 60 * time.Second
	DefaultUserAgent    = "imaginebot"

	// maxMaxBytes keeps the size arithmetic (cap+1, base64 lengths) far
	// from overflow; no image gets near it.
	maxMaxBytes = 1 << 40
)

// Config tunes a Fetcher. Zero fields take the defaults above.
type Config struct {
	// MaxBytes caps the decoded image size.
	MaxBytes int64
	// AllowedHosts may reach private and special addresses, for gateways
	// hosted on the operator's own network. An entry is a host name
	// (case-insensitive, matched against the URL's host as written), an IP
	// literal (matched against the URL's host too) or a CIDR such as
	// "10.0.0.0/8" (matched against the address a host resolves to).
	AllowedHosts []string
	// MaxRedirects caps the redirects followed per download; 0 means the
	// default and a negative value follows none.
	MaxRedirects int
	// Timeout bounds one download; the caller's ctx bounds it too.
	Timeout time.Duration
	// UserAgent is sent with every request.
	UserAgent string
	// MaxConns sizes the pool of kept-alive connections per image host: the
	// downloads in flight at once (default 16). Gateways serve images from
	// one or two hosts, so Go's default of 2 would reconnect for most.
	MaxConns int
}

// Validate reports every problem in c at once, for config loading.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("fetch: max bytes %d is negative", c.MaxBytes))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("fetch: timeout %s is negative", c.Timeout))
	}
	_, bad := parseAllowlist(c.AllowedHosts)
	errs = append(errs, bad...)
	return errors.Join(errs...)
}

// Option configures a Fetcher.
type Option func(*Fetcher)

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option {
	return func(f *Fetcher) {
		if l != nil {
			f.log = l
		}
	}
}

// ProxyDialer connects to an address through an outbound proxy
// (netproxy.Dialer): the proxy must be asked for addr exactly as given.
type ProxyDialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// WithProxy downloads through a proxy. The guard still decides where a
// download may go: it resolves the URL's host itself, checks the addresses,
// and asks the proxy for a checked IP address and port, never for the name,
// so the proxy can neither be pointed at a private address nor resolve the
// name anew (DNS rebinding). TLS still names the URL's host. http:// images
// go through a CONNECT tunnel too.
func WithProxy(d ProxyDialer) Option {
	return func(f *Fetcher) { f.proxy = d }
}

// Fetcher downloads and checks images. It is safe for concurrent use.
type Fetcher struct {
	maxBytes     int64
	maxRedirects int
	timeout      time.Duration
	userAgent    string
	client       *http.Client
	dialer       *dialer
	log          *slog.Logger
	proxy        ProxyDialer
}

// New returns a Fetcher. Allowlist entries that cannot be parsed are logged
// and ignored (Config.Validate reports them up front).
func New(cfg Config, opts ...Option) *Fetcher {
	f := &Fetcher{
		maxBytes:     cfg.MaxBytes,
		maxRedirects: cfg.MaxRedirects,
		timeout:      cfg.Timeout,
		userAgent:    cfg.UserAgent,
		log:          slog.New(slog.DiscardHandler),
	}
	for _, opt := range opts {
		opt(f)
	}
	if f.maxBytes <= 0 {
		f.maxBytes = DefaultMaxBytes
	}
	f.maxBytes = min(f.maxBytes, maxMaxBytes)
	switch {
	case f.maxRedirects == 0:
		f.maxRedirects = DefaultMaxRedirects
	case f.maxRedirects < 0:
		f.maxRedirects = 0
	}
	if f.timeout <= 0 {
		f.timeout = DefaultTimeout
	}
	if f.userAgent == "" {
		f.userAgent = DefaultUserAgent
	}

	allow, bad := parseAllowlist(cfg.AllowedHosts)
	for _, err := range bad {
		f.log.Warn("fetch: ignoring allowed host entry", "err", err)
	}
	d := newDialer(allow, f.proxy)
	f.dialer = d
	// Built field by field rather than cloned from http.DefaultTransport: a
	// clone would inherit whatever another package set on that global, and
	// Proxy must stay nil — a proxy from the environment would dial for us
	// and bypass the address check (WithProxy's goes through the guard's
	// dialer instead). The values match DefaultTransport's, but for the idle
	// pool.
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           max(100, cfg.MaxConns),
		MaxIdleConnsPerHost:    cmp.Or(cfg.MaxConns, 16),
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  1 * time.Second,
		MaxResponseHeaderBytes: 1 << 20,
	}
	f.client = &http.Client{Transport: tr, CheckRedirect: f.checkRedirect}
	return f
}

// Fetch returns the image ref points to: an http(s) URL, downloaded, or a
// base64 data: URI, decoded. Refusals are *core.Error with
// CodeImageRejected wrapping one of the sentinel errors; a deadline is
// CodeTimeout, a network failure CodeUpstreamFailed, and a cancelled ctx
// comes back as its own error.
func (f *Fetcher) Fetch(ctx context.Context, ref string) (core.Image, error) {
	return f.FetchWithLog(ctx, f.log, ref)
}

// FetchWithLog is Fetch logging with log rather than the Fetcher's logger:
// a job's, so that these lines carry its id (upstream.LoggingFetcher).
func (f *Fetcher) FetchWithLog(ctx context.Context, log *slog.Logger, ref string) (core.Image, error) {
	ref = strings.TrimSpace(ref)
	if err := ctx.Err(); err != nil {
		return core.Image{}, f.contextError(ctx, ref)
	}
	var (
		img core.Image
		err error
	)
	if hasPrefixFold(ref, "data:") {
		img, err = f.decodeDataURI(ref)
	} else {
		img, err = f.download(ctx, ref)
	}
	switch {
	case err == nil:
		log.Debug("fetch: image ok", "ref", Redact(ref), "bytes", len(img.Data), "mime", img.MIME)
	case errors.Is(err, ErrBlockedAddress):
		// Worth an operator's attention: an upstream pointing at our network.
		log.Warn("fetch: refused image", "err", err)
	default:
		log.Debug("fetch: image failed", "err", err)
	}
	return img, err
}

func (f *Fetcher) download(ctx context.Context, ref string) (core.Image, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, f.timeout, &downloadTimeout{f.timeout})
	defer cancel()

	// The request keeps ref byte for byte: net/url stores the escaped path
	// and the raw query as given, so %2F and %3D in signed URLs survive.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ref, nil)
	if err != nil {
		return core.Image{}, rejected(ref, fmt.Errorf("%w: %w", ErrMalformed, scrubbed{unwrapURLError(err)}))
	}
	if err := checkURL(req.URL); err != nil {
		return core.Image{}, rejected(ref, err)
	}
	req.Header.Set("User-Agent", f.userAgent)
	req.Header.Set("Accept", "image/webp,image/png,image/jpeg,image/gif,*/*;q=0.1")

	resp, err := f.client.Do(req)
	if err != nil {
		return core.Image{}, f.requestError(ctx, ref, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// StatusText, not resp.Status: the reason phrase is the server's text.
		return core.Image{}, rejected(ref, fmt.Errorf("%w %d %s", ErrStatus, resp.StatusCode, http.StatusText(resp.StatusCode)))
	}
	if resp.ContentLength > f.maxBytes {
		return core.Image{}, tooLarge(ref, f.maxBytes, "Content-Length %d", resp.ContentLength)
	}

	// Content-Length is only a hint for the buffer; the LimitReader is what
	// enforces the cap, one byte past it so that "too large" is detectable.
	var buf bytes.Buffer
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(io.LimitReader(resp.Body, f.maxBytes+1)); err != nil {
		return core.Image{}, f.requestError(ctx, ref, err)
	}
	if int64(buf.Len()) > f.maxBytes {
		return core.Image{}, tooLarge(ref, f.maxBytes, "body")
	}
	data := buf.Bytes()
	mime, err := sniff(data)
	if err != nil {
		return core.Image{}, rejected(ref, err)
	}
	return core.Image{Data: data, MIME: mime, Source: ref}, nil
}

// checkURL admits only absolute http(s) URLs with a host.
func checkURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		if u.Scheme == "" {
			return fmt.Errorf("%w: missing scheme", ErrScheme)
		}
		return fmt.Errorf("%w %q", ErrScheme, u.Scheme)
	}
	if u.Host == "" {
		return fmt.Errorf("%w: missing host", ErrMalformed)
	}
	return nil
}

func (f *Fetcher) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > f.maxRedirects {
		return fmt.Errorf("%w: stopped after %d", ErrTooManyRedirects, f.maxRedirects)
	}
	if err := checkURL(req.URL); err != nil {
		return fmt.Errorf("redirect: %w", err)
	}
	return nil
}

// requestError classifies a failure of the request or of reading its body.
// The *url.Error net/http wraps it in is dropped: its text holds the full
// URL, query and signature included.
func (f *Fetcher) requestError(ctx context.Context, ref string, err error) error {
	where := Redact(ref)
	var ue *url.Error
	if errors.As(err, &ue) {
		if last := Redact(resolve(ref, ue.URL)); last != where {
			where += " (redirected to " + last + ")"
		}
		err = ue.Err
	}
	err = scrubbed{err}
	switch {
	case errors.Is(err, ErrBlockedAddress):
		// The operator's fix, when the gateway really is on their network.
		return &core.Error{Code: core.CodeImageRejected, Err: fmt.Errorf("fetch: %s: %w; if the gateway serves its images from your own network, list the host in images.allow_private_hosts", where, err)}
	case errors.Is(err, ErrScheme), errors.Is(err, ErrTooManyRedirects), errors.Is(err, ErrMalformed):
		return &core.Error{Code: core.CodeImageRejected, Err: fmt.Errorf("fetch: %s: %w", where, err)}
	case errors.Is(ctx.Err(), context.Canceled):
		// The caller gave up: hand back its own error, not a failure of ours.
		return fmt.Errorf("fetch: %s: %w", where, ctx.Err())
	case core.DeadlineCause(ctx) != nil:
		// Which deadline: the download's own, or the job's (upstream.timeout,
		// limits.job_timeout).
		return &core.Error{Code: core.CodeTimeout, Err: fmt.Errorf("fetch: %s: %w", where, core.DeadlineCause(ctx))}
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return &core.Error{Code: core.CodeTimeout, Err: fmt.Errorf("fetch: %s: %w: %w", where, context.DeadlineExceeded, err)}
	default:
		return &core.Error{Code: core.CodeUpstreamFailed, Err: fmt.Errorf("fetch: %s: %w", where, err)}
	}
}

func (f *Fetcher) contextError(ctx context.Context, ref string) error {
	if cause := core.DeadlineCause(ctx); cause != nil {
		return &core.Error{Code: core.CodeTimeout, Err: fmt.Errorf("fetch: %s: %w", Redact(ref), cause)}
	}
	return fmt.Errorf("fetch: %s: %w", Redact(ref), ctx.Err())
}

// downloadTimeout is the cause of a download's own deadline, which no
// setting sets.
type downloadTimeout struct{ d time.Duration }

func (t *downloadTimeout) Error() string {
	return fmt.Sprintf("the download took longer than %s, the limit for one image", t.d)
}

func (t *downloadTimeout) Unwrap() error { return context.DeadlineExceeded }

// resolve makes a Location, which may be relative, absolute against ref.
func resolve(ref, loc string) string {
	base, err := url.Parse(ref)
	if err != nil {
		return loc
	}
	u, err := base.Parse(loc)
	if err != nil {
		return loc
	}
	return u.String()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// sniff returns the image type of data, judged on its bytes alone: the
// server's Content-Type and the data URI's declared type are upstream claims.
func sniff(data []byte) (string, error) {
	switch mime := http.DetectContentType(data); mime {
	case "image/png", "image/jpeg", "image/webp", "image/gif":
		return mime, nil
	default:
		if len(data) == 0 {
			return "", fmt.Errorf("%w: empty body", ErrNotImage)
		}
		return "", fmt.Errorf("%w: content sniffed as %s", ErrNotImage, mime)
	}
}

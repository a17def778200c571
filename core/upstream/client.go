// Package upstream is the client for OpenAI-compatible gateways ("NO.1 API",
// one-api, new-api and their resellers) that serve image models through
// POST /v1/chat/completions, or through the images API
// (/v1/images/generations and /edits, see images.go) for models of
// core.APIImages, or through the midjourney-proxy task API (/mj/…, see
// midjourney.go) for models of core.APIMidjourney. It implements
// core.Generator: it sends the prompt, reads the answer (JSON or a
// Server-Sent Events stream, or a task polled to its end), finds the image
// references in it and downloads them with a Fetcher.
//
// Failures are *core.Error with an upstream Code, decided by HTTP status and
// error.code (never error.type, which resellers rebrand). The API key never
// appears in an error or a log line.
package upstream

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/fetch"
)

// DefaultBaseURL is the gateway the upstream docs name.
const DefaultBaseURL = "https://api.chatgptsb.com"

const (
	defaultTimeout     = 5 * time.Minute
	defaultRetries     = 2
	defaultStreamIdle  = 90 * time.Second
	defaultMaxResponse = 64 << 20
	errorBodyCap       = 1 << 20
	maxImages          = 4
	maxDetail          = 2000 // runes of refusal text handed to core (which cleans and cuts it further)
	backoffBase        = time.Second
	backoffCap         = 30 * time.Second
)

// Config configures a Client. Zero values take the defaults.
type Config struct {
	// BaseURL is the gateway, with or without a trailing "/" or "/v1";
	// "/v1/chat/completions" is appended. Default DefaultBaseURL.
	BaseURL string
	// APIKey is the gateway token ("sk-..."), sent as a Bearer token.
	APIKey string
	// Timeout is the budget of one job, retries and downloads included
	// (default 5m). A caller's earlier deadline wins.
	Timeout time.Duration
	// Retries is the number of extra attempts after 429, 5xx and connection
	// errors: 0 means the default 2, a negative value none.
	Retries int
	// UserIDSecret keys the HMAC-SHA256 that turns a user key into the
	// pseudonym sent as "user".
	UserIDSecret string
	// StreamIdleTimeout fails a stream that sends nothing (not even a
	// keep-alive) for this long (default 90s).
	StreamIdleTimeout time.Duration
	// MaxResponseBytes caps a response body and a stream's text (default 64 MiB).
	MaxResponseBytes int64
	// MaxConns sizes the pool of kept-alive connections to the gateway: the
	// calls in flight at once (default 16). Go's default of 2 per host would
	// open a new connection, and a TLS handshake, for most jobs under load.
	MaxConns int
	// TaskPollInterval is the first wait before a Midjourney task is
	// fetched (default 1s); each wait after it is half as long again, up to
	// TaskPollMax (default 5s). Timeout bounds the whole wait.
	TaskPollInterval time.Duration
	TaskPollMax      time.Duration

	// Optional sampling fields, sent only when set (N only when > 1).
	Temperature *float64
	TopP        *float64
	MaxTokens   *int
	N           int
}

// Fetcher downloads and checks one image reference: an http(s) URL or a
// data: URI, exactly as the gateway wrote it. Errors should be *core.Error
// (CodeImageRejected for unsafe or non-image content).
type Fetcher interface {
	Fetch(ctx context.Context, ref string) (core.Image, error)
}

// LoggingFetcher is a Fetcher that logs with a logger given per call: the
// client hands it the job's, so that the fetcher's lines carry the job id
// like the client's own. fetch.Fetcher is one.
type LoggingFetcher interface {
	Fetcher
	FetchWithLog(ctx context.Context, log *slog.Logger, ref string) (core.Image, error)
}

// Option customises a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client. Its Timeout should be zero: the job
// deadline and the stream idle timeout bound every request. The default
// client does not follow redirects (a POST must not turn into a GET).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithProxy sends the calls to the gateway through the proxy at u (http,
// https or socks5: net/http's Transport.Proxy speaks all three); nil sends
// them directly, whatever HTTPS_PROXY says. Without it the environment's
// proxy variables apply. It shapes the default client only, not one from
// WithHTTPClient.
func WithProxy(u *url.URL) Option {
	return func(c *Client) { c.proxy, c.proxySet = u, true }
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.log = l } }

// WithSleep replaces the wait between retries; it must return early with
// ctx's error when ctx ends. Tests use it to retry without waiting.
func WithSleep(sleep func(ctx context.Context, d time.Duration) error) Option {
	return func(c *Client) { c.sleep = sleep }
}

// Metrics is what the client tells operators: labels are model ids from
// the configuration and core codes ("" = success).
type Metrics interface {
	// Attempt counts one request to the gateway; retry is whether another follows.
	Attempt(model string, outcome core.Code, retry bool)
	// Generated observes a whole generation, retries and downloads included.
	Generated(model string, outcome core.Code, d time.Duration)
}

// WithMetrics reports to m (default: nowhere).
func WithMetrics(m Metrics) Option { return func(c *Client) { c.metrics = m } }

type noMetrics struct{}

func (noMetrics) Attempt(string, core.Code, bool)            {}
func (noMetrics) Generated(string, core.Code, time.Duration) {}

// WithRand replaces the jitter source: a function returning values in [0, 1).
func WithRand(r func() float64) Option { return func(c *Client) { c.rand = r } }

// Client is a core.Generator backed by a chat-completions gateway. It is
// safe for concurrent use.
type Client struct {
	cfg      Config
	endpoint string
	fetcher  Fetcher
	hc       *http.Client
	log      *slog.Logger
	sleep    func(context.Context, time.Duration) error
	rand     func() float64
	metrics  Metrics
	answered atomic.Int64 // unix nanos of the gateway's last answer below 500
	proxy    *url.URL     // WithProxy, when proxySet
	proxySet bool
}

var _ core.Generator = (*Client)(nil)

// New returns a Client that downloads images with f (which must not be nil).
func New(cfg Config, f Fetcher, opts ...Option) *Client {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	switch {
	case cfg.Retries == 0:
		cfg.Retries = defaultRetries
	case cfg.Retries < 0:
		cfg.Retries = 0
	}
	if cfg.StreamIdleTimeout <= 0 {
		cfg.StreamIdleTimeout = defaultStreamIdle
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = defaultMaxResponse
	}
	if cfg.TaskPollInterval <= 0 {
		cfg.TaskPollInterval = defaultTaskPoll
	}
	if cfg.TaskPollMax <= 0 {
		cfg.TaskPollMax = defaultTaskPollMax
	}
	cfg.TaskPollMax = max(cfg.TaskPollMax, cfg.TaskPollInterval)
	c := &Client{
		cfg:      cfg,
		endpoint: Endpoint(cfg.BaseURL),
		fetcher:  f,
		log:      slog.New(slog.DiscardHandler),
		sleep:    sleepCtx,
		rand:     rand.Float64,
		metrics:  noMetrics{},
	}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = cmp.Or(cfg.MaxConns, 16)
		tr.MaxIdleConns = max(tr.MaxIdleConns, tr.MaxIdleConnsPerHost)
		if c.proxySet {
			tr.Proxy = http.ProxyURL(c.proxy)
		}
		c.hc = &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	return c
}

// readyWindow is how recent an answer from the gateway must be for Ready
// to trust it without a probe.
const readyWindow = 3 * time.Minute

// Ready says why the gateway cannot take jobs (nil when it can): it
// answered a job within the last few minutes, or else a cheap probe
// (GET /v1/models, which one-api and new-api serve) with the key succeeds.
func (c *Client) Ready(ctx context.Context) error {
	if last := c.answered.Load(); last != 0 && time.Since(time.Unix(0, last)) < readyWindow {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	url := strings.TrimSuffix(c.endpoint, "/chat/completions") + "/models"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("upstream: probe: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	resp, err := c.hc.Do(req)
	if err != nil {
		return errors.New(c.redact(fmt.Sprintf("upstream: the gateway does not answer: %v", err)))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("upstream: the gateway rejects the key (HTTP %d): check upstream.api_key", resp.StatusCode)
	case resp.StatusCode >= 500:
		return fmt.Errorf("upstream: the gateway answers HTTP %d", resp.StatusCode)
	}
	c.answered.Store(time.Now().UnixNano())
	return nil
}

// Endpoint is the chat-completions URL for a base URL given with or without
// a trailing "/", "/v1" or the full path.
func Endpoint(base string) string {
	base = strings.TrimRight(strings.TrimSpace(base), "/")
	base = strings.TrimSuffix(base, "/chat/completions")
	base = strings.TrimSuffix(base, "/v1")
	return base + "/v1/chat/completions"
}

// Generate asks the gateway for req's image and downloads what it answers
// (at most 4 images). progress, which may be nil, is called from Generate's
// goroutine while a stream runs.
func (c *Client) Generate(ctx context.Context, req core.GenRequest, progress func(core.GenProgress)) ([]core.Image, error) {
	start := time.Now()
	imgs, err := c.generate(ctx, req, progress)
	c.metrics.Generated(req.Model.Name, core.ErrorCode(err), time.Since(start))
	return imgs, err
}

func (c *Client) generate(ctx context.Context, req core.GenRequest, progress func(core.GenProgress)) ([]core.Image, error) {
	ctx, cancel := core.WithSettingTimeout(ctx, c.cfg.Timeout, "upstream.timeout")
	defer cancel()
	log := c.log.With("job", req.Job, "model", req.Model.ID(), "stream", req.Model.Stream)
	switch {
	case req.Model.API == core.APIMidjourney:
		return c.generateMidjourney(ctx, c.log.With("job", req.Job, "model", req.Model.ID(), "api", req.Model.API), req, progress)
	case req.Action != nil:
		return nil, core.Errorf(core.CodeInternal, "upstream: model %s (api %s) has no buttons to press: actions are for midjourney models", req.Model.Name, cmp.Or(req.Model.API, core.APIChat))
	case req.Model.API == core.APIImages:
		return c.generateImages(ctx, log.With("api", req.Model.API), req)
	}
	body, err := c.requestBody(req)
	if err != nil {
		return nil, core.Errorf(core.CodeInternal, "upstream: encode request: %v", err)
	}
	start := time.Now()
	res, e := c.complete(ctx, log, req.Model.Name, c.chatCall(body, req.Model.Stream), progress)
	if e != nil && e.Code == core.CodeLostInRelay && req.Model.Stream && ctx.Err() == nil {
		// Relays such as one-api drop long data-URI lines and error chunks
		// from streams but deliver the same answer whole without streaming:
		// ask once more that way, within the same budget.
		log.Warn("upstream: the stream ended without an image; asking again without streaming", "err", e.Err)
		plain := req
		plain.Model.Stream = false
		if body, err = c.requestBody(plain); err != nil {
			return nil, core.Errorf(core.CodeInternal, "upstream: encode request: %v", err)
		}
		res, e = c.complete(ctx, log.With("stream", false), req.Model.Name, c.chatCall(body, false), progress)
	}
	if e != nil {
		log.Info("upstream: generation failed", "code", e.Code, "err", e.Err, "elapsed", time.Since(start))
		return nil, e
	}
	imgs, e := c.download(ctx, log, res)
	if e != nil {
		log.Info("upstream: generation failed", "code", e.Code, "err", e.Err, "elapsed", time.Since(start))
		return nil, e
	}
	log.Info("upstream: generated", "images", len(imgs), "elapsed", time.Since(start))
	return imgs, nil
}

type chatMessage struct {
	Role    string `json:"role"`
	Content any    `json:"content"` // text, or []requestPart with a picture
}

// requestPart is one part of a multimodal message (OpenAI's vision format,
// which one-api and new-api relay).
type requestPart struct {
	Type     string    `json:"type"` // text or image_url
	Text     string    `json:"text,omitempty"`
	ImageURL *imageURL `json:"image_url,omitempty"`
}

type chatRequest struct {
	Model       string        `json:"model"`
	Messages    []chatMessage `json:"messages"`
	Stream      bool          `json:"stream,omitempty"`
	Temperature *float64      `json:"temperature,omitempty"`
	TopP        *float64      `json:"top_p,omitempty"`
	MaxTokens   *int          `json:"max_tokens,omitempty"`
	N           int           `json:"n,omitempty"`
	User        string        `json:"user,omitempty"`
}

func (c *Client) requestBody(req core.GenRequest) ([]byte, error) {
	r := chatRequest{
		Model:       req.Model.ID(),
		Stream:      req.Model.Stream,
		Temperature: c.cfg.Temperature,
		TopP:        c.cfg.TopP,
		MaxTokens:   c.cfg.MaxTokens,
	}
	if c.cfg.N > 1 {
		r.N = c.cfg.N
	}
	if req.Model.SystemPrompt != "" {
		r.Messages = append(r.Messages, chatMessage{Role: "system", Content: req.Model.SystemPrompt})
	}
	if in := req.Input; in != nil {
		// The picture goes inline as a data URI: the gateway cannot fetch
		// the platform's file URLs (they carry the bot's token).
		uri := "data:" + in.MIME + ";base64," + base64.StdEncoding.EncodeToString(in.Data)
		r.Messages = append(r.Messages, chatMessage{Role: "user", Content: []requestPart{
			{Type: "text", Text: req.Prompt}, {Type: "image_url", ImageURL: &imageURL{URL: uri}}}})
	} else {
		r.Messages = append(r.Messages, chatMessage{Role: "user", Content: req.Prompt})
	}
	if req.User != "" {
		r.User = Pseudonym(c.cfg.UserIDSecret, req.User)
	}
	return encodeJSON(r)
}

// Pseudonym is the "user" field sent for a user key: hex HMAC-SHA256 of the
// key under secret. Stable, so the gateway can tell users apart, and not
// reversible without the secret.
func Pseudonym(secret, userKey string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(userKey))
	return hex.EncodeToString(m.Sum(nil))
}

// call is one request to the gateway. The chat, images and Midjourney APIs
// differ in where it goes, what it carries and how a 2xx answer reads;
// retries, deadlines and the error taxonomy are the same for all (complete,
// attempt).
type call struct {
	method      string // "" is POST
	url         string
	contentType string // "" sends none (a GET)
	body        []byte // sent anew, whole, by every attempt
	stream      bool
	// parse reads a non-streamed 2xx body.
	parse func(status int, raw []byte) (result, *core.Error, bool)
	// failure, when set, judges a non-2xx answer instead of c.failure (and
	// may hand it on to it).
	failure func(g *gatewayError) (result, *core.Error, bool)
}

// chatCall is a chat-completions request.
func (c *Client) chatCall(body []byte, stream bool) call {
	return call{url: c.endpoint, contentType: "application/json", body: body, stream: stream, parse: c.parseCompletion}
}

// complete runs the attempts: one, plus a retry after each retryable
// failure, backing off with full jitter (or Retry-After when longer), never
// past the job deadline.
func (c *Client) complete(ctx context.Context, log *slog.Logger, model string, rq call, progress func(core.GenProgress)) (result, *core.Error) {
	for attempt := 1; ; attempt++ {
		log.Debug("upstream: request", "attempt", attempt, "bytes", len(rq.body))
		res, e, retry := c.attempt(ctx, log, rq, progress)
		if e == nil {
			c.metrics.Attempt(model, "", false)
			return res, nil
		}
		c.metrics.Attempt(model, e.Code, retry && attempt <= c.cfg.Retries)
		e = c.clean(e)
		if !retry || attempt > c.cfg.Retries {
			return result{}, e
		}
		wait := c.backoff(attempt)
		if e.RetryAfter > wait {
			wait = e.RetryAfter
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= wait {
			log.Info("upstream: not retrying: the wait would outlast the job", "code", e.Code, "wait", wait, "err", e.Err)
			return result{}, e
		}
		log.Warn("upstream: retrying", "attempt", attempt, "code", e.Code, "wait", wait, "err", e.Err)
		if err := c.sleep(ctx, wait); err != nil {
			if ce := ctxError(ctx); ce != nil {
				return result{}, ce
			}
			return result{}, e
		}
	}
}

// backoff is the full-jitter wait before retry n (1-based).
func (c *Client) backoff(n int) time.Duration {
	ceil := backoffCap
	if n < 8 {
		ceil = min(backoffCap, backoffBase<<(n-1))
	}
	return time.Duration(c.rand() * float64(ceil))
}

// attempt makes one request. retry reports whether the failure is worth
// another attempt.
func (c *Client) attempt(ctx context.Context, log *slog.Logger, rq call, progress func(core.GenProgress)) (res result, e *core.Error, retry bool) {
	stream := rq.stream
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	var body io.Reader = http.NoBody
	if rq.body != nil {
		body = bytes.NewReader(rq.body)
	}
	hreq, err := http.NewRequestWithContext(actx, cmp.Or(rq.method, http.MethodPost), rq.url, body)
	if err != nil {
		return result{}, core.Errorf(core.CodeUpstreamAuth, "upstream: bad base URL: %v", err), false
	}
	hreq.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	if rq.contentType != "" {
		hreq.Header.Set("Content-Type", rq.contentType)
	}
	hreq.Header.Set("User-Agent", "imaginebot")
	if stream {
		hreq.Header.Set("Accept", "text/event-stream")
	} else {
		hreq.Header.Set("Accept", "application/json")
	}
	// Relays can stall a stream forever while keeping the connection; the
	// job deadline is minutes away, so a stream has a deadline of its own,
	// from the request on: a gateway that never sends its headers is idle too.
	var idled atomic.Bool
	var idle *time.Timer
	if stream {
		idle = time.AfterFunc(c.cfg.StreamIdleTimeout, func() { idled.Store(true); cancel() })
		defer idle.Stop()
	}
	resp, err := c.hc.Do(hreq)
	if err != nil {
		if ce := ctxError(ctx); ce != nil {
			return result{}, ce, false
		}
		if idled.Load() {
			return result{}, core.Errorf(core.CodeTimeout, "upstream: no response headers within %s (upstream.stream_idle_timeout)", c.cfg.StreamIdleTimeout), true
		}
		c.answered.Store(0) // unreachable now: Ready probes again
		return result{}, core.Errorf(core.CodeUpstreamFailed, "upstream: %v", err), true
	}
	defer resp.Body.Close()

	status := resp.StatusCode
	if status == http.StatusUnauthorized || status == http.StatusForbidden || status >= 500 {
		// The key refused, or the gateway failing (a dead one behind its
		// proxy answers 502): Ready no longer trusts an older answer, and
		// probes.
		c.answered.Store(0)
	} else {
		c.answered.Store(time.Now().UnixNano())
	}
	asStream := status/100 == 2 && (isMedia(resp.Header, "text/event-stream") || stream && !isMedia(resp.Header, "application/json"))
	var rd io.Reader = resp.Body
	if asStream && idle == nil {
		// Streamed although not asked for: idle deadline from here.
		idle = time.AfterFunc(c.cfg.StreamIdleTimeout, func() { idled.Store(true); cancel() })
		defer idle.Stop()
	}
	if idle != nil {
		idle.Reset(c.cfg.StreamIdleTimeout)
		rd = &idleReader{r: rd, reset: idle.Reset, d: c.cfg.StreamIdleTimeout}
	}
	readFailed := func(err error) (*core.Error, bool) {
		if ce := ctxError(ctx); ce != nil {
			return ce, false
		}
		if idled.Load() {
			return core.Errorf(core.CodeTimeout, "upstream: HTTP %d: nothing received for %s (upstream.stream_idle_timeout)", status, c.cfg.StreamIdleTimeout), false
		}
		return core.Errorf(core.CodeUpstreamFailed, "upstream: HTTP %d: read: %v", status, err), true
	}

	switch {
	case status/100 != 2:
		raw, err := readCapped(rd, errorBodyCap)
		if err != nil && !errors.Is(err, errTooLarge) && len(raw) == 0 {
			e, retry := readFailed(err)
			return result{}, e, retry
		}
		api, malformed := parseErrorBody(raw)
		g := &gatewayError{status: status, api: api, malformed: malformed, body: raw, header: resp.Header}
		if rq.failure != nil {
			return rq.failure(g)
		}
		return c.failure(g)
	case asStream:
		res, err := consumeStream(rd, int(min(c.cfg.MaxResponseBytes, int64(^uint(0)>>1))), c.progressFunc(log, progress))
		var ge *gatewayError
		switch {
		case err == nil:
			return c.outcome(res)
		case errors.As(err, &ge):
			return c.failure(ge)
		case errors.Is(err, errTooLarge):
			return result{}, core.Errorf(core.CodeBadResponse, "upstream: HTTP %d: stream larger than %d bytes", status, c.cfg.MaxResponseBytes), false
		}
		e, retry := readFailed(err)
		if len(res.refs) > 0 && e.Code != core.CodeInterrupted && ctx.Err() == nil {
			// The image address arrived before the stream broke: use it.
			log.Warn("upstream: stream broke after the image arrived", "err", e.Err)
			return res, nil, false
		}
		return result{}, e, retry
	}
	raw, err := readCapped(rd, c.cfg.MaxResponseBytes)
	switch {
	case errors.Is(err, errTooLarge):
		return result{}, core.Errorf(core.CodeBadResponse, "upstream: HTTP %d: response larger than %d bytes", status, c.cfg.MaxResponseBytes), false
	case err != nil:
		e, retry := readFailed(err)
		return result{}, e, retry
	}
	return rq.parse(status, raw)
}

// parseCompletion reads a non-streamed 2xx body.
func (c *Client) parseCompletion(status int, raw []byte) (result, *core.Error, bool) {
	var cc completion
	if err := json.Unmarshal(raw, &cc); err != nil {
		return c.failure(&gatewayError{status: status, malformed: true, why: "malformed JSON: " + err.Error(), body: raw})
	}
	if api, ok := decodeAPIError(cc.Error); ok {
		return c.failure(&gatewayError{status: http.StatusOK, api: api, malformed: api.Message == "", why: "error object in the body", body: raw})
	}
	if cc.Choices == nil {
		return c.failure(&gatewayError{status: status, malformed: true, why: "not a chat.completion (no choices)", body: raw})
	}
	var acc accumulator
	for _, ch := range cc.Choices {
		m := ch.Message
		if m == nil {
			m = ch.Delta
		}
		if m != nil {
			acc.add(ch.Index, m, "\n")
		}
	}
	return c.outcome(acc.finish())
}

// outcome judges a complete answer: images, a refusal, or nothing. An
// answer with no text but progress lines or reasoning is no refusal: the
// image line was lost on the way (one-api drops streamed lines over 64 KiB
// after it relayed the "图像生成中…" before them). A refusal is shown without
// the progress lines that came before it.
func (c *Client) outcome(res result) (result, *core.Error, bool) {
	if len(res.refs) > 0 {
		return res, nil, false
	}
	switch text := withoutProgress(res.text); {
	case strings.TrimSpace(res.text) == "":
		return res, &core.Error{Code: core.CodeLostInRelay, Reason: core.ReasonEmpty, Err: errors.New("upstream: the answer was empty")}, false
	case res.reasoningOnly || strings.TrimSpace(text) == "":
		return res, core.Errorf(core.CodeLostInRelay, "upstream: the answer held no image, only progress text: %s", c.excerpt([]byte(res.text))), false
	default:
		return res, c.refusal(text, "no image in the answer"), false
	}
}

// progressLineRe matches the waiting messages gateways print before the
// image ("✨ 图片生成任务已启动", "正在放大图片到 2K...", "> 生成中... 25%").
var progressLineRe = regexp.MustCompile(`(?i)^[\s>*_#⏳⌛🎨🖌️✅✨🚀⚡🔄…\.。，,:：!！-]*(` +
	`图[像片]?生成|正在|生成中|请稍[候等]|排队中?|进度|处理中|任务已(提交|启动|开始)|` +
	`generating|in progress|progress|queued|waiting|processing|please wait|upscal|starting|started|` +
	`\d{1,3}(\.\d+)?\s*%)`)

// failureLineRe keeps a line that starts like progress but says it failed
// ("图片生成失败：…") a refusal.
var failureLineRe = regexp.MustCompile(`(?i)失败|抱歉|无法|不能|拒绝|违规|违反|敏感|sorry|cannot|can't|unable|refus|violat|policy|fail`)

func isProgressLine(line string) bool {
	return progressLineRe.MatchString(line) && !failureLineRe.MatchString(line)
}

// withoutProgress is text without its progress lines.
func withoutProgress(text string) string {
	var b strings.Builder
	for line := range strings.Lines(text) {
		if t := strings.TrimSpace(line); t != "" && !isProgressLine(t) {
			b.WriteString(line)
		}
	}
	return strings.TrimSpace(b.String())
}

func (c *Client) refusal(text, why string) *core.Error {
	return &core.Error{
		Code:   core.CodeRefused,
		Err:    fmt.Errorf("upstream: %s: %s", why, c.excerpt([]byte(text))),
		Detail: core.Truncate(text, maxDetail),
	}
}

// failure turns a gateway's error answer into a *core.Error.
func (c *Client) failure(g *gatewayError) (result, *core.Error, bool) {
	code := classify(g.status, g.api, g.malformed)
	var b strings.Builder
	fmt.Fprintf(&b, "upstream: HTTP %d", g.status)
	if g.api.Code != "" {
		fmt.Fprintf(&b, " code %q", g.api.Code)
	}
	if g.status/100 == 3 {
		fmt.Fprintf(&b, ": redirected to %q: set the base URL to the final address", g.header.Get("Location"))
	}
	if g.why != "" {
		b.WriteString(": " + g.why)
	}
	if ex := c.excerpt(g.body); ex != "" {
		b.WriteString(": " + ex)
	}
	e := &core.Error{Code: code, Err: errors.New(b.String())}
	if code == core.CodeRefused {
		e.Detail = core.Truncate(g.api.Message, maxDetail)
	}
	if g.header != nil {
		e.RetryAfter = parseRetryAfter(g.header.Get("Retry-After"), time.Now())
	}
	return result{}, e, retryable(code, g.status)
}

// download fetches the references in order, keeping up to maxImages.
func (c *Client) download(ctx context.Context, log *slog.Logger, res result) ([]core.Image, *core.Error) {
	var imgs []core.Image
	var first error
	for i, ref := range res.refs {
		if len(imgs) == maxImages {
			break
		}
		img, err := c.fetch(ctx, log, ref)
		if err != nil {
			if ctx.Err() != nil && len(imgs) > 0 {
				break
			}
			log.Warn("upstream: image fetch failed", "ref", fetch.Redact(ref), "err", err)
			if first == nil {
				first = err
			}
			continue
		}
		if i < len(res.notes) {
			img.Note = res.notes[i]
		}
		imgs = append(imgs, img)
	}
	switch ce := ctxError(ctx); {
	case len(imgs) > 0:
		return imgs, nil
	case ce != nil:
		return nil, ce
	case res.weak:
		// Links that were not images after all: the text is the answer.
		return nil, c.clean(c.refusal(res.text, "no image behind the links in the answer"))
	}
	var e *core.Error
	if errors.As(first, &e) {
		return nil, c.clean(e)
	}
	return nil, c.clean(&core.Error{Code: core.CodeImageRejected, Err: fmt.Errorf("upstream: fetch image: %w", first)})
}

// fetch downloads one reference, logging with the job's logger when the
// fetcher can.
func (c *Client) fetch(ctx context.Context, log *slog.Logger, ref string) (core.Image, error) {
	if lf, ok := c.fetcher.(LoggingFetcher); ok {
		return lf.FetchWithLog(ctx, log, ref)
	}
	return c.fetcher.Fetch(ctx, ref)
}

// progressFunc logs progress and passes it on.
func (c *Client) progressFunc(log *slog.Logger, progress func(core.GenProgress)) func(core.GenProgress) {
	return func(p core.GenProgress) {
		log.Debug("upstream: progress", "percent", p.Percent, "text", core.Truncate(fetch.RedactText(c.redact(p.Text)), 200))
		if progress != nil {
			p.Text = c.redact(p.Text)
			progress(p)
		}
	}
}

// excerpt is a short, single-line, key-free extract of a body for operators.
func (c *Client) excerpt(body []byte) string {
	const window = 8 << 10
	s := string(body[:min(len(body), window)])
	if len(body) > window {
		// Drop what might be the start of a key cut by the window.
		s = s[:len(s)-min(len(s), max(len(c.cfg.APIKey), 64))]
	}
	// Signed image URLs keep their signature in the query: cut it.
	s = strings.Join(strings.Fields(core.StripControl(fetch.RedactText(c.redact(s)))), " ")
	return core.Truncate(s, 200)
}

// redact removes the API key (with or without its "sk-" prefix, which
// one-api strips before looking keys up) from s.
func (c *Client) redact(s string) string {
	key := c.cfg.APIKey
	if key == "" {
		return s
	}
	s = strings.ReplaceAll(s, key, "[redacted]")
	if bare := strings.TrimPrefix(key, "sk-"); bare != key && len(bare) >= 8 {
		s = strings.ReplaceAll(s, bare, "[redacted]")
	}
	return s
}

// clean returns e with the API key removed from its texts.
func (c *Client) clean(e *core.Error) *core.Error {
	if e == nil || c.cfg.APIKey == "" {
		return e
	}
	msg := ""
	if e.Err != nil {
		msg = e.Err.Error()
	}
	if c.redact(msg) == msg && c.redact(e.Detail) == e.Detail {
		return e
	}
	cp := *e
	if e.Err != nil {
		cp.Err = errors.New(c.redact(msg)) // the chain held the key: it goes
	}
	cp.Detail = c.redact(e.Detail)
	return &cp
}

// ctxError is the error for an ended job context, or nil.
func ctxError(ctx context.Context) *core.Error {
	switch err := ctx.Err(); {
	case errors.Is(err, context.DeadlineExceeded):
		// The cause names the setting: upstream.timeout, or the caller's
		// limits.job_timeout when that ran out first.
		return &core.Error{Code: core.CodeTimeout, Err: fmt.Errorf("upstream: %w", core.DeadlineCause(ctx))}
	case err != nil:
		return &core.Error{Code: core.CodeInterrupted, Err: fmt.Errorf("upstream: %w", err)}
	}
	return nil
}

// readCapped reads r to its end, or errTooLarge past max bytes.
func readCapped(r io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err == nil && int64(len(b)) > max {
		return b[:max], errTooLarge
	}
	return b, err
}

func isMedia(h http.Header, want string) bool {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	return err == nil && strings.EqualFold(mt, want)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

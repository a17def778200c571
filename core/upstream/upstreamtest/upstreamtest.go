// Package upstreamtest is a fake OpenAI-compatible image gateway for tests:
// an httptest server that answers POST /v1/chat/completions, the images
// API (POST /v1/images/generations and /v1/images/edits, see images.go) and
// the midjourney-proxy task API (/mj/…, see midjourney.go) with scripted
// replies, records what it was sent, and serves the images its replies
// point at (GET /img/<name>).
//
//	gw := upstreamtest.New(t)
//	gw.Push(upstreamtest.Status(429, upstreamtest.ErrorBody("", "当前分组上游负载已饱和"), nil))
//	gw.Push(upstreamtest.JSON(200, upstreamtest.Completion("![x]("+gw.ImageURL("a.png")+")")))
//	... point the client at gw.URL ...
//	if gw.Calls() != 2 { ... }
//
// Each request to any of these endpoints takes the next pushed Reply; when
// the queue is empty the Handle function answers, and without one the
// default: a completion whose content is a markdown image of
// ImageURL("default.png") (streamed when the request asks for a stream), or
// for the images API an answer whose data[0].url is that image.
package upstreamtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// ChatPath is where the fake gateway answers chat completions.
const ChatPath = "/v1/chat/completions"

// ModelsPath lists the models, as one-api and new-api do (readiness probes).
const ModelsPath = "/v1/models"

// Reply writes one scripted answer to a chat request.
type Reply func(w http.ResponseWriter, r *Request)

// Message is one chat message as the client sent it.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	// Images are the image_url parts of a multimodal message (data URIs or
	// URLs); Content is then its text parts, joined.
	Images []string `json:"-"`
}

// UnmarshalJSON reads content as a string or as an array of parts.
func (m *Message) UnmarshalJSON(b []byte) error {
	var raw struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	m.Role = raw.Role
	if json.Unmarshal(raw.Content, &m.Content) == nil {
		return nil
	}
	var parts []struct {
		Type     string `json:"type"`
		Text     string `json:"text"`
		ImageURL struct {
			URL string `json:"url"`
		} `json:"image_url"`
	}
	if err := json.Unmarshal(raw.Content, &parts); err != nil {
		return err
	}
	var texts []string
	for _, p := range parts {
		switch p.Type {
		case "text":
			texts = append(texts, p.Text)
		case "image_url":
			m.Images = append(m.Images, p.ImageURL.URL)
		}
	}
	m.Content = strings.Join(texts, "\n")
	return nil
}

// Request is a recorded chat request: its headers, raw body and the decoded
// fields the docs name. Fields holds every top-level body field, to check
// that optional ones are absent.
type Request struct {
	Method string      `json:"-"`
	Path   string      `json:"-"`
	Header http.Header `json:"-"`
	Body   []byte      `json:"-"`

	Model       string    `json:"model"`
	Messages    []Message `json:"messages"`
	Stream      bool      `json:"stream"`
	User        string    `json:"user"`
	Temperature *float64  `json:"temperature"`
	TopP        *float64  `json:"top_p"`
	MaxTokens   *int      `json:"max_tokens"`
	N           *int      `json:"n"`

	// The images API's fields, from the JSON body or the multipart form.
	Prompt         string `json:"prompt"`
	Size           string `json:"size"`
	Quality        string `json:"quality"`
	Style          string `json:"style"`
	ResponseFormat string `json:"response_format"`
	// Parts are a multipart body's parts, in order (images/edits: the
	// fields and the "image" file).
	Parts []Part `json:"-"`

	// The midjourney-proxy's fields (/mj/submit/imagine and /action).
	Base64Array []string `json:"base64Array"`
	CustomID    string   `json:"customId"`
	TaskID      string   `json:"taskId"`

	Fields map[string]json.RawMessage `json:"-"`

	// HTTP is the live request, valid only while a Reply runs (for its
	// context: a Reply that blocks should also stop when it is done).
	HTTP *http.Request `json:"-"`
	// Done is closed when the test ends; blocking Replies stop then too.
	Done <-chan struct{} `json:"-"`
}

// Gateway is the fake gateway. Its methods are safe for concurrent use.
type Gateway struct {
	// URL is the base URL to configure the client with (no trailing slash).
	URL string

	srv  *httptest.Server
	done chan struct{}

	mu          sync.Mutex
	queue       []Reply
	handler     Reply
	key         string
	requests    []Request
	files       map[string]file
	redirects   map[string]string
	imageHits   []string
	down        bool
	modelsCalls int

	mj mjState // the midjourney-proxy's tasks and scripts
}

type file struct {
	contentType string
	body        []byte
}

// New starts a fake gateway that is closed when the test ends.
func New(t testing.TB) *Gateway {
	t.Helper()
	g := &Gateway{
		done:      make(chan struct{}),
		files:     map[string]file{},
		redirects: map[string]string{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc(ChatPath, g.chat)
	mux.HandleFunc(ImagesGenerationsPath, g.images)
	mux.HandleFunc(ImagesEditsPath, g.images)
	mux.HandleFunc(MJImaginePath, g.mjSubmit)
	mux.HandleFunc(MJActionPath, g.mjSubmit)
	mux.HandleFunc("GET "+MJFetchPattern, g.mjFetch)
	mux.HandleFunc("GET "+ModelsPath, g.models)
	mux.HandleFunc("/img/", g.image)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// What one-api answers for a wrong path (a base URL mistake).
		writeJSON(w, http.StatusNotFound, []byte(ErrorBody("", fmt.Sprintf("Invalid URL (%s %s)", r.Method, r.URL.Path))))
	})
	g.srv = httptest.NewServer(mux)
	g.URL = g.srv.URL
	t.Cleanup(func() {
		close(g.done) // release blocked replies first: Close waits for them
		g.srv.Close()
	})
	return g
}

// Push queues replies for the next chat requests, in order.
func (g *Gateway) Push(replies ...Reply) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.queue = append(g.queue, replies...)
}

// Handle sets the reply used when the queue is empty (nil restores the default).
func (g *Gateway) Handle(h Reply) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.handler = h
}

// SetDown makes the gateway answer every chat and models request with an
// HTML 502 page, as a proxy in front of a dead gateway does (false: up again).
func (g *Gateway) SetDown(down bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down = down
}

func (g *Gateway) models(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	key, down := g.key, g.down
	g.modelsCalls++
	g.mu.Unlock()
	switch {
	case down:
		Status(http.StatusBadGateway, "<html><body><h1>502 Bad Gateway</h1></body></html>", nil)(w, nil)
	case key != "" && r.Header.Get("Authorization") != "Bearer "+key:
		writeJSON(w, http.StatusUnauthorized, []byte(ErrorBody("", "无效的令牌")))
	default:
		writeJSON(w, http.StatusOK, []byte(`{"object":"list","data":[{"id":"stable-diffusion","object":"model"},{"id":"flux","object":"model"}]}`))
	}
}

// ModelsCalls is how many GET /v1/models the gateway answered.
func (g *Gateway) ModelsCalls() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.modelsCalls
}

// RequireKey makes every chat request without "Authorization: Bearer key"
// fail with 401, as gateways do for a bad or expired key.
func (g *Gateway) RequireKey(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.key = key
}

// Requests returns the requests received so far (chat and images), oldest first.
func (g *Gateway) Requests() []Request {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Request(nil), g.requests...)
}

// Calls is the number of requests received so far (chat and images).
func (g *Gateway) Calls() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.requests)
}

// ImageURL is the address of an image the gateway serves. Unless registered
// with ServeImage or RedirectImage, the name's extension picks the reply:
// .jpg/.jpeg a JPEG, .gif a GIF, .html an HTML page, .404 a 404, anything
// else a 16×16 PNG.
func (g *Gateway) ImageURL(name string) string { return g.URL + "/img/" + name }

// ServeImage registers the reply for ImageURL(name) (any content, e.g.
// NoisePNG for a big image or a lying Content-Type).
func (g *Gateway) ServeImage(name, contentType string, body []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.files[name] = file{contentType, body}
}

// RedirectImage makes ImageURL(name) answer 302 to target.
func (g *Gateway) RedirectImage(name, target string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.redirects[name] = target
}

// ImageRequests returns the names of the images fetched so far, in order.
func (g *Gateway) ImageRequests() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.imageHits...)
}

func (g *Gateway) chat(w http.ResponseWriter, r *http.Request) { g.serve(w, r, g.defaultReply) }

// serve records a request and answers it with the next reply, or def.
func (g *Gateway) serve(w http.ResponseWriter, r *http.Request, def Reply) {
	req, ok := readRequest(w, r, g.done)
	if !ok {
		return
	}
	g.mu.Lock()
	if !g.recordLocked(req) {
		g.mu.Unlock()
		writeJSON(w, http.StatusUnauthorized, []byte(ErrorBody("", "无效的令牌")))
		return // the scripted replies wait for a request with the right key
	}
	var reply Reply
	if g.down {
		reply = Status(http.StatusBadGateway, "<html><body><h1>502 Bad Gateway</h1></body></html>", nil)
	} else if len(g.queue) > 0 {
		reply, g.queue = g.queue[0], g.queue[1:]
	} else if g.handler != nil {
		reply = g.handler
	}
	g.mu.Unlock()

	if reply == nil {
		reply = def
	}
	reply(w, &req)
}

// readRequest reads and decodes a request; it answers 400, and returns
// false, when the body cannot be read.
func readRequest(w http.ResponseWriter, r *http.Request, done <-chan struct{}) (Request, bool) {
	body, err := readAll(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return Request{}, false
	}
	req := Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body, HTTP: r, Done: done}
	// A body that is not JSON is recorded as is; tests assert on Body then.
	_ = json.Unmarshal(body, &req)
	_ = json.Unmarshal(body, &req.Fields)
	req.parseForm() // likewise a broken form: its parts stay nil
	return req, true
}

// recordLocked records req, and reports whether it carries the key the
// gateway requires (if any). g.mu is held.
func (g *Gateway) recordLocked(req Request) bool {
	rec := req
	rec.HTTP = nil
	g.requests = append(g.requests, rec)
	return g.key == "" || req.Header.Get("Authorization") == "Bearer "+g.key
}

func (g *Gateway) defaultReply(w http.ResponseWriter, r *Request) {
	content := "![image](" + g.ImageURL("default.png") + ")"
	if r.Stream {
		Stream(Chunk("图像生成中，请稍候...\n"), Chunk(content))(w, r)
		return
	}
	JSON(http.StatusOK, Completion(content))(w, r)
}

func (g *Gateway) image(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/img/")
	g.mu.Lock()
	g.imageHits = append(g.imageHits, name)
	f, ok := g.files[name]
	target, redirect := g.redirects[name]
	g.mu.Unlock()
	switch {
	case redirect:
		http.Redirect(w, r, target, http.StatusFound)
		return
	case ok:
	case hasSuffixFold(name, ".jpg"), hasSuffixFold(name, ".jpeg"):
		f = file{"image/jpeg", JPEG(16, 16)}
	case hasSuffixFold(name, ".gif"):
		f = file{"image/gif", GIF(16, 16)}
	case hasSuffixFold(name, ".html"):
		f = file{"text/html; charset=utf-8", []byte("<!DOCTYPE html><html><head><title>not an image</title></head><body>hello</body></html>")}
	case hasSuffixFold(name, ".404"):
		http.NotFound(w, r)
		return
	default:
		f = file{"image/png", PNG(16, 16)}
	}
	if f.contentType != "" {
		w.Header().Set("Content-Type", f.contentType)
	}
	_, _ = w.Write(f.body)
}

// JSON replies with status and body: []byte and string are sent as they
// are, anything else is marshalled.
func JSON(status int, body any) Reply {
	var b []byte
	switch v := body.(type) {
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			panic("upstreamtest: JSON: " + err.Error())
		}
	}
	return func(w http.ResponseWriter, _ *Request) { writeJSON(w, status, b) }
}

// Status replies with status, body and extra headers (e.g. Retry-After).
// The Content-Type is text/html when the body starts with "<", JSON otherwise,
// unless header sets one.
func Status(status int, body string, header http.Header) Reply {
	return func(w http.ResponseWriter, _ *Request) {
		for k, vs := range header {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
		if w.Header().Get("Content-Type") == "" {
			ct := "application/json"
			if strings.HasPrefix(strings.TrimSpace(body), "<") {
				ct = "text/html; charset=utf-8"
			}
			w.Header().Set("Content-Type", ct)
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

// Stream replies 200 with Server-Sent Events: one "data: <chunk>" event per
// chunk (see Chunk), flushed one by one, then "data: [DONE]".
func Stream(chunks ...string) Reply {
	return func(w http.ResponseWriter, r *Request) {
		writeEvents(w, chunks)
		_, _ = fmt.Fprint(w, "data: [DONE]\n\n")
	}
}

// StreamHang sends the chunks like Stream, then neither ends nor sends
// anything more (for idle timeouts) until the client gives up.
func StreamHang(chunks ...string) Reply {
	return func(w http.ResponseWriter, r *Request) {
		writeEvents(w, chunks)
		block(r, nil)
	}
}

// SSE replies 200 with raw as a text/event-stream body, byte for byte (for
// recorded streams: keep-alives, missing spaces, CRLF ...).
func SSE(raw string) Reply {
	return func(w http.ResponseWriter, _ *Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(raw))
	}
}

// Hang never answers; it returns when the client gives up or the test ends.
func Hang() Reply {
	return func(_ http.ResponseWriter, r *Request) { block(r, nil) }
}

// Wait holds the request until ch is closed (or the client gives up), then
// answers with reply: for tests that need a job to stay in flight.
func Wait(ch <-chan struct{}, reply Reply) Reply {
	return func(w http.ResponseWriter, r *Request) {
		if block(r, ch) {
			reply(w, r)
		}
	}
}

// Drop closes the connection without an answer (a connection error).
func Drop() Reply {
	return func(w http.ResponseWriter, _ *Request) {
		hj, ok := w.(http.Hijacker)
		if !ok {
			panic("upstreamtest: Drop: the ResponseWriter cannot be hijacked")
		}
		conn, _, err := hj.Hijack()
		if err != nil {
			panic("upstreamtest: Drop: " + err.Error())
		}
		_ = conn.Close()
	}
}

// block waits for ch (nil: forever), the client or the end of the test, and
// reports whether ch was the reason.
func block(r *Request, ch <-chan struct{}) bool {
	var ctxDone <-chan struct{}
	if r.HTTP != nil {
		ctxDone = r.HTTP.Context().Done()
	}
	select {
	case <-ch:
		return true
	case <-ctxDone:
	case <-r.Done:
	}
	return false
}

func writeEvents(w http.ResponseWriter, chunks []string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flush(w)
	for _, c := range chunks {
		_, _ = fmt.Fprintf(w, "data: %s\n\n", c)
		flush(w)
	}
}

func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Completion is a non-streamed chat.completion body with one choice whose
// message content is content.
func Completion(content string) []byte {
	return mustJSON(map[string]any{
		"id":      "chatcmpl-test",
		"object":  "chat.completion",
		"created": 1732386637,
		"model":   "stable-diffusion",
		"choices": []any{map[string]any{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": content, "refusal": nil},
			"logprobs":      nil,
			"finish_reason": "stop",
		}},
		"usage":              map[string]int{"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46},
		"system_fingerprint": "fp_test",
	})
}

// Chunk is a chat.completion.chunk (the payload of one SSE event) whose
// choice 0 delta carries content.
func Chunk(content string) string {
	return chunk(map[string]any{"content": content})
}

// ReasoningChunk is a chunk whose delta carries reasoning_content, where some
// gateways put progress text.
func ReasoningChunk(text string) string {
	return chunk(map[string]any{"reasoning_content": text})
}

func chunk(delta map[string]any) string {
	return string(mustJSON(map[string]any{
		"id":      "chatcmpl-test",
		"object":  "chat.completion.chunk",
		"created": 1732386637,
		"model":   "stable-diffusion",
		"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": nil}},
	}))
}

// ErrorBody is a gateway error body: {"error":{"message","type","param","code"}}.
// code "" is sent as an empty string, as one-api does.
func ErrorBody(code, message string) string {
	return string(mustJSON(map[string]any{"error": map[string]any{
		"message": message, "type": "new_api_error", "param": "", "code": code,
	}}))
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("upstreamtest: " + err.Error())
	}
	return b
}

// PNG is a real, decodable w×h PNG (a gradient).
func PNG(w, h int) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, gradient(w, h)); err != nil {
		panic("upstreamtest: PNG: " + err.Error())
	}
	return b.Bytes()
}

// NoisePNG is a decodable w×h PNG of pseudo-random pixels: it barely
// compresses (about 4·w·h bytes), for size-limit tests. Same size, same bytes.
func NoisePNG(w, h int) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	rnd := rand.New(rand.NewPCG(uint64(w), uint64(h)))
	for i := range img.Pix {
		img.Pix[i] = byte(rnd.Uint32())
	}
	var b bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.NoCompression}
	if err := enc.Encode(&b, img); err != nil {
		panic("upstreamtest: NoisePNG: " + err.Error())
	}
	return b.Bytes()
}

// JPEG is a real, decodable w×h JPEG.
func JPEG(w, h int) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, gradient(w, h), &jpeg.Options{Quality: 80}); err != nil {
		panic("upstreamtest: JPEG: " + err.Error())
	}
	return b.Bytes()
}

// GIF is a real, decodable w×h GIF.
func GIF(w, h int) []byte {
	var b bytes.Buffer
	if err := gif.Encode(&b, gradient(w, h), nil); err != nil {
		panic("upstreamtest: GIF: " + err.Error())
	}
	return b.Bytes()
}

func gradient(w, h int) image.Image {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.NRGBA{R: uint8(x * 255 / max(w, 1)), G: uint8(y * 255 / max(h, 1)), B: 128, A: 255})
		}
	}
	return img
}

func readAll(r *http.Request) ([]byte, error) {
	defer r.Body.Close()
	var b bytes.Buffer
	_, err := b.ReadFrom(r.Body)
	return b.Bytes(), err
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

// RetryAfter is a header with Retry-After set to d (whole seconds), for Status.
func RetryAfter(d time.Duration) http.Header {
	return http.Header{"Retry-After": {fmt.Sprint(int(d / time.Second))}}
}

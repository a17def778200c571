package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// gatewayConfig is how the fake gateway behaves.
type gatewayConfig struct {
	Latency time.Duration // before every answer
	ImageKB int           // size of the PNG it serves
	Fail5xx float64       // fraction of requests answered 500
	Hang    float64       // fraction of requests never answered
	Seed    uint64
}

// gateway is a fake OpenAI-compatible gateway. upstreamtest needs a
// testing.TB and records every request body; this one only counts, so it can
// serve thousands of jobs from a command.
type gateway struct {
	cfg gatewayConfig
	URL string
	srv *http.Server
	png []byte

	requests  atomic.Int64
	successes atomic.Int64
	failed5xx atomic.Int64
	hung      atomic.Int64
	imageGets atomic.Int64
	inFlight  atomic.Int64
	nextImage atomic.Int64
	lastSeen  atomic.Int64 // unix nanos of the last request or answer

	mu        sync.Mutex
	rnd       *rand.Rand
	perPrompt map[string]int // successful generations per prompt
}

func newGateway(cfg gatewayConfig) (*gateway, error) {
	img, err := noisyPNG(cfg.ImageKB*1024, cfg.Seed)
	if err != nil {
		return nil, fmt.Errorf("gateway: image: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("gateway: listen: %w", err)
	}
	g := &gateway{
		cfg:       cfg,
		URL:       "http://" + ln.Addr().String(),
		png:       img,
		rnd:       rand.New(rand.NewPCG(cfg.Seed, 0x6761746577617921)),
		perPrompt: map[string]int{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", g.chat)
	mux.HandleFunc("GET /img/", g.image)
	g.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = g.srv.Serve(ln) }()
	return g, nil
}

// Close stops the server; hanging requests end with their connections.
func (g *gateway) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := g.srv.Shutdown(ctx); err != nil {
		_ = g.srv.Close()
	}
}

// noisyPNG is a PNG of about size bytes: random pixels do not compress, so
// the bot uploads what -img-kb says.
func noisyPNG(size int, seed uint64) ([]byte, error) {
	side := max(8, int(math.Sqrt(float64(size)/3)))
	img := image.NewNRGBA(image.Rect(0, 0, side, side))
	r := rand.New(rand.NewPCG(seed, 0x706e67))
	for y := range side {
		for x := range side {
			v := r.Uint32()
			img.SetNRGBA(x, y, color.NRGBA{R: uint8(v), G: uint8(v >> 8), B: uint8(v >> 16), A: 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (g *gateway) touch() { g.lastSeen.Store(time.Now().UnixNano()) }

// fate decides a request's failure mode up front, so the fractions hold
// whatever the timing.
func (g *gateway) fate() string {
	g.mu.Lock()
	p := g.rnd.Float64()
	g.mu.Unlock()
	switch {
	case p < g.cfg.Hang:
		return "hang"
	case p < g.cfg.Hang+g.cfg.Fail5xx:
		return "5xx"
	}
	return "ok"
}

func (g *gateway) chat(w http.ResponseWriter, r *http.Request) {
	g.requests.Add(1)
	g.inFlight.Add(1)
	g.touch()
	defer func() {
		g.inFlight.Add(-1)
		g.touch()
	}()
	prompt, model, err := readPrompt(r.Body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, `{"error":{"message":"bad request body","type":"invalid_request_error","code":"invalid_request"}}`)
		return
	}
	switch g.fate() {
	case "hang":
		g.hung.Add(1)
		<-r.Context().Done() // the client's timeout or a killed bot
		return
	case "5xx":
		if !sleepCtx(r.Context(), g.cfg.Latency) {
			return
		}
		g.failed5xx.Add(1)
		writeJSON(w, http.StatusInternalServerError, `{"error":{"message":"upstream error","type":"x","code":"bad_response_status_code"}}`)
		return
	}
	if !sleepCtx(r.Context(), g.cfg.Latency) {
		return
	}
	n := g.nextImage.Add(1)
	body, _ := json.Marshal(completion(model, fmt.Sprintf("![image](%s/img/%d.png)", g.URL, n)))
	if _, err := writeJSONBytes(w, http.StatusOK, body); err != nil {
		return // the bot went away: the image never reached it
	}
	g.successes.Add(1)
	g.mu.Lock()
	g.perPrompt[prompt]++
	g.mu.Unlock()
}

func (g *gateway) image(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, ".png") {
		http.NotFound(w, r)
		return
	}
	g.imageGets.Add(1)
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Content-Length", strconv.Itoa(len(g.png)))
	_, _ = w.Write(g.png)
}

// readPrompt returns the last user message (the rendered prompt) and the model.
func readPrompt(body io.Reader) (prompt, model string, err error) {
	var req struct {
		Model    string `json:"model"`
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(io.LimitReader(body, 1<<20)).Decode(&req); err != nil {
		return "", "", err
	}
	for _, m := range req.Messages {
		if m.Role != "user" {
			continue
		}
		var s string
		if json.Unmarshal(m.Content, &s) != nil {
			s = string(m.Content) // content parts: keep them whole, still unique per prompt
		}
		prompt = s
	}
	return prompt, req.Model, nil
}

// completion is a non-streaming chat.completion as one-api sends it.
func completion(model, content string) map[string]any {
	return map[string]any{
		"id":      "chatcmpl-load",
		"object":  "chat.completion",
		"created": time.Now().Unix(),
		"model":   model,
		"choices": []any{map[string]any{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": content},
			"finish_reason": "stop",
		}},
		"usage": map[string]int{"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
	}
}

// gatewayStats is what the gateway saw.
type gatewayStats struct {
	Requests  int64 `json:"requests"`
	Successes int64 `json:"successes"`
	Failed5xx int64 `json:"failed_5xx"`
	Hung      int64 `json:"hung"`
	ImageGets int64 `json:"image_gets"`
	// GeneratedTwice lists prompts with more than one successful generation.
	GeneratedTwice map[string]int `json:"generated_twice,omitempty"`
}

func (g *gateway) Stats() gatewayStats {
	s := gatewayStats{
		Requests: g.requests.Load(), Successes: g.successes.Load(), Failed5xx: g.failed5xx.Load(),
		Hung: g.hung.Load(), ImageGets: g.imageGets.Load(),
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for p, n := range g.perPrompt {
		if n > 1 {
			if s.GeneratedTwice == nil {
				s.GeneratedTwice = map[string]int{}
			}
			s.GeneratedTwice[p] = n
		}
	}
	return s
}

// Generations is the number of successful generations of prompt.
func (g *gateway) Generations(prompt string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.perPrompt[prompt]
}

// InFlight is the number of chat requests being answered (or hanging).
func (g *gateway) InFlight() int64 { return g.inFlight.Load() }

// LastSeen is when the gateway last received or answered a request.
func (g *gateway) LastSeen() time.Time { return time.Unix(0, g.lastSeen.Load()) }

func writeJSON(w http.ResponseWriter, status int, body string) {
	_, _ = writeJSONBytes(w, status, []byte(body))
}

func writeJSONBytes(w http.ResponseWriter, status int, body []byte) (int, error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	return w.Write(body)
}

// sleepCtx waits d and reports false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

package upstream_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

const (
	testKey    = "sk-Zq8vT3kLm9Xw2Yp4Rb7Nc1Hd6Fg0Js5Ua"
	testSecret = "pseudonym-secret"
	testUser   = "telegram:123456789"
)

// fakeFetcher records the references it is asked for; fetch, when set,
// decides the answer (default: a PNG whose Source is the reference).
type fakeFetcher struct {
	mu    sync.Mutex
	refs  []string
	fetch func(ctx context.Context, ref string) (core.Image, error)
}

func (f *fakeFetcher) Fetch(ctx context.Context, ref string) (core.Image, error) {
	f.mu.Lock()
	f.refs = append(f.refs, ref)
	f.mu.Unlock()
	if f.fetch != nil {
		return f.fetch(ctx, ref)
	}
	return core.Image{Data: upstreamtest.PNG(2, 2), MIME: "image/png", Source: ref}, nil
}

func (f *fakeFetcher) Refs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.refs...)
}

// sleeper records the waits between retries instead of waiting.
type sleeper struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (s *sleeper) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waits = append(s.waits, d)
	return ctx.Err()
}

func (s *sleeper) Waits() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.waits...)
}

// syncBuffer is a log sink safe to read while the client writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	gw      *upstreamtest.Gateway
	fetcher *fakeFetcher
	sleeper *sleeper
	logs    *syncBuffer
	client  *upstream.Client
}

// newEnv wires a client to a fake gateway. cfg's BaseURL, APIKey and
// UserIDSecret default to the gateway and the test key; retries never wait.
func newEnv(t *testing.T, cfg upstream.Config, opts ...upstream.Option) *env {
	t.Helper()
	e := &env{gw: upstreamtest.New(t), fetcher: &fakeFetcher{}, sleeper: &sleeper{}, logs: &syncBuffer{}}
	if cfg.BaseURL == "" {
		cfg.BaseURL = e.gw.URL
	}
	if cfg.APIKey == "" {
		cfg.APIKey = testKey
	}
	if cfg.UserIDSecret == "" {
		cfg.UserIDSecret = testSecret
	}
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts = append([]upstream.Option{upstream.WithSleep(e.sleeper.Sleep), upstream.WithLogger(log), upstream.WithRand(func() float64 { return 0 })}, opts...)
	e.client = upstream.New(cfg, e.fetcher, opts...)
	return e
}

func request(stream bool) core.GenRequest {
	return core.GenRequest{
		Model:  core.Model{Name: "sd", UpstreamModel: "stable-diffusion", Stream: stream},
		Prompt: "一只在雪地里的狐狸 <b>fox</b> & friends",
		User:   testUser,
	}
}

func (e *env) generate(t *testing.T, req core.GenRequest) ([]core.Image, *core.Error, []core.GenProgress) {
	t.Helper()
	var progress []core.GenProgress
	imgs, err := e.client.Generate(context.Background(), req, func(p core.GenProgress) { progress = append(progress, p) })
	if err == nil {
		return imgs, nil, progress
	}
	var ce *core.Error
	if !errors.As(err, &ce) {
		t.Fatalf("Generate error %v (%T) is not a *core.Error", err, err)
	}
	if imgs != nil {
		t.Errorf("Generate returned images with an error")
	}
	return imgs, ce, progress
}

func TestRequestMatchesDocs(t *testing.T) {
	temp, topP, maxTokens := 0.7, 0.9, 1000
	tests := []struct {
		name       string
		cfg        upstream.Config
		model      core.Model
		user       string
		wantAccept string
		wantMsgs   []upstreamtest.Message
		wantFields []string // the body's top-level fields, exactly
		check      func(t *testing.T, r upstreamtest.Request)
	}{
		{
			name:       "plain",
			model:      core.Model{Name: "sd", UpstreamModel: "stable-diffusion"},
			user:       testUser,
			wantAccept: "application/json",
			wantMsgs:   []upstreamtest.Message{{Role: "user", Content: "a fox"}},
			wantFields: []string{"messages", "model", "user"},
		},
		{
			name:       "stream, system prompt and sampling",
			cfg:        upstream.Config{Temperature: &temp, TopP: &topP, MaxTokens: &maxTokens, N: 2},
			model:      core.Model{Name: "flux", SystemPrompt: "You draw pictures.", Stream: true},
			user:       testUser,
			wantAccept: "text/event-stream",
			wantMsgs:   []upstreamtest.Message{{Role: "system", Content: "You draw pictures."}, {Role: "user", Content: "a fox"}},
			wantFields: []string{"max_tokens", "messages", "model", "n", "stream", "temperature", "top_p", "user"},
			check: func(t *testing.T, r upstreamtest.Request) {
				if !r.Stream || *r.Temperature != 0.7 || *r.TopP != 0.9 || *r.MaxTokens != 1000 || *r.N != 2 {
					t.Errorf("sampling fields = stream %v temperature %v top_p %v max_tokens %v n %v", r.Stream, *r.Temperature, *r.TopP, *r.MaxTokens, *r.N)
				}
			},
		},
		{
			name:       "n of 1 is not sent",
			cfg:        upstream.Config{N: 1},
			model:      core.Model{Name: "flux"},
			user:       testUser,
			wantAccept: "application/json",
			wantMsgs:   []upstreamtest.Message{{Role: "user", Content: "a fox"}},
			wantFields: []string{"messages", "model", "user"},
		},
		{
			name:       "no user, no user field",
			model:      core.Model{Name: "flux"},
			wantAccept: "application/json",
			wantMsgs:   []upstreamtest.Message{{Role: "user", Content: "a fox"}},
			wantFields: []string{"messages", "model"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.cfg)
			if _, err, _ := e.generate(t, core.GenRequest{Model: tt.model, Prompt: "a fox", User: tt.user}); err != nil {
				t.Fatalf("Generate: %v", err)
			}
			reqs := e.gw.Requests()
			if len(reqs) != 1 {
				t.Fatalf("gateway got %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != http.MethodPost || r.Path != "/v1/chat/completions" {
				t.Errorf("request line = %s %s", r.Method, r.Path)
			}
			for h, want := range map[string]string{"Authorization": "Bearer " + testKey, "Content-Type": "application/json", "Accept": tt.wantAccept} {
				if got := r.Header.Get(h); got != want {
					t.Errorf("header %s = %q, want %q", h, got, want)
				}
			}
			if r.Model != tt.model.ID() {
				t.Errorf("model = %q, want %q", r.Model, tt.model.ID())
			}
			if fmt.Sprint(r.Messages) != fmt.Sprint(tt.wantMsgs) {
				t.Errorf("messages = %v, want %v", r.Messages, tt.wantMsgs)
			}
			var fields []string
			for k := range r.Fields {
				fields = append(fields, k)
			}
			if fmt.Sprint(sorted(fields)) != fmt.Sprint(tt.wantFields) {
				t.Errorf("body fields = %v, want %v (body %s)", sorted(fields), tt.wantFields, r.Body)
			}
			if tt.user != "" {
				mac := hmac.New(sha256.New, []byte(testSecret))
				mac.Write([]byte(tt.user))
				if want := hex.EncodeToString(mac.Sum(nil)); r.User != want {
					t.Errorf("user = %q, want the HMAC %q", r.User, want)
				}
				if strings.Contains(string(r.Body), "123456789") {
					t.Errorf("the raw user id leaked into the body: %s", r.Body)
				}
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

func TestPseudonymIsStableAndKeyed(t *testing.T) {
	a := upstream.Pseudonym("s1", "telegram:1")
	if a != upstream.Pseudonym("s1", "telegram:1") {
		t.Error("the pseudonym of one user changed between calls")
	}
	if a == upstream.Pseudonym("s1", "telegram:2") || a == upstream.Pseudonym("s2", "telegram:1") {
		t.Error("different users or secrets gave the same pseudonym")
	}
	if len(a) != 64 {
		t.Errorf("pseudonym %q is not a hex SHA-256", a)
	}
}

func TestPromptIsSentVerbatim(t *testing.T) {
	e := newEnv(t, upstream.Config{})
	req := request(false)
	if _, err, _ := e.generate(t, req); err != nil {
		t.Fatal(err)
	}
	if got := e.gw.Requests()[0].Messages[0].Content; got != req.Prompt {
		t.Errorf("prompt = %q, want %q", got, req.Prompt)
	}
}

func TestBaseURLForms(t *testing.T) {
	for _, suffix := range []string{"", "/", "/v1", "/v1/", "/v1/chat/completions"} {
		t.Run("base"+suffix, func(t *testing.T) {
			gw := upstreamtest.New(t)
			c := upstream.New(upstream.Config{BaseURL: gw.URL + suffix, APIKey: testKey}, &fakeFetcher{})
			if _, err := c.Generate(context.Background(), request(false), nil); err != nil {
				t.Fatalf("Generate: %v", err)
			}
			if p := gw.Requests()[0].Path; p != "/v1/chat/completions" {
				t.Errorf("path = %q", p)
			}
		})
	}
	if got := upstream.Endpoint(""); got != "/v1/chat/completions" {
		t.Errorf("Endpoint(\"\") = %q", got)
	}
	if got := upstream.New(upstream.Config{}, &fakeFetcher{}); got == nil {
		t.Error("New with a zero Config returned nil")
	}
}

func TestGenerateSuccess(t *testing.T) {
	const signed = "https://img.example.com/o/8c1f.png?X-Amz-Credential=AKIA%2F20241124%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=9f86%3D%3D&a=b+c"
	dataURI := "data:image/png;base64," + b64(upstreamtest.PNG(3, 3))
	tests := []struct {
		name     string
		stream   bool
		reply    func(gw *upstreamtest.Gateway) upstreamtest.Reply
		wantRefs func(gw *upstreamtest.Gateway) []string
	}{
		{
			name: "default reply",
			reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
				return nil
			},
			wantRefs: func(gw *upstreamtest.Gateway) []string { return []string{gw.ImageURL("default.png")} },
		},
		{
			name:   "default streamed reply",
			stream: true,
			reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
				return nil
			},
			wantRefs: func(gw *upstreamtest.Gateway) []string { return []string{gw.ImageURL("default.png")} },
		},
		{
			name: "non-streamed markdown image",
			reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.JSON(200, upstreamtest.Completion("生成完成\n![图片](https://img.example.com/a.png)"))
			},
			wantRefs: refs("https://img.example.com/a.png"),
		},
		{
			name:   "streamed markdown image in pieces",
			stream: true,
			reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.Stream(upstreamtest.Chunk("图像生成中，请稍候...\n"), upstreamtest.Chunk("![图"), upstreamtest.Chunk("片](https://img.exa"), upstreamtest.Chunk("mple.com/s.png)"))
			},
			wantRefs: refs("https://img.example.com/s.png"),
		},
		{
			name: "several images",
			reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.JSON(200, upstreamtest.Completion("![1](https://img.example.com/1.png)\n![2](https://img.example.com/2.png) ![3](https://img.example.com/3.png)"))
			},
			wantRefs: refs("https://img.example.com/1.png", "https://img.example.com/2.png", "https://img.example.com/3.png"),
		},
		{
			name: "data URI image",
			reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.JSON(200, upstreamtest.Completion("![x]("+dataURI+")"))
			},
			wantRefs: refs(dataURI),
		},
		{
			name: "message.images",
			reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.JSON(200, map[string]any{"object": "chat.completion", "choices": []any{map[string]any{
					"index": 0, "message": map[string]any{"role": "assistant", "content": "Here:",
						"images": []any{map[string]any{"type": "image_url", "image_url": map[string]any{"url": "https://img.example.com/m.png"}}}},
				}}})
			},
			wantRefs: refs("https://img.example.com/m.png"),
		},
		{
			name: "content parts",
			reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.JSON(200, map[string]any{"object": "chat.completion", "choices": []any{map[string]any{
					"index": 0, "message": map[string]any{"role": "assistant", "content": []any{
						map[string]any{"type": "text", "text": "![first](https://img.example.com/p1.png)"},
						map[string]any{"type": "image_url", "image_url": map[string]any{"url": "https://img.example.com/p2"}},
					}},
				}}})
			},
			wantRefs: refs("https://img.example.com/p1.png", "https://img.example.com/p2"),
		},
		{
			name: "signed URL passed byte for byte",
			reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.JSON(200, upstreamtest.Completion("![image]("+signed+")\n[下载链接]("+signed+")"))
			},
			wantRefs: refs(signed),
		},
		{
			name: "a plain link is tried when there is nothing better",
			reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.JSON(200, upstreamtest.Completion("生成成功！[点击查看](https://img.example.com/view?id=42)"))
			},
			wantRefs: refs("https://img.example.com/view?id=42"),
		},
		{
			name:   "stream without spaces, with keep-alives and CRLF",
			stream: true,
			reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.SSE(": keep-alive\r\n\r\nevent: message\r\ndata:" + upstreamtest.Chunk("![a](https://img.example.com/k.png)") + "\r\n\r\n: ping\r\n\r\ndata:[DONE]\r\n\r\n")
			},
			wantRefs: refs("https://img.example.com/k.png"),
		},
		{
			name:   "a JSON answer to a stream request",
			stream: true,
			reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.JSON(200, upstreamtest.Completion("![a](https://img.example.com/j.png)"))
			},
			wantRefs: refs("https://img.example.com/j.png"),
		},
		{
			name: "an SSE answer to a non-stream request",
			reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.Stream(upstreamtest.Chunk("![a](https://img.example.com/forced.png)"))
			},
			wantRefs: refs("https://img.example.com/forced.png"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, upstream.Config{})
			if r := tt.reply(e.gw); r != nil {
				e.gw.Push(r)
			}
			imgs, err, _ := e.generate(t, request(tt.stream))
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			want := tt.wantRefs(e.gw)
			if got := e.fetcher.Refs(); !equal(got, want) {
				t.Errorf("fetched %q, want %q", got, want)
			}
			if len(imgs) != len(want) {
				t.Fatalf("got %d images, want %d", len(imgs), len(want))
			}
			for i, img := range imgs {
				if img.Source != want[i] || img.MIME != "image/png" || len(img.Data) == 0 {
					t.Errorf("image %d = {Source %q, MIME %q, %d bytes}", i, img.Source, img.MIME, len(img.Data))
				}
			}
			if e.gw.Calls() != 1 {
				t.Errorf("gateway calls = %d, want 1", e.gw.Calls())
			}
		})
	}
}

func TestGenerateErrors(t *testing.T) {
	html502 := "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body><center><h1>502 Bad Gateway</h1></center></body></html>"
	tests := []struct {
		name      string
		stream    bool
		replies   []upstreamtest.Reply
		wantCode  core.Code
		wantCalls int
		check     func(t *testing.T, e *core.Error)
	}{
		{name: "401 bad key", replies: []upstreamtest.Reply{upstreamtest.Status(401, upstreamtest.ErrorBody("", "无效的令牌"), nil)}, wantCode: core.CodeUpstreamAuth, wantCalls: 1},
		{name: "400 bad request", replies: []upstreamtest.Reply{upstreamtest.Status(400, upstreamtest.ErrorBody("invalid_request", "bad"), nil)}, wantCode: core.CodeUpstreamAuth, wantCalls: 1},
		{name: "404 wrong base URL", replies: []upstreamtest.Reply{upstreamtest.Status(404, "404 page not found", nil)}, wantCode: core.CodeUpstreamAuth, wantCalls: 1},
		{name: "403 other than quota", replies: []upstreamtest.Reply{upstreamtest.Status(403, upstreamtest.ErrorBody("", "该令牌无权使用模型：flux"), nil)}, wantCode: core.CodeUpstreamAuth, wantCalls: 1},
		{name: "403 insufficient_user_quota", replies: []upstreamtest.Reply{upstreamtest.Status(403, upstreamtest.ErrorBody("insufficient_user_quota", "用户额度不足"), nil)}, wantCode: core.CodeUpstreamBalance, wantCalls: 1},
		{name: "403 quota message without code", replies: []upstreamtest.Reply{upstreamtest.Status(403, upstreamtest.ErrorBody("", "token quota is not enough"), nil)}, wantCode: core.CodeUpstreamBalance, wantCalls: 1},
		{name: "503 model_not_found is not retried", replies: []upstreamtest.Reply{upstreamtest.Status(503, upstreamtest.ErrorBody("model_not_found", "当前分组 default 下对于模型 flux 无可用渠道"), nil)}, wantCode: core.CodeModelUnavailable, wantCalls: 1},
		{name: "503 no available channel without code", replies: []upstreamtest.Reply{upstreamtest.Status(503, upstreamtest.ErrorBody("", "No available channel for model flux under group default"), nil)}, wantCode: core.CodeModelUnavailable, wantCalls: 1},
		{name: "500 retried until exhausted", replies: repeat(3, upstreamtest.Status(500, upstreamtest.ErrorBody("bad_response_status_code", "bad response status code 500"), nil)), wantCode: core.CodeUpstreamFailed, wantCalls: 3},
		{name: "do_request_failed retried", replies: repeat(3, upstreamtest.Status(500, upstreamtest.ErrorBody("do_request_failed", "dial tcp: i/o timeout"), nil)), wantCode: core.CodeUpstreamFailed, wantCalls: 3},
		{name: "HTML 502 retried, then bad response", replies: repeat(3, upstreamtest.Status(502, html502, nil)), wantCode: core.CodeBadResponse, wantCalls: 3,
			check: func(t *testing.T, e *core.Error) {
				if !strings.Contains(e.Error(), "502 Bad Gateway") || !strings.Contains(e.Error(), "HTTP 502") {
					t.Errorf("operator detail %q lacks the status and page excerpt", e.Error())
				}
			}},
		{name: "error with an empty message", replies: repeat(3, upstreamtest.Status(500, upstreamtest.ErrorBody("", ""), nil)), wantCode: core.CodeBadResponse, wantCalls: 3},
		{name: "truncated JSON in a 200", replies: []upstreamtest.Reply{upstreamtest.JSON(200, `{"id":"x","choices":[{"index":0,"message":{"content":"![a](https://img.exa`)}, wantCode: core.CodeBadResponse, wantCalls: 1},
		{name: "too large a body", replies: []upstreamtest.Reply{upstreamtest.JSON(200, upstreamtest.Completion(strings.Repeat("x", 5000)))}, wantCode: core.CodeBadResponse, wantCalls: 1},
		{name: "error inside a 200: quota", replies: []upstreamtest.Reply{upstreamtest.JSON(200, upstreamtest.ErrorBody("insufficient_user_quota", "用户额度不足"))}, wantCode: core.CodeUpstreamBalance, wantCalls: 1},
		{name: "error inside a 200: upstream failure is retried", replies: repeat(3, upstreamtest.JSON(200, upstreamtest.ErrorBody("bad_response_status_code", "bad response status code 500"))), wantCode: core.CodeUpstreamFailed, wantCalls: 3},
		{name: "error mid-stream", stream: true, replies: repeat(3, upstreamtest.Stream(upstreamtest.Chunk("生成中..."), upstreamtest.ErrorBody("", "当前分组上游负载已饱和，请稍后再试"))), wantCode: core.CodeOverloaded, wantCalls: 3},
		{name: "model_not_found mid-stream", stream: true, replies: []upstreamtest.Reply{upstreamtest.Stream(upstreamtest.ErrorBody("model_not_found", "无可用渠道"))}, wantCode: core.CodeModelUnavailable, wantCalls: 1},
		// A streamed relay loss is asked again without streaming (which here
		// is lost too).
		{name: "only progress text is lost in the relay", stream: true, replies: []upstreamtest.Reply{upstreamtest.Stream(upstreamtest.Chunk("图像生成中，请稍候...\n"), upstreamtest.Chunk("进度 42%\n")),
			upstreamtest.JSON(200, upstreamtest.Completion("图像生成中，请稍候..."))}, wantCode: core.CodeLostInRelay, wantCalls: 2},
		{name: "only progress text, not streamed", replies: []upstreamtest.Reply{upstreamtest.JSON(200, upstreamtest.Completion("⏳ Generating, please wait..."))}, wantCode: core.CodeLostInRelay, wantCalls: 1},
		{name: "refusal", replies: []upstreamtest.Reply{upstreamtest.JSON(200, upstreamtest.Completion("抱歉，您的提示词包含敏感内容，无法生成。"))}, wantCode: core.CodeRefused, wantCalls: 1,
			check: func(t *testing.T, e *core.Error) {
				if e.Detail != "抱歉，您的提示词包含敏感内容，无法生成。" {
					t.Errorf("Detail = %q", e.Detail)
				}
			}},
		{name: "refusal streamed", stream: true, replies: []upstreamtest.Reply{upstreamtest.Stream(upstreamtest.Chunk("抱歉，"), upstreamtest.Chunk("包含敏感内容"))}, wantCode: core.CodeRefused, wantCalls: 1,
			check: func(t *testing.T, e *core.Error) {
				if e.Detail != "抱歉，包含敏感内容" {
					t.Errorf("Detail = %q", e.Detail)
				}
			}},
		{name: "sensitive_words_detected is a refusal", replies: []upstreamtest.Reply{upstreamtest.Status(400, upstreamtest.ErrorBody("sensitive_words_detected", "sensitive words detected"), nil)}, wantCode: core.CodeRefused, wantCalls: 1,
			check: func(t *testing.T, e *core.Error) {
				if e.Detail != "sensitive words detected" {
					t.Errorf("Detail = %q", e.Detail)
				}
			}},
		{name: "empty content", replies: []upstreamtest.Reply{upstreamtest.JSON(200, upstreamtest.Completion(""))}, wantCode: core.CodeLostInRelay, wantCalls: 1},
		{name: "empty stream", stream: true, replies: []upstreamtest.Reply{upstreamtest.Stream(upstreamtest.Chunk("")), upstreamtest.JSON(200, upstreamtest.Completion(""))}, wantCode: core.CodeLostInRelay, wantCalls: 2},
		{name: "only reasoning is lost in the relay", stream: true, replies: []upstreamtest.Reply{
			upstreamtest.Stream(upstreamtest.ReasoningChunk("✨ 图片生成任务已启动\n"), upstreamtest.ReasoningChunk("正在生成图片...\n"), upstreamtest.ReasoningChunk("正在放大图片到 2K...\n")),
			upstreamtest.JSON(200, upstreamtest.Completion(""))}, wantCode: core.CodeLostInRelay, wantCalls: 2},
		{name: "progress lines are not part of a refusal", stream: true, replies: []upstreamtest.Reply{upstreamtest.Stream(
			upstreamtest.Chunk("> 生成中... 25%\n"), upstreamtest.Chunk("> 生成中... 100%\n"), upstreamtest.Chunk("抱歉，包含敏感内容"))}, wantCode: core.CodeRefused, wantCalls: 1,
			check: func(t *testing.T, e *core.Error) {
				if e.Detail != "抱歉，包含敏感内容" {
					t.Errorf("Detail = %q, want the refusal alone", e.Detail)
				}
			}},
		{name: "a failure worded like progress is a refusal", replies: []upstreamtest.Reply{upstreamtest.JSON(200, upstreamtest.Completion("图片生成失败：提示词包含敏感内容"))}, wantCode: core.CodeRefused, wantCalls: 1},
		{name: "401 token quota used up is the balance", replies: []upstreamtest.Reply{upstreamtest.Status(401, upstreamtest.ErrorBody("", "该令牌额度已用尽 (request id: 2024112416405184547498)"), nil)}, wantCode: core.CodeUpstreamBalance, wantCalls: 1},
		{name: "401 new-api token quota", replies: []upstreamtest.Reply{upstreamtest.Status(401, upstreamtest.ErrorBody("", "token quota is not enough, token remain quota: ＄0.000000"), nil)}, wantCode: core.CodeUpstreamBalance, wantCalls: 1},
		{name: "401 expired token is the key", replies: []upstreamtest.Reply{upstreamtest.Status(401, upstreamtest.ErrorBody("", "该令牌已过期"), nil)}, wantCode: core.CodeUpstreamAuth, wantCalls: 1},
		{name: "stream of junk", stream: true, replies: []upstreamtest.Reply{upstreamtest.Stream("ping", "{not json")}, wantCode: core.CodeBadResponse, wantCalls: 1},
		{name: "redirect", replies: []upstreamtest.Reply{func(w http.ResponseWriter, r *upstreamtest.Request) {
			http.Redirect(w, r.HTTP, "https://api.example.com/v1/chat/completions", http.StatusMovedPermanently)
		}}, wantCode: core.CodeUpstreamAuth, wantCalls: 1,
			check: func(t *testing.T, e *core.Error) {
				if !strings.Contains(e.Error(), "https://api.example.com") {
					t.Errorf("operator detail %q does not say where the gateway redirects", e.Error())
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, upstream.Config{MaxResponseBytes: 4096})
			e.gw.Push(tt.replies...)
			_, err, _ := e.generate(t, request(tt.stream))
			if err == nil {
				t.Fatal("Generate succeeded")
			}
			if err.Code != tt.wantCode {
				t.Errorf("code = %s, want %s (%v)", err.Code, tt.wantCode, err)
			}
			if got := e.gw.Calls(); got != tt.wantCalls {
				t.Errorf("gateway calls = %d, want %d", got, tt.wantCalls)
			}
			if !strings.HasPrefix(err.Err.Error(), "upstream: ") {
				t.Errorf("operator detail %q lacks the upstream: prefix", err.Err)
			}
			if len(e.fetcher.Refs()) != 0 {
				t.Errorf("fetched %q after a failure", e.fetcher.Refs())
			}
			if tt.check != nil {
				tt.check(t, err)
			}
		})
	}
}

// The type field is the reseller's brand: it must not change the outcome.
func TestErrorTypeIsIgnored(t *testing.T) {
	cases := []struct {
		status int
		code   string
		want   core.Code
	}{
		{403, "insufficient_user_quota", core.CodeUpstreamBalance},
		{503, "model_not_found", core.CodeModelUnavailable},
		{401, "", core.CodeUpstreamAuth},
	}
	for _, c := range cases {
		for _, typ := range []string{"new_api_error", "one_api_error", "chatgptsb_api_error", "invalid_request_error", "insufficient_quota", ""} {
			t.Run(fmt.Sprintf("%d %s %s", c.status, c.code, typ), func(t *testing.T) {
				e := newEnv(t, upstream.Config{})
				body, _ := json.Marshal(map[string]any{"error": map[string]any{"message": "something", "type": typ, "code": c.code}})
				e.gw.Push(upstreamtest.Status(c.status, string(body), nil))
				_, err, _ := e.generate(t, request(false))
				if err == nil || err.Code != c.want {
					t.Errorf("got %v, want code %s", err, c.want)
				}
			})
		}
	}
}

func TestRetries(t *testing.T) {
	fail500 := upstreamtest.Status(500, upstreamtest.ErrorBody("bad_response_status_code", "bad response status code 500"), nil)
	tests := []struct {
		name      string
		cfg       upstream.Config
		rand      float64
		replies   []upstreamtest.Reply
		wantCode  core.Code // "" for success
		wantCalls int
		wantWaits []time.Duration
		check     func(t *testing.T, e *core.Error)
	}{
		{
			name:      "429 with Retry-After, then success",
			replies:   []upstreamtest.Reply{upstreamtest.Status(429, upstreamtest.ErrorBody("", "当前分组上游负载已饱和，请稍后再试"), upstreamtest.RetryAfter(7*time.Second))},
			wantCalls: 2,
			wantWaits: []time.Duration{7 * time.Second},
		},
		{
			name:      "429 exhausting retries keeps Retry-After",
			replies:   repeat(3, upstreamtest.Status(429, upstreamtest.ErrorBody("", "当前分组上游负载已饱和"), upstreamtest.RetryAfter(5*time.Second))),
			wantCode:  core.CodeOverloaded,
			wantCalls: 3,
			wantWaits: []time.Duration{5 * time.Second, 5 * time.Second},
			check: func(t *testing.T, e *core.Error) {
				if e.RetryAfter != 5*time.Second {
					t.Errorf("RetryAfter = %s, want 5s", e.RetryAfter)
				}
			},
		},
		{
			name:      "Retry-After past the deadline: give up at once",
			cfg:       upstream.Config{Timeout: 10 * time.Second},
			replies:   []upstreamtest.Reply{upstreamtest.Status(429, upstreamtest.ErrorBody("", "busy"), upstreamtest.RetryAfter(time.Minute))},
			wantCode:  core.CodeOverloaded,
			wantCalls: 1,
			check: func(t *testing.T, e *core.Error) {
				if e.RetryAfter != time.Minute {
					t.Errorf("RetryAfter = %s, want 1m", e.RetryAfter)
				}
			},
		},
		{
			name:      "500 then HTML 502 then success",
			rand:      0.5,
			replies:   []upstreamtest.Reply{fail500, upstreamtest.Status(502, "<html><title>502 Bad Gateway</title></html>", nil)},
			wantCalls: 3,
			wantWaits: []time.Duration{500 * time.Millisecond, time.Second},
		},
		{
			name:      "full jitter grows exponentially up to 30s",
			cfg:       upstream.Config{Retries: 7},
			rand:      0.5,
			replies:   repeat(8, fail500),
			wantCode:  core.CodeUpstreamFailed,
			wantCalls: 8,
			wantWaits: []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 15 * time.Second, 15 * time.Second},
		},
		{
			name:      "connection errors are retried",
			replies:   repeat(3, upstreamtest.Drop()),
			wantCode:  core.CodeUpstreamFailed,
			wantCalls: 3,
			wantWaits: []time.Duration{0, 0},
		},
		{
			name:      "a dropped connection, then success",
			replies:   []upstreamtest.Reply{upstreamtest.Drop()},
			wantCalls: 2,
			wantWaits: []time.Duration{0},
		},
		{
			name:      "negative Retries: one attempt",
			cfg:       upstream.Config{Retries: -1},
			replies:   repeat(3, fail500),
			wantCode:  core.CodeUpstreamFailed,
			wantCalls: 1,
		},
		{
			name:      "auth errors are not retried",
			replies:   repeat(3, upstreamtest.Status(401, upstreamtest.ErrorBody("", "无效的令牌"), nil)),
			wantCode:  core.CodeUpstreamAuth,
			wantCalls: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.cfg, upstream.WithRand(func() float64 { return tt.rand }))
			e.gw.Push(tt.replies...)
			imgs, err, _ := e.generate(t, request(false))
			switch {
			case tt.wantCode == "" && err != nil:
				t.Fatalf("Generate: %v", err)
			case tt.wantCode == "" && len(imgs) != 1:
				t.Errorf("got %d images, want 1", len(imgs))
			case tt.wantCode != "" && (err == nil || err.Code != tt.wantCode):
				t.Fatalf("got %v, want code %s", err, tt.wantCode)
			}
			if got := e.gw.Calls(); got != tt.wantCalls {
				t.Errorf("gateway calls = %d, want %d", got, tt.wantCalls)
			}
			if got := e.sleeper.Waits(); fmt.Sprint(got) != fmt.Sprint(tt.wantWaits) && !(len(got) == 0 && len(tt.wantWaits) == 0) {
				t.Errorf("waits = %v, want %v", got, tt.wantWaits)
			}
			if tt.check != nil {
				tt.check(t, err)
			}
		})
	}
}

func TestRetryAfterHTTPDate(t *testing.T) {
	e := newEnv(t, upstream.Config{Retries: -1})
	when := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	e.gw.Push(upstreamtest.Status(429, upstreamtest.ErrorBody("", "busy"), http.Header{"Retry-After": {when}}))
	_, err, _ := e.generate(t, request(false))
	if err == nil || err.Code != core.CodeOverloaded {
		t.Fatalf("got %v, want overloaded", err)
	}
	if err.RetryAfter < 85*time.Second || err.RetryAfter > 91*time.Second {
		t.Errorf("RetryAfter = %s, want about 90s", err.RetryAfter)
	}
}

func TestRealBackoffWaitsAndStopsAtDeadline(t *testing.T) {
	// No WithSleep: the client's own sleep must end with the job's deadline.
	gw := upstreamtest.New(t)
	gw.Push(repeat(3, upstreamtest.Status(500, upstreamtest.ErrorBody("do_request_failed", "x"), upstreamtest.RetryAfter(time.Second)))...)
	c := upstream.New(upstream.Config{BaseURL: gw.URL, APIKey: testKey, Timeout: 300 * time.Millisecond}, &fakeFetcher{})
	start := time.Now()
	_, err := c.Generate(context.Background(), request(false), nil)
	if core.ErrorCode(err) != core.CodeUpstreamFailed {
		t.Errorf("got %v, want upstream_failed (a 1s wait cannot fit in 300ms)", err)
	}
	if time.Since(start) > 250*time.Millisecond || gw.Calls() != 1 {
		t.Errorf("took %s and %d calls: it waited instead of giving up", time.Since(start), gw.Calls())
	}
}

func TestTimeouts(t *testing.T) {
	tests := []struct {
		name    string
		cfg     upstream.Config
		stream  bool
		ctx     func() (context.Context, context.CancelFunc)
		reply   upstreamtest.Reply
		want    core.Code
		percent int // last progress percent expected, -2 for no progress
	}{
		{name: "a hang hits the job timeout", cfg: upstream.Config{Timeout: 150 * time.Millisecond}, reply: upstreamtest.Hang(), want: core.CodeTimeout, percent: -2},
		{name: "the caller's earlier deadline wins", ctx: func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 150*time.Millisecond)
		}, reply: upstreamtest.Hang(), want: core.CodeTimeout, percent: -2},
		{name: "a stalled stream hits the idle timeout", cfg: upstream.Config{StreamIdleTimeout: 150 * time.Millisecond}, stream: true,
			reply: upstreamtest.StreamHang(upstreamtest.Chunk("生成中 10%\n")), want: core.CodeTimeout, percent: 10},
		{name: "a stream stalled after the image still delivers", cfg: upstream.Config{StreamIdleTimeout: 150 * time.Millisecond}, stream: true,
			reply: upstreamtest.StreamHang(upstreamtest.Chunk("![a](https://img.example.com/a.png)")), want: "", percent: -2},
		{name: "keep-alives hold the idle timeout off", cfg: upstream.Config{StreamIdleTimeout: 150 * time.Millisecond}, stream: true,
			reply: func(w http.ResponseWriter, r *upstreamtest.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				for range 8 {
					_, _ = fmt.Fprint(w, ": keep-alive\n\n")
					w.(http.Flusher).Flush()
					time.Sleep(50 * time.Millisecond)
				}
				_, _ = fmt.Fprintf(w, "data: %s\n\ndata: [DONE]\n\n", upstreamtest.Chunk("![a](https://img.example.com/late.png)"))
			}, want: "", percent: -2},
		{name: "cancelled by the caller", ctx: func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			return ctx, cancel
		}, reply: upstreamtest.Hang(), want: core.CodeInterrupted, percent: -2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tt.cfg)
			e.gw.Push(tt.reply)
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if tt.ctx != nil {
				ctx, cancel = tt.ctx()
			}
			defer cancel()
			last := -2
			start := time.Now()
			_, err := e.client.Generate(ctx, request(tt.stream), func(p core.GenProgress) { last = p.Percent })
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("took %s", elapsed)
			}
			if got := core.ErrorCode(err); got != tt.want {
				t.Errorf("code = %q, want %q (%v)", got, tt.want, err)
			}
			if last != tt.percent {
				t.Errorf("last progress percent = %d, want %d", last, tt.percent)
			}
			if e.gw.Calls() != 1 {
				t.Errorf("gateway calls = %d, want 1 (timeouts are not retried)", e.gw.Calls())
			}
		})
	}
}

func TestAPIKeyNeverInErrorsOrLogs(t *testing.T) {
	bare := strings.TrimPrefix(testKey, "sk-")
	tests := []struct {
		name    string
		stream  bool
		replies []upstreamtest.Reply
	}{
		{name: "401 echoing the key", replies: []upstreamtest.Reply{upstreamtest.Status(401, upstreamtest.ErrorBody("", "Incorrect API key provided: "+testKey), nil)}},
		{name: "500 echoing the key without sk-", replies: repeat(3, upstreamtest.Status(500, upstreamtest.ErrorBody("do_request_failed", "token "+bare+" failed"), nil))},
		{name: "HTML page echoing the key", replies: repeat(3, upstreamtest.Status(502, "<html><body>Authorization: Bearer "+testKey+"</body></html>", nil))},
		{name: "refusal echoing the key", replies: []upstreamtest.Reply{upstreamtest.JSON(200, upstreamtest.Completion("抱歉 "+testKey+" 不能用"))}},
		{name: "error mid-stream echoing the key", stream: true, replies: []upstreamtest.Reply{upstreamtest.Stream(upstreamtest.Chunk("key "+testKey+"\n"), upstreamtest.ErrorBody("model_not_found", "no channel for "+testKey))}},
		{name: "key at the edge of a huge body", replies: []upstreamtest.Reply{upstreamtest.Status(400, strings.Repeat(" ", 8170)+testKey+strings.Repeat(" ", 100), nil)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, upstream.Config{})
			e.gw.Push(tt.replies...)
			var progress []string
			_, err := e.client.Generate(context.Background(), request(tt.stream), func(p core.GenProgress) { progress = append(progress, p.Text) })
			if err == nil {
				t.Fatal("Generate succeeded")
			}
			ce := core.AsError(err)
			texts := map[string]string{"Error()": err.Error(), "Detail": ce.Detail, "logs": e.logs.String(), "progress": strings.Join(progress, "\n")}
			for where, s := range texts {
				for _, secret := range []string{testKey, bare, bare[:16]} {
					if strings.Contains(s, secret) {
						t.Errorf("%s contains the API key: %q", where, s)
					}
				}
			}
			if !strings.Contains(err.Error()+ce.Detail, "[redacted]") && !strings.Contains(tt.name, "edge") {
				t.Errorf("error %q does not show the redaction", err.Error())
			}
		})
	}
}

func TestOperatorDetailIsShort(t *testing.T) {
	e := newEnv(t, upstream.Config{Retries: -1})
	e.gw.Push(upstreamtest.Status(500, upstreamtest.ErrorBody("bad_response_status_code", strings.Repeat("错误信息", 10000)), nil))
	_, err, _ := e.generate(t, request(false))
	if err == nil || err.Code != core.CodeUpstreamFailed {
		t.Fatalf("got %v", err)
	}
	msg := err.Err.Error()
	if !strings.HasPrefix(msg, `upstream: HTTP 500 code "bad_response_status_code": `) {
		t.Errorf("detail = %q", msg)
	}
	if n := utf8.RuneCountInString(msg); n > 260 {
		t.Errorf("detail is %d runes long", n)
	}
}

func TestStreamProgress(t *testing.T) {
	e := newEnv(t, upstream.Config{})
	e.gw.Push(upstreamtest.Stream(
		upstreamtest.ReasoningChunk("排队中，前方 2 人\n"),
		upstreamtest.Chunk("> 🎨 生成中 10%\n"),
		upstreamtest.Chunk("> 🎨 生成中 "), upstreamtest.Chunk("45%\n"),
		upstreamtest.Chunk("> 🎨 生成中 100%\n\n"),
		upstreamtest.Chunk("![image](data:image/png;base64,"+b64(upstreamtest.PNG(2, 2))), upstreamtest.Chunk(")"),
		upstreamtest.Chunk("\n\n生成完成"),
	))
	imgs, err, progress := e.generate(t, request(true))
	if err != nil || len(imgs) != 1 {
		t.Fatalf("Generate = %d images, %v", len(imgs), err)
	}
	var percents []int
	for _, p := range progress {
		percents = append(percents, p.Percent)
		if strings.Contains(p.Text, "![") || strings.Contains(p.Text, "data:") || strings.Contains(p.Text, "base64") {
			t.Errorf("progress text carries the image: %q", p.Text)
		}
	}
	if want := []int{-1, 10, 10, 45, 100, 100}; fmt.Sprint(percents) != fmt.Sprint(want) {
		t.Errorf("percents = %v, want %v (progress %+v)", percents, want, progress)
	}
	if first := progress[0].Text; first != "排队中，前方 2 人" {
		t.Errorf("first progress = %q", first)
	}
	if last := progress[len(progress)-1].Text; last != "生成完成" {
		t.Errorf("last progress = %q", last)
	}
}

func TestFetching(t *testing.T) {
	rejected := &core.Error{Code: core.CodeImageRejected, Err: errors.New("fetch: not an image")}
	tooBig := &core.Error{Code: core.CodeImageRejected, Err: errors.New("fetch: too large")}
	tests := []struct {
		name       string
		content    string
		fetch      func(ref string) (core.Image, error)
		wantImages int
		wantFetch  int
		wantCode   core.Code
		wantErr    error
	}{
		{
			name:    "a failed image is skipped",
			content: "![a](https://img.example.com/bad.png) ![b](https://img.example.com/good.png)",
			fetch: func(ref string) (core.Image, error) {
				if strings.Contains(ref, "bad") {
					return core.Image{}, rejected
				}
				return core.Image{Data: []byte{1}, MIME: "image/png", Source: ref}, nil
			},
			wantImages: 1, wantFetch: 2,
		},
		{
			name:     "all failed: the first fetch error",
			content:  "![a](https://img.example.com/1.png) ![b](https://img.example.com/2.png)",
			fetch:    sequence(rejected, tooBig),
			wantCode: core.CodeImageRejected, wantFetch: 2, wantErr: rejected,
		},
		{
			name:     "a plain error becomes image_rejected",
			content:  "![a](https://img.example.com/1.png)",
			fetch:    func(string) (core.Image, error) { return core.Image{}, errors.New("boom") },
			wantCode: core.CodeImageRejected, wantFetch: 1,
		},
		{
			name:     "links that are not images: a refusal with the text",
			content:  "请访问 [我们的网站](https://example.com/about) 了解详情",
			fetch:    func(string) (core.Image, error) { return core.Image{}, rejected },
			wantCode: core.CodeRefused, wantFetch: 1,
		},
		{
			name:       "at most four images",
			content:    "![1](https://i.example.com/1.png)![2](https://i.example.com/2.png)![3](https://i.example.com/3.png)![4](https://i.example.com/4.png)![5](https://i.example.com/5.png)![6](https://i.example.com/6.png)",
			wantImages: 4, wantFetch: 4,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, upstream.Config{})
			if tt.fetch != nil {
				e.fetcher.fetch = func(_ context.Context, ref string) (core.Image, error) { return tt.fetch(ref) }
			}
			e.gw.Push(upstreamtest.JSON(200, upstreamtest.Completion(tt.content)))
			imgs, err, _ := e.generate(t, request(false))
			if len(imgs) != tt.wantImages {
				t.Errorf("got %d images, want %d", len(imgs), tt.wantImages)
			}
			if n := len(e.fetcher.Refs()); n != tt.wantFetch {
				t.Errorf("fetched %d times, want %d", n, tt.wantFetch)
			}
			if got := core.ErrorCode(errOrNil(err)); got != tt.wantCode {
				t.Errorf("code = %q, want %q (%v)", got, tt.wantCode, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v is not %v", err, tt.wantErr)
			}
			if tt.wantCode == core.CodeRefused && err.Detail != tt.content {
				t.Errorf("Detail = %q, want the text", err.Detail)
			}
		})
	}
}

func TestConcurrentGenerate(t *testing.T) {
	e := newEnv(t, upstream.Config{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			req := request(i%2 == 0)
			req.User = fmt.Sprint("telegram:", i)
			if _, err := e.client.Generate(context.Background(), req, nil); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if e.gw.Calls() != 8 {
		t.Errorf("calls = %d", e.gw.Calls())
	}
}

func errOrNil(e *core.Error) error {
	if e == nil {
		return nil
	}
	return e
}

func sequence(errs ...error) func(string) (core.Image, error) {
	var mu sync.Mutex
	return func(string) (core.Image, error) {
		mu.Lock()
		defer mu.Unlock()
		err := errs[0]
		errs = errs[1:]
		return core.Image{}, err
	}
}

func repeat(n int, r upstreamtest.Reply) []upstreamtest.Reply {
	out := make([]upstreamtest.Reply, n)
	for i := range out {
		out[i] = r
	}
	return out
}

func refs(urls ...string) func(*upstreamtest.Gateway) []string {
	return func(*upstreamtest.Gateway) []string { return urls }
}

func equal(a, b []string) bool {
	return fmt.Sprintf("%q", a) == fmt.Sprintf("%q", b)
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// TestStreamedRelayLossRetriedWithoutStreaming is the relay case: with
// stream: true the gateway answers only reasoning and [DONE] (one-api
// dropped the image line); without streaming the same request gets the
// image. The job succeeds after exactly one plain retry.
func TestStreamedRelayLossRetriedWithoutStreaming(t *testing.T) {
	e := newEnv(t, upstream.Config{Retries: -1})
	img := e.gw.ImageURL("after-relay.png")
	e.gw.Handle(func(w http.ResponseWriter, r *upstreamtest.Request) {
		if r.Stream {
			upstreamtest.Stream(upstreamtest.ReasoningChunk("✨ 图片生成任务已启动\n"), upstreamtest.ReasoningChunk("正在生成图片...\n"))(w, r)
			return
		}
		upstreamtest.JSON(200, upstreamtest.Completion("![done]("+img+")"))(w, r)
	})
	imgs, err, _ := e.generate(t, request(true))
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if len(imgs) != 1 || imgs[0].Source != img {
		t.Fatalf("images %+v", imgs)
	}
	reqs := e.gw.Requests()
	if len(reqs) != 2 || !reqs[0].Stream || reqs[1].Stream {
		t.Fatalf("gateway saw %d requests (stream %v), want a streamed one then a plain one", len(reqs), streams(reqs))
	}
	if _, ok := reqs[1].Fields["stream"]; ok {
		t.Errorf("the plain retry still sends a stream field: %s", reqs[1].Body)
	}
}

func streams(reqs []upstreamtest.Request) []bool {
	var out []bool
	for _, r := range reqs {
		out = append(out, r.Stream)
	}
	return out
}

// TestStreamIdleBoundsTheWaitForHeaders: a gateway that never answers holds
// a streamed job for stream_idle_timeout, not for the whole job budget.
func TestStreamIdleBoundsTheWaitForHeaders(t *testing.T) {
	e := newEnv(t, upstream.Config{Retries: -1, Timeout: time.Hour, StreamIdleTimeout: 50 * time.Millisecond})
	e.gw.Push(upstreamtest.Hang())
	_, err, _ := e.generate(t, request(true))
	if err == nil || err.Code != core.CodeTimeout || !strings.Contains(err.Err.Error(), "stream_idle_timeout") {
		t.Fatalf("err = %v, want a timeout naming upstream.stream_idle_timeout", err)
	}
}

// A gateway-signed image URL is logged without its query, where the
// signature lives, when its download fails.
func TestFailedSignedURLLoggedWithoutItsSignature(t *testing.T) {
	e := newEnv(t, upstream.Config{Retries: -1})
	signed := "https://cdn.example.com/out/fox.png?X-Amz-Signature=deadbeef0123&X-Amz-Credential=AKIAEXAMPLE"
	e.fetcher.fetch = func(ctx context.Context, ref string) (core.Image, error) {
		return core.Image{}, &core.Error{Code: core.CodeImageRejected, Err: errors.New("fetch: status 403")}
	}
	e.gw.Push(upstreamtest.JSON(200, upstreamtest.Completion("![x]("+signed+")")))
	if _, err, _ := e.generate(t, request(false)); err == nil {
		t.Fatal("Generate succeeded")
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "cdn.example.com/out/fox.png") {
		t.Fatalf("the failed image is not named in the logs:\n%s", logs)
	}
	for _, secret := range []string{"deadbeef0123", "AKIAEXAMPLE"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("the signature reached the logs:\n%s", logs)
		}
	}
}

func TestReady(t *testing.T) {
	e := newEnv(t, upstream.Config{Retries: -1})
	e.gw.RequireKey(testKey)
	if err := e.client.Ready(context.Background()); err != nil {
		t.Fatalf("a gateway that answers the probe: %v", err)
	}
	if n := e.gw.ModelsCalls(); n != 1 {
		t.Fatalf("probes = %d", n)
	}
	// A job answered just now: no probe needed.
	if _, err, _ := e.generate(t, request(false)); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Ready(context.Background()); err != nil || e.gw.ModelsCalls() != 1 {
		t.Fatalf("after a job: %v, %d probes", err, e.gw.ModelsCalls())
	}
	// The gateway went down since: a job it failed makes Ready probe
	// again rather than trust the older answer.
	e.gw.SetDown(true)
	if _, err, _ := e.generate(t, request(false)); err == nil {
		t.Fatal("a job succeeded at a gateway that is down")
	}
	if err := e.client.Ready(context.Background()); err == nil || e.gw.ModelsCalls() != 2 {
		t.Fatalf("after a failed job: %v, %d probes", err, e.gw.ModelsCalls())
	}
	// Up again, then the key is refused: likewise.
	e.gw.SetDown(false)
	if err := e.client.Ready(context.Background()); err != nil {
		t.Fatalf("up again: %v", err)
	}
	e.gw.RequireKey("sk-another-key-0000000000")
	if _, err, _ := e.generate(t, request(false)); err == nil {
		t.Fatal("a job succeeded with a refused key")
	}
	if err := e.client.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "upstream.api_key") {
		t.Fatalf("after a job with a refused key: %v", err)
	}

	down := newEnv(t, upstream.Config{Retries: -1})
	down.gw.SetDown(true)
	if err := down.client.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "502") {
		t.Fatalf("a gateway that is down: %v", err)
	}
	badKey := newEnv(t, upstream.Config{Retries: -1, APIKey: "sk-wrong-key-0000000000"})
	badKey.gw.RequireKey(testKey)
	err := badKey.client.Ready(context.Background())
	if err == nil || !strings.Contains(err.Error(), "upstream.api_key") || strings.Contains(err.Error(), "sk-wrong") {
		t.Fatalf("a rejected key: %v", err)
	}
}

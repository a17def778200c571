package upstream_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/imaginebot/imaginebot/bots/catalog"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/fetch"
	"github.com/imaginebot/imaginebot/core/upstream"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
	"github.com/imaginebot/imaginebot/storage/memory"
)

// These tests run the whole pipeline — core.Service with its ledger, the real
// upstream client and the real fetcher — against the fake gateway, and check
// what the user is told and that the quota comes back on every failure.

type recorder struct {
	delivered []core.Delivery
}

func (r *recorder) Progress(core.Progress) {}
func (r *recorder) Deliver(_ context.Context, d core.Delivery) error {
	r.delivered = append(r.delivered, d)
	return nil
}

type pipeline struct {
	svc *core.Service
	gw  *upstreamtest.Gateway
}

func newPipeline(t *testing.T, stream bool) *pipeline {
	t.Helper()
	return newPipelineWith(t, core.Model{Name: "stable-diffusion", Label: "Stable Diffusion", Stream: stream})
}

// newPipelineWith runs models; the first is the default.
func newPipelineWith(t *testing.T, models ...core.Model) *pipeline {
	t.Helper()
	gw := upstreamtest.New(t)
	quiet := slog.New(slog.DiscardHandler)
	f := fetch.New(fetch.Config{MaxBytes: 1 << 20, AllowedHosts: []string{"127.0.0.1"}}, fetch.WithLogger(quiet))
	client := upstream.New(upstream.Config{
		BaseURL: gw.URL, APIKey: "sk-test-secret", Retries: 1, UserIDSecret: "s",
		StreamIdleTimeout: 2 * time.Second,
	}, f, upstream.WithLogger(quiet), upstream.WithSleep(func(context.Context, time.Duration) error { return nil }))
	svc, err := core.NewService(core.Config{
		Models:     models,
		Rate:       rate.Inf,
		JobTimeout: 500 * time.Millisecond,
		Quotas:     core.Quotas{Location: time.UTC, DefaultDaily: 3},
	}, memory.New(), client, core.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	return &pipeline{svc: svc, gw: gw}
}

var user = core.User{Platform: core.PlatformTelegram, ID: "7", Name: "user"}

const scope = "telegram:private"

func (p *pipeline) imagine(t *testing.T, key string) (*recorder, error) {
	t.Helper()
	rep := &recorder{}
	_, err := p.svc.Imagine(context.Background(), core.Request{Key: key, User: user, Scope: scope, Lang: core.English, Prompt: "a fox in the snow"}, rep)
	return rep, err
}

func (p *pipeline) remaining(t *testing.T) int {
	t.Helper()
	b, err := p.svc.Balance(context.Background(), core.AccountKey{Scope: scope, User: user.Key()})
	if err != nil {
		t.Fatal(err)
	}
	return b.Remaining()
}

func TestPipelineSuccess(t *testing.T) {
	tests := []struct {
		name   string
		stream bool
		reply  func(gw *upstreamtest.Gateway) upstreamtest.Reply
		want   int // images
	}{
		{"not streamed", false, func(gw *upstreamtest.Gateway) upstreamtest.Reply {
			return upstreamtest.JSON(200, upstreamtest.Completion("生成完成\n![image]("+gw.ImageURL("a.png")+")"))
		}, 1},
		{"streamed with progress", true, func(gw *upstreamtest.Gateway) upstreamtest.Reply {
			return upstreamtest.Stream(upstreamtest.Chunk("图像生成中，请稍候...\n"), upstreamtest.Chunk("进度 50%\n"),
				upstreamtest.Chunk("![image]("+gw.ImageURL("a.png")+")"))
		}, 1},
		{"several images and a duplicate download link", false, func(gw *upstreamtest.Gateway) upstreamtest.Reply {
			return upstreamtest.JSON(200, upstreamtest.Completion(fmt.Sprintf("![1](%s) ![2](%s)\n[下载链接](%s)",
				gw.ImageURL("a.png"), gw.ImageURL("b.jpg"), gw.ImageURL("a.png"))))
		}, 2},
		{"data URI", false, func(gw *upstreamtest.Gateway) upstreamtest.Reply {
			uri := "data:image/png;base64," + base64.StdEncoding.EncodeToString(upstreamtest.PNG(8, 8))
			return upstreamtest.JSON(200, upstreamtest.Completion("![x]("+uri+")"))
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPipeline(t, tt.stream)
			p.gw.Push(tt.reply(p.gw))
			rep, err := p.imagine(t, "k")
			if err != nil {
				t.Fatalf("%v: %s", err, userText(err, core.English))
			}
			if len(rep.delivered) != 1 || len(rep.delivered[0].Images) != tt.want {
				t.Fatalf("delivered %+v", rep.delivered)
			}
			for _, img := range rep.delivered[0].Images {
				if !bytes.HasPrefix(img.Data, []byte("\x89PNG")) && !bytes.HasPrefix(img.Data, []byte("\xff\xd8\xff")) {
					t.Fatalf("not an image: %q", img.Data[:8])
				}
			}
			if got := p.remaining(t); got != 2 {
				t.Fatalf("remaining = %d, want 2", got)
			}
		})
	}
}

func TestPipelineFailuresRefundAndExplain(t *testing.T) {
	html502 := "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
	img := func(name string) func(gw *upstreamtest.Gateway) upstreamtest.Reply {
		return func(gw *upstreamtest.Gateway) upstreamtest.Reply {
			return upstreamtest.JSON(200, upstreamtest.Completion("![x]("+gw.ImageURL(name)+")"))
		}
	}
	tests := []struct {
		name   string
		stream bool
		setup  func(gw *upstreamtest.Gateway)
		reply  func(gw *upstreamtest.Gateway) upstreamtest.Reply
		code   core.Code
		en, zh string // fragments of the user's message
		is     error  // the cause, for refused downloads
	}{
		{name: "refusal text", reply: func(*upstreamtest.Gateway) upstreamtest.Reply {
			return upstreamtest.JSON(200, upstreamtest.Completion("抱歉，您的请求包含敏感内容，无法生成图片。"))
		}, code: core.CodeRefused, en: "declined this prompt", zh: "敏感内容"},
		{name: "401 bad key", reply: func(*upstreamtest.Gateway) upstreamtest.Reply {
			return upstreamtest.Status(401, upstreamtest.ErrorBody("", "无效的令牌"), nil)
		}, code: core.CodeUpstreamAuth, en: "rejected the bot's credentials", zh: "密钥"},
		{name: "403 insufficient_user_quota", reply: func(*upstreamtest.Gateway) upstreamtest.Reply {
			return upstreamtest.Status(403, upstreamtest.ErrorBody("insufficient_user_quota", "用户额度不足"), nil)
		}, code: core.CodeUpstreamBalance, en: "run out of credit", zh: "余额不足"},
		{name: "429 with Retry-After", reply: func(*upstreamtest.Gateway) upstreamtest.Reply {
			return upstreamtest.Status(429, upstreamtest.ErrorBody("", "当前分组上游负载已饱和，请稍后再试"), upstreamtest.RetryAfter(7*time.Second))
		}, code: core.CodeOverloaded, en: "Try again in 7 s", zh: "7 秒"},
		{name: "500", reply: func(*upstreamtest.Gateway) upstreamtest.Reply {
			return upstreamtest.Status(500, upstreamtest.ErrorBody("bad_response_status_code", "bad response status code 500"), nil)
		}, code: core.CodeUpstreamFailed, en: "failed to make your picture", zh: "生成失败"},
		{name: "503 model_not_found", reply: func(*upstreamtest.Gateway) upstreamtest.Reply {
			return upstreamtest.Status(503, upstreamtest.ErrorBody("model_not_found", "当前分组 default 下对于模型 stable-diffusion 无可用渠道"), nil)
		}, code: core.CodeModelUnavailable, en: "not available right now", zh: "暂时不可用"},
		{name: "HTML 502", reply: func(*upstreamtest.Gateway) upstreamtest.Reply {
			return upstreamtest.Status(502, html502, nil)
		}, code: core.CodeBadResponse, en: "couldn't read", zh: "无法识别"},
		{name: "error inside a 200", reply: func(*upstreamtest.Gateway) upstreamtest.Reply {
			return upstreamtest.JSON(200, upstreamtest.ErrorBody("insufficient_user_quota", "用户额度不足"))
		}, code: core.CodeUpstreamBalance, en: "run out of credit", zh: "余额不足"},
		{name: "error mid-stream", stream: true, reply: func(*upstreamtest.Gateway) upstreamtest.Reply {
			return upstreamtest.Stream(upstreamtest.Chunk("生成中"), upstreamtest.ErrorBody("model_not_found", "无可用渠道"))
		}, code: core.CodeModelUnavailable, en: "not available", zh: "不可用"},
		{name: "stream lost in the relay", stream: true, reply: func(*upstreamtest.Gateway) upstreamtest.Reply {
			return upstreamtest.Stream()
		}, code: core.CodeLostInRelay, en: "lost on its way", zh: "丢失"},
		{name: "hang", reply: func(*upstreamtest.Gateway) upstreamtest.Reply { return upstreamtest.Hang() },
			code: core.CodeTimeout, en: "took too long", zh: "超时"},
		{name: "SSRF: loopback by name", reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
			return upstreamtest.JSON(200, upstreamtest.Completion("![x]("+strings.Replace(gw.ImageURL("a.png"), "127.0.0.1", "localhost", 1)+")"))
		}, code: core.CodeImageRejected, en: "can't safely download", zh: "无法安全下载", is: fetch.ErrBlockedAddress},
		{name: "SSRF: metadata address", reply: func(*upstreamtest.Gateway) upstreamtest.Reply {
			return upstreamtest.JSON(200, upstreamtest.Completion("![x](http://169.254.169.254/latest/meta-data/iam.png)"))
		}, code: core.CodeImageRejected, en: "blocked address", zh: "地址被禁止", is: fetch.ErrBlockedAddress},
		{name: "SSRF: redirect to the metadata address", setup: func(gw *upstreamtest.Gateway) {
			gw.RedirectImage("r.png", "http://169.254.169.254/latest/meta-data/")
		}, reply: img("r.png"), code: core.CodeImageRejected, en: "can't safely download", zh: "无法安全下载", is: fetch.ErrBlockedAddress},
		{name: "oversized download", setup: func(gw *upstreamtest.Gateway) {
			gw.ServeImage("big.png", "image/png", append(upstreamtest.PNG(4, 4), make([]byte, 2<<20)...))
		}, reply: img("big.png"), code: core.CodeImageRejected, en: "too large", zh: "过大", is: fetch.ErrTooLarge},
		{name: "not an image", reply: img("page.html"), code: core.CodeImageRejected, en: "not an image", zh: "不是图片", is: fetch.ErrNotImage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPipeline(t, tt.stream)
			if tt.setup != nil {
				tt.setup(p.gw)
			}
			p.gw.Handle(tt.reply(p.gw)) // every attempt gets the same answer
			rep, err := p.imagine(t, "k")
			if got := core.ErrorCode(err); got != tt.code {
				t.Fatalf("code = %q (%v), want %q", got, err, tt.code)
			}
			if len(rep.delivered) != 0 {
				t.Fatal("delivered despite the failure")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("err = %v, want it to wrap %v", err, tt.is)
			}
			en, zh := userText(err, core.English), userText(err, core.SimplifiedChinese)
			if !strings.Contains(en, tt.en) || !strings.Contains(zh, tt.zh) {
				t.Fatalf("messages lack %q / %q:\n%s\n%s", tt.en, tt.zh, en, zh)
			}
			if !strings.Contains(en, "refunded") || !strings.Contains(zh, "退回") {
				t.Fatalf("messages do not say the quota was refunded:\n%s\n%s", en, zh)
			}
			if strings.Contains(en+zh+err.Error(), "sk-test-secret") {
				t.Fatal("the API key leaked into a message")
			}
			if got := p.remaining(t); got != 3 {
				t.Fatalf("remaining = %d, want 3: not refunded", got)
			}
			j, err := p.svc.Job(context.Background(), "k")
			if err != nil || j.State != core.JobRefunded || j.Outcome != tt.code {
				t.Fatalf("job = %+v, %v", j, err)
			}
		})
	}
}

// userText is what a Telegram user would read for err: these tests check
// that every upstream failure reads right, not only its code.
func userText(err error, lang core.Lang) string {
	return catalog.For(lang).Error(err, catalog.Syntax{Platform: "telegram", Help: "/help", Imagine: "/imagine"})
}

package upstream_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/fetch"
	"github.com/imaginebot/imaginebot/core/upstream"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
	"github.com/imaginebot/imaginebot/storage/memory"
)

// slowReporter is a Reporter whose first progress while generating and
// whose delivery take their time: the one holds the job's upstream slot
// (so the next job waits), the other runs out the delivery budget.
type slowReporter struct {
	holdGenerating time.Duration
	holdDelivery   bool
	held           bool
}

func (r *slowReporter) Progress(p core.Progress) {
	if p.Stage == core.StageGenerating && !r.held {
		r.held = true
		time.Sleep(r.holdGenerating)
	}
}

func (r *slowReporter) Deliver(ctx context.Context, _ core.Delivery) error {
	if r.holdDelivery {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// The operator's detail of a failure says what to change: a picture on a
// private address names images.allow_private_hosts, and each timeout names
// the limit that ran out — upstream.timeout, limits.job_timeout (also while
// the job waits for a slot), upstream.stream_idle_timeout,
// limits.delivery_timeout, or the download's own limit, which no setting
// sets.
func TestFailureDetailNamesTheSetting(t *testing.T) {
	const short = 300 * time.Millisecond
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(hang.Close)
	tests := []struct {
		name     string
		client   upstream.Config
		fetch    fetch.Config
		core     core.Config
		stream   bool
		reply    func(gw *upstreamtest.Gateway) upstreamtest.Reply
		before   func(t *testing.T, svc *core.Service) // another job first
		rep      *slowReporter
		code     core.Code
		want     []string
		wantNone string
	}{
		{
			name: "a private image", reply: image("a.png"), code: core.CodeImageRejected,
			want: []string{"blocked address 127.0.0.1 (loopback)", "images.allow_private_hosts"},
		},
		{
			name: "upstream.timeout", client: upstream.Config{Timeout: short}, reply: hung, code: core.CodeTimeout,
			want: []string{"upstream.timeout (300ms) ran out"}, wantNone: "limits.job_timeout",
		},
		{
			name: "limits.job_timeout", core: core.Config{JobTimeout: short}, reply: hung, code: core.CodeTimeout,
			want: []string{"limits.job_timeout (300ms) ran out"}, wantNone: "upstream.timeout",
		},
		{
			name: "limits.job_timeout in the queue", core: core.Config{JobTimeout: short}, reply: image("a.png"), code: core.CodeTimeout,
			fetch: fetch.Config{AllowedHosts: []string{"127.0.0.1"}},
			before: func(t *testing.T, svc *core.Service) {
				other := core.User{Platform: core.PlatformTelegram, ID: "8"}
				err := svc.Submit(context.Background(), core.Request{Key: "first", User: other, Scope: scope, Lang: core.English, Prompt: "slow"},
					&slowReporter{holdGenerating: 3 * short}, func(core.Receipt, error) {})
				if err != nil {
					t.Fatal(err)
				}
				time.Sleep(short / 10) // it has the only slot
			},
			want: []string{"limits.job_timeout (300ms) ran out while the job waited for an upstream slot"},
		},
		{
			name: "upstream.stream_idle_timeout", client: upstream.Config{StreamIdleTimeout: short}, stream: true, code: core.CodeTimeout,
			reply: func(*upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.StreamHang(upstreamtest.Chunk("图像生成中…\n"))
			},
			want: []string{"(upstream.stream_idle_timeout)"},
		},
		{
			name: "limits.delivery_timeout", core: core.Config{DeliveryTimeout: short}, reply: image("a.png"), code: core.CodeDeliveryFailed,
			fetch: fetch.Config{AllowedHosts: []string{"127.0.0.1"}}, rep: &slowReporter{holdDelivery: true},
			want: []string{"limits.delivery_timeout (300ms) ran out"},
		},
		{
			name: "the download's own limit", fetch: fetch.Config{AllowedHosts: []string{"127.0.0.1"}, Timeout: short}, code: core.CodeTimeout,
			reply: func(*upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.JSON(200, upstreamtest.Completion("![x]("+hang.URL+"/slow.png)"))
			},
			want: []string{"the download took longer than 300ms, the limit for one image"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := upstreamtest.New(t)
			quiet := slog.New(slog.DiscardHandler)
			cc := tt.client
			cc.BaseURL, cc.APIKey, cc.Retries = gw.URL, "sk-detail", -1
			client := upstream.New(cc, fetch.New(tt.fetch, fetch.WithLogger(quiet)), upstream.WithLogger(quiet))
			cfg := tt.core
			cfg.Models = []core.Model{{Name: "stable-diffusion", Stream: tt.stream}}
			cfg.Rate, cfg.Concurrency = rate.Inf, 1
			cfg.QueueCap = 10
			cfg.Quotas = core.Quotas{Location: time.UTC, DefaultDaily: 3}
			svc, err := core.NewService(cfg, memory.New(), client, core.WithLogger(quiet))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = svc.Shutdown(ctx)
			})
			gw.Handle(tt.reply(gw))
			if tt.before != nil {
				tt.before(t, svc)
			}
			rep := tt.rep
			if rep == nil {
				rep = &slowReporter{}
			}
			_, err = svc.Imagine(context.Background(), core.Request{Key: "k", User: user, Scope: scope, Lang: core.English, Prompt: "a fox"}, rep)
			e := core.AsError(err)
			if e.Code != tt.code || e.Err == nil {
				t.Fatalf("got %v, want code %s", err, tt.code)
			}
			t.Logf("detail: %v", e.Err)
			for _, w := range tt.want {
				if !strings.Contains(e.Err.Error(), w) {
					t.Errorf("detail %q lacks %q", e.Err, w)
				}
			}
			if tt.wantNone != "" && strings.Contains(e.Err.Error(), tt.wantNone) {
				t.Errorf("detail %q names %s, which did not run out", e.Err, tt.wantNone)
			}
		})
	}
}

func image(name string) func(gw *upstreamtest.Gateway) upstreamtest.Reply {
	return func(gw *upstreamtest.Gateway) upstreamtest.Reply {
		return upstreamtest.JSON(200, upstreamtest.Completion("![x]("+gw.ImageURL(name)+")"))
	}
}

func hung(*upstreamtest.Gateway) upstreamtest.Reply { return upstreamtest.Hang() }

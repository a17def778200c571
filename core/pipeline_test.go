package core_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/memory"
)

// fakeGen is a Generator whose behaviour is a function field.
type fakeGen struct {
	mu    sync.Mutex
	calls int
	fn    func(ctx context.Context, req core.GenRequest, progress func(core.GenProgress)) ([]core.Image, error)
}

func (g *fakeGen) Generate(ctx context.Context, req core.GenRequest, progress func(core.GenProgress)) ([]core.Image, error) {
	g.mu.Lock()
	g.calls++
	g.mu.Unlock()
	if g.fn != nil {
		return g.fn(ctx, req, progress)
	}
	return []core.Image{pngImage()}, nil
}

func (g *fakeGen) Calls() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls
}

func pngImage() core.Image {
	return core.Image{Data: []byte("\x89PNG\r\n\x1a\nfake"), MIME: "image/png", Source: "https://img.example.com/a.png"}
}

// fakeReporter records progress and deliveries.
type fakeReporter struct {
	mu         sync.Mutex
	progress   []core.Progress
	deliveries []core.Delivery
	deliver    func(ctx context.Context, d core.Delivery) error
}

func (r *fakeReporter) Progress(p core.Progress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress = append(r.progress, p)
}

func (r *fakeReporter) Deliver(ctx context.Context, d core.Delivery) error {
	r.mu.Lock()
	r.deliveries = append(r.deliveries, d)
	r.mu.Unlock()
	if r.deliver != nil {
		return r.deliver(ctx, d)
	}
	return nil
}

func (r *fakeReporter) positions() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for _, p := range r.progress {
		if p.Stage == core.StageQueued {
			out = append(out, p.Position)
		}
	}
	return out
}

type env struct {
	svc   *core.Service
	store *memory.Store
	gen   *fakeGen
}

func newEnv(t testing.TB, mod func(*core.Config)) *env {
	t.Helper()
	cfg := core.Config{
		Models: []core.Model{
			{Name: "stable-diffusion", Label: "Stable Diffusion", Cost: 1},
			{Name: "flux", Label: "FLUX", Cost: 2},
		},
		Rate:          rate.Inf,
		Burst:         1,
		PerUserJobs:   10,
		Concurrency:   4,
		QueueCap:      100,
		JobTimeout:    5 * time.Second,
		ProgressEvery: time.Hour,
		Quotas:        core.Quotas{Location: time.UTC, DefaultDaily: 5},
	}
	if mod != nil {
		mod(&cfg)
	}
	store := memory.New()
	gen := &fakeGen{}
	svc, err := core.NewService(cfg, store, gen, core.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	return &env{svc: svc, store: store, gen: gen}
}

var quiet = slog.New(slog.DiscardHandler)

var alice = core.User{Platform: core.PlatformTelegram, ID: "1", Name: "alice"}
var bob = core.User{Platform: core.PlatformTelegram, ID: "2", Name: "bob"}

const scope = "telegram:private"

func req(key string, u core.User, prompt string) core.Request {
	return core.Request{Key: key, User: u, Scope: scope, Lang: core.English, Prompt: prompt}
}

func acct(u core.User) core.AccountKey { return core.AccountKey{Scope: scope, User: u.Key()} }

func (e *env) remaining(t testing.TB, u core.User) int {
	t.Helper()
	b, err := e.svc.Balance(context.Background(), acct(u))
	if err != nil {
		t.Fatal(err)
	}
	return b.Remaining()
}

func (e *env) job(t testing.TB, key string) core.Job {
	t.Helper()
	var j core.Job
	err := e.store.View(context.Background(), func(tx core.Tx) error {
		var ok bool
		var err error
		j, ok, err = tx.Job(key)
		if !ok {
			return fmt.Errorf("no job %s", key)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestImagineSuccess(t *testing.T) {
	e := newEnv(t, nil)
	rep := &fakeReporter{}
	r, err := e.svc.Imagine(context.Background(), core.Request{Key: "k1", User: alice, Scope: scope, Prompt: "  a fox in the snow  ",
		Model: "FLUX", Options: core.Options{Aspect: "16:9", Negative: "people"}}, rep)
	if err != nil {
		t.Fatal(err)
	}
	if r.Images != 1 || r.Job.State != core.JobCommitted {
		t.Fatalf("receipt = %+v", r)
	}
	if got := e.job(t, "k1"); got.State != core.JobCommitted || got.Units != 2 || got.Model != "flux" {
		t.Fatalf("stored job = %+v", got)
	}
	if got := e.remaining(t, alice); got != 3 {
		t.Fatalf("remaining = %d, want 3 (5 - cost 2)", got)
	}
	if len(rep.deliveries) != 1 {
		t.Fatalf("deliveries = %d", len(rep.deliveries))
	}
	d := rep.deliveries[0]
	if d.Prompt != "a fox in the snow" || d.Balance.Remaining() != 3 || d.Model.Name != "flux" {
		t.Fatalf("delivery = %+v", d)
	}
	if r.Balance.Remaining() != 3 {
		t.Fatalf("receipt balance = %+v", r.Balance)
	}
	if len(rep.progress) == 0 || rep.progress[0].Stage != core.StageGenerating {
		t.Fatalf("progress = %+v", rep.progress)
	}
}

func TestImaginePromptRendering(t *testing.T) {
	tmpl, err := core.ParseTemplate("sd", "{{.Prompt}}{{with .Negative}} --no {{.}}{{end}}{{with .Aspect}} --ar {{.}}{{end}}")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *core.Config) {
		c.Models = []core.Model{{Name: "sd", Template: tmpl, SystemPrompt: "draw"}}
	})
	var got core.GenRequest
	e.gen.fn = func(ctx context.Context, r core.GenRequest, _ func(core.GenProgress)) ([]core.Image, error) {
		got = r
		return []core.Image{pngImage()}, nil
	}
	_, err = e.svc.Imagine(context.Background(), core.Request{Key: "k", User: alice, Scope: scope, Prompt: "cat",
		Options: core.Options{Negative: "dog", Aspect: "3:2"}}, &fakeReporter{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Prompt != "cat --no dog --ar 3:2" || got.Model.SystemPrompt != "draw" || got.User != alice.Key() {
		t.Fatalf("gen request = %+v", got)
	}
}

func TestImagineRefusedBeforeCharging(t *testing.T) {
	tests := []struct {
		name string
		req  core.Request
		code core.Code
	}{
		{"empty prompt", req("a", alice, "   "), core.CodeInvalidPrompt},
		{"too long", req("b", alice, strings.Repeat("猫", 1001)), core.CodePromptTooLong},
		{"control chars", req("c", alice, "a fox\x00\x1b[31m"), core.CodePromptControl},
		{"unknown model", core.Request{Key: "d", User: alice, Scope: scope, Prompt: "x", Model: "dalle"}, core.CodeUnknownModel},
		{"bad aspect", core.Request{Key: "e", User: alice, Scope: scope, Prompt: "x", Options: core.Options{Aspect: "wide"}}, core.CodeInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			_, err := e.svc.Imagine(context.Background(), tt.req, &fakeReporter{})
			if got := core.ErrorCode(err); got != tt.code {
				t.Fatalf("code = %q (%v), want %q", got, err, tt.code)
			}
			if e.gen.Calls() != 0 {
				t.Fatal("generator called")
			}
			if got := e.remaining(t, alice); got != 5 {
				t.Fatalf("remaining = %d, want 5", got)
			}
		})
	}
}

func TestImagineRateLimited(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	e := newEnv(t, func(c *core.Config) {
		c.Rate = rate.Every(10 * time.Second)
		c.Burst = 1
	})
	svc, err := core.NewService(e.svc.Limits(), e.store, e.gen, core.WithClock(func() time.Time { return now }), core.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Imagine(context.Background(), req("1", alice, "x"), &fakeReporter{}); err != nil {
		t.Fatal(err)
	}
	_, err = svc.Imagine(context.Background(), req("2", alice, "x"), &fakeReporter{})
	var ce *core.Error
	if !errors.As(err, &ce) || ce.Code != core.CodeRateLimited || ce.RetryAfter != 10*time.Second {
		t.Fatalf("err = %#v", err)
	}
	// Another user has their own bucket.
	if _, err := svc.Imagine(context.Background(), req("3", bob, "x"), &fakeReporter{}); err != nil {
		t.Fatalf("bob: %v", err)
	}
	if e.gen.Calls() != 2 {
		t.Fatalf("generator calls = %d, want 2", e.gen.Calls())
	}
	now = now.Add(10 * time.Second)
	if _, err := svc.Imagine(context.Background(), req("4", alice, "x"), &fakeReporter{}); err != nil {
		t.Fatalf("after refill: %v", err)
	}
}

func TestImagineQuotaExhausted(t *testing.T) {
	e := newEnv(t, func(c *core.Config) {
		c.Quotas = core.Quotas{Location: mustLoc(t, "Asia/Shanghai"), DefaultDaily: 1}
	})
	if _, err := e.svc.Imagine(context.Background(), req("1", alice, "x"), &fakeReporter{}); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.Imagine(context.Background(), req("2", alice, "x"), &fakeReporter{})
	var ce *core.Error
	if !errors.As(err, &ce) || ce.Code != core.CodeQuotaExceeded {
		t.Fatalf("err = %v", err)
	}
	if want := time.Date(2026, 1, 1, 0, 0, 0, 0, mustLoc(t, "Asia/Shanghai")); ce.ResetAt.Hour() != 0 || ce.ResetAt.Minute() != 0 || ce.ResetAt.Location().String() != want.Location().String() {
		t.Fatalf("reset at %v, want midnight in Asia/Shanghai", ce.ResetAt)
	}
	if e.gen.Calls() != 1 {
		t.Fatalf("generator calls = %d", e.gen.Calls())
	}
}

func TestImagineBanned(t *testing.T) {
	e := newEnv(t, nil)
	owner := core.Actor{User: bob, Role: core.RoleOwner}
	if _, err := e.svc.Ban(context.Background(), owner, acct(alice)); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.Imagine(context.Background(), req("1", alice, "x"), &fakeReporter{})
	if core.ErrorCode(err) != core.CodeBanned || e.gen.Calls() != 0 {
		t.Fatalf("err = %v, calls = %d", err, e.gen.Calls())
	}
}

func TestImagineDuplicateChargesOnce(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := e.svc.Imagine(context.Background(), req("same", alice, "x"), &fakeReporter{}); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.Imagine(context.Background(), req("same", alice, "x"), &fakeReporter{})
	if core.ErrorCode(err) != core.CodeDuplicate {
		t.Fatalf("err = %v", err)
	}
	if got := e.remaining(t, alice); got != 4 || e.gen.Calls() != 1 {
		t.Fatalf("remaining = %d, calls = %d", got, e.gen.Calls())
	}
}

func TestImagineFailuresRefund(t *testing.T) {
	tests := []struct {
		name    string
		gen     func(ctx context.Context) ([]core.Image, error)
		deliver func(ctx context.Context) error
		code    core.Code
	}{
		{"upstream auth", func(context.Context) ([]core.Image, error) {
			return nil, &core.Error{Code: core.CodeUpstreamAuth}
		}, nil, core.CodeUpstreamAuth},
		{"refused with text", func(context.Context) ([]core.Image, error) {
			return nil, &core.Error{Code: core.CodeRefused, Detail: "抱歉，包含敏感内容 ![x](https://a/b.png)"}
		}, nil, core.CodeRefused},
		{"no images", func(context.Context) ([]core.Image, error) { return nil, nil }, nil, core.CodeLostInRelay},
		{"plain error", func(context.Context) ([]core.Image, error) { return nil, errors.New("boom") }, nil, core.CodeInternal},
		{"timeout", func(ctx context.Context) ([]core.Image, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}, nil, core.CodeTimeout},
		{"delivery failed", nil, func(context.Context) error { return errors.New("telegram: 400") }, core.CodeDeliveryFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *core.Config) { c.JobTimeout = 50 * time.Millisecond })
			if tt.gen != nil {
				e.gen.fn = func(ctx context.Context, _ core.GenRequest, _ func(core.GenProgress)) ([]core.Image, error) {
					return tt.gen(ctx)
				}
			}
			rep := &fakeReporter{}
			if tt.deliver != nil {
				rep.deliver = func(ctx context.Context, _ core.Delivery) error { return tt.deliver(ctx) }
			}
			_, err := e.svc.Imagine(context.Background(), req("k", alice, "x"), rep)
			if got := core.ErrorCode(err); got != tt.code {
				t.Fatalf("code = %q (%v), want %q", got, err, tt.code)
			}
			if got := e.remaining(t, alice); got != 5 {
				t.Fatalf("remaining = %d, want 5 (refunded)", got)
			}
			j := e.job(t, "k")
			if j.State != core.JobRefunded || j.Outcome != tt.code {
				t.Fatalf("job = %s/%s", j.State, j.Outcome)
			}
			var ce *core.Error
			if errors.As(err, &ce) && strings.Contains(ce.Detail, "![") {
				t.Fatalf("detail not cleaned: %q", ce.Detail)
			}
		})
	}
}

func TestImaginePerUserConcurrency(t *testing.T) {
	e := newEnv(t, func(c *core.Config) { c.PerUserJobs = 1 })
	started, unblock := make(chan struct{}), make(chan struct{})
	e.gen.fn = func(ctx context.Context, _ core.GenRequest, _ func(core.GenProgress)) ([]core.Image, error) {
		close(started)
		<-unblock
		return []core.Image{pngImage()}, nil
	}
	errc := make(chan error)
	go func() {
		_, err := e.svc.Imagine(context.Background(), req("1", alice, "x"), &fakeReporter{})
		errc <- err
	}()
	<-started
	_, err := e.svc.Imagine(context.Background(), req("2", alice, "x"), &fakeReporter{})
	if core.ErrorCode(err) != core.CodeTooManyJobs {
		t.Fatalf("err = %v", err)
	}
	close(unblock)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := e.remaining(t, alice); got != 4 {
		t.Fatalf("remaining = %d, want 4", got)
	}
}

func TestImagineQueueFullAndFairness(t *testing.T) {
	e := newEnv(t, func(c *core.Config) {
		c.Concurrency = 1
		c.QueueCap = 4
		c.Quotas.DefaultDaily = 10
	})
	var mu sync.Mutex
	var order []string
	gate := make(chan struct{})
	started := make(chan struct{}, 10)
	e.gen.fn = func(ctx context.Context, r core.GenRequest, _ func(core.GenProgress)) ([]core.Image, error) {
		mu.Lock()
		order = append(order, r.Prompt)
		mu.Unlock()
		started <- struct{}{}
		<-gate
		return []core.Image{pngImage()}, nil
	}
	var wg sync.WaitGroup
	reps := map[string]*fakeReporter{}
	submit := func(key string, u core.User, prompt string) {
		rep := &fakeReporter{}
		reps[key] = rep
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.svc.Imagine(context.Background(), req(key, u, prompt), rep); err != nil {
				t.Errorf("%s: %v", key, err)
			}
		}()
	}
	submit("a0", alice, "a0")
	<-started // a0 holds the only slot
	for i := 1; i <= 3; i++ {
		submit(fmt.Sprintf("a%d", i), alice, fmt.Sprintf("a%d", i))
		waitFor(t, func() bool { return len(reps[fmt.Sprintf("a%d", i)].positions()) > 0 })
	}
	if p := reps["a3"].positions(); p[0] != 3 {
		t.Fatalf("a3 positions = %v, want to start at 3", p)
	}
	submit("b1", bob, "b1")
	waitFor(t, func() bool { return len(reps["b1"].positions()) > 0 })
	// 1 running + 4 queued: the next job is refused.
	_, err := e.svc.Imagine(context.Background(), req("c", core.User{Platform: core.PlatformTelegram, ID: "3"}, "c"), &fakeReporter{})
	if core.ErrorCode(err) != core.CodeQueueFull {
		t.Fatalf("err = %v, want queue full", err)
	}
	// Bob arrived last but stands in line right behind alice: after her
	// next job she goes to the back, behind him.
	if p := reps["b1"].positions(); p[0] != 2 {
		t.Fatalf("bob's position = %v, want 2", p)
	}
	for i := range 5 {
		gate <- struct{}{} // finish the running job
		if i < 4 {
			<-started // the next one took the slot
		}
		if i < 3 {
			// a3's new place reaches it from the scheduler's goroutine:
			// wait for it before the next job ends, or two moves merge.
			waitFor(t, func() bool { p := reps["a3"].positions(); return p[len(p)-1] == 3-i })
		}
	}
	wg.Wait()
	want := []string{"a0", "a1", "b1", "a2", "a3"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("order = %v, want %v", order, want)
	}
	// a3 learns it moved behind bob once alice's earlier jobs went, and
	// every step below ten is shown.
	if p := reps["a3"].positions(); fmt.Sprint(p) != "[3 2 1]" {
		t.Fatalf("a3 positions = %v", p)
	}
}

// TestImagineArrivalOrder: jobs are served in the order their events
// arrived (Request.Seq), not the order their reservations finished.
func TestImagineArrivalOrder(t *testing.T) {
	e := newEnv(t, func(c *core.Config) { c.Concurrency = 1 })
	var mu sync.Mutex
	var order []string
	gate := make(chan struct{})
	e.gen.fn = func(ctx context.Context, r core.GenRequest, _ func(core.GenProgress)) ([]core.Image, error) {
		mu.Lock()
		order = append(order, r.Prompt)
		mu.Unlock()
		<-gate
		return []core.Image{pngImage()}, nil
	}
	users := make([]core.User, 6)
	seqs := make([]uint64, 6)
	for i := range users {
		users[i] = core.User{Platform: core.PlatformTelegram, ID: fmt.Sprint(100 + i)}
		seqs[i] = e.svc.Arrival()
	}
	var wg sync.WaitGroup
	run := func(i int, rep *fakeReporter) {
		defer wg.Done()
		r := req(fmt.Sprint("k", i), users[i], fmt.Sprint("p", i))
		r.Seq = seqs[i]
		if _, err := e.svc.Imagine(context.Background(), r, rep); err != nil {
			t.Error(err)
		}
	}
	// p0 takes the slot; the others reach the queue in reverse order of
	// their arrival.
	wg.Add(1)
	go run(0, &fakeReporter{})
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 1 })
	for i := 5; i >= 1; i-- {
		rep := &fakeReporter{}
		wg.Add(1)
		go run(i, rep)
		waitFor(t, func() bool { return len(rep.positions()) > 0 })
	}
	for range 6 {
		gate <- struct{}{}
	}
	wg.Wait()
	if want := "[p0 p1 p2 p3 p4 p5]"; fmt.Sprint(order) != want {
		t.Fatalf("order = %v, want %s", order, want)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestImagineProgress(t *testing.T) {
	e := newEnv(t, func(c *core.Config) { c.ProgressEvery = 5 * time.Millisecond })
	e.gen.fn = func(ctx context.Context, _ core.GenRequest, progress func(core.GenProgress)) ([]core.Image, error) {
		progress(core.GenProgress{Percent: 42, Text: "进度 42% \x1b"})
		time.Sleep(30 * time.Millisecond)
		return []core.Image{pngImage()}, nil
	}
	rep := &fakeReporter{}
	if _, err := e.svc.Imagine(context.Background(), req("k", alice, "x"), rep); err != nil {
		t.Fatal(err)
	}
	var saw42, sawTick bool
	for _, p := range rep.progress {
		if p.Percent == 42 && p.Text == "进度 42%" {
			saw42 = true
		}
		if p.Percent == 42 && p.Elapsed > 0 {
			sawTick = true
		}
	}
	if !saw42 || !sawTick {
		t.Fatalf("progress = %+v", rep.progress)
	}
}

func TestShutdown(t *testing.T) {
	e := newEnv(t, func(c *core.Config) { c.Concurrency = 1 })
	started := make(chan struct{}, 2)
	e.gen.fn = func(ctx context.Context, _ core.GenRequest, _ func(core.GenProgress)) ([]core.Image, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	errs := make(chan error, 2)
	go func() {
		_, err := e.svc.Imagine(context.Background(), req("run", alice, "x"), &fakeReporter{})
		errs <- err
	}()
	<-started
	queued := &fakeReporter{}
	go func() {
		_, err := e.svc.Imagine(context.Background(), req("queued", bob, "x"), queued)
		errs <- err
	}()
	waitFor(t, func() bool { return len(queued.positions()) > 0 })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := e.svc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if code := core.ErrorCode(<-errs); code != core.CodeShuttingDown {
			t.Fatalf("code = %s", code)
		}
	}
	for _, u := range []core.User{alice, bob} {
		if got := e.remaining(t, u); got != 5 {
			t.Fatalf("%s remaining = %d, want 5", u.Name, got)
		}
	}
	_, err := e.svc.Imagine(context.Background(), req("late", alice, "x"), &fakeReporter{})
	if core.ErrorCode(err) != core.CodeShuttingDown {
		t.Fatalf("after shutdown: %v", err)
	}
}

// Shutdown wakes the jobs still queued at once: they are refunded and told
// the bot is shutting down, without waiting for the running job, which the
// drain lets finish and commit.
func TestShutdownReleasesQueuedJobsAtOnce(t *testing.T) {
	e := newEnv(t, func(c *core.Config) { c.Concurrency, c.JobTimeout = 1, time.Minute })
	started, finish := make(chan struct{}, 2), make(chan struct{})
	e.gen.fn = func(ctx context.Context, _ core.GenRequest, _ func(core.GenProgress)) ([]core.Image, error) {
		started <- struct{}{}
		select {
		case <-finish:
			return []core.Image{pngImage()}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	running := make(chan error, 1)
	go func() {
		_, err := e.svc.Imagine(context.Background(), req("run", alice, "x"), &fakeReporter{})
		running <- err
	}()
	<-started
	queued := &fakeReporter{}
	queuedErr := make(chan error, 1)
	go func() {
		_, err := e.svc.Imagine(context.Background(), req("queued", bob, "x"), queued)
		queuedErr <- err
	}()
	waitFor(t, func() bool { return len(queued.positions()) > 0 })

	// A drain and a job timeout far longer than the test: only the
	// queue's wake-up can end the queued job's wait.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- e.svc.Shutdown(ctx) }()
	select {
	case err := <-queuedErr:
		if code := core.ErrorCode(err); code != core.CodeShuttingDown {
			t.Fatalf("queued job: code = %s (%v), want %s", code, err, core.CodeShuttingDown)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the queued job still waits after Shutdown: it was not woken")
	}
	if j := e.job(t, "queued"); j.State != core.JobRefunded || j.Outcome != core.CodeShuttingDown {
		t.Errorf("queued job %s / %s, want refunded for the shutdown", j.State, j.Outcome)
	}
	if got := e.remaining(t, bob); got != 5 {
		t.Errorf("bob remaining = %d, want 5", got)
	}
	if n := e.gen.Calls(); n != 1 {
		t.Errorf("%d generations, want only the running job's", n)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a job still running", err)
	default:
	}

	close(finish)
	if err := <-running; err != nil {
		t.Fatalf("running job: %v, want it to finish within the drain", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if j := e.job(t, "run"); j.State != core.JobCommitted {
		t.Errorf("running job %s, want committed", j.State)
	}
}

func TestRecoverRefundsPending(t *testing.T) {
	e := newEnv(t, nil)
	now := time.Now()
	l := e.svc.Ledger()
	if _, _, err := l.Reserve(context.Background(), core.Job{Key: "crashed", Account: acct(alice), Units: 2, ReplyTo: "chat:1:msg:2"}, now); err != nil {
		t.Fatal(err)
	}
	if got := e.remaining(t, alice); got != 3 {
		t.Fatalf("remaining = %d", got)
	}
	jobs, err := e.svc.Recover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 1 || jobs[0].ReplyTo != "chat:1:msg:2" || jobs[0].Outcome != core.CodeInterrupted {
		t.Fatalf("recovered = %+v", jobs)
	}
	if got := e.remaining(t, alice); got != 5 {
		t.Fatalf("remaining = %d, want 5", got)
	}
	if pending, _ := e.store.PendingJobs(context.Background()); len(pending) != 0 {
		t.Fatalf("pending = %v", pending)
	}
}

func mustLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// BenchmarkPipeline measures jobs/s through the whole pipeline (validation,
// limits, reservation, queue, commit) with an instant generator.
func BenchmarkPipeline(b *testing.B) {
	e := newEnv(b, func(c *core.Config) {
		c.Quotas.DefaultDaily = 1 << 30
		c.Concurrency = 8
		c.QueueCap = 1 << 20
		c.PerUserJobs = 1 << 20
	})
	users := make([]core.User, 64)
	for i := range users {
		users[i] = core.User{Platform: core.PlatformTelegram, ID: fmt.Sprint(i)}
	}
	var seq atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rep := &nopReporter{}
		for pb.Next() {
			n := int(seq.Add(1))
			if _, err := e.svc.Imagine(context.Background(), req(fmt.Sprint("k", n), users[n%64], "a fox in the snow"), rep); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}

type nopReporter struct{}

func (nopReporter) Progress(core.Progress)                       {}
func (nopReporter) Deliver(context.Context, core.Delivery) error { return nil }

// TestStatusNotesReachTheLedger: a status reference noted while the job
// runs is written within a second, and at the latest with the delivering
// mark, before anything is sent.
func TestStatusNotesReachTheLedger(t *testing.T) {
	e := newEnv(t, nil)
	release := make(chan struct{})
	e.gen.fn = func(ctx context.Context, _ core.GenRequest, _ func(core.GenProgress)) ([]core.Image, error) {
		<-release
		return []core.Image{pngImage()}, nil
	}
	noted := make(chan struct{})
	rep := &fakeReporter{deliver: func(ctx context.Context, d core.Delivery) error {
		if j := e.job(t, d.Job.Key); !j.Delivering || j.Status != "chat:2" {
			t.Errorf("at delivery the ledger has %+v, want delivering with status chat:2", j)
		}
		return nil
	}}
	done := make(chan error, 1)
	go func() {
		_, err := e.svc.Imagine(context.Background(), req("noted", alice, "x"), &notingReporter{fakeReporter: rep, svc: e.svc, key: "noted", ref: "chat:1", once: noted})
		done <- err
	}()
	<-noted
	waitFor(t, func() bool { return e.job(t, "noted").Status == "chat:1" })
	// A newer reference, noted just before delivery, goes with the mark.
	if err := e.svc.NoteStatus(context.Background(), "noted", "chat:2"); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// notingReporter notes a status reference on the first progress, as an
// adapter does when its status message is sent.
type notingReporter struct {
	*fakeReporter
	svc      *core.Service
	key, ref string
	once     chan struct{}
	sync.Once
}

func (r *notingReporter) Progress(p core.Progress) {
	r.fakeReporter.Progress(p)
	r.Do(func() {
		_ = r.svc.NoteStatus(context.Background(), r.key, r.ref)
		close(r.once)
	})
}

// BenchmarkQueuedJobMemory states what a job waiting in the queue costs:
// heap bytes (the job, its request, the scheduler's entry, the reporter)
// and goroutines, with 5,000 waiting behind one running job.
func BenchmarkQueuedJobMemory(b *testing.B) {
	const queued = 5000
	for range b.N {
		e := newEnv(b, func(c *core.Config) {
			c.Concurrency = 1
			c.QueueCap = queued + 10
			c.Quotas.DefaultDaily = 10
		})
		release := make(chan struct{})
		e.gen.fn = func(ctx context.Context, _ core.GenRequest, _ func(core.GenProgress)) ([]core.Image, error) {
			<-release
			return []core.Image{pngImage()}, nil
		}
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before, goroutines := ms.HeapAlloc, runtime.NumGoroutine()
		var wg sync.WaitGroup
		for i := range queued + 1 {
			u := core.User{Platform: core.PlatformTelegram, ID: fmt.Sprint(10000 + i)}
			wg.Add(1)
			err := e.svc.Submit(context.Background(), req(fmt.Sprint("m", i), u, "a queued fox"), &fakeReporter{},
				func(core.Receipt, error) { wg.Done() })
			if err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapAlloc-before)/queued, "heap-bytes/queued-job")
		b.ReportMetric(float64(runtime.NumGoroutine()-goroutines)/queued, "goroutines/queued-job")
		close(release)
		wg.Wait()
	}
}

func TestCancel(t *testing.T) {
	e := newEnv(t, func(c *core.Config) { c.Concurrency = 1 })
	started := make(chan struct{}, 4)
	e.gen.fn = func(ctx context.Context, _ core.GenRequest, _ func(core.GenProgress)) ([]core.Image, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	submit := func(key string, u core.User) chan error {
		ch := make(chan error, 1)
		if err := e.svc.Submit(context.Background(), req(key, u, "x"), &fakeReporter{}, func(_ core.Receipt, err error) { ch <- err }); err != nil {
			t.Fatal(err)
		}
		return ch
	}
	running := submit("running", alice)
	<-started
	queued := submit("queued", bob)
	mallory := core.Actor{User: core.User{Platform: core.PlatformTelegram, ID: "66"}}
	if err := e.svc.Cancel(context.Background(), mallory, "queued"); core.ErrorCode(err) != core.CodeForbidden {
		t.Fatalf("a stranger's cancel: %v", err)
	}
	// The requester cancels the queued job; a moderator the running one.
	if err := e.svc.Cancel(context.Background(), core.Actor{User: bob}, "queued"); err != nil {
		t.Fatal(err)
	}
	if err := <-queued; core.ErrorCode(err) != core.CodeCancelled {
		t.Fatalf("queued job ended with %v", err)
	}
	mod := core.Actor{User: mallory.User, Role: core.RoleModerator}
	if err := e.svc.Cancel(context.Background(), mod, "running"); err != nil {
		t.Fatal(err)
	}
	if err := <-running; core.ErrorCode(err) != core.CodeCancelled {
		t.Fatalf("running job ended with %v", err)
	}
	for _, k := range []string{"queued", "running"} {
		if j := e.job(t, k); j.State != core.JobRefunded || j.Outcome != core.CodeCancelled {
			t.Errorf("%s: %s / %s, want refunded as cancelled", k, j.State, j.Outcome)
		}
	}
	if a, b := e.remaining(t, alice), e.remaining(t, bob); a != 5 || b != 5 {
		t.Errorf("remaining %d and %d, want 5 and 5 (refunded)", a, b)
	}
	if err := e.svc.Cancel(context.Background(), core.Actor{User: bob}, "queued"); core.ErrorCode(err) != core.CodeNotFound {
		t.Fatalf("cancelling an ended job: %v", err)
	}
}

// TestCancelTooLateOnceDelivering: a picture being sent is not taken back.
func TestCancelTooLateOnceDelivering(t *testing.T) {
	e := newEnv(t, nil)
	inDelivery := make(chan struct{})
	finish := make(chan struct{})
	rep := &fakeReporter{deliver: func(ctx context.Context, d core.Delivery) error {
		close(inDelivery)
		<-finish
		return nil
	}}
	ch := make(chan error, 1)
	if err := e.svc.Submit(context.Background(), req("late", alice, "x"), rep, func(_ core.Receipt, err error) { ch <- err }); err != nil {
		t.Fatal(err)
	}
	<-inDelivery
	if err := e.svc.Cancel(context.Background(), core.Actor{User: alice}, "late"); core.ErrorCode(err) != core.CodeConflict {
		t.Fatalf("cancel during delivery: %v", err)
	}
	close(finish)
	if err := <-ch; err != nil {
		t.Fatal(err)
	}
	if j := e.job(t, "late"); j.State != core.JobCommitted {
		t.Fatalf("state %s", j.State)
	}
}

// TestFailureNotTheUsersGivesBackTheRateToken: after an upstream failure
// the user may try again at once; after a refusal of the prompt they wait.
func TestFailureNotTheUsersGivesBackTheRateToken(t *testing.T) {
	for _, tc := range []struct {
		code     core.Code
		giveBack bool
	}{
		{core.CodeUpstreamFailed, true},
		{core.CodeTimeout, true},
		{core.CodeRefused, false},
	} {
		t.Run(string(tc.code), func(t *testing.T) {
			e := newEnv(t, func(c *core.Config) { c.Rate = rate.Every(time.Hour); c.Burst = 1 })
			e.gen.fn = func(context.Context, core.GenRequest, func(core.GenProgress)) ([]core.Image, error) {
				return nil, &core.Error{Code: tc.code}
			}
			if _, err := e.svc.Imagine(context.Background(), req("first", alice, "x"), &fakeReporter{}); core.ErrorCode(err) != tc.code {
				t.Fatalf("first job: %v", err)
			}
			_, err := e.svc.Imagine(context.Background(), req("again", alice, "x"), &fakeReporter{})
			if limited := core.ErrorCode(err) == core.CodeRateLimited; limited == tc.giveBack {
				t.Fatalf("the retry got %v (token given back: want %t)", err, tc.giveBack)
			}
		})
	}
}

// TestQueueCapZeroMeansNoQueue: with no room to wait, a job beyond the
// running ones is refused at once rather than silently given a queue of 100.
func TestQueueCapZeroMeansNoQueue(t *testing.T) {
	e := newEnv(t, func(c *core.Config) { c.Concurrency = 1; c.QueueCap = 0 })
	release := make(chan struct{})
	e.gen.fn = func(ctx context.Context, _ core.GenRequest, _ func(core.GenProgress)) ([]core.Image, error) {
		<-release
		return []core.Image{pngImage()}, nil
	}
	done := make(chan error, 1)
	if err := e.svc.Submit(context.Background(), req("runs", alice, "x"), &fakeReporter{}, func(_ core.Receipt, err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Submit(context.Background(), req("waits", bob, "x"), &fakeReporter{}, func(core.Receipt, error) {}); core.ErrorCode(err) != core.CodeQueueFull {
		t.Fatalf("second job: %v, want queue full", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := core.NewService(core.Config{Models: []core.Model{{Name: "m"}}, QueueCap: -1}, memory.New(), e.gen); err == nil {
		t.Fatal("a negative queue cap was accepted")
	}
}

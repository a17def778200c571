package core_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/memory"
)

// clock is a time source the test moves.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

const lease = 30 * time.Second

// pair is two instances on one shared ledger, each with its own generator.
type pair struct {
	store *memory.Store
	clock *clock
	a, b  *core.Service
	genA  *fakeGen
}

func newPair(t *testing.T, mod func(*core.Config)) *pair {
	t.Helper()
	p := &pair{store: memory.New(memory.Shared()), clock: &clock{now: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)}, genA: &fakeGen{}}
	cfg := core.Config{
		Models:        []core.Model{{Name: "stable-diffusion", Cost: 1}},
		Rate:          rate.Inf,
		PerUserJobs:   10,
		Concurrency:   4,
		QueueCap:      10,
		JobTimeout:    time.Hour,
		ProgressEvery: time.Hour,
		Lease:         lease,
		Quotas:        core.Quotas{Location: time.UTC, DefaultDaily: 5},
	}
	if mod != nil {
		mod(&cfg)
	}
	for i, svc := range []**core.Service{&p.a, &p.b} {
		c := cfg
		c.Instance = []string{"a", "b"}[i]
		gen := p.genA
		if i == 1 {
			gen = &fakeGen{}
		}
		s, err := core.NewService(c, p.store, gen, core.WithClock(p.clock.Now), core.WithLogger(quiet))
		if err != nil {
			t.Fatal(err)
		}
		*svc = s
	}
	return p
}

// block makes A's generator hold its jobs until the returned func.
func (p *pair) block() (started <-chan struct{}, release func()) {
	s, unblock := make(chan struct{}, 100), make(chan struct{})
	p.genA.fn = func(ctx context.Context, _ core.GenRequest, _ func(core.GenProgress)) ([]core.Image, error) {
		s <- struct{}{}
		select {
		case <-unblock:
			return []core.Image{pngImage()}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var once sync.Once
	return s, func() { once.Do(func() { close(unblock) }) }
}

func (p *pair) remaining(t *testing.T, u core.User) int {
	t.Helper()
	b, err := p.b.Balance(context.Background(), acct(u))
	if err != nil {
		t.Fatal(err)
	}
	return b.Remaining()
}

func (p *pair) job(t *testing.T, key string) core.Job {
	t.Helper()
	j, err := p.b.Job(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// submit starts a job on A that runs until released; it returns when the
// generator has it.
func (p *pair) submit(t *testing.T, key string, u core.User, started <-chan struct{}) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	if err := p.a.Submit(context.Background(), req(key, u, "x"), &fakeReporter{}, func(_ core.Receipt, err error) { done <- err }); err != nil {
		t.Fatal(err)
	}
	<-started
	return done
}

// TestLeaseRenewedWhileTheJobRuns: a job its instance keeps renewing is
// never taken by another, however long it runs; once the renewals stop (the
// instance died), the next instance to look after the lease refunds it, owes
// its user the notice, and holds it to tell them.
func TestLeaseRenewedWhileTheJobRuns(t *testing.T) {
	p := newPair(t, nil)
	started, release := p.block()
	defer release()
	ctx := context.Background()
	done := p.submit(t, "job", alice, started)
	if got := p.remaining(t, alice); got != 4 {
		t.Fatalf("remaining after reserving = %d, want 4", got)
	}
	if j := p.job(t, "job"); j.Owner != "a" || !j.Lease.Equal(p.clock.Now().Add(lease)) {
		t.Fatalf("job owner %q lease %v, want a and now+%s", j.Owner, j.Lease, lease)
	}

	// Three leases long, renewed every third of one.
	for range 9 {
		p.clock.Add(lease / 3)
		p.a.RenewLeasesNow(ctx)
		got, err := p.b.ReclaimNow(ctx)
		if err != nil || len(got) != 0 {
			t.Fatalf("B took a job A is renewing: %v %v", got, err)
		}
	}
	if j := p.job(t, "job"); j.State != core.JobPending || p.remaining(t, alice) != 4 {
		t.Fatalf("after renewals: %s, remaining %d", j.State, p.remaining(t, alice))
	}

	// Renewals keep at least two thirds of a lease ahead.
	lastLease := p.job(t, "job").Lease
	if left := lastLease.Sub(p.clock.Now()); left < lease*2/3 {
		t.Fatalf("after a renewal the lease has %s left, want at least %s", left, lease*2/3)
	}
	// A stops renewing: just before the lease passes nothing happens, at it B takes it.
	p.clock.Add(lastLease.Sub(p.clock.Now()) - time.Nanosecond)
	if got, _ := p.b.ReclaimNow(ctx); len(got) != 0 {
		t.Fatalf("B took the job before its lease passed: %v", got)
	}
	p.clock.Add(time.Nanosecond)
	got, err := p.b.ReclaimNow(ctx)
	if err != nil || len(got) != 1 {
		t.Fatalf("B reclaimed %v, %v; want the job", got, err)
	}
	j := p.job(t, "job")
	if j.State != core.JobRefunded || j.Outcome != core.CodeInterrupted || !j.NoticeOwed || j.Owner != "b" || !j.Lease.After(p.clock.Now()) {
		t.Fatalf("reclaimed job = %+v", j)
	}
	if got[0].Key != "job" || got[0].Outcome != core.CodeInterrupted {
		t.Fatalf("returned %+v", got[0])
	}
	if got := p.remaining(t, alice); got != 5 {
		t.Fatalf("remaining after the refund = %d, want 5", got)
	}
	// A looking again finds nothing: B holds the notice now.
	if again, _ := p.a.ReclaimNow(ctx); len(again) != 0 {
		t.Fatalf("A took B's notice: %v", again)
	}
	// A was not dead after all: its picture goes out, but the refund stands
	// and nothing is charged again.
	release()
	if err := <-done; err != nil {
		t.Fatalf("A's job: %v", err)
	}
	if j := p.job(t, "job"); j.State != core.JobRefunded {
		t.Fatalf("after A delivered: %s, want refunded still", j.State)
	}
	if got := p.remaining(t, alice); got != 5 {
		t.Fatalf("remaining after A delivered = %d, want 5", got)
	}
}

// TestRecoverOnASharedLedgerLeavesLiveJobs: an instance starting next to a
// live one refunds only what has no live owner.
func TestRecoverOnASharedLedgerLeavesLiveJobs(t *testing.T) {
	p := newPair(t, nil)
	started, release := p.block()
	defer release()
	p.submit(t, "live", alice, started)
	l := p.b.Ledger()
	now := p.clock.Now()
	if _, _, err := l.Reserve(context.Background(), core.Job{Key: "dead", Account: acct(bob), Units: 1, Owner: "gone", Lease: now.Add(-time.Second)}, now); err != nil {
		t.Fatal(err)
	}
	jobs, err := p.b.Recover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 1 || jobs[0].Key != "dead" {
		t.Fatalf("recovered %+v, want only the dead instance's job", jobs)
	}
	if p.job(t, "live").State != core.JobPending || p.remaining(t, alice) != 4 {
		t.Fatal("Recover refunded a job its live instance is running")
	}
	if p.job(t, "dead").State != core.JobRefunded || p.remaining(t, bob) != 5 {
		t.Fatal("the dead instance's job was not refunded")
	}
}

// TestTellHoldsTheNoticeLease: while an instance tells a user, it renews
// the notice's lease and nobody else tells them; a notice it could not
// confirm is taken up by some instance once the lease passes.
func TestTellHoldsTheNoticeLease(t *testing.T) {
	p := newPair(t, nil)
	ctx := context.Background()
	now := p.clock.Now()
	if _, _, err := p.b.Ledger().Reserve(ctx, core.Job{Key: "dead", Account: acct(alice), Units: 1, Owner: "gone", Lease: now.Add(-time.Second)}, now); err != nil {
		t.Fatal(err)
	}
	claimed, err := p.b.ReclaimNow(ctx)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("reclaim: %v %v", claimed, err)
	}
	telling, unblock := make(chan struct{}), make(chan struct{})
	told := make(chan struct{})
	go func() {
		defer close(told)
		p.b.Tell(ctx, claimed, func(context.Context, []core.Job) {
			close(telling)
			<-unblock // the platform is slow; the notice is never confirmed
		})
	}()
	<-telling
	for range 6 {
		p.clock.Add(lease / 3)
		p.b.RenewLeasesNow(ctx)
		if got, _ := p.a.ReclaimNow(ctx); len(got) != 0 {
			t.Fatalf("A took a notice B is telling: %v", got)
		}
	}
	close(unblock)
	<-told
	p.clock.Add(lease)
	got, err := p.a.ReclaimNow(ctx)
	if err != nil || len(got) != 1 || got[0].Key != "dead" || !got[0].NoticeOwed {
		t.Fatalf("the unconfirmed notice after its lease: %v %v", got, err)
	}
	if j := p.job(t, "dead"); j.Owner != "a" || j.State != core.JobRefunded {
		t.Fatalf("notice job = %+v", j)
	}
	if got := p.remaining(t, alice); got != 5 {
		t.Fatalf("remaining = %d, want 5: a notice taken over is not refunded twice", got)
	}
}

// TestUserLimitsHoldAcrossInstances: the rate limit and the jobs in flight
// of a user are counted in the ledger, so two instances share them.
func TestUserLimitsHoldAcrossInstances(t *testing.T) {
	t.Run("rate", func(t *testing.T) {
		p := newPair(t, func(c *core.Config) { c.Rate = rate.Every(time.Minute); c.Burst = 2 })
		ctx := context.Background()
		if _, err := p.a.Imagine(ctx, req("1", alice, "x"), &fakeReporter{}); err != nil {
			t.Fatal(err)
		}
		if _, err := p.b.Imagine(ctx, req("2", alice, "x"), &fakeReporter{}); err != nil {
			t.Fatal(err)
		}
		_, err := p.a.Imagine(ctx, req("3", alice, "x"), &fakeReporter{})
		if ce := core.AsError(err); ce.Code != core.CodeRateLimited || ce.RetryAfter != time.Minute {
			t.Fatalf("third job on A after one on each: %v, want rate limited for 1m", err)
		}
		if _, err := p.b.Imagine(ctx, req("4", bob, "x"), &fakeReporter{}); err != nil {
			t.Fatalf("bob has a bucket of his own: %v", err)
		}
		p.clock.Add(time.Minute)
		if _, err := p.b.Imagine(ctx, req("5", alice, "x"), &fakeReporter{}); err != nil {
			t.Fatalf("after a minute's refill: %v", err)
		}
		if got := p.remaining(t, alice); got != 2 {
			t.Fatalf("remaining = %d, want 2 (3 jobs charged)", got)
		}
	})
	t.Run("jobs in flight", func(t *testing.T) {
		p := newPair(t, func(c *core.Config) { c.PerUserJobs = 1 })
		started, release := p.block()
		done := p.submit(t, "running", alice, started)
		_, err := p.b.Imagine(context.Background(), req("second", alice, "x"), &fakeReporter{})
		if core.ErrorCode(err) != core.CodeTooManyJobs {
			t.Fatalf("B with alice's job running on A: %v, want too many jobs", err)
		}
		release()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, err := p.b.Imagine(context.Background(), req("third", alice, "x"), &fakeReporter{}); err != nil {
			t.Fatalf("after A's job ended: %v", err)
		}
	})
	t.Run("a reclaimed job frees its place", func(t *testing.T) {
		p := newPair(t, func(c *core.Config) { c.PerUserJobs = 1 })
		started, release := p.block()
		defer release()
		p.submit(t, "stuck", alice, started)
		p.clock.Add(lease)
		if got, err := p.b.ReclaimNow(context.Background()); err != nil || len(got) != 1 {
			t.Fatalf("reclaim: %v %v", got, err)
		}
		if _, err := p.b.Imagine(context.Background(), req("next", alice, "x"), &fakeReporter{}); err != nil {
			t.Fatalf("after the dead instance's job was refunded: %v", err)
		}
	})
}

// TestModeratorEventActsOnce: a grant carried by one event, delivered to
// both instances, is applied once.
func TestModeratorEventActsOnce(t *testing.T) {
	p := newPair(t, nil)
	mod := core.Actor{User: bob, Role: core.RoleModerator, Event: "telegram:message:1:7"}
	if _, err := p.a.Grant(context.Background(), mod, acct(alice), 3); err != nil {
		t.Fatal(err)
	}
	if _, err := p.b.Grant(context.Background(), mod, acct(alice), 3); core.ErrorCode(err) != core.CodeDuplicate {
		t.Fatalf("the same event on B: %v, want duplicate", err)
	}
	if got := p.remaining(t, alice); got != 8 {
		t.Fatalf("remaining = %d, want 8 (5 + 3 granted once)", got)
	}
	mod.Event = "telegram:message:1:8"
	if _, err := p.b.Grant(context.Background(), mod, acct(alice), 3); err != nil {
		t.Fatalf("another event: %v", err)
	}
	if got := p.remaining(t, alice); got != 11 {
		t.Fatalf("remaining = %d, want 11", got)
	}
}

// TestCancelAskedOnAnotherInstance: a Cancel pressed on an instance that
// is not running the job reaches the one that is, at its next renewal.
func TestCancelAskedOnAnotherInstance(t *testing.T) {
	p := newPair(t, nil)
	started, release := p.block()
	defer release()
	ctx := context.Background()
	done := p.submit(t, "job", alice, started)

	if err := p.b.Cancel(ctx, core.Actor{User: bob, Role: core.RoleUser}, "job"); core.ErrorCode(err) != core.CodeForbidden {
		t.Fatalf("bob cancelling alice's job on B: %v, want forbidden", err)
	}
	if err := p.b.Cancel(ctx, core.Actor{User: alice, Role: core.RoleUser}, "job"); err != nil {
		t.Fatalf("alice cancelling on B: %v", err)
	}
	if j := p.job(t, "job"); j.State != core.JobPending || j.CancelledBy != alice.Key() {
		t.Fatalf("after the cancel on B: %s, cancelled by %q", j.State, j.CancelledBy)
	}
	p.a.RenewLeasesNow(ctx)
	select {
	case err := <-done:
		if core.ErrorCode(err) != core.CodeCancelled {
			t.Fatalf("the job on A ended with %v, want cancelled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("A's renewal did not cancel the job")
	}
	if j := p.job(t, "job"); j.State != core.JobRefunded || j.Outcome != core.CodeCancelled {
		t.Fatalf("job = %s %s, want refunded, cancelled", j.State, j.Outcome)
	}
	if got := p.remaining(t, alice); got != 5 {
		t.Fatalf("remaining = %d, want 5", got)
	}
	if err := p.b.Cancel(ctx, core.Actor{User: alice, Role: core.RoleUser}, "job"); core.ErrorCode(err) != core.CodeNotFound {
		t.Fatalf("cancelling the ended job: %v, want not found", err)
	}
}

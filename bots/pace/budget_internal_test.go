package pace

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// clock is a fake time source; the budget's timers are replaced by step,
// which pumps at the fake time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestBudget(l Limits) (*Budget, *clock) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := NewBudget(l, c.now)
	b.after = func(time.Duration, func()) func() bool { return func() bool { return true } }
	return b, c
}

// step pumps the budget at the current fake time.
func (b *Budget) step() {
	b.mu.Lock()
	grants := b.pumpLocked(b.now())
	b.mu.Unlock()
	run(grants)
}

type grant struct {
	at    time.Time
	chat  Chat
	class Class
	n     int
	label string
}

type recorder struct {
	mu     sync.Mutex
	grants []grant
}

func (r *recorder) ask(b *Budget, chat Chat, c Class, n int, label string) func() bool {
	return b.Ask(Msg{Chat: chat, Class: c, N: n}, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.grants = append(r.grants, grant{at: b.now(), chat: chat, class: c, n: n, label: label})
	})
}

func (r *recorder) labels() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, g := range r.grants {
		out = append(out, g.label)
	}
	return out
}

// TestBudgetStaysWithinTelegramLimits replays every grant of a busy minute
// against Telegram's published limits, as a strict server would count them:
// 30 a second overall (burst 30), 1 a second per chat with a burst of two
// (Telegram allows short bursts; the bot's only one is a result right after
// a status), 20 a minute per group.
func TestBudgetStaysWithinTelegramLimits(t *testing.T) {
	b, c := newTestBudget(Telegram(30))
	rng := rand.New(rand.NewPCG(7, 7))
	rec := &recorder{}
	var chats []Chat
	for i := range 300 {
		chats = append(chats, Chat{ID: fmt.Sprint(i)})
	}
	for i := range 5 {
		chats = append(chats, Chat{ID: fmt.Sprint("g", i), Group: true})
	}
	asked := 0
	for ms := 0; ms < 60_000; ms += 5 {
		for range rng.IntN(3) { // ~40 asks a second: more than the budget
			chat := chats[rng.IntN(len(chats))]
			n := 1
			if rng.IntN(20) == 0 {
				n = 2 + rng.IntN(9) // an album
			}
			rec.ask(b, chat, Class(rng.IntN(3)), n, "")
			asked++
		}
		c.advance(5 * time.Millisecond)
		b.step()
	}
	global := rate.NewLimiter(30, 30)
	perChat := map[Chat]*rate.Limiter{}
	perGroup := map[Chat]*rate.Limiter{}
	for _, g := range rec.grants {
		if !global.AllowN(g.at, g.n) {
			t.Fatalf("over the global limit at %s", g.at)
		}
		if perChat[g.chat] == nil {
			perChat[g.chat] = rate.NewLimiter(1, 2)
			perGroup[g.chat] = rate.NewLimiter(rate.Limit(20.0/60), 20)
		}
		if !perChat[g.chat].AllowN(g.at, 1) {
			t.Fatalf("two messages within a second in chat %s at %s", g.chat.ID, g.at)
		}
		if g.chat.Group && !perGroup[g.chat].AllowN(g.at, 1) {
			t.Fatalf("over 20 a minute in group %s at %s", g.chat.ID, g.at)
		}
	}
	// And it is not idle: the minute's global budget is nearly all spent.
	sent := 0
	for _, g := range rec.grants {
		sent += g.n
	}
	if sent < 30*60*9/10 {
		t.Fatalf("only %d messages in a minute of demand (%d asks)", sent, asked)
	}
}

func TestBudgetServesResultsThenRepliesThenProgress(t *testing.T) {
	b, c := newTestBudget(Limits{Global: Rate{PerSecond: 1, Burst: MaxBatch}})
	rec := &recorder{}
	rec.ask(b, Chat{ID: "drain"}, Result, MaxBatch, "drain") // empties the bucket
	rec.ask(b, Chat{ID: "a"}, Progress, 1, "progress-a")
	rec.ask(b, Chat{ID: "b"}, Reply, 1, "reply-b")
	rec.ask(b, Chat{ID: "c"}, Result, 1, "result-c")
	rec.ask(b, Chat{ID: "d"}, Progress, 1, "progress-d")
	rec.ask(b, Chat{ID: "e"}, Result, 1, "result-e")
	for range 5 {
		c.advance(time.Second)
		b.step()
	}
	want := "[drain result-c result-e reply-b progress-a progress-d]"
	if got := fmt.Sprint(rec.labels()); got != want {
		t.Fatalf("order = %s, want %s", got, want)
	}
}

// TestBudgetOneChatDoesNotHoldOthers: a chat waiting for its own bucket
// lets the others go, and its own asks go in class order.
func TestBudgetOneChatDoesNotHoldOthers(t *testing.T) {
	b, c := newTestBudget(Telegram(30))
	rec := &recorder{}
	busy := Chat{ID: "busy"}
	rec.ask(b, busy, Result, 1, "busy-1")
	rec.ask(b, busy, Progress, 1, "busy-progress")
	rec.ask(b, busy, Result, 1, "busy-2")
	rec.ask(b, busy, Result, 1, "busy-3")
	rec.ask(b, Chat{ID: "other"}, Progress, 1, "other")
	// Two results at once (the result token and the burst), then one per
	// 1.1 s; the status waits until it can leave the results' token.
	if got := fmt.Sprint(rec.labels()); got != "[busy-1 busy-2 other]" {
		t.Fatalf("at once: %s", got)
	}
	c.advance(1100 * time.Millisecond)
	b.step()
	if got := fmt.Sprint(rec.labels()); got != "[busy-1 busy-2 other busy-3]" {
		t.Fatalf("after 1.1 s: %s", got)
	}
	c.advance(1100 * time.Millisecond)
	b.step()
	if got := fmt.Sprint(rec.labels()); got != "[busy-1 busy-2 other busy-3]" {
		t.Fatalf("after 2.2 s the status took the results' token: %s", got)
	}
	c.advance(1100 * time.Millisecond)
	b.step()
	if got := fmt.Sprint(rec.labels()); got != "[busy-1 busy-2 other busy-3 busy-progress]" {
		t.Fatalf("after 3.3 s: %s", got)
	}
}

// TestBudgetGivesStatusesTheirShare: while results keep the overall bucket
// busy, first status messages still get about a tenth of it.
func TestBudgetGivesStatusesTheirShare(t *testing.T) {
	b, c := newTestBudget(Limits{Global: Rate{PerSecond: 30, Burst: MaxBatch}, ProgressShare: 0.1})
	rec := &recorder{}
	for i := range 2000 {
		rec.ask(b, Chat{ID: fmt.Sprint("r", i)}, Result, 1, "result")
		rec.ask(b, Chat{ID: fmt.Sprint("s", i)}, FirstStatus, 1, "status")
	}
	for range 600 { // a minute
		c.advance(100 * time.Millisecond)
		b.step()
	}
	counts := map[string]int{}
	for _, l := range rec.labels() {
		counts[l]++
	}
	if counts["result"]+counts["status"] > 30*60+MaxBatch+1 {
		t.Fatalf("over the budget: %v", counts)
	}
	if counts["status"] < 150 || counts["status"] > 200 {
		t.Fatalf("statuses got %d of %d messages in a minute of results, want about a tenth", counts["status"], counts["result"]+counts["status"])
	}
}

func TestBudgetHoldAndCancel(t *testing.T) {
	b, c := newTestBudget(Telegram(30))
	rec := &recorder{}
	chat := Chat{ID: "x"}
	b.Hold(chat, 3*time.Second)
	rec.ask(b, chat, Result, 1, "held")
	cancel := rec.ask(b, chat, Progress, 1, "cancelled")
	if !cancel() {
		t.Fatal("a queued ask could not be cancelled")
	}
	if cancel() {
		t.Fatal("cancelled twice")
	}
	c.advance(2900 * time.Millisecond)
	b.step()
	if len(rec.labels()) != 0 {
		t.Fatalf("sent during the hold: %v", rec.labels())
	}
	c.advance(200 * time.Millisecond)
	b.step()
	c.advance(5 * time.Second)
	b.step()
	if got := fmt.Sprint(rec.labels()); got != "[held]" {
		t.Fatalf("after the hold: %s", got)
	}
	if cancel := rec.ask(b, Chat{ID: "y"}, Result, 1, "y"); cancel() {
		t.Fatal("a granted ask reported a cancel")
	}
}

func TestBudgetForgetsIdleChats(t *testing.T) {
	b, c := newTestBudget(Telegram(1000))
	for i := range 20000 {
		b.Ask(Msg{Chat: Chat{ID: fmt.Sprint(i)}, Class: Result}, func() {})
		if i%50 == 0 {
			c.advance(100 * time.Millisecond) // 500 a second: all granted
			b.step()
		}
	}
	b.mu.Lock()
	n := len(b.chats)
	b.mu.Unlock()
	if pending := func() int { b.mu.Lock(); defer b.mu.Unlock(); return len(b.high) + len(b.low) + len(b.parked) }(); pending != 0 {
		t.Fatalf("%d chats still waiting", pending)
	}
	// Chats refill within a second (50 of them a tick, 10 ticks), so only
	// the last ones are kept, plus what the doubling rule lets pile up.
	if n > 2048+500 {
		t.Fatalf("%d chat states kept for 20000 chats seen over time", n)
	}
}

// TestWait uses the real clock: it blocks until granted and gives up with ctx.
func TestWait(t *testing.T) {
	b := NewBudget(Limits{Global: Rate{PerSecond: 50, Burst: MaxBatch}}, nil)
	if err := b.Wait(context.Background(), Msg{Chat: Chat{ID: "a"}, Class: Result, N: MaxBatch}); err != nil {
		t.Fatal(err)
	}
	// The bucket is empty: the next waits about 20 ms, and is granted.
	if err := b.Wait(context.Background(), Msg{Chat: Chat{ID: "a"}, Class: Result}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b2 := NewBudget(Limits{Global: Rate{PerSecond: 0.001, Burst: MaxBatch}}, nil)
	_ = b2.Wait(context.Background(), Msg{Chat: Chat{ID: "a"}, Class: Result, N: MaxBatch})
	if err := b2.Wait(ctx, Msg{Chat: Chat{ID: "a"}, Class: Result}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

// TestBudgetDoesNotSpin: with results and statuses waiting on an empty
// bucket, the budget sleeps until a token comes instead of waking at once.
func TestBudgetDoesNotSpin(t *testing.T) {
	b, c := newTestBudget(Limits{Global: Rate{PerSecond: 30, Burst: MaxBatch}, ProgressShare: 0.1})
	var wakes []time.Duration
	b.after = func(d time.Duration, f func()) func() bool {
		wakes = append(wakes, d)
		return func() bool { return true }
	}
	for i := range 50 {
		b.Ask(Msg{Chat: Chat{ID: fmt.Sprint("r", i)}, Class: Result}, func() {})
		b.Ask(Msg{Chat: Chat{ID: fmt.Sprint("s", i)}, Class: FirstStatus}, func() {})
	}
	for range 100 {
		c.advance(10 * time.Millisecond)
		wakes = wakes[:0]
		b.mu.Lock()
		b.stop = nil // as wake does
		b.mu.Unlock()
		b.step()
		for _, d := range wakes {
			if d <= 0 {
				t.Fatalf("armed a wake in %s: a busy loop", d)
			}
		}
	}
}

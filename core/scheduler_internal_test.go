package core

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// queued is one job waiting in a scheduler under test.
type queued struct {
	mu        sync.Mutex
	positions []int
	release   chan func() // the slot, once admitted
	err       chan error
	cancel    context.CancelFunc
}

func (q *queued) shown() []int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.positions)
}

// enter starts an acquire for user and waits until it is queued (or admitted).
func enter(t *testing.T, s *scheduler, user string, seq uint64) *queued {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	q := &queued{release: make(chan func(), 1), err: make(chan error, 1), cancel: cancel}
	s.mu.Lock()
	before := s.order
	s.mu.Unlock()
	go func() {
		rel, err := s.acquire(ctx, user, seq, func(p int) {
			q.mu.Lock()
			q.positions = append(q.positions, p)
			q.mu.Unlock()
		})
		if err != nil {
			q.err <- err
			return
		}
		q.release <- rel
	}()
	waitUntil(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.order > before || len(q.release) > 0
	})
	return q
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func admitted(t *testing.T, q *queued) func() {
	t.Helper()
	select {
	case rel := <-q.release:
		return rel
	case err := <-q.err:
		t.Fatalf("acquire failed: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("not admitted")
	}
	return nil
}

// hold takes the only slot of a one-slot scheduler.
func hold(t *testing.T, s *scheduler, user string) func() {
	t.Helper()
	rel, err := s.acquire(t.Context(), user, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

// drain admits the queue one job at a time and returns who ran, in order.
func drain(t *testing.T, first func(), jobs map[string]*queued, n int) []string {
	t.Helper()
	first()
	var order []string
	for len(order) < n {
		found := false
		for name, q := range jobs {
			select {
			case rel := <-q.release:
				order = append(order, name)
				delete(jobs, name)
				rel()
				found = true
			default:
			}
		}
		if !found {
			time.Sleep(100 * time.Microsecond)
		}
	}
	return order
}

func TestSchedulerArrivalOrderWithinARound(t *testing.T) {
	s := newScheduler(1)
	rel := hold(t, s, "holder")
	jobs := map[string]*queued{}
	// They reach the queue in a scrambled order; each user has one job, so
	// all share one round and go by arrival.
	for _, seq := range []uint64{7, 3, 9, 1, 5, 2, 8, 4, 6} {
		jobs[fmt.Sprint(seq)] = enter(t, s, "u"+fmt.Sprint(seq), seq)
	}
	got := drain(t, rel, jobs, 9)
	if want := []string{"1", "2", "3", "4", "5", "6", "7", "8", "9"}; !slices.Equal(got, want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
}

func TestSchedulerRoundRobinOverUsers(t *testing.T) {
	s := newScheduler(1)
	rel := hold(t, s, "heavy") // heavy's job of round 0 runs
	jobs := map[string]*queued{}
	seq := uint64(0)
	for i := range 5 {
		seq++
		jobs["h"+fmt.Sprint(i+1)] = enter(t, s, "heavy", seq)
	}
	for _, u := range []string{"a", "b", "c"} {
		seq++
		jobs[u] = enter(t, s, u, seq)
	}
	seq++
	jobs["a2"] = enter(t, s, "a", seq)
	got := drain(t, rel, jobs, 9)
	// heavy stood in line first; after each turn a user with more jobs goes
	// to the back, behind everyone who arrived meanwhile.
	if want := []string{"h1", "a", "b", "c", "h2", "a2", "h3", "h4", "h5"}; !slices.Equal(got, want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
}

// TestSchedulerHeavyUserCostsOthersAtMostOneSlot: 100 light users behind a
// user with 500 queued jobs start no later than if the heavy user were absent,
// plus the one slot the heavy user's current round holds.
func TestSchedulerHeavyUserCostsOthersAtMostOneSlot(t *testing.T) {
	s := newScheduler(4)
	var rels []func()
	for range 4 {
		rels = append(rels, hold(t, s, fmt.Sprint("filler", len(rels))))
	}
	s.mu.Lock()
	var heavy []*waiter
	for i := range 500 {
		w, _ := s.join("heavy", uint64(i+1), nil)
		heavy = append(heavy, w)
	}
	var light []*waiter
	for i := range 100 {
		w, _ := s.join("light"+strconv.Itoa(i), uint64(1000+i), nil)
		light = append(light, w)
	}
	worst := 0
	for _, w := range light {
		worst = max(worst, s.position(w))
	}
	s.mu.Unlock()
	// Alone, the 100th light user would be at 100; the heavy user's first
	// job shares their round and is ahead of them all.
	if worst > 101 {
		t.Fatalf("the last light user is at %d, want ≤ 101", worst)
	}
	if p := func() int { s.mu.Lock(); defer s.mu.Unlock(); return s.position(heavy[1]) }(); p != 102 {
		t.Fatalf("heavy's second job at %d, want 102 (after every light user)", p)
	}
	for _, r := range rels {
		r()
	}
}

func TestSchedulerShowsPositionsThatMatter(t *testing.T) {
	s := newScheduler(1)
	rel := hold(t, s, "holder")
	const n = 350
	jobs := map[string]*queued{}
	for i := range n {
		jobs[fmt.Sprint(i)] = enter(t, s, fmt.Sprint("u", i), uint64(i+1))
	}
	last := jobs[fmt.Sprint(n-1)]
	all := map[string]*queued{}
	for k, v := range jobs {
		all[k] = v
	}
	drain(t, rel, jobs, n)
	// Past a hundred the position is shown again at round numbers, halving.
	want := []int{350, 99, 89, 79, 69, 59, 49, 39, 29, 19, 9, 8, 7, 6, 5, 4, 3, 2, 1}
	if got := last.shown(); !slices.Equal(got, want) {
		t.Fatalf("the last waiter was shown %v, want %v", got, want)
	}
	// A bounded number of updates per waiter, not one per job ahead.
	total := 0
	for _, q := range all {
		total += len(q.shown())
	}
	if total > n*19 {
		t.Fatalf("%d position updates for %d waiters", total, n)
	}
}

func TestSchedulerRefreshResendsAChangedPosition(t *testing.T) {
	s := newScheduler(1)
	s.refreshEvery = 10 * time.Millisecond
	rel := hold(t, s, "holder")
	h1 := enter(t, s, "later", 5)
	enter(t, s, "earlier", 2) // arrived first, reached the queue second
	waitUntil(t, func() bool { return slices.Equal(h1.shown(), []int{1, 2}) })
	rel()
}

func TestSchedulerCancelledWaiterLeavesNoSlotBehind(t *testing.T) {
	s := newScheduler(1)
	rel := hold(t, s, "holder")
	a := enter(t, s, "a", 1)
	b := enter(t, s, "b", 2)
	a.cancel()
	if err := <-a.err; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled acquire: %v", err)
	}
	if got := b.shown(); got[len(got)-1] != 1 {
		t.Errorf("b's positions after a left: %v", got)
	}
	rel()
	admitted(t, b)() // b got the slot a would have had, and gives it back
	// Nothing holds a slot now: the next job starts at once.
	done := make(chan struct{})
	go func() {
		r, err := s.acquire(t.Context(), "c", 3, nil)
		if err == nil {
			r()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a slot leaked: the next job waits")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running != 0 || s.waiting != 0 || len(s.users)+s.line.len()+len(s.watches) != 0 {
		t.Fatalf("running %d waiting %d users %d line %d watches %d", s.running, s.waiting, len(s.users), s.line.len(), len(s.watches))
	}
}

func TestSchedulerCloseWakesWaiters(t *testing.T) {
	s := newScheduler(1)
	rel := hold(t, s, "holder")
	var qs []*queued
	for i := range 3 {
		qs = append(qs, enter(t, s, fmt.Sprint("u", i), uint64(i+1)))
	}
	s.close()
	for _, q := range qs {
		select {
		case err := <-q.err:
			if ErrorCode(err) != CodeShuttingDown {
				t.Fatalf("err = %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a queued job was not woken by close")
		}
	}
	if _, err := s.acquire(t.Context(), "late", 9, nil); ErrorCode(err) != CodeShuttingDown {
		t.Fatalf("after close: %v", err)
	}
	rel() // the running job still ends normally
}

func TestNextShown(t *testing.T) {
	for _, tc := range []struct{ p, want int }{
		{1, 0}, {2, 1}, {9, 8}, {10, 9}, {11, 9}, {42, 39}, {99, 89}, {100, 99}, {199, 99}, {398, 199}, {500, 199}, {998, 499}, {1000, 499}, {2500, 999}, {3000, 999}, {12000, 4999},
	} {
		if got := nextShown(tc.p); got != tc.want {
			t.Errorf("nextShown(%d) = %d, want %d", tc.p, got, tc.want)
		}
	}
}

// BenchmarkScheduler measures one enqueue plus one dequeue (with the
// position bookkeeping both trigger) with n jobs already waiting, for a crowd
// with one job each and for users with two: the cost must not grow with n.
func BenchmarkScheduler(b *testing.B) {
	for _, perUser := range []int{1, 2} {
		for _, n := range []int{100, 1000, 10000} {
			b.Run(fmt.Sprintf("jobs_per_user=%d/waiters=%d", perUser, n), func(b *testing.B) {
				s := newScheduler(1)
				s.refreshEvery = 0
				s.running = 1
				s.mu.Lock()
				seq := uint64(0)
				for i := range n {
					seq++
					s.join("u"+strconv.Itoa(i/perUser), seq, nil)
				}
				s.mu.Unlock()
				users := make([]string, b.N)
				for i := range users {
					users[i] = "v" + strconv.Itoa(i/perUser)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					seq++
					s.mu.Lock()
					_, first := s.join(users[i], seq, nil)
					s.running--
					ps := s.dispatch()
					ps = append(ps, s.due()...)
					s.mu.Unlock()
					first.send()
					ps.send()
				}
			})
		}
	}
}

// TestSchedulerPositionIsServiceOrder checks position against the order
// dispatch really serves, on random queues: users with one job and with
// several, arrivals out of order, cancellations.
func TestSchedulerPositionIsServiceOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		s := newScheduler(1)
		s.refreshEvery = 0
		s.running = 1
		s.mu.Lock()
		var ws []*waiter
		n := 1 + rng.IntN(60)
		for i := range n {
			user := fmt.Sprint("u", rng.IntN(1+n/3))
			seq := uint64(i*3 + rng.IntN(5)) // roughly in order, sometimes not
			w, _ := s.join(user, seq, nil)
			ws = append(ws, w)
		}
		for _, w := range ws {
			if rng.IntN(6) == 0 {
				s.remove(w)
			}
		}
		want := map[*waiter]int{}
		for _, w := range ws {
			if !w.done {
				want[w] = s.position(w)
			}
		}
		for place := 1; s.waiting > 0; place++ {
			s.running--
			s.dispatch()
			var got *waiter
			for _, w := range ws {
				if w.granted && want[w] != 0 {
					got = w
				}
			}
			if got == nil || want[got] != place {
				s.mu.Unlock()
				t.Fatalf("round %d: place %d went to a job whose position was %d", round, place, want[got])
			}
			delete(want, got)
		}
		s.mu.Unlock()
	}
}

// TestSchedulerKeepsASlotForAnEarlierArrival: a job that arrived later but
// reached the queue first does not take the free slot from an earlier one
// still reserving; an arrival given up, or gone past its grace, frees it.
func TestSchedulerKeepsASlotForAnEarlierArrival(t *testing.T) {
	s := newScheduler(1)
	first, second := s.arrive(), s.arrive()
	late := enter(t, s, "b", second)
	select {
	case <-late.release:
		t.Fatal("the later arrival took the slot kept for the earlier one")
	case <-time.After(20 * time.Millisecond):
	}
	early := enter(t, s, "a", first)
	admitted(t, early)()
	admitted(t, late)()

	// Given up: the next one goes at once.
	gone, next := s.arrive(), s.arrive()
	q := enter(t, s, "c", next)
	s.resolve(gone)
	admitted(t, q)()

	// Never heard of again: the grace runs out.
	s.grace = 30 * time.Millisecond
	s.arrive()
	q = enter(t, s, "d", s.arrive())
	admitted(t, q)()
}

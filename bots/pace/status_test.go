package pace_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/bots/pace"
)

type sends struct {
	mu    sync.Mutex
	texts []string
	gate  chan struct{} // when set, each send waits for a value
}

func (s *sends) send(ctx context.Context, text string) error {
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.texts = append(s.texts, text)
	return nil
}

func (s *sends) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.texts)
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestStatusMergesUpdatesIntoTheLatest(t *testing.T) {
	b := pace.NewBudget(pace.Limits{}, nil)
	s := &sends{gate: make(chan struct{})}
	st := b.NewStatus(pace.Chat{ID: "1"}, 0, 0, s.send)
	st.Set("a")
	time.Sleep(10 * time.Millisecond) // "a" is being sent
	st.Set("b")
	st.Set("c")
	s.gate <- struct{}{}
	s.gate <- struct{}{}
	eventually(t, func() bool { return st.Shown() == "c" })
	st.Close()
	st.Set("d")
	if got := s.got(); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("sent %v, want [a c]: b was merged into c, d came after Close", got)
	}
}

func TestStatusKeepsItsInterval(t *testing.T) {
	b := pace.NewBudget(pace.Limits{}, nil)
	s := &sends{}
	st := b.NewStatus(pace.Chat{ID: "1"}, 0, time.Hour, s.send)
	st.Set("a")
	eventually(t, func() bool { return st.Shown() == "a" })
	st.Set("b")
	time.Sleep(20 * time.Millisecond)
	st.Close()
	if got := s.got(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("sent %v within the interval", got)
	}
}

// TestStatusWaitsBehindResults: with the budget short, the status is sent
// only after the results waiting for it, and not at all once closed.
func TestStatusWaitsBehindResults(t *testing.T) {
	b := pace.NewBudget(pace.Limits{Global: pace.Rate{PerSecond: 5, Burst: pace.MaxBatch}}, nil)
	if err := b.Wait(context.Background(), pace.Msg{Chat: pace.Chat{ID: "x"}, Class: pace.Result, N: pace.MaxBatch}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	note := func(s string) {
		mu.Lock()
		order = append(order, s)
		mu.Unlock()
	}
	st := b.NewStatus(pace.Chat{ID: "s"}, 0, 0, func(context.Context, string) error { note("status"); return nil })
	st.Set("queued")
	var wg sync.WaitGroup
	for _, id := range []string{"r1", "r2", "r3"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Wait(context.Background(), pace.Msg{Chat: pace.Chat{ID: id}, Class: pace.Result}); err == nil {
				note(id)
			}
		}()
	}
	wg.Wait()
	eventually(t, func() bool { return st.Shown() == "queued" })
	mu.Lock()
	defer mu.Unlock()
	if order[len(order)-1] != "status" {
		t.Fatalf("order %v: the status went before a result", order)
	}

	closed := b.NewStatus(pace.Chat{ID: "c"}, 0, 0, func(context.Context, string) error { t.Error("sent after Close"); return nil })
	_ = b.Wait(context.Background(), pace.Msg{Chat: pace.Chat{ID: "x"}, Class: pace.Result, N: pace.MaxBatch})
	closed.Set("never")
	closed.Close()
	time.Sleep(300 * time.Millisecond) // the bucket refills: nothing may go now
}

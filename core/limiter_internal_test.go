package core

import (
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestKeyedLimiterEvictsIdle(t *testing.T) {
	l := newKeyedLimiter(rate.Every(10*time.Second), 2) // full again after 20 s idle
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 1000 {
		if wait, _ := l.reserve(string(rune('a'+i%26))+string(rune(i)), now); wait != 0 {
			t.Fatalf("first token refused")
		}
	}
	if l.len() != 1000 {
		t.Fatalf("entries = %d", l.len())
	}
	// Two tokens used: the third must wait 10 s.
	l.reserve("x", now)
	l.reserve("x", now)
	if wait, _ := l.reserve("x", now); wait != 10*time.Second {
		t.Fatalf("wait = %s", wait)
	}
	later := now.Add(21 * time.Second)
	l.reserve("y", later)
	if l.len() != 1 {
		t.Fatalf("entries after idle sweep = %d, want 1", l.len())
	}
	// An evicted key starts with a full bucket, as it would have had anyway.
	for range 2 {
		if wait, _ := l.reserve("x", later); wait != 0 {
			t.Fatal("evicted key not full")
		}
	}
}

func TestKeyedLimiterCancelRestoresToken(t *testing.T) {
	l := newKeyedLimiter(rate.Every(time.Minute), 1)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	_, cancel := l.reserve("u", now)
	cancel() // e.g. the job was refused for quota: the attempt should not count
	if wait, _ := l.reserve("u", now); wait != 0 {
		t.Fatalf("token not restored, wait %s", wait)
	}
}

// TestKeyedLimiterGiveBackLater: a token given back a minute later lets the
// next request through at once, and does not rewind the bucket: the one
// after that waits as if the failed request had never been made.
func TestKeyedLimiterGiveBackLater(t *testing.T) {
	l := newKeyedLimiter(rate.Every(time.Minute), 1)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if wait, _ := l.reserve("u", t0); wait != 0 {
		t.Fatal("first request refused")
	}
	later := t0.Add(30 * time.Second)
	if wait, _ := l.reserve("u", later); wait != 30*time.Second {
		t.Fatalf("second request waits %s, want 30s", wait)
	}
	l.giveBack("u") // the first job failed upstream
	if wait, _ := l.reserve("u", later); wait != 0 {
		t.Fatalf("after the give-back: wait %s", wait)
	}
	if wait, _ := l.reserve("u", later); wait != 30*time.Second {
		t.Fatalf("the bucket was rewound: wait %s, want 30s", wait)
	}
	for range 5 {
		l.giveBack("u")
	}
	l.mu.Lock()
	c := l.entries["u"].credits
	l.mu.Unlock()
	if c != 1 {
		t.Fatalf("credits %d, want capped at the burst", c)
	}
}

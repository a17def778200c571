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

package main

import (
	"log/slog"
	"testing"
	"time"
)

// TestSmoke runs the whole tool — build, real binary, both fakes, ledger
// check — on a small crowd. Telegram's limits are off: the test is about
// the harness, and the bot's handling of 429s is measured by real runs, not
// asserted here.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the bot")
	}
	cfg := defaultConfig()
	cfg.Users, cfg.Latency, cfg.Concurrency = 40, 200*time.Millisecond, 8
	cfg.Limits = false
	cfg.Timeout = 20 * time.Second
	rep, err := Run(t.Context(), cfg, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Delivered != cfg.Users || rep.Unanswered != 0 {
		t.Errorf("delivered %d of %d, unanswered %d (%s)", rep.Delivered, cfg.Users, rep.Unanswered, rep.Outcome)
	}
	l := rep.Ledger
	if l.Error != "" || l.UnitsLost != 0 || l.Pending != 0 || l.DoubleCharges != 0 || l.CommittedNoPhoto != 0 || l.Committed != cfg.Users {
		t.Errorf("ledger check: %+v", l)
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems: %v", rep.Problems)
	}
	if rep.Gateway.Requests != int64(cfg.Users) || rep.CPUSeconds <= 0 || rep.PeakRSSBytes <= 0 {
		t.Errorf("gateway %d requests, cpu %.2fs, rss %d", rep.Gateway.Requests, rep.CPUSeconds, rep.PeakRSSBytes)
	}
}

// TestSmokeKill covers kill mode: one SIGKILL and restart mid-run, after
// which every user is still answered and no unit or job is lost or doubled.
func TestSmokeKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the bot")
	}
	cfg := defaultConfig()
	cfg.Users, cfg.Latency, cfg.Concurrency = 40, 200*time.Millisecond, 8
	cfg.Limits = false
	cfg.Kill = 1
	cfg.Timeout = 20 * time.Second
	rep, err := Run(t.Context(), cfg, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	l := rep.Ledger
	switch {
	case rep.Processes < 2:
		t.Errorf("%d process(es): the kill did not happen", rep.Processes)
	case rep.Unanswered != 0:
		t.Errorf("%d job(s) unanswered (%s)", rep.Unanswered, rep.Outcome)
	case l.Error != "" || l.UnitsLost != 0 || l.Pending != 0 || l.DoubleCharges != 0:
		t.Errorf("ledger check: %+v", l)
	case len(rep.Gateway.GeneratedTwice) != 0 || rep.DuplicatePhoto != 0:
		t.Errorf("generated twice %v, duplicate photos %d", rep.Gateway.GeneratedTwice, rep.DuplicatePhoto)
	}
}

func TestSendLimiter(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	t.Run("private chat: one a second, bursts of two", func(t *testing.T) {
		l := newSendLimiter(30, 20*time.Millisecond)
		for i, at := range []time.Duration{0, 100 * time.Millisecond} {
			if w := l.take(1, 1, t0.Add(at)); w != 0 {
				t.Fatalf("send %d of the burst: wait %s", i+1, w)
			}
		}
		if w := l.take(1, 1, t0.Add(500*time.Millisecond)); w <= 0 || retryAfterSeconds(w) != 1 {
			t.Fatalf("third after 0.5s: wait %s", w)
		}
		// Within the 20 ms tolerance.
		if w := l.take(1, 1, t0.Add(990*time.Millisecond)); w != 0 {
			t.Fatalf("after 0.99s: wait %s", w)
		}
		if w := l.take(2, 1, t0); w != 0 {
			t.Fatalf("another chat: wait %s", w)
		}
	})
	t.Run("global: 30 a second", func(t *testing.T) {
		l := newSendLimiter(30, 20*time.Millisecond)
		for i := range 30 {
			if w := l.take(int64(100+i), 1, t0); w != 0 {
				t.Fatalf("send %d: wait %s", i, w)
			}
		}
		if w := l.take(999, 1, t0); w == 0 {
			t.Fatal("31st send in the same instant was accepted")
		}
		// A refused call spends nothing: chat 999 is still free later.
		if w := l.take(999, 1, t0.Add(40*time.Millisecond)); w != 0 {
			t.Fatalf("after a token came back: wait %s", w)
		}
	})
	t.Run("group: 20 a minute", func(t *testing.T) {
		l := newSendLimiter(1000, 20*time.Millisecond)
		// One attempt a second for a minute: the burst of 20, then one
		// every 3 s as the bucket refills.
		accepted := 0
		for i := range 60 {
			if l.take(-100, 1, t0.Add(time.Duration(i)*time.Second)) == 0 {
				accepted++
			}
		}
		if accepted < 38 || accepted > 41 {
			t.Fatalf("accepted %d of 60 in a minute, want about 40", accepted)
		}
	})
}

func TestParseBurst(t *testing.T) {
	b, err := parseBurst("every=20s,for=2s")
	if err != nil || b.Every != 20*time.Second || b.For != 2*time.Second {
		t.Fatalf("parseBurst = %+v, %v", b, err)
	}
	origin := time.Unix(0, 0)
	if !b.active(origin, origin.Add(41*time.Second)) || b.active(origin, origin.Add(43*time.Second)) {
		t.Fatal("windows misplaced")
	}
	for _, bad := range []string{"every=2s", "every=2s,for=2s", "each=20s,for=2s", "every=x,for=1s"} {
		if _, err := parseBurst(bad); err == nil {
			t.Errorf("parseBurst(%q) accepted", bad)
		}
	}
}

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

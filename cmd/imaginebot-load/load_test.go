package main

import (
	"log/slog"
	"strings"
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

// TestSmokeDiscord runs the Discord mode end to end on a small crowd:
// signed interactions to the real binary's http.listen, the fake REST API
// enforcing Discord's 50 requests/s, every interaction acknowledged with a
// deferred reply and then edited into its picture, each charged once.
func TestSmokeDiscord(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the bot")
	}
	cfg := defaultConfig()
	cfg.Platform = platformDiscord
	cfg.Users, cfg.Latency, cfg.Concurrency = 40, 200*time.Millisecond, 8
	cfg.Timeout = 20 * time.Second
	rep, err := Run(t.Context(), cfg, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	d := rep.Discord
	switch {
	case d == nil:
		t.Fatal("no Discord figures")
	case d.Acks[ackDeferred] != cfg.Users || d.AckLatency.N != cfg.Users || d.AcksLate != 0:
		t.Errorf("acks %v, latency %+v, late %d", d.Acks, d.AckLatency, d.AcksLate)
	case rep.Delivered != cfg.Users || rep.Unanswered != 0 || d.Delivery.N != cfg.Users:
		t.Errorf("delivered %d of %d, unanswered %d (%s)", rep.Delivered, cfg.Users, rep.Unanswered, rep.Outcome)
	case rep.Limited429 != 0 || rep.Unattributed != 0:
		t.Errorf("%d 429s, %d edits of no interaction", rep.Limited429, rep.Unattributed)
	}
	l := rep.Ledger
	if l.Error != "" || l.UnitsLost != 0 || l.Pending != 0 || l.DoubleCharges != 0 || l.CommittedNoPhoto != 0 || l.Committed != cfg.Users {
		t.Errorf("ledger check: %+v", l)
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems: %v", rep.Problems)
	}
}

// -check fails a Discord run on any 429, an acknowledgement at or over 3 s,
// or one that is neither a deferred reply nor an ephemeral refusal.
func TestDiscordProblems(t *testing.T) {
	ok := func() *Report {
		return &Report{ExitCode: 0, Discord: &discordFigures{Acks: map[string]int{ackDeferred: 9, ackEphemeral: 1}}}
	}
	for _, tc := range []struct {
		name string
		mod  func(*Report)
		want string // in the one problem expected; "" = none
	}{
		{"clean", func(*Report) {}, ""},
		{"a 429", func(r *Report) { r.Limited429, r.Discord.Refused429 = 1, 1 }, "429"},
		{"a late ack", func(r *Report) { r.Discord.AcksLate = 1 }, "acknowledged after 3s"},
		{"a pong for an imagine", func(r *Report) { r.Discord.Acks["type 1 flags 0"] = 1 }, "not answered with a deferred reply"},
		{"a failed POST", func(r *Report) { r.Discord.Acks["HTTP 401: invalid request signature"] = 1 }, "not answered with a deferred reply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ok()
			tc.mod(r)
			r.problems(Config{Platform: platformDiscord})
			switch {
			case tc.want == "" && len(r.Problems) != 0:
				t.Errorf("problems %v, want none", r.Problems)
			case tc.want != "" && (len(r.Problems) != 1 || !strings.Contains(r.Problems[0], tc.want)):
				t.Errorf("problems %v, want one about %q", r.Problems, tc.want)
			}
		})
	}
}

func TestValidatePlatform(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		ok   bool
	}{
		{"telegram by default", func(*Config) {}, true},
		{"discord", func(c *Config) { c.Platform = platformDiscord }, true},
		{"discord with REST latency", func(c *Config) { c.Platform, c.DiscordLatency = platformDiscord, 100*time.Millisecond }, true},
		{"discord with kills", func(c *Config) { c.Platform, c.Kill = platformDiscord, 1 }, false},
		{"discord with groups", func(c *Config) { c.Platform, c.Groups = platformDiscord, 3 }, false},
		{"discord with 429 bursts", func(c *Config) { c.Platform, c.Burst429Spec = platformDiscord, "every=20s,for=2s" }, false},
		{"REST latency on telegram", func(c *Config) { c.DiscordLatency = time.Second }, false},
		{"unknown platform", func(c *Config) { c.Platform = "matrix" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := defaultConfig()
			tc.mod(&c)
			if err := c.validate(); (err == nil) != tc.ok {
				t.Errorf("validate = %v, want ok %t", err, tc.ok)
			}
		})
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

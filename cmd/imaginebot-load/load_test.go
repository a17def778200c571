package main

import (
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/storage/postgres/pgtest"
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
		{"discord on postgres", func(c *Config) { c.Platform, c.Postgres = platformDiscord, true }, true},
		{"telegram on postgres", func(c *Config) { c.Postgres = true }, true},
		{"telegram on postgres with kills", func(c *Config) { c.Postgres, c.Kill = true, 2 }, true},
		{"two instances", func(c *Config) { c.Platform, c.Postgres, c.Instances = platformDiscord, true, 2 }, true},
		{"two instances with kills", func(c *Config) { c.Platform, c.Postgres, c.Instances, c.Kill = platformDiscord, true, 2, 2 }, true},
		{"one instance on postgres with kills", func(c *Config) { c.Platform, c.Postgres, c.Kill = platformDiscord, true, 1 }, false},
		{"two instances on bbolt", func(c *Config) { c.Platform, c.Instances = platformDiscord, 2 }, false},
		{"two instances on telegram", func(c *Config) { c.Postgres, c.Instances = true, 2 }, false},
		{"-dsn is -postgres", func(c *Config) { c.Platform, c.DSN, c.Instances = platformDiscord, "postgres://u@127.0.0.1/db", 2 }, true},
		{"no instances", func(c *Config) { c.Instances = 0 }, false},
		{"a lease on bbolt", func(c *Config) { c.JobLease = 3 * time.Second }, false},
		{"a lease too short", func(c *Config) { c.Postgres, c.JobLease = true, 100*time.Millisecond }, false},
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

// sharedRun runs cfg on PostgreSQL, skipping the test where no server can
// be had (pgtest's rules: IMAGINEBOT_TEST_POSTGRES=1 makes that a failure,
// =0 skips even where one could).
func sharedRun(t *testing.T, cfg Config) *Report {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the bot and PostgreSQL")
	}
	if os.Getenv(pgtest.EnvRequire) == "0" {
		t.Skipf("PostgreSQL tests skipped: %s=0", pgtest.EnvRequire)
	}
	rep, err := Run(t.Context(), cfg, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if errors.Is(err, pgtest.ErrUnavailable) && os.Getenv(pgtest.EnvRequire) != "1" {
		t.Skipf("PostgreSQL unavailable: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func sharedConfig() Config {
	cfg := defaultConfig()
	cfg.Platform, cfg.Postgres, cfg.Instances = platformDiscord, true, 2
	cfg.Users, cfg.Latency, cfg.Concurrency = 50, 200*time.Millisecond, 8
	cfg.Timeout = time.Minute
	return cfg
}

// TestSmokeShared runs two instances on one PostgreSQL ledger behind the
// fake load balancer: the interactions split between them, every one
// deferred and delivered, each job charged once, and the ledger check done
// on PostgreSQL.
func TestSmokeShared(t *testing.T) {
	cfg := sharedConfig()
	rep := sharedRun(t, cfg)
	if rep.Setup.Ledger != "postgres" || len(rep.Instances) != 2 {
		t.Fatalf("ledger %q, %d instance figures", rep.Setup.Ledger, len(rep.Instances))
	}
	d := rep.Discord
	switch {
	case d == nil:
		t.Fatal("no Discord figures")
	case d.Acks[ackDeferred] != cfg.Users:
		t.Errorf("acks %v", d.Acks)
	case rep.Delivered != cfg.Users || rep.Unanswered != 0:
		t.Errorf("delivered %d of %d, unanswered %d (%s)", rep.Delivered, cfg.Users, rep.Unanswered, rep.Outcome)
	}
	l := rep.Ledger
	if l.Error != "" || l.UnitsLost != 0 || l.Pending != 0 || l.DoubleCharges != 0 || l.CommittedNoPhoto != 0 || l.Committed != cfg.Users {
		t.Errorf("ledger check: %+v", l)
	}
	interactions, committed := 0, 0
	for _, in := range rep.Instances {
		if in.Interactions == 0 || in.Processes != 1 || in.CPUSeconds <= 0 || in.PeakRSSBytes <= 0 {
			t.Errorf("instance %+v: took nothing or cost nothing", in)
		}
		interactions += in.Interactions
		committed += in.Committed
	}
	if interactions != cfg.Users || committed != cfg.Users {
		t.Errorf("the instances took %d interactions and delivered %d jobs, want %d each", interactions, committed, cfg.Users)
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems: %v", rep.Problems)
	}
}

// TestSmokeSharedKill kills one of two instances mid-run: the survivor
// takes the new interactions, refunds the killed one's jobs once their
// lease has passed and tells their users; every user is answered and no
// unit is lost or charged twice.
func TestSmokeSharedKill(t *testing.T) {
	cfg := sharedConfig()
	cfg.Users, cfg.Latency = 100, 500*time.Millisecond
	cfg.Kill = 1
	rep := sharedRun(t, cfg)
	killed, tookOver := 0, 0
	for _, in := range rep.Instances {
		killed += in.Killed
		tookOver += in.TookOver
	}
	l := rep.Ledger
	switch {
	case killed != 1:
		t.Errorf("%d kill(s), want 1 (instances %+v)", killed, rep.Instances)
	case rep.Unanswered != 0:
		t.Errorf("%d job(s) unanswered (%s)", rep.Unanswered, rep.Outcome)
	case l.Error != "" || l.UnitsLost != 0 || l.Pending != 0 || l.DoubleCharges != 0 || l.CommittedNoPhoto != 0:
		t.Errorf("ledger check: %+v", l)
	case len(rep.Gateway.GeneratedTwice) != 0 || rep.DuplicatePhoto != 0:
		t.Errorf("generated twice %v, duplicate photos %d", rep.Gateway.GeneratedTwice, rep.DuplicatePhoto)
	case l.Committed+l.Refunded != cfg.Users:
		t.Errorf("committed %d + refunded %d, want %d jobs", l.Committed, l.Refunded, cfg.Users)
	case tookOver != rep.Interrupted.ToldAndRefunded:
		t.Errorf("%d job(s) taken over, %d user(s) told and refunded", tookOver, rep.Interrupted.ToldAndRefunded)
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems: %v", rep.Problems)
	}
}

// The load balancer goes round the instances in rotation only.
func TestBalancerRotation(t *testing.T) {
	d := &discordPlatform{up: []bool{true, true, true}}
	var got []int
	for range 4 {
		got = append(got, d.pick())
	}
	d.up[1] = false
	for range 3 {
		got = append(got, d.pick())
	}
	d.up[0], d.up[2] = false, false
	got = append(got, d.pick())
	want := []int{0, 1, 2, 0, 2, 0, 2, -1}
	if !slices.Equal(got, want) {
		t.Errorf("picks %v, want %v", got, want)
	}
}

func TestOwnerPid(t *testing.T) {
	for owner, want := range map[string]int{
		"host-1234-a1b2c3":      1234,
		"my-pod-7f9c-42-00ff00": 42,
		"":                      0,
		"imaginebot":            0,
		"host-notapid-a1b2c3":   0,
	} {
		if got := ownerPid(owner); got != want {
			t.Errorf("ownerPid(%q) = %d, want %d", owner, got, want)
		}
	}
}

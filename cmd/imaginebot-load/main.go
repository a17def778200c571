// Command imaginebot-load measures the real imaginebot binary under a crowd.
//
// It builds and starts the bot as a separate process against two fakes of
// its own — an OpenAI-compatible gateway with a set latency and failure mix,
// and a chat platform that enforces its published limits — sends N users'
// prompts at once (or at a rate), optionally SIGKILLs and restarts the bot
// during the run, then stops it with SIGTERM, checks the ledger it left and
// prints throughput, latency over the ideal schedule, CPU and memory,
// platform calls per job and what users were told.
//
// The platform is Telegram (default: a Bot API the bot long-polls, with
// Telegram's flood limits) or, with -platform discord, Discord: each user
// is a member of one guild sending /imagine as a signed HTTP interaction to
// the bot's http.listen, and the bot answers through a fake REST API that
// allows 50 requests a second per bot token (interaction webhooks apart, as
// on Discord). Discord runs also measure each interaction's acknowledgement
// (due within 3 s) and the time to the picture.
//
// The ledger is a bbolt file, or with -postgres a PostgreSQL database
// (storage.driver: postgres) on a throwaway server started from the
// PostgreSQL binaries (storage/postgres/pgtest), or on the server -dsn
// names; the end-of-run check is the same on both. On PostgreSQL,
// -instances N starts N bot processes with one config, each on its own
// http.listen, and the Discord platform spreads the interactions over them
// round-robin, as a load balancer would (N > 1 needs -platform discord).
// -kill then kills one instance at a time, round-robin: taken out of
// rotation, its interactions in flight answered, SIGKILLed, down for
// -restart-after while the survivors take the new interactions and, once
// storage.job_lease (3 s in such runs) has passed, refund its jobs and tell
// their users; then restarted and put back. The report adds each
// instance's CPU, RSS, interactions and jobs, the PostgreSQL server's CPU,
// and how long after the kill users were told.
//
//	go run ./cmd/imaginebot-load -n 1000 -c 64 -latency 2s
//	go run ./cmd/imaginebot-load -n 200 -kill 3 -check
//	go run ./cmd/imaginebot-load -platform discord -n 1000 -check
//	go run ./cmd/imaginebot-load -platform discord -n 1000 -postgres -instances 2 -kill 2 -check
//
// Exit status: 0 when the run completed (whatever the figures), 1 on a
// harness error, or with -check when a job was lost, double-charged or not
// answered, or a call exceeded the platform's limits (Discord: any 429, or
// an acknowledgement that was late or not a deferred reply or ephemeral
// refusal); with several instances also when a job refunded as interrupted
// was delivered anyway, or a user told so was charged.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Config is one load run; the flags fill it, tests build it.
type Config struct {
	Users       int
	Concurrency int
	Latency     time.Duration
	ImageKB     int
	Fail5xx     float64
	Hang        float64

	Retries         int
	UpstreamTimeout time.Duration
	JobTimeout      time.Duration

	Platform       string // platformTelegram or platformDiscord
	DiscordLatency time.Duration

	Limits       bool
	TGGlobal     float64
	Burst429Spec string // "every=20s,for=2s"
	Burst429     burstWindows
	TGRate       int // telegram.messages_per_second; 0 = not written
	ExtraConfig  string

	Heavy       int
	Groups      int
	ArrivalRate float64
	Kill        int

	// Postgres puts the ledger on PostgreSQL: a throwaway server pgtest
	// starts, or the one DSN names (a database of the run's own on it).
	Postgres bool
	DSN      string
	// Instances is how many bot processes share the ledger (> 1: Discord
	// only, behind the fake load balancer).
	Instances int
	// JobLease is the bot's storage.job_lease (0: 3 s on PostgreSQL runs
	// with -kill, else the bot's default, not written).
	JobLease time.Duration
	// RestartAfter is how long a killed instance stays down (-instances > 1).
	RestartAfter time.Duration

	Timeout time.Duration
	Idle    time.Duration // give up when nothing moved for this long (0 = never)
	Bin     string
	Keep    bool // keep the temp dir even after a clean run
	Seed    uint64
}

// defaultConfig is the flags' defaults: the bot's own upstream defaults, and
// a crowd of 1000 against 64 slots of a 2 s model.
func defaultConfig() Config {
	return Config{
		Users: 1000, Concurrency: 64, Latency: 2 * time.Second, ImageKB: 8,
		Retries: 2, UpstreamTimeout: 5 * time.Minute, JobTimeout: 5 * time.Minute,
		Platform: platformTelegram, Limits: true, TGGlobal: 30,
		Instances: 1, RestartAfter: 5 * time.Second,
		Timeout: 10 * time.Minute, Idle: time.Minute, Seed: 1,
	}
}

func (c *Config) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Users >= 1, "-n must be at least 1")
	check(c.Concurrency >= 1 && c.Concurrency <= 256, "-c must be 1 to 256 (the bot's limits.concurrency range)")
	check(c.Latency > 0, "-latency must be positive")
	check(c.ImageKB >= 1, "-img-kb must be at least 1")
	check(c.Fail5xx >= 0 && c.Hang >= 0 && c.Fail5xx+c.Hang <= 1, "-fail5xx and -hang are fractions that add up to at most 1")
	check(c.TGGlobal > 0, "-tg-global must be positive")
	check(c.Heavy >= 0 && c.Groups >= 0 && c.Kill >= 0, "-heavy, -groups and -kill must not be negative")
	check(c.ArrivalRate >= 0, "-arrival-rate must not be negative")
	check(c.TGRate >= 0, "-tg-rate must not be negative")
	check(c.Timeout > 0, "-timeout must be positive")
	if c.DSN != "" {
		c.Postgres = true // -dsn names the server -postgres runs on
	}
	check(c.Instances >= 1 && c.Instances <= maxInstances, "-instances must be 1 to %d", maxInstances)
	if c.Instances > 1 {
		check(c.Postgres, "-instances %d needs -postgres: instances share a ledger only on PostgreSQL (bbolt is one file for one process)", c.Instances)
		check(c.Platform == platformDiscord, "-instances %d needs -platform discord: only Discord's HTTP interactions can be spread over instances by the fake load balancer (a Telegram token has one long poll)", c.Instances)
	}
	check(c.JobLease == 0 || c.Postgres, "-job-lease needs -postgres (a lease is what other instances wait for; bbolt has one process)")
	check(c.JobLease == 0 || (c.JobLease >= time.Second && c.JobLease <= time.Hour), "-job-lease must be 1s to 1h (the bot's storage.job_lease range)")
	check(c.RestartAfter >= 0, "-restart-after must not be negative")
	switch c.Platform {
	case platformTelegram:
		check(c.DiscordLatency == 0, "-discord-latency needs -platform discord")
	case platformDiscord:
		// A single bot's listener is gone until it restarts: the POSTs in
		// between would be lost by the harness, not the bot. With several
		// instances the load balancer sends them to the survivors.
		check(c.Kill == 0 || c.Instances > 1, "-kill with -platform discord needs -instances 2 or more (and -postgres): a single bot's interactions have nowhere to go while it is down")
		check(c.Groups == 0, "-groups is Telegram's; -platform discord puts every user in one guild")
		check(c.Burst429Spec == "" && c.TGRate == 0, "-burst429 and -tg-rate are Telegram's")
		check(c.DiscordLatency >= 0, "-discord-latency must not be negative")
	default:
		check(false, "-platform %q: use telegram or discord", c.Platform)
	}
	if c.Burst429Spec != "" {
		b, err := parseBurst(c.Burst429Spec)
		check(err == nil, "-burst429: %v", err)
		c.Burst429 = b
	}
	return errors.Join(errs...)
}

// maxInstances bounds -instances: each is a bot process with its own pool
// of PostgreSQL connections.
const maxInstances = 8

// jobLease is the storage.job_lease written into the bot's config: the
// flag's, or a short one for PostgreSQL runs that kill, so that the jobs of
// a killed process are taken over within the run.
func (c *Config) jobLease() time.Duration {
	switch {
	case c.JobLease > 0:
		return c.JobLease
	case c.Postgres && c.Kill > 0:
		return defaultKillLease
	}
	return 0
}

// defaultKillLease is the lease of PostgreSQL runs with -kill.
const defaultKillLease = 3 * time.Second

// parseBurst reads "every=20s,for=2s".
func parseBurst(s string) (burstWindows, error) {
	var b burstWindows
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		d, err := time.ParseDuration(v)
		if !ok || err != nil || d <= 0 {
			return b, fmt.Errorf("%q: want every=<duration>,for=<duration>", s)
		}
		switch k {
		case "every":
			b.Every = d
		case "for":
			b.For = d
		default:
			return b, fmt.Errorf("%q: unknown key %q (want every and for)", s, k)
		}
	}
	if b.Every <= 0 || b.For <= 0 || b.For >= b.Every {
		return b, fmt.Errorf("%q: want every > for > 0", s)
	}
	return b, nil
}

func main() {
	os.Exit(cliMain(os.Args[1:], os.Stdout, os.Stderr))
}

func cliMain(args []string, stdout, stderr io.Writer) int {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("imaginebot-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.Users, "n", cfg.Users, "simulated users, one prompt each")
	fs.IntVar(&cfg.Concurrency, "c", cfg.Concurrency, "the bot's limits.concurrency (upstream slots)")
	fs.DurationVar(&cfg.Latency, "latency", cfg.Latency, "fake gateway latency per request")
	fs.IntVar(&cfg.ImageKB, "img-kb", cfg.ImageKB, "size of the generated PNG in KiB")
	fs.Float64Var(&cfg.Fail5xx, "fail5xx", 0, "fraction of gateway requests answered 500")
	fs.Float64Var(&cfg.Hang, "hang", 0, "fraction of gateway requests that never answer")
	fs.IntVar(&cfg.Retries, "retries", cfg.Retries, "the bot's upstream.retries")
	fs.DurationVar(&cfg.UpstreamTimeout, "upstream-timeout", cfg.UpstreamTimeout, "the bot's upstream.timeout")
	fs.DurationVar(&cfg.JobTimeout, "job-timeout", cfg.JobTimeout, "the bot's limits.job_timeout")
	fs.StringVar(&cfg.Platform, "platform", cfg.Platform, "the users' chat platform: telegram or discord (signed HTTP interactions)")
	fs.DurationVar(&cfg.DiscordLatency, "discord-latency", 0, "fake Discord REST latency per request (-platform discord)")
	fs.BoolVar(&cfg.Limits, "limits", cfg.Limits, "enforce the platform's limits in its fake (Telegram's flood limits; Discord's 50 requests/s per bot token)")
	fs.Float64Var(&cfg.TGGlobal, "tg-global", cfg.TGGlobal, "global Telegram limit, messages per second")
	fs.StringVar(&cfg.Burst429Spec, "burst429", "", `also answer 429 to every send/edit in windows, e.g. "every=20s,for=2s"`)
	tgRate := fs.Int("tg-rate", 0, "write telegram.messages_per_second: N into the bot's config")
	fs.StringVar(&cfg.ExtraConfig, "extra-config", "", "YAML merged over the generated bot config")
	fs.IntVar(&cfg.Heavy, "heavy", 0, "one extra user sending this many prompts at t0, before the others")
	fs.IntVar(&cfg.Groups, "groups", 0, "put the users into this many group chats (/imagine)")
	fs.Float64Var(&cfg.ArrivalRate, "arrival-rate", 0, "users per second (0 = all at t0)")
	fs.IntVar(&cfg.Kill, "kill", 0, "SIGKILL and restart the bot this many times during the run, at random moments of the ideal schedule. "+
		"With -instances N > 1: each time one instance, round-robin; the load balancer first takes it out of rotation and lets the interactions it was answering finish (at most 3 s), "+
		"then it is killed and stays down for -restart-after while the survivors take every new interaction and, after -job-lease, refund its jobs and tell their users; then it is restarted and put back (one instance down at a time: a kill due meanwhile waits; one still down when every user is answered stays down)")
	fs.BoolVar(&cfg.Postgres, "postgres", false, "keep the ledger on PostgreSQL (storage.driver: postgres) instead of a bbolt file: a throwaway server started from the PostgreSQL binaries (see storage/postgres/pgtest), or the one -dsn names")
	fs.StringVar(&cfg.DSN, "dsn", "", "with -postgres (implied): an existing PostgreSQL server, as a superuser or a role with CREATEDB; the run makes a database of its own on it, dropped after a clean run")
	fs.IntVar(&cfg.Instances, "instances", cfg.Instances, "bot processes sharing the one PostgreSQL ledger, each with its own http.listen; > 1 needs -postgres and -platform discord: the interactions go to them round-robin (a fake load balancer)")
	fs.DurationVar(&cfg.JobLease, "job-lease", 0, "the bot's storage.job_lease, with -postgres (default: 3s with -kill, so a killed instance's jobs are taken over within the run; else the bot's own default, 30s)")
	fs.DurationVar(&cfg.RestartAfter, "restart-after", cfg.RestartAfter, "with -instances > 1 and -kill: how long a killed instance stays down before it is restarted")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "deadline for every job to be answered")
	fs.DurationVar(&cfg.Idle, "idle", cfg.Idle, "stop waiting when neither fake saw a call for this long (0 = wait for -timeout)")
	fs.StringVar(&cfg.Bin, "bin", "", "prebuilt imaginebot binary (default: go build one)")
	jsonPath := fs.String("json", "", "also write the figures as JSON to this file")
	check := fs.Bool("check", false, "exit 1 when a job was lost, double-charged or unanswered, or a 429 was answered with -limits (Discord: any 429, or an ack late or of the wrong type)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the temp dir (config, database, bot log) after a clean run")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the failure mix and kill times")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 1
	}
	// Written only when asked for: older bots reject the key as unknown.
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "tg-rate" {
			cfg.TGRate = *tgRate
		}
	})
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(stderr, "imaginebot-load:", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	rep, err := Run(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, "imaginebot-load:", err)
		return 1
	}
	rep.Print(stdout)
	if *jsonPath != "" {
		if err := rep.WriteJSON(*jsonPath); err != nil {
			fmt.Fprintln(stderr, "imaginebot-load:", err)
			return 1
		}
	}
	if *check && len(rep.Problems) > 0 {
		return 1
	}
	return 0
}

// Run performs one load run and returns its report. A harness failure
// (build, start-up, fakes) is an error; whatever the bot does is a figure.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (rep *Report, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "imaginebot-load-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	h := &harness{cfg: cfg, log: log, dir: dir}
	defer func() {
		// The bot's log, config and database are the evidence: keep them
		// unless the run was clean.
		clean := err == nil && len(rep.Problems) == 0 && !cfg.Keep
		h.close(!clean)
		if clean {
			_ = os.RemoveAll(dir)
			rep.Dir, rep.BotLog, rep.BotLogs = "", "", nil
			return
		}
		log.Info("kept the run's files", "dir", dir, "bot_log", dir+"/bot.log")
	}()
	if err := h.setup(ctx); err != nil {
		return nil, err
	}
	outcome, code, timedOut, err := h.drive(ctx)
	if err != nil {
		h.stopAll()
		return nil, err
	}
	waited := time.Since(h.t0)
	log.Info("bot stopped", "exit_code", code, "wait", waited.Round(time.Millisecond), "outcome", outcome)
	return h.buildReport(ctx, outcome, waited, code, timedOut), nil
}

// stopAll kills whatever bot process is still running after a harness error.
func (h *harness) stopAll() {
	for _, p := range h.processes() {
		if p != nil && !p.Exited() {
			p.kill()
		}
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/imaginebot/imaginebot/bots/discord"
	"github.com/imaginebot/imaginebot/bots/telegram"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream"
	"github.com/imaginebot/imaginebot/storage/bolt"
)

// defaultDrain is how long jobs in flight may run on after a stop signal
// before the rest are cancelled and refunded (shutdown.drain).
const defaultDrain = 60 * time.Second

func cmdRun(ctx context.Context, e env, args []string) error {
	fs, cfgPath := newFlags(e, "run")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(e, *cfgPath, (*Config).validateRun)
	if err != nil {
		return err
	}
	// A second signal skips the drain: jobs still running are cancelled
	// and refunded at once, and the ledger is closed cleanly all the same.
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	hurry := make(chan struct{})
	go func() {
		<-sig // the first, which also ends ctx (cli.go)
		<-sig
		close(hurry)
	}()
	return run(ctx, cfg, newLogger(e.stderr, cfg.Log), nil, hurry)
}

// run wires the bot and serves until ctx ends, then drains. ready, when not
// nil, gets the HTTP listener's address once everything is up (tests);
// closing hurry cuts the drain short.
func run(ctx context.Context, cfg *Config, log *slog.Logger, ready func(httpAddr string), hurry ...<-chan struct{}) error {
	m := newMetrics()
	db, err := openStore(ctx, cfg, log, m.commit)
	if err != nil {
		return fmt.Errorf("open ledger: %w", err)
	}
	defer db.Close()
	if n, err := db.PruneJobs(ctx, time.Now().Add(-cfg.Storage.JobRetention)); err != nil {
		log.Warn("pruning old job records failed", "err", err)
	} else if n > 0 {
		log.Info("pruned old job records", "jobs", n)
	}

	coreCfg, err := coreConfig(cfg)
	if err != nil {
		return err
	}
	secret, err := userIDSecret(ctx, cfg, core.NewLedger(db, coreCfg.Quotas))
	if err != nil {
		return fmt.Errorf("user pseudonym secret: %w", err)
	}
	gen := newGenerator(cfg, log, secret, upstream.WithMetrics(m))
	svc, err := core.NewService(coreCfg, db, gen, core.WithLogger(log), core.WithMetrics(m))
	if err != nil {
		return err // "core: …" already
	}
	// The bot holds the ledger file: quota and backup from the CLI come
	// through here. A PostgreSQL ledger takes them directly.
	if file, ok := db.(*bolt.DB); ok {
		admin, err := serveAdmin(cfg.Storage.AdminSocket, svc, file, log)
		if err != nil {
			return fmt.Errorf("storage.admin_socket: %w", err)
		}
		defer admin.Close()
	}
	interrupted, err := svc.Recover(ctx)
	if err != nil {
		return fmt.Errorf("recover interrupted jobs: %w", err)
	}

	// Each platform runs when it is configured; validateRun made sure one is.
	var tg *telegram.Bot
	if cfg.Telegram.Token != "" {
		tg, err = telegram.New(telegram.Config{
			Token:            cfg.Telegram.Token,
			APIBaseURL:       cfg.Telegram.APIBaseURL,
			Owners:           cfg.Telegram.Owners,
			PollTimeout:      cfg.Telegram.PollTimeout,
			ProgressInterval: cfg.Telegram.ProgressInterval,
			MaxPhotoBytes:    int64(cfg.Telegram.MaxPhotoBytes),
			MaxDocumentBytes: int64(cfg.Telegram.MaxDocumentBytes),
			WebhookURL:       cfg.Telegram.Webhook.URL,
			WebhookSecret:    cfg.Telegram.Webhook.SecretToken,
			PrivateHosts:     cfg.Images.AllowPrivateHosts,
			// Updates being checked and reserved at once: enough to fill a
			// ledger group commit and every upstream slot.
			MaxHandlers:       telegram.DefaultMaxHandlers + coreCfg.Concurrency,
			MessagesPerSecond: cfg.Telegram.MessagesPerSecond,
			// Results, status edits, long polls and commands in flight at once.
			Connections: coreCfg.Concurrency + 16,
		}, svc, telegram.WithLogger(log), telegram.WithMetrics(m.platform("telegram")), telegramProxy(cfg, log))
		if err != nil {
			return err // "telegram: …" already
		}
	}
	var dc *discord.Bot
	if d := cfg.Discord; d.Token != "" {
		dc, err = discord.New(discord.Config{
			Token: d.Token, ApplicationID: d.ApplicationID, PublicKey: d.PublicKey, Mode: d.Mode,
			APIBaseURL: d.APIBaseURL, Guilds: d.Guilds, Owners: d.Owners, ModeratorRoles: d.ModeratorRoles,
			AllowDMs: d.AllowDMs, ProgressInterval: d.ProgressInterval, MaxUploadBytes: int64(d.MaxUploadBytes),
			RequestsPerSecond: d.RequestsPerSecond,
			PrivateHosts:      cfg.Images.AllowPrivateHosts, Shards: discordShards(d), ShardIDs: d.ShardIDs,
			Connections: coreCfg.Concurrency + 16,
		}, svc, discord.WithLogger(log), discord.WithMetrics(m.platform("discord")), discordProxy(cfg, log))
		if err != nil {
			return err // "discord: …" already
		}
	}

	var ln net.Listener
	if cfg.HTTP.Listen != "" {
		if ln, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
			return fmt.Errorf("http.listen: %w", err)
		}
	}

	// The bots outlive ctx: after a stop signal they keep delivering the
	// jobs in flight until the service has drained.
	botCtx, stopBots := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBots()
	g, gctx := errgroup.WithContext(botCtx)
	var checks []readiness
	checks = append(checks, readiness{"ledger", func(ctx context.Context) error { return db.View(ctx, func(core.Tx) error { return nil }) }})
	if tg != nil {
		g.Go(func() error { return tg.Run(gctx) })
		checks = append(checks, readiness{"telegram", func(context.Context) error { return tg.Ready() }})
	}
	if dc != nil {
		g.Go(func() error { return dc.Run(gctx) })
		checks = append(checks, readiness{"discord", func(context.Context) error { return dc.Ready() }})
	}
	checks = append(checks, readiness{"gateway", gen.Ready})
	var srv *http.Server
	if ln != nil {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /healthz", healthz)
		mux.HandleFunc("GET /readyz", readyz(checks))
		m.watch(svc)
		mux.Handle("GET /metrics", m.handler())
		if tg != nil && cfg.Telegram.Webhook.URL != "" {
			mux.Handle(cfg.Telegram.Webhook.Path, tg.WebhookHandler())
		}
		if dc != nil && cfg.Discord.Mode == discord.ModeInteractions {
			mux.Handle(cfg.Discord.InteractionsPath, dc.InteractionsHandler(gctx))
		}
		// Webhook updates and interactions are small: a client that dawdles
		// over one, or idles on a kept-alive connection, is cut off.
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http: %w", err)
			}
			return nil
		})
	}
	// Users of jobs a crash cut off are told by the platform that has them;
	// on a shared ledger Watch also takes over the jobs of instances that
	// stopped renewing their leases.
	notify := func(ctx context.Context, jobs []core.Job) {
		var tell sync.WaitGroup
		if jobs := platformJobs(jobs, core.PlatformTelegram); len(jobs) > 0 && tg != nil {
			tell.Go(func() { tg.NotifyInterrupted(ctx, jobs) })
		}
		if jobs := platformJobs(jobs, core.PlatformDiscord); len(jobs) > 0 && dc != nil {
			tell.Go(func() { dc.NotifyInterrupted(ctx, jobs) })
		}
		tell.Wait()
	}
	g.Go(func() error {
		svc.Tell(gctx, interrupted, notify)
		return nil
	})
	g.Go(func() error { return svc.Watch(gctx, notify) })
	addr := ""
	if ln != nil {
		addr = ln.Addr().String()
	}
	platforms := []any{}
	if tg != nil {
		platforms = append(platforms, "telegram", map[bool]string{true: "webhook", false: "long polling"}[cfg.Telegram.Webhook.URL != ""])
	}
	if dc != nil {
		platforms = append(platforms, "discord", cfg.Discord.Mode)
	}
	log.Info("imaginebot started", append([]any{"version", version, "instance", svc.Limits().Instance, "db", ledgerName(cfg.Storage), "models", len(cfg.Models), "http", addr}, platforms...)...)
	if ready != nil {
		ready(addr)
	}

	drain := *cfg.Shutdown.Drain
	select {
	case <-ctx.Done():
		log.Info("stopping: new requests are refused; finishing jobs in flight", "drain", drain)
	case <-gctx.Done():
		log.Error("stopping: a component failed")
	}
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	for _, h := range hurry {
		go func() {
			select {
			case <-h:
				log.Warn("second signal: cancelling the jobs still running (they are refunded)")
				cancel()
			case <-sctx.Done():
			}
		}()
	}
	serr := svc.Shutdown(sctx)
	stopBots()
	if srv != nil {
		hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer hcancel()
		_ = srv.Shutdown(hctx)
	}
	gerr := g.Wait()
	if errors.Is(gerr, context.Canceled) {
		gerr = nil
	}
	// Replies the adapter was still sending (a last error message, say).
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	// Every job is settled in the ledger by now; what is left is telling
	// users, which the platforms' per-chat limits can make slow.
	if tg != nil {
		if err := tg.Wait(wctx); err != nil {
			log.Warn("stopped before every Telegram reply was sent", "err", err)
		}
	}
	if dc != nil {
		if err := dc.Wait(wctx); err != nil {
			log.Warn("stopped before every Discord reply was sent", "err", err)
		}
	}
	log.Info("stopped")
	return errors.Join(gerr, serr)
}

// discordShards is discord.shards for the adapter (checked already).
func discordShards(d DiscordConfig) int {
	n, _ := d.shardCount()
	if n == 0 {
		return discord.ShardsAuto
	}
	return n
}

func platformJobs(jobs []core.Job, p core.Platform) []core.Job {
	var out []core.Job
	for _, j := range jobs {
		if j.User.Platform == p {
			out = append(out, j)
		}
	}
	return out
}

package telegram_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/bots/chat/chattest"
	"github.com/imaginebot/imaginebot/bots/pace"
	"github.com/imaginebot/imaginebot/bots/telegram"
	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/fetch"
	"github.com/imaginebot/imaginebot/core/upstream"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
	"github.com/imaginebot/imaginebot/storage/memory"
)

var _ telegram.Service = (*core.Service)(nil)

const wait = 5 * time.Second

// People in the tests.
var (
	owner = telegramtest.User(1000, "owner", "en")
	alice = telegramtest.User(1001, "alice", "en")
	bob   = telegramtest.User(1002, "bob", "en-US")
	li    = telegramtest.User(1003, "li_wei", "zh-hans")
	gwen  = telegramtest.User(1004, "gwen", "en") // a group admin
	carol = telegramtest.User(1005, "carol", "en")
	group = telegramtest.GroupChat(-1001234567890, "Artists")
)

// env is the real wiring: the adapter over core.Service with the in-memory
// store, the upstream client and fetcher against the fake gateway, and the
// fake Bot API, with the bot long-polling (or in webhook mode).
type env struct {
	t   *testing.T
	tg  *telegramtest.Server
	gw  *upstreamtest.Gateway
	svc *core.Service
	bot *telegram.Bot
	log *chattest.Logs
}

type envConfig struct {
	core     core.Config
	telegram telegram.Config // APIBaseURL and Token default to the fake's
	opts     []telegram.Option
	// paced runs the adapter with Telegram's real send limits, against a
	// fake Bot API that enforces them.
	paced bool
	// cdn, when set, is a public-looking host whose https URLs the fake
	// gateway serves, as a gateway handing out CDN links would.
	cdn string
}

func newEnv(t *testing.T, mods ...func(*envConfig)) *env {
	t.Helper()
	gw := upstreamtest.New(t)
	c := envConfig{
		core: chattest.CoreConfig(),
		telegram: telegram.Config{
			Owners:           []int64{owner.ID},
			PollTimeout:      time.Second,
			ProgressInterval: 10 * time.Millisecond,
		},
	}
	for _, m := range mods {
		m(&c)
	}
	var tgOpts []telegramtest.Option
	if c.paced {
		tgOpts = append(tgOpts, telegramtest.WithRateLimits())
	}
	tg := telegramtest.New(t, tgOpts...)
	if c.telegram.APIBaseURL == "" {
		c.telegram.APIBaseURL, c.telegram.Token = tg.URL, tg.Token
	}
	logs := &chattest.Logs{}
	log := logs.Logger()

	f := fetch.New(fetch.Config{MaxBytes: 32 << 20, AllowedHosts: []string{"127.0.0.1"}})
	var fetcher upstream.Fetcher = f
	if c.cdn != "" {
		fetcher = cdnFetcher{f: f, prefix: "https://" + c.cdn, gateway: gw.URL}
	}
	gen := upstream.New(upstream.Config{BaseURL: gw.URL, APIKey: "sk-test-upstream-key", Retries: -1}, fetcher, upstream.WithLogger(log))
	svc, err := core.NewService(c.core, memory.New(), gen, core.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	// Telegram's one message a second per chat would make every test slow:
	// tests of pacing ask for the real limits.
	opts := []telegram.Option{telegram.WithLogger(log)}
	if !c.paced {
		opts = append(opts, telegram.WithLimits(pace.Limits{}))
	}
	opts = append(opts, c.opts...)
	b, err := telegram.New(c.telegram, svc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	run := chattest.Run{Cancel: cancel, Done: done, Drain: []func(context.Context) error{svc.Shutdown, b.Wait}, Logs: logs,
		Secrets: []string{tg.Token, "sk-test-upstream-key"}}
	t.Cleanup(func() { run.Stop(t, wait) })
	return &env{t: t, tg: tg, gw: gw, svc: svc, bot: b, log: logs}
}

// send injects an update and returns it with its id set.
func (e *env) send(u models.Update) models.Update {
	u.ID = e.tg.Inject(u)
	return u
}

// waitText waits for a sendMessage or editMessageText to chat whose text
// contains every fragment.
func (e *env) waitText(t testing.TB, chat int64, fragments ...string) telegramtest.Call {
	t.Helper()
	return e.tg.WaitText(t, chat, wait, fragments...)
}

func (e *env) balance(t testing.TB, scope string, u models.User) core.Balance {
	t.Helper()
	return chattest.Balance(t, e.svc, scope, core.User{Platform: core.PlatformTelegram, ID: itoa(u.ID)}.Key())
}

// waitSettled waits for the job with key to leave pending and fails the
// test unless it ended in want. "Delivered" means committed: the balance
// cannot tell, since reserve already counted the units as used.
func (e *env) waitSettled(t testing.TB, key string, want core.JobState) core.Job {
	t.Helper()
	var j core.Job
	var err error
	e.tg.WaitFor(wait, func() bool {
		j, err = e.svc.Job(context.Background(), key)
		return err == nil && j.State != core.JobPending
	})
	if err != nil || j.State != want {
		t.Fatalf("job %s is %q (%v), want %q", key, j.State, err, want)
	}
	return j
}

// updateKey is the job key of a job started by update u.
func updateKey(u models.Update) string { return "telegram:update:" + itoa(u.ID) }

// noParseMode checks that nothing was sent with a parse mode.
func (e *env) noParseMode(t testing.TB) {
	t.Helper()
	for _, c := range e.tg.Calls("") {
		if c.Has("parse_mode") {
			t.Errorf("%s sent parse_mode %q", c.Method, c.Field("parse_mode"))
		}
	}
}

// cdnFetcher downloads the CDN's URLs from the fake gateway (tests cannot
// reach public hosts) and keeps the URL the gateway gave as the source.
type cdnFetcher struct {
	f               upstream.Fetcher
	prefix, gateway string
}

func (c cdnFetcher) Fetch(ctx context.Context, ref string) (core.Image, error) {
	rest, ok := strings.CutPrefix(ref, c.prefix)
	if !ok {
		return c.f.Fetch(ctx, ref)
	}
	img, err := c.f.Fetch(ctx, c.gateway+rest)
	img.Source = ref
	return img, err
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

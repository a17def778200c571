// Package discord is the Discord adapter: slash commands (/imagine, /quota,
// /help, /quota-admin) and buttons over the gateway (discordgo's websocket,
// bot token only) or over HTTP interactions (Discord POSTs each one to our
// endpoint, signed with ed25519). Every interaction is acknowledged within
// Discord's 3 seconds whatever the queue holds; the reply is then edited
// with the queue position, the progress and finally the picture, paced by
// one outbound budget.
package discord

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/chat"
	"github.com/imaginebot/imaginebot/bots/pace"
	"github.com/imaginebot/imaginebot/core"
)

// Service is what the adapter needs from core; *core.Service satisfies it.
type Service = chat.Service

// Metrics counts the adapter's calls; nil methods are not called.
type Metrics interface {
	Call(method string, status int)
	Fallback(kind string)
}

// Option configures a Bot.
type Option func(*Bot)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(b *Bot) { b.log = l } }

// WithMetrics sets the metrics sink.
func WithMetrics(m Metrics) Option { return func(b *Bot) { b.metrics = m } }

// WithTransport sets the HTTP transport under the host rewriting (tests,
// proxies).
func WithTransport(rt http.RoundTripper) Option { return func(b *Bot) { b.transport = rt } }

// WithLimits replaces Discord's send limits (tests).
func WithLimits(l pace.Limits) Option { return func(b *Bot) { b.limits = &l } }

// Bot is the Discord adapter.
type Bot struct {
	cfg       Config
	svc       Service
	log       *slog.Logger
	metrics   Metrics
	transport http.RoundTripper
	limits    *pace.Limits
	proxy     *proxySetting // WithProxy; nil: the environment's

	session *discordgo.Session // bot-token REST calls, and the gateway
	hooks   *webhooks
	budget  *pace.Budget // interaction webhooks: the replies and their edits
	botBud  *pace.Budget // calls with the bot token (commands, channel posts)
	pubKey  ed25519.PublicKey
	owners  map[string]bool
	modRole map[string]bool

	busy     chat.Busy      // rerolls being made, by presser and picture
	inflight sync.WaitGroup // handlers and jobs' ends
	ready    atomic.Bool    // commands registered (and the gateway up)
	readyErr atomic.Value   // string: why not ready
	// panicHook runs at the start of every handler and delivery (tests make
	// it panic to prove the recovery).
	panicHook func(where string)
}

// New checks cfg and builds the adapter; nothing is contacted yet.
func New(cfg Config, svc Service, opts ...Option) (*Bot, error) {
	cfg.defaults()
	b := &Bot{cfg: cfg, svc: svc, log: slog.Default(), owners: set(cfg.Owners), modRole: set(cfg.ModeratorRoles)}
	for _, o := range opts {
		o(b)
	}
	var errs []error
	if cfg.Token == "" {
		errs = append(errs, errors.New("discord.token is empty: set IMAGINEBOT_DISCORD_TOKEN"))
	}
	if cfg.ApplicationID == "" {
		errs = append(errs, errors.New("discord.application_id is empty: set IMAGINEBOT_DISCORD_APPLICATION_ID (the General Information page of your application)"))
	}
	switch cfg.Mode {
	case ModeGateway:
	case ModeInteractions:
		key, err := hex.DecodeString(cfg.PublicKey)
		if err != nil || len(key) != ed25519.PublicKeySize {
			errs = append(errs, errors.New("discord.public_key must be the application's 64-hex-digit public key (set IMAGINEBOT_DISCORD_PUBLIC_KEY) in interactions mode"))
		}
		b.pubKey = key
	default:
		errs = append(errs, fmt.Errorf("discord.mode %q: use gateway or interactions", cfg.Mode))
	}
	base := b.transport
	if base == nil {
		base = &http.Transport{Proxy: b.proxy.httpProxy(), MaxConnsPerHost: cfg.Connections, MaxIdleConnsPerHost: cfg.Connections,
			IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: 30 * time.Second, ForceAttemptHTTP2: true}
	}
	rt, err := newRewrite(cfg.APIBaseURL, base)
	if err != nil {
		errs = append(errs, errors.New("discord.api_base_url: "+err.Error()))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	client := &http.Client{Transport: counted{rt, b}, Timeout: cfg.HTTPTimeout}
	s, err := discordgo.New("Bot " + cfg.Token)
	if err != nil {
		return nil, fmt.Errorf("discord: %w", err)
	}
	s.Client = client
	if d := b.proxy.websocketDialer(); d != nil {
		s.Dialer = d
	}
	s.StateEnabled = false // interactions carry what they need
	s.Identify.Intents = discordgo.IntentsNone
	s.ShouldReconnectOnError = true
	s.ShouldRetryOnRateLimit = true
	s.MaxRestRetries = 1
	s.SyncEvents = false
	discordgo.Logger = b.discordgoLog // the library logs through one package variable
	b.session = s
	b.hooks = &webhooks{client: client, appID: cfg.ApplicationID}
	hooks, bot := limits(cfg.RequestsPerSecond)
	if b.limits != nil {
		hooks, bot = *b.limits, *b.limits
	}
	b.budget, b.botBud = pace.NewBudget(hooks, time.Now), pace.NewBudget(bot, time.Now)
	b.readyErr.Store("not started")
	return b, nil
}

// limits are Discord's send limits. Calls with the bot token share its 50
// requests a second (perSecond, a little under). Interaction webhooks are
// not bound to that limit, only to each token's own (the "chat": a little
// under 5 edits in 5 seconds); their overall rate is capped at webhookRate
// all the same, so a crowd cannot turn into a flood.
func limits(perSecond float64) (hooks, bot pace.Limits) {
	hooks = pace.Limits{
		Global:        pace.Rate{PerSecond: webhookRate, Burst: webhookRate / 5},
		Chat:          pace.Rate{PerSecond: 1 / 1.2, Burst: 2},
		ProgressShare: 0.1,
	}
	bot = pace.Limits{Global: pace.Rate{PerSecond: perSecond, Burst: max(pace.MaxBatch, int(perSecond/5))}}
	return hooks, bot
}

// webhookRate caps interaction webhook calls a second, all tokens together.
const webhookRate = 150

func set(xs []string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

// counted reports every call to the metrics by route kind, never by URL.
type counted struct {
	next http.RoundTripper
	b    *Bot
}

func (c counted) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if c.b.metrics != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		c.b.metrics.Call(routeKind(r.Method, r.URL.Path), status)
	}
	return resp, err
}

// routeKind names a call for metrics without ids or tokens.
func routeKind(method, path string) string {
	switch {
	case strings.Contains(path, "/callback"):
		return "interaction_callback"
	case strings.Contains(path, "/messages/@original"):
		return method + "_original"
	case strings.Contains(path, "/webhooks/"):
		return "followup"
	case strings.Contains(path, "/commands"):
		return method + "_commands"
	case strings.Contains(path, "/channels/"):
		return "channel_message"
	case strings.Contains(path, "/gateway"):
		return "gateway"
	}
	return "other"
}

// discordgoLog routes discordgo's own messages into slog.
func (b *Bot) discordgoLog(level, caller int, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	switch level {
	case discordgo.LogError:
		b.log.Warn("discordgo: " + msg)
	case discordgo.LogWarning:
		b.log.Info("discordgo: " + msg)
	default:
		b.log.Debug("discordgo: " + msg)
	}
}

// Run registers the commands and, in gateway mode, holds the websocket
// until ctx ends. In interactions mode the HTTP handler does the work.
func (b *Bot) Run(ctx context.Context) error {
	if err := b.syncCommands(ctx); err != nil {
		return err
	}
	if b.cfg.Mode == ModeInteractions {
		b.ready.Store(true)
		b.log.Info("discord: serving HTTP interactions", "path", "(http.listen)")
		<-ctx.Done()
		return nil
	}
	return b.runGateway(ctx)
}

// Ready reports whether Discord can reach the bot (for /readyz).
func (b *Bot) Ready() error {
	if b.ready.Load() {
		return nil
	}
	return errors.New("discord: " + b.readyErr.Load().(string))
}

// Wait waits for handlers and for the replies of ended jobs.
func (b *Bot) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { b.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// gatewayInteraction runs one interaction from the websocket: discordgo
// calls handlers in bare goroutines, so a panic here must be caught.
func (b *Bot) gatewayInteraction(ctx context.Context, i *discordgo.Interaction, upload int64) {
	b.inflight.Add(1)
	defer b.inflight.Done()
	ack := func(ctx context.Context, r *discordgo.InteractionResponse) error {
		return b.send(ctx, pace.Msg{Chat: chatOf(i.Token), Class: pace.Reply}, func(ctx context.Context) error {
			return b.hooks.respond(ctx, i.ID, i.Token, r)
		})
	}
	b.handle(ctx, i, upload, ack)
}

// send waits for the budget, then calls fn. A 429 (rare: the budget keeps
// under Discord's limits) holds the budget for as long as Discord asked,
// and the call is tried again, twice at most.
func (b *Bot) send(ctx context.Context, m pace.Msg, fn func(ctx context.Context) error) error {
	bud := b.budget
	if m.Chat.ID == botChat || strings.HasPrefix(m.Chat.ID, channelChat) {
		bud = b.botBud
	}
	for attempt := 0; ; attempt++ {
		if err := bud.Wait(ctx, m); err != nil {
			return err
		}
		err := fn(ctx)
		d := retryAfter(err)
		if d == 0 || attempt == 2 {
			return err
		}
		b.log.Warn("discord: rate limited", "retry_after", d)
		bud.Hold(m.Chat, d)
	}
}

// The budgets' names for what is not an interaction's webhook.
const (
	botChat     = "bot"      // commands and other bot-wide calls
	channelChat = "channel:" // + channel id: posts in a channel
)

func chatOf(token string) pace.Chat { return pace.Chat{ID: token} }

// recovered turns a panic into a logged stack and an error; every handler
// and delivery runs under it.
func (b *Bot) recovered(where string, err *error) {
	if r := recover(); r != nil {
		b.log.Error("discord: panic", "in", where, "panic", r, "stack", string(debug.Stack()))
		if err != nil {
			*err = core.Errorf(core.CodeInternal, "discord: panic in %s: %v", where, r)
		}
	}
}

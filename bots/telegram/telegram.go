// Package telegram is the Telegram adapter: it turns updates from the Bot API
// (long polling or a webhook) into core requests and core's progress,
// results and errors into Telegram messages. Limits, quotas, queueing,
// upstream retries and refunds all live in core; this package only
// translates.
//
// Every text is sent without a parse mode, so prompts full of Markdown or
// HTML characters go through untouched, and is cut by characters within
// Telegram's limits (counted in UTF-16 code units, as Telegram does).
package telegram

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-telegram/bot"
	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/bots/chat"
	"github.com/imaginebot/imaginebot/bots/pace"
	"github.com/imaginebot/imaginebot/core"
)

// Defaults for the zero Config.
const (
	DefaultAPIBaseURL       = "https://api.telegram.org"
	DefaultPollTimeout      = 50 * time.Second
	DefaultProgressInterval = 3 * time.Second
	DefaultMaxPhotoBytes    = 10_000_000 // Telegram: "at most 10 MB"
	DefaultMaxDocumentBytes = 50_000_000
	DefaultMaxHandlers      = 256
	// DefaultMessagesPerSecond is Telegram's limit for a bot without paid
	// broadcasts.
	DefaultMessagesPerSecond = 30
	// MaxMessagesPerSecond is the most paid broadcasts allow.
	MaxMessagesPerSecond = 1000
	DefaultConnections   = 32
	noticeTimeout        = 15 * time.Second
)

// Telegram limits.
const (
	maxMessageLen  = 4096 // UTF-16 code units
	maxCaptionLen  = 1024
	maxCallbackLen = 64 // bytes
	maxAlertLen    = 200
	maxMediaGroup  = 10
)

// Config configures the adapter. Zero values take the defaults above.
type Config struct {
	Token            string
	APIBaseURL       string        // a self-hosted Bot API server or reverse proxy works unchanged
	Owners           []int64       // user ids of the bot's owners: moderators everywhere
	PollTimeout      time.Duration // long-polling timeout (at least 1s)
	ProgressInterval time.Duration // minimum time between status edits in one chat
	MaxPhotoBytes    int64         // bigger images go as documents
	MaxDocumentBytes int64         // bigger images go as links
	WebhookURL       string        // "" = long polling
	WebhookSecret    string        // required in webhook mode: 1–256 of A–Z a–z 0–9 _ -
	// MaxInputBytes caps a photo users give to start from (0: 8 MiB).
	MaxInputBytes int64
	// PrivateHosts are the image hosts on the operator's own network (the
	// fetcher's allowed private hosts: names, IPs, CIDRs). A link to one
	// of them, or to any private address, is never sent to users.
	PrivateHosts []string
	// MaxHandlers bounds the updates handled at once (a job's update until
	// core took or refused it; a command until answered). Past it, intake
	// waits: long polling stops fetching (Telegram keeps the updates) and
	// webhook requests are held, so a flood cannot grow memory. Jobs core
	// took are bounded by core's queue cap, not by this.
	MaxHandlers int
	// MessagesPerSecond is the bot's overall send budget (default 30, as
	// Telegram allows). Above 30 the bot sets allow_paid_broadcast on its
	// messages, which Telegram bills in Stars, up to 1000.
	MessagesPerSecond int
	// Connections sizes the pool of kept-alive connections to the Bot API
	// (default 32): about the calls in flight at once.
	Connections int
}

var (
	secretRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,256}$`)
	tokenRe  = regexp.MustCompile(`^[0-9]+:[A-Za-z0-9_-]+$`)
)

// ValidSecret reports whether s may be a webhook secret token (Telegram
// allows 1–256 of A–Z a–z 0–9 _ -).
func ValidSecret(s string) bool { return secretRe.MatchString(s) }

// ValidToken reports whether s looks like a bot token from @BotFather.
func ValidToken(s string) bool { return tokenRe.MatchString(s) }

// Validate reports every problem in c at once.
func (c Config) Validate() error {
	var errs []error
	if !ValidToken(c.Token) {
		errs = append(errs, errors.New("telegram: the bot token is empty or malformed"))
	}
	if c.APIBaseURL != "" {
		if u, err := url.Parse(c.APIBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("telegram: API base URL %q is not an http(s) URL", c.APIBaseURL))
		}
	}
	if c.PollTimeout < 0 || c.ProgressInterval < 0 || c.MaxPhotoBytes < 0 || c.MaxDocumentBytes < 0 {
		errs = append(errs, errors.New("telegram: durations and sizes must not be negative"))
	}
	if c.MessagesPerSecond < 0 || c.MessagesPerSecond > MaxMessagesPerSecond {
		errs = append(errs, fmt.Errorf("telegram: messages per second %d is outside 1–%d", c.MessagesPerSecond, MaxMessagesPerSecond))
	}
	if c.WebhookURL != "" {
		if u, err := url.Parse(c.WebhookURL); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("telegram: webhook URL %q is not an https URL", c.WebhookURL))
		}
		if !ValidSecret(c.WebhookSecret) {
			errs = append(errs, errors.New("telegram: webhook mode needs a secret of 1–256 characters A–Z a–z 0–9 _ -"))
		}
	}
	return errors.Join(errs...)
}

func (c *Config) defaults() {
	if c.APIBaseURL == "" {
		c.APIBaseURL = DefaultAPIBaseURL
	}
	c.APIBaseURL = strings.TrimRight(c.APIBaseURL, "/")
	if c.PollTimeout == 0 {
		c.PollTimeout = DefaultPollTimeout
	}
	// Below a second the library would ask for timeout=0: a busy loop.
	c.PollTimeout = max(c.PollTimeout, time.Second)
	if c.ProgressInterval == 0 {
		c.ProgressInterval = DefaultProgressInterval
	}
	if c.MaxPhotoBytes == 0 {
		c.MaxPhotoBytes = DefaultMaxPhotoBytes
	}
	if c.MaxDocumentBytes == 0 {
		c.MaxDocumentBytes = DefaultMaxDocumentBytes
	}
	c.MaxDocumentBytes = max(c.MaxDocumentBytes, c.MaxPhotoBytes)
	if c.MaxHandlers <= 0 {
		c.MaxHandlers = DefaultMaxHandlers
	}
	if c.MessagesPerSecond == 0 {
		c.MessagesPerSecond = DefaultMessagesPerSecond
	}
	if c.Connections <= 0 {
		c.Connections = DefaultConnections
	}
	if c.MaxInputBytes <= 0 {
		c.MaxInputBytes = chat.DefaultMaxInputBytes
	}
}

// Service is what the adapter needs from core; *core.Service satisfies it.
type Service interface {
	chat.Service
	NoteStatus(ctx context.Context, key, ref string) error
	// The users seen, so @handles and names survive a restart.
	SeeUser(ctx context.Context, u core.User, handle string) error
	FindUser(ctx context.Context, platform core.Platform, handle string) (key, name string, ok bool, err error)
	UserName(ctx context.Context, key string) (string, error)
}

// Option customises a Bot.
type Option func(*Bot)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(b *Bot) {
		if l != nil {
			b.log = l
		}
	}
}

// WithHTTPClient sets the HTTP client for Bot API calls. Its Timeout should
// be zero: every call gets its own deadline (long polls and uploads need
// more than the library's 60 s default).
func WithHTTPClient(c *http.Client) Option {
	return func(b *Bot) {
		if c != nil {
			b.hc = c
		}
	}
}

// WithSleep replaces the wait before retrying after a 429; it must return
// early with ctx's error when ctx ends.
func WithSleep(sleep func(ctx context.Context, d time.Duration) error) Option {
	return func(b *Bot) {
		if sleep != nil {
			b.sleep = sleep
		}
	}
}

// WithClock sets the time source of the send budget.
func WithClock(now func() time.Time) Option {
	return func(b *Bot) {
		if now != nil {
			b.now = now
		}
	}
}

// Metrics is what the adapter tells operators: Bot API calls by method
// and HTTP status (0 when no answer came), and deliveries that had to fall
// back from a photo ("document", "link").
type Metrics interface {
	Call(method string, status int)
	Fallback(kind string)
}

// WithMetrics reports to m (default: nowhere).
func WithMetrics(m Metrics) Option {
	return func(b *Bot) {
		if m != nil {
			b.metrics = m
		}
	}
}

type noMetrics struct{}

func (noMetrics) Call(string, int) {}
func (noMetrics) Fallback(string)  {}

// WithLimits replaces the send limits derived from MessagesPerSecond (a
// self-hosted Bot API server in front of its own limits; tests).
func WithLimits(l pace.Limits) Option {
	return func(b *Bot) { b.limits = &l }
}

// WithUsername gives the bot's @username and skips getMe at start-up.
func WithUsername(name string) Option {
	return func(b *Bot) { b.username = strings.TrimPrefix(name, "@") }
}

// Bot is the Telegram adapter. Create it with New, start it with Run.
type Bot struct {
	cfg    Config
	svc    Service
	api    *bot.Bot
	log    *slog.Logger
	hc     *http.Client
	sleep  func(context.Context, time.Duration) error
	now    func() time.Time
	owners map[int64]bool

	metrics Metrics
	budget  *pace.Budget
	limits  *pace.Limits // from WithLimits; nil = Telegram's
	paid    bool         // allow_paid_broadcast: the budget is above Telegram's free 30/s
	users   *userIndex
	busy    chat.Busy // rerolls being made, by presser and picture
	admins  *lru[[2]int64, bool]
	// buttonKeys maps the short tokens of long keys' buttons to job keys.
	buttonKeys *lru[string, string]
	seen       *lru[int64, bool] // recent update ids: a redelivered update runs once

	slots chan struct{} // one per update being handled (Config.MaxHandlers)

	mu       sync.Mutex
	lastPoll time.Time       // last getUpdates answered (long polling)
	webhook  bool            // setWebhook succeeded (webhook mode)
	username string          // the bot's @username, without "@"
	base     context.Context // Run's context, for webhook updates; nil before Run
	closed   bool
	inflight sync.WaitGroup
}

// New builds the adapter over svc. It makes no network call.
func New(cfg Config, svc Service, opts ...Option) (*Bot, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if svc == nil {
		return nil, errors.New("telegram: no service")
	}
	cfg.defaults()
	b := &Bot{
		cfg:     cfg,
		svc:     svc,
		log:     slog.Default(),
		hc:      &http.Client{Transport: newTransport(cfg.Connections)},
		sleep:   sleepCtx,
		metrics: noMetrics{},
		now:     time.Now,
		owners:  map[int64]bool{},
		slots:   make(chan struct{}, cfg.MaxHandlers),
	}
	for _, o := range opts {
		o(b)
	}
	for _, id := range cfg.Owners {
		b.owners[id] = true
	}
	limits := pace.Telegram(cfg.MessagesPerSecond)
	if b.limits != nil {
		limits = *b.limits
	}
	b.budget = pace.NewBudget(limits, b.now)
	b.paid = cfg.MessagesPerSecond > DefaultMessagesPerSecond
	b.users = newUserIndex(10000)
	b.admins = newLRU[[2]int64, bool](4096, b.now)
	b.buttonKeys = newLRU[string, string](4096, b.now)
	b.seen = newLRU[int64, bool](4096, b.now)

	api, err := bot.New(cfg.Token,
		bot.WithSkipGetMe(),
		bot.WithServerURL(cfg.APIBaseURL),
		// The library asks getUpdates for pollTimeout-1s.
		bot.WithHTTPClient(cfg.PollTimeout+time.Second, &deadlineClient{hc: b.hc, poll: cfg.PollTimeout, metrics: b.metrics, polled: b.polled}),
		bot.WithAllowedUpdates(bot.AllowedUpdates{models.AllowedUpdateMessage, models.AllowedUpdateCallbackQuery}),
		bot.WithDefaultHandler(b.onUpdate),
		// onUpdate only routes and starts a goroutine per piece of work, so
		// updates are routed in order (and tests can rely on it).
		bot.WithNotAsyncHandlers(),
		bot.WithErrorsHandler(func(err error) {
			b.log.Warn("telegram: bot API error", "err", b.redact(err))
		}),
		bot.WithDebugHandler(func(string, ...any) {}),
	)
	if err != nil {
		return nil, fmt.Errorf("telegram: %s", b.redact(err))
	}
	b.api = api
	return b, nil
}

// Run makes the start-up calls (getMe, setMyCommands, deleteWebhook or
// setWebhook), then long-polls — or, in webhook mode, waits — until ctx
// ends. Jobs started from updates outlive ctx: core's Shutdown ends them,
// then Wait waits for the adapter's side.
func (b *Bot) Run(ctx context.Context) error {
	err := b.run(ctx)
	if err != nil && ctx.Err() != nil {
		return nil // stopped during start-up: not a failure
	}
	return err
}

func (b *Bot) run(ctx context.Context) error {
	if b.Username() == "" {
		var me *models.User
		err := b.retry429(ctx, func(ctx context.Context) error {
			var err error
			me, err = b.api.GetMe(ctx)
			return err
		})
		if err != nil {
			if errors.Is(err, bot.ErrorUnauthorized) || errors.Is(err, bot.ErrorNotFound) {
				return fmt.Errorf("telegram: getMe: the bot token was rejected (%s); copy it again from @BotFather", b.redact(err))
			}
			return fmt.Errorf("telegram: getMe: %s", b.redact(err))
		}
		b.mu.Lock()
		b.username = me.Username
		b.mu.Unlock()
	}
	b.setCommands(ctx)

	b.mu.Lock()
	b.base = ctx
	b.mu.Unlock()

	if b.cfg.WebhookURL != "" {
		ok, err := b.api.SetWebhook(ctx, &bot.SetWebhookParams{
			URL:            b.cfg.WebhookURL,
			SecretToken:    b.cfg.WebhookSecret,
			AllowedUpdates: []string{models.AllowedUpdateMessage, models.AllowedUpdateCallbackQuery},
		})
		if err != nil || !ok {
			return fmt.Errorf("telegram: setWebhook: %s", b.redact(orFalse(err, "setWebhook")))
		}
		b.mu.Lock()
		b.webhook = true
		b.mu.Unlock()
		b.log.Info("telegram: webhook mode", "bot", "@"+b.Username())
		<-ctx.Done()
		return nil
	}
	if ok, err := b.api.DeleteWebhook(ctx, &bot.DeleteWebhookParams{}); err != nil || !ok {
		return fmt.Errorf("telegram: deleteWebhook: %s", b.redact(orFalse(err, "deleteWebhook")))
	}
	b.log.Info("telegram: long polling", "bot", "@"+b.Username(), "timeout", b.cfg.PollTimeout)
	b.api.Start(ctx)
	return nil
}

func orFalse(err error, method string) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%s answered false", method)
}

func (b *Bot) polled() {
	now := b.now()
	b.mu.Lock()
	b.lastPoll = now
	b.mu.Unlock()
}

// Ready says why the adapter cannot take updates now (nil when it can): in
// webhook mode until setWebhook succeeded; with long polling when no
// getUpdates was answered within the poll timeout and its slack.
func (b *Bot) Ready() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.cfg.WebhookURL != "":
		if !b.webhook {
			return errors.New("telegram: the webhook is not registered yet")
		}
	case b.lastPoll.IsZero():
		return errors.New("telegram: no getUpdates answered yet")
	case b.now().Sub(b.lastPoll) > b.cfg.PollTimeout+pollSlack:
		return fmt.Errorf("telegram: no getUpdates answered for %s", b.now().Sub(b.lastPoll).Round(time.Second))
	}
	return nil
}

// Username is the bot's @username (without "@"), known once Run has started.
func (b *Bot) Username() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.username
}

// Wait stops taking updates and waits until the work already started ends
// or ctx does. Call it after core's Shutdown, which ends running jobs.
func (b *Bot) Wait(ctx context.Context) error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	done := make(chan struct{})
	go func() {
		b.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("telegram: wait: %w", ctx.Err())
	}
}

// spawn runs fn in a goroutine counted by Wait, once one of the handler
// slots is free: waiting here is the backpressure that bounds a flood. It
// reports false when ctx ends first or once Wait has been called.
func (b *Bot) spawn(ctx context.Context, fn func()) bool {
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.slots
		return false
	}
	b.inflight.Add(1)
	b.mu.Unlock()
	go func() {
		defer b.inflight.Done()
		defer func() { <-b.slots }()
		fn()
	}()
	return true
}

func (b *Bot) setCommands(ctx context.Context) {
	// Telegram's menus take two-letter codes only, so every Chinese user
	// gets the Simplified menu.
	for _, lang := range []core.Lang{core.English, core.SimplifiedChinese} {
		code := ""
		if lang != core.English {
			code = "zh"
		}
		_, err := b.api.SetMyCommands(ctx, &bot.SetMyCommandsParams{Commands: commandList(lang), LanguageCode: code})
		if err != nil {
			// The menu is a convenience: the bot works without it.
			b.log.Warn("telegram: setMyCommands failed", "lang", lang, "err", b.redact(err))
		}
	}
}

// NotifyInterrupted tells the users of jobs a crash interrupted (already
// refunded by core's Recover) what happened: the job's status message, when
// it had one, becomes the apology; otherwise it goes as a reply to their
// message. A job cut off while its picture was being sent says the picture
// may have arrived (and is free), instead of asking for the prompt again.
// Each notice sent, or impossible to send (the chat is gone or blocked the
// bot), is confirmed to core, so a crash meanwhile repeats only the others.
// Jobs of other platforms are skipped.
func (b *Bot) NotifyInterrupted(ctx context.Context, jobs []core.Job) {
	for _, j := range jobs {
		if j.User.Platform != core.PlatformTelegram && !strings.HasPrefix(j.Key, "telegram:") {
			continue
		}
		to, ok := parseReplyTo(j.ReplyTo)
		var err error
		if ok {
			code := j.Outcome
			if code != core.CodeDeliveryCut {
				code = core.CodeInterrupted
			}
			status := 0
			if st, ok := parseReplyTo(j.Status); ok && st.chat == to.chat {
				status = st.msg
			}
			// A notice under way is finished even when the bot is stopping:
			// cut mid-request, it might arrive unconfirmed and come twice.
			nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), noticeTimeout)
			to.job = j.Key
			err = b.replace(nctx, to, status, tr(j.Lang).Error(&core.Error{Code: code}, syntax))
			cancel()
		} else {
			b.log.Warn("telegram: interrupted job without a reply target", "job", j.Key)
		}
		if err == nil || errors.Is(err, bot.ErrorForbidden) || errors.Is(err, bot.ErrorBadRequest) || !ok {
			// Recorded even when stopping: the user has the notice.
			if nerr := b.svc.Notified(context.WithoutCancel(ctx), j.Key); nerr != nil {
				b.log.Warn("telegram: could not record a notice as sent", "job", j.Key, "err", nerr)
			}
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// target is where a message goes: a chat, its forum topic, and the message
// it replies to; order is the job's arrival, which orders its messages in
// the send budget (0 for messages of no job).
type target struct {
	chat   int64
	thread int
	msg    int
	order  uint64
	job    string // the job it answers, for logs ("" outside a job)
}

// replyTo is the stored reply target "<chat_id>:<message_id>".
func (t target) replyTo() string {
	return strconv.FormatInt(t.chat, 10) + ":" + strconv.Itoa(t.msg)
}

func parseReplyTo(s string) (target, bool) {
	c, m, ok := strings.Cut(s, ":")
	if !ok {
		return target{}, false
	}
	chat, err1 := strconv.ParseInt(c, 10, 64)
	msg, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || chat == 0 || msg <= 0 {
		return target{}, false
	}
	return target{chat: chat, msg: msg}, true
}

// redact renders err without the bot token, which the library puts in
// request URLs.
func (b *Bot) redact(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if t := b.cfg.Token; t != "" {
		s = strings.ReplaceAll(s, t, "<token>")
		s = strings.ReplaceAll(s, url.PathEscape(t), "<token>")
	}
	return core.Truncate(s, 500)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

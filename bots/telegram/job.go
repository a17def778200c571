package telegram

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-telegram/bot"

	"github.com/imaginebot/imaginebot/bots/pace"
	"github.com/imaginebot/imaginebot/core"
)

const statusTimeout = 15 * time.Second

// runJob submits one core job and reports it in the chat. cb, when not nil,
// is the callback query that asked for it (rerolls answer it with whether
// core took the job); after, when not nil, runs once the job ended. It
// returns once core took or refused the job: a queued job holds no
// goroutine, and its end is reported from core's.
func (b *Bot) runJob(ctx context.Context, req core.Request, to target, cb *callbackAnswer, after func()) {
	to.order = req.Seq // results and statuses go out in the order their prompts came
	to.job = req.Key
	if cb != nil {
		cb.job = req.Key
	}
	j := &job{b: b, to: to, key: req.Key, lang: req.Lang, cb: cb}
	j.status = b.budget.NewStatus(to.chatKey(), to.order, b.cfg.ProgressInterval, j.showStatus)
	b.inflight.Add(1) // the job's end, counted by Wait; runs inside a counted handler
	finish := func(err error) {
		defer b.inflight.Done()
		if after != nil {
			defer after()
		}
		j.end(ctx, req, err)
	}
	if err := b.svc.Submit(ctx, req, j, func(_ core.Receipt, err error) { finish(err) }); err != nil {
		finish(err)
	}
}

// end reports how a job ended: nothing more after a delivery; otherwise
// the refusal or the failure, in the status message when there is one.
func (j *job) end(ctx context.Context, req core.Request, err error) {
	j.status.Close()
	if err == nil {
		return
	}
	b := j.b
	code := core.ErrorCode(err)
	if code == core.CodeDuplicate {
		j.cb.answer(ctx, "", false)
		return
	}
	msg := tr(req.Lang).Error(err, syntax)
	b.log.Info("telegram: job refused or failed", "job", req.Key, "code", code)
	if !j.accepted() && j.cb != nil {
		// Refused before it started: the presser sees why in an alert.
		j.cb.answer(ctx, msg, true)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_ = b.replace(cctx, j.to, j.statusMessage(), msg) // logged there
}

// replace turns a job's status message into text, or sends text as a reply
// when there is none or the edit fails. It returns the reply's error.
func (b *Bot) replace(ctx context.Context, to target, statusID int, text string) error {
	if statusID != 0 {
		err := b.send(ctx, to, pace.Reply, 1, func(ctx context.Context) error {
			// The status's ✖ button goes: the job is over.
			_, err := b.api.EditMessageText(ctx, &bot.EditMessageTextParams{ChatID: to.chat, MessageID: statusID,
				Text: fit(text, maxMessageLen), LinkPreviewOptions: noPreview(), ReplyMarkup: noKeyboard})
			return err
		})
		if err == nil {
			return nil
		}
		b.log.Warn("telegram: could not turn the status into the message", "job", to.job, "chat", to.chat, "err", b.redact(err))
	}
	_, err := b.sendText(ctx, to, pace.Reply, text, nil)
	if err != nil {
		b.log.Warn("telegram: could not send the message", "job", to.job, "chat", to.chat, "err", b.redact(err))
	}
	return err
}

// job is core's Reporter for one job. Progress only hands the latest status
// to its pace.Status, which sends it when the budget has room, so core's
// job goroutine never waits for Telegram.
type job struct {
	b      *Bot
	to     target
	key    string
	lang   core.Lang
	cb     *callbackAnswer
	status *pace.Status

	once     sync.Once // first sign of life from core
	mu       sync.Mutex
	took     bool
	statusID int // the status message, once sent
}

var _ core.Reporter = (*job)(nil)

// accept notes that core took the job (it reports progress or delivers).
func (j *job) accept() {
	j.once.Do(func() {
		j.mu.Lock()
		j.took = true
		j.mu.Unlock()
		if j.cb != nil {
			// Progress must not block core's job goroutine.
			go j.cb.answer(context.Background(), tr(j.lang).T("button.rerolling"), false)
		}
	})
}

func (j *job) accepted() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.took
}

func (j *job) statusMessage() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.statusID
}

// Progress implements core.Reporter; it never blocks.
func (j *job) Progress(p core.Progress) {
	j.accept()
	j.status.Set(tr(j.lang).Status(p))
}

// Deliver implements core.Reporter: it sends the result and then removes the
// status message.
func (j *job) Deliver(ctx context.Context, d core.Delivery) error {
	j.accept()
	j.status.Close()
	if err := j.b.deliver(ctx, j.to, j.lang, d); err != nil {
		return err
	}
	if id := j.statusMessage(); id != 0 {
		// Deletions do not count against the send limits.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statusTimeout)
		defer cancel()
		if _, err := j.b.api.DeleteMessage(dctx, &bot.DeleteMessageParams{ChatID: j.to.chat, MessageID: id}); err != nil {
			j.b.log.Debug("telegram: could not delete the status message", "job", j.key, "chat", j.to.chat, "err", j.b.redact(err))
		}
		j.mu.Lock()
		j.statusID = 0
		j.mu.Unlock()
	}
	return nil
}

// showStatus sends the status message, or edits it, with its ✖ Cancel
// button; the budget was taken by the caller. The message is stored with
// the job so that a crash leaves no "generating…" behind: recovery turns it
// into the apology.
func (j *job) showStatus(ctx context.Context, text string) error {
	id := j.statusMessage()
	var err error
	if id == 0 {
		m, serr := j.b.api.SendMessage(ctx, &bot.SendMessageParams{ChatID: j.to.chat, MessageThreadID: j.to.thread,
			Text: fit(text, maxMessageLen), ReplyParameters: replyParams(j.to), LinkPreviewOptions: noPreview(),
			ReplyMarkup: j.b.cancelKeyboard(j.key, j.lang), AllowPaidBroadcast: j.b.paid})
		if err = serr; err == nil {
			j.mu.Lock()
			j.statusID = m.ID
			j.mu.Unlock()
			ref := target{chat: j.to.chat, msg: m.ID}.replyTo()
			if nerr := j.b.svc.NoteStatus(context.WithoutCancel(ctx), j.key, ref); nerr != nil {
				j.b.log.Warn("telegram: could not store the status message", "job", j.key, "err", nerr)
			}
		}
	} else {
		// An edit without reply_markup would drop the ✖ button.
		_, err = j.b.api.EditMessageText(ctx, &bot.EditMessageTextParams{ChatID: j.to.chat, MessageID: id,
			Text: fit(text, maxMessageLen), LinkPreviewOptions: noPreview(), ReplyMarkup: j.b.cancelKeyboard(j.key, j.lang)})
		if err != nil && strings.Contains(err.Error(), "message is not modified") {
			err = nil
		}
	}
	if err != nil {
		if d := retryAfter(err); d > 0 {
			j.b.budget.Hold(j.to.chatKey(), d)
		}
		j.b.log.Debug("telegram: status update skipped", "job", j.key, "chat", j.to.chat, "err", j.b.redact(err))
	}
	return err
}

// callbackAnswer answers a callback query exactly once: Telegram keeps the
// button's spinner until it is answered.
type callbackAnswer struct {
	b    *Bot
	id   string
	job  string // the job the press started, for logs
	once sync.Once
}

func (c *callbackAnswer) answer(ctx context.Context, text string, alert bool) {
	if c == nil {
		return
	}
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statusTimeout)
		defer cancel()
		err := c.b.retry429(ctx, func(ctx context.Context) error {
			_, err := c.b.api.AnswerCallbackQuery(ctx, &bot.AnswerCallbackQueryParams{CallbackQueryID: c.id, Text: fit(text, maxAlertLen), ShowAlert: alert && text != ""})
			return err
		})
		if err != nil {
			c.b.log.Warn("telegram: answerCallbackQuery failed", "job", c.job, "err", c.b.redact(err))
		}
	})
}

// chatKey is the budget's name for the target's chat: groups have negative
// ids and their own, smaller budget.
func (t target) chatKey() pace.Chat {
	return pace.Chat{ID: strconv.FormatInt(t.chat, 10), Group: t.chat < 0}
}

// errNoBudget is returned when ctx ended while waiting for the budget.
var errNoBudget = errors.New("telegram: no send budget before the deadline")

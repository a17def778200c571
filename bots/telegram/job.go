package telegram

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/go-telegram/bot"
	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/core"
)

const (
	actionEvery   = 5 * time.Second // Telegram shows a chat action for about 5 s
	statusTimeout = 15 * time.Second
)

// runJob runs one core job and reports it in the chat. accepted, when not
// nil, is told whether core took the job (rerolls answer their callback
// query with it).
func (b *Bot) runJob(ctx context.Context, req core.Request, to target, cb *callbackAnswer) {
	j := &job{b: b, to: to, lang: req.Lang, cb: cb,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go j.loop()
	_, err := b.svc.Imagine(ctx, req, j)
	j.halt()
	if err == nil {
		return
	}
	code := core.ErrorCode(err)
	if code == core.CodeDuplicate {
		cb.answer(ctx, "", false)
		return
	}
	msg := core.Message(err, req.Lang)
	b.log.Info("telegram: job refused or failed", "job", req.Key, "code", code)
	if !j.accepted() && cb != nil {
		// Refused before it started: the presser sees why in an alert.
		cb.answer(ctx, msg, true)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if j.statusID != 0 {
		err := b.retry429(cctx, func(ctx context.Context) error {
			_, err := b.api.EditMessageText(ctx, &bot.EditMessageTextParams{ChatID: to.chat, MessageID: j.statusID, Text: fit(msg, maxMessageLen),
				LinkPreviewOptions: noPreview()})
			return err
		})
		if err == nil {
			return
		}
		b.log.Warn("telegram: could not turn the status into the error message", "job", req.Key, "err", b.redact(err))
	}
	if _, err := b.sendText(cctx, to, msg, nil); err != nil {
		b.log.Warn("telegram: could not send the error message", "job", req.Key, "err", b.redact(err))
	}
}

// job is core's Reporter for one job. Progress only records the latest
// state and wakes the job's loop, which sends it (coalesced and throttled
// per chat), so core's job goroutine never waits for Telegram.
type job struct {
	b    *Bot
	to   target
	lang core.Lang
	cb   *callbackAnswer

	once sync.Once // first sign of life from core
	took bool      // guarded by mu

	mu     sync.Mutex
	latest core.Progress
	seq    int // bumps with every Progress

	wake     chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}

	// Owned by loop; read by others only after done is closed.
	statusID   int
	statusText string
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
			go j.cb.answer(context.Background(), j.lang.Pick("🔄 Rerolling…", "🔄 正在重新生成…"), false)
		}
	})
}

func (j *job) accepted() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.took
}

// Progress implements core.Reporter; it never blocks.
func (j *job) Progress(p core.Progress) {
	j.accept()
	j.mu.Lock()
	j.latest = p
	j.seq++
	j.mu.Unlock()
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// halt stops the loop and waits for it, so nothing is edited after.
func (j *job) halt() {
	j.stopOnce.Do(func() { close(j.stop) })
	<-j.done
}

// Deliver implements core.Reporter: it sends the result and then removes the
// status message.
func (j *job) Deliver(ctx context.Context, d core.Delivery) error {
	j.accept()
	j.halt()
	if err := j.b.deliver(ctx, j.to, j.lang, d); err != nil {
		return err
	}
	if j.statusID != 0 {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statusTimeout)
		defer cancel()
		if _, err := j.b.api.DeleteMessage(dctx, &bot.DeleteMessageParams{ChatID: j.to.chat, MessageID: j.statusID}); err != nil {
			j.b.log.Debug("telegram: could not delete the status message", "chat", j.to.chat, "err", j.b.redact(err))
		}
		j.statusID = 0
	}
	return nil
}

// loop sends the latest status whenever it changed and the chat's throttle
// allows, and the upload_photo action every few seconds while generating.
// It ends when the job does (halt).
func (j *job) loop() {
	defer close(j.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	sent := 0
	var nextAction time.Time
	for {
		select {
		case <-j.stop:
			return
		case <-j.wake:
		case <-timer.C:
		}
		j.mu.Lock()
		p, seq := j.latest, j.seq
		j.mu.Unlock()
		if seq == 0 {
			continue
		}
		var wait time.Duration
		if p.Stage == core.StageGenerating {
			now := j.b.now()
			if !now.Before(nextAction) {
				j.action()
				nextAction = now.Add(actionEvery)
			}
			wait = max(nextAction.Sub(now), time.Millisecond)
		}
		if seq != sent {
			text := statusText(p, j.lang)
			switch d := j.b.throttle.take(j.to.chat); {
			case text == j.statusText:
				sent = seq
			case d > 0:
				if wait == 0 || d < wait {
					wait = d
				}
			default:
				j.show(text)
				sent = seq
			}
		}
		if wait > 0 {
			timer.Reset(wait)
		}
	}
}

// show sends the status message, or edits it. Failures are skipped: a
// later state will try again.
func (j *job) show(text string) {
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	var err error
	if j.statusID == 0 {
		var m *models.Message
		m, err = j.b.api.SendMessage(ctx, &bot.SendMessageParams{ChatID: j.to.chat, MessageThreadID: j.to.thread,
			Text: fit(text, maxMessageLen), ReplyParameters: replyParams(j.to), LinkPreviewOptions: noPreview()})
		if err == nil {
			j.statusID = m.ID
		}
	} else {
		_, err = j.b.api.EditMessageText(ctx, &bot.EditMessageTextParams{ChatID: j.to.chat, MessageID: j.statusID,
			Text: fit(text, maxMessageLen), LinkPreviewOptions: noPreview()})
		if err != nil && strings.Contains(err.Error(), "message is not modified") {
			err = nil
		}
	}
	if err != nil {
		if d := retryAfter(err); d > 0 {
			j.b.throttle.hold(j.to.chat, d)
		}
		j.b.log.Debug("telegram: status update skipped", "chat", j.to.chat, "err", j.b.redact(err))
		return
	}
	j.statusText = text
}

func (j *job) action() {
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	if _, err := j.b.api.SendChatAction(ctx, &bot.SendChatActionParams{ChatID: j.to.chat, MessageThreadID: j.to.thread,
		Action: models.ChatActionUploadPhoto}); err != nil {
		j.b.log.Debug("telegram: chat action failed", "chat", j.to.chat, "err", j.b.redact(err))
	}
}

// callbackAnswer answers a callback query exactly once: Telegram keeps the
// button's spinner until it is answered.
type callbackAnswer struct {
	b    *Bot
	id   string
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
			c.b.log.Warn("telegram: answerCallbackQuery failed", "err", c.b.redact(err))
		}
	})
}

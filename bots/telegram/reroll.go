package telegram

import (
	"context"
	"strconv"
	"strings"

	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/bots/chat"
	"github.com/imaginebot/imaginebot/core"
)

// reroll handles a press on a result's 🔄 button: the same prompt, model and
// options again, charged to whoever pressed it, in that chat's scope, as a
// reply to the result. The query is always answered.
func (b *Bot) reroll(ctx context.Context, cq *models.CallbackQuery, seq uint64) {
	pr, ok := b.press(ctx, cq, rerollButton)
	defer pr.cb.answer(ctx, "", false) // whatever happened, stop the spinner
	if !ok {
		return
	}
	where, to, lang, cb, key := pr.chat, pr.to, pr.lang, pr.cb, pr.key
	scope := ScopeOf(where)
	if scope == "" || cq.From.IsBot {
		cb.answer(ctx, tr(lang).T("button.no_reroll_here"), true)
		return
	}
	job, err := b.svc.Job(ctx, key)
	if err == nil && !b.sameChat(job, where.ID) {
		// Buttons only ever carry jobs of their own chat; anything else is
		// crafted data fishing for another chat's prompt.
		err = &core.Error{Code: core.CodeNotFound}
	}
	if err != nil {
		if core.ErrorCode(err) != core.CodeNotFound {
			b.log.Warn("telegram: reroll lookup failed", "job", key, "err", err)
		}
		cb.answer(ctx, tr(lang).T("button.image_gone"), true)
		return
	}
	req := core.Request{
		Key:     keyCallbackPrefix + cq.ID,
		Seq:     seq,
		User:    coreUser(&cq.From),
		Scope:   scope,
		Lang:    lang,
		Prompt:  job.Prompt,
		Model:   job.Model,
		Options: job.Options,
		AsIs:    true, // the original job again, not the presser's settings
		ReplyTo: to.replyTo(),
	}
	busy := chat.RerollKey(req.User, key)
	if !b.busy.Start(busy) {
		// A double tap: the first press is still making it.
		cb.answer(ctx, tr(lang).T("button.already"), false)
		return
	}
	b.runJob(ctx, req, to, cb, func() { b.busy.Done(busy) })
}

// press is a button press, read: where, in whose language, for which job.
type press struct {
	chat models.Chat
	to   target
	lang core.Lang
	cb   *callbackAnswer
	key  string
}

// press reads a press of a button of kind; false (answered already) when
// its data is not, or no longer, one of ours.
func (b *Bot) press(ctx context.Context, cq *models.CallbackQuery, kind buttonKind) (press, bool) {
	chat, to := pressedOn(cq)
	p := press{chat: chat, to: to, lang: b.langOf(ctx, ScopeOf(chat), &cq.From), cb: &callbackAnswer{b: b, id: cq.ID}}
	key, ok := b.buttonKey(kind, cq.Data)
	if !ok {
		p.cb.answer(ctx, tr(p.lang).T("button.expired"), true)
		return p, false
	}
	p.key = key
	return p, true
}

// pressedOn is the chat and message whose button cq pressed; the zero chat
// when Telegram sent neither.
func pressedOn(cq *models.CallbackQuery) (models.Chat, target) {
	switch m := cq.Message; {
	case m.Message != nil:
		return m.Message.Chat, replyTarget(m.Message)
	case m.InaccessibleMessage != nil && m.InaccessibleMessage.Chat.ID != 0:
		// Too old for Telegram to show us; its chat and id still work.
		chat := m.InaccessibleMessage.Chat
		return chat, target{chat: chat.ID, msg: m.InaccessibleMessage.MessageID}
	}
	return models.Chat{}, target{}
}

// sameChat reports whether job was made in chat (its reply target's chat).
func (b *Bot) sameChat(job core.Job, chat int64) bool {
	if !strings.HasPrefix(job.Key, "telegram:") {
		return false
	}
	t, ok := parseReplyTo(job.ReplyTo)
	return ok && t.chat == chat
}

// taskAction handles a press on a Midjourney button under a result (U2,
// V1, 🔄, …): that action on the result's task, for whoever pressed it and
// charged to them, as a reply to the result.
func (b *Bot) taskAction(ctx context.Context, cq *models.CallbackQuery, seq uint64) {
	pr, ok := b.press(ctx, cq, taskButton)
	defer pr.cb.answer(ctx, "", false) // whatever happened, stop the spinner
	if !ok {
		b.svc.Abandon(seq)
		return
	}
	idx, key, _ := strings.Cut(pr.key, "#")
	n, err := strconv.Atoi(idx)
	job, jerr := b.svc.Job(ctx, key)
	base := core.Request{Key: keyCallbackPrefix + cq.ID, Seq: seq, User: coreUser(&cq.From), Scope: ScopeOf(pr.chat), Lang: pr.lang, ReplyTo: pr.to.replyTo()}
	req, ok := chat.ActionRequest(job, n, base)
	if err != nil || jerr != nil || !ok || base.Scope == "" || cq.From.IsBot || !b.sameChat(job, pr.chat.ID) {
		b.svc.Abandon(seq)
		pr.cb.answer(ctx, tr(pr.lang).T("button.image_gone"), true)
		return
	}
	b.runJob(ctx, req, pr.to, pr.cb, nil)
}

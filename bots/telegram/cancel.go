package telegram

import (
	"context"

	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/core"
)

// cancel handles a press on a status message's ✖ button: core ends the job
// if the presser asked for it or moderates the chat, refunds it, and
// reports its end like any failure (the status becomes the cancelled
// notice). The query is always answered.
func (b *Bot) cancel(ctx context.Context, cq *models.CallbackQuery) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	pr, ok := b.press(ctx, cq, cancelButton)
	defer pr.cb.answer(ctx, "", false) // whatever happened, stop the spinner
	if !ok {
		return
	}
	chat, lang, cb, key := pr.chat, pr.lang, pr.cb, pr.key
	job, err := b.svc.Job(ctx, key)
	if err == nil && (ScopeOf(chat) == "" || cq.From.IsBot || !b.sameChat(job, chat.ID)) {
		// Core checks the presser's role in the chat the button is in, so
		// a button must only ever end a job of that chat: anything else is
		// crafted data.
		err = &core.Error{Code: core.CodeNotFound}
	}
	if err == nil {
		actor := core.Actor{User: coreUser(&cq.From), Role: core.RoleUser}
		if job.Account.User != actor.User.Key() {
			actor.Role = b.role(ctx, chat, cq.From.ID) // the requester needs no getChatMember
		}
		err = b.svc.Cancel(ctx, actor, key)
	}
	switch code := core.ErrorCode(err); code {
	case "":
		cb.answer(ctx, tr(lang).T("button.cancelling"), false)
	case core.CodeForbidden:
		cb.answer(ctx, tr(lang).T("button.not_yours"), true)
	default:
		if code != core.CodeNotFound && code != core.CodeConflict {
			b.log.Warn("telegram: cancel failed", "job", key, "err", err)
		}
		cb.answer(ctx, tr(lang).Error(err, syntax), true)
	}
}

// cancelKeyboard is the status message's ✖ button for the job key.
func (b *Bot) cancelKeyboard(key string, lang core.Lang) *keyboard {
	return b.jobKeyboard(cancelButton, key, tr(lang).T("button.cancel"))
}

package discord

import (
	"context"
	"time"

	"github.com/imaginebot/imaginebot/bots/catalog"
	"github.com/imaginebot/imaginebot/core"
)

// NotifyInterrupted tells the users of jobs a crash interrupted (already
// refunded by core's Recover) what happened: in the reply while its token
// lasts, else in a new message that mentions them. A notice that reached
// them is marked done, so the next start does not repeat it.
func (b *Bot) NotifyInterrupted(ctx context.Context, jobs []core.Job) {
	for _, j := range jobs {
		ref, ok := parseReplyRef(j.ReplyTo)
		if !ok {
			b.log.Warn("discord: interrupted job has no reply target", "job", j.Key)
			continue
		}
		code := j.Outcome
		if code == "" {
			code = core.CodeInterrupted
		}
		lang := j.Lang
		text := catalog.For(lang).Error(&core.Error{Code: code}, b.syntax(lang))
		var err error
		if time.Since(ref.at) < tokenLife && ref.token != "" {
			err = b.editJobText(ctx, j.Key, ref.token, text, 0)
		}
		if err != nil || time.Since(ref.at) >= tokenLife || ref.token == "" {
			err = b.channelPost(ctx, j.Key, ref.channel, ref.user, message{Content: fit("<@"+ref.user+"> "+text, maxContent)}, 0)
		}
		if err != nil {
			continue // told next time
		}
		if err := b.svc.Notified(ctx, j.Key); err != nil {
			b.log.Warn("discord: could not record the notice", "job", j.Key, "err", err)
		}
	}
}

package discord

import (
	"context"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/catalog"
	"github.com/imaginebot/imaginebot/bots/chat"
	"github.com/imaginebot/imaginebot/core"
)

// quotaAdmin handles /quota-admin <subcommand>: moderators' operations on
// the accounts of this server (owners: also in DMs). Answers only the
// moderator sees; core checks the role and audits every change.
func (b *Bot) quotaAdmin(ctx context.Context, p person, data discordgo.ApplicationCommandInteractionData, ack ackFunc) {
	pr := catalog.For(p.lang)
	if len(data.Options) != 1 || data.Options[0].Type != discordgo.ApplicationCommandOptionSubCommand {
		_ = ack(ctx, ephemeral(pr.Error(&core.Error{Code: core.CodeInvalidArgument}, b.syntax(p.lang))))
		return
	}
	subcmd := data.Options[0]
	o := options(subcmd.Options)
	a := chat.Action{Name: subcmd.Name, Actor: core.Actor{User: p.core(), Role: b.role(p)}, Scope: p.scope()}
	switch a.Name {
	case chat.History, chat.Audit:
		a.N = 20
		if n, ok := integer(o[optLimit]); ok {
			a.N = n
		}
	default:
		a.N, _ = integer(o[optAmount]) // 0 for grant or revoke is refused by core
	}
	if n, ok := integer(o[optDaily]); ok {
		a.Daily = &n
	}
	if u, ok := o[optUser]; ok && u.Type == discordgo.ApplicationCommandOptionUser {
		id, _ := u.Value.(string)
		a.Target = core.User{Platform: core.PlatformDiscord, ID: id}.Key()
		a.Who = userName(resolvedUser(data.Resolved, id))
	} else if a.Name != chat.ScopeDaily && a.Name != chat.Audit {
		a.Name = "" // every other action is about a member
	}
	text, err := chat.Do(ctx, b.svc, a, pr, b.svc.Limits().Quotas.Location)
	if err != nil {
		text = pr.Error(err, b.syntax(p.lang))
	}
	_ = ack(ctx, ephemeral(text))
}

// integer reads an integer option (Discord sends JSON numbers).
func integer(o *discordgo.ApplicationCommandInteractionDataOption) (int, bool) {
	if o == nil || o.Type != discordgo.ApplicationCommandOptionInteger {
		return 0, false
	}
	f, ok := o.Value.(float64)
	return int(f), ok
}

func resolvedUser(r *discordgo.ApplicationCommandInteractionDataResolved, id string) *discordgo.User {
	if r != nil && r.Users != nil {
		if u, ok := r.Users[id]; ok && u != nil {
			return u
		}
	}
	return &discordgo.User{ID: id}
}

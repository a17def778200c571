package discord

import (
	"context"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/catalog"
	"github.com/imaginebot/imaginebot/core"
)

// quotaAdmin handles /quota-admin <subcommand>: moderators' operations on
// the accounts of this server (owners: also in DMs). Answers only the
// moderator sees; core checks the role and audits every change.
func (b *Bot) quotaAdmin(ctx context.Context, i *discordgo.Interaction, p person, data discordgo.ApplicationCommandInteractionData, ack ackFunc) {
	pr := catalog.For(p.lang)
	fail := func(err error) { _ = ack(ctx, ephemeral(pr.Error(err, b.syntax(p.lang)))) }
	if len(data.Options) != 1 || data.Options[0].Type != discordgo.ApplicationCommandOptionSubCommand {
		fail(&core.Error{Code: core.CodeInvalidArgument})
		return
	}
	subcmd := data.Options[0]
	o := options(subcmd.Options)
	actor := core.Actor{User: p.core(), Role: b.role(p)}
	scope := p.scope()
	loc := b.svc.Limits().Quotas.Location

	limit := 20
	if n, ok := integer(o[optLimit]); ok {
		limit = n
	}
	var daily *int
	if n, ok := integer(o[optDaily]); ok {
		daily = &n
	}
	switch subcmd.Name {
	case "scope-daily":
		eff, err := b.svc.SetScopeDaily(ctx, actor, scope, daily)
		if err != nil {
			fail(err)
			return
		}
		_ = ack(ctx, ephemeral(pr.T("mod.scope_daily", "Daily", eff)))
		return
	case "audit":
		entries, err := b.svc.AuditLog(ctx, actor, scope, limit)
		if err != nil {
			fail(err)
			return
		}
		_ = ack(ctx, ephemeral(pr.Audit(entries, catalog.AuditLine{Location: loc})))
		return
	}

	target, ok := o[optUser]
	if !ok || target.Type != discordgo.ApplicationCommandOptionUser {
		fail(&core.Error{Code: core.CodeInvalidArgument})
		return
	}
	id, _ := target.Value.(string)
	name := userName(resolvedUser(data.Resolved, id))
	if name == "" {
		name = id
	}
	k := core.AccountKey{Scope: scope, User: core.User{Platform: core.PlatformDiscord, ID: id}.Key()}
	amount, _ := integer(o[optAmount])

	var v core.AccountView
	var head string
	var err error
	switch subcmd.Name {
	case "show":
		v, err = b.svc.Show(ctx, actor, k)
	case "history":
		jobs, err := b.svc.History(ctx, actor, k, limit)
		if err != nil {
			fail(err)
			return
		}
		_ = ack(ctx, ephemeral(pr.History(jobs, name, loc)))
		return
	case "grant":
		v, err = b.svc.Grant(ctx, actor, k, amount)
		head = pr.N("mod.granted", amount, "Name", name)
	case "revoke":
		v, err = b.svc.Revoke(ctx, actor, k, amount)
		head = pr.N("mod.revoked", amount, "Name", name)
	case "set-daily":
		v, err = b.svc.SetDaily(ctx, actor, k, daily)
		if daily != nil {
			head = pr.T("mod.set_daily", "Name", name, "Daily", *daily)
		} else {
			head = pr.T("mod.daily_default", "Name", name)
		}
	case "reset":
		v, err = b.svc.ResetToday(ctx, actor, k)
		head = pr.T("mod.reset", "Name", name)
	case "ban":
		v, err = b.svc.Ban(ctx, actor, k)
		head = pr.T("mod.banned", "Name", name)
	case "unban":
		v, err = b.svc.Unban(ctx, actor, k)
		head = pr.T("mod.unbanned", "Name", name)
	default:
		err = &core.Error{Code: core.CodeInvalidArgument}
	}
	if err != nil {
		fail(err)
		return
	}
	text := pr.View(v, name)
	if head != "" {
		text = head + "\n\n" + text
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
	if r == nil || r.Users == nil {
		return &discordgo.User{ID: id}
	}
	if u, ok := r.Users[id]; ok && u != nil {
		return u
	}
	return &discordgo.User{ID: id}
}

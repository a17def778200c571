package discord

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/catalog"
	"github.com/imaginebot/imaginebot/bots/chat"
	"github.com/imaginebot/imaginebot/core"
)

// ackFunc sends an interaction's first response. handle calls it exactly
// once, within Discord's 3 seconds.
type ackFunc func(ctx context.Context, r *discordgo.InteractionResponse) error

// Custom id prefixes of the buttons: the job key follows (≤ 100 bytes).
const (
	rerollPrefix = "rr:"
	cancelPrefix = "cx:"
	taskPrefix   = "mj" // + button index + ":" + job key
)

// ackTimeout bounds the acknowledgement: Discord drops it after 3 s.
const ackTimeout = 2500 * time.Millisecond

// uploadLimit reads the attachment limit Discord puts in an interaction
// (it knows the server's boost level); discordgo's type lacks the field.
func uploadLimit(raw []byte) int64 {
	var v struct {
		Limit int64 `json:"attachment_size_limit"`
	}
	_ = json.Unmarshal(raw, &v)
	return v.Limit
}

// person is who sent an interaction, and where.
type person struct {
	user    *discordgo.User
	member  *discordgo.Member // nil in DMs
	guild   string            // "" in DMs
	channel string
	lang    core.Lang // the user's /settings choice here, else platform
	locale  core.Lang // their Discord client's language
	upload  int64     // the interaction's attachment limit; 0 = unknown
}

func personOf(i *discordgo.Interaction) (person, bool) {
	p := person{guild: i.GuildID, channel: i.ChannelID, lang: catalog.Match(string(i.Locale))}
	switch {
	case i.Member != nil && i.Member.User != nil: // guilds: User is nil
		p.user, p.member = i.Member.User, i.Member
	case i.User != nil: // DMs: Member is nil
		p.user = i.User
	default:
		return p, false
	}
	return p, p.user.ID != "" && !p.user.Bot
}

func (p person) scope() string {
	if p.guild == "" {
		return "discord:dm"
	}
	return "discord:guild:" + p.guild
}

func (p person) core() core.User {
	return core.User{Platform: core.PlatformDiscord, ID: p.user.ID, Name: userName(p.user)}
}

// userName is how a user appears in views: their display name, else their
// username.
func userName(u *discordgo.User) string {
	if u == nil {
		return ""
	}
	name := strings.TrimSpace(u.GlobalName)
	if name == "" {
		name = u.Username
	}
	if name == "" {
		return u.ID
	}
	return "@" + core.Truncate(name, 64)
}

// role is what the person may do here: owners everywhere; in a guild,
// members who can manage it and members of the moderator roles.
func (b *Bot) role(p person) core.Role {
	if b.owners[p.user.ID] {
		return core.RoleOwner
	}
	if p.member == nil {
		return core.RoleUser
	}
	if p.member.Permissions&(discordgo.PermissionManageGuild|discordgo.PermissionAdministrator) != 0 {
		return core.RoleModerator
	}
	for _, r := range p.member.Roles {
		if b.modRole[r] {
			return core.RoleModerator
		}
	}
	return core.RoleUser
}

// handle answers one interaction from either connection mode. A panic in it
// is caught: the operator gets the stack, the user an apology.
func (b *Bot) handle(ctx context.Context, i *discordgo.Interaction, upload int64, ack ackFunc) {
	acked := false
	once := func(ctx context.Context, r *discordgo.InteractionResponse) error {
		if acked {
			return nil
		}
		acked = true
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
		defer cancel()
		return ack(actx, r)
	}
	p, ok := personOf(i)
	p.upload, p.locale = upload, p.lang
	if ok {
		if prefs, err := b.svc.Prefs(ctx, core.AccountKey{Scope: p.scope(), User: p.core().Key()}); err == nil {
			p.lang = chat.Lang(prefs, p.locale)
		} else {
			b.log.Warn("discord: settings lookup failed", "err", err)
		}
	}
	defer func() {
		if r := recover(); r != nil {
			var err error
			func() {
				defer b.recovered("interaction", &err)
				panic(r)
			}()
			text := catalog.For(p.lang).Error(err, b.syntax(p.lang))
			if !acked {
				_ = once(ctx, ephemeral(text))
				return
			}
			b.inflight.Add(1)
			go func() {
				defer b.inflight.Done()
				_ = b.editText(context.WithoutCancel(ctx), i.Token, text, 0)
			}()
		}
	}()
	if b.panicHook != nil {
		b.panicHook("interaction")
	}
	if !ok {
		_ = once(ctx, ephemeral(catalog.For(p.lang).Error(&core.Error{Code: core.CodeInvalidArgument}, b.syntax(p.lang))))
		return
	}
	if p.guild == "" && !b.cfg.AllowDMs && i.Type != discordgo.InteractionPing {
		_ = once(ctx, ephemeral(catalog.For(p.lang).T("discord.dm_off")))
		return
	}
	switch i.Type {
	case discordgo.InteractionApplicationCommand:
		data := i.ApplicationCommandData()
		switch data.Name {
		case cmdImagine:
			b.imagine(ctx, i, p, data, once)
		case cmdQuota:
			b.quota(ctx, p, once)
		case cmdHelp:
			b.help(ctx, p, once)
		case cmdQuotaAdmin:
			b.quotaAdmin(ctx, p, data, once)
		case cmdSettings:
			b.settings(ctx, p, data, once)
		default:
			_ = once(ctx, ephemeral(catalog.For(p.lang).T("discord.unknown_command")))
		}
	case discordgo.InteractionMessageComponent:
		id := i.MessageComponentData().CustomID
		switch {
		case strings.HasPrefix(id, rerollPrefix):
			b.reroll(ctx, i, p, strings.TrimPrefix(id, rerollPrefix), once)
		case strings.HasPrefix(id, cancelPrefix):
			b.cancel(ctx, p, strings.TrimPrefix(id, cancelPrefix), once)
		case strings.HasPrefix(id, taskPrefix):
			b.taskAction(ctx, i, p, strings.TrimPrefix(id, taskPrefix), once)
		default:
			_ = once(ctx, ephemeral(catalog.For(p.lang).T("button.expired")))
		}
	default:
		// Autocomplete and modals are not used; answer so Discord does not
		// show a failure.
		_ = once(ctx, &discordgo.InteractionResponse{Type: discordgo.InteractionResponseDeferredMessageUpdate})
	}
	if !acked {
		_ = once(ctx, ephemeral(catalog.For(p.lang).Error(&core.Error{Code: core.CodeInternal}, b.syntax(p.lang))))
	}
}

// noMentions pings nobody: prompts and names are untrusted.
func noMentions() *discordgo.MessageAllowedMentions { return &discordgo.MessageAllowedMentions{} }

// ephemeral is a reply only the person sees.
func ephemeral(text string) *discordgo.InteractionResponse {
	return &discordgo.InteractionResponse{Type: discordgo.InteractionResponseChannelMessageWithSource,
		Data: &discordgo.InteractionResponseData{Content: fit(text, maxContent), Flags: discordgo.MessageFlagsEphemeral, AllowedMentions: noMentions()}}
}

// Discord's text limits.
const (
	maxContent     = 2000
	maxDescription = 4096
	maxFooter      = 2048
)

// fit cuts s to limit characters, ending with "…" when cut.
func fit(s string, limit int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len([]rune(s)) <= limit {
		return s
	}
	return core.Truncate(s, limit-1) + "…"
}

// syntax is how Discord users in lang type commands and options: the names
// their client shows them.
func (b *Bot) syntax(lang core.Lang) catalog.Syntax {
	p := catalog.For(lang)
	name := func(n string) string { return p.T("discord.name." + n) }
	return catalog.Syntax{
		Platform: "discord", Help: "/" + name(cmdHelp), Imagine: "/" + name(cmdImagine), Sep: ":", Prefix: "--",
		Prompt: name(optPrompt) + ":",
		Names:  map[string]string{core.OptionModel: name(optModel), core.OptionAspect: name(optAspect), core.OptionNegative: name(optNegative)},
	}
}

// options maps a command's options by name.
func options(opts []*discordgo.ApplicationCommandInteractionDataOption) map[string]*discordgo.ApplicationCommandInteractionDataOption {
	m := make(map[string]*discordgo.ApplicationCommandInteractionDataOption, len(opts))
	for _, o := range opts {
		m[o.Name] = o
	}
	return m
}

func str(o *discordgo.ApplicationCommandInteractionDataOption) string {
	if o == nil || o.Type != discordgo.ApplicationCommandOptionString {
		return ""
	}
	s, _ := o.Value.(string)
	return s
}

// imagine handles /imagine prompt:… [model] [aspect] [negative].
func (b *Bot) imagine(ctx context.Context, i *discordgo.Interaction, p person, data discordgo.ApplicationCommandInteractionData, ack ackFunc) {
	seq := b.svc.Arrival() // the arrival order, taken before anything else
	o := options(data.Options)
	req := core.Request{
		Key: "discord:interaction:" + i.ID, Seq: seq, User: p.core(), Scope: p.scope(), Lang: p.lang,
		Prompt: str(o[optPrompt]), Model: str(o[optModel]),
		Options: core.Options{Aspect: str(o[optAspect]), Negative: str(o[optNegative])},
	}
	if a := attachment(data, o[optImage]); a != nil {
		// Fetched and checked before anything is reserved; Discord's 3
		// seconds allow a picture of a few MiB from its CDN.
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		in, err := b.download(dctx, a)
		cancel()
		if err != nil {
			b.svc.Abandon(seq)
			b.log.Info("discord: input picture refused", "code", core.ErrorCode(err), "err", err)
			_ = ack(ctx, ephemeral(catalog.For(p.lang).Error(err, b.syntax(p.lang))))
			return
		}
		req.Input = in
	}
	b.runJob(ctx, i, p, req, ack, nil)
}

// reroll handles 🔄 under a result: the same prompt, model and options,
// charged to whoever pressed it, as a new reply.
func (b *Bot) reroll(ctx context.Context, i *discordgo.Interaction, p person, key string, ack ackFunc) {
	seq := b.svc.Arrival()
	job, err := b.svc.Job(ctx, key)
	if err == nil && job.Account.Scope != p.scope() {
		// A button only ever carries a job of its own server; anything else
		// is crafted, fishing for another server's prompt.
		err = &core.Error{Code: core.CodeNotFound}
	}
	if err != nil {
		b.svc.Abandon(seq)
		if core.ErrorCode(err) != core.CodeNotFound {
			b.log.Warn("discord: reroll lookup failed", "job", key, "err", err)
		}
		_ = ack(ctx, ephemeral(catalog.For(p.lang).T("button.image_gone")))
		return
	}
	req := core.Request{Key: "discord:interaction:" + i.ID, Seq: seq, User: p.core(), Scope: p.scope(), Lang: p.lang,
		Prompt: job.Prompt, Model: job.Model, Options: job.Options, AsIs: true}
	busy := chat.RerollKey(req.User, key)
	if !b.busy.Start(busy) {
		// A double tap: the first press is still making it.
		b.svc.Abandon(seq)
		_ = ack(ctx, ephemeral(catalog.For(p.lang).T("button.already")))
		return
	}
	b.runJob(ctx, i, p, req, ack, func() { b.busy.Done(busy) })
}

// taskAction handles a Midjourney button under a result (U2, V1, 🔄, …):
// that action on the result's task, for whoever pressed it and charged to
// them, as a new reply.
func (b *Bot) taskAction(ctx context.Context, i *discordgo.Interaction, p person, rest string, ack ackFunc) {
	seq := b.svc.Arrival()
	idx, key, _ := strings.Cut(rest, ":")
	n, err := strconv.Atoi(idx)
	job, jerr := b.svc.Job(ctx, key)
	base := core.Request{Key: "discord:interaction:" + i.ID, Seq: seq, User: p.core(), Scope: p.scope(), Lang: p.lang}
	req, ok := chat.ActionRequest(job, n, base)
	if err != nil || jerr != nil || !ok || job.Account.Scope != p.scope() {
		// Unknown, gone, or crafted for another server's job.
		b.svc.Abandon(seq)
		_ = ack(ctx, ephemeral(catalog.For(p.lang).T("button.image_gone")))
		return
	}
	b.runJob(ctx, i, p, req, ack, nil)
}

// cancel handles ✖ under a job in progress: its requester or a moderator
// may stop it, and it is refunded.
func (b *Bot) cancel(ctx context.Context, p person, key string, ack ackFunc) {
	pr := catalog.For(p.lang)
	err := b.svc.Cancel(ctx, core.Actor{User: p.core(), Role: b.role(p)}, key)
	var text string
	switch core.ErrorCode(err) {
	case "":
		text = pr.T("button.cancelling")
	case core.CodeForbidden:
		text = pr.T("button.not_yours")
	default:
		text = pr.Error(err, b.syntax(p.lang))
	}
	_ = ack(ctx, ephemeral(text))
}

// quota handles /quota: what the person has left here, only for them.
func (b *Bot) quota(ctx context.Context, p person, ack ackFunc) {
	pr := catalog.For(p.lang)
	bal, err := b.svc.Balance(ctx, core.AccountKey{Scope: p.scope(), User: p.core().Key()})
	if err != nil {
		_ = ack(ctx, ephemeral(pr.Error(err, b.syntax(p.lang))))
		return
	}
	_ = ack(ctx, ephemeral(pr.Self(bal, time.Now())))
}

// settings handles /settings [model] [aspect] [language] [reset]: the
// person's defaults in this server, only for them.
func (b *Bot) settings(ctx context.Context, p person, data discordgo.ApplicationCommandInteractionData, ack ackFunc) {
	o := options(data.Options)
	var c chat.Change
	value := func(name string) *string {
		v, ok := o[name]
		if !ok {
			return nil
		}
		s := str(v)
		if s == choiceDefault {
			s = ""
		}
		return &s
	}
	c.Model, c.Aspect = value(optModel), value(optAspect)
	if l := value(optLanguage); l != nil {
		lang := core.Lang(*l)
		if lang != "" && !slices.Contains(catalog.Default().Langs(), lang) {
			_ = ack(ctx, ephemeral(catalog.For(p.lang).T("settings.unknown_lang", "Value", core.Truncate(*l, 40))))
			return
		}
		c.Lang = &lang
	}
	if r, ok := o[optReset]; ok && r.Type == discordgo.ApplicationCommandOptionBoolean {
		c.Reset, _ = r.Value.(bool)
	}
	text, _, err := chat.ApplySettings(ctx, b.svc, core.AccountKey{Scope: p.scope(), User: p.core().Key()}, c, p.locale, b.svc.Models(), "settings.hint_discord")
	if err != nil {
		text = catalog.For(p.lang).Error(err, b.syntax(p.lang))
	}
	_ = ack(ctx, ephemeral(text))
}

// help handles /help, only for the person.
func (b *Bot) help(ctx context.Context, p person, ack ackFunc) {
	var balp *core.Balance
	if bal, err := b.svc.Balance(ctx, core.AccountKey{Scope: p.scope(), User: p.core().Key()}); err == nil {
		balp = &bal
	}
	text := catalog.For(p.lang).Help(catalog.Help{How: "help.how_discord", Models: b.svc.Models(), Limits: b.svc.Limits(), Balance: balp}, b.syntax(p.lang))
	_ = ack(ctx, ephemeral(text))
}

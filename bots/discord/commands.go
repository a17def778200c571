package discord

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/catalog"
	"github.com/imaginebot/imaginebot/bots/pace"
	"github.com/imaginebot/imaginebot/core"
)

// Command and option names (English; Discord shows the localized ones to
// zh-CN and zh-TW clients and always sends these).
const (
	cmdImagine    = "imagine"
	cmdQuota      = "quota"
	cmdHelp       = "help"
	cmdQuotaAdmin = "quota-admin"
	cmdSettings   = "settings"

	optPrompt   = "prompt"
	optModel    = "model"
	optAspect   = "aspect"
	optNegative = "negative"
	optImage    = "image"
	optUser     = "user"
	optAmount   = "amount"
	optDaily    = "daily"
	optLimit    = "limit"
	optLanguage = "language"
	optReset    = "reset"

	// choiceDefault puts a setting back to its default.
	choiceDefault = "default"
)

// locales maps the catalogue's languages to the Discord locales that get
// their localizations.
var locales = map[core.Lang][]discordgo.Locale{
	core.SimplifiedChinese:  {discordgo.ChineseCN},
	core.TraditionalChinese: {discordgo.ChineseTW},
}

// aspects are the aspect choices, by catalogue id.
var aspects = []struct{ id, value string }{
	{"discord.aspect.square", "1:1"}, {"discord.aspect.landscape", "16:9"}, {"discord.aspect.portrait", "9:16"},
	{"discord.aspect.photo", "3:2"}, {"discord.aspect.photo_portrait", "2:3"}, {"discord.aspect.classic", "4:3"},
}

// localized is id in every language but English, by Discord locale.
func localized(id string) map[discordgo.Locale]string {
	m := map[discordgo.Locale]string{}
	for lang, locs := range locales {
		for _, l := range locs {
			m[l] = catalog.For(lang).T(id)
		}
	}
	return m
}

func en(id string) string { return catalog.For(core.English).T(id) }

func option(t discordgo.ApplicationCommandOptionType, name, desc string, required bool) *discordgo.ApplicationCommandOption {
	o := &discordgo.ApplicationCommandOption{Type: t, Name: name, Description: en(desc), DescriptionLocalizations: localized(desc), Required: required}
	if catalog.For(core.English).Has("discord.name." + name) {
		o.NameLocalizations = localized("discord.name." + name)
	}
	return o
}

func command(name string, opts ...*discordgo.ApplicationCommandOption) *discordgo.ApplicationCommand {
	nl, dl := localized("discord.name."+name), localized("discord.desc."+name)
	return &discordgo.ApplicationCommand{Type: discordgo.ChatApplicationCommand, Name: name, Description: en("discord.desc." + name),
		NameLocalizations: &nl, DescriptionLocalizations: &dl, Options: opts}
}

func sub(name string, opts ...*discordgo.ApplicationCommandOption) *discordgo.ApplicationCommandOption {
	if opts == nil {
		opts = []*discordgo.ApplicationCommandOption{}
	}
	return &discordgo.ApplicationCommandOption{Type: discordgo.ApplicationCommandOptionSubCommand, Name: name,
		Description: en("discord.sub." + name), DescriptionLocalizations: localized("discord.sub." + name), Options: opts}
}

// commands are the bot's slash commands for models ms.
func (b *Bot) commands(ms []core.Model, maxPrompt int) []*discordgo.ApplicationCommand {
	prompt := option(discordgo.ApplicationCommandOptionString, optPrompt, "discord.desc.prompt", true)
	prompt.MaxLength = min(max(maxPrompt, 1), 6000)
	model := option(discordgo.ApplicationCommandOptionString, optModel, "discord.desc.model", false)
	for _, m := range ms[:min(len(ms), 25)] { // Discord allows 25 choices
		model.Choices = append(model.Choices, &discordgo.ApplicationCommandOptionChoice{Name: core.Truncate(m.DisplayName(), 100), Value: m.Name})
	}
	aspect := option(discordgo.ApplicationCommandOptionString, optAspect, "discord.desc.aspect", false)
	for _, a := range aspects {
		aspect.Choices = append(aspect.Choices, &discordgo.ApplicationCommandOptionChoice{Name: en(a.id), NameLocalizations: localized(a.id), Value: a.value})
	}
	negative := option(discordgo.ApplicationCommandOptionString, optNegative, "discord.desc.negative", false)
	negative.MaxLength = prompt.MaxLength
	imagine := []*discordgo.ApplicationCommandOption{prompt}
	if len(ms) > 1 {
		imagine = append(imagine, model)
	}
	imagine = append(imagine, aspect, negative)
	if slices.ContainsFunc(ms, func(m core.Model) bool { return m.AcceptsImage }) {
		imagine = append(imagine, option(discordgo.ApplicationCommandOptionAttachment, optImage, "discord.desc.image", false))
	}

	user := func() *discordgo.ApplicationCommandOption {
		return option(discordgo.ApplicationCommandOptionUser, optUser, "discord.desc.user", true)
	}
	one := 1.0
	amount := func() *discordgo.ApplicationCommandOption {
		o := option(discordgo.ApplicationCommandOptionInteger, optAmount, "discord.desc.amount", true)
		o.MinValue, o.MaxValue = &one, 1_000_000
		return o
	}
	zero := 0.0
	daily := option(discordgo.ApplicationCommandOptionInteger, optDaily, "discord.desc.daily", false)
	daily.MinValue, daily.MaxValue = &zero, 1_000_000
	limit := func() *discordgo.ApplicationCommandOption {
		o := option(discordgo.ApplicationCommandOptionInteger, optLimit, "discord.desc.limit", false)
		o.MinValue, o.MaxValue = &one, 50
		return o
	}
	admin := command(cmdQuotaAdmin,
		sub("show", user()), sub("grant", user(), amount()), sub("revoke", user(), amount()),
		sub("set-daily", user(), daily), sub("scope-daily", daily), sub("reset", user()),
		sub("ban", user()), sub("unban", user()), sub("history", user(), limit()), sub("audit", limit()))
	// Hidden from members who cannot manage the server; servers may widen it
	// (moderator roles), and the bot checks the role itself anyway.
	manage := int64(discordgo.PermissionManageGuild)
	admin.DefaultMemberPermissions = &manage

	cmds := []*discordgo.ApplicationCommand{command(cmdImagine, imagine...), command(cmdQuota), command(cmdHelp), admin, b.settingsCommand(model, aspect)}
	contexts := []discordgo.InteractionContextType{discordgo.InteractionContextGuild}
	if b.cfg.AllowDMs {
		contexts = append(contexts, discordgo.InteractionContextBotDM)
	}
	for _, c := range cmds {
		c.Contexts = &contexts
	}
	return cmds
}

// settingsCommand is /settings: the same model and aspect choices as
// /imagine, each with "default", a language and a reset.
func (b *Bot) settingsCommand(model, aspect *discordgo.ApplicationCommandOption) *discordgo.ApplicationCommand {
	dflt := &discordgo.ApplicationCommandOptionChoice{Name: en("discord.choice_default"), NameLocalizations: localized("discord.choice_default"), Value: choiceDefault}
	withDefault := func(o *discordgo.ApplicationCommandOption) *discordgo.ApplicationCommandOption {
		c := *o
		c.Choices = append([]*discordgo.ApplicationCommandOptionChoice{dflt}, o.Choices[:min(len(o.Choices), 24)]...)
		return &c
	}
	language := option(discordgo.ApplicationCommandOptionString, optLanguage, "discord.desc.language", false)
	language.Choices = []*discordgo.ApplicationCommandOptionChoice{{Name: en("discord.lang_auto"), NameLocalizations: localized("discord.lang_auto"), Value: choiceDefault}}
	for _, l := range catalog.Default().Langs() {
		language.Choices = append(language.Choices, &discordgo.ApplicationCommandOptionChoice{Name: en("lang." + string(l)), Value: string(l)})
	}
	reset := option(discordgo.ApplicationCommandOptionBoolean, optReset, "discord.desc.reset", false)
	opts := []*discordgo.ApplicationCommandOption{withDefault(aspect), language, reset}
	if len(b.svc.Models()) > 1 {
		opts = append([]*discordgo.ApplicationCommandOption{withDefault(model)}, opts...)
	}
	return command(cmdSettings, opts...)
}

// syncCommands registers the commands where configured, only when what is
// registered differs: Discord allows 200 command creations a day.
func (b *Bot) syncCommands(ctx context.Context) error {
	want := b.commands(b.svc.Models(), b.svc.Limits().MaxPromptRunes)
	guilds := b.cfg.Guilds
	if len(guilds) == 0 {
		guilds = []string{""}
	}
	for _, g := range guilds {
		var have []*discordgo.ApplicationCommand
		err := b.botCall(ctx, func(ctx context.Context) (err error) {
			have, err = b.session.ApplicationCommands(b.cfg.ApplicationID, g, discordgo.WithContext(ctx))
			return err
		})
		if err != nil {
			b.readyErr.Store("could not read the registered commands")
			return fmt.Errorf("discord: read commands (guild %q): %w", g, err)
		}
		if sameCommands(have, want) {
			b.log.Info("discord: commands up to date", "guild", g)
			continue
		}
		err = b.botCall(ctx, func(ctx context.Context) error {
			_, err := b.session.ApplicationCommandBulkOverwrite(b.cfg.ApplicationID, g, want, discordgo.WithContext(ctx))
			return err
		})
		if err != nil {
			b.readyErr.Store("could not register the commands")
			return fmt.Errorf("discord: register commands (guild %q): %w", g, err)
		}
		b.log.Info("discord: commands registered", "guild", g, "commands", len(want))
	}
	return nil
}

// botCall paces a call made with the bot token.
func (b *Bot) botCall(ctx context.Context, fn func(ctx context.Context) error) error {
	return b.send(ctx, pace.Msg{Chat: pace.Chat{ID: botChat}, Class: pace.Reply}, fn)
}

// sameCommands compares what matters of two command lists: Discord answers
// with ids, versions and defaults the bot never sent.
func sameCommands(a, b []*discordgo.ApplicationCommand) bool {
	ca, cb := canon(a), canon(b)
	return reflect.DeepEqual(ca, cb)
}

type canonCmd struct {
	Name, Description string
	NameLoc, DescLoc  map[discordgo.Locale]string
	Perms             int64
	Contexts          []discordgo.InteractionContextType
	Options           []canonOpt
}

type canonOpt struct {
	Type              discordgo.ApplicationCommandOptionType
	Name, Description string
	NameLoc, DescLoc  map[discordgo.Locale]string
	Required          bool
	Choices           []string // name, localizations and value, as JSON
	Min               float64
	HasMin            bool
	Max               float64
	MaxLength         int
	Options           []canonOpt
}

func canon(cmds []*discordgo.ApplicationCommand) []canonCmd {
	out := make([]canonCmd, 0, len(cmds))
	for _, c := range cmds {
		cc := canonCmd{Name: c.Name, Description: c.Description, Options: canonOpts(c.Options)}
		if c.NameLocalizations != nil {
			cc.NameLoc = nonEmpty(*c.NameLocalizations)
		}
		if c.DescriptionLocalizations != nil {
			cc.DescLoc = nonEmpty(*c.DescriptionLocalizations)
		}
		if c.DefaultMemberPermissions != nil {
			cc.Perms = *c.DefaultMemberPermissions
		}
		if c.Contexts != nil {
			cc.Contexts = slices.Sorted(slices.Values(*c.Contexts))
		}
		out = append(out, cc)
	}
	slices.SortFunc(out, func(x, y canonCmd) int { return cmp.Compare(x.Name, y.Name) })
	return out
}

func canonOpts(opts []*discordgo.ApplicationCommandOption) []canonOpt {
	var out []canonOpt
	for _, o := range opts {
		co := canonOpt{Type: o.Type, Name: o.Name, Description: o.Description, NameLoc: nonEmpty(o.NameLocalizations),
			DescLoc: nonEmpty(o.DescriptionLocalizations), Required: o.Required, Max: o.MaxValue, MaxLength: o.MaxLength, Options: canonOpts(o.Options)}
		if o.MinValue != nil {
			co.Min, co.HasMin = *o.MinValue, true
		}
		for _, ch := range o.Choices {
			raw, _ := json.Marshal([]any{ch.Name, nonEmpty(ch.NameLocalizations), fmt.Sprint(ch.Value)})
			co.Choices = append(co.Choices, string(raw))
		}
		out = append(out, co)
	}
	return out
}

func nonEmpty(m map[discordgo.Locale]string) map[discordgo.Locale]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

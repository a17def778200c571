package telegram

import (
	"context"
	"strings"

	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/bots/catalog"
	"github.com/imaginebot/imaginebot/bots/chat"
	"github.com/imaginebot/imaginebot/core"
)

// langOf is the language to answer u in within scope: their /settings
// choice there, else their Telegram language.
func (b *Bot) langOf(ctx context.Context, scope string, u *models.User) core.Lang {
	platform := catalog.Match(u.LanguageCode)
	if scope == "" {
		return platform
	}
	p, err := b.svc.Prefs(ctx, core.AccountKey{Scope: scope, User: coreUser(u).Key()})
	if err != nil {
		b.log.Warn("telegram: settings lookup failed", "err", err)
		return platform
	}
	return chat.Lang(p, platform)
}

// settings handles /settings: the caller's defaults in this chat, shown or
// changed:
//
//	/settings | model NAME|default | aspect W:H|default | language auto|CODE | reset
func (b *Bot) settings(ctx context.Context, m *models.Message, args string) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	scope := ScopeOf(m.Chat)
	platform := catalog.Match(m.From.LanguageCode)
	c, bad := parseSettings(args)
	k := core.AccountKey{Scope: scope, User: coreUser(m.From).Key()}
	if bad != "" {
		lang := b.langOf(ctx, scope, m.From)
		b.replyText(ctx, m, tr(lang).T("settings.unknown_lang", "Value", fit(bad, 40)))
		return
	}
	text, _, err := chat.ApplySettings(ctx, b.svc, k, c, platform, b.svc.Models(), "settings.hint_telegram")
	if err != nil {
		text = tr(b.langOf(ctx, scope, m.From)).Error(err, syntax)
	}
	b.replyText(ctx, m, text)
}

// parseSettings reads the words after /settings; bad is a language code
// the catalogue has no language for. Anything it does not understand only
// shows the settings (with how to change them).
func parseSettings(args string) (c chat.Change, bad string) {
	f := strings.Fields(args)
	if len(f) == 0 {
		return c, ""
	}
	value := ""
	if len(f) > 1 {
		value = f[1]
	}
	if strings.EqualFold(value, "default") || strings.EqualFold(value, "auto") {
		value = ""
	}
	switch strings.ToLower(f[0]) {
	case "model":
		if len(f) == 2 {
			c.Model = &value
		}
	case "aspect", "ar":
		if len(f) == 2 {
			c.Aspect = &value
		}
	case "language", "lang":
		if len(f) != 2 {
			return c, ""
		}
		lang := core.Lang("")
		if value != "" {
			if lang = catalog.Match(value); lang == core.English && !strings.HasPrefix(strings.ToLower(value), "en") {
				return c, value
			}
		}
		c.Lang = &lang
	case "reset":
		c.Reset = true
	}
	return c, ""
}

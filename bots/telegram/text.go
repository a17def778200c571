package telegram

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/bots/catalog"
	"github.com/imaginebot/imaginebot/core"
)

// utf16Len is a text's length as Telegram counts it: in UTF-16 code units,
// so an emoji outside the BMP counts twice.
func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		n += runeUnits(r)
	}
	return n
}

func runeUnits(r rune) int {
	if r >= 0x10000 {
		return 2
	}
	return 1
}

// fit cuts s by runes so that it takes at most limit UTF-16 code units,
// ending with "…" when cut. It never splits a UTF-8 sequence.
func fit(s string, limit int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if utf16Len(s) <= limit {
		return s
	}
	if limit <= 0 {
		return ""
	}
	n := 0
	for i, r := range s {
		if n+runeUnits(r) > limit-1 { // room for "…" (one unit)
			return s[:i] + "…"
		}
		n += runeUnits(r)
	}
	return s
}

// syntax is how Telegram users type commands and options, for the
// catalogue's messages.
var syntax = catalog.Syntax{
	Platform: "telegram", Help: "/help", Imagine: "/imagine", Sep: " ", Prefix: "--",
	Names: map[string]string{core.OptionModel: "--model", core.OptionAspect: "--ar", core.OptionNegative: "--no"},
}

// tr is the catalogue in lang.
func tr(lang core.Lang) catalog.Printer { return catalog.For(lang) }

// caption is a result's caption: the prompt, then the model and options
// (and in groups who asked, since the quota line is theirs), then what is
// left of the quota. The prompt is cut so the whole fits Telegram's 1024
// units.
func caption(prompt string, model core.Model, opts core.Options, bal core.Balance, lang core.Lang, asker string) string {
	p := tr(lang)
	meta := fit(p.MetaBy(model, opts, asker)+"\n"+p.QuotaLine(bal), 500)
	return fit(strings.TrimSpace(prompt), maxCaptionLen-utf16Len(meta)-2) + "\n\n" + meta
}

// withNote adds the model's own rewording of the prompt (an images API's
// revised_prompt) to a caption, cut so the whole still fits.
func withNote(capt, note string, lang core.Lang) string {
	if strings.TrimSpace(note) == "" {
		return capt
	}
	n := fit("📝 "+tr(lang).T("meta.revised", "Text", note), max(maxCaptionLen-utf16Len(capt)-2, 0))
	if n == "" {
		return capt
	}
	return capt + "\n\n" + n
}

// asker names who asked for d where others see the result: in groups.
func asker(to target, d core.Delivery) string {
	if to.chat < 0 {
		return d.Job.User.Name
	}
	return ""
}

// commandList is the command menu (setMyCommands) in lang.
func commandList(lang core.Lang) []models.BotCommand {
	p := tr(lang)
	return []models.BotCommand{
		{Command: "imagine", Description: p.T("telegram.cmd.imagine")},
		{Command: "quota", Description: p.T("telegram.cmd.quota")},
		{Command: "settings", Description: p.T("telegram.cmd.settings")},
		{Command: "help", Description: p.T("telegram.cmd.help")},
	}
}

func usageImagine(lang core.Lang, private bool) string {
	if private {
		return tr(lang).T("telegram.usage_private")
	}
	return tr(lang).T("telegram.usage_group")
}

// helpText explains the bot: what it does, the models with their cost, the
// options, examples and the limits.
func helpText(lang core.Lang, private bool, ms []core.Model, lim core.Config, bal *core.Balance) string {
	how := "help.how_group"
	if private {
		how = "help.how_private"
	}
	return tr(lang).Help(catalog.Help{How: how, Models: ms, Limits: lim, Balance: bal}, syntax)
}

// displayName is how a Telegram user appears in views: @username, else the
// first name.
func displayName(u *models.User) string {
	if u == nil {
		return ""
	}
	if u.Username != "" {
		return "@" + u.Username
	}
	name := strings.TrimSpace(u.FirstName)
	if name == "" || !utf8.ValidString(name) {
		return fmt.Sprint(u.ID)
	}
	return fit(name, 64)
}

// anonymousText speaks to an admin posting as the group: with no user there
// is no language to go by, so it is said in English and in Chinese.
func anonymousText() string {
	return tr(core.English).T("telegram.anonymous") + "\n" + tr(core.SimplifiedChinese).T("telegram.anonymous")
}

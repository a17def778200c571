package chat

import (
	"context"
	"strings"

	"github.com/imaginebot/imaginebot/bots/catalog"
	"github.com/imaginebot/imaginebot/core"
)

// Settings is what /settings needs from core.
type Settings interface {
	Prefs(ctx context.Context, k core.AccountKey) (core.Prefs, error)
	SetPrefs(ctx context.Context, k core.AccountKey, p core.Prefs) (core.Prefs, error)
}

// Change is what a /settings command asks for; nil fields stay as they
// are, and "" puts one back to its default.
type Change struct {
	Model, Aspect *string
	Lang          *core.Lang
	Reset         bool
}

// Empty reports whether c changes nothing (a /settings that only shows).
func (c Change) Empty() bool { return c.Model == nil && c.Aspect == nil && c.Lang == nil && !c.Reset }

// Lang is the language to answer in: the user's choice, else the
// platform's (their client's locale).
func Lang(p core.Prefs, platform core.Lang) core.Lang {
	if p.Lang != "" {
		return p.Lang
	}
	return platform
}

// ApplySettings applies c to the user's settings in k's scope and returns
// them as a card, in the language they now choose (platform: their
// client's). hint tells how to change them on the platform (a catalogue id).
func ApplySettings(ctx context.Context, svc Settings, k core.AccountKey, c Change, platform core.Lang, models []core.Model, hint string) (string, core.Lang, error) {
	p, err := svc.Prefs(ctx, k)
	if err != nil {
		return "", platform, err
	}
	if !c.Empty() {
		if c.Reset {
			p = core.Prefs{}
		}
		if c.Model != nil {
			p.Model = *c.Model
		}
		if c.Aspect != nil {
			p.Aspect = *c.Aspect
		}
		if c.Lang != nil {
			p.Lang = *c.Lang
		}
		if p, err = svc.SetPrefs(ctx, k, p); err != nil {
			return "", platform, err
		}
	}
	lang := Lang(p, platform)
	pr := catalog.For(lang)
	def := ""
	if len(models) > 0 {
		def = models[0].DisplayName()
	}
	model := pr.T("settings.default", "Name", def)
	for _, m := range models {
		if m.Name == p.Model {
			model = m.DisplayName() + " (" + m.Name + ")"
		}
	}
	aspect := pr.T("settings.none")
	if p.Aspect != "" {
		aspect = p.Aspect
	}
	language := pr.T("settings.auto", "Name", pr.T("lang."+string(platform)))
	if p.Lang != "" {
		language = pr.T("lang." + string(p.Lang))
	}
	lines := []string{pr.T("settings.title"), pr.T("settings.model", "Value", model), pr.T("settings.aspect", "Value", aspect),
		pr.T("settings.lang", "Value", language), "", pr.T(hint)}
	if !c.Empty() {
		lines = append([]string{pr.T("settings.saved"), ""}, lines...)
	}
	return strings.Join(lines, "\n"), lang, nil
}

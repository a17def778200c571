// Package catalog holds every text the chat adapters show, in every language
// the bot speaks: one YAML file per language under locales/, embedded in the
// binary and read with github.com/nicksnyder/go-i18n/v2 (CLDR plural rules,
// templates with named placeholders, fallback to English for a message a
// file lacks). Platform locales are matched to those languages with
// golang.org/x/text/language, so "zh-hant", "zh-TW" and "zh-HK" all find
// Traditional Chinese. Adding a language is adding one file.
package catalog

import (
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strings"

	"github.com/nicksnyder/go-i18n/v2/i18n"
	"go.yaml.in/yaml/v3"
	"golang.org/x/text/language"

	"github.com/imaginebot/imaginebot/core"
)

//go:embed locales/*.yaml
var files embed.FS

// Catalog is a loaded set of languages.
type Catalog struct {
	bundle  *i18n.Bundle
	tags    []language.Tag
	matcher language.Matcher
	locs    map[core.Lang]*i18n.Localizer
	ids     map[string]bool // every message id of the default language
}

var std = mustLoad()

func mustLoad() *Catalog {
	c, err := Load(files, "locales")
	if err != nil {
		panic(err) // the embedded files are checked by the package's tests
	}
	return c
}

// Load reads every *.yaml under dir of fsys; each file is named after its
// language tag. English is the default and must be there.
func Load(fsys fs.FS, dir string) (*Catalog, error) {
	b := i18n.NewBundle(language.English)
	b.RegisterUnmarshalFunc("yaml", yaml.Unmarshal)
	names, err := fs.Glob(fsys, path.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	c := &Catalog{bundle: b, locs: map[core.Lang]*i18n.Localizer{}, ids: map[string]bool{}}
	for _, name := range names {
		mf, err := b.LoadMessageFileFS(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("catalog: %s: %w", name, err)
		}
		if mf.Tag == language.English {
			for _, m := range mf.Messages {
				c.ids[m.ID] = true
			}
		}
	}
	if len(c.ids) == 0 {
		return nil, fmt.Errorf("catalog: no English messages in %s", dir)
	}
	c.tags = b.LanguageTags()
	c.matcher = language.NewMatcher(c.tags)
	for _, t := range c.tags {
		c.locs[core.Lang(t.String())] = i18n.NewLocalizer(b, t.String())
	}
	return c, nil
}

// Default is the catalogue built into the binary.
func Default() *Catalog { return std }

// Langs lists the languages of the catalogue, English first.
func (c *Catalog) Langs() []core.Lang {
	out := make([]core.Lang, len(c.tags))
	for i, t := range c.tags {
		out[i] = core.Lang(t.String())
	}
	return out
}

// Match finds the catalogue's language for a platform locale (Telegram's
// language_code, Discord's locale, $LANG); English when none is close.
func (c *Catalog) Match(code string) core.Lang {
	code, _, _ = strings.Cut(code, ".") // "zh_CN.UTF-8"
	code = strings.ReplaceAll(strings.TrimSpace(code), "_", "-")
	t, err := language.Parse(code)
	if err != nil || code == "" {
		return core.English
	}
	_, i, conf := c.matcher.Match(t)
	if conf == language.No {
		return core.English
	}
	return core.Lang(c.tags[i].String())
}

// Match finds the default catalogue's language for a platform locale.
func Match(code string) core.Lang { return std.Match(code) }

// For returns a Printer of the default catalogue in lang.
func For(lang core.Lang) Printer { return std.For(lang) }

// For returns a Printer in lang; an unknown lang speaks English. Jobs stored
// by versions before the catalogue say "zh", which was Simplified Chinese.
func (c *Catalog) For(lang core.Lang) Printer {
	if lang == core.Chinese {
		lang = core.SimplifiedChinese
	}
	loc, ok := c.locs[lang]
	if !ok {
		lang, loc = core.English, c.locs[core.English]
	}
	return Printer{c: c, lang: lang, loc: loc}
}

// Printer renders messages in one language.
type Printer struct {
	c    *Catalog
	lang core.Lang
	loc  *i18n.Localizer
}

// Lang is the printer's language.
func (p Printer) Lang() core.Lang { return p.lang }

// Has reports whether id is a message of the catalogue.
func (p Printer) Has(id string) bool { return p.c.ids[id] }

// T renders message id with placeholders given as name, value pairs.
func (p Printer) T(id string, kv ...any) string {
	return p.render(id, nil, kv)
}

// N renders message id in the plural form for n, which its text shows as
// {{.Count}}.
func (p Printer) N(id string, n int, kv ...any) string {
	return p.render(id, n, append(kv, "Count", n))
}

func (p Printer) render(id string, count any, kv []any) string {
	data := make(map[string]any, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		data[fmt.Sprint(kv[i])] = kv[i+1]
	}
	s, err := p.loc.Localize(&i18n.LocalizeConfig{MessageID: id, TemplateData: data, PluralCount: count})
	if err != nil {
		// A missing message is a bug the tests catch; show its id rather
		// than nothing, and tell the operator.
		slog.Default().Error("catalog: message missing", "id", id, "lang", p.lang, "err", err)
		if s == "" {
			return id
		}
	}
	return s
}

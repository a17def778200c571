package catalog

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nicksnyder/go-i18n/v2/i18n"
	"go.yaml.in/yaml/v3"
	"golang.org/x/text/language"

	"github.com/imaginebot/imaginebot/core"
)

var placeholder = regexp.MustCompile(`{{\s*\.(\w+)\s*}}`)

// messages parses every locale file: language → id → message.
func messages(t *testing.T) map[string]map[string]*i18n.Message {
	t.Helper()
	b := i18n.NewBundle(language.English)
	b.RegisterUnmarshalFunc("yaml", yaml.Unmarshal)
	names, err := fs.Glob(files, "locales/*.yaml")
	if err != nil || len(names) < 3 {
		t.Fatalf("locale files: %v %v", names, err)
	}
	out := map[string]map[string]*i18n.Message{}
	for _, name := range names {
		buf, _ := fs.ReadFile(files, name)
		mf, err := b.ParseMessageFileBytes(buf, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ms := map[string]*i18n.Message{}
		for _, m := range mf.Messages {
			ms[m.ID] = m
		}
		out[strings.TrimSuffix(filepath.Base(name), ".yaml")] = ms
	}
	return out
}

func forms(m *i18n.Message) []string {
	return slices.DeleteFunc([]string{m.Zero, m.One, m.Two, m.Few, m.Many, m.Other}, func(s string) bool { return s == "" })
}

func names(m *i18n.Message) []string {
	var out []string
	for _, f := range forms(m) {
		for _, p := range placeholder.FindAllStringSubmatch(f, -1) {
			out = append(out, p[1])
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Every message exists in every language with the same placeholders, and a
// message that shows a count is a plural one.
func TestEveryMessageInEveryLanguage(t *testing.T) {
	all := messages(t)
	en := all["en"]
	for lang, ms := range all {
		for id := range ms {
			if _, ok := en[id]; !ok {
				t.Errorf("%s has %q, which English lacks", lang, id)
			}
		}
		for id, m := range en {
			other, ok := ms[id]
			if !ok {
				t.Errorf("%s lacks %q", lang, id)
				continue
			}
			if a, b := names(m), names(other); !slices.Equal(a, b) {
				t.Errorf("%s %q has placeholders %v, English %v", lang, id, b, a)
			}
			counted := slices.Contains(names(m), "Count")
			plural := other.One != "" || other.Few != "" || other.Many != "" || other.Zero != "" || other.Two != ""
			if counted && other.Other == "" {
				t.Errorf("%s %q shows a count but has no plural forms", lang, id)
			}
			if lang == "en" && counted && (other.One == "" || other.Other == "") {
				t.Errorf("en %q shows a count: it needs one and other", id)
			}
			if !counted && plural {
				t.Errorf("%s %q has plural forms but shows no {{.Count}}", lang, id)
			}
		}
	}
}

// Plural messages render in every language for every count, with the count.
func TestPluralsRender(t *testing.T) {
	for id, m := range messages(t)["en"] {
		if m.One == "" {
			continue
		}
		for _, lang := range Default().Langs() {
			p := For(lang)
			for _, n := range []int{0, 1, 2, 5, 21} {
				got := p.N(id, n, "Name", "x", "Every", "5s")
				if !strings.Contains(got, itoa(n)) || strings.Contains(got, "<no value>") {
					t.Errorf("%s %s(%d) = %q", lang, id, n, got)
				}
			}
		}
	}
	if got := For(core.English).N("mod.granted", 1, "Name", "@a"); got != "✅ Granted 1 credit to @a." {
		t.Errorf("one credit: %q", got)
	}
	if got := For(core.English).N("mod.granted", 3, "Name", "@a"); got != "✅ Granted 3 credits to @a." {
		t.Errorf("three credits: %q", got)
	}
}

func itoa(n int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + fmtInt(n)) }

func fmtInt(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return fmtInt(n/10) + string(rune('0'+n%10))
}

// Every code has a user message and a history outcome in every language,
// fully rendered.
func TestEveryCodeHasMessages(t *testing.T) {
	reset := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	for _, lang := range Default().Langs() {
		p := For(lang)
		for _, code := range core.Codes {
			for _, id := range []string{"error." + string(code), "outcome." + string(code)} {
				if !p.Has(id) {
					t.Errorf("no %s", id)
				}
			}
			msg := p.Error(&core.Error{Code: code, RetryAfter: time.Second, ResetAt: reset, Limit: 10, Detail: "no"}, testSyntax)
			if msg == "" || strings.Contains(msg, "<no value>") || strings.Contains(msg, "{{") || strings.Contains(msg, "error.") {
				t.Errorf("%s %s: %q", lang, code, msg)
			}
		}
	}
}

var testSyntax = Syntax{Platform: "telegram", Help: "/help", Imagine: "/imagine", Prefix: "--", Sep: " ",
	Names: map[string]string{core.OptionModel: "--model", core.OptionAspect: "--ar", core.OptionNegative: "--no"}}

func TestErrorTexts(t *testing.T) {
	cases := []struct {
		name string
		lang core.Lang
		err  error
		want []string
		not  []string
	}{
		{"aspect in Chinese", core.SimplifiedChinese, parse(t, "/imagine 狐狸 --ar 香蕉"), []string{"香蕉", "--ar 16:9", "宽:高"}, []string{"use", "width"}},
		{"aspect in Traditional Chinese", core.TraditionalChinese, parse(t, "/imagine 狐狸 --ar 香蕉"), []string{"香蕉", "寬:高"}, []string{"width"}},
		{"unknown option", core.English, parse(t, "/imagine a fox --size 3"), []string{"“--size”", "--model NAME", "--ar W:H", "--no TEXT"}, nil},
		{"no value", core.English, parse(t, "/imagine a fox --ar"), []string{"--ar needs a value", "--ar 16:9"}, nil},
		{"unknown model", core.English, &core.Error{Code: core.CodeUnknownModel, Option: core.OptionModel, Value: "dalle", Choices: []string{"sd", "flux"}}, []string{"“dalle”", "sd, flux"}, nil},
		{"refusal labelled", core.English, &core.Error{Code: core.CodeRefused, Detail: "内容不合规"}, []string{"declined", "The image service said: “内容不合规”"}, nil},
		{"refusal labelled in Chinese", core.SimplifiedChinese, &core.Error{Code: core.CodeRefused, Detail: "unsafe"}, []string{"图片服务的原话：“unsafe”"}, nil},
		{"empty relay", core.English, &core.Error{Code: core.CodeLostInRelay, Reason: core.ReasonEmpty}, []string{"came back empty"}, nil},
		{"relay without picture", core.English, &core.Error{Code: core.CodeLostInRelay}, []string{"ended without a picture"}, []string{"empty"}},
		{"out of range", core.SimplifiedChinese, &core.Error{Code: core.CodeInvalidArgument, Reason: core.ReasonOutOfRange, Value: "-3", Min: 1, Limit: 1000000}, []string{"-3", "1 到 1000000"}, nil},
		{"rate in minutes", core.English, &core.Error{Code: core.CodeRateLimited, RetryAfter: 125 * time.Second}, []string{"3 min"}, nil},
		{"queue default wait", core.TraditionalChinese, &core.Error{Code: core.CodeQueueFull}, []string{"60 秒"}, nil},
		{"forbidden names Discord's moderators", core.English, &core.Error{Code: core.CodeForbidden}, []string{"manage this server"}, nil},
		{"prompt too long", core.English, &core.Error{Code: core.CodePromptTooLong, Limit: 500}, []string{"under 500 characters"}, nil},
		{"no picture here", core.English, &core.Error{Code: core.CodeInvalidOption, Reason: core.ReasonNoImage, Value: "sd"}, []string{"no model here does"}, []string{": ."}},
		{"picture elsewhere", core.SimplifiedChinese, &core.Error{Code: core.CodeInvalidOption, Reason: core.ReasonNoImage, Value: "sd", Choices: []string{"dalle"}}, []string{"不接受图片", "dalle"}, nil},
		{"bare error", core.English, os.ErrNotExist, []string{"Something went wrong"}, []string{"not exist"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := testSyntax
			if strings.Contains(c.name, "Discord") {
				s.Platform = "discord"
			}
			got := For(c.lang).Error(c.err, s)
			for _, w := range c.want {
				if !strings.Contains(got, w) {
					t.Errorf("%q lacks %q", got, w)
				}
			}
			for _, w := range c.not {
				if strings.Contains(got, w) {
					t.Errorf("%q has %q", got, w)
				}
			}
		})
	}
}

func parse(t *testing.T, text string) error {
	t.Helper()
	_, err := core.ParseCommand(text)
	if err == nil {
		t.Fatalf("%q parsed", text)
	}
	return err
}

func TestMatch(t *testing.T) {
	cases := map[string]core.Lang{
		"":            core.English,
		"en":          core.English,
		"en-US":       core.English,
		"fr":          core.English,
		"garbage!!":   core.English,
		"zh":          core.SimplifiedChinese,
		"zh-hans":     core.SimplifiedChinese,
		"zh-CN":       core.SimplifiedChinese,
		"zh_CN.UTF-8": core.SimplifiedChinese,
		"zh-SG":       core.SimplifiedChinese,
		"zh-hant":     core.TraditionalChinese,
		"zh-TW":       core.TraditionalChinese,
		"zh-HK":       core.TraditionalChinese,
	}
	for code, want := range cases {
		if got := Match(code); got != want {
			t.Errorf("Match(%q) = %q, want %q", code, got, want)
		}
	}
	if For(core.Chinese).Lang() != core.SimplifiedChinese {
		t.Error("jobs stored as zh must speak Simplified Chinese")
	}
}

// In Chinese nothing is left in English: the only Latin words are what users
// type (commands, option names, placeholders' names) and proper names.
func TestChineseHasNoEnglish(t *testing.T) {
	typed := regexp.MustCompile(`{{[^}]*}}|/[a-z-]+|--[a-z]+|@[a-z]+|\b(set daily|scope daily|default|daily|show|grant|revoke|reset|ban|unban|history|help|prompt|model|aspect|negative|ID|N|Discord|Telegram|K|UTC|MiB|PNG|JPEG|WebP|GIF|English|set|auto|en|zh|hans|hant|language|settings|reset|aspect|imaginebot imagine)\b`)
	word := regexp.MustCompile(`[A-Za-z]{2,}`)
	for lang, ms := range messages(t) {
		if !strings.HasPrefix(lang, "zh") {
			continue
		}
		for id, m := range ms {
			for _, f := range forms(m) {
				if w := word.FindString(typed.ReplaceAllString(f, "")); w != "" {
					t.Errorf("%s %q has the English word %q: %q", lang, id, w, f)
				}
			}
		}
	}
	// Audit entries and history outcomes are worded, not shown as stored.
	p := For(core.SimplifiedChinese)
	got := p.Audit([]core.AuditEntry{{Time: time.Unix(0, 0), Actor: "telegram:1", ActorName: "@mod", Role: core.RoleModerator, Action: core.ActionBan, Target: "telegram:2",
		Before: "daily=5(default) used=0 credits=0 banned=false", After: "daily=5(default) used=0 credits=0 banned=true"}}, AuditLine{})
	if !strings.Contains(got, "管理员") || !strings.Contains(got, "封禁 否→是") || strings.Contains(got, "banned") || strings.Contains(got, "moderator") {
		t.Errorf("audit in Chinese: %q", got)
	}
	h := p.History([]core.Job{{Created: time.Unix(0, 0), Model: "sd", State: core.JobRefunded, Outcome: core.CodeUpstreamBalance, Prompt: "狐狸"}}, "@a", nil)
	if !strings.Contains(h, "图片服务余额不足") || strings.Contains(h, "upstream_balance") {
		t.Errorf("history in Chinese: %q", h)
	}
}

// Every message id written in the adapters' code exists.
func TestIDsInCodeExist(t *testing.T) {
	call := regexp.MustCompile(`\.(?:T|N)\("([a-z_.\-]+)"[,)]`)
	root := filepath.Join("..", "..")
	p := For(core.English)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		buf, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range call.FindAllStringSubmatch(string(buf), -1) {
			if !p.Has(m[1]) {
				t.Errorf("%s uses %q, which the catalogue lacks", path, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSelfShowsResetBothWays(t *testing.T) {
	loc, _ := time.LoadLocation("Asia/Shanghai")
	now := time.Date(2026, 3, 1, 20, 40, 0, 0, loc)
	bal := core.Balance{Daily: 5, Used: 2, Credits: 1, ResetAt: time.Date(2026, 3, 2, 0, 0, 0, 0, loc)}
	got := For(core.English).Self(bal, now)
	for _, w := range []string{"Left today: 3 of 5", "Credits: 1", "00:00 (Asia/Shanghai), in 3 h 20 min"} {
		if !strings.Contains(got, w) {
			t.Errorf("%q lacks %q", got, w)
		}
	}
}

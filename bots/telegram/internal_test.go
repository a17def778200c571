package telegram

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/go-telegram/bot"
	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/core"
)

func TestSplitCommand(t *testing.T) {
	tests := []struct {
		text              string
		cmd, mention, arg string
		ok                bool
	}{
		{"/imagine a cat", "imagine", "", "a cat", true},
		{"/imagine", "imagine", "", "", true},
		{"/Imagine@ImagineTestBot  a cat ", "imagine", "ImagineTestBot", "a cat", true},
		{"/imagine@OtherBot a dog", "imagine", "OtherBot", "a dog", true},
		{"/imagine\na cat\non two lines", "imagine", "", "a cat\non two lines", true},
		{"/quota grant 5 @bob", "quota", "", "grant 5 @bob", true},
		{"a cat", "", "", "", false},
		{"/r/aww style cat", "", "", "", false},
		{"/ space", "", "", "", false},
		{"/imagine@ x", "", "", "", false},
		{"/" + strings.Repeat("a", 33), "", "", "", false},
		{"/кот", "", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			cmd, mention, arg, ok := splitCommand(tt.text)
			if cmd != tt.cmd || mention != tt.mention || arg != tt.arg || ok != tt.ok {
				t.Errorf("splitCommand(%q) = %q, %q, %q, %t; want %q, %q, %q, %t", tt.text, cmd, mention, arg, ok, tt.cmd, tt.mention, tt.arg, tt.ok)
			}
		})
	}
}

func TestRoute(t *testing.T) {
	b := testBot(t)
	alice := &models.User{ID: 1, Username: "alice", FirstName: "Alice"}
	private := models.Chat{ID: 1, Type: models.ChatTypePrivate}
	group := models.Chat{ID: -100, Type: models.ChatTypeSupergroup}
	channel := models.Chat{ID: -200, Type: models.ChatTypeChannel}
	tests := []struct {
		name string
		chat models.Chat
		from *models.User
		text string
		want bool
	}{
		{"private plain text", private, alice, "a red fox", true},
		{"private command", private, alice, "/imagine a red fox", true},
		{"private unknown command", private, alice, "/frobnicate", true},
		{"private other bot", private, alice, "/imagine@OtherBot a fox", false},
		{"group plain text", group, alice, "a red fox", false},
		{"group imagine", group, alice, "/imagine a red fox", true},
		{"group imagine to us", group, alice, "/imagine@imaginetestbot a red fox", true},
		{"group imagine to other bot", group, alice, "/imagine@OtherBot a red fox", false},
		{"group unknown command", group, alice, "/weather", false},
		{"group help", group, alice, "/help@ImagineTestBot", true},
		{"group quota", group, alice, "/quota", true},
		{"channel post", channel, alice, "/imagine x", false},
		{"no sender", group, nil, "/imagine x", false},
		{"bot sender", group, &models.User{ID: 9, IsBot: true}, "/imagine x", false},
		{"anonymous admin gets a hint", group, &models.User{ID: 1087968824, IsBot: true, Username: "GroupAnonymousBot"}, "/quota grant 1 @bob", true},
		{"anonymous admin chatting", group, &models.User{ID: 1087968824, IsBot: true, Username: "GroupAnonymousBot"}, "hello", false},
		{"no text", private, alice, "", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &models.Message{ID: i + 1, Chat: tt.chat, From: tt.from, Text: tt.text, Date: 1}
			if tt.from != nil && tt.from.ID == 1087968824 {
				m.SenderChat = &tt.chat
			}
			if got := b.route(&models.Update{ID: int64(i + 1), Message: m}) != nil; got != tt.want {
				t.Errorf("route(%q in %s) handled = %t, want %t", tt.text, tt.chat.Type, got, tt.want)
			}
		})
	}
}

func TestParseQuota(t *testing.T) {
	tests := []struct {
		args string
		want quotaCmd
		err  bool
	}{
		{"", quotaCmd{op: "self"}, false},
		{"help", quotaCmd{op: "help"}, false},
		{"show", quotaCmd{op: "show"}, false},
		{"show 42", quotaCmd{op: "show", target: "42"}, false},
		{"SHOW @Bob", quotaCmd{op: "show", target: "@Bob"}, false},
		{"grant 5", quotaCmd{op: "grant", n: 5}, false},
		{"grant 5 42", quotaCmd{op: "grant", n: 5, target: "42"}, false},
		{"grant @bob 5", quotaCmd{op: "grant", n: 5, target: "@bob"}, false},
		{"grant 5 @bob", quotaCmd{op: "grant", n: 5, target: "@bob"}, false},
		{"revoke 2 42", quotaCmd{op: "revoke", n: 2, target: "42"}, false},
		{"set daily 10", quotaCmd{op: "set-daily", n: 10}, false},
		{"set daily default @bob", quotaCmd{op: "set-daily", clear: true, target: "@bob"}, false},
		{"set daily 0 42", quotaCmd{op: "set-daily", n: 0, target: "42"}, false},
		{"reset 42", quotaCmd{op: "reset", target: "42"}, false},
		{"ban @bob", quotaCmd{op: "ban", target: "@bob"}, false},
		{"unban", quotaCmd{op: "unban"}, false},
		{"history", quotaCmd{op: "history"}, false},
		{"scope daily 3", quotaCmd{op: "scope-daily", n: 3}, false},
		{"scope daily default", quotaCmd{op: "scope-daily", clear: true}, false},
		{"grant", quotaCmd{}, true},
		{"grant five", quotaCmd{}, true},
		{"grant 5 bob", quotaCmd{}, true},
		{"grant 5 42 43", quotaCmd{}, true},
		{"grant 5 @a @b", quotaCmd{}, true},
		{"grant 5 @", quotaCmd{}, true},
		{"show -3", quotaCmd{}, true},
		{"set 5", quotaCmd{}, true},
		{"set weekly 5", quotaCmd{}, true},
		{"scope daily 3 @bob", quotaCmd{}, true},
		{"scope daily", quotaCmd{}, true},
		{"help me", quotaCmd{}, true},
		{"frobnicate", quotaCmd{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.args, func(t *testing.T) {
			got, err := parseQuota(tt.args)
			if tt.err {
				if err == nil {
					t.Fatalf("parseQuota(%q) = %+v, want a usage error", tt.args, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseQuota(%q) = %+v, %v; want %+v", tt.args, got, err, tt.want)
			}
		})
	}
}

func TestFit(t *testing.T) {
	tests := []struct {
		name  string
		s     string
		limit int
		want  string
	}{
		{"short", "abc", 5, "abc"},
		{"exact", "abcde", 5, "abcde"},
		{"cut", "abcdef", 5, "abcd…"},
		{"emoji count twice", "😀😀😀", 5, "😀😀…"},
		{"emoji not split", "😀😀😀", 4, "😀…"},
		{"cjk", "雪地里的狐狸", 4, "雪地里…"},
		{"zero", "abc", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fit(tt.s, tt.limit)
			if got != tt.want {
				t.Errorf("fit(%q, %d) = %q, want %q", tt.s, tt.limit, got, tt.want)
			}
			if !utf8.ValidString(got) || utf16Len(got) > max(tt.limit, 0) {
				t.Errorf("fit(%q, %d) = %q: invalid or too long", tt.s, tt.limit, got)
			}
		})
	}
}

func TestCaptionFits(t *testing.T) {
	bal := core.Balance{Daily: 5, Used: 1, Credits: 12, ResetAt: time.Date(2025, 1, 2, 0, 0, 0, 0, time.UTC)}
	model := core.Model{Name: "flux", Label: "FLUX.1 [schnell]"}
	opts := core.Options{Aspect: "16:9", Negative: strings.Repeat("people ", 100)}
	prompts := map[string]string{
		"short":        "a red fox in the snow",
		"ascii 5000":   strings.Repeat("a", 5000),
		"all emoji":    strings.Repeat("😀", 1000),
		"emoji + zwj":  strings.Repeat("👩‍👩‍👧‍👦", 300),
		"cjk":          strings.Repeat("雪地里的狐狸", 200),
		"markdown":     strings.Repeat("_*[]()~`>#+-=|{}.! <b>", 100),
		"invalid utf8": "a\xffb" + strings.Repeat("c", 2000),
	}
	for name, prompt := range prompts {
		for _, lang := range []core.Lang{core.English, core.SimplifiedChinese, core.TraditionalChinese} {
			t.Run(name+"/"+string(lang), func(t *testing.T) {
				c := caption(prompt, model, opts, bal, lang, "@someone_with_a_long_name")
				if n := len(utf16.Encode([]rune(c))); n > maxCaptionLen {
					t.Fatalf("caption is %d UTF-16 units, over %d", n, maxCaptionLen)
				}
				if !utf8.ValidString(c) {
					t.Fatal("caption is not valid UTF-8")
				}
				if !strings.Contains(c, "FLUX.1 [schnell]") || !strings.Contains(c, "16:9") || !strings.Contains(c, "00:00") || !strings.Contains(c, "UTC") {
					t.Errorf("caption lacks the model, options or reset time:\n%s", c)
				}
				if want := map[core.Lang]string{core.English: "Quota left today: 4 (+12 credits)", core.SimplifiedChinese: "今日剩余额度：4（另有 12 点）", core.TraditionalChinese: "今日剩餘額度：4（另有 12 點）"}[lang]; !strings.Contains(c, want) {
					t.Errorf("caption lacks %q:\n%s", want, c)
				}
				head := []rune(strings.ToValidUTF8(prompt, "\uFFFD"))[:10]
				if !strings.HasPrefix(c, string(head)) {
					t.Errorf("caption does not start with the prompt: %q", c[:40])
				}
			})
		}
	}
}

func TestButtonData(t *testing.T) {
	b := testBot(t)
	keys := []string{
		"telegram:update:123456789",
		"telegram:callback:4383795847209384756",
		"telegram:callback:" + strings.Repeat("9", 64),
		"discord:interaction:" + strings.Repeat("x", 100),
	}
	kinds := []struct {
		name        string
		kind, other buttonKind
	}{
		{"reroll", rerollButton, cancelButton},
		{"cancel", cancelButton, rerollButton},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			for _, key := range keys {
				data := b.buttonData(k.kind, key)
				if len(data) > maxCallbackLen {
					t.Errorf("callback data for %q is %d bytes: %q", key, len(data), data)
				}
				got, ok := b.buttonKey(k.kind, data)
				if !ok || got != key || !k.kind.of(data) {
					t.Errorf("buttonKey(%q) = %q, %t; want %q", data, got, ok, key)
				}
				if k.other.of(data) {
					t.Errorf("%q is taken for another kind of button", data)
				}
				if _, ok := b.buttonKey(k.other, data); ok {
					t.Errorf("%q resolved as another kind of button", data)
				}
			}
			if _, ok := b.buttonKey(k.kind, k.kind.hashed+"unknown-token"); ok {
				t.Error("an unknown short token resolved")
			}
			if _, ok := b.buttonKey(k.kind, "something else"); ok || k.kind.of("something else") {
				t.Error("foreign callback data resolved")
			}
		})
	}
}

func TestLRU(t *testing.T) {
	now := time.Unix(0, 0)
	c := newLRU[int, string](3, func() time.Time { return now })
	for i := range 5 {
		c.Put(i, fmt.Sprint(i), 0)
	}
	if c.Len() != 3 {
		t.Fatalf("len %d, want 3", c.Len())
	}
	if _, ok := c.Get(0); ok {
		t.Error("the oldest entry survived")
	}
	c.Get(2) // 2 is now the most recent
	c.Put(5, "5", 0)
	if _, ok := c.Get(2); !ok {
		t.Error("a recently used entry was evicted")
	}
	c.Put(9, "9", time.Minute)
	now = now.Add(time.Minute)
	if _, ok := c.Get(9); ok {
		t.Error("an expired entry was returned")
	}
	if !c.Add(9, "again", 0) || c.Add(9, "twice", 0) {
		t.Error("Add does not store exactly once")
	}
}

func TestUserIndex(t *testing.T) {
	x := newUserIndex(2)
	x.remember(1, "Alice", "@Alice")
	x.remember(2, "", "Bob")
	if u, ok := x.lookup("@alice"); !ok || u.id != 1 || u.name != "@Alice" {
		t.Errorf("lookup(@alice) = %+v, %t", u, ok)
	}
	if x.name(2) != "Bob" {
		t.Errorf("name(2) = %q", x.name(2))
	}
	x.remember(3, "carol", "@carol")
	x.remember(4, "dave", "@dave")
	x.remember(5, "erin", "@erin")
	if _, ok := x.lookup("alice"); ok {
		t.Error("the index grew past its bound")
	}
}

func TestRedact(t *testing.T) {
	b := testBot(t)
	err := fmt.Errorf(`error do request for method getMe, Post "https://api.telegram.org/bot%s/getMe": dial tcp: lookup failed`, b.cfg.Token)
	if s := b.redact(err); strings.Contains(s, b.cfg.Token) || !strings.Contains(s, "<token>") {
		t.Errorf("redact = %q", s)
	}
}

func TestPhotoRejected(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("%w, Bad Request: PHOTO_INVALID_DIMENSIONS", bot.ErrorBadRequest), true},
		{fmt.Errorf("%w, Bad Request: IMAGE_PROCESS_FAILED", bot.ErrorBadRequest), true},
		{errors.New("error response from telegram for method sendPhoto, 413 Request Entity Too Large"), true},
		{fmt.Errorf("%w, Forbidden: bot was blocked by the user", bot.ErrorForbidden), false},
		{fmt.Errorf("%w, Bad Request: chat not found", bot.ErrorBadRequest), false},
	}
	for _, tt := range tests {
		if got := photoRejected(tt.err); got != tt.want {
			t.Errorf("photoRejected(%v) = %t, want %t", tt.err, got, tt.want)
		}
	}
}

func TestReplyTo(t *testing.T) {
	to := target{chat: -1001234567890, msg: 42}
	got, ok := parseReplyTo(to.replyTo())
	if !ok || got.chat != to.chat || got.msg != to.msg {
		t.Fatalf("round trip of %q = %+v, %t", to.replyTo(), got, ok)
	}
	for _, bad := range []string{"", "1", "x:1", "1:y", "0:5", "5:0"} {
		if _, ok := parseReplyTo(bad); ok {
			t.Errorf("parseReplyTo(%q) accepted", bad)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // "" = valid
	}{
		{"minimal", Config{Token: "123:abc"}, ""},
		{"no token", Config{}, "token"},
		{"bad base", Config{Token: "123:abc", APIBaseURL: "ftp://x"}, "API base URL"},
		{"webhook without secret", Config{Token: "123:abc", WebhookURL: "https://x.example/hook"}, "secret"},
		{"webhook bad secret", Config{Token: "123:abc", WebhookURL: "https://x.example/hook", WebhookSecret: "a b"}, "secret"},
		{"webhook http", Config{Token: "123:abc", WebhookURL: "http://x.example/hook", WebhookSecret: "s"}, "https"},
		{"webhook ok", Config{Token: "123:abc", WebhookURL: "https://x.example/hook", WebhookSecret: "s-3_cret"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one about %q", err, tt.want)
			}
		})
	}
}

// nopService satisfies Service; tests here only route, which numbers
// arrivals.
type nopService struct{ Service }

func (nopService) Arrival() uint64 { return 0 }

func (nopService) SeeUser(context.Context, core.User, string) error { return nil }

func testBot(t testing.TB) *Bot {
	t.Helper()
	b, err := New(Config{Token: "123456:SECRET-token_value"}, nopService{}, WithUsername("ImagineTestBot"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Any callback data is either a button of ours, whose key round-trips and
// fits Telegram's 64 bytes, or refused; nothing panics.
func FuzzCallbackData(f *testing.F) {
	for _, s := range []string{"rr:telegram:update:1", "rh:AAAAAAAAAAAAAAAAAAAA", "cx:telegram:callback:9", "ch:", "rr:", "", "xx:yy", "rr:\xff\xfe"} {
		f.Add(s)
	}
	b := testBot(f)
	f.Fuzz(func(t *testing.T, data string) {
		for _, k := range []buttonKind{rerollButton, cancelButton} {
			key, ok := b.buttonKey(k, data)
			if ok && key == "" {
				t.Fatalf("%q: an empty key accepted", data)
			}
			if d := b.buttonData(k, data); len(d) > maxCallbackLen {
				t.Fatalf("data for key %q is %d bytes", data, len(d))
			} else if got, ok := b.buttonKey(k, d); data != "" && (!ok || got != data) {
				t.Fatalf("key %q round-trips to %q, %v", data, got, ok)
			}
		}
	})
}

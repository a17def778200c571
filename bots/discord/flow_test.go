package discord

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/discord/discordtest"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

const scope = "discord:guild:" + guildID

// 🔄 under a result runs the prompt again for whoever pressed it, charged
// to them, as a new reply.
func TestRerollChargesPresser(t *testing.T) {
	e := newEnv(t, ModeInteractions)
	token, _ := e.imagine(t, inGuild(alice, "en-US"), "a lighthouse at dusk", discordtest.String(optModel, "flux"))
	res := e.edits(t, token, 1, withFiles)
	ids := customIDs(t, decodeEdit(t, res[0]).Components)
	press := discordtest.Interaction(discordgo.InteractionMessageComponent, inGuild(bob, "en-US"), discordtest.Button(ids[0]))
	_, ptoken := discordtest.Fields(press)
	if r := e.send(t, press); r.Type != discordgo.InteractionResponseDeferredChannelMessageWithSource {
		t.Fatalf("reroll ack %d", r.Type)
	}
	e.edits(t, ptoken, 1, withFiles)
	if a, b := e.balance(t, scope, alice), e.balance(t, scope, bob); a.Used != 2 || b.Used != 2 {
		t.Fatalf("alice used %d, bob %d; want 2 each (flux costs 2)", a.Used, b.Used)
	}
	reqs := e.gw.Requests()
	if len(reqs) != 2 || !strings.Contains(string(reqs[1].Body), "a lighthouse at dusk") || !strings.Contains(string(reqs[1].Body), `"flux"`) {
		t.Fatalf("reroll request: %d requests", len(reqs))
	}
	// A button crafted with another server's job finds nothing.
	other := discordtest.Interaction(discordgo.InteractionMessageComponent, discordtest.Guild("1500000000000000099", bob, "en-US"), discordtest.Button(ids[0]))
	if r := e.send(t, other); r.Data == nil || r.Data.Flags&discordgo.MessageFlagsEphemeral == 0 || !strings.Contains(r.Data.Content, "can't find that image") {
		t.Fatalf("cross-server reroll: %+v", r.Data)
	}
}

// ✖ stops a job, queued or generating; it is refunded. Only the requester
// or a moderator may press it.
func TestCancel(t *testing.T) {
	e := newEnv(t, ModeInteractions, func(c *envConfig) { c.core.Concurrency = 1 })
	e.gw.Handle(upstreamtest.Hang())
	first, _ := e.imagine(t, inGuild(alice, "en-US"), "first")
	e.edits(t, first, 1, withText("Generating"))
	second, _ := e.imagine(t, inGuild(alice, "en-US"), "second")
	queued := e.edits(t, second, 1, withText("Queued #1"))
	cancelID := customIDs(t, decodeEdit(t, queued[0]).Components)[0]

	// Bob may not cancel Alice's job.
	r := e.send(t, discordtest.Interaction(discordgo.InteractionMessageComponent, inGuild(bob, "en-US"), discordtest.Button(cancelID)))
	if !strings.Contains(r.Data.Content, "Only the person who asked") {
		t.Fatalf("bob's press: %q", r.Data.Content)
	}
	if got := e.balance(t, scope, alice).Used; got != 2 {
		t.Fatalf("used %d after a refused cancel, want 2", got)
	}
	// Alice cancels the queued one, a moderator the generating one.
	e.send(t, discordtest.Interaction(discordgo.InteractionMessageComponent, inGuild(alice, "en-US"), discordtest.Button(cancelID)))
	e.edits(t, second, 1, withText("Cancelled. Your quota was refunded."))
	status := e.edits(t, first, 1, withText("Generating"))
	e.send(t, discordtest.Interaction(discordgo.InteractionMessageComponent, inGuild(manager, "en-US"), discordtest.Button(customIDs(t, decodeEdit(t, status[0]).Components)[0])))
	end := e.edits(t, first, 1, withText("Cancelled"))
	if ids := customIDs(t, decodeEdit(t, end[0]).Components); len(ids) != 0 {
		t.Fatalf("the cancelled reply keeps buttons %v", ids)
	}
	if got := e.balance(t, scope, alice).Used; got != 0 {
		t.Fatalf("used %d after both were cancelled, want 0", got)
	}
	jobs, err := e.svc.History(context.Background(), core.CLIActor(), core.AccountKey{Scope: scope, User: "discord:" + alice.User.ID}, 10)
	if err != nil || len(jobs) != 2 || jobs[0].State != core.JobRefunded || jobs[1].State != core.JobRefunded || jobs[0].Outcome != core.CodeCancelled {
		t.Fatalf("jobs %+v, %v", jobs, err)
	}
}

// Unsigned, wrongly signed or stale requests get 401 and run nothing; PING
// gets PONG.
func TestInteractionSignatures(t *testing.T) {
	e := newEnv(t, ModeInteractions)
	body := discordtest.Interaction(discordgo.InteractionApplicationCommand, inGuild(alice, "en-US"), discordtest.Command(cmdImagine, discordtest.String(optPrompt, "a fox")))
	other := discordtest.NewSigner()
	tampered := e.signer.Request(e.srv.URL, body, time.Now())
	tampered.Body = http.NoBody
	tampered.ContentLength = 0
	unsigned, _ := http.NewRequest(http.MethodPost, e.srv.URL, bytes.NewReader(body))
	cases := map[string]*http.Request{
		"unsigned":      unsigned,
		"other key":     other.Request(e.srv.URL, body, time.Now()),
		"stale":         e.signer.Request(e.srv.URL, body, time.Now().Add(-6*time.Minute)),
		"from the past": e.signer.Request(e.srv.URL, body, time.Now().Add(10*time.Minute)),
		"body changed":  tampered,
	}
	for name, req := range cases {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %d, want 401", name, resp.StatusCode)
		}
	}
	resp, err := http.DefaultClient.Do(e.signer.Request(e.srv.URL, discordtest.Ping(), time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	var pong discordgo.InteractionResponse
	_ = json.NewDecoder(resp.Body).Decode(&pong)
	resp.Body.Close()
	if resp.StatusCode != 200 || pong.Type != discordgo.InteractionResponsePong {
		t.Fatalf("ping: %d %+v", resp.StatusCode, pong)
	}
	time.Sleep(50 * time.Millisecond)
	if e.gw.Calls() != 0 || len(e.dc.Calls(discordtest.RouteEditOriginal)) != 0 || e.balance(t, scope, alice).Used != 0 {
		t.Fatal("a refused request ran a job")
	}
}

// Refusals are ephemeral, in the user's language, and cost nothing.
func TestRefusalsAreEphemeral(t *testing.T) {
	e := newEnv(t, ModeInteractions, func(c *envConfig) { c.core.Quotas.DefaultDaily = 1 })
	token, _ := e.imagine(t, inGuild(alice, "en-US"), "one")
	e.edits(t, token, 1, withFiles)
	cases := []struct {
		locale, want string
	}{
		{"en-US", "You've used all your images for today"},
		{"zh-CN", "今天的额度已用完"},
		{"zh-TW", "今天的額度已用完"},
	}
	for _, c := range cases {
		_, r := e.imagine(t, inGuild(alice, c.locale), "two")
		if r.Type != discordgo.InteractionResponseChannelMessageWithSource || r.Data.Flags&discordgo.MessageFlagsEphemeral == 0 || !strings.Contains(r.Data.Content, c.want) {
			t.Errorf("%s: %d %+v", c.locale, r.Type, r.Data)
		}
	}
	if e.gw.Calls() != 1 {
		t.Fatalf("%d upstream calls, want 1", e.gw.Calls())
	}
}

func TestRateLimitedIsEphemeral(t *testing.T) {
	e := newEnv(t, ModeGateway, func(c *envConfig) { c.core.Rate, c.core.Burst = 0.001, 1 })
	token, _ := e.imagine(t, inGuild(alice, "en-US"), "one")
	e.edits(t, token, 1, withFiles)
	_, r := e.imagine(t, inGuild(alice, "en-US"), "two")
	if r.Data == nil || r.Data.Flags&discordgo.MessageFlagsEphemeral == 0 || !strings.Contains(r.Data.Content, "going too fast") {
		t.Fatalf("%+v", r.Data)
	}
	if e.gw.Calls() != 1 || e.balance(t, scope, alice).Used != 1 {
		t.Fatal("the refused job was charged or run")
	}
}

// An upstream failure is reported in the user's language and refunded.
func TestUpstreamFailureInEveryLanguage(t *testing.T) {
	e := newEnv(t, ModeInteractions)
	e.gw.Handle(upstreamtest.Status(500, upstreamtest.ErrorBody("server_error", "boom"), nil))
	cases := map[string]string{
		"en-GB": "The image service failed to make your picture",
		"zh-CN": "图片服务生成失败",
		"zh-TW": "圖片服務產生失敗",
	}
	for locale, want := range cases {
		token, _ := e.imagine(t, inGuild(alice, locale), "a cat")
		e.edits(t, token, 1, withText(want))
	}
	if got := e.balance(t, scope, alice).Used; got != 0 {
		t.Fatalf("used %d, want 0: not refunded", got)
	}
}

// Moderators: Manage Server, a listed role, the owners; not a plain member,
// not in DMs unless an owner.
func TestModeratorMatrix(t *testing.T) {
	e := newEnv(t, ModeInteractions)
	grant := func(where discordtest.Where, target *discordgo.User) *discordgo.InteractionResponse {
		cmd := discordtest.WithUsers(discordtest.Command(cmdQuotaAdmin, discordtest.Sub("grant", discordtest.UserOpt(optUser, target.ID), discordtest.Int(optAmount, 3))), target)
		return e.send(t, discordtest.Interaction(discordgo.InteractionApplicationCommand, where, cmd))
	}
	owner := discordtest.Member(ownerID, "owner", 0)
	cases := []struct {
		name    string
		where   discordtest.Where
		scope   string
		allowed bool
	}{
		{"manage server", inGuild(manager, "en-US"), scope, true},
		{"moderator role", inGuild(helper, "en-US"), scope, true},
		{"owner in a guild", inGuild(owner, "en-US"), scope, true},
		{"plain member", inGuild(bob, "en-US"), scope, false},
		{"plain user in a DM", discordtest.DM(bob.User.ID, "bob", "en-US"), "discord:dm", false},
		{"owner in a DM", discordtest.DM(ownerID, "owner", "en-US"), "discord:dm", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.balance(t, c.scope, alice).Credits
			r := grant(c.where, alice.User)
			if r.Data == nil || r.Data.Flags&discordgo.MessageFlagsEphemeral == 0 {
				t.Fatalf("answer %+v is not ephemeral", r.Data)
			}
			after := e.balance(t, c.scope, alice).Credits
			if c.allowed && (after != before+3 || !strings.Contains(r.Data.Content, "Granted 3 credits to @alice")) {
				t.Fatalf("credits %d→%d: %q", before, after, r.Data.Content)
			}
			if !c.allowed && (after != before || !strings.Contains(r.Data.Content, "Only members who can manage this server")) {
				t.Fatalf("credits %d→%d: %q", before, after, r.Data.Content)
			}
		})
	}
	// The audit lists what happened, in the moderator's language.
	r := e.send(t, discordtest.Interaction(discordgo.InteractionApplicationCommand, inGuild(manager, "zh-TW"), discordtest.Command(cmdQuotaAdmin, discordtest.Sub("audit"))))
	if !strings.Contains(r.Data.Content, "增加額度") || !strings.Contains(r.Data.Content, "額外額度 0→3") {
		t.Fatalf("audit: %q", r.Data.Content)
	}
}

// /quota and /help answer only the asker, in their language.
func TestQuotaAndHelp(t *testing.T) {
	e := newEnv(t, ModeGateway)
	r := e.send(t, discordtest.Interaction(discordgo.InteractionApplicationCommand, inGuild(alice, "zh-CN"), discordtest.Command(cmdQuota)))
	if r.Data.Flags&discordgo.MessageFlagsEphemeral == 0 || !strings.Contains(r.Data.Content, "今日剩余：5 / 5") || !strings.Contains(r.Data.Content, "小时") {
		t.Fatalf("quota: %+v", r.Data)
	}
	r = e.send(t, discordtest.Interaction(discordgo.InteractionApplicationCommand, discordtest.DM(alice.User.ID, "alice", "en-US"), discordtest.Command(cmdHelp)))
	for _, w := range []string{"Stable Diffusion (model:stable-diffusion)", "/imagine prompt:a neon city at night model:flux aspect:16:9 negative:people", "/quota-admin"} {
		if !strings.Contains(r.Data.Content, w) {
			t.Errorf("help lacks %q:\n%s", w, r.Data.Content)
		}
	}
}

// Commands are registered once with their localizations; a restart with
// the same commands does not register them again.
func TestCommandsRegisteredOnlyWhenChanged(t *testing.T) {
	e := newEnv(t, ModeInteractions)
	cmds := e.dc.Commands("")
	if len(cmds) != 5 {
		t.Fatalf("%d commands", len(cmds))
	}
	var imagine discordgo.ApplicationCommand
	_ = json.Unmarshal(cmds[0], &imagine)
	if imagine.Name != "imagine" || (*imagine.NameLocalizations)[discordgo.ChineseCN] != "画图" || (*imagine.NameLocalizations)[discordgo.ChineseTW] != "畫圖" {
		t.Fatalf("imagine: %+v", imagine)
	}
	if n := len(e.dc.Calls(discordtest.RouteGlobalCmds)); n != 1 {
		t.Fatalf("%d overwrites", n)
	}
	// Another start against what is registered now: no overwrite.
	b2, err := New(e.bot.cfg, e.svc, WithLogger(e.bot.log))
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.syncCommands(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(e.dc.Calls(discordtest.RouteGlobalCmds)); n != 1 {
		t.Fatalf("%d overwrites after a restart with the same commands", n)
	}
}

// A double tap on 🔄 while the first press's picture is being made is
// answered "already making it" and charged once.
func TestRerollDoubleTap(t *testing.T) {
	e := newEnv(t, ModeInteractions)
	token, _ := e.imagine(t, inGuild(alice, "en-US"), "a lighthouse")
	ids := customIDs(t, decodeEdit(t, e.edits(t, token, 1, withFiles)[0]).Components)
	e.gw.Handle(upstreamtest.Hang())
	press := func() *discordgo.InteractionResponse {
		return e.send(t, discordtest.Interaction(discordgo.InteractionMessageComponent, inGuild(bob, "en-US"), discordtest.Button(ids[0])))
	}
	if r := press(); r.Type != discordgo.InteractionResponseDeferredChannelMessageWithSource {
		t.Fatalf("first press: %d", r.Type)
	}
	if r := press(); r.Data == nil || !strings.Contains(r.Data.Content, "Already making it") || r.Data.Flags&discordgo.MessageFlagsEphemeral == 0 {
		t.Fatalf("second press: %+v", r.Data)
	}
	if used := e.balance(t, scope, bob).Used; used != 1 {
		t.Fatalf("bob used %d, want 1", used)
	}
}

// /settings keeps a member's defaults in the server: /imagine uses them,
// the bot answers in the chosen language, reset forgets them.
func TestSettings(t *testing.T) {
	e := newEnv(t, ModeGateway)
	settings := func(where discordtest.Where, opts ...discordtest.Opt) string {
		r := e.send(t, discordtest.Interaction(discordgo.InteractionApplicationCommand, where, discordtest.Command(cmdSettings, opts...)))
		if r.Data == nil || r.Data.Flags&discordgo.MessageFlagsEphemeral == 0 {
			t.Fatalf("settings answer %+v is not ephemeral", r.Data)
		}
		return r.Data.Content
	}
	if got := settings(inGuild(alice, "en-US")); !strings.Contains(got, "Model: default (Stable Diffusion)") || !strings.Contains(got, "automatic (English)") {
		t.Fatalf("settings: %q", got)
	}
	if got := settings(inGuild(alice, "en-US"), discordtest.String(optLanguage, "tlh")); !strings.Contains(got, "I don't speak") {
		t.Fatalf("crafted language: %q", got)
	}
	got := settings(inGuild(alice, "en-US"), discordtest.String(optModel, "flux"), discordtest.String(optAspect, "9:16"), discordtest.String(optLanguage, "zh-Hans"))
	if !strings.Contains(got, "✅ 已保存。") || !strings.Contains(got, "FLUX (flux)") || !strings.Contains(got, "9:16") {
		t.Fatalf("saved: %q", got)
	}
	token, _ := e.imagine(t, inGuild(alice, "en-US"), "a fox")
	res := decodeEdit(t, e.edits(t, token, 1, withFiles)[0])
	if f := res.Embeds[0].Footer.Text; !strings.Contains(f, "FLUX") || !strings.Contains(f, "9:16") || !strings.Contains(f, "今日剩余额度") {
		t.Fatalf("footer %q: want flux, 9:16, in Simplified Chinese", f)
	}
	if got := settings(inGuild(alice, "en-US"), discordtest.Opt{Name: optReset, Type: discordgo.ApplicationCommandOptionBoolean, Value: true}); !strings.Contains(got, "Model: default") || !strings.Contains(got, "automatic (English)") {
		t.Fatalf("reset: %q", got)
	}
}

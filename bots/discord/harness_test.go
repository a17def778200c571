package discord

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/chat/chattest"
	"github.com/imaginebot/imaginebot/bots/discord/discordtest"
	"github.com/imaginebot/imaginebot/bots/pace"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/fetch"
	"github.com/imaginebot/imaginebot/core/upstream"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
	"github.com/imaginebot/imaginebot/storage/memory"
)

var _ Service = (*core.Service)(nil)

const wait = 5 * time.Second

const guildID = "1500000000000000001"

// People in the tests. Permissions are Discord's bit sets.
var (
	alice   = discordtest.Member("1600000000000000001", "alice", 0)
	bob     = discordtest.Member("1600000000000000002", "bob", 0)
	manager = discordtest.Member("1600000000000000003", "manager", discordgo.PermissionManageGuild)
	helper  = discordtest.Member("1600000000000000004", "helper", 0, modRoleID)
	ownerID = "1600000000000000009"
)

const modRoleID = "1700000000000000001"

// env is the real wiring: the adapter over core.Service with the in-memory
// store, the upstream client and fetcher against the fake gateway, the fake
// Discord REST API (reached through api_base_url) and, in interactions
// mode, the signed HTTP endpoint; in gateway mode, the fake websocket.
type env struct {
	t      testing.TB
	dc     *discordtest.Server
	gw     *upstreamtest.Gateway
	svc    *core.Service
	bot    *Bot
	signer *discordtest.Signer
	srv    *httptest.Server
	log    *chattest.Logs
	mode   string
}

type envConfig struct {
	core    core.Config
	discord Config
	opts    []Option
	paced   bool // Discord's real limits, against a fake that enforces them
	quiet   bool // logs discarded (memory measurements)
	dcOpts  []discordtest.Option
}

func newEnv(t testing.TB, mode string, mods ...func(*envConfig)) *env {
	t.Helper()
	gw := upstreamtest.New(t)
	c := envConfig{
		core:    chattest.CoreConfig(),
		discord: Config{Mode: mode, Owners: []string{ownerID}, ModeratorRoles: []string{modRoleID}, AllowDMs: true, ProgressInterval: 10 * time.Millisecond},
	}
	for _, m := range mods {
		m(&c)
	}
	dc := discordtest.New(t, append(enforced(c.paced), c.dcOpts...)...)
	signer := discordtest.NewSigner()
	c.discord.Token, c.discord.ApplicationID, c.discord.APIBaseURL, c.discord.PublicKey = discordtest.Token, discordtest.AppID, dc.URL, signer.PublicKey()
	logs := &chattest.Logs{}
	log := logs.Logger()
	if c.quiet {
		log = slog.New(slog.DiscardHandler)
	}

	f := fetch.New(fetch.Config{MaxBytes: 32 << 20, AllowedHosts: []string{"127.0.0.1"}})
	gen := upstream.New(upstream.Config{BaseURL: gw.URL, APIKey: "sk-test-upstream-key", Retries: -1}, f, upstream.WithLogger(log))
	svc, err := core.NewService(c.core, memory.New(), gen, core.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	opts := []Option{WithLogger(log)}
	if !c.paced {
		opts = append(opts, WithLimits(pace.Limits{}))
	}
	b, err := New(c.discord, svc, append(opts, c.opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	e := &env{t: t, dc: dc, gw: gw, svc: svc, bot: b, signer: signer, log: logs, mode: mode}
	if mode == ModeInteractions {
		e.srv = httptest.NewServer(b.InteractionsHandler(ctx))
	}
	run := chattest.Run{Cancel: cancel, Done: done, Drain: []func(context.Context) error{svc.Shutdown, b.Wait}, Logs: logs,
		Secrets: []string{discordtest.Token, "sk-test-upstream-key"}}
	t.Cleanup(func() {
		e.noPings(t)
		run.Stop(t, wait)
		if e.srv != nil {
			e.srv.Close()
		}
	})
	deadline := time.Now().Add(wait)
	for b.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", b.Ready())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return e
}

// send delivers an interaction the way the mode does (a signed POST, or a
// gateway dispatch) and returns the bot's first response to it.
func (e *env) send(t testing.TB, body []byte) *discordgo.InteractionResponse {
	t.Helper()
	id, _ := discordtest.Fields(body)
	if e.mode == ModeInteractions {
		resp, err := http.DefaultClient.Do(e.signer.Request(e.srv.URL, body, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("interaction answered %d: %s", resp.StatusCode, data)
		}
		var r discordgo.InteractionResponse
		if err := json.Unmarshal(data, &r); err != nil {
			t.Fatalf("response %q: %v", data, err)
		}
		return &r
	}
	if n := e.dc.Dispatch("INTERACTION_CREATE", body); n != 1 {
		t.Fatalf("dispatched to %d gateway clients", n)
	}
	calls := e.dc.WaitCalls(t, discordtest.RouteCallback, 1, wait, func(c discordtest.Call) bool { return strings.Contains(c.Path, "/"+id+"/") })
	var r discordgo.InteractionResponse
	if err := calls[0].Decode(&r); err != nil {
		t.Fatal(err)
	}
	return &r
}

// imagine sends /imagine prompt:… with more options and returns the
// interaction's token.
func (e *env) imagine(t testing.TB, where discordtest.Where, prompt string, opts ...discordtest.Opt) (string, *discordgo.InteractionResponse) {
	t.Helper()
	body := discordtest.Interaction(discordgo.InteractionApplicationCommand, where, discordtest.Command(cmdImagine, append([]discordtest.Opt{discordtest.String(optPrompt, prompt)}, opts...)...))
	_, token := discordtest.Fields(body)
	return token, e.send(t, body)
}

// edits waits for n edits of the reply of token that match.
func (e *env) edits(t testing.TB, token string, n int, match func(discordtest.Call) bool) []discordtest.Call {
	t.Helper()
	return e.dc.WaitCalls(t, discordtest.RouteEditOriginal, n, wait, func(c discordtest.Call) bool {
		return strings.Contains(c.Path, "/"+token+"/") && (match == nil || match(c))
	})
}

// withText matches calls whose content has every fragment.
func withText(fragments ...string) func(discordtest.Call) bool {
	return func(c discordtest.Call) bool {
		var m struct{ Content string }
		_ = c.Decode(&m)
		for _, f := range fragments {
			if !strings.Contains(m.Content, f) {
				return false
			}
		}
		return true
	}
}

func withFiles(c discordtest.Call) bool { return len(c.Files) > 0 }

func (e *env) balance(t testing.TB, scope string, m *discordgo.Member) core.Balance {
	t.Helper()
	return chattest.Balance(t, e.svc, scope, "discord:"+m.User.ID)
}

// noPings checks that every message the bot sent pings nobody but, in a
// channel post, the requester.
func (e *env) noPings(t testing.TB) {
	t.Helper()
	for _, c := range e.dc.Calls("") {
		if c.Method == http.MethodGet || len(c.JSON) == 0 || c.Route == discordtest.RouteGlobalCmds || c.Route == discordtest.RouteGuildCmds {
			continue
		}
		var m struct {
			AllowedMentions *struct {
				Parse []string `json:"parse"`
				Users []string `json:"users"`
				Roles []string `json:"roles"`
			} `json:"allowed_mentions"`
			Data *struct {
				AllowedMentions *struct {
					Parse []string `json:"parse"`
				} `json:"allowed_mentions"`
			} `json:"data"`
			Type int `json:"type"`
		}
		_ = c.Decode(&m)
		if c.Route == discordtest.RouteCallback {
			if m.Data != nil && (m.Data.AllowedMentions == nil || len(m.Data.AllowedMentions.Parse) != 0) {
				t.Errorf("%s may ping: %s", c.Route, c.JSON)
			}
			continue
		}
		if m.AllowedMentions == nil || len(m.AllowedMentions.Parse) != 0 || len(m.AllowedMentions.Roles) != 0 || len(m.AllowedMentions.Users) > 1 {
			t.Errorf("%s may ping: %s", c.Route, c.JSON)
		}
	}
}

var modes = []string{ModeInteractions, ModeGateway}

// enforced makes the fake enforce Discord's limits when on.
func enforced(on bool) []discordtest.Option {
	if on {
		return []discordtest.Option{discordtest.WithRateLimits()}
	}
	return nil
}

func inGuild(m *discordgo.Member, locale string) discordtest.Where {
	return discordtest.Guild(guildID, m, locale)
}

package main

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/discord/discordtest"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// The real wiring serves Discord alone, in HTTP interactions mode, on
// http.listen: a signed /imagine becomes a deferred ack and then the
// picture; an unsigned one is refused; /readyz counts Discord in.
func TestRunDiscordInteractions(t *testing.T) {
	gw := upstreamtest.New(t)
	gw.RequireKey("sk-e2e")
	dc := discordtest.New(t)
	signer := discordtest.NewSigner()
	w := &world{gw: gw, db: filepath.Join(t.TempDir(), "imaginebot.db")}
	w.env = map[string]string{
		"IMAGINEBOT_UPSTREAM_API_KEY":       "sk-e2e",
		"IMAGINEBOT_DISCORD_TOKEN":          discordtest.Token,
		"IMAGINEBOT_DISCORD_APPLICATION_ID": discordtest.AppID,
		"IMAGINEBOT_DISCORD_PUBLIC_KEY":     signer.PublicKey(),
		"IMAGINEBOT_DISCORD_API_BASE_URL":   dc.URL,
		"IMAGINEBOT_DB":                     w.db,
	}
	w.cfg = gatewayConfig(t, gw, "quotas:\n  daily: 2\nhttp:\n  listen: 127.0.0.1:0\ndiscord:\n  mode: interactions\n  guilds: [\"1500000000000000001\"]\n")
	addr, stop := w.start(t)
	url := "http://" + addr + "/discord/interactions"

	dc.WaitCalls(t, discordtest.RouteGuildCmds, 1, 10*time.Second, nil)
	if cmds := dc.Commands("1500000000000000001"); len(cmds) != 5 {
		t.Fatalf("%d guild commands registered", len(cmds))
	}
	alice := discordtest.Member("1600000000000000001", "alice", 0)
	body := discordtest.Interaction(discordgo.InteractionApplicationCommand, discordtest.Guild("1500000000000000001", alice, "zh-TW"),
		discordtest.Command("imagine", discordtest.String("prompt", "雪地裡的狐狸")))
	unsigned, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(string(body)))
	if resp, err := http.DefaultClient.Do(unsigned); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unsigned: %v %v", resp, err)
	}
	resp, err := http.DefaultClient.Do(signer.Request(url, body, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var ack discordgo.InteractionResponse
	if err := json.Unmarshal(data, &ack); err != nil || ack.Type != discordgo.InteractionResponseDeferredChannelMessageWithSource {
		t.Fatalf("ack %s: %v", data, err)
	}
	res := dc.WaitCalls(t, discordtest.RouteEditOriginal, 1, 10*time.Second, func(c discordtest.Call) bool { return len(c.Files) == 1 })[0]
	var edit struct {
		Embeds []*discordgo.MessageEmbed `json:"embeds"`
	}
	_ = res.Decode(&edit)
	if len(edit.Embeds) != 1 || !strings.Contains(edit.Embeds[0].Footer.Text, "今日剩餘額度：1") {
		t.Fatalf("result %s", res.JSON)
	}
	ready, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(ready.Body)
	ready.Body.Close()
	if ready.StatusCode != 200 {
		t.Fatalf("readyz %d: %s", ready.StatusCode, text)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := w.remaining(t, "discord:guild:1500000000000000001", "discord:1600000000000000001"); got != "1" {
		t.Fatalf("remaining %q, want 1", got)
	}
}

// With neither platform configured, run says what to set.
func TestRunNeedsAPlatform(t *testing.T) {
	gw := upstreamtest.New(t)
	cfg := gatewayConfig(t, gw, "")
	code, _, errOut := runCLI(t, map[string]string{"IMAGINEBOT_UPSTREAM_API_KEY": "sk-x", "IMAGINEBOT_DB": filepath.Join(t.TempDir(), "x.db")}, "run", "-config", cfg)
	if code == 0 || !strings.Contains(errOut, "IMAGINEBOT_TELEGRAM_TOKEN") || !strings.Contains(errOut, "IMAGINEBOT_DISCORD_TOKEN") {
		t.Fatalf("%d %s", code, errOut)
	}
}

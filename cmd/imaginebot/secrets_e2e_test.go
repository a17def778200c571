package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/chat/chattest"
	"github.com/imaginebot/imaginebot/bots/discord/discordtest"
	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
	"github.com/imaginebot/imaginebot/core/netproxy/netproxytest"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// No secret reaches the log, whatever fails: the real wiring, at debug
// level, with Telegram, Discord (interactions mode) and the gateway all
// through a proxy with a password, meets failing calls everywhere — Telegram
// answering 401, 500 and 429 and dropping connections (its library puts the
// token in every URL, and in the errors of a dropped call), Discord failing
// the interaction webhooks (whose URLs hold the interaction tokens) and the
// bot-token calls, the gateway answering 401 with the key in its body, 500,
// HTML and dropped connections, and image links signed in their query — and
// then the proxy goes away. The whole log is searched for each secret.
func TestRunLogsNoSecrets(t *testing.T) {
	const (
		apiKey    = "sk-secret-e2e-0123456789abcdef"
		uidSecret = "uid-secret-e2e-fedcba9876543210"
		signature = "SIGNATURE0a1b2c3d4e5f60718293a4b5c6d7e8f9"
		guild     = "1500000000000000001"
	)
	gw := upstreamtest.New(t)
	tg := telegramtest.New(t)
	var abortDiscord atomic.Int32 // calls of the edit route to drop
	dc := discordtest.New(t, discordtest.OnCall(func(c discordtest.Call) {
		if c.Route == discordtest.RouteEditOriginal && abortDiscord.Add(-1) >= 0 {
			panic(http.ErrAbortHandler) // the connection drops: the client's error is a *url.Error
		}
	}))
	signer := discordtest.NewSigner()
	proxy := netproxytest.HTTP(t, netproxytest.WithAuth("alice", proxyPassword))
	env := map[string]string{
		"IMAGINEBOT_UPSTREAM_API_KEY":       apiKey,
		"IMAGINEBOT_USER_ID_SECRET":         uidSecret,
		"IMAGINEBOT_TELEGRAM_TOKEN":         telegramtest.DefaultToken,
		"IMAGINEBOT_TELEGRAM_API_BASE_URL":  tg.URL,
		"IMAGINEBOT_DISCORD_TOKEN":          discordtest.Token,
		"IMAGINEBOT_DISCORD_APPLICATION_ID": discordtest.AppID,
		"IMAGINEBOT_DISCORD_PUBLIC_KEY":     signer.PublicKey(),
		"IMAGINEBOT_DISCORD_API_BASE_URL":   dc.URL,
		"IMAGINEBOT_PROXY":                  "http://alice@" + proxy.Addr(),
		"IMAGINEBOT_PROXY_PASSWORD":         proxyPassword,
		// Telegram and Discord direct: through the proxy, a dropped
		// connection would come back as the proxy's 502, not as the
		// client's *url.Error, whose text holds the URL.
		"IMAGINEBOT_TELEGRAM_PROXY": "direct",
		"IMAGINEBOT_DISCORD_PROXY":  "direct",
		"IMAGINEBOT_DB":             filepath.Join(t.TempDir(), "imaginebot.db"),
	}
	cfg := writeConfig(t, "upstream:\n  base_url: "+strings.Replace(gw.URL, "127.0.0.1", "localhost", 1)+"\n  retries: 0\n"+
		"images:\n  allow_private_hosts: [127.0.0.1]\n"+
		"quotas:\n  daily: 100\nlimits:\n  rate_per_minute: 0\n  per_user_jobs: 10\n  concurrency: 1\n"+
		"log:\n  level: debug\nhttp:\n  listen: 127.0.0.1:0\n"+
		"telegram:\n  poll_timeout: 1s\n  progress_interval: 1s\n"+
		"discord:\n  mode: interactions\n  guilds: [\""+guild+"\"]\n", 0o600)
	addr, logs := startRunAt(t, cfg, env)
	dc.WaitCalls(t, discordtest.RouteGuildCmds, 1, 15*time.Second, nil)

	signed := func(name string) string {
		return gw.ImageURL(name) + "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=" + signature
	}
	gw.ServeImage("signed.png", "image/png", upstreamtest.PNG(16, 16))
	drop := func(w http.ResponseWriter, r *upstreamtest.Request) { panic(http.ErrAbortHandler) }
	failures := 0 // jobs expected to fail so far
	waitFailed := func(n int) {
		t.Helper()
		failures += n
		waitLog(t, logs, `msg="job failed"`, failures)
	}

	// The gateway's failures, from Telegram.
	alice := telegramtest.User(42, "alice", "en")
	gw.Push(
		upstreamtest.JSON(401, map[string]any{"error": map[string]any{"message": "无效的令牌 " + apiKey + " (request id: 1)", "type": "one_api_error"}}),
		upstreamtest.Status(500, upstreamtest.ErrorBody("do_request_failed", "upstream failed for key "+apiKey), nil),
		upstreamtest.Status(502, "<html><body><h1>502 Bad Gateway</h1>"+apiKey+"</body></html>", nil),
		drop,
		// A bare signed link that is no image: the answer is a refusal
		// whose text holds the signature.
		upstreamtest.JSON(200, upstreamtest.Completion("生成完成 "+signed("missing.404"))),
		// A signed image streamed with a progress line that shows it.
		upstreamtest.Stream(upstreamtest.Chunk("图像生成中 50% 预览 "+signed("signed.png")+"\n"), upstreamtest.Chunk("![x]("+signed("signed.png")+")")),
	)
	for _, p := range []string{"key in the body", "500", "html", "dropped", "signed link", "signed stream"} {
		tg.Inject(tg.PrivateText(alice, p))
	}
	waitFailed(5)
	tg.WaitCall(t, "sendPhoto", 15*time.Second)

	// Telegram's failures: 401, 500 (then the signed link is not public,
	// so the delivery fails), 429, and dropped connections.
	tg.FailNext("sendMessage", 401, "Unauthorized", 0)
	tg.FailNext("sendPhoto", 500, "Internal Server Error", 0)
	gw.Push(upstreamtest.JSON(200, upstreamtest.Completion("![x]("+signed("signed.png")+")")))
	tg.Inject(tg.PrivateText(alice, "telegram fails"))
	waitFailed(1)
	tg.FailNext("sendPhoto", 429, "Too Many Requests: retry after 1", 1)
	tg.Inject(tg.PrivateText(alice, "telegram is busy"))
	tg.WaitCalls(t, "sendPhoto", 4, 15*time.Second)
	tg.Handle("sendMessage", func(telegramtest.Call) (any, *telegramtest.Failure) {
		tg.Handle("sendMessage", nil) // once
		panic(http.ErrAbortHandler)
	})
	tg.Inject(tg.PrivateText(alice, "/quota"))
	waitLog(t, logs, `/sendMessage\": EOF`, 1) // the library's error, with the URL

	// Discord's failures: a token that no longer works (every edit of the
	// reply answers 401), then the channel posts with the bot token fail;
	// edits whose connection drops.
	var itokens []string
	imagine := func(prompt string, before func(token string)) {
		t.Helper()
		body := discordtest.Interaction(discordgo.InteractionApplicationCommand, discordtest.Guild(guild, discordtest.Member("1600000000000000001", "bob", 0), "en-US"),
			discordtest.Command("imagine", discordtest.String("prompt", prompt)))
		var in struct{ Token string }
		if err := json.Unmarshal(body, &in); err != nil || in.Token == "" {
			t.Fatalf("interaction token: %v", err)
		}
		itokens = append(itokens, in.Token)
		if before != nil {
			before(in.Token)
		}
		resp, err := http.DefaultClient.Do(signer.Request("http://"+addr+"/discord/interactions", body, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	dc.FailNext(discordtest.RouteChannelPost, discordtest.Failure{Status: 500, Body: `{"message":"500: Internal Server Error","code":0}`})
	dc.FailNext(discordtest.RouteChannelPost, discordtest.Failure{Status: 403, Body: `{"message":"Missing Access","code":50001}`})
	imagine("the token is gone", dc.Expire)
	waitFailed(1)
	waitLog(t, logs, "discord: channel message failed", 2)
	abortDiscord.Store(1000)
	imagine("discord drops the edits", nil)
	waitFailed(1)
	waitLog(t, logs, "discord: could not edit the reply", 2)
	abortDiscord.Store(0)

	// The proxy goes away: the gateway call fails at the connection.
	proxy.Close()
	tg.Inject(tg.PrivateText(alice, "no proxy"))
	waitFailed(1)
	waitLog(t, logs, "proxyconnect", 1)

	text := logs.String()
	for _, want := range []string{"code=upstream_auth", "code=bad_response", "code=refused", "upstream: progress", "rate limited by Telegram", "unauthorized, Unauthorized",
		"could not edit the reply", "Missing Access"} {
		if !strings.Contains(text, want) {
			t.Errorf("the log lacks %q: a failure was not exercised", want)
		}
	}
	secrets := map[string]string{
		"the Telegram token": telegramtest.DefaultToken, "the Telegram token, escaped": url.PathEscape(telegramtest.DefaultToken),
		"the Discord bot token": discordtest.Token,
		"the gateway key":       apiKey, "the key without sk-": strings.TrimPrefix(apiKey, "sk-"),
		"upstream.user_id_secret": uidSecret, "the proxy password": proxyPassword, "the signed query": signature,
	}
	for i, tok := range itokens {
		secrets["interaction token "+string(rune('1'+i))] = tok
	}
	for what, secret := range secrets {
		if strings.Contains(text, secret) {
			for _, line := range strings.Split(text, "\n") {
				if strings.Contains(line, secret) {
					t.Errorf("%s is in the log: %s", what, line)
				}
			}
		}
	}
	if t.Failed() {
		t.Logf("logs:\n%s", text)
	}
}

// startRunAt is startRun that also returns the HTTP listener's address.
func startRunAt(t *testing.T, cfgPath string, env map[string]string) (string, *chattest.Logs) {
	t.Helper()
	addr := make(chan string, 1)
	logs := startRunReady(t, cfgPath, env, func(a string) { addr <- a })
	return <-addr, logs
}

// waitLog waits until the log holds n lines containing s.
func waitLog(t *testing.T, logs *chattest.Logs, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(logs.String(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the log has %d lines with %q, want %d:\n%s", strings.Count(logs.String(), s), s, n, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

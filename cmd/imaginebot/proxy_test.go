package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/bots/chat/chattest"
	"github.com/imaginebot/imaginebot/bots/discord/discordtest"
	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
	"github.com/imaginebot/imaginebot/core/netproxy"
	"github.com/imaginebot/imaginebot/core/netproxy/netproxytest"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

const proxyPassword = "pr0xy-pa55word-from-env"

func TestProxyConfig(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  map[string]string
		// want is each target's route: a redacted URL with the user, "env"
		// (no proxy configured) or "direct".
		want map[string]string
		pw   string // the password the top-level proxy gets
	}{
		{"none", "", nil, map[string]string{"upstream": "env", "telegram": "env", "discord": "env"}, ""},
		{"top level for all", "proxy: socks5://127.0.0.1:1080\n", nil,
			map[string]string{"upstream": "socks5://127.0.0.1:1080", "telegram": "socks5://127.0.0.1:1080", "discord": "socks5://127.0.0.1:1080"}, ""},
		{"overrides and direct", "proxy: http://proxy.example:3128\ntelegram:\n  proxy: direct\ndiscord:\n  proxy: https://other.example\n", nil,
			map[string]string{"upstream": "http://proxy.example:3128", "telegram": "direct", "discord": "https://other.example:443"}, ""},
		{"direct everywhere", "proxy: DIRECT\n", nil, map[string]string{"upstream": "direct", "telegram": "direct", "discord": "direct"}, ""},
		{"environment", "", map[string]string{"IMAGINEBOT_PROXY": "http://alice@127.0.0.1:3128", "IMAGINEBOT_PROXY_PASSWORD": proxyPassword, "IMAGINEBOT_UPSTREAM_PROXY": "direct"},
			map[string]string{"upstream": "direct", "telegram": "http://127.0.0.1:3128", "discord": "http://127.0.0.1:3128"}, proxyPassword},
		{"environment wins over the file", "proxy: http://file.example:1\ntelegram:\n  proxy: direct\n",
			map[string]string{"IMAGINEBOT_PROXY": "socks5://env.example:2", "IMAGINEBOT_TELEGRAM_PROXY": "http://tg.example:3"},
			map[string]string{"upstream": "socks5://env.example:2", "telegram": "http://tg.example:3", "discord": "socks5://env.example:2"}, ""},
		{"password only for the top level", "proxy: http://alice@a.example:1\ndiscord:\n  proxy: http://bob@b.example:2\n", map[string]string{"IMAGINEBOT_PROXY_PASSWORD": proxyPassword},
			map[string]string{"upstream": "http://a.example:1", "telegram": "http://a.example:1", "discord": "http://b.example:2"}, proxyPassword},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := LoadConfig(writeConfig(t, tt.yaml, 0o600), envMap(tt.env), func(string) {})
			if err != nil {
				t.Fatal(err)
			}
			for target, own := range map[string]string{"upstream": cfg.Upstream.Proxy, "telegram": cfg.Telegram.Proxy, "discord": cfg.Discord.Proxy} {
				u, set := cfg.proxyFor(own)
				got := "env"
				if set {
					got = netproxy.Redact(u)
				}
				if got != tt.want[target] {
					t.Errorf("%s goes %s, want %s", target, got, tt.want[target])
				}
				if u == nil || tt.pw == "" {
					continue
				}
				pw, _ := u.User.Password()
				if top := own == ""; top && pw != tt.pw {
					t.Errorf("%s: the top-level proxy's password is %q", target, pw)
				} else if !top && pw != "" {
					t.Errorf("%s: its own proxy got the top-level password", target)
				}
			}
		})
	}
}

func TestProxyConfigProblems(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  map[string]string
		want []string
	}{
		{"scheme", "proxy: ftp://alice:" + proxyPassword + "@proxy.example\n", nil,
			[]string{`proxy: has the scheme "ftp"; use http, https or socks5; write scheme://`}},
		{"no scheme", "upstream:\n  proxy: 127.0.0.1:1080\n", nil,
			[]string{"upstream.proxy: has no scheme;", "or direct for no proxy"}},
		{"none is not direct", "telegram:\n  proxy: none\n", nil, []string{"telegram.proxy: has no scheme;", "or direct for no proxy"}},
		{"socks5h", "discord:\n  proxy: socks5h://127.0.0.1:1080\n", nil, []string{`discord.proxy: has the scheme "socks5h"; write socks5://`}},
		{"no host", "", map[string]string{"IMAGINEBOT_PROXY": "http://:3128"}, []string{"proxy: has no host"}},
		{"bad port with a password", "proxy: http://alice:" + proxyPassword + "@proxy.example:x\n", nil, []string{"proxy: is not a URL"}},
		{"password without proxy", "", map[string]string{"IMAGINEBOT_PROXY_PASSWORD": proxyPassword}, []string{"IMAGINEBOT_PROXY_PASSWORD: is set but proxy is not"}},
		{"password without user", "proxy: http://proxy.example:3128\n", map[string]string{"IMAGINEBOT_PROXY_PASSWORD": proxyPassword},
			[]string{"IMAGINEBOT_PROXY_PASSWORD: is set but proxy names no user; put the user in the URL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadConfig(writeConfig(t, tt.yaml, 0o600), envMap(tt.env), func(string) {})
			msg := fmt.Sprint(err)
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
			}
			if strings.Contains(msg, proxyPassword) {
				t.Errorf("the error shows the password:\n%s", msg)
			}
		})
	}
}

// A password written into a proxy URL in a file others can read is a
// secret in that file.
func TestProxyPasswordInAReadableFile(t *testing.T) {
	var warned []string
	path := writeConfig(t, "proxy: http://alice:"+proxyPassword+"@proxy.example:3128\n", 0o644)
	if _, err := LoadConfig(path, envMap(nil), func(s string) { warned = append(warned, s) }); err != nil {
		t.Fatal(err)
	}
	if len(warned) != 1 || strings.Contains(warned[0], proxyPassword) {
		t.Fatalf("warnings %q", warned)
	}
	warned = nil
	path = writeConfig(t, "proxy: http://alice@proxy.example:3128\n", 0o644)
	if _, err := LoadConfig(path, envMap(map[string]string{"IMAGINEBOT_PROXY_PASSWORD": proxyPassword}), func(s string) { warned = append(warned, s) }); err != nil || len(warned) != 0 {
		t.Fatalf("warnings %q, %v", warned, err)
	}
}

// proxyWorld is the whole bot's outside — the fake gateway, the fake Bot
// API, the fake Discord (gateway mode: REST and websocket) — and a private
// server no image may reach, for the bot to run against through proxies.
type proxyWorld struct {
	gw       *upstreamtest.Gateway
	tg       *telegramtest.Server
	dc       *discordtest.Server
	internal string // host:port of the private server
	hits     atomic.Int32
	db       string
	env      map[string]string
}

func newProxyWorld(t *testing.T) *proxyWorld {
	t.Helper()
	w := &proxyWorld{gw: upstreamtest.New(t), tg: telegramtest.New(t), dc: discordtest.New(t), db: filepath.Join(t.TempDir(), "imaginebot.db")}
	w.gw.RequireKey("sk-proxy-e2e")
	internal := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.hits.Add(1)
		_, _ = rw.Write(upstreamtest.PNG(4, 4))
	}))
	t.Cleanup(internal.Close)
	w.internal = internal.Listener.Addr().String()
	w.env = map[string]string{
		"IMAGINEBOT_UPSTREAM_API_KEY":       "sk-proxy-e2e",
		"IMAGINEBOT_TELEGRAM_TOKEN":         telegramtest.DefaultToken,
		"IMAGINEBOT_TELEGRAM_API_BASE_URL":  w.tg.URL,
		"IMAGINEBOT_DISCORD_TOKEN":          discordtest.Token,
		"IMAGINEBOT_DISCORD_APPLICATION_ID": discordtest.AppID,
		"IMAGINEBOT_DISCORD_API_BASE_URL":   w.dc.URL,
		"IMAGINEBOT_DB":                     w.db,
	}
	return w
}

// config is the bot's file: the gateway by name (so that a proxy asked for
// it is told the name), images allowed from 127.0.0.1 only.
func (w *proxyWorld) config(t *testing.T, extra string) string {
	return writeConfig(t, "upstream:\n  base_url: "+w.gatewayByName()+"\n  retries: 0\n"+
		"images:\n  allow_private_hosts: [127.0.0.1]\n"+
		"telegram:\n  poll_timeout: 1s\n  progress_interval: 1s\n"+
		"discord:\n  guilds: [\"1500000000000000001\"]\n"+extra, 0o600)
}

func (w *proxyWorld) gatewayByName() string {
	return strings.Replace(w.gw.URL, "127.0.0.1", "localhost", 1)
}

func hostOf(rawURL string) string { return strings.TrimPrefix(rawURL, "http://") }

// exercise runs two jobs from Telegram: one whose picture is at the
// gateway (allowed), one whose picture is on the private server by a name
// that resolves to loopback (refused). Discord is up by then.
func (w *proxyWorld) exercise(t *testing.T) {
	t.Helper()
	w.dc.WaitCalls(t, discordtest.RouteGuildCmds, 1, 15*time.Second, nil)
	if n := waitDispatch(w.dc, 15*time.Second); n != 1 {
		t.Fatalf("the Discord gateway has %d clients", n)
	}
	alice := telegramtest.User(42, "alice", "en")
	w.tg.Inject(w.tg.PrivateText(alice, "a fox in the snow"))
	w.tg.WaitCall(t, "sendPhoto", 15*time.Second)
	_, port, _ := net.SplitHostPort(w.internal)
	w.gw.Push(upstreamtest.JSON(200, upstreamtest.Completion("![x](http://localhost:"+port+"/secret.png)")))
	w.tg.Inject(w.tg.PrivateText(alice, "a second fox"))
	w.tg.WaitText(t, 42, 15*time.Second, "can't safely download")
}

// waitDispatch waits for the bot's websocket to be there to dispatch to.
func waitDispatch(dc *discordtest.Server, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		// An unknown event type: the bot ignores it.
		if n := dc.Dispatch("TYPING_START", []byte(`{}`)); n > 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkThrough checks that the Telegram calls, the Discord REST calls and
// websocket, the gateway call and the allowed image went through p with
// its credentials, and that the refused image never reached it.
func (w *proxyWorld) checkThrough(t *testing.T, p *netproxytest.Proxy, telegram, discord, upstream bool) {
	t.Helper()
	reqs := p.Requests()
	for _, r := range reqs {
		if !r.Auth {
			t.Errorf("the proxy was asked without its credentials: %+v", r)
		}
	}
	has := func(target string, match func(netproxytest.Request) bool) bool {
		for _, r := range p.Asked(target) {
			if match(r) {
				return true
			}
		}
		return false
	}
	anyReq := func(netproxytest.Request) bool { return true }
	if got := has(hostOf(w.tg.URL), anyReq); got != telegram {
		t.Errorf("Telegram through the proxy: %v, want %v", got, telegram)
	}
	websocket := func(r netproxytest.Request) bool { return strings.HasPrefix(r.First, "GET /gateway") }
	rest := func(r netproxytest.Request) bool { return !websocket(r) }
	if got := has(hostOf(w.dc.URL), websocket) && has(hostOf(w.dc.URL), rest); got != discord {
		t.Errorf("Discord (REST and websocket) through the proxy: %v, want %v", got, discord)
	}
	// The gateway by its name, the image by its checked address.
	_, gwPort, _ := net.SplitHostPort(hostOf(w.gw.URL))
	if got := has("localhost:"+gwPort, anyReq); got != upstream {
		t.Errorf("the gateway through the proxy: %v, want %v", got, upstream)
	}
	image := func(r netproxytest.Request) bool { return strings.HasPrefix(r.First, "GET /img/") }
	if got := has("127.0.0.1:"+gwPort, image); got != upstream {
		t.Errorf("the image through the proxy to 127.0.0.1: %v, want %v", got, upstream)
	}
	_, port, _ := net.SplitHostPort(w.internal)
	if asked := p.AskedPort(port); len(asked) != 0 {
		t.Errorf("the proxy was asked for the private server: %+v", asked)
	}
	if t.Failed() {
		t.Logf("the proxy was asked:\n%+v", reqs)
	}
}

func (w *proxyWorld) checkPrivateUntouched(t *testing.T, logs string) {
	t.Helper()
	if n := w.hits.Load(); n != 0 {
		t.Errorf("the private server got %d requests", n)
	}
	if !strings.Contains(logs, "blocked address") {
		t.Errorf("the refusal is not in the log:\n%s", logs)
	}
	for _, secret := range []string{proxyPassword, "sk-proxy-e2e", telegramtest.DefaultToken, discordtest.Token} {
		if strings.Contains(logs, secret) {
			t.Errorf("a secret was logged:\n%s", logs)
		}
	}
}

// startRun runs the real wiring in-process until the test ends, logging to
// the returned sink.
func startRun(t *testing.T, cfgPath string, env map[string]string) *chattest.Logs {
	t.Helper()
	return startRunReady(t, cfgPath, env, nil)
}

// startRunReady is startRun that also hands ready, when not nil, the HTTP
// listener's address once the bot is up.
func startRunReady(t *testing.T, cfgPath string, env map[string]string, ready func(httpAddr string)) *chattest.Logs {
	t.Helper()
	cfg, err := LoadConfig(cfgPath, envMap(env), func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	logs := &chattest.Logs{}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, cfg, logs.Logger(), func(addr string) {
			if ready != nil {
				ready(addr)
			}
			close(started)
		})
	}()
	select {
	case <-started:
	case err := <-errc:
		cancel()
		t.Fatalf("run: %v", err)
	case <-time.After(15 * time.Second):
		cancel()
		t.Fatal("run did not start")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("run did not stop")
		}
	})
	return logs
}

// The real wiring, in-process, through an http:// and a socks5:// proxy
// whose password comes from IMAGINEBOT_PROXY_PASSWORD.
func TestRunThroughProxy(t *testing.T) {
	for _, scheme := range []string{"http", "socks5"} {
		t.Run(scheme, func(t *testing.T) {
			w := newProxyWorld(t)
			p := netproxytest.New(t, scheme, netproxytest.WithAuth("alice", proxyPassword))
			w.env["IMAGINEBOT_PROXY"] = scheme + "://alice@" + p.Addr()
			w.env["IMAGINEBOT_PROXY_PASSWORD"] = proxyPassword
			logs := startRun(t, w.config(t, ""), w.env)
			w.exercise(t)
			w.checkThrough(t, p, true, true, true)
			w.checkPrivateUntouched(t, logs.String())
			if !strings.Contains(logs.String(), "proxy="+scheme+"://"+p.Addr()) {
				t.Errorf("the start-up log does not name the proxy:\n%s", logs)
			}
		})
	}
}

// Each target can take its own proxy, or none.
func TestRunProxyPerTarget(t *testing.T) {
	w := newProxyWorld(t)
	top := netproxytest.HTTP(t)
	gateway := netproxytest.SOCKS5(t, netproxytest.WithAuth("gw", "gw-pw"))
	w.env["IMAGINEBOT_PROXY"] = top.URL.String()
	w.env["IMAGINEBOT_UPSTREAM_PROXY"] = gateway.URL.String()
	logs := startRun(t, w.config(t, "  proxy: direct\n"), w.env) // discord.proxy
	w.exercise(t)
	w.checkThrough(t, top, true, false, false)
	w.checkThrough(t, gateway, false, false, true)
	w.checkPrivateUntouched(t, logs.String())
	if !strings.Contains(logs.String(), "target=discord proxy=direct") {
		t.Errorf("the start-up log does not say Discord goes direct:\n%s", logs)
	}
}

// The real binary through a proxy of each scheme, as an operator sets it
// up: the URL and password in the environment, an https proxy's CA in
// SSL_CERT_FILE (the system's roots, which the bot uses, read it).
func TestBinaryThroughProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "imaginebot")
	if out, err := exec.Command("go", "build", "-buildvcs=false", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, scheme := range netproxy.Schemes {
		t.Run(scheme, func(t *testing.T) {
			w := newProxyWorld(t)
			p := netproxytest.New(t, scheme, netproxytest.WithAuth("alice", proxyPassword))
			cfg := w.config(t, "")
			cmd := exec.Command(bin, "run", "-config", cfg)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "IMAGINEBOT_PROXY=" + scheme + "://alice@" + p.Addr(), "IMAGINEBOT_PROXY_PASSWORD=" + proxyPassword}
			if pem := p.CertPEM(); pem != nil {
				ca := filepath.Join(t.TempDir(), "proxy-ca.pem")
				if err := os.WriteFile(ca, pem, 0o600); err != nil {
					t.Fatal(err)
				}
				cmd.Env = append(cmd.Env, "SSL_CERT_FILE="+ca)
			}
			for k, v := range w.env {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			var logs strings.Builder
			cmd.Stderr = &syncWriter{w: &logs}
			cmd.Stdout = cmd.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			stopped := false
			t.Cleanup(func() {
				if !stopped {
					_ = cmd.Process.Kill()
					<-done
				}
			})
			w.exercise(t)
			w.checkThrough(t, p, true, true, true)

			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case err := <-done:
				stopped = true
				if err != nil {
					t.Errorf("exit: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("no exit after SIGINT")
			}
			w.checkPrivateUntouched(t, logs.String())
			if t.Failed() {
				t.Logf("logs:\n%s", logs.String())
			}
		})
	}
}

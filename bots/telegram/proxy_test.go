package telegram_test

import (
	"strings"
	"testing"

	"github.com/imaginebot/imaginebot/bots/telegram"
	"github.com/imaginebot/imaginebot/core/netproxy/netproxytest"
)

// Every Bot API call — the long poll and the picture — goes through the
// proxy WithProxy names, with its credentials.
func TestBotThroughProxy(t *testing.T) {
	// The https proxy needs its certificate trusted by the adapter's own
	// transport; the binary's end-to-end test covers it.
	for _, scheme := range []string{"http", "socks5"} {
		t.Run(scheme, func(t *testing.T) {
			p := netproxytest.New(t, scheme, netproxytest.WithAuth("alice", "pr0xy-pw"))
			e := newEnv(t, func(c *envConfig) { c.opts = append(c.opts, telegram.WithProxy(p.URL)) })
			e.send(e.tg.PrivateText(alice, "a red fox"))
			e.tg.WaitCall(t, "sendPhoto", wait)

			host := strings.TrimPrefix(e.tg.URL, "http://")
			asked := p.Asked(host)
			if len(asked) == 0 {
				t.Fatalf("proxy was asked %+v, want %s", p.Requests(), host)
			}
			methods := map[string]bool{}
			for _, r := range asked {
				if !r.Auth {
					t.Fatalf("a call came without the credentials: %+v", r)
				}
				methods[r.Path[strings.LastIndex(r.Path, "/")+1:]] = true
			}
			if scheme == "http" && (!methods["getUpdates"] || !methods["sendPhoto"]) {
				t.Fatalf("calls through the proxy: %v", methods)
			}
		})
	}
}

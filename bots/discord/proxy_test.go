package discord

import (
	"strings"
	"testing"

	"github.com/imaginebot/imaginebot/bots/discord/discordtest"
	"github.com/imaginebot/imaginebot/core/netproxy/netproxytest"
)

// In gateway mode the REST calls and the websocket both go through the
// proxy WithProxy names, with its credentials.
func TestBotThroughProxy(t *testing.T) {
	// The https proxy needs its certificate trusted by the adapter's own
	// transport; the binary's end-to-end test covers it.
	for _, scheme := range []string{"http", "socks5"} {
		t.Run(scheme, func(t *testing.T) {
			p := netproxytest.New(t, scheme, netproxytest.WithAuth("alice", "pr0xy-pw"))
			e := newEnv(t, ModeGateway, func(c *envConfig) { c.opts = append(c.opts, WithProxy(p.URL)) })
			token, _ := e.imagine(t, discordtest.Guild(guildID, alice, "en-US"), "a red fox")
			e.edits(t, token, 1, withFiles)

			host := strings.TrimPrefix(e.dc.URL, "http://")
			asked := p.Asked(host)
			websocket, rest := false, false
			for _, r := range asked {
				if !r.Auth {
					t.Fatalf("a call came without the credentials: %+v", r)
				}
				websocket = websocket || strings.HasPrefix(r.First, "GET /gateway")
				rest = rest || strings.Contains(r.Path, "/callback") || strings.Contains(r.First, "/callback")
			}
			if !websocket {
				t.Fatalf("the gateway's websocket did not go through the proxy: %+v", asked)
			}
			if scheme == "http" && !rest {
				t.Fatalf("the interaction's answer did not go through the proxy: %+v", asked)
			}
		})
	}
}

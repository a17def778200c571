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
	netproxytest.WithSchemes(t, func(t *testing.T, p *netproxytest.Proxy) {
		e := newEnv(t, func(c *envConfig) { c.opts = append(c.opts, telegram.WithProxy(p.URL)) })
		e.send(e.tg.PrivateText(alice, "a red fox"))
		e.tg.WaitCall(t, "sendPhoto", wait)
		methods := map[string]bool{}
		for _, r := range p.AskedWithAuth(t, strings.TrimPrefix(e.tg.URL, "http://")) {
			methods[r.Path[strings.LastIndex(r.Path, "/")+1:]] = true
		}
		if p.URL.Scheme == "http" && (!methods["getUpdates"] || !methods["sendPhoto"]) {
			t.Fatalf("calls through the proxy: %v", methods)
		}
	})
}

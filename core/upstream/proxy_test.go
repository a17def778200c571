package upstream_test

import (
	"context"
	"strings"
	"testing"

	"github.com/imaginebot/imaginebot/core/netproxy/netproxytest"
	"github.com/imaginebot/imaginebot/core/upstream"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// The gateway is reached through the proxy WithProxy names.
func TestClientThroughProxy(t *testing.T) {
	// The https proxy needs its certificate trusted by the transport the
	// client builds; the binary's end-to-end test covers it.
	for _, scheme := range []string{"http", "socks5"} {
		t.Run(scheme, func(t *testing.T) {
			gw := upstreamtest.New(t)
			p := netproxytest.New(t, scheme, netproxytest.WithAuth("alice", "pw"))
			c := upstream.New(upstream.Config{BaseURL: gw.URL, APIKey: testKey, Retries: -1}, &fakeFetcher{}, upstream.WithProxy(p.URL))
			if _, err := c.Generate(context.Background(), request(false), nil); err != nil {
				t.Fatal(err)
			}
			host := strings.TrimPrefix(gw.URL, "http://")
			asked := p.Asked(host)
			if len(asked) == 0 || !asked[0].Auth {
				t.Fatalf("proxy was asked %+v, want %s", p.Requests(), host)
			}
			if scheme == "http" && (asked[0].Kind != "POST" || asked[0].Path != "/v1/chat/completions") {
				t.Fatalf("proxy request %+v", asked[0])
			}
		})
	}
}

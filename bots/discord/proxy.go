package discord

import (
	"net/http"
	"net/url"
	"time"

	"github.com/gorilla/websocket"

	"github.com/imaginebot/imaginebot/core/netproxy"
)

// WithProxy sends everything the adapter says to Discord through the proxy
// at u (http, https or socks5), for hosts where Discord is blocked: the REST
// calls through net/http's Transport.Proxy, which speaks all three, and, in
// gateway mode, the websocket through netproxy's dialer (gorilla's own proxy
// support has no https:// proxies and ignores the dial's context). nil
// connects directly, whatever HTTPS_PROXY says. Without it the
// environment's proxy variables apply. A transport from WithTransport is
// used as it is: the proxy then carries the websocket only.
func WithProxy(u *url.URL) Option {
	return func(b *Bot) { b.proxy = &proxySetting{url: u} }
}

// proxySetting is WithProxy's choice; a nil *proxySetting is the
// environment's.
type proxySetting struct{ url *url.URL }

// httpProxy is the REST transport's Proxy.
func (p *proxySetting) httpProxy() func(*http.Request) (*url.URL, error) {
	if p == nil {
		return http.ProxyFromEnvironment
	}
	return http.ProxyURL(p.url)
}

// websocketDialer is the gateway's dialer, or nil for discordgo's default.
func (p *proxySetting) websocketDialer() *websocket.Dialer {
	if p == nil {
		return nil
	}
	// The timeout is gorilla's DefaultDialer's, discordgo's default.
	d := &websocket.Dialer{HandshakeTimeout: 45 * time.Second}
	if p.url != nil {
		d.NetDialContext = netproxy.NewDialer(p.url).DialContext
	}
	return d
}

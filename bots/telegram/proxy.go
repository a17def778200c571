package telegram

import (
	"net/http"
	"net/url"
)

// WithProxy sends every Bot API call through the proxy at u (http, https
// or socks5: net/http's Transport.Proxy speaks all three), for hosts where
// Telegram is blocked; nil sends them directly, whatever HTTPS_PROXY says.
// Without it the environment's proxy variables apply. It replaces the
// client of an earlier WithHTTPClient, and a later one replaces it.
func WithProxy(u *url.URL) Option {
	return func(b *Bot) {
		tr := newTransport(b.cfg.Connections)
		tr.Proxy = http.ProxyURL(u)
		b.hc = &http.Client{Transport: tr}
	}
}

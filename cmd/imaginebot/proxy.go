package main

import (
	"log/slog"
	"net/url"
	"strings"

	"github.com/imaginebot/imaginebot/bots/discord"
	"github.com/imaginebot/imaginebot/bots/telegram"
	"github.com/imaginebot/imaginebot/core/fetch"
	"github.com/imaginebot/imaginebot/core/netproxy"
	"github.com/imaginebot/imaginebot/core/upstream"
)

// proxyDirect, as a target's proxy, sends that target's traffic directly
// even when the top-level proxy is set. An empty value cannot say it: an
// unset environment variable and an empty one look alike.
const proxyDirect = "direct"

// proxyFor is the proxy of a target whose own key holds own: own when set,
// else the top-level proxy (with IMAGINEBOT_PROXY_PASSWORD). set is false
// when neither is set, and the environment's HTTPS_PROXY and the like
// apply, as net/http's do; u is nil and set true for direct.
func (c *Config) proxyFor(own string) (u *url.URL, set bool) {
	raw, top := strings.TrimSpace(own), false
	if raw == "" {
		raw, top = strings.TrimSpace(c.Proxy), true
	}
	switch {
	case raw == "":
		return nil, false
	case strings.EqualFold(raw, proxyDirect):
		return nil, true
	}
	u, err := netproxy.Parse(raw)
	if err != nil {
		// validateProxies refused it already; never guess another route.
		return nil, true
	}
	if top && c.proxyPassword != "" && u.User != nil {
		u.User = url.UserPassword(u.User.Username(), c.proxyPassword)
	}
	return u, true
}

// validateProxies checks proxy and the targets' own keys. The messages show
// no value: a proxy URL may carry a password.
func (c *Config) validateProxies(p *problems) {
	const fix = "write scheme://[user@]host:port with scheme http, https or socks5, e.g. socks5://127.0.0.1:1080"
	check := func(key, raw string, target bool) {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			return
		}
		if strings.EqualFold(raw, proxyDirect) {
			return
		}
		if _, err := netproxy.Parse(raw); err != nil {
			extra := ""
			if target {
				extra = ", or direct for no proxy (empty: the top-level proxy)"
			}
			p.add(key, "%v; %s%s", err, fix, extra)
		}
	}
	check("proxy", c.Proxy, false)
	check("upstream.proxy", c.Upstream.Proxy, true)
	check("telegram.proxy", c.Telegram.Proxy, true)
	check("discord.proxy", c.Discord.Proxy, true)
	if c.proxyPassword == "" {
		return
	}
	u, err := netproxy.Parse(c.Proxy)
	switch {
	case strings.TrimSpace(c.Proxy) == "" || strings.EqualFold(strings.TrimSpace(c.Proxy), proxyDirect):
		p.add("IMAGINEBOT_PROXY_PASSWORD", "is set but proxy is not; set proxy (IMAGINEBOT_PROXY) to the proxy the password is for, with its user: http://alice@proxy.example:3128")
	case err == nil && u.User == nil:
		p.add("IMAGINEBOT_PROXY_PASSWORD", "is set but proxy names no user; put the user in the URL, e.g. http://alice@proxy.example:3128, and keep the password in IMAGINEBOT_PROXY_PASSWORD")
	}
}

// proxyLog names a target's route for the start-up log, never with the
// credentials.
func proxyLog(log *slog.Logger, target string, u *url.URL, set bool) {
	if set {
		log.Info("outbound proxy", "target", target, "proxy", netproxy.Redact(u))
	}
}

// upstreamProxy is the gateway client's and the image fetcher's proxy
// options. The fetcher never follows the environment's proxy (it would
// dial for the guard); with a proxy configured it asks it for the
// addresses it checked.
func upstreamProxy(c *Config, log *slog.Logger) ([]upstream.Option, []fetch.Option) {
	u, set := c.proxyFor(c.Upstream.Proxy)
	if !set {
		return nil, nil
	}
	proxyLog(log, "upstream", u, set)
	var fo []fetch.Option
	if u != nil {
		fo = append(fo, fetch.WithProxy(netproxy.NewDialer(u)))
	}
	return []upstream.Option{upstream.WithProxy(u)}, fo
}

// telegramProxy is the Telegram adapter's proxy option (doing nothing
// when no proxy is configured for it).
func telegramProxy(c *Config, log *slog.Logger) telegram.Option {
	u, set := c.proxyFor(c.Telegram.Proxy)
	if !set {
		return func(*telegram.Bot) {}
	}
	proxyLog(log, "telegram", u, set)
	return telegram.WithProxy(u)
}

// discordProxy is the Discord adapter's proxy option (REST and websocket).
func discordProxy(c *Config, log *slog.Logger) discord.Option {
	u, set := c.proxyFor(c.Discord.Proxy)
	if !set {
		return func(*discord.Bot) {}
	}
	proxyLog(log, "discord", u, set)
	return discord.WithProxy(u)
}

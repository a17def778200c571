package discord

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// rewrite sends requests for discord.com to another base URL: discordgo's
// endpoints are fixed when the package loads, so a proxy (or a test server)
// can only be reached by changing each request's host on its way out.
type rewrite struct {
	base *url.URL
	next http.RoundTripper
}

func newRewrite(base string, next http.RoundTripper) (http.RoundTripper, error) {
	if base == "" {
		return next, nil
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("discord: api_base_url %q is not an http(s) URL", base)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return &rewrite{base: u, next: next}, nil
}

func (t *rewrite) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host != "discord.com" && r.URL.Host != "discordapp.com" {
		return t.next.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	r.URL.Scheme = t.base.Scheme
	r.URL.Host = t.base.Host
	r.URL.Path = t.base.Path + r.URL.Path
	if r.URL.RawPath != "" {
		r.URL.RawPath = t.base.Path + r.URL.RawPath
	}
	r.Host = t.base.Host
	return t.next.RoundTrip(r)
}

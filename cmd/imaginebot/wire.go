package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"time"

	"golang.org/x/time/rate"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/fetch"
	"github.com/imaginebot/imaginebot/core/upstream"
)

// coreConfig turns the validated configuration into the pipeline's.
func coreConfig(c *Config) (core.Config, error) {
	loc, err := time.LoadLocation(c.Quotas.TimeZone)
	if err != nil {
		return core.Config{}, err
	}
	models := make([]core.Model, 0, len(c.Models))
	for _, m := range c.Models {
		tmpl, err := core.ParseTemplate(m.Name, m.PromptTemplate)
		if err != nil {
			return core.Config{}, err
		}
		stream := c.Upstream.Stream
		if m.Stream != nil {
			stream = *m.Stream
		}
		models = append(models, core.Model{
			Name: m.Name, UpstreamModel: m.UpstreamModel, Label: m.Label, Cost: m.Cost,
			SystemPrompt: m.SystemPrompt, Template: tmpl, Stream: stream,
		})
	}
	r := rate.Inf
	if *c.Limits.RatePerMinute > 0 {
		r = rate.Limit(*c.Limits.RatePerMinute / 60)
	}
	return core.Config{
		Models:         models,
		DefaultModel:   c.DefaultModel,
		MaxPromptRunes: c.Limits.MaxPromptChars,
		Rate:           r,
		Burst:          c.Limits.Burst,
		PerUserJobs:    c.Limits.PerUserJobs,
		Concurrency:    c.Limits.Concurrency,
		QueueCap:       max(*c.Limits.QueueCap, 0),
		JobTimeout:     c.Limits.JobTimeout,
		Quotas:         core.Quotas{Location: loc, DefaultDaily: *c.Quotas.Daily, ScopeDaily: c.Quotas.Scopes},
	}, nil
}

// newGenerator builds the upstream client with its safe image fetcher.
func newGenerator(c *Config, log *slog.Logger) *upstream.Client {
	// Every job in flight holds one gateway connection and then one image
	// download: size the kept-alive pools to the concurrency.
	conns := c.Limits.Concurrency + 4
	f := fetch.New(fetch.Config{
		MaxBytes:     int64(c.Images.MaxBytes),
		AllowedHosts: c.Images.AllowPrivateHosts,
		MaxConns:     conns,
	}, fetch.WithLogger(log))
	u := c.Upstream
	retries := *u.Retries
	if retries == 0 {
		retries = -1 // the client reads 0 as "default"
	}
	return upstream.New(upstream.Config{
		BaseURL:           u.BaseURL,
		APIKey:            u.APIKey,
		Timeout:           u.Timeout,
		Retries:           retries,
		UserIDSecret:      userIDSecret(u),
		StreamIdleTimeout: u.StreamIdleTimeout,
		Temperature:       u.Temperature,
		TopP:              u.TopP,
		MaxTokens:         u.MaxTokens,
		N:                 u.N,
		MaxConns:          conns,
	}, f, upstream.WithLogger(log))
}

// userIDSecret is the configured secret, or one derived from the API key so
// pseudonyms are stable without extra setup (and reveal nothing of the key).
func userIDSecret(u UpstreamConfig) string {
	if u.UserIDSecret != "" {
		return u.UserIDSecret
	}
	m := hmac.New(sha256.New, []byte("imaginebot user pseudonym"))
	m.Write([]byte(u.APIKey))
	return hex.EncodeToString(m.Sum(nil))
}

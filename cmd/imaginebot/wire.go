package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
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
		cm, err := m.coreModel(c.Upstream.Stream)
		if err != nil {
			return core.Config{}, err
		}
		models = append(models, cm)
	}
	r := rate.Inf
	if *c.Limits.RatePerMinute > 0 {
		r = rate.Limit(*c.Limits.RatePerMinute / 60)
	}
	return core.Config{
		Models:          models,
		DefaultModel:    c.DefaultModel,
		MaxPromptRunes:  c.Limits.MaxPromptChars,
		Rate:            r,
		Burst:           c.Limits.Burst,
		PerUserJobs:     c.Limits.PerUserJobs,
		Concurrency:     c.Limits.Concurrency,
		QueueCap:        max(*c.Limits.QueueCap, 0),
		JobTimeout:      c.Limits.JobTimeout,
		DeliveryTimeout: c.Limits.DeliveryTimeout,
		Instance:        instanceName(),
		Platforms:       c.platforms(),
		Lease:           c.Storage.JobLease,
		Quotas:          core.Quotas{Location: loc, DefaultDaily: *c.Quotas.Daily, ScopeDaily: c.Quotas.Scopes},
	}, nil
}

// platforms are those the configuration serves.
func (c *Config) platforms() []core.Platform {
	out := []core.Platform{}
	if c.Telegram.Token != "" {
		out = append(out, core.PlatformTelegram)
	}
	if c.Discord.Token != "" {
		out = append(out, core.PlatformDiscord)
	}
	return out
}

// instanceName names this process in the jobs it owns: the host (a
// container's, a pod's) and the process, with a random part so that a
// restarted process is never taken for the one before it.
func instanceName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "imaginebot"
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// newGenerator builds the upstream client with its safe image fetcher;
// secret keys the users' pseudonyms (see userIDSecret).
func newGenerator(c *Config, log *slog.Logger, secret string, opts ...upstream.Option) *upstream.Client {
	// Every job in flight holds one gateway connection and then one image
	// download: size the kept-alive pools to the concurrency.
	conns := c.Limits.Concurrency + 4
	// The image downloads go the gateway's way: their hosts are the
	// gateway's or its CDN's, blocked where it is.
	proxyOpts, fetchProxy := upstreamProxy(c, log)
	f := fetch.New(fetch.Config{
		MaxBytes:     int64(c.Images.MaxBytes),
		AllowedHosts: c.Images.AllowPrivateHosts,
		MaxConns:     conns,
	}, append([]fetch.Option{fetch.WithLogger(log)}, fetchProxy...)...)
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
		UserIDSecret:      secret,
		StreamIdleTimeout: u.StreamIdleTimeout,
		Temperature:       u.Temperature,
		TopP:              u.TopP,
		MaxTokens:         u.MaxTokens,
		N:                 u.N,
		MaxConns:          conns,
	}, f, append(append([]upstream.Option{upstream.WithLogger(log)}, proxyOpts...), opts...)...)
}

// userIDSecretSetting is where the ledger keeps the generated secret.
const userIDSecretSetting = "user_id_secret"

// userIDSecret is the configured upstream.user_id_secret or, without one, a
// random secret generated on the first start and kept in the ledger: a
// secret derived from the API key could be rebuilt by the gateway, which
// holds the key, and every pseudonym reversed.
func userIDSecret(ctx context.Context, c *Config, l *core.Ledger) (string, error) {
	if c.Upstream.UserIDSecret != "" {
		return c.Upstream.UserIDSecret, nil
	}
	return l.Setting(ctx, userIDSecretSetting, randomSecret)
}

func randomSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}

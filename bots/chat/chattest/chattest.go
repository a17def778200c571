// Package chattest holds what the adapters' tests share: a log sink for
// every goroutine and the end of a test run (the adapter stopped, core
// drained, no secret logged).
package chattest

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/imaginebot/imaginebot/core"
)

// Logs collects log lines from every goroutine.
type Logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Logger is a debug logger writing to l.
func (l *Logs) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Run is an adapter running in a test.
type Run struct {
	Cancel  func()                        // ends the adapter's Run
	Done    <-chan error                  // Run's result
	Drain   []func(context.Context) error // then, in order: core's Shutdown, the adapter's Wait
	Logs    *Logs
	Secrets []string // none may appear in the logs
}

// Stop ends r at the end of t, and checks what every test must hold.
func (r Run) Stop(t testing.TB, wait time.Duration) {
	r.Cancel()
	select {
	case err := <-r.Done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(wait):
		t.Error("Run did not return after its context ended")
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for _, drain := range r.Drain {
		if err := drain(ctx); err != nil {
			t.Errorf("drain: %v", err)
		}
	}
	logs := r.Logs.String()
	for _, s := range r.Secrets {
		if strings.Contains(logs, s) {
			t.Errorf("a secret was logged:\n%s", logs)
		}
	}
	if t.Failed() {
		t.Logf("logs:\n%s", logs)
	}
}

// Balance reads the balance of user (a user key) in scope, failing t when
// it cannot.
func Balance(t testing.TB, svc interface {
	Balance(context.Context, core.AccountKey) (core.Balance, error)
}, scope, user string) core.Balance {
	t.Helper()
	bal, err := svc.Balance(context.Background(), core.AccountKey{Scope: scope, User: user})
	if err != nil {
		t.Fatal(err)
	}
	return bal
}

// CoreConfig is the core configuration the adapters' tests start from: two
// models (Stable Diffusion at 1 unit, FLUX at 2), no rate limit, 5 a day,
// four upstream slots and a short queue; tests change what they test.
func CoreConfig() core.Config {
	return core.Config{
		Models: []core.Model{
			{Name: "stable-diffusion", Label: "Stable Diffusion", Cost: 1},
			{Name: "flux", Label: "FLUX", Cost: 2},
		},
		Rate:            rate.Inf,
		Burst:           1,
		PerUserJobs:     5,
		Concurrency:     4,
		QueueCap:        20,
		JobTimeout:      10 * time.Second,
		DeliveryTimeout: 15 * time.Second,
		ProgressEvery:   time.Hour,
		MaxPromptRunes:  1000,
		Quotas:          core.Quotas{Location: time.UTC, DefaultDaily: 5},
	}
}

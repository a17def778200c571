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
	Cancel  func()                          // ends the adapter's Run
	Done    <-chan error                    // Run's result
	Drain   []func(context.Context) error   // then, in order: core's Shutdown, the adapter's Wait
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

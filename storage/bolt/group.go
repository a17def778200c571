package bolt

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/imaginebot/imaginebot/core"
)

// group merges concurrent Updates into shared transactions. There is no
// goroutine of its own: the caller that finds nothing in flight leads, runs
// one group (its own call first) and hands the lead to the oldest waiting
// caller, so work always moves on even when callers give up.
type group struct {
	db      *bbolt.DB
	log     *slog.Logger
	observe func(calls int, d time.Duration)

	mu      sync.Mutex
	queue   []*call // waiting for the next transaction, oldest first
	running bool    // a leader exists; false implies an empty queue

	// Counters for tests and diagnostics, guarded by mu.
	commits, rollbacks, maxSize int
}

type callState int

const (
	queued  callState = iota // in the queue
	leading                  // in the queue, told to lead
	taken                    // in a group: the result comes from that group
)

type call struct {
	ctx   context.Context
	fn    func(core.Tx) error
	state callState     // guarded by group.mu
	lead  chan struct{} // buffered: the lead was handed to this call
	done  chan struct{} // closed once err and panicked are final

	err      error
	panicked any
	failed   bool // fn returned an error or panicked in the last run
}

func (g *group) update(ctx context.Context, fn func(core.Tx) error) error {
	c := &call{ctx: ctx, fn: fn, lead: make(chan struct{}, 1), done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, c)
	if !g.running {
		g.running = true
		c.state = leading
		c.lead <- struct{}{}
	}
	g.mu.Unlock()
	for {
		select {
		case <-c.done:
			return c.result()
		case <-c.lead:
			g.lead()
		case <-ctx.Done():
			g.mu.Lock()
			switch c.state {
			case queued, leading:
				g.remove(c)
				if c.state == leading {
					g.handOff()
				}
				g.mu.Unlock()
				return ctx.Err()
			}
			g.mu.Unlock()
			// fn is running or has run: only the commit can tell the outcome.
			<-c.done
			return c.result()
		}
	}
}

func (c *call) result() error {
	if c.panicked != nil {
		panic(c.panicked)
	}
	return c.err
}

// remove drops c from the queue. g.mu must be held.
func (g *group) remove(c *call) {
	if i := slices.Index(g.queue, c); i >= 0 {
		g.queue = slices.Delete(g.queue, i, i+1)
	}
}

// handOff makes the oldest waiting call the leader, or records that no one
// leads. g.mu must be held.
func (g *group) handOff() {
	if len(g.queue) == 0 {
		g.running = false
		return
	}
	next := g.queue[0]
	next.state = leading
	next.lead <- struct{}{}
}

// lead runs one group: up to maxGroup calls from the head of the queue, the
// leader's own among them.
func (g *group) lead() {
	g.mu.Lock()
	n := min(len(g.queue), maxGroup)
	calls := make([]*call, 0, n)
	var finished []*call
	for _, c := range g.queue[:n] {
		c.state = taken
		if err := c.ctx.Err(); err != nil {
			// Given up while waiting: its fn must not run.
			c.err = err
			finished = append(finished, c)
			continue
		}
		calls = append(calls, c)
	}
	g.queue = slices.Delete(g.queue, 0, n)
	g.mu.Unlock()

	finished = append(finished, g.run(calls)...)

	g.mu.Lock()
	g.handOff()
	g.mu.Unlock()
	for _, c := range finished {
		close(c.done)
	}
}

// run runs calls in one transaction and commits it, and returns them all
// with their results set. A call whose fn fails after writing is taken out
// and the transaction rolled back and started again without it.
func (g *group) run(calls []*call) []*call {
	var out []*call
	for len(calls) > 0 {
		btx, err := g.db.Begin(true)
		if err != nil {
			err = fmt.Errorf("bolt: begin: %w", err)
			for _, c := range calls {
				c.err, c.panicked = err, nil
			}
			return append(out, calls...)
		}
		t := newTx(btx)
		bad := -1
		for i, c := range calls {
			t.wrote = false
			c.run(t)
			if c.failed && t.wrote {
				bad = i
				break
			}
		}
		if bad >= 0 {
			_ = btx.Rollback()
			g.mu.Lock()
			g.rollbacks++
			g.mu.Unlock()
			out = append(out, calls[bad])
			calls = slices.Delete(calls, bad, bad+1)
			continue
		}
		if !slices.ContainsFunc(calls, func(c *call) bool { return !c.failed }) {
			// Nothing was written: no need to commit.
			_ = btx.Rollback()
			return append(out, calls...)
		}
		start := time.Now()
		err = btx.Commit()
		if err != nil {
			g.log.Error("bolt: group commit failed", "calls", len(calls), "err", err)
		} else {
			g.observe(len(calls), time.Since(start))
		}
		g.mu.Lock()
		g.commits++
		g.maxSize = max(g.maxSize, len(calls))
		g.mu.Unlock()
		for _, c := range calls {
			if !c.failed && err != nil {
				c.err = fmt.Errorf("bolt: commit: %w", err)
			}
		}
		return append(out, calls...)
	}
	return out
}

// run runs the call's fn once, keeping a panic for its caller's goroutine.
// A panic counts as a failure after writing: nothing of the fn may stay.
func (c *call) run(t *tx) {
	c.err, c.panicked, c.failed = nil, nil, false
	defer func() {
		if p := recover(); p != nil {
			c.panicked, c.failed = p, true
			t.wrote = true
		}
	}()
	c.err = c.fn(t)
	c.failed = c.err != nil
}

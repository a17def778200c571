package bolt

import (
	"context"

	bbolt "go.etcd.io/bbolt"

	"github.com/imaginebot/imaginebot/core"
)

// Batched is db with Update through bbolt's own db.Batch (a lone caller
// waits up to MaxBatchDelay), for the benchmark comparison.
type Batched struct{ *DB }

func (b Batched) Update(_ context.Context, fn func(core.Tx) error) error {
	return b.bolt.Batch(func(btx *bbolt.Tx) error { return fn(newTx(btx)) })
}

// GroupStats is what the group committer has done so far.
type GroupStats struct {
	Commits   int // transactions committed
	Rollbacks int // transactions rolled back for an fn that failed after writing
	MaxSize   int // most calls in one committed transaction
	Queued    int // calls waiting now
}

func (db *DB) GroupStats() GroupStats {
	g := &db.group
	g.mu.Lock()
	defer g.mu.Unlock()
	return GroupStats{Commits: g.commits, Rollbacks: g.rollbacks, MaxSize: g.maxSize, Queued: len(g.queue)}
}

// SetMaxSize caps the file's size (bbolt's DB.MaxSize): a commit that would
// grow it further fails, as one on a full disk does. Call it only while no
// Update runs.
func (db *DB) SetMaxSize(n int) { db.bolt.MaxSize = n }

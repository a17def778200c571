package bolt

// WithBatch makes Update use bbolt's db.Batch, for the benchmark comparison.
func WithBatch() Option { return func(o *options) { o.mode = commitBatch } }

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

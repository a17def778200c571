package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/imaginebot/imaginebot/core"
)

// pruneChunk bounds the deletions per transaction, so pruning a big backlog
// never holds the write lock (and every Update) for long.
const pruneChunk = 1000

// PendingJobs lists the jobs still pending, oldest first.
func (db *DB) PendingJobs(ctx context.Context) ([]core.Job, error) {
	return db.indexed(ctx, "pending jobs", func(t *tx) *bbolt.Bucket { return t.pending })
}

// OwedNotices lists the jobs whose user is still to be told, oldest first.
func (db *DB) OwedNotices(ctx context.Context) ([]core.Job, error) {
	return db.indexed(ctx, "owed notices", func(t *tx) *bbolt.Bucket { return t.notices })
}

// indexed lists the jobs of an index bucket, oldest first.
func (db *DB) indexed(ctx context.Context, what string, index func(*tx) *bbolt.Bucket) ([]core.Job, error) {
	var out []core.Job
	err := db.view(ctx, func(t *tx) error {
		return index(t).ForEach(func(k, _ []byte) error {
			v := t.jobs.Get(k)
			if v == nil {
				return fmt.Errorf("indexed job %q has no record", k)
			}
			j, err := decodeJob(v)
			if err != nil {
				return fmt.Errorf("job %q: %w", k, err)
			}
			out = append(out, j)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: %s: %w", what, err)
	}
	slices.SortStableFunc(out, func(a, b core.Job) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// RecentJobs lists an account's jobs, newest first (by Created), at most
// limit of them; limit <= 0 lists none.
func (db *DB) RecentJobs(ctx context.Context, k core.AccountKey, limit int) ([]core.Job, error) {
	if limit <= 0 {
		return nil, nil
	}
	var out []core.Job
	err := db.view(ctx, func(t *tx) error {
		c := t.history.Cursor()
		for hk, jk := lastWithPrefix(c, historyPrefix(k)); hk != nil && len(out) < limit; hk, jk = prevWithPrefix(c, historyPrefix(k)) {
			v := t.jobs.Get(jk)
			if v == nil {
				return fmt.Errorf("history entry for job %q has no record", jk)
			}
			j, err := decodeJob(v)
			if err != nil {
				return fmt.Errorf("job %q: %w", jk, err)
			}
			out = append(out, j)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: recent jobs of %s: %w", k, err)
	}
	return out, nil
}

// Audit lists a scope's audit entries ("" = all scopes), newest first, at
// most limit of them; limit <= 0 lists none.
func (db *DB) Audit(ctx context.Context, scope string, limit int) ([]core.AuditEntry, error) {
	if limit <= 0 {
		return nil, nil
	}
	var out []core.AuditEntry
	add := func(v []byte) error {
		var r auditRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		out = append(out, r.entry())
		return nil
	}
	err := db.view(ctx, func(t *tx) error {
		if scope == "" {
			c := t.audit.Cursor()
			for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
				if err := add(v); err != nil {
					return fmt.Errorf("entry %x: %w", k, err)
				}
			}
			return nil
		}
		prefix := []byte(scope + "\x00")
		c := t.auditScope.Cursor()
		for k, _ := lastWithPrefix(c, prefix); k != nil && len(out) < limit; k, _ = prevWithPrefix(c, prefix) {
			seq := k[len(prefix):]
			v := t.audit.Get(seq)
			if v == nil {
				return fmt.Errorf("scope index entry %x has no record", seq)
			}
			if err := add(v); err != nil {
				return fmt.Errorf("entry %x: %w", seq, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: audit of %q: %w", scope, err)
	}
	return out, nil
}

// PruneJobs deletes finished (committed or refunded) jobs created before
// olderThan, with their history entries, and returns how many went. Pending
// jobs are kept whatever their age: start-up recovery still owes them a
// refund. It also deletes the events claimed (Tx.Claim) before olderThan,
// which it does not count: an event older than the cutoff is not delivered
// again, so its claim has nothing left to guard (a platform redelivers
// within minutes, and the job of an old event key is pruned the same way).
// It works in chunks of short transactions, so it can run while the bot
// serves.
func (db *DB) PruneJobs(ctx context.Context, olderThan time.Time) (int, error) {
	total, err := db.pruneAll(ctx, func(t *tx) *bbolt.Bucket { return t.jobs }, oldJob(olderThan))
	if err != nil {
		return total, fmt.Errorf("bolt: prune jobs: %w", err)
	}
	events, err := db.pruneAll(ctx, func(t *tx) *bbolt.Bucket { return t.events }, oldEvent(olderThan))
	if err != nil {
		return total, fmt.Errorf("bolt: prune events: %w", err)
	}
	if total > 0 || events > 0 {
		db.log.Info("bolt: pruned old jobs", "deleted", total, "events", events, "older_than", olderThan)
	}
	return total, nil
}

// pruneAll deletes, in chunks of short transactions, the entries of a
// bucket that doomed picks, and returns how many went. doomed returns the
// deletions for an entry, nil to keep it; k and v are valid only inside
// its transaction.
func (db *DB) pruneAll(ctx context.Context, bucket func(*tx) *bbolt.Bucket, doomed func(t *tx, k, v []byte) (func() error, error)) (int, error) {
	total := 0
	var after []byte // the last key looked at; the next chunk starts past it
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, last, err := db.pruneSome(after, bucket, doomed)
		total += n
		if err != nil {
			return total, err
		}
		if last == nil {
			return total, nil
		}
		after = last
	}
}

// pruneSome deletes up to pruneChunk doomed entries with keys after after.
// last is the key to continue after, nil when the scan reached the end.
func (db *DB) pruneSome(after []byte, bucket func(*tx) *bbolt.Bucket, doomed func(t *tx, k, v []byte) (func() error, error)) (n int, last []byte, err error) {
	err = db.bolt.Update(func(btx *bbolt.Tx) error {
		t := newTx(btx)
		var deletes []func() error
		c := bucket(t).Cursor()
		var seen []byte
		for k, v := seekAfter(c, after); k != nil; k, v = c.Next() {
			if len(deletes) == pruneChunk {
				last = bytes.Clone(seen)
				break
			}
			seen = k
			del, err := doomed(t, k, v)
			if err != nil {
				return err
			}
			if del != nil {
				deletes = append(deletes, del)
			}
		}
		// Deleting behind a live cursor skips keys in bbolt: collect, then delete.
		for _, del := range deletes {
			if err := del(); err != nil {
				return err
			}
		}
		n = len(deletes)
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	return n, last, nil
}

// oldJob dooms a finished job created before olderThan, with its history entry.
func oldJob(olderThan time.Time) func(t *tx, k, v []byte) (func() error, error) {
	return func(t *tx, k, v []byte) (func() error, error) {
		var r jobIndexRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, fmt.Errorf("job %q: %w", k, err)
		}
		if r.State == core.JobPending || !r.Created.Before(olderThan) {
			return nil, nil
		}
		key, hk := bytes.Clone(k), historyKey(core.AccountKey{Scope: r.Scope, User: r.User}, r.Created, string(k))
		return func() error {
			if err := t.jobs.Delete(key); err != nil {
				return err
			}
			return t.history.Delete(hk)
		}, nil
	}
}

// oldEvent dooms an event claimed before olderThan.
func oldEvent(olderThan time.Time) func(t *tx, k, v []byte) (func() error, error) {
	return func(t *tx, k, v []byte) (func() error, error) {
		var at time.Time
		if err := at.UnmarshalText(v); err != nil {
			return nil, fmt.Errorf("event %q: %w", k, err)
		}
		if !at.Before(olderThan) {
			return nil, nil
		}
		key := bytes.Clone(k)
		return func() error { return t.events.Delete(key) }, nil
	}
}

// seekAfter positions c on the first key after after (the first key when
// after is nil).
func seekAfter(c *bbolt.Cursor, after []byte) ([]byte, []byte) {
	if after == nil {
		return c.First()
	}
	k, v := c.Seek(after)
	if bytes.Equal(k, after) {
		return c.Next()
	}
	return k, v
}

// view runs fn in a read-only bbolt transaction.
func (db *DB) view(ctx context.Context, fn func(*tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return db.bolt.View(func(btx *bbolt.Tx) error { return fn(newTx(btx)) })
}

// lastWithPrefix positions c on the last key that starts with prefix.
func lastWithPrefix(c *bbolt.Cursor, prefix []byte) ([]byte, []byte) {
	var k, v []byte
	if end := prefixEnd(prefix); end == nil {
		k, v = c.Last()
	} else if k, v = c.Seek(end); k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	if k == nil || !bytes.HasPrefix(k, prefix) {
		return nil, nil
	}
	return k, v
}

// prevWithPrefix steps c back, stopping when the keys leave prefix.
func prevWithPrefix(c *bbolt.Cursor, prefix []byte) ([]byte, []byte) {
	k, v := c.Prev()
	if k == nil || !bytes.HasPrefix(k, prefix) {
		return nil, nil
	}
	return k, v
}

// prefixEnd is the smallest key greater than every key with prefix, or nil
// when there is none (a prefix of 0xff bytes).
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imaginebot/imaginebot/core"
)

// PendingJobs lists the jobs still pending, oldest first.
func (db *DB) PendingJobs(ctx context.Context) ([]core.Job, error) {
	jobs, err := db.jobs(ctx, `SELECT `+jobColumns+` FROM jobs WHERE state = 'pending'
		ORDER BY created_ns ASC NULLS FIRST, key`)
	if err != nil {
		return nil, fmt.Errorf("postgres: pending jobs: %w", err)
	}
	return jobs, nil
}

// OwedNotices lists the jobs whose user is still to be told, oldest first.
func (db *DB) OwedNotices(ctx context.Context) ([]core.Job, error) {
	jobs, err := db.jobs(ctx, `SELECT `+jobColumns+` FROM jobs WHERE notice_owed
		ORDER BY created_ns ASC NULLS FIRST, key`)
	if err != nil {
		return nil, fmt.Errorf("postgres: owed notices: %w", err)
	}
	return jobs, nil
}

// RecentJobs lists an account's jobs, newest first (by Created), at most
// limit of them; limit <= 0 lists none.
func (db *DB) RecentJobs(ctx context.Context, k core.AccountKey, limit int) ([]core.Job, error) {
	if limit <= 0 {
		return nil, nil
	}
	jobs, err := db.jobs(ctx, `SELECT `+jobColumns+` FROM jobs WHERE scope = $1 AND usr = $2
		ORDER BY created_ns DESC NULLS LAST, key DESC LIMIT $3`, k.Scope, k.User, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: recent jobs of %s: %w", k, err)
	}
	return jobs, nil
}

func (db *DB) jobs(ctx context.Context, query string, args ...any) ([]core.Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rows, err := db.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	var out []core.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// Audit lists a scope's audit entries ("" = all scopes), newest first, at
// most limit of them; limit <= 0 lists none.
func (db *DB) Audit(ctx context.Context, scope string, limit int) ([]core.AuditEntry, error) {
	if limit <= 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	const columns = `time_ns, scope, actor, actor_name, role, action, target, before, after, note`
	var rows pgx.Rows
	var err error
	if scope == "" {
		rows, err = db.pool.Query(ctx, `SELECT `+columns+` FROM audit ORDER BY seq DESC LIMIT $1`, limit)
	} else {
		rows, err = db.pool.Query(ctx, `SELECT `+columns+` FROM audit WHERE scope = $1 AND scope <> ''
			ORDER BY seq DESC LIMIT $2`, scope, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: audit of %q: %w", scope, err)
	}
	var out []core.AuditEntry
	for rows.Next() {
		var (
			e    core.AuditEntry
			at   *int64
			role string
		)
		if err := rows.Scan(&at, &e.Scope, &e.Actor, &e.ActorName, &role, &e.Action, &e.Target, &e.Before, &e.After, &e.Note); err != nil {
			rows.Close()
			return nil, fmt.Errorf("postgres: audit of %q: %w", scope, err)
		}
		e.Time, e.Role = fromNanos(at), parseRole(role)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: audit of %q: %w", scope, err)
	}
	return out, nil
}

// pruneChunk bounds the deletions per statement, so pruning a big backlog
// holds no lock for long while other instances serve.
const pruneChunk = 1000

// PruneJobs deletes finished (committed or refunded) jobs created before
// olderThan and returns how many went. Pending jobs are kept whatever their
// age: recovery still owes them a refund. It also deletes the events claimed
// (Tx.Claim) before olderThan, which it does not count: a claim guards
// against an event delivered again, which comes long before the age of the
// jobs pruned. Instances pruning at once skip each other's rows.
func (db *DB) PruneJobs(ctx context.Context, olderThan time.Time) (int, error) {
	cutoff := nanos(olderThan)
	if cutoff == nil {
		return 0, nil
	}
	total, err := db.pruneAll(ctx, `DELETE FROM jobs WHERE key IN (
		SELECT key FROM jobs WHERE state <> 'pending' AND (created_ns IS NULL OR created_ns < $1)
		LIMIT $2 FOR UPDATE SKIP LOCKED)`, *cutoff)
	if err != nil {
		return total, fmt.Errorf("postgres: prune jobs: %w", err)
	}
	events, err := db.pruneAll(ctx, `DELETE FROM events WHERE key IN (
		SELECT key FROM events WHERE at_ns < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)`, *cutoff)
	if err != nil {
		return total, fmt.Errorf("postgres: prune events: %w", err)
	}
	if total > 0 || events > 0 {
		db.log.Info("postgres: pruned old jobs", "deleted", total, "events", events, "older_than", olderThan)
	}
	return total, nil
}

// pruneAll runs del (a DELETE of at most $2 rows older than $1) until it
// deletes fewer than a chunk, and returns how many rows went.
func (db *DB) pruneAll(ctx context.Context, del string, cutoff int64) (int, error) {
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		tag, err := db.pool.Exec(ctx, del, cutoff, pruneChunk)
		if err != nil {
			return total, err
		}
		total += int(tag.RowsAffected())
		if tag.RowsAffected() < pruneChunk {
			return total, nil
		}
	}
}

package bolt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/imaginebot/imaginebot/core"
)

// schemaVersion is the layout described in the package documentation. An
// older build refuses a file of a newer version: version 3 added the limits
// and events buckets, which a version 2 build would neither keep nor check.
const schemaVersion = 3

// maxGroup caps how many Updates share one transaction: a bigger group makes
// its members wait longer and makes a rollback-and-retry more expensive.
const maxGroup = 256

var (
	// ErrLocked is returned by Open when another process holds the file.
	ErrLocked = errors.New("the database is in use by another imaginebot process")
	// ErrNewerSchema is returned by Open for a file written by a newer build.
	ErrNewerSchema = errors.New("the database was written by a newer imaginebot")
)

var (
	bucketMeta       = []byte("meta")
	bucketAccounts   = []byte("accounts")
	bucketScopes     = []byte("scopes")
	bucketJobs       = []byte("jobs")
	bucketPending    = []byte("pending")
	bucketNotices    = []byte("notices")
	bucketHistory    = []byte("history")
	bucketAudit      = []byte("audit")
	bucketAuditScope = []byte("audit_scope")
	bucketLimits     = []byte("limits")
	bucketEvents     = []byte("events")

	keySchemaVersion = []byte("schema_version")

	allBuckets = [][]byte{bucketAccounts, bucketScopes, bucketJobs, bucketPending, bucketNotices,
		bucketHistory, bucketAudit, bucketAuditScope, bucketLimits, bucketEvents}
)

// commitMode is how Update turns calls into bbolt transactions.
type commitMode int

const (
	commitGroup commitMode = iota // merge concurrent calls, no added delay
	commitNaive                   // one transaction (one fsync) per call
)

type options struct {
	logger      *slog.Logger
	lockTimeout time.Duration
	mode        commitMode
	observe     func(calls int, d time.Duration)
}

// Option configures Open.
type Option func(*options)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithLockTimeout sets how long Open waits for another process to release
// the file (default 1s). d <= 0 tries once: bbolt's own 0 would wait forever.
func WithLockTimeout(d time.Duration) Option {
	return func(o *options) {
		if d <= 0 {
			d = time.Nanosecond
		}
		o.lockTimeout = d
	}
}

// WithGroupCommit turns group commit on (the default) or off. Off, every
// Update is its own transaction and its own fsync.
func WithGroupCommit(on bool) Option {
	return func(o *options) {
		if on {
			o.mode = commitGroup
		} else {
			o.mode = commitNaive
		}
	}
}

// WithCommitObserver calls observe after every committed transaction with
// how many Updates it held and how long the commit (its fsync included)
// took: the ledger's metrics.
func WithCommitObserver(observe func(calls int, d time.Duration)) Option {
	return func(o *options) { o.observe = observe }
}

// DB is the ledger file. It implements core.Store and is safe for concurrent use.
type DB struct {
	bolt    *bbolt.DB
	path    string
	log     *slog.Logger
	mode    commitMode
	group   group
	observe func(calls int, d time.Duration)
}

var (
	_ core.Store     = (*DB)(nil)
	_ core.Exclusive = (*DB)(nil)
)

// Open opens or creates the ledger at path (mode 0600, parent directories
// 0700), upgrading its layout if needed. Another process holding the file
// makes it fail with ErrLocked after the lock timeout.
func Open(path string, opts ...Option) (*DB, error) {
	o := options{logger: slog.New(slog.DiscardHandler), lockTimeout: time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("bolt: open %s: %w", path, err)
		}
	}
	bdb, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout: o.lockTimeout,
		// The hashmap freelist is faster to allocate from and as durable as the array one.
		FreelistType: bbolt.FreelistMapType,
	})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("bolt: %w: %s", ErrLocked, path)
	case err != nil:
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	db := &DB{bolt: bdb, path: path, log: o.logger, mode: o.mode}
	db.group.db, db.group.log = bdb, o.logger
	db.observe = o.observe
	if db.observe == nil {
		db.observe = func(int, time.Duration) {}
	}
	db.group.observe = db.observe
	if err := db.migrate(); err != nil {
		_ = bdb.Close()
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		// Opening never changes the mode of an existing file; the operator should know.
		db.log.Warn("bolt: the ledger file is accessible to other users", "path", path, "mode", fi.Mode().Perm().String())
	}
	db.log.Info("bolt: ledger opened", "path", path, "schema_version", schemaVersion, "group_commit", o.mode == commitGroup)
	return db, nil
}

// migrate creates the buckets and checks or stamps the schema version, in one
// transaction: a refused file is left untouched.
func (db *DB) migrate() error {
	err := db.bolt.Update(func(tx *bbolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		v := meta.Get(keySchemaVersion)
		if v != nil {
			n, err := strconv.Atoi(string(v))
			switch {
			case err != nil || n < 1:
				return fmt.Errorf("schema version %q is not valid", v)
			case n > schemaVersion:
				return fmt.Errorf("%w (schema version %d, this build knows %d): upgrade imaginebot", ErrNewerSchema, n, schemaVersion)
			}
			// Version 1 lacked the notices bucket, version 2 the limits and
			// events buckets; all start empty: creating them below is the
			// whole upgrade.
		}
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		if string(v) != strconv.Itoa(schemaVersion) {
			return meta.Put(keySchemaVersion, []byte(strconv.Itoa(schemaVersion)))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bolt: open %s: %w", db.path, err)
	}
	return nil
}

// Close closes the file. Updates still running fail; call it after the last user.
func (db *DB) Close() error {
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("bolt: close %s: %w", db.path, err)
	}
	return nil
}

// Path is the file's path.
func (db *DB) Path() string { return db.path }

// Exclusive reports that one process holds the ledger (core.Exclusive):
// the file is locked while it is open, so every job pending in it at Open
// was left by a process that is gone.
func (db *DB) Exclusive() bool { return true }

// Update runs fn in a read-write transaction and returns once it is durable.
//
// With group commit (the default), calls that arrive while a transaction is
// committing are collected and run together in the next one, sharing its
// fsync; a call that finds nothing in flight starts at once. When an fn
// fails after writing, the whole transaction is rolled back, that fn's error
// goes to its caller and the other fns run again in a new transaction — which
// is why fn must be idempotent over the Tx (see core.Store). An fn that fails
// before writing anything needs no rollback. A cancelled ctx stops a call
// that is still waiting for its group; once its fn has run, the caller gets
// the commit's result. A panic in fn is re-raised in the caller's goroutine.
func (db *DB) Update(ctx context.Context, fn func(core.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch db.mode {
	case commitNaive:
		return db.updateNaive(fn)
	}
	return db.group.update(ctx, fn)
}

// updateNaive is one transaction, and one fsync, per call.
func (db *DB) updateNaive(fn func(core.Tx) error) error {
	btx, err := db.bolt.Begin(true)
	if err != nil {
		return fmt.Errorf("bolt: begin: %w", err)
	}
	defer func() { _ = btx.Rollback() }() // a no-op after Commit; undoes fn's writes otherwise
	if err := fn(newTx(btx)); err != nil {
		return err
	}
	start := time.Now()
	if err := btx.Commit(); err != nil {
		return fmt.Errorf("bolt: commit: %w", err)
	}
	db.observe(1, time.Since(start))
	return nil
}

// View runs fn in a read-only transaction; writes in it fail with core.ErrTxReadOnly.
func (db *DB) View(ctx context.Context, fn func(core.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	btx, err := db.bolt.Begin(false)
	if err != nil {
		return fmt.Errorf("bolt: begin: %w", err)
	}
	defer func() { _ = btx.Rollback() }()
	return fn(newTx(btx))
}

// Backup writes a consistent copy of the database to w while it stays in use.
func (db *DB) Backup(w io.Writer) (int64, error) {
	var n int64
	err := db.bolt.View(func(tx *bbolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("bolt: backup: %w", err)
	}
	return n, nil
}

// BackupFile writes a consistent copy to path (mode 0600). The copy is
// written to a temporary file beside it, synced, checked with Verify and
// renamed, so path never holds a partial or unreadable backup.
func (db *DB) BackupFile(path string) (err error) {
	if same, _ := sameFile(path, db.path); same {
		return fmt.Errorf("bolt: backup to %s: that is the live database", path)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("bolt: backup: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("bolt: backup: %w", err)
	}
	if _, err := db.Backup(f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("bolt: backup: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bolt: backup: %w", err)
	}
	// Checked before it takes path: a copy that does not open must not
	// replace the last good backup.
	if err := Verify(f.Name()); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("bolt: backup: %w", err)
	}
	// The rename is only durable once the directory is synced.
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	db.log.Info("bolt: backup written", "path", path)
	return nil
}

func sameFile(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(fa, fb), nil
}

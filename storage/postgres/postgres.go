package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/imaginebot/imaginebot/core"
)

// defaultMaxConns is the pool size when neither the DSN (pool_max_conns)
// nor WithMaxConns sets one: every Update holds a connection for its
// transaction, and PostgreSQL flushes the WAL of all the commits waiting at
// once in one fsync, so more connections in flight means more commits per
// fsync (pgxpool's own default, 4 on two cores, caps that at 4).
const defaultMaxConns = 32

// maxAttempts bounds how often Update runs fn when its transaction keeps
// conflicting with others; each retry waits a little longer (see backoff).
const maxAttempts = 64

// ErrNewerSchema is returned by Open for a database migrated by a newer build.
var ErrNewerSchema = errors.New("the database was migrated by a newer imaginebot")

type options struct {
	logger    *slog.Logger
	maxConns  int32
	observe   func(calls int, d time.Duration)
	iso       pgx.TxIsoLevel
	noMigrate bool
}

// WithoutMigration opens the database as it is, for imaginebot migrate to
// show what would change (Pending) before it does (Migrate).
func WithoutMigration() Option { return func(o *options) { o.noMigrate = true } }

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

// WithMaxConns sets the pool size, overriding the DSN's pool_max_conns
// (default 32).
func WithMaxConns(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxConns = int32(n)
		}
	}
}

// WithCommitObserver calls observe after every committed Update with 1 and
// how long the commit took, like bolt's: the ledger's metrics.
func WithCommitObserver(observe func(calls int, d time.Duration)) Option {
	return func(o *options) { o.observe = observe }
}

// DB is the ledger in a PostgreSQL database. It implements core.Store and
// is safe for concurrent use, by any number of processes sharing the database.
type DB struct {
	pool    *pgxpool.Pool
	log     *slog.Logger
	observe func(calls int, d time.Duration)
	iso     pgx.TxIsoLevel

	retries atomic.Int64 // transactions run again after a conflict
}

var _ core.Store = (*DB)(nil)

// Open connects to the database named by dsn (a postgres:// URL or
// key=value pairs, as libpq takes them), creates or migrates the schema,
// and returns the ledger. A database migrated by a newer build is refused
// with ErrNewerSchema and left as it is. Errors never carry the password.
func Open(ctx context.Context, dsn string, opts ...Option) (*DB, error) {
	o := options{logger: slog.New(slog.DiscardHandler), iso: pgx.ReadCommitted}
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: the connection string does not parse: %s", parseReason(err))
	}
	switch {
	case o.maxConns > 0:
		cfg.MaxConns = o.maxConns
	case !hasPoolMaxConns(dsn):
		cfg.MaxConns = defaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	db := &DB{pool: pool, log: o.logger, observe: o.observe, iso: o.iso}
	if db.observe == nil {
		db.observe = func(int, time.Duration) {}
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		// pgconn's message names the host, user and database, never the password.
		return nil, fmt.Errorf("postgres: %w", err)
	}
	version := 0
	if !o.noMigrate {
		if version, err = db.migrate(ctx); err != nil {
			pool.Close()
			return nil, err
		}
	}
	db.log.Info("postgres: ledger opened", "server", where(cfg), "schema_version", version, "max_conns", cfg.MaxConns)
	return db, nil
}

// where names the server and database, never the password.
func where(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	return fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

// CheckDSN says why dsn is not a connection string Open can use, or nil.
// The error never shows the password.
func CheckDSN(dsn string) error {
	if _, err := pgxpool.ParseConfig(dsn); err != nil {
		return errors.New(parseReason(err))
	}
	return nil
}

// Describe names the server, user and database of dsn, for logs: never
// the password. A dsn that does not parse is "postgres".
func Describe(dsn string) string {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return "postgres"
	}
	return "postgres://" + where(cfg)
}

// parseReason is why the connection string does not parse, without
// pgconn's "cannot parse `…`: " prefix: it quotes the string, with the
// password masked only when it is recognisably a password.
func parseReason(err error) string {
	msg := err.Error()
	if _, rest, ok := strings.Cut(msg, "`: "); ok && strings.HasPrefix(msg, "cannot parse `") {
		return rest
	}
	if strings.Contains(msg, "`") {
		return "not a postgres:// URL or key=value pairs"
	}
	return msg
}

func hasPoolMaxConns(dsn string) bool { return strings.Contains(dsn, "pool_max_conns") }

// Close closes the pool. Updates still running fail; call it after the last user.
func (db *DB) Close() error {
	db.pool.Close()
	return nil
}

// Retries is how many transactions were run again after a conflict with
// another transaction, since Open.
func (db *DB) Retries() int64 { return db.retries.Load() }

// Update runs fn in a read-write transaction and returns once it has
// committed (durably, with the server's default synchronous_commit).
//
// When the transaction conflicts with another — a row fn read as missing was
// inserted meanwhile, a value read without a lock changed, a deadlock or a
// serialization failure — it is rolled back and fn runs again in a new one,
// which is why fn must be idempotent over the Tx (see core.Store). fn's own
// errors end the call with that error, after a rollback. A cancelled ctx
// before fn runs makes it fail with ctx's error and fn never runs; once fn
// has run, the commit is carried out whatever ctx does, so a nil error still
// means committed. A panic in fn rolls back and is re-raised.
func (db *DB) Update(ctx context.Context, fn func(core.Tx) error) error {
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := db.updateOnce(ctx, fn)
		if !errors.Is(err, errRetry) {
			return err
		}
		if attempt == maxAttempts {
			return fmt.Errorf("postgres: gave up after %d conflicting attempts: %w", attempt, err)
		}
		db.retries.Add(1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff(attempt)):
		}
	}
}

// backoff spreads the retries of transactions that collided, so they do not
// collide again in step: up to 1 ms after the first conflict, growing to 50 ms.
func backoff(attempt int) time.Duration {
	ceiling := min(time.Duration(1<<min(attempt-1, 6))*time.Millisecond, 50*time.Millisecond)
	return rand.N(ceiling) + time.Microsecond
}

func (db *DB) updateOnce(ctx context.Context, fn func(core.Tx) error) (err error) {
	ptx, err := db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: db.iso})
	if err != nil {
		return classify(fmt.Errorf("postgres: begin: %w", err))
	}
	t := newTx(ctx, ptx, true)
	defer func() {
		if p := recover(); p != nil {
			_ = ptx.Rollback(context.WithoutCancel(ctx))
			panic(p)
		}
	}()
	fnErr := fn(t)
	switch {
	case t.err != nil:
		// A statement failed, and PostgreSQL aborted the transaction: a
		// conflict runs fn again whatever fn made of the error.
		_ = ptx.Rollback(context.WithoutCancel(ctx))
		if errors.Is(t.err, errRetry) {
			return t.err
		}
		if fnErr == nil {
			fnErr = t.err
		}
		return fnErr
	case fnErr != nil:
		_ = ptx.Rollback(context.WithoutCancel(ctx))
		return fnErr
	}
	start := time.Now()
	// fn has run: the caller gets the commit's outcome, not ctx's.
	if err := ptx.Commit(context.WithoutCancel(ctx)); err != nil {
		return classify(fmt.Errorf("postgres: commit: %w", err))
	}
	db.observe(1, time.Since(start))
	return nil
}

// View runs fn in a read-only transaction on one snapshot (REPEATABLE READ);
// writes in it fail with core.ErrTxReadOnly.
func (db *DB) View(ctx context.Context, fn func(core.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ptx, err := db.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("postgres: begin: %w", err)
	}
	defer func() { _ = ptx.Rollback(context.WithoutCancel(ctx)) }()
	t := newTx(ctx, ptx, false)
	if err := fn(t); err != nil {
		return err
	}
	return t.err
}

// errRetry marks a transaction that lost a race with another one: Update
// runs fn again.
var errRetry = errors.New("postgres: the transaction conflicted with a concurrent one")

// The SQLSTATEs after which running the transaction again can succeed.
const (
	sqlSerializationFailure = "40001"
	sqlDeadlockDetected     = "40P01"
	sqlUniqueViolation      = "23505"
)

// classify marks err retryable when PostgreSQL aborted the transaction for
// a conflict with another, or when the connection failed before anything
// was sent.
func classify(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == sqlSerializationFailure || pe.Code == sqlDeadlockDetected) {
		return fmt.Errorf("%w: %w", errRetry, err)
	}
	if pgconn.SafeToRetry(err) {
		return fmt.Errorf("%w: %w", errRetry, err)
	}
	return err
}

package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// The schema is the migrations in migrations/, applied in order of their
// version (the number their name starts with). An applied migration is
// never edited: a change is a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads the embedded migrations, checking that versions run
// 1, 2, 3… without a gap or a duplicate.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, name := range names {
		base := path.Base(name)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("migration %s: the name must start with its version, e.g. 0002_what.sql", base)
		}
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: strings.TrimSuffix(base, ".sql"), sql: string(data)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: expected version %d", m.name, i+1)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no migrations")
	}
	return out, nil
}

// migrateLock is the advisory lock that makes instances starting at once
// migrate one after the other ("imagine" in ASCII).
const migrateLock = 0x696d6167696e65

// migrate brings the schema to the latest version, in one transaction that
// also holds migrateLock: a refused or failed migration leaves the database
// as it was. It returns the schema version.
func (db *DB) migrate(ctx context.Context) (int, error) {
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		return 0, fmt.Errorf("postgres: migrations: %w", err)
	}
	latest := ms[len(ms)-1].version
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrateLock)); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			_, err := tx.Exec(ctx, `CREATE TABLE schema_migrations (
				version    integer     PRIMARY KEY,
				name       text        NOT NULL,
				applied_at timestamptz NOT NULL DEFAULT now())`)
			if err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
		if err != nil {
			return err
		}
		applied, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return err
		}
		if n := len(applied); n > 0 && int(applied[n-1]) > latest {
			return fmt.Errorf("%w (schema version %d, this build knows %d): upgrade imaginebot, or point storage.dsn at another database",
				ErrNewerSchema, applied[n-1], latest)
		}
		for _, m := range ms {
			if slices.Contains(applied, int32(m.version)) {
				continue
			}
			// No arguments: the simple protocol, which runs a file of several statements.
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			db.log.Info("postgres: migrated", "version", m.version, "migration", m.name)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("postgres: schema: %w", err)
	}
	return latest, nil
}

// Migrate brings the schema to the latest version (Open does it unless
// WithoutMigration) and returns it.
func (db *DB) Migrate(ctx context.Context) (int, error) { return db.migrate(ctx) }

// Pending lists the migrations the database lacks, by name, and the
// schema version it has (0: none); it changes nothing.
func (db *DB) Pending(ctx context.Context) (version int, pending []string, err error) {
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		return 0, nil, fmt.Errorf("postgres: migrations: %w", err)
	}
	var applied []int32
	var exists bool
	if err := db.pool.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, nil, fmt.Errorf("postgres: schema: %w", err)
	}
	if exists {
		rows, err := db.pool.Query(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
		if err != nil {
			return 0, nil, fmt.Errorf("postgres: schema: %w", err)
		}
		if applied, err = pgx.CollectRows(rows, pgx.RowTo[int32]); err != nil {
			return 0, nil, fmt.Errorf("postgres: schema: %w", err)
		}
	}
	if n := len(applied); n > 0 {
		version = int(applied[n-1])
		if latest := ms[len(ms)-1].version; version > latest {
			return version, nil, fmt.Errorf("%w (schema version %d, this build knows %d)", ErrNewerSchema, version, latest)
		}
	}
	for _, m := range ms {
		if !slices.Contains(applied, int32(m.version)) {
			pending = append(pending, m.name)
		}
	}
	return version, pending, nil
}

package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/ledgertest"
	"github.com/imaginebot/imaginebot/storage/postgres"
	"github.com/imaginebot/imaginebot/storage/postgres/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// openDB opens the ledger on a fresh database of the shared server.
func openDB(t testing.TB, opts ...postgres.Option) (*postgres.DB, string) {
	t.Helper()
	dsn := pgtest.Shared(t).Database(t)
	db, err := postgres.Open(t.Context(), dsn, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db, dsn
}

func TestStore(t *testing.T) {
	pgtest.Shared(t) // one skip for the whole suite when there is no server
	ledgertest.Run(t, func(t *testing.T) core.Store {
		db, _ := openDB(t)
		return db
	})
}

// TestShared: the database is shared by instances, so the store does not
// claim to be one process's (core.Exclusive): recovery waits for leases.
func TestShared(t *testing.T) {
	db, _ := openDB(t)
	if _, ok := any(db).(core.Exclusive); ok {
		t.Error("postgres.DB implements core.Exclusive; instances share it")
	}
}

// TestTwoInstances: two pools on one database are two bot instances. The
// same events delivered to both are charged once, and the account's units
// are neither lost nor invented however the reservations interleave.
func TestTwoInstances(t *testing.T) {
	a, dsn := openDB(t)
	b, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const events, credits = 300, 200
	alice := core.AccountKey{Scope: "telegram:private", User: "telegram:1"}
	now := time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
	q := core.Quotas{DefaultDaily: 0}
	la, lb := core.NewLedger(a, q), core.NewLedger(b, q)
	if err := a.Update(t.Context(), func(tx core.Tx) error { return tx.PutAccount(core.Account{Key: alice, Credits: credits}) }); err != nil {
		t.Fatal(err)
	}
	var charged, duplicates, exceeded atomic.Int64
	perEvent := make([]atomic.Int32, events)
	var wg sync.WaitGroup
	for i := range events {
		for _, l := range []*core.Ledger{la, lb} {
			wg.Go(func() {
				j := core.Job{Key: fmt.Sprint("telegram:update:", i), Account: alice,
					User: core.User{Platform: core.PlatformTelegram, ID: "1"}, Model: "flux", Prompt: "a cat", Units: 1}
				_, _, err := l.Reserve(t.Context(), j, now)
				switch core.ErrorCode(err) {
				case "":
					charged.Add(1)
					perEvent[i].Add(1)
				case core.CodeDuplicate:
					duplicates.Add(1)
				case core.CodeQuotaExceeded:
					exceeded.Add(1)
				default:
					t.Errorf("reserve %s: %v", j.Key, err)
				}
			})
		}
	}
	wg.Wait()
	if charged.Load() != credits {
		t.Errorf("%d events charged, want %d (credits)", charged.Load(), credits)
	}
	for i := range perEvent {
		if n := perEvent[i].Load(); n > 1 {
			t.Errorf("event %d charged %d times", i, n)
		}
	}
	// The second delivery of a charged event is a duplicate, or finds the
	// credits gone before it looks at the key.
	if charged.Load()+duplicates.Load()+exceeded.Load() != 2*events {
		t.Errorf("charged %d, duplicates %d, exceeded %d of %d deliveries", charged.Load(), duplicates.Load(), exceeded.Load(), 2*events)
	}
	if tally, err := ledgertest.Invariant(t.Context(), b, lb, alice, credits, 0, now); err != nil || tally.Jobs != credits {
		t.Errorf("%d jobs stored, want %d: %v", tally.Jobs, credits, err)
	}
	t.Logf("charged %d, duplicates %d, exceeded %d; retries %d and %d", charged.Load(), duplicates.Load(), exceeded.Load(), a.Retries(), b.Retries())
}

// TestMigrations: a second Open finds the schema current; a database
// migrated by a newer build is refused and left alone.
func TestMigrations(t *testing.T) {
	db, dsn := openDB(t)
	db.Close()
	db2, err := postgres.Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	db2.Close()

	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var versions int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM schema_migrations`).Scan(&versions); err != nil || versions == 0 {
		t.Fatalf("schema_migrations: %d rows, %v", versions, err)
	}
	if _, err := conn.Exec(t.Context(), `INSERT INTO schema_migrations (version, name) VALUES (999, '0999_future')`); err != nil {
		t.Fatal(err)
	}
	_, err = postgres.Open(t.Context(), dsn)
	if !errors.Is(err, postgres.ErrNewerSchema) {
		t.Fatalf("Open on a newer schema = %v, want ErrNewerSchema", err)
	}
	t.Logf("refused with: %v", err)
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil || n != versions+1 {
		t.Errorf("schema_migrations changed by the refused Open: %d rows, %v", n, err)
	}
}

// TestConcurrentOpen: instances starting at once on an empty database
// migrate it once between them.
func TestConcurrentOpen(t *testing.T) {
	dsn := pgtest.Shared(t).Database(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			db, err := postgres.Open(t.Context(), dsn)
			if err == nil {
				db.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// TestOpenErrorsHideThePassword: a server that cannot be reached, or a
// connection string that does not parse, never shows the password.
func TestOpenErrorsHideThePassword(t *testing.T) {
	for _, dsn := range []string{
		"postgres://bot:s3cr3t-pw@127.0.0.1:1/ledger?connect_timeout=2",
		"postgres://bot:s3cr3t-pw@127.0.0.1:1/ledger?pool_max_conns=many",
		"host=127.0.0.1 port=1 user=bot password=s3cr3t-pw connect_timeout=2",
	} {
		_, err := postgres.Open(t.Context(), dsn)
		if err == nil {
			t.Fatalf("Open(%q) succeeded", dsn)
		}
		if msg := err.Error(); strings.Contains(msg, "s3cr3t") {
			t.Errorf("the error shows the password: %s", msg)
		} else {
			t.Logf("%s", msg)
		}
	}
}

func TestPruneJobs(t *testing.T) {
	db, _ := openDB(t)
	ledgertest.RunPrune(t, db)
}

func TestCheckDSN(t *testing.T) {
	tests := []struct {
		dsn string
		ok  bool
	}{
		{"postgres://bot:s3cr3t@db.example:5432/imaginebot?sslmode=require", true},
		{"host=db.example user=bot password=s3cr3t dbname=imaginebot", true},
		{"postgres://bot:s3cr3t@db.example:port/imaginebot", false},
		{"mysql://bot:s3cr3t@db.example/imaginebot", false},
		{"postgres://bot:s3cr3t@db.example/imaginebot?pool_max_conns=lots", false},
	}
	for _, tc := range tests {
		err := postgres.CheckDSN(tc.dsn)
		if (err == nil) != tc.ok {
			t.Errorf("CheckDSN(%q) = %v, want ok %t", tc.dsn, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("CheckDSN(%q) shows the password: %v", tc.dsn, err)
		}
		if d := postgres.Describe(tc.dsn); strings.Contains(d, "s3cr3t") {
			t.Errorf("Describe(%q) = %q shows the password", tc.dsn, d)
		}
	}
	if d := postgres.Describe("postgres://bot:s3cr3t@db.example:6543/ledger"); d != "postgres://bot@db.example:6543/ledger" {
		t.Errorf("Describe = %q", d)
	}
}

// TestConflictsRetry: a transaction whose reads another one invalidated
// before it wrote runs again and then sees the other's write: a scope or a
// setting changed under it (compare-and-set), a missing account, limit or
// job inserted under it (the primary key).
func TestConflictsRetry(t *testing.T) {
	k := core.AccountKey{Scope: "discord:g1", User: "discord:1"}
	daily := func(n int) *int { return &n }
	tests := []struct {
		name   string
		setup  func(tx core.Tx) error
		read   func(tx core.Tx) (string, error) // what fn bases its write on
		other  func(tx core.Tx) error           // commits between the read and the write
		write  func(tx core.Tx) error
		second string // what the read sees on the retry
	}{
		{"scope changed",
			func(tx core.Tx) error { return tx.PutScope(core.ScopeSettings{Scope: k.Scope, Daily: daily(3)}) },
			func(tx core.Tx) (string, error) {
				s, err := tx.Scope(k.Scope)
				return fmt.Sprint(*s.Daily), err
			},
			func(tx core.Tx) error { return tx.PutScope(core.ScopeSettings{Scope: k.Scope, Daily: daily(7)}) },
			func(tx core.Tx) error { return tx.PutScope(core.ScopeSettings{Scope: k.Scope, Daily: daily(9)}) },
			"7"},
		{"scope created",
			nil,
			func(tx core.Tx) (string, error) {
				s, err := tx.Scope(k.Scope)
				return fmt.Sprint(s.Daily != nil), err
			},
			func(tx core.Tx) error { return tx.PutScope(core.ScopeSettings{Scope: k.Scope, Daily: daily(7)}) },
			func(tx core.Tx) error { return tx.PutScope(core.ScopeSettings{Scope: k.Scope, Daily: daily(9)}) },
			"true"},
		{"setting changed",
			func(tx core.Tx) error { return tx.PutSetting("s", "a") },
			func(tx core.Tx) (string, error) { v, _, err := tx.Setting("s"); return v, err },
			func(tx core.Tx) error { return tx.PutSetting("s", "b") },
			func(tx core.Tx) error { return tx.PutSetting("s", "c") },
			"b"},
		{"account created",
			nil,
			func(tx core.Tx) (string, error) { a, err := tx.Account(k); return fmt.Sprint(a.Credits), err },
			func(tx core.Tx) error { return tx.PutAccount(core.Account{Key: k, Credits: 5}) },
			func(tx core.Tx) error { return tx.PutAccount(core.Account{Key: k, Credits: 1}) },
			"5"},
		{"limit created",
			nil,
			func(tx core.Tx) (string, error) { l, err := tx.Limit(k.User); return fmt.Sprint(l.InFlight), err },
			func(tx core.Tx) error { return tx.PutLimit(core.UserLimit{User: k.User, InFlight: 2}) },
			func(tx core.Tx) error { return tx.PutLimit(core.UserLimit{User: k.User, InFlight: 1}) },
			"2"},
		{"job created",
			nil,
			func(tx core.Tx) (string, error) { _, ok, err := tx.Job("j1"); return fmt.Sprint(ok), err },
			func(tx core.Tx) error {
				return tx.PutJob(core.Job{Key: "j1", Account: k, State: core.JobPending, Created: time.Now()})
			},
			func(tx core.Tx) error {
				return tx.PutJob(core.Job{Key: "j1", Account: k, State: core.JobCommitted, Created: time.Now()})
			},
			"true"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db, _ := openDB(t)
			if tc.setup != nil {
				if err := db.Update(t.Context(), tc.setup); err != nil {
					t.Fatal(err)
				}
			}
			var seen []string
			err := db.Update(t.Context(), func(tx core.Tx) error {
				v, err := tc.read(tx)
				if err != nil {
					return err
				}
				seen = append(seen, v)
				if len(seen) == 1 {
					// Another process commits in between (its own connection).
					if err := db.Update(t.Context(), tc.other); err != nil {
						t.Fatalf("the other transaction: %v", err)
					}
				}
				return tc.write(tx)
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(seen) != 2 || seen[1] != tc.second {
				t.Errorf("fn read %q, want two runs, the second reading %q", seen, tc.second)
			}
			if db.Retries() != 1 {
				t.Errorf("%d retries, want 1", db.Retries())
			}
		})
	}
}

// TestSwallowedConflict: an fn that ignores a failed statement does not
// commit half a transaction: the conflict still makes it run again.
func TestSwallowedConflict(t *testing.T) {
	db, _ := openDB(t)
	k := core.AccountKey{Scope: "s", User: "telegram:1"}
	runs := 0
	err := db.Update(t.Context(), func(tx core.Tx) error {
		runs++
		_, _ = tx.Account(k)
		if runs == 1 {
			if err := db.Update(t.Context(), func(tx core.Tx) error { return tx.PutAccount(core.Account{Key: k, Credits: 5}) }); err != nil {
				t.Fatal(err)
			}
		}
		_ = tx.PutAccount(core.Account{Key: k, Credits: 1}) // fails on the first run; ignored
		return tx.AppendAudit(core.AuditEntry{Time: time.Now(), Scope: "s", Action: "x", Note: fmt.Sprint("run ", runs)})
	})
	if err != nil || runs != 2 {
		t.Fatalf("Update = %v after %d runs, want nil after 2", err, runs)
	}
	entries, err := db.Audit(t.Context(), "s", 10)
	if err != nil || len(entries) != 1 || entries[0].Note != "run 2" {
		t.Errorf("audit = %+v, %v; want run 2's entry alone", entries, err)
	}
}

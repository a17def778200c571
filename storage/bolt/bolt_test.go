package bolt_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
	bbolterrors "go.etcd.io/bbolt/errors"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/bolt"
	"github.com/imaginebot/imaginebot/storage/ledgertest"
)

func openTemp(t testing.TB, opts ...bolt.Option) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "ledger.db"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	return db
}

func TestStore(t *testing.T) {
	tests := []struct {
		name string
		opts []bolt.Option
	}{
		{"group commit", nil},
		{"no group commit", []bolt.Option{bolt.WithGroupCommit(false)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ledgertest.Run(t, func(t *testing.T) core.Store { return openTemp(t, tc.opts...) })
		})
	}
}

// TestExclusive: an open ledger file is locked, so the store is one
// process's (core.Exclusive): recovery need not wait for leases.
func TestExclusive(t *testing.T) {
	var s core.Store = openTemp(t)
	if e, ok := s.(core.Exclusive); !ok || !e.Exclusive() {
		t.Errorf("bolt.DB implements core.Exclusive %t; want it, reporting true", ok)
	}
}

func TestOpenCreatesPrivateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "dir", "ledger.db")
	db, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.Path() != path {
		t.Errorf("Path = %q, want %q", db.Path(), path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode = %v, want 0600", perm)
	}
}

func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// flock belongs to the open file description, so a second Open in this
	// process conflicts just like another process would.
	start := time.Now()
	db2, err := bolt.Open(path, bolt.WithLockTimeout(200*time.Millisecond))
	elapsed := time.Since(start)
	if err == nil {
		db2.Close()
		t.Fatal("second Open succeeded")
	}
	if !errors.Is(err, bolt.ErrLocked) {
		t.Errorf("err = %v, want ErrLocked", err)
	}
	if want := "bolt: the database is in use by another imaginebot process: " + path; err.Error() != want {
		t.Errorf("message = %q, want %q", err.Error(), want)
	}
	if elapsed > 2*time.Second {
		t.Errorf("second Open took %v with a 200ms lock timeout", elapsed)
	}
	// Released on Close: the next opener gets in.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db3, err := bolt.Open(path, bolt.WithLockTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	db3.Close()
}

func TestLockedByAnotherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	child := startHelper(t, "hold", path, 0)
	defer child.kill()
	start := time.Now()
	db, err := bolt.Open(path) // the default lock timeout, 1s
	if err == nil {
		db.Close()
		t.Fatal("Open succeeded while another process holds the file")
	}
	if !errors.Is(err, bolt.ErrLocked) {
		t.Errorf("err = %v, want ErrLocked", err)
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 3*time.Second {
		t.Errorf("Open gave up after %v, want about the 1s default", d)
	}
}

func TestSchemaVersion(t *testing.T) {
	tests := []struct {
		name    string
		version string
		wantErr error
	}{
		{"current", "3", nil},
		{"version 2, upgraded", "2", nil},
		{"version 1, upgraded", "1", nil},
		{"newer", "4", bolt.ErrNewerSchema},
		{"garbage", "x", errors.New("not valid")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			raw, err := bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = raw.Update(func(tx *bbolt.Tx) error {
				b, err := tx.CreateBucket([]byte("meta"))
				if err != nil {
					return err
				}
				return b.Put([]byte("schema_version"), []byte(tc.version))
			})
			raw.Close()
			if err != nil {
				t.Fatal(err)
			}
			db, err := bolt.Open(path)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("Open: %v", err)
			case tc.wantErr == nil:
				db.Close()
				raw, err := bbolt.Open(path, 0o600, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer raw.Close()
				raw.View(func(tx *bbolt.Tx) error {
					if v := tx.Bucket([]byte("meta")).Get([]byte("schema_version")); string(v) != "3" {
						t.Errorf("schema_version = %q after Open, want 3", v)
					}
					for _, name := range []string{"notices", "limits", "events"} {
						if tx.Bucket([]byte(name)) == nil {
							t.Errorf("no %s bucket after Open", name)
						}
					}
					return nil
				})
				return
			case err == nil:
				db.Close()
				t.Fatalf("Open succeeded, want %v", tc.wantErr)
			case errors.Is(tc.wantErr, bolt.ErrNewerSchema) && !errors.Is(err, bolt.ErrNewerSchema):
				t.Errorf("err = %v, want ErrNewerSchema", err)
			case !strings.Contains(err.Error(), tc.wantErr.Error()):
				t.Errorf("err = %v, want it to mention %q", err, tc.wantErr)
			}
			// A refused file is left as it was.
			raw, err = bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			raw.View(func(tx *bbolt.Tx) error {
				if tx.Bucket([]byte("jobs")) != nil {
					t.Error("Open created buckets in a file it refused")
				}
				if v := tx.Bucket([]byte("meta")).Get([]byte("schema_version")); string(v) != tc.version {
					t.Errorf("schema_version = %q, want %q", v, tc.version)
				}
				return nil
			})
		})
	}
}

// TestUpgradeFromVersion2: a version 2 ledger (no limits or events buckets,
// jobs without owner or lease) opens as version 3 with everything it held,
// and takes limits and claims at once.
func TestUpgradeFromVersion2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	now := time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
	k := core.AccountKey{Scope: "discord:g1", User: "discord:1"}
	if err := db.Update(ctx, func(tx core.Tx) error { return tx.PutAccount(core.Account{Key: k, Credits: 5}) }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := core.NewLedger(db, core.Quotas{}).Reserve(ctx, core.Job{Key: "k1", Account: k, Units: 1}, now); err != nil {
		t.Fatal(err)
	}
	db.Close()
	// Make it the file a version 2 build wrote.
	raw, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = raw.Update(func(tx *bbolt.Tx) error {
		for _, name := range []string{"limits", "events"} {
			if err := tx.DeleteBucket([]byte(name)); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte("meta")).Put([]byte("schema_version"), []byte("2"))
	})
	raw.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := bolt.Verify(path); err == nil {
		t.Fatal("Verify accepted a version 2 file as this build's layout")
	}

	db, err = bolt.Open(path)
	if err != nil {
		t.Fatalf("Open of a version 2 file: %v", err)
	}
	defer db.Close()
	pending, err := db.PendingJobs(ctx)
	if err != nil || len(pending) != 1 || pending[0].Key != "k1" || pending[0].Owner != "" || !pending[0].Lease.IsZero() {
		t.Errorf("PendingJobs after the upgrade = %+v, %v; want k1, no owner or lease", pending, err)
	}
	var fresh bool
	err = db.Update(ctx, func(tx core.Tx) error {
		if a, err := tx.Account(k); err != nil || a.Credits != 4 {
			return errors.Join(err, fmt.Errorf("account after the upgrade: %+v", a))
		}
		if err := tx.PutLimit(core.UserLimit{User: k.User, Tokens: 0.5, At: now, InFlight: 1}); err != nil {
			return err
		}
		fresh, err = tx.Claim("discord:interaction:1", now)
		return err
	})
	if err != nil || !fresh {
		t.Fatalf("limit and claim after the upgrade: fresh %t, %v", fresh, err)
	}
	db.Close()
	if err := bolt.Verify(path); err != nil {
		t.Errorf("Verify after the upgrade: %v", err)
	}
}

func TestNotABoltFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	if err := os.WriteFile(path, bytes.Repeat([]byte("not a database "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path)
	if err == nil {
		db.Close()
		t.Fatal("Open accepted a file that is not a bbolt database")
	}
	if !strings.HasPrefix(err.Error(), "bolt: ") {
		t.Errorf("err = %q, want the bolt: prefix", err)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	now := time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
	k := core.AccountKey{Scope: "discord:g1", User: "discord:1"}
	zero := 0
	l := core.NewLedger(db, core.Quotas{DefaultDaily: 2})
	err = db.Update(ctx, func(tx core.Tx) error {
		if err := tx.PutAccount(core.Account{Key: k, Daily: &zero, Credits: 5}); err != nil {
			return err
		}
		if err := tx.PutScope(core.ScopeSettings{Scope: k.Scope, Daily: &zero}); err != nil {
			return err
		}
		return tx.AppendAudit(core.AuditEntry{Time: now, Scope: k.Scope, Actor: "discord:9", Role: core.RoleModerator, Action: "set-daily"})
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, _, err := l.Reserve(ctx, core.Job{Key: fmt.Sprint("k", i), Account: k, Units: 1}, now.Add(time.Duration(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Commit(ctx, "k0", now); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	bal, err := core.NewLedger(db, core.Quotas{DefaultDaily: 2}).Balance(ctx, k, now)
	if err != nil {
		t.Fatal(err)
	}
	if bal.Daily != 0 || bal.Credits != 2 {
		t.Errorf("balance after reopen = %+v, want daily 0 (override), credits 2", bal)
	}
	pending, err := db.PendingJobs(ctx)
	if err != nil || len(pending) != 2 || pending[0].Key != "k1" || pending[1].Key != "k2" {
		t.Errorf("PendingJobs = %+v, %v; want k1, k2 oldest first", pending, err)
	}
	if a, err := db.Audit(ctx, k.Scope, 10); err != nil || len(a) != 1 {
		t.Errorf("Audit = %+v, %v", a, err)
	}
}

func TestRefusesNulInKeys(t *testing.T) {
	db := openTemp(t)
	tests := []struct {
		name string
		fn   func(tx core.Tx) error
	}{
		{"account scope", func(tx core.Tx) error {
			return tx.PutAccount(core.Account{Key: core.AccountKey{Scope: "a\x00b", User: "u"}})
		}},
		{"account user", func(tx core.Tx) error {
			return tx.PutAccount(core.Account{Key: core.AccountKey{Scope: "s", User: "u\x00"}})
		}},
		{"scope", func(tx core.Tx) error { return tx.PutScope(core.ScopeSettings{Scope: "\x00"}) }},
		{"job key", func(tx core.Tx) error {
			return tx.PutJob(core.Job{Key: "k\x00", Account: core.AccountKey{Scope: "s", User: "u"}})
		}},
		{"empty job key", func(tx core.Tx) error {
			return tx.PutJob(core.Job{Account: core.AccountKey{Scope: "s", User: "u"}})
		}},
		{"audit scope", func(tx core.Tx) error { return tx.AppendAudit(core.AuditEntry{Scope: "x\x00y"}) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := db.Update(t.Context(), tc.fn)
			if err == nil || !strings.HasPrefix(err.Error(), "bolt: ") {
				t.Errorf("Update = %v, want a bolt: error", err)
			}
		})
	}
}

func TestBackup(t *testing.T) {
	db := openTemp(t)
	ctx := t.Context()
	k := core.AccountKey{Scope: "s", User: "telegram:1"}
	if err := db.Update(ctx, func(tx core.Tx) error { return tx.PutAccount(core.Account{Key: k, Credits: 9}) }); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := db.Backup(&buf)
	if err != nil || n != int64(buf.Len()) || n == 0 {
		t.Fatalf("Backup = %d, %v (buffer %d bytes)", n, err, buf.Len())
	}

	dst := filepath.Join(t.TempDir(), "backup.db")
	if err := db.BackupFile(dst); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("backup mode = %v, want 0600", perm)
	}
	if entries, _ := os.ReadDir(filepath.Dir(dst)); len(entries) != 1 {
		t.Errorf("backup directory holds %d files, want only the backup", len(entries))
	}
	// The database keeps working while and after being copied.
	if err := db.Update(ctx, func(tx core.Tx) error { return tx.PutAccount(core.Account{Key: k, Credits: 1}) }); err != nil {
		t.Fatal(err)
	}
	copyDB, err := bolt.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer copyDB.Close()
	var a core.Account
	err = copyDB.View(ctx, func(tx core.Tx) error {
		a, err = tx.Account(k)
		return err
	})
	if err != nil || a.Credits != 9 {
		t.Errorf("account in the backup = %+v, %v; want 9 credits", a, err)
	}
	if err := db.BackupFile(db.Path()); err == nil {
		t.Error("BackupFile over the live database succeeded")
	}
}

func TestPruneJobs(t *testing.T) { ledgertest.RunPrune(t, openTemp(t)) }

// blockGroup starts an Update whose fn holds its transaction open until
// release is closed, so the calls made meanwhile queue up for one group.
func blockGroup(t *testing.T, db *bolt.DB, ctx context.Context) (release func() error) {
	t.Helper()
	started, unblock, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- db.Update(ctx, func(tx core.Tx) error {
			close(started)
			<-unblock
			return putScopeFn("blocker")(tx)
		})
	}()
	<-started
	return func() error {
		close(unblock)
		return <-done
	}
}

func waitQueued(t *testing.T, db *bolt.DB, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for db.GroupStats().Queued < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls queued, want %d", db.GroupStats().Queued, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func scopeExists(t *testing.T, db *bolt.DB, scope string) bool {
	t.Helper()
	var daily *int
	err := db.View(t.Context(), func(tx core.Tx) error {
		s, err := tx.Scope(scope)
		daily = s.Daily
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return daily != nil
}

func putScopeFn(scope string) func(core.Tx) error {
	return func(tx core.Tx) error {
		one := 1
		return tx.PutScope(core.ScopeSettings{Scope: scope, Daily: &one})
	}
}

func TestGroupCommitFailures(t *testing.T) {
	db := openTemp(t)
	release := blockGroup(t, db, t.Context())
	before := db.GroupStats()
	errEarly, errLate := errors.New("fails before writing"), errors.New("fails after writing")
	type result struct {
		scope string
		err   error
	}
	fns := map[string]func(core.Tx) error{}
	for i := range 12 {
		scope := fmt.Sprint("s", i)
		switch i % 4 {
		case 1:
			fns[scope] = func(core.Tx) error { return errEarly }
		case 3:
			fns[scope] = func(tx core.Tx) error {
				if err := putScopeFn(scope)(tx); err != nil {
					return err
				}
				return errLate
			}
		default:
			fns[scope] = putScopeFn(scope)
		}
	}
	results := make(chan result, len(fns))
	for scope, fn := range fns {
		go func() { results <- result{scope, db.Update(t.Context(), fn)} }()
	}
	waitQueued(t, db, len(fns))
	if err := release(); err != nil {
		t.Fatal(err)
	}
	for range fns {
		r := <-results
		var i int
		fmt.Sscanf(r.scope, "s%d", &i)
		want := map[int]error{1: errEarly, 3: errLate}[i%4]
		if !errors.Is(r.err, want) || (want == nil && r.err != nil) {
			t.Errorf("%s: Update = %v, want %v", r.scope, r.err, want)
		}
		if got := scopeExists(t, db, r.scope); got != (want == nil) {
			t.Errorf("%s: stored = %t, want %t", r.scope, got, want == nil)
		}
	}
	after := db.GroupStats()
	if c := after.Commits - before.Commits; c != 2 { // the blocker's, then one for all twelve
		t.Errorf("%d commits, want 2", c)
	}
	if r := after.Rollbacks - before.Rollbacks; r != 3 { // one per fn that failed after writing
		t.Errorf("%d rollbacks, want 3", r)
	}
}

// The new writes of a Tx count as writes for the group: an fn that fails
// after a Claim or a PutLimit (and nothing else) has its transaction rolled
// back, so the next fn of its group finds the event unclaimed and the limit
// unwritten, and only that one's work is committed.
func TestGroupCommitRollsBackClaimsAndLimits(t *testing.T) {
	at := time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
	errLate := errors.New("fails after writing")
	tests := []struct {
		name  string
		write func(tx core.Tx) error           // the failing fn's only write
		next  func(tx core.Tx) (string, error) // the next fn in the group: what it finds
		want  string
	}{
		{"claim",
			func(tx core.Tx) error { _, err := tx.Claim("e1", at); return err },
			func(tx core.Tx) (string, error) {
				fresh, err := tx.Claim("e1", at)
				return fmt.Sprint("fresh ", fresh), err
			},
			"fresh true"},
		{"limit",
			func(tx core.Tx) error {
				return tx.PutLimit(core.UserLimit{User: "discord:1", Tokens: 0.5, At: at, InFlight: 3})
			},
			func(tx core.Tx) (string, error) {
				l, err := tx.Limit("discord:1")
				return fmt.Sprint("in flight ", l.InFlight), err
			},
			"in flight 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := openTemp(t)
			release := blockGroup(t, db, t.Context())
			failed := make(chan error, 1)
			go func() {
				failed <- db.Update(t.Context(), func(tx core.Tx) error {
					if err := tc.write(tx); err != nil {
						return err
					}
					return errLate
				})
			}()
			waitQueued(t, db, 1) // queued first: runs first in the group
			var seen string
			next := make(chan error, 1)
			go func() {
				next <- db.Update(t.Context(), func(tx core.Tx) error {
					var err error
					seen, err = tc.next(tx)
					if err != nil {
						return err
					}
					return putScopeFn("next")(tx)
				})
			}()
			waitQueued(t, db, 2)
			before := db.GroupStats()
			if err := release(); err != nil {
				t.Fatal(err)
			}
			if err := <-failed; !errors.Is(err, errLate) {
				t.Errorf("failing Update = %v, want its error", err)
			}
			if err := <-next; err != nil {
				t.Fatal(err)
			}
			if seen != tc.want {
				t.Errorf("the next fn in the group found %q, want %q", seen, tc.want)
			}
			if r := db.GroupStats().Rollbacks - before.Rollbacks; r != 1 {
				t.Errorf("%d rollbacks, want 1", r)
			}
			if !scopeExists(t, db, "next") {
				t.Error("the next fn's write was lost")
			}
		})
	}
}

// A commit that fails fails every call in its group, each told so (nothing
// of theirs was stored), except a call whose own fn failed, which keeps its
// error; and the committer goes on working after it.
func TestGroupCommitCommitFails(t *testing.T) {
	db := openTemp(t)
	// Small writes fit in 1 MiB; the big one makes the commit fail.
	db.SetMaxSize(1 << 20)
	release := blockGroup(t, db, t.Context())
	errOwn := errors.New("fails before writing")
	big := strings.Repeat("x", 4<<20)
	fns := map[string]func(core.Tx) error{
		"own error": func(core.Tx) error { return errOwn },
		"big":       func(tx core.Tx) error { return tx.PutSetting("big", big) },
	}
	for i := range 5 {
		fns[fmt.Sprint("s", i)] = putScopeFn(fmt.Sprint("s", i))
	}
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(fns))
	for name, fn := range fns {
		go func() { results <- result{name, db.Update(t.Context(), fn)} }()
	}
	waitQueued(t, db, len(fns))
	if err := release(); err != nil {
		t.Fatal(err)
	}
	for range fns {
		var r result
		select {
		case r = <-results:
		case <-time.After(10 * time.Second):
			t.Fatal("an Update in the failed group never returned")
		}
		switch {
		case r.name == "own error":
			if !errors.Is(r.err, errOwn) {
				t.Errorf("%s: Update = %v, want its fn's error", r.name, r.err)
			}
		case !errors.Is(r.err, bbolterrors.ErrMaxSizeReached) || !strings.HasPrefix(r.err.Error(), "bolt: commit: "):
			t.Errorf("%s: Update = %v, want the failed commit's error", r.name, r.err)
		}
	}
	for i := range 5 {
		if scopeExists(t, db, fmt.Sprint("s", i)) {
			t.Errorf("s%d stored by a commit that failed", i)
		}
	}
	// Later Updates commit, the big one too once the file may grow.
	db.SetMaxSize(0)
	for name, fn := range fns {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err := db.Update(ctx, fn)
		cancel()
		if name != "own error" && err != nil {
			t.Fatalf("%s after the failed commit: Update = %v", name, err)
		}
	}
	if !scopeExists(t, db, "s0") {
		t.Error("the Update after the failed commit was not stored")
	}
}

// cancelAfterCheck is a context cancelled just after its first Err: Update's
// early check passes, and the call is cancelled as it enters the group.
type cancelAfterCheck struct {
	context.Context
	cancel context.CancelFunc
	once   sync.Once
}

func (c *cancelAfterCheck) Err() error {
	err := c.Context.Err()
	c.once.Do(c.cancel)
	return err
}

// A call told to lead that gives up before it leads must hand the lead on
// (here, to no one), or every later Update waits for a leader that never
// comes. On an idle committer a call is told to lead at once; whether it
// then sees its lead or its cancellation first is up to select, so the
// round runs many times: each has even odds of taking the hand-off path.
func TestGroupCommitCancelledLeaderHandsOff(t *testing.T) {
	db := openTemp(t)
	for i := range 64 {
		ctx, cancel := context.WithCancel(t.Context())
		err := db.Update(&cancelAfterCheck{Context: ctx, cancel: cancel}, putScopeFn("never"))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("round %d: cancelled Update = %v, want context.Canceled", i, err)
		}
		ctx, cancel = context.WithTimeout(t.Context(), 5*time.Second)
		err = db.Update(ctx, putScopeFn(fmt.Sprint("s", i)))
		cancel()
		if err != nil {
			t.Fatalf("round %d: the Update after a cancelled leader = %v: no one was leading", i, err)
		}
	}
	if scopeExists(t, db, "never") {
		t.Error("a cancelled call's fn ran")
	}
	if s := db.GroupStats(); s.Queued != 0 {
		t.Errorf("%d calls left in the queue", s.Queued)
	}
}

func TestGroupCommitSizeCap(t *testing.T) {
	db := openTemp(t)
	release := blockGroup(t, db, t.Context())
	const n = 300
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := db.Update(t.Context(), putScopeFn(fmt.Sprint("s", i))); err != nil {
				t.Error(err)
			}
		})
	}
	waitQueued(t, db, n)
	if err := release(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if s := db.GroupStats(); s.MaxSize != 256 || s.Commits != 3 {
		t.Errorf("stats %+v, want groups capped at 256 (3 commits)", s)
	}
}

func TestGroupCommitCancelWhileWaiting(t *testing.T) {
	db := openTemp(t)
	release := blockGroup(t, db, t.Context())
	ctx, cancel := context.WithCancel(t.Context())
	ran := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- db.Update(ctx, func(tx core.Tx) error {
			ran <- struct{}{}
			return putScopeFn("cancelled")(tx)
		})
	}()
	waitQueued(t, db, 1)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Update = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled Update kept waiting for its group")
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ran:
		t.Error("the cancelled fn ran")
	default:
	}
	if scopeExists(t, db, "cancelled") || db.GroupStats().Queued != 0 {
		t.Error("the cancelled call left something behind")
	}
	// The committer still works.
	if err := db.Update(t.Context(), putScopeFn("after")); err != nil || !scopeExists(t, db, "after") {
		t.Errorf("Update after a cancellation = %v", err)
	}
}

func TestGroupCommitCancelAfterRun(t *testing.T) {
	db := openTemp(t)
	ctx, cancel := context.WithCancel(t.Context())
	release := blockGroup(t, db, ctx)
	cancel() // fn is already running: the commit decides
	if err := release(); err != nil {
		t.Errorf("Update = %v, want the commit's result (nil)", err)
	}
	if !scopeExists(t, db, "blocker") {
		t.Error("the write of an Update that returned nil is missing")
	}
}

func TestGroupCommitCancelStress(t *testing.T) {
	db := openTemp(t)
	const n = 300
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), time.Duration(i%7)*200*time.Microsecond)
			defer cancel()
			errs[i] = db.Update(ctx, putScopeFn(fmt.Sprint("s", i)))
		})
	}
	wg.Wait()
	cancelled := 0
	for i, err := range errs {
		stored := scopeExists(t, db, fmt.Sprint("s", i))
		switch {
		case err == nil && !stored:
			t.Errorf("s%d: Update returned nil but nothing is stored", i)
		case err != nil && !errors.Is(err, context.DeadlineExceeded):
			t.Errorf("s%d: Update = %v", i, err)
		case err != nil && stored:
			t.Errorf("s%d: Update returned %v but its write was committed", i, err)
		case err != nil:
			cancelled++
		}
	}
	t.Logf("%d of %d calls gave up while waiting; %+v", cancelled, n, db.GroupStats())
	if s := db.GroupStats(); s.Queued != 0 {
		t.Errorf("%d calls left in the queue", s.Queued)
	}
}

func TestGroupCommitPanic(t *testing.T) {
	db := openTemp(t)
	release := blockGroup(t, db, t.Context())
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		db.Update(t.Context(), func(tx core.Tx) error {
			if err := putScopeFn("panicker")(tx); err != nil {
				return err
			}
			panic("boom")
		})
	}()
	other := make(chan error, 1)
	go func() { other <- db.Update(t.Context(), putScopeFn("bystander")) }()
	waitQueued(t, db, 2)
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if p := <-panicked; p != "boom" {
		t.Errorf("recovered %v, want the fn's panic in the caller", p)
	}
	if err := <-other; err != nil {
		t.Errorf("bystander: %v", err)
	}
	if scopeExists(t, db, "panicker") || !scopeExists(t, db, "bystander") {
		t.Error("the panicking fn's write stayed, or the bystander's was lost")
	}
}

func TestAfterClose(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	for name, err := range map[string]error{
		"update": db.Update(t.Context(), putScopeFn("x")),
		"view":   db.View(t.Context(), func(core.Tx) error { return nil }),
	} {
		if err == nil || !strings.HasPrefix(err.Error(), "bolt: ") {
			t.Errorf("%s after Close = %v, want a bolt: error", name, err)
		}
	}
}

// TestFileLayout pins the documented bucket layout and JSON field names:
// other tools read the file, and later builds must read this one.
func TestFileLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	k := core.AccountKey{Scope: "discord:g1", User: "discord:1"}
	created := time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
	zero := 0
	err = db.Update(ctx, func(tx core.Tx) error {
		if err := tx.PutAccount(core.Account{Key: k, Daily: &zero, Credits: 3}); err != nil {
			return err
		}
		if err := tx.PutLimit(core.UserLimit{User: k.User, Tokens: 1.5, At: created, InFlight: 2}); err != nil {
			return err
		}
		if _, err := tx.Claim("discord:interaction:7", created); err != nil {
			return err
		}
		return tx.AppendAudit(core.AuditEntry{Time: created, Scope: k.Scope, Actor: "discord:9", Role: core.RoleOwner, Action: "grant"})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := core.NewLedger(db, core.Quotas{}).Reserve(ctx, core.Job{Key: "job1", Account: k, Units: 1}, created); err != nil {
		t.Fatal(err)
	}
	err = db.Update(ctx, func(tx core.Tx) error {
		return tx.PutJob(core.Job{Key: "job2", Account: k, State: core.JobPending, Created: created,
			Owner: "imaginebot-a", Lease: created.Add(90 * time.Second)})
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	raw, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	nanos := make([]byte, 8)
	n := uint64(created.UnixNano()) ^ 1<<63
	for i := range 8 {
		nanos[i] = byte(n >> (56 - 8*i))
	}
	seq1 := []byte{0, 0, 0, 0, 0, 0, 0, 1}
	tests := []struct {
		bucket, key string
		contains    []string // in the value; nil = the value must be empty
	}{
		{"meta", "schema_version", []string{"3"}},
		{"accounts", "discord:g1\x00discord:1", []string{`"daily":0`, `"credits":2`, `"scope":"discord:g1"`}},
		{"jobs", "job1", []string{`"state":"pending"`, `"units":1`, `"from_credits":1`, `"created":"2025-03-10T12:00:00Z"`}},
		{"pending", "job1", nil},
		{"history", "discord:g1\x00discord:1\x00" + string(nanos) + "\x00job1", []string{"job1"}},
		{"audit", string(seq1), []string{`"action":"grant"`, `"role":"owner"`}},
		{"audit_scope", "discord:g1\x00" + string(seq1), nil},
		{"jobs", "job2", []string{`"owner":"imaginebot-a"`, `"lease":"2025-03-10T12:01:30Z"`}},
		{"limits", "discord:1", []string{`"user":"discord:1"`, `"tokens":1.5`, `"at":"2025-03-10T12:00:00Z"`, `"in_flight":2`}},
		{"events", "discord:interaction:7", []string{"2025-03-10T12:00:00Z"}},
	}
	raw.View(func(tx *bbolt.Tx) error {
		for _, tc := range tests {
			b := tx.Bucket([]byte(tc.bucket))
			if b == nil {
				t.Errorf("bucket %s is missing", tc.bucket)
				continue
			}
			v := b.Get([]byte(tc.key))
			switch {
			case v == nil:
				t.Errorf("%s: no key %q", tc.bucket, tc.key)
			case tc.contains == nil && len(v) != 0:
				t.Errorf("%s[%q] = %q, want empty", tc.bucket, tc.key, v)
			}
			for _, want := range tc.contains {
				if !bytes.Contains(v, []byte(want)) {
					t.Errorf("%s[%q] = %s, want it to contain %s", tc.bucket, tc.key, v, want)
				}
			}
		}
		return nil
	})
}

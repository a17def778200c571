// Package ledgertest is a conformance suite for core.Store implementations.
// It drives core.Ledger and the Tx methods over a fresh store per test and
// checks what every storage must agree on: the quota rules hold, failed
// transactions leave nothing behind, the indexes (pending, history, audit)
// answer correctly, every field survives a round trip, and concurrent use
// neither loses nor invents units.
//
//	func TestStore(t *testing.T) {
//		ledgertest.Run(t, func(t *testing.T) core.Store { return memory.New() })
//	}
package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/core"
)

// Run runs the suite. open returns an empty store and is called once per
// subtest; it should close the store with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) core.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s core.Store)
	}{
		{"ReserveDailyFirst", testReserveDailyFirst},
		{"ReserveInsufficient", testReserveInsufficient},
		{"ReserveBanned", testReserveBanned},
		{"ReserveDuplicate", testReserveDuplicate},
		{"CommitIdempotent", testCommitIdempotent},
		{"RefundIdempotent", testRefundIdempotent},
		{"Conflicts", testConflicts},
		{"RefundReturnsUnits", testRefundReturnsUnits},
		{"Rollback", testRollback},
		{"ReadOwnWrites", testReadOwnWrites},
		{"ViewReadOnly", testViewReadOnly},
		{"CancelledContext", testCancelledContext},
		{"PendingJobs", testPendingJobs},
		{"DeliveringAndStatus", testDeliveringAndStatus},
		{"OwedNotices", testOwedNotices},
		{"Settings", testSettings},
		{"RecentJobs", testRecentJobs},
		{"Audit", testAudit},
		{"RoundTripAccounts", testRoundTripAccounts},
		{"RoundTripScopes", testRoundTripScopes},
		{"RoundTripJob", testRoundTripJob},
		{"RoundTripAudit", testRoundTripAudit},
		{"LimitUnknown", testLimitUnknown},
		{"RoundTripLimit", testRoundTripLimit},
		{"LimitRollback", testLimitRollback},
		{"LimitReadOwnWrites", testLimitReadOwnWrites},
		{"ClaimOnce", testClaimOnce},
		{"ClaimRollback", testClaimRollback},
		{"LimitsViewReadOnly", testLimitsViewReadOnly},
		{"RoundTripLease", testRoundTripLease},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
	t.Run("Concurrency", func(t *testing.T) {
		t.Run("Reserve1000", func(t *testing.T) { testConcurrentReserve(t, open(t)) })
		t.Run("Mixed", func(t *testing.T) { testConcurrentMixed(t, open(t)) })
		t.Run("Claim16", func(t *testing.T) { testConcurrentClaim(t, open(t)) })
		t.Run("Limit16", func(t *testing.T) { testConcurrentLimit(t, open(t)) })
		t.Run("UserLimits32", func(t *testing.T) { testConcurrentUserLimits(t, open(t)) })
	})
}

// day1 is an arbitrary noon in UTC, far from any midnight.
var day1 = time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)

var (
	alice = core.AccountKey{Scope: "discord:g1", User: "discord:1"}
	bob   = core.AccountKey{Scope: "discord:g1", User: "discord:10"} // alice's user is a prefix of bob's
	carol = core.AccountKey{Scope: "discord:g10", User: "discord:1"} // alice's scope is a prefix of carol's
)

func ptr(n int) *int { return &n }

func newJob(key string, k core.AccountKey, units int) core.Job {
	platform, id, _ := strings.Cut(k.User, ":")
	return core.Job{Key: key, Account: k, User: core.User{Platform: core.Platform(platform), ID: id},
		Model: "flux", Prompt: "a cat", Units: units, Lang: core.English}
}

func putAccount(t *testing.T, s core.Store, a core.Account) {
	t.Helper()
	if err := s.Update(t.Context(), func(tx core.Tx) error { return tx.PutAccount(a) }); err != nil {
		t.Fatalf("put account %s: %v", a.Key, err)
	}
}

func getAccount(t *testing.T, s core.Store, k core.AccountKey) core.Account {
	t.Helper()
	var a core.Account
	err := s.View(t.Context(), func(tx core.Tx) error {
		var err error
		a, err = tx.Account(k)
		return err
	})
	if err != nil {
		t.Fatalf("account %s: %v", k, err)
	}
	return a
}

func getJob(t *testing.T, s core.Store, key string) (core.Job, bool) {
	t.Helper()
	var (
		j  core.Job
		ok bool
	)
	err := s.View(t.Context(), func(tx core.Tx) error {
		var err error
		j, ok, err = tx.Job(key)
		return err
	})
	if err != nil {
		t.Fatalf("job %s: %v", key, err)
	}
	return j, ok
}

func mustReserve(t *testing.T, l *core.Ledger, j core.Job, now time.Time) (core.Job, core.Balance) {
	t.Helper()
	out, bal, err := l.Reserve(t.Context(), j, now)
	if err != nil {
		t.Fatalf("reserve %s: %v", j.Key, err)
	}
	return out, bal
}

func wantCode(t *testing.T, what string, err error, want core.Code) {
	t.Helper()
	if got := core.ErrorCode(err); got != want {
		t.Errorf("%s: code %q (err %v), want %q", what, got, err, want)
	}
}

func wantAccount(t *testing.T, s core.Store, want core.Account) {
	t.Helper()
	if got := getAccount(t, s, want.Key); !reflect.DeepEqual(got, want) {
		t.Errorf("account %s = %+v, want %+v", want.Key, fmtAccount(got), fmtAccount(want))
	}
}

func fmtAccount(a core.Account) string {
	daily := "nil"
	if a.Daily != nil {
		daily = fmt.Sprint(*a.Daily)
	}
	return fmt.Sprintf("{Daily:%s Credits:%d UsedDay:%q Used:%d Banned:%t Prefs:%+v}", daily, a.Credits, a.UsedDay, a.Used, a.Banned, a.Prefs)
}

func keys(jobs []core.Job) []string {
	out := make([]string, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, j.Key)
	}
	return out
}

func testReserveDailyFirst(t *testing.T, s core.Store) {
	l := core.NewLedger(s, core.Quotas{DefaultDaily: 3})
	putAccount(t, s, core.Account{Key: alice, Credits: 5})
	steps := []struct {
		units                    int
		fromDaily, fromCredits   int
		used, credits, remaining int
	}{
		{units: 2, fromDaily: 2, fromCredits: 0, used: 2, credits: 5, remaining: 6},
		{units: 3, fromDaily: 1, fromCredits: 2, used: 3, credits: 3, remaining: 3},
		{units: 3, fromDaily: 0, fromCredits: 3, used: 3, credits: 0, remaining: 0},
	}
	for i, st := range steps {
		j, bal := mustReserve(t, l, newJob(fmt.Sprint("k", i), alice, st.units), day1)
		if j.FromDaily != st.fromDaily || j.FromCredits != st.fromCredits {
			t.Errorf("step %d: from daily %d, credits %d; want %d, %d", i, j.FromDaily, j.FromCredits, st.fromDaily, st.fromCredits)
		}
		if j.State != core.JobPending || j.Day != "2025-03-10" || !j.Created.Equal(day1) {
			t.Errorf("step %d: job state %q day %q created %v", i, j.State, j.Day, j.Created)
		}
		if bal.Used != st.used || bal.Credits != st.credits || bal.Remaining() != st.remaining {
			t.Errorf("step %d: balance %+v, want used %d credits %d remaining %d", i, bal, st.used, st.credits, st.remaining)
		}
		stored, ok := getJob(t, s, j.Key)
		if !ok || !sameJob(stored, j) {
			t.Errorf("step %d: stored job %+v (found %t), want %+v", i, stored, ok, j)
		}
	}
	wantAccount(t, s, core.Account{Key: alice, Credits: 0, UsedDay: "2025-03-10", Used: 3})
}

func testReserveInsufficient(t *testing.T, s core.Store) {
	q := core.Quotas{DefaultDaily: 1}
	l := core.NewLedger(s, q)
	before := core.Account{Key: alice, Credits: 1}
	putAccount(t, s, before)
	_, _, err := l.Reserve(t.Context(), newJob("k1", alice, 3), day1)
	wantCode(t, "reserve", err, core.CodeQuotaExceeded)
	if e := core.AsError(err); !e.ResetAt.Equal(q.NextReset(day1)) {
		t.Errorf("ResetAt = %v, want %v", e.ResetAt, q.NextReset(day1))
	}
	wantAccount(t, s, before)
	if _, ok := getJob(t, s, "k1"); ok {
		t.Error("a refused reservation stored its job")
	}
	wantNoJobs(t, s, alice)
}

func wantNoJobs(t *testing.T, s core.Store, k core.AccountKey) {
	t.Helper()
	if p, err := s.PendingJobs(t.Context()); err != nil || len(p) != 0 {
		t.Errorf("PendingJobs = %v, %v; want none", keys(p), err)
	}
	if r, err := s.RecentJobs(t.Context(), k, 10); err != nil || len(r) != 0 {
		t.Errorf("RecentJobs = %v, %v; want none", keys(r), err)
	}
}

func testReserveBanned(t *testing.T, s core.Store) {
	l := core.NewLedger(s, core.Quotas{DefaultDaily: 5})
	before := core.Account{Key: alice, Credits: 10, Banned: true}
	putAccount(t, s, before)
	_, _, err := l.Reserve(t.Context(), newJob("k1", alice, 1), day1)
	wantCode(t, "reserve", err, core.CodeBanned)
	wantAccount(t, s, before)
	wantNoJobs(t, s, alice)
}

func testReserveDuplicate(t *testing.T, s core.Store) {
	l := core.NewLedger(s, core.Quotas{})
	putAccount(t, s, core.Account{Key: alice, Credits: 10})
	mustReserve(t, l, newJob("k1", alice, 2), day1)
	_, _, err := l.Reserve(t.Context(), newJob("k1", alice, 2), day1)
	wantCode(t, "second reserve", err, core.CodeDuplicate)
	if err := l.Commit(t.Context(), "k1", day1); err != nil {
		t.Fatal(err)
	}
	_, _, err = l.Reserve(t.Context(), newJob("k1", alice, 2), day1.Add(time.Minute))
	wantCode(t, "reserve after commit", err, core.CodeDuplicate)
	wantAccount(t, s, core.Account{Key: alice, Credits: 8, UsedDay: "2025-03-10"})
	if r, err := s.RecentJobs(t.Context(), alice, 10); err != nil || len(r) != 1 || r[0].State != core.JobCommitted {
		t.Errorf("RecentJobs = %+v, %v; want the one committed job", r, err)
	}
}

func testCommitIdempotent(t *testing.T, s core.Store) {
	l := core.NewLedger(s, core.Quotas{DefaultDaily: 2})
	mustReserve(t, l, newJob("k1", alice, 1), day1)
	after := getAccount(t, s, alice)
	first, second := day1.Add(time.Minute), day1.Add(2*time.Minute)
	for _, now := range []time.Time{first, second} {
		if err := l.Commit(t.Context(), "k1", now); err != nil {
			t.Fatalf("commit at %v: %v", now, err)
		}
	}
	j, _ := getJob(t, s, "k1")
	if j.State != core.JobCommitted || j.Outcome != "" || !j.Finished.Equal(first) {
		t.Errorf("job = state %q outcome %q finished %v; want committed at %v", j.State, j.Outcome, j.Finished, first)
	}
	wantAccount(t, s, after)
	if p, _ := s.PendingJobs(t.Context()); len(p) != 0 {
		t.Errorf("PendingJobs = %v after commit", keys(p))
	}
}

func testRefundIdempotent(t *testing.T, s core.Store) {
	l := core.NewLedger(s, core.Quotas{DefaultDaily: 2})
	putAccount(t, s, core.Account{Key: alice, Credits: 4})
	mustReserve(t, l, newJob("k1", alice, 3), day1)
	first := day1.Add(time.Minute)
	if err := l.Refund(t.Context(), "k1", core.CodeTimeout, first); err != nil {
		t.Fatal(err)
	}
	if err := l.Refund(t.Context(), "k1", core.CodeRefused, day1.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	j, _ := getJob(t, s, "k1")
	if j.State != core.JobRefunded || j.Outcome != core.CodeTimeout || !j.Finished.Equal(first) {
		t.Errorf("job = state %q outcome %q finished %v; want refunded (timeout) at %v", j.State, j.Outcome, j.Finished, first)
	}
	wantAccount(t, s, core.Account{Key: alice, Credits: 4, UsedDay: "2025-03-10", Used: 0})
}

func testConflicts(t *testing.T, s core.Store) {
	tests := []struct {
		name   string
		first  func(l *core.Ledger, key string) error
		second func(l *core.Ledger, key string) error
		state  core.JobState
	}{
		{"refund after commit",
			func(l *core.Ledger, key string) error { return l.Commit(t.Context(), key, day1) },
			func(l *core.Ledger, key string) error { return l.Refund(t.Context(), key, core.CodeTimeout, day1) },
			core.JobCommitted},
		{"commit after refund",
			func(l *core.Ledger, key string) error { return l.Refund(t.Context(), key, core.CodeTimeout, day1) },
			func(l *core.Ledger, key string) error { return l.Commit(t.Context(), key, day1) },
			core.JobRefunded},
	}
	l := core.NewLedger(s, core.Quotas{})
	putAccount(t, s, core.Account{Key: alice, Credits: 10})
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := fmt.Sprint("k", i)
			mustReserve(t, l, newJob(key, alice, 1), day1)
			if err := tc.first(l, key); err != nil {
				t.Fatal(err)
			}
			before := getAccount(t, s, alice)
			wantCode(t, tc.name, tc.second(l, key), core.CodeConflict)
			if j, _ := getJob(t, s, key); j.State != tc.state {
				t.Errorf("state = %q, want %q", j.State, tc.state)
			}
			wantAccount(t, s, before)
		})
	}
	t.Run("unknown job", func(t *testing.T) {
		wantCode(t, "commit", l.Commit(t.Context(), "nope", day1), core.CodeNotFound)
		wantCode(t, "refund", l.Refund(t.Context(), "nope", core.CodeTimeout, day1), core.CodeNotFound)
	})
}

func testRefundReturnsUnits(t *testing.T, s core.Store) {
	day2 := day1.Add(24 * time.Hour)
	tests := []struct {
		name     string
		refundAt time.Time
		// spend before the refund on the refund's day (day 2 only)
		spendOnDay2 int
		want        core.Account
		remaining   int
	}{
		{name: "same day", refundAt: day1.Add(time.Hour),
			want: core.Account{Credits: 3, UsedDay: "2025-03-10", Used: 0}, remaining: 5},
		{name: "next day", refundAt: day2, spendOnDay2: 1,
			// the daily part was day 1's and is gone; day 2's usage stays
			want: core.Account{Credits: 3, UsedDay: "2025-03-11", Used: 1}, remaining: 4},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := core.AccountKey{Scope: "s", User: fmt.Sprint("telegram:", i)}
			l := core.NewLedger(s, core.Quotas{DefaultDaily: 2})
			putAccount(t, s, core.Account{Key: k, Credits: 3})
			j, _ := mustReserve(t, l, newJob(fmt.Sprint("k", i), k, 4), day1)
			if j.FromDaily != 2 || j.FromCredits != 2 {
				t.Fatalf("reserved %d daily + %d credits, want 2 + 2", j.FromDaily, j.FromCredits)
			}
			if tc.spendOnDay2 > 0 {
				mustReserve(t, l, newJob(fmt.Sprint("k", i, "-2"), k, tc.spendOnDay2), tc.refundAt)
			}
			if err := l.Refund(t.Context(), j.Key, core.CodeUpstreamFailed, tc.refundAt); err != nil {
				t.Fatal(err)
			}
			tc.want.Key = k
			wantAccount(t, s, tc.want)
			bal, err := l.Balance(t.Context(), k, tc.refundAt)
			if err != nil {
				t.Fatal(err)
			}
			if bal.Remaining() != tc.remaining {
				t.Errorf("remaining = %d, want %d", bal.Remaining(), tc.remaining)
			}
		})
	}
}

func testRollback(t *testing.T, s core.Store) {
	before := core.Account{Key: alice, Credits: 7}
	putAccount(t, s, before)
	errBoom := errors.New("boom")
	err := s.Update(t.Context(), func(tx core.Tx) error {
		a, err := tx.Account(alice)
		if err != nil {
			return err
		}
		a.Credits, a.Banned = 1000, true
		if err := tx.PutAccount(a); err != nil {
			return err
		}
		if err := tx.PutAccount(core.Account{Key: bob, Credits: 5}); err != nil {
			return err
		}
		if err := tx.PutScope(core.ScopeSettings{Scope: alice.Scope, Daily: ptr(9)}); err != nil {
			return err
		}
		j := newJob("k1", alice, 1)
		j.State, j.Created = core.JobPending, day1
		if err := tx.PutJob(j); err != nil {
			return err
		}
		if err := tx.AppendAudit(core.AuditEntry{Time: day1, Scope: alice.Scope, Actor: "discord:9", Action: "grant"}); err != nil {
			return err
		}
		return fmt.Errorf("late failure: %w", errBoom)
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Update = %v, want fn's error", err)
	}
	wantAccount(t, s, before)
	wantAccount(t, s, core.Account{Key: bob})
	err = s.View(t.Context(), func(tx core.Tx) error {
		if sc, err := tx.Scope(alice.Scope); err != nil || sc.Daily != nil {
			t.Errorf("scope = %+v, %v; want no override", sc, err)
		}
		if _, ok, err := tx.Job("k1"); err != nil || ok {
			t.Errorf("job k1 found %t, %v; want absent", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantNoJobs(t, s, alice)
	if a, err := s.Audit(t.Context(), "", 10); err != nil || len(a) != 0 {
		t.Errorf("Audit = %+v, %v; want none", a, err)
	}
}

func testReadOwnWrites(t *testing.T, s core.Store) {
	err := s.Update(t.Context(), func(tx core.Tx) error {
		a := core.Account{Key: alice, Credits: 3, Daily: ptr(0)}
		if err := tx.PutAccount(a); err != nil {
			return err
		}
		if got, err := tx.Account(alice); err != nil || !reflect.DeepEqual(got, a) {
			t.Errorf("Account = %s, %v; want %s", fmtAccount(got), err, fmtAccount(a))
		}
		sc := core.ScopeSettings{Scope: alice.Scope, Daily: ptr(4)}
		if err := tx.PutScope(sc); err != nil {
			return err
		}
		if got, err := tx.Scope(alice.Scope); err != nil || !reflect.DeepEqual(got, sc) {
			t.Errorf("Scope = %+v, %v; want %+v", got, err, sc)
		}
		j := newJob("k1", alice, 1)
		j.State, j.Created = core.JobPending, day1
		if err := tx.PutJob(j); err != nil {
			return err
		}
		if got, ok, err := tx.Job("k1"); err != nil || !ok || !sameJob(got, j) {
			t.Errorf("Job = %+v, %t, %v; want %+v", got, ok, err, j)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testViewReadOnly(t *testing.T, s core.Store) {
	j := newJob("k1", alice, 1)
	j.State, j.Created = core.JobPending, day1
	writes := []struct {
		name string
		fn   func(tx core.Tx) error
	}{
		{"PutAccount", func(tx core.Tx) error { return tx.PutAccount(core.Account{Key: alice, Credits: 5}) }},
		{"PutScope", func(tx core.Tx) error { return tx.PutScope(core.ScopeSettings{Scope: alice.Scope, Daily: ptr(1)}) }},
		{"PutJob", func(tx core.Tx) error { return tx.PutJob(j) }},
		{"AppendAudit", func(tx core.Tx) error { return tx.AppendAudit(core.AuditEntry{Time: day1, Scope: "s", Action: "ban"}) }},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			var inner error
			err := s.View(t.Context(), func(tx core.Tx) error {
				inner = w.fn(tx)
				return inner
			})
			if inner == nil || err == nil {
				t.Errorf("write in View: %v, View returned %v; want an error", inner, err)
			}
			if inner != nil && !errors.Is(inner, core.ErrTxReadOnly) {
				t.Logf("write in View failed with %v (core.ErrTxReadOnly is preferred)", inner)
			}
		})
	}
	wantAccount(t, s, core.Account{Key: alice})
	wantNoJobs(t, s, alice)
	if a, err := s.Audit(t.Context(), "", 10); err != nil || len(a) != 0 {
		t.Errorf("Audit = %+v, %v; want none", a, err)
	}
}

func testCancelledContext(t *testing.T, s core.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ran := false
	err := s.Update(ctx, func(tx core.Tx) error {
		ran = true
		return tx.PutAccount(core.Account{Key: alice, Credits: 5})
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Update with a cancelled context = %v, want context.Canceled", err)
	}
	if ran {
		t.Error("fn ran despite the cancelled context")
	}
	wantAccount(t, s, core.Account{Key: alice})
}

func testPendingJobs(t *testing.T, s core.Store) {
	l := core.NewLedger(s, core.Quotas{DefaultDaily: 100})
	for i := range 6 {
		k := []core.AccountKey{alice, bob, carol}[i%3]
		mustReserve(t, l, newJob(fmt.Sprint("k", i), k, 1), day1.Add(time.Duration(i)*time.Minute))
	}
	for _, key := range []string{"k0", "k3"} {
		if err := l.Commit(t.Context(), key, day1); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Refund(t.Context(), "k4", core.CodeTimeout, day1); err != nil {
		t.Fatal(err)
	}
	p, err := s.PendingJobs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := keys(p)
	slices.Sort(got)
	if want := []string{"k1", "k2", "k5"}; !slices.Equal(got, want) {
		t.Errorf("PendingJobs = %v, want %v", got, want)
	}
	for _, j := range p {
		if j.State != core.JobPending || j.Units != 1 || j.Account == (core.AccountKey{}) {
			t.Errorf("pending job %+v is not complete", j)
		}
	}
}

// testDeliveringAndStatus: the marks recovery relies on are kept on pending
// jobs, reach PendingJobs, and never touch a settled job.
func testDeliveringAndStatus(t *testing.T, s core.Store) {
	l := core.NewLedger(s, core.Quotas{DefaultDaily: 100})
	mustReserve(t, l, newJob("live", alice, 1), day1)
	mustReserve(t, l, newJob("done", alice, 1), day1)
	if err := l.Commit(t.Context(), "done", day1); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"live", "done", "missing"} {
		if err := l.NoteStatuses(t.Context(), map[string]string{key: "42:7"}); err != nil {
			t.Fatalf("NoteStatuses(%s): %v", key, err)
		}
		if err := l.Delivering(t.Context(), key, ""); err != nil {
			t.Fatalf("Delivering(%s): %v", key, err)
		}
	}
	p, err := s.PendingJobs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 1 || p[0].Key != "live" || !p[0].Delivering || p[0].Status != "42:7" {
		t.Fatalf("PendingJobs = %+v, want live delivering with status 42:7", p)
	}
	if j, _ := getJob(t, s, "done"); j.Delivering || j.Status != "" || j.State != core.JobCommitted {
		t.Errorf("a committed job was changed: %+v", j)
	}
	if _, ok := getJob(t, s, "missing"); ok {
		t.Error("NoteStatus created a job")
	}
	// The marks leave the units alone.
	if _, err := Invariant(t.Context(), s, l, alice, 100, 0, day1); err != nil {
		t.Error(err)
	}
}

// testOwedNotices: a refund by recovery owes its user a notice until
// Notified, and the index lists exactly those jobs, oldest first.
func testOwedNotices(t *testing.T, s core.Store) {
	l := core.NewLedger(s, core.Quotas{DefaultDaily: 100})
	for i := range 4 {
		mustReserve(t, l, newJob(fmt.Sprint("n", i), alice, 1), day1.Add(time.Duration(i)*time.Minute))
	}
	for _, key := range []string{"n2", "n0"} {
		if err := l.RefundOwingNotice(t.Context(), key, core.CodeInterrupted, day1); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Refund(t.Context(), "n1", core.CodeTimeout, day1); err != nil {
		t.Fatal(err)
	}
	owed := func() []string {
		t.Helper()
		jobs, err := s.OwedNotices(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs {
			if j.State != core.JobRefunded || !j.NoticeOwed {
				t.Errorf("owed job %+v", j)
			}
		}
		return keys(jobs)
	}
	if got := owed(); !slices.Equal(got, []string{"n0", "n2"}) {
		t.Fatalf("OwedNotices = %v, want [n0 n2]", got)
	}
	for range 2 { // the second time is a no-op
		if err := l.Notified(t.Context(), "n0"); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Notified(t.Context(), "missing"); err != nil {
		t.Fatal(err)
	}
	if got := owed(); !slices.Equal(got, []string{"n2"}) {
		t.Fatalf("after Notified: %v, want [n2]", got)
	}
	if _, err := Invariant(t.Context(), s, l, alice, 100, 0, day1); err != nil {
		t.Error(err)
	}
}

// testSettings: a setting is made once and then kept, and a rolled-back
// transaction leaves none.
func testSettings(t *testing.T, s core.Store) {
	l := core.NewLedger(s, core.Quotas{DefaultDaily: 1})
	calls := 0
	gen := func() (string, error) { calls++; return fmt.Sprint("secret-", calls), nil }
	for range 2 {
		v, err := l.Setting(t.Context(), "user_id_secret", gen)
		if err != nil || v != "secret-1" {
			t.Fatalf("Setting = %q, %v; want the first value kept", v, err)
		}
	}
	err := s.Update(t.Context(), func(tx core.Tx) error {
		if err := tx.PutSetting("rolled", "back"); err != nil {
			return err
		}
		return errors.New("abort")
	})
	if err == nil {
		t.Fatal("the failing Update succeeded")
	}
	_ = s.View(t.Context(), func(tx core.Tx) error {
		if _, ok, _ := tx.Setting("rolled"); ok {
			t.Error("a rolled-back setting was kept")
		}
		if err := tx.PutSetting("x", "y"); !errors.Is(err, core.ErrTxReadOnly) {
			t.Errorf("PutSetting in View: %v", err)
		}
		return nil
	})
}

func testRecentJobs(t *testing.T, s core.Store) {
	l := core.NewLedger(s, core.Quotas{DefaultDaily: 100})
	accounts := []core.AccountKey{alice, bob, carol, alice, alice, bob, alice}
	for i, k := range accounts {
		mustReserve(t, l, newJob(fmt.Sprint("k", i), k, 1), day1.Add(time.Duration(i)*time.Minute))
	}
	// A state change must update the job in place, not add a history entry.
	if err := l.Commit(t.Context(), "k3", day1.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		k     core.AccountKey
		limit int
		want  []string
	}{
		{"all of alice", alice, 10, []string{"k6", "k4", "k3", "k0"}},
		{"limited", alice, 2, []string{"k6", "k4"}},
		{"user prefix", bob, 10, []string{"k5", "k1"}},
		{"scope prefix", carol, 10, []string{"k2"}},
		{"no jobs", core.AccountKey{Scope: "discord:g1", User: "discord:2"}, 10, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			jobs, err := s.RecentJobs(t.Context(), tc.k, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if got := keys(jobs); !slices.Equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("RecentJobs = %v, want %v", got, tc.want)
			}
			for _, j := range jobs {
				if j.Account != tc.k {
					t.Errorf("job %s belongs to %s", j.Key, j.Account)
				}
				if j.Key == "k3" && j.State != core.JobCommitted {
					t.Errorf("k3 state = %q, want committed", j.State)
				}
			}
		})
	}
}

func testAudit(t *testing.T, s core.Store) {
	scopes := []string{"g1", "g10", "g1", "", "g1", "g10"}
	entry := func(i int) core.AuditEntry {
		return core.AuditEntry{Time: day1.Add(time.Duration(i) * time.Minute), Scope: scopes[i],
			Actor: "discord:9", Role: core.RoleModerator, Action: "grant", Note: fmt.Sprint("e", i)}
	}
	// Entries 2 and 3 share one transaction.
	for _, batch := range [][]int{{0}, {1}, {2, 3}, {4}, {5}} {
		err := s.Update(t.Context(), func(tx core.Tx) error {
			for _, i := range batch {
				if err := tx.AppendAudit(entry(i)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		scope string
		limit int
		want  []string
	}{
		{"one scope", "g1", 10, []string{"e4", "e2", "e0"}},
		{"scope prefix", "g10", 10, []string{"e5", "e1"}},
		{"limited", "g1", 2, []string{"e4", "e2"}},
		{"all scopes", "", 10, []string{"e5", "e4", "e3", "e2", "e1", "e0"}},
		{"all scopes limited", "", 3, []string{"e5", "e4", "e3"}},
		{"unknown scope", "g2", 10, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Audit(t.Context(), tc.scope, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			var notes []string
			for _, e := range got {
				notes = append(notes, e.Note)
			}
			if !slices.Equal(notes, tc.want) {
				t.Errorf("Audit(%q, %d) = %v, want %v", tc.scope, tc.limit, notes, tc.want)
			}
		})
	}
}

func testRoundTripAccounts(t *testing.T, s core.Store) {
	tests := []struct {
		name string
		a    core.Account
	}{
		{"daily nil", core.Account{Key: core.AccountKey{Scope: "s", User: "telegram:1"}, Daily: nil, Credits: 3}},
		{"daily zero", core.Account{Key: core.AccountKey{Scope: "s", User: "telegram:2"}, Daily: ptr(0)}},
		{"every field", core.Account{Key: core.AccountKey{Scope: "telegram:-100123", User: "telegram:3"},
			Daily: ptr(7), Credits: 42, UsedDay: "2025-03-10", Used: 5, Banned: true,
			Prefs: core.Prefs{Model: "flux", Aspect: "16:9", Lang: core.TraditionalChinese}}},
		{"negative credits", core.Account{Key: core.AccountKey{Scope: "s", User: "telegram:4"}, Credits: -2}},
		{"unicode key", core.Account{Key: core.AccountKey{Scope: "私聊 scope", User: "discord:é/ü"}, Credits: 1}},
	}
	for _, tc := range tests {
		putAccount(t, s, tc.a)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { wantAccount(t, s, tc.a) })
	}
	t.Run("missing", func(t *testing.T) {
		k := core.AccountKey{Scope: "s", User: "telegram:404"}
		wantAccount(t, s, core.Account{Key: k})
	})
}

func testRoundTripScopes(t *testing.T, s core.Store) {
	tests := []struct {
		name string
		sc   core.ScopeSettings
	}{
		{"daily nil", core.ScopeSettings{Scope: "s1"}},
		{"daily zero", core.ScopeSettings{Scope: "s2", Daily: ptr(0)}},
		{"daily set", core.ScopeSettings{Scope: "s3", Daily: ptr(7)}},
	}
	err := s.Update(t.Context(), func(tx core.Tx) error {
		for _, tc := range tests {
			if err := tx.PutScope(tc.sc); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	tests = append(tests, struct {
		name string
		sc   core.ScopeSettings
	}{"missing", core.ScopeSettings{Scope: "s4"}})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got core.ScopeSettings
			err := s.View(t.Context(), func(tx core.Tx) error {
				var err error
				got, err = tx.Scope(tc.sc.Scope)
				return err
			})
			if err != nil || !reflect.DeepEqual(got, tc.sc) {
				t.Errorf("Scope = %+v (daily %v), %v; want %+v", got, got.Daily, err, tc.sc)
			}
		})
	}
}

func testRoundTripJob(t *testing.T, s core.Store) {
	santiago := time.FixedZone("-03", -3*3600)
	j := core.Job{
		Key:     "telegram:update:123456",
		Account: alice,
		User:    core.User{Platform: core.PlatformDiscord, ID: "1", Name: "Ålice <b>@everyone</b>"},
		Model:   "flux-schnell", Prompt: "一只猫 *bold* _x_ \"quoted\"\nsecond line",
		Options: core.Options{Negative: "dogs, text 人", Aspect: "16:9"},
		Units:   3, Day: "2025-03-10", FromDaily: 1, FromCredits: 2,
		State: core.JobRefunded, Outcome: core.CodeLostInRelay,
		ReplyTo: `{"chat":-100123,"msg":77}`, Lang: core.Chinese,
		Status: "-100123:78", Delivering: true, NoticeOwed: true,
		Task: "1712345678901234", Buttons: []core.TaskButton{{CustomID: "MJ::JOB::upsample::2::abc", Label: "U2"}, {CustomID: "MJ::JOB::reroll::0::abc", Emoji: "🔄"}},
		Owner: "imaginebot-host-1 人", CancelledBy: "discord:1700000000000000042", Lease: time.Date(2025, 3, 10, 9, 6, 0, 555555555, santiago),
		Created:  time.Date(2025, 3, 10, 9, 0, 0, 123456789, santiago),
		Finished: time.Date(2025, 3, 10, 9, 4, 30, 987654321, time.UTC),
	}
	requireAllSet(t, j)
	err := s.Update(t.Context(), func(tx core.Tx) error { return tx.PutJob(j) })
	if err != nil {
		t.Fatal(err)
	}
	got, ok := getJob(t, s, j.Key)
	if !ok || !sameJob(got, j) {
		t.Errorf("Job = %+v (found %t), want %+v", got, ok, j)
	}
	if recent, err := s.RecentJobs(t.Context(), alice, 1); err != nil || len(recent) != 1 || !sameJob(recent[0], j) {
		t.Errorf("RecentJobs = %+v, %v; want the job", recent, err)
	}
}

func testRoundTripAudit(t *testing.T, s core.Store) {
	for _, role := range []core.Role{core.RoleUser, core.RoleModerator, core.RoleOwner} {
		t.Run(role.String(), func(t *testing.T) {
			e := core.AuditEntry{
				Time: time.Date(2025, 3, 10, 9, 0, 0, 5, time.UTC), Scope: "g-" + role.String(),
				Actor: "discord:9", ActorName: "Mod <@everyone>", Role: role, Action: "set-daily",
				Target: "discord:1", Before: "daily=5", After: "daily=0", Note: "spam 刷屏",
			}
			if role != core.RoleUser {
				requireAllSet(t, e)
			}
			if err := s.Update(t.Context(), func(tx core.Tx) error { return tx.AppendAudit(e) }); err != nil {
				t.Fatal(err)
			}
			got, err := s.Audit(t.Context(), e.Scope, 10)
			if err != nil || len(got) != 1 {
				t.Fatalf("Audit = %+v, %v; want one entry", got, err)
			}
			g := got[0]
			if !g.Time.Equal(e.Time) {
				t.Errorf("Time = %v, want %v", g.Time, e.Time)
			}
			g.Time = e.Time
			if !reflect.DeepEqual(g, e) {
				t.Errorf("entry = %+v, want %+v", g, e)
			}
		})
	}
}

// requireAllSet fails when a field of v, or of a struct inside it, is zero,
// so a field added to a core type fails the round-trip tests until the
// fixture (and the stores) cover it.
func requireAllSet(t *testing.T, v any) {
	t.Helper()
	var walk func(rv reflect.Value, path string)
	walk = func(rv reflect.Value, path string) {
		for i := range rv.NumField() {
			f, name := rv.Field(i), path+rv.Type().Field(i).Name
			if f.IsZero() {
				t.Fatalf("fixture %T leaves %s zero: set it so the round trip covers it", v, name)
			}
			if f.Kind() == reflect.Struct && f.Type() != reflect.TypeFor[time.Time]() {
				walk(f, name+".")
			}
		}
	}
	walk(reflect.ValueOf(v), "")
}

// sameJob compares jobs with time.Time.Equal for the times: stores need not
// keep a time's location or monotonic reading, only its instant.
func sameJob(a, b core.Job) bool {
	if !a.Created.Equal(b.Created) || !a.Finished.Equal(b.Finished) || !a.Lease.Equal(b.Lease) {
		return false
	}
	a.Created, a.Finished, a.Lease = b.Created, b.Finished, b.Lease
	return reflect.DeepEqual(a, b)
}

func testConcurrentReserve(t *testing.T, s core.Store) {
	const goroutines, credits = 1000, 100
	l := core.NewLedger(s, core.Quotas{DefaultDaily: 0})
	putAccount(t, s, core.Account{Key: alice, Credits: credits})
	var ok, exceeded, other atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range goroutines {
		wg.Go(func() {
			<-start
			_, _, err := l.Reserve(t.Context(), newJob(fmt.Sprint("c", i), alice, 1), day1)
			switch core.ErrorCode(err) {
			case "":
				ok.Add(1)
			case core.CodeQuotaExceeded:
				exceeded.Add(1)
			default:
				other.Add(1)
				t.Errorf("reserve c%d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if ok.Load() != credits || exceeded.Load() != goroutines-credits || other.Load() != 0 {
		t.Errorf("%d reserved, %d quota exceeded, %d other; want %d, %d, 0",
			ok.Load(), exceeded.Load(), other.Load(), credits, goroutines-credits)
	}
	wantAccount(t, s, core.Account{Key: alice, Credits: 0, UsedDay: "2025-03-10"})
	if p, err := s.PendingJobs(t.Context()); err != nil || len(p) != credits {
		t.Errorf("%d pending jobs (%v), want %d", len(p), err, credits)
	}
}

// testConcurrentMixed races reservations, commits, refunds (some of the
// same job at once), grants and duplicates, then checks for every account
// that initial + granted = remaining + committed + pending.
func testConcurrentMixed(t *testing.T, s core.Store) {
	const (
		workers      = 32
		opsPerWorker = 40
		daily        = 5
		credits      = 60
	)
	q := core.Quotas{DefaultDaily: daily}
	l := core.NewLedger(s, q)
	accounts := []core.AccountKey{alice, bob, carol, {Scope: "telegram:private", User: "telegram:7"}}
	for _, k := range accounts {
		putAccount(t, s, core.Account{Key: k, Credits: credits})
	}
	var (
		granted  = make([]atomic.Int64, len(accounts))
		reserved = make([]atomic.Int64, len(accounts)) // jobs stored
		wg       sync.WaitGroup
	)
	ctx := t.Context()
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for i := range opsPerWorker {
				ai := rng.IntN(len(accounts))
				k := accounts[ai]
				if rng.IntN(10) == 0 {
					n := 1 + rng.IntN(3)
					err := s.Update(ctx, func(tx core.Tx) error {
						a, err := tx.Account(k)
						if err != nil {
							return err
						}
						a.Credits += n // derived from the Tx: safe to run again
						return tx.PutAccount(a)
					})
					if err != nil {
						t.Errorf("grant: %v", err)
						continue
					}
					granted[ai].Add(int64(n))
					continue
				}
				key := fmt.Sprintf("w%d-%d", w, i)
				_, _, err := l.Reserve(ctx, newJob(key, k, 1+rng.IntN(3)), day1)
				switch core.ErrorCode(err) {
				case "":
					reserved[ai].Add(1)
				case core.CodeQuotaExceeded:
					continue
				default:
					t.Errorf("reserve %s: %v", key, err)
					continue
				}
				if _, _, err := l.Reserve(ctx, newJob(key, k, 1), day1); core.ErrorCode(err) != core.CodeDuplicate {
					t.Errorf("duplicate reserve %s: %v", key, err)
				}
				switch rng.IntN(4) {
				case 0:
					if err := l.Commit(ctx, key, day1); err != nil {
						t.Errorf("commit %s: %v", key, err)
					}
				case 1:
					if err := l.Refund(ctx, key, core.CodeUpstreamFailed, day1); err != nil {
						t.Errorf("refund %s: %v", key, err)
					}
				case 2:
					// Commit and refund race: exactly one wins, the other conflicts.
					var cErr, rErr error
					var race sync.WaitGroup
					race.Go(func() { cErr = l.Commit(ctx, key, day1) })
					race.Go(func() { rErr = l.Refund(ctx, key, core.CodeTimeout, day1) })
					race.Wait()
					cc, rc := core.ErrorCode(cErr), core.ErrorCode(rErr)
					if !(cc == "" && rc == core.CodeConflict) && !(cc == core.CodeConflict && rc == "") {
						t.Errorf("commit/refund race on %s: %v / %v", key, cErr, rErr)
					}
				default:
					// left pending
				}
			}
		})
	}
	wg.Wait()

	pending, err := s.PendingJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pendingByIndex := map[core.AccountKey]int{}
	for _, j := range pending {
		pendingByIndex[j.Account] += j.Units
	}
	for ai, k := range accounts {
		tally, err := Invariant(ctx, s, l, k, daily+credits, int(granted[ai].Load()), day1)
		if err != nil {
			t.Error(err)
		}
		if int64(tally.Jobs) != reserved[ai].Load() {
			t.Errorf("%s: %d jobs stored, %d reserved", k, tally.Jobs, reserved[ai].Load())
		}
		if tally.Pending != pendingByIndex[k] {
			t.Errorf("%s: %d units pending in its jobs, %d in PendingJobs", k, tally.Pending, pendingByIndex[k])
		}
	}
}

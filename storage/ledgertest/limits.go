package ledgertest

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/imaginebot/imaginebot/core"
)

// The contract of Tx.Limit, Tx.PutLimit and Tx.Claim, and of a job's Owner
// and Lease: what instances sharing one ledger rely on to enforce one
// per-user limit between them, to act once on an event, and to tell a job
// whose process died from one still running.

var errAbort = errors.New("ledgertest: fn fails after writing")

func getLimit(t *testing.T, s core.Store, user string) core.UserLimit {
	t.Helper()
	var l core.UserLimit
	err := s.View(t.Context(), func(tx core.Tx) error {
		var err error
		l, err = tx.Limit(user)
		return err
	})
	if err != nil {
		t.Fatalf("limit of %s: %v", user, err)
	}
	return l
}

func putLimit(t *testing.T, s core.Store, l core.UserLimit) {
	t.Helper()
	if err := s.Update(t.Context(), func(tx core.Tx) error { return tx.PutLimit(l) }); err != nil {
		t.Fatalf("put limit of %s: %v", l.User, err)
	}
}

// sameLimit compares limits with time.Time.Equal for At, as sameJob does.
func sameLimit(a, b core.UserLimit) bool {
	if !a.At.Equal(b.At) {
		return false
	}
	a.At = b.At
	return reflect.DeepEqual(a, b)
}

func wantLimit(t *testing.T, s core.Store, want core.UserLimit) {
	t.Helper()
	if got := getLimit(t, s, want.User); !sameLimit(got, want) {
		t.Errorf("Limit(%s) = %+v, want %+v", want.User, got, want)
	}
}

// claim runs Claim(key) alone in an Update and returns fresh as the
// committed run saw it (fn may run more than once).
func claim(t *testing.T, s core.Store, key string, at time.Time) bool {
	t.Helper()
	var fresh bool
	err := s.Update(t.Context(), func(tx core.Tx) error {
		var err error
		fresh, err = tx.Claim(key, at)
		return err
	})
	if err != nil {
		t.Fatalf("claim %s: %v", key, err)
	}
	return fresh
}

// testLimitUnknown: a user never stored reads as a zero UserLimit with User
// set, in a read-only and in a read-write transaction alike, and reading it
// stores nothing.
func testLimitUnknown(t *testing.T, s core.Store) {
	putLimit(t, s, core.UserLimit{User: alice.User + "0", Tokens: 2, At: day1, InFlight: 1}) // alice's user is a prefix
	want := core.UserLimit{User: alice.User}
	txs := []struct {
		name string
		run  func(fn func(core.Tx) error) error
	}{
		{"View", func(fn func(core.Tx) error) error { return s.View(t.Context(), fn) }},
		{"Update", func(fn func(core.Tx) error) error { return s.Update(t.Context(), fn) }},
	}
	for _, tc := range txs {
		t.Run(tc.name, func(t *testing.T) {
			var got core.UserLimit
			err := tc.run(func(tx core.Tx) error {
				var err error
				got, err = tx.Limit(alice.User)
				return err
			})
			if err != nil || !sameLimit(got, want) || !got.At.IsZero() {
				t.Errorf("Limit(%s) = %+v, %v; want %+v", alice.User, got, err, want)
			}
		})
	}
	wantLimit(t, s, want)
}

// testRoundTripLimit: every field of a UserLimit survives a round trip, At
// to the nanosecond and Tokens as the float it was; a second PutLimit
// replaces the first whole.
func testRoundTripLimit(t *testing.T, s core.Store) {
	santiago := time.FixedZone("-03", -3*3600)
	every := core.UserLimit{User: "discord:1", Tokens: 1.75, At: time.Date(2025, 3, 10, 9, 0, 0, 123456789, santiago), InFlight: 3}
	requireAllSet(t, every)
	tests := []struct {
		name   string
		writes []core.UserLimit // in order, each in its own Update; the last is read back
	}{
		{"every field", []core.UserLimit{every}},
		{"tiny fraction", []core.UserLimit{{User: "telegram:2", Tokens: 0.000123456789, At: day1.Add(time.Nanosecond)}}},
		{"tokens only", []core.UserLimit{{User: "telegram:3", Tokens: 4.5}}},
		{"in flight only", []core.UserLimit{{User: "telegram:4", InFlight: 7}}},
		{"overwritten", []core.UserLimit{
			{User: "telegram:5", Tokens: 2.25, At: day1, InFlight: 2},
			{User: "telegram:5", Tokens: 0.5, At: day1.Add(time.Minute + 7), InFlight: 1},
		}},
		{"emptied", []core.UserLimit{
			{User: "telegram:6", Tokens: 3.5, At: day1, InFlight: 4},
			{User: "telegram:6"},
		}},
		{"unicode user", []core.UserLimit{{User: "discord:é/ü 人", Tokens: 1, At: day1, InFlight: 1}}},
	}
	for _, tc := range tests {
		for _, l := range tc.writes {
			putLimit(t, s, l)
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.writes[len(tc.writes)-1]
			wantLimit(t, s, want)
			if got := getLimit(t, s, want.User); want.At.IsZero() != got.At.IsZero() {
				t.Errorf("At = %v, want %v", got.At, want.At)
			}
			// The read-write path (a locking read in a shared store) reads the same.
			err := s.Update(t.Context(), func(tx core.Tx) error {
				got, err := tx.Limit(want.User)
				if err == nil && !sameLimit(got, want) {
					t.Errorf("Limit in Update = %+v, want %+v", got, want)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// testLimitRollback: the PutLimits of an Update whose fn fails are not
// kept, for a user stored before and for a new one.
func testLimitRollback(t *testing.T, s core.Store) {
	before := core.UserLimit{User: alice.User, Tokens: 2.5, At: day1, InFlight: 1}
	putLimit(t, s, before)
	err := s.Update(t.Context(), func(tx core.Tx) error {
		for _, l := range []core.UserLimit{
			{User: alice.User, Tokens: 0.25, At: day1.Add(time.Hour), InFlight: 9},
			{User: bob.User, Tokens: 1.5, At: day1, InFlight: 1},
		} {
			if err := tx.PutLimit(l); err != nil {
				return err
			}
		}
		return fmt.Errorf("late failure: %w", errAbort)
	})
	if !errors.Is(err, errAbort) {
		t.Fatalf("Update = %v, want fn's error", err)
	}
	wantLimit(t, s, before)
	wantLimit(t, s, core.UserLimit{User: bob.User})
}

// testLimitReadOwnWrites: a transaction reads the limits it wrote, a new
// user's and a stored user's, and a second write over its own first.
func testLimitReadOwnWrites(t *testing.T, s core.Store) {
	putLimit(t, s, core.UserLimit{User: bob.User, Tokens: 3, At: day1, InFlight: 2})
	writes := []core.UserLimit{
		{User: alice.User, Tokens: 1.75, At: day1.Add(time.Second), InFlight: 1}, // new user
		{User: alice.User, Tokens: 0.75, At: day1.Add(2 * time.Second), InFlight: 2},
		{User: bob.User, Tokens: 2.5, At: day1.Add(3 * time.Second), InFlight: 3}, // stored before
	}
	err := s.Update(t.Context(), func(tx core.Tx) error {
		for _, l := range writes {
			if _, err := tx.Limit(l.User); err != nil { // read first, as the ledger does
				return err
			}
			if err := tx.PutLimit(l); err != nil {
				return err
			}
			if got, err := tx.Limit(l.User); err != nil || !sameLimit(got, l) {
				t.Errorf("Limit after PutLimit = %+v, %v; want %+v", got, err, l)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantLimit(t, s, writes[1])
	wantLimit(t, s, writes[2])
}

// testClaimOnce: the first Claim of a key is fresh and every later one,
// in the same transaction or another, is not; keys are claimed apart
// (one a prefix of another, too).
func testClaimOnce(t *testing.T, s core.Store) {
	var first, second bool
	err := s.Update(t.Context(), func(tx core.Tx) error {
		var err error
		if first, err = tx.Claim("discord:interaction:1", day1); err != nil {
			return err
		}
		second, err = tx.Claim("discord:interaction:1", day1.Add(time.Second))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !first || second {
		t.Errorf("Claim twice in one Update: fresh %t then %t, want true then false", first, second)
	}
	steps := []struct {
		key  string
		want bool
	}{
		{"discord:interaction:1", false}, // claimed by the Update above
		{"discord:interaction:10", true}, // the first key is a prefix of it
		{"discord:interaction:10", false},
		{"telegram:callback:1", true},
		{"discord:interaction:1", false},
	}
	for i, st := range steps {
		if got := claim(t, s, st.key, day1.Add(time.Duration(i)*time.Minute)); got != st.want {
			t.Errorf("step %d: Claim(%s) fresh = %t, want %t", i, st.key, got, st.want)
		}
	}
}

// testClaimRollback: a Claim in an Update whose fn then fails is not kept,
// whether the claim was fresh or not, and the key is fresh again.
func testClaimRollback(t *testing.T, s core.Store) {
	claim(t, s, "kept", day1)
	for _, key := range []string{"rolled-back", "kept"} {
		var fresh bool
		err := s.Update(t.Context(), func(tx core.Tx) error {
			var err error
			if fresh, err = tx.Claim(key, day1); err != nil {
				return err
			}
			if err := tx.PutLimit(core.UserLimit{User: alice.User, InFlight: 1}); err != nil {
				return err
			}
			return errAbort
		})
		if !errors.Is(err, errAbort) {
			t.Fatalf("Update = %v, want fn's error", err)
		}
		if want := key != "kept"; fresh != want {
			t.Errorf("Claim(%s) in the failing Update: fresh %t, want %t", key, fresh, want)
		}
	}
	if !claim(t, s, "rolled-back", day1) {
		t.Error("a key claimed in a rolled-back Update was kept: the next Claim is not fresh")
	}
	if claim(t, s, "kept", day1) {
		t.Error("the rolled-back Update dropped an earlier claim")
	}
	wantLimit(t, s, core.UserLimit{User: alice.User})
}

// testLimitsViewReadOnly: PutLimit and Claim in View fail with
// core.ErrTxReadOnly and leave nothing.
func testLimitsViewReadOnly(t *testing.T, s core.Store) {
	writes := []struct {
		name string
		fn   func(tx core.Tx) error
	}{
		{"PutLimit", func(tx core.Tx) error {
			return tx.PutLimit(core.UserLimit{User: alice.User, Tokens: 1, At: day1, InFlight: 1})
		}},
		{"Claim", func(tx core.Tx) error {
			fresh, err := tx.Claim("viewed", day1)
			if fresh {
				t.Error("Claim in View reported fresh")
			}
			return err
		}},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			var inner error
			err := s.View(t.Context(), func(tx core.Tx) error {
				inner = w.fn(tx)
				return inner
			})
			if !errors.Is(inner, core.ErrTxReadOnly) || !errors.Is(err, core.ErrTxReadOnly) {
				t.Errorf("%s in View = %v, View returned %v; want core.ErrTxReadOnly", w.name, inner, err)
			}
		})
	}
	wantLimit(t, s, core.UserLimit{User: alice.User})
	if !claim(t, s, "viewed", day1) {
		t.Error("a Claim in View was kept")
	}
}

// testRoundTripLease: a job's Owner and Lease survive PutJob, read by Job
// and listed by PendingJobs (what another instance checks the lease of),
// Lease to the nanosecond; a renewal replaces them, and clearing them
// stores none.
func testRoundTripLease(t *testing.T, s core.Store) {
	santiago := time.FixedZone("-03", -3*3600)
	job := func(key, owner string, lease time.Time, state core.JobState, created time.Duration) core.Job {
		j := newJob(key, alice, 1)
		j.State, j.Created, j.Owner, j.Lease = state, day1.Add(created), owner, lease
		return j
	}
	jobs := []core.Job{
		job("leased", "imaginebot-a", time.Date(2025, 3, 10, 9, 1, 30, 987654321, santiago), core.JobPending, 0),
		job("no owner", "", time.Time{}, core.JobPending, time.Minute),
		job("owed", "imaginebot-b 人", day1.Add(time.Hour+1), core.JobRefunded, 2*time.Minute),
	}
	jobs[2].NoticeOwed = true
	err := s.Update(t.Context(), func(tx core.Tx) error {
		for _, j := range jobs {
			if err := tx.PutJob(j); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, want []core.Job) {
		t.Helper()
		for _, j := range want {
			got, ok := getJob(t, s, j.Key)
			if !ok || !sameJob(got, j) || got.Owner != j.Owner || !got.Lease.Equal(j.Lease) {
				t.Errorf("Job(%s) = owner %q lease %v (found %t), want owner %q lease %v", j.Key, got.Owner, got.Lease, ok, j.Owner, j.Lease)
			}
		}
		pending, err := s.PendingJobs(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var wantPending []string
		for _, j := range want {
			if j.State == core.JobPending {
				wantPending = append(wantPending, j.Key)
			}
		}
		if got := keys(pending); !slices.Equal(got, wantPending) {
			t.Fatalf("PendingJobs = %v, want %v", got, wantPending)
		}
		for _, got := range pending {
			i := slices.IndexFunc(want, func(j core.Job) bool { return j.Key == got.Key })
			if w := want[i]; got.Owner != w.Owner || !got.Lease.Equal(w.Lease) || !sameJob(got, w) {
				t.Errorf("PendingJobs: %s owner %q lease %v, want owner %q lease %v", got.Key, got.Owner, got.Lease, w.Owner, w.Lease)
			}
		}
		owed, err := s.OwedNotices(t.Context())
		if err != nil || len(owed) != 1 || owed[0].Owner != want[2].Owner || !owed[0].Lease.Equal(want[2].Lease) {
			t.Errorf("OwedNotices = %+v, %v; want %s with its owner and lease", owed, err, want[2].Key)
		}
	}
	t.Run("stored", func(t *testing.T) { check(t, jobs) })

	// Renewed, taken over, cleared: each job rewritten from what the Tx read.
	changes := map[string]func(j *core.Job){
		"leased":   func(j *core.Job) { j.Lease = j.Lease.Add(90*time.Second + 3) },
		"no owner": func(j *core.Job) { j.Owner, j.Lease = "imaginebot-c", day1.Add(5*time.Minute+11) },
		"owed":     func(j *core.Job) { j.Owner, j.Lease = "", time.Time{} },
	}
	want := slices.Clone(jobs)
	for i := range want {
		changes[want[i].Key](&want[i])
	}
	err = s.Update(t.Context(), func(tx core.Tx) error {
		for _, j := range jobs {
			got, ok, err := tx.Job(j.Key)
			if err != nil || !ok {
				return errors.Join(err, fmt.Errorf("job %s not found", j.Key))
			}
			changes[j.Key](&got)
			if err := tx.PutJob(got); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("rewritten", func(t *testing.T) { check(t, want) })
}

// testConcurrentClaim: goroutines claiming one key at once see exactly one
// fresh claim among the Updates that commit, also when some of them fail
// after claiming (a claim rolled back under contention goes to another).
func testConcurrentClaim(t *testing.T, s core.Store) {
	const goroutines, rounds = 16, 4
	tests := []struct {
		name string
		fail func(i int) bool // whether goroutine i's fn fails after its Claim
	}{
		{"all commit", func(int) bool { return false }},
		{"half roll back", func(i int) bool { return i%2 == 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for r := range rounds {
				key := fmt.Sprintf("%s:event:%d", tc.name, r)
				var fresh, other atomic.Int64
				var wg sync.WaitGroup
				start := make(chan struct{})
				for i := range goroutines {
					wg.Go(func() {
						<-start
						var got bool
						err := s.Update(t.Context(), func(tx core.Tx) error {
							var err error
							if got, err = tx.Claim(key, day1); err != nil {
								return err
							}
							if tc.fail(i) {
								return errAbort
							}
							return nil
						})
						switch {
						case err == nil && got:
							fresh.Add(1)
						case err == nil, tc.fail(i) && errors.Is(err, errAbort):
						default:
							other.Add(1)
							t.Errorf("claim %s by %d: %v", key, i, err)
						}
					})
				}
				close(start)
				wg.Wait()
				if fresh.Load() != 1 || other.Load() != 0 {
					t.Errorf("round %d: %d fresh claims committed (%d errors), want exactly 1", r, fresh.Load(), other.Load())
				}
				if claim(t, s, key, day1) {
					t.Errorf("round %d: the key is fresh after the race", r)
				}
			}
		})
	}
}

// testConcurrentLimit: read-modify-writes of one user's limits (new at
// first) racing from many goroutines lose none: the user's limit lock, or a
// retry, orders them.
func testConcurrentLimit(t *testing.T, s core.Store) {
	const goroutines = 16
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range goroutines {
		wg.Go(func() {
			<-start
			err := s.Update(t.Context(), func(tx core.Tx) error {
				l, err := tx.Limit(alice.User)
				if err != nil {
					return err
				}
				l.Tokens += 0.25 // derived from the Tx: safe to run again
				l.InFlight++
				l.At = day1.Add(time.Duration(i))
				return tx.PutLimit(l)
			})
			if err != nil {
				t.Errorf("update %d: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	got := getLimit(t, s, alice.User)
	if got.InFlight != goroutines || got.Tokens != goroutines*0.25 {
		t.Errorf("after %d increments: %+v, want in flight %d, tokens %v", goroutines, got, goroutines, goroutines*0.25)
	}
}

// testConcurrentUserLimits: the ledger's per-user limits hold under
// concurrent reservations, as from several instances at once: of 32
// reservations by one user, in 8 groups (so the account rows do not
// serialize them: only the user's limit record is shared), with a cap of 3
// jobs in flight and a burst of 5, exactly 3 go through; once they settle
// (one refunded through no fault of the user, which gives its rate token
// back) the counts are exact again.
func testConcurrentUserLimits(t *testing.T, s core.Store) {
	const (
		clients = 32
		maxJobs = 3
		burst   = 5
	)
	l := core.NewLedger(s, core.Quotas{DefaultDaily: 100}).Limited(core.UserLimits{Rate: rate.Every(time.Hour), Burst: burst, Jobs: maxJobs})
	k := core.AccountKey{Scope: "telegram:private", User: "telegram:77"}
	var (
		mu     sync.Mutex
		ok     []string
		codes  = map[core.Code]int{}
		starts sync.WaitGroup
		wg     sync.WaitGroup
	)
	starts.Add(1)
	for i := range clients {
		wg.Go(func() {
			starts.Wait()
			key := fmt.Sprint("limits:", i)
			in := core.AccountKey{Scope: fmt.Sprint("telegram:group:-100", i%8), User: k.User}
			_, _, err := l.Reserve(t.Context(), core.Job{Key: key, Account: in, Units: 1}, day1)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok = append(ok, key)
			} else {
				codes[core.ErrorCode(err)]++
			}
		})
	}
	starts.Done()
	wg.Wait()
	if len(ok) != maxJobs || codes[core.CodeTooManyJobs] != clients-maxJobs {
		t.Fatalf("%d reserved, refusals %v; want %d reserved and %d too many jobs", len(ok), codes, maxJobs, clients-maxJobs)
	}
	if u := getLimit(t, s, k.User); u.InFlight != maxJobs || u.Tokens != burst-maxJobs {
		t.Fatalf("limit after the reservations = %+v, want %d in flight and %d tokens", u, maxJobs, burst-maxJobs)
	}
	if err := l.Commit(t.Context(), ok[0], day1); err != nil {
		t.Fatal(err)
	}
	if err := l.Refund(t.Context(), ok[1], core.CodeRefused, day1); err != nil {
		t.Fatal(err)
	}
	if err := l.Refund(t.Context(), ok[2], core.CodeUpstreamFailed, day1); err != nil {
		t.Fatal(err)
	}
	if u := getLimit(t, s, k.User); u.InFlight != 0 || u.Tokens != burst-maxJobs+1 {
		t.Fatalf("limit after settling = %+v, want 0 in flight and %d tokens (the no-fault refund's back)", u, burst-maxJobs+1)
	}
	// Three tokens left, then the rate applies: the fourth waits an hour.
	for i := range burst - maxJobs + 1 {
		if _, _, err := l.Reserve(t.Context(), core.Job{Key: fmt.Sprint("after:", i), Account: k, Units: 1}, day1); err != nil {
			t.Fatalf("reservation %d after settling: %v", i, err)
		}
		if err := l.Commit(t.Context(), fmt.Sprint("after:", i), day1); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := l.Reserve(t.Context(), core.Job{Key: "after:last", Account: k, Units: 1}, day1)
	if e := core.AsError(err); e.Code != core.CodeRateLimited || e.RetryAfter != time.Hour {
		t.Fatalf("with the bucket empty: %v, want rate limited for 1h", err)
	}
}

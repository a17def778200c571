package ledgertest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/core"
)

// Pruner is a store that drops old finished job records.
type Pruner interface {
	core.Store
	PruneJobs(ctx context.Context, before time.Time) (int, error)
}

// RunPrune checks PruneJobs: finished jobs older than the cutoff go (more
// of them than one prune chunk), pending ones and newer ones stay; the
// events claimed before the cutoff go too (their keys are fresh again),
// those claimed since stay claimed.
func RunPrune(t *testing.T, db Pruner) {
	ctx := t.Context()
	l := core.NewLedger(db, core.Quotas{DefaultDaily: 1 << 20})
	k := core.AccountKey{Scope: "s", User: "telegram:1"}
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	cutoff := base.Add(48 * time.Hour)
	// 2,500 old jobs (more than one prune chunk): every third stays pending.
	// Written in one transaction: the test is about pruning, not reserving.
	const old = 2500
	// As many events, every fifth claimed after the cutoff (the old ones,
	// more than a chunk, interleaved in key order with those that stay),
	// and one claimed at the cutoff, which is not before it.
	eventKey := func(i int) string { return fmt.Sprintf("event-%05d", i) }
	eventOld := func(i int) bool { return i%5 != 0 }
	const edgeEvent = "event-at-cutoff"
	err := db.Update(ctx, func(tx core.Tx) error {
		for i := range old {
			j := core.Job{Key: fmt.Sprintf("old-%05d", i), Account: k, Units: 1,
				State:   []core.JobState{core.JobPending, core.JobCommitted, core.JobRefunded}[i%3],
				Created: base.Add(time.Duration(i) * time.Second)}
			if err := tx.PutJob(j); err != nil {
				return err
			}
			at := base.Add(time.Duration(i) * time.Second)
			if !eventOld(i) {
				at = cutoff.Add(time.Duration(i) * time.Nanosecond)
			}
			if fresh, err := tx.Claim(eventKey(i), at); err != nil || !fresh {
				return errors.Join(err, fmt.Errorf("claim %s: not fresh", eventKey(i)))
			}
		}
		_, err := tx.Claim(edgeEvent, cutoff)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		key := fmt.Sprint("new-", i)
		if _, _, err := l.Reserve(ctx, core.Job{Key: key, Account: k, Units: 1}, cutoff.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := l.Commit(ctx, key, cutoff); err != nil {
			t.Fatal(err)
		}
	}
	n, err := db.PruneJobs(ctx, cutoff)
	if err != nil {
		t.Fatal(err)
	}
	wantPending := (old + 2) / 3
	if want := old - wantPending; n != want {
		t.Errorf("pruned %d jobs, want %d", n, want)
	}
	recent, err := db.RecentJobs(ctx, k, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(recent) != wantPending+5 {
		t.Errorf("%d jobs left in the history, want %d", len(recent), wantPending+5)
	}
	for _, j := range recent {
		if j.State != core.JobPending && j.Created.Before(cutoff) {
			t.Errorf("job %s (%s, %v) survived the prune", j.Key, j.State, j.Created)
		}
	}
	pending, err := db.PendingJobs(ctx)
	if err != nil || len(pending) != wantPending {
		t.Errorf("%d pending after prune (%v), want %d", len(pending), err, wantPending)
	}
	// Every event claimed again, in one transaction that then fails: the
	// check itself claims nothing.
	var wrong []string
	freshOld := 0
	errCheck := errors.New("check only")
	err = db.Update(ctx, func(tx core.Tx) error {
		wrong, freshOld = nil, 0
		for i := range old {
			fresh, err := tx.Claim(eventKey(i), cutoff)
			if err != nil {
				return err
			}
			if fresh != eventOld(i) {
				wrong = append(wrong, fmt.Sprintf("%s fresh %t", eventKey(i), fresh))
			}
			if fresh {
				freshOld++
			}
		}
		if fresh, err := tx.Claim(edgeEvent, cutoff); err != nil || fresh {
			return errors.Join(err, fmt.Errorf("%s, claimed at the cutoff, was pruned", edgeEvent))
		}
		return errCheck
	})
	if !errors.Is(err, errCheck) {
		t.Fatal(err)
	}
	if len(wrong) > 0 {
		t.Errorf("after the prune, %d events are wrong (an old one still claimed, or a new one pruned): %v", len(wrong), wrong[:min(len(wrong), 5)])
	}
	if want := old * 4 / 5; freshOld != want {
		t.Errorf("%d events pruned, want %d", freshOld, want)
	}
	if n, err := db.PruneJobs(ctx, cutoff); err != nil || n != 0 {
		t.Errorf("second prune = %d, %v; want 0", n, err)
	}
}

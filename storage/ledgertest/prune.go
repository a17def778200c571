package ledgertest

import (
	"context"
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
// of them than one prune chunk), pending ones and newer ones stay.
func RunPrune(t *testing.T, db Pruner) {
	ctx := t.Context()
	l := core.NewLedger(db, core.Quotas{DefaultDaily: 1 << 20})
	k := core.AccountKey{Scope: "s", User: "telegram:1"}
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	cutoff := base.Add(48 * time.Hour)
	// 2,500 old jobs (more than one prune chunk): every third stays pending.
	// Written in one transaction: the test is about pruning, not reserving.
	const old = 2500
	err := db.Update(ctx, func(tx core.Tx) error {
		for i := range old {
			j := core.Job{Key: fmt.Sprintf("old-%05d", i), Account: k, Units: 1,
				State:   []core.JobState{core.JobPending, core.JobCommitted, core.JobRefunded}[i%3],
				Created: base.Add(time.Duration(i) * time.Second)}
			if err := tx.PutJob(j); err != nil {
				return err
			}
		}
		return nil
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
	if n, err := db.PruneJobs(ctx, cutoff); err != nil || n != 0 {
		t.Errorf("second prune = %d, %v; want 0", n, err)
	}
}

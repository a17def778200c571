package ledgertest

import (
	"context"
	"fmt"
	"time"

	"github.com/imaginebot/imaginebot/core"
)

// Tally is an account's jobs summed by state.
type Tally struct {
	Jobs      int // job records of the account
	Committed int // units of committed jobs
	Pending   int // units of pending jobs
}

// Invariant checks that no unit was lost or invented in account k:
// initial + granted = remaining + committed + pending. It returns the tally
// of k's jobs, and an error saying how the sums differ when they do.
func Invariant(ctx context.Context, s core.Store, l *core.Ledger, k core.AccountKey, initial, granted int, now time.Time) (Tally, error) {
	jobs, err := s.RecentJobs(ctx, k, 1<<30)
	if err != nil {
		return Tally{}, err
	}
	t := Tally{Jobs: len(jobs)}
	for _, j := range jobs {
		switch j.State {
		case core.JobCommitted:
			t.Committed += j.Units
		case core.JobPending:
			t.Pending += j.Units
		}
	}
	bal, err := l.Balance(ctx, k, now)
	if err != nil {
		return t, err
	}
	if initial+granted != bal.Remaining()+t.Committed+t.Pending {
		return t, fmt.Errorf("%s: initial %d + granted %d != remaining %d + committed %d + pending %d",
			k, initial, granted, bal.Remaining(), t.Committed, t.Pending)
	}
	return t, nil
}

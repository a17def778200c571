package core

import (
	"context"
	"fmt"
	"time"
)

// Ledger is the quota accounting over a Store: every rule about balances,
// reservations and their states lives here, once, whatever the storage.
type Ledger struct {
	store  Store
	quotas Quotas
	limits UserLimits
}

// NewLedger returns a ledger over store, with no per-user limits.
func NewLedger(store Store, q Quotas) *Ledger { return &Ledger{store: store, quotas: q} }

// Limited returns a copy of l that enforces u in every reservation.
func (l *Ledger) Limited(u UserLimits) *Ledger {
	c := *l
	c.limits = u
	return &c
}

// Quotas returns the quota rules in use.
func (l *Ledger) Quotas() Quotas { return l.quotas }

// Balance returns an account's balance at now.
func (l *Ledger) Balance(ctx context.Context, k AccountKey, now time.Time) (Balance, error) {
	var b Balance
	err := l.store.View(ctx, func(tx Tx) error {
		a, s, err := loadAccount(tx, k)
		if err != nil {
			return err
		}
		b = l.quotas.Balance(a, s, now)
		return nil
	})
	if err != nil {
		return Balance{}, fmt.Errorf("core: balance of %s: %w", k, err)
	}
	return b, nil
}

// Reserve takes j.Units from j.Account and records j as pending, in one
// transaction, after the per-user limits (CodeRateLimited, CodeTooManyJobs)
// in the same one. A key seen before charges nothing and returns
// CodeDuplicate; a refusal takes nothing, not even a rate token.
func (l *Ledger) Reserve(ctx context.Context, j Job, now time.Time) (Job, Balance, error) {
	var (
		out Job
		bal Balance
	)
	err := l.store.Update(ctx, func(tx Tx) error {
		if old, ok, err := tx.Job(j.Key); err != nil {
			return err
		} else if ok {
			return &Error{Code: CodeDuplicate, Err: fmt.Errorf("core: job %s already %s", j.Key, old.State)}
		}
		a, s, err := loadAccount(tx, j.Account)
		if err != nil {
			return err
		}
		if a.Banned {
			return &Error{Code: CodeBanned, Err: fmt.Errorf("core: %s is banned", j.Account)}
		}
		limit, err := l.admit(tx, j.Account.User, now)
		if err != nil {
			return err
		}
		fromDaily, fromCredits, err := l.quotas.charge(&a, s, j.Units, now)
		if err != nil {
			return err
		}
		// Written only now: a refusal writes nothing (a bbolt group commit
		// would have to roll back for it).
		if limit != nil {
			if err := tx.PutLimit(*limit); err != nil {
				return err
			}
		}
		out = j
		out.Day = l.quotas.Day(now)
		out.FromDaily, out.FromCredits = fromDaily, fromCredits
		out.State = JobPending
		out.Created = now
		if err := tx.PutAccount(a); err != nil {
			return err
		}
		bal = l.quotas.Balance(a, s, now)
		return tx.PutJob(out)
	})
	if err != nil {
		return Job{}, Balance{}, wrapStore("reserve", err)
	}
	return out, bal, nil
}

// Commit marks a pending job delivered. Committing twice is a no-op; a
// refunded job cannot be committed.
func (l *Ledger) Commit(ctx context.Context, key string, now time.Time) error {
	err := l.store.Update(ctx, func(tx Tx) error {
		j, settled, err := settle(tx, key, JobCommitted)
		if err != nil || settled {
			return err
		}
		if err := l.release(tx, j, now, false); err != nil {
			return err
		}
		j.State, j.Outcome, j.Finished = JobCommitted, "", now
		return tx.PutJob(j)
	})
	return wrapStore("commit", err)
}

// admit applies the per-user limits to a new reservation of user and
// returns the limit record to store with it (nil without limits).
func (l *Ledger) admit(tx Tx, user string, now time.Time) (*UserLimit, error) {
	if !l.limits.applies() {
		return nil, nil
	}
	u, err := tx.Limit(user)
	if err != nil {
		return nil, err
	}
	if err := l.limits.admit(&u, now); err != nil {
		return nil, err
	}
	return &u, nil
}

// release ends job j's count in flight, giving its rate token back when it
// failed through no fault of its user.
func (l *Ledger) release(tx Tx, j Job, now time.Time, giveBack bool) error {
	if !l.limits.applies() {
		return nil
	}
	u, err := tx.Limit(j.Account.User)
	if err != nil {
		return err
	}
	l.limits.settle(&u, now, giveBack)
	return tx.PutLimit(u)
}

// NoteTask records the Midjourney task that made a job's picture and its
// buttons, before the picture is shown: a press may come at once.
func (l *Ledger) NoteTask(ctx context.Context, key, task string, buttons []TaskButton) error {
	err := l.store.Update(ctx, func(tx Tx) error {
		j, ok, err := tx.Job(key)
		if err != nil || !ok {
			return err
		}
		j.Task, j.Buttons = task, buttons
		return tx.PutJob(j)
	})
	return wrapStore("note task", err)
}

// Refund returns a pending job's units and records why it failed. Refunding
// twice is a no-op; a committed job cannot be refunded.
func (l *Ledger) Refund(ctx context.Context, key string, reason Code, now time.Time) error {
	return l.refund(ctx, key, reason, now, false)
}

// RefundOwingNotice refunds like Refund and records, in the same
// transaction, that the user is still to be told (crash recovery): the
// notice survives another crash until Notified.
func (l *Ledger) RefundOwingNotice(ctx context.Context, key string, reason Code, now time.Time) error {
	return l.refund(ctx, key, reason, now, true)
}

// Notified records that the user of key was told how the job ended.
func (l *Ledger) Notified(ctx context.Context, key string) error {
	err := l.store.Update(ctx, func(tx Tx) error {
		j, ok, err := tx.Job(key)
		if err != nil || !ok || !j.NoticeOwed {
			return err
		}
		j.NoticeOwed = false
		return tx.PutJob(j)
	})
	return wrapStore("notified", err)
}

func (l *Ledger) refund(ctx context.Context, key string, reason Code, now time.Time, owe bool) error {
	err := l.store.Update(ctx, func(tx Tx) error {
		j, settled, err := settle(tx, key, JobRefunded)
		if err != nil || settled {
			return err
		}
		_, err = l.refundTx(tx, j, reason, now, owe)
		return err
	})
	return wrapStore("refund", err)
}

// refundTx refunds the pending job j in tx and returns it as stored.
func (l *Ledger) refundTx(tx Tx, j Job, reason Code, now time.Time, owe bool) (Job, error) {
	a, err := tx.Account(j.Account)
	if err != nil {
		return Job{}, err
	}
	giveBack(&a, j)
	if err := tx.PutAccount(a); err != nil {
		return Job{}, err
	}
	if err := l.release(tx, j, now, noFault(reason)); err != nil {
		return Job{}, err
	}
	j.State, j.Outcome, j.Finished, j.NoticeOwed = JobRefunded, reason, now, owe
	return j, tx.PutJob(j)
}

// Renew extends to until the leases owner holds on the jobs of keys that
// end before due: those still pending, and those refunded by recovery
// whose user owner is still telling. Others are left alone (settled, or reclaimed meanwhile by
// another instance after the lease had passed). It returns the pending
// jobs whose cancel was asked for on another instance (RequestCancel): key
// → who asked.
func (l *Ledger) Renew(ctx context.Context, owner string, keys []string, due, until time.Time) (map[string]string, error) {
	var cancels map[string]string
	err := l.store.Update(ctx, func(tx Tx) error {
		cancels = map[string]string{}
		for _, key := range keys {
			j, ok, err := tx.Job(key)
			if err != nil {
				return err
			}
			if !ok || j.Owner != owner || (j.State != JobPending && !j.NoticeOwed) {
				continue
			}
			if j.State == JobPending && j.CancelledBy != "" {
				cancels[key] = j.CancelledBy
			}
			if !j.Lease.Before(due) {
				continue
			}
			j.Lease = until
			if err := tx.PutJob(j); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, wrapStore("renew leases", err)
	}
	return cancels, nil
}

// RequestCancel records that by (a User.Key()) asked to cancel the pending
// job of key, which another instance is running: that instance cancels it
// when it next renews its lease. CodeNotFound once the job has ended,
// CodeConflict once its picture is being sent.
func (l *Ledger) RequestCancel(ctx context.Context, key, by string) error {
	err := l.store.Update(ctx, func(tx Tx) error {
		j, ok, err := tx.Job(key)
		switch {
		case err != nil:
			return err
		case !ok || j.State != JobPending:
			return &Error{Code: CodeNotFound, Err: fmt.Errorf("core: no job %s to cancel", key)}
		case j.Delivering:
			return &Error{Code: CodeConflict, Err: fmt.Errorf("core: job %s is being delivered", key)}
		case j.CancelledBy != "":
			return nil
		}
		j.CancelledBy = by
		return tx.PutJob(j)
	})
	return wrapStore("request cancel", err)
}

// Reclaim takes over the job of key when its lease has passed at now (its
// process died): a pending job is refunded, owing its user a notice
// (CodeDeliveryCut when its result was being sent, CodeInterrupted
// otherwise); a notice owed is taken over as it is. Either way owner then
// holds the job until until, to tell its user, and ok is true. A job whose
// lease is still running, or that owes nothing, is left alone.
func (l *Ledger) Reclaim(ctx context.Context, key, owner string, now, until time.Time) (j Job, ok bool, err error) {
	err = l.store.Update(ctx, func(tx Tx) error {
		ok = false
		var found bool
		var err error
		if j, found, err = tx.Job(key); err != nil || !found || now.Before(j.Lease) {
			return err
		}
		switch {
		case j.State == JobPending:
			code := CodeInterrupted
			if j.Delivering {
				code = CodeDeliveryCut
			}
			j.Owner, j.Lease = owner, until
			if j, err = l.refundTx(tx, j, code, now, true); err != nil {
				return err
			}
		case j.NoticeOwed:
			j.Owner, j.Lease = owner, until
			if err := tx.PutJob(j); err != nil {
				return err
			}
		default:
			return nil
		}
		ok = true
		return nil
	})
	if err != nil {
		return Job{}, false, wrapStore("reclaim "+key, err)
	}
	return j, ok, nil
}

// Delivering records that a pending job's result is about to be sent, so a
// crash before Commit is recovered as "the picture may have arrived" rather
// than as a job to send again. status, when not empty, is stored as the
// job's status message at the same time.
func (l *Ledger) Delivering(ctx context.Context, key, status string) error {
	err := l.store.Update(ctx, func(tx Tx) error {
		return updatePending(tx, key, func(j *Job) bool {
			changed := !j.Delivering || (status != "" && j.Status != status)
			j.Delivering = true
			if status != "" {
				j.Status = status
			}
			return changed
		})
	})
	return wrapStore("delivering", err)
}

// NoteStatuses stores the adapters' references to pending jobs' status
// messages (job key → reference), in one transaction, so recovery can turn
// them into the apology instead of leaving a "generating…" message behind.
// Settled jobs are left alone.
func (l *Ledger) NoteStatuses(ctx context.Context, notes map[string]string) error {
	err := l.store.Update(ctx, func(tx Tx) error {
		for key, ref := range notes {
			err := updatePending(tx, key, func(j *Job) bool {
				changed := j.Status != ref
				j.Status = ref
				return changed
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return wrapStore("note status", err)
}

// updatePending applies change to a pending job; a settled or missing job is
// left as it is (the job moved on meanwhile).
func updatePending(tx Tx, key string, change func(*Job) bool) error {
	j, ok, err := tx.Job(key)
	if err != nil || !ok || j.State != JobPending || !change(&j) {
		return err
	}
	return tx.PutJob(j)
}

// Setting returns the named setting, creating it with make the first time,
// in one transaction: concurrent first calls agree on one value.
func (l *Ledger) Setting(ctx context.Context, name string, make func() (string, error)) (string, error) {
	var v string
	err := l.store.Update(ctx, func(tx Tx) error {
		got, ok, err := tx.Setting(name)
		if err != nil || ok {
			v = got
			return err
		}
		if v, err = make(); err != nil {
			return err
		}
		return tx.PutSetting(name, v)
	})
	return v, wrapStore("setting "+name, err)
}

// settle loads the job to move to state: settled is true when it is there
// already (commit and refund are idempotent); a job settled the other way,
// or missing, is an error.
func settle(tx Tx, key string, state JobState) (j Job, settled bool, err error) {
	j, ok, err := tx.Job(key)
	switch {
	case err != nil:
		return Job{}, false, err
	case !ok:
		return Job{}, false, &Error{Code: CodeNotFound, Err: fmt.Errorf("core: no job %s", key)}
	case j.State == state:
		return j, true, nil
	case j.State != JobPending:
		return Job{}, false, &Error{Code: CodeConflict, Err: fmt.Errorf("core: job %s is %s, cannot become %s", key, j.State, state)}
	}
	return j, false, nil
}

func loadAccount(tx Tx, k AccountKey) (Account, ScopeSettings, error) {
	a, err := tx.Account(k)
	if err != nil {
		return Account{}, ScopeSettings{}, err
	}
	s, err := tx.Scope(k.Scope)
	if err != nil {
		return Account{}, ScopeSettings{}, err
	}
	return a, s, nil
}

// wrapStore keeps classified errors as they are and marks storage failures internal.
func wrapStore(op string, err error) error {
	if err == nil {
		return nil
	}
	if ErrorCode(err) != CodeInternal {
		return err
	}
	return &Error{Code: CodeInternal, Err: fmt.Errorf("core: %s: %w", op, err)}
}

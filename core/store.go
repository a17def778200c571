package core

import (
	"context"
	"errors"
	"time"
)

// Tx is one storage transaction. Reads see the transaction's own writes.
type Tx interface {
	// Account returns the stored account, or a zero Account with Key set.
	Account(k AccountKey) (Account, error)
	PutAccount(a Account) error
	// Scope returns the scope's settings, or zero settings with Scope set.
	Scope(scope string) (ScopeSettings, error)
	PutScope(s ScopeSettings) error
	// Job returns the job with key, and whether it exists.
	Job(key string) (Job, bool, error)
	// PutJob stores j, keeping the pending index and the user's history.
	PutJob(j Job) error
	AppendAudit(e AuditEntry) error
	// Setting returns a named value the bot keeps for itself (a generated
	// secret), and whether it is set.
	Setting(name string) (string, bool, error)
	PutSetting(name, value string) error
	// Limit returns a user's stored per-user limits (rate tokens, jobs in
	// flight), or a zero UserLimit with User set.
	Limit(user string) (UserLimit, error)
	PutLimit(l UserLimit) error
	// Claim records, in this transaction, that the event key was acted on
	// at, and reports whether it is the first time: an event delivered to
	// two instances sharing the ledger acts once. A rolled-back
	// transaction claims nothing.
	Claim(key string, at time.Time) (fresh bool, err error)
}

// Store is the durable ledger. Update's fn may run more than once (group
// commits retry): it must derive everything from the Tx and overwrite, not
// accumulate, what it captures. A nil error from Update means durable.
type Store interface {
	Update(ctx context.Context, fn func(Tx) error) error
	View(ctx context.Context, fn func(Tx) error) error
	// PendingJobs lists jobs still in JobPending (start-up recovery).
	PendingJobs(ctx context.Context) ([]Job, error)
	// OwedNotices lists jobs with NoticeOwed set, oldest first: users that
	// recovery refunded and no adapter has told yet.
	OwedNotices(ctx context.Context) ([]Job, error)
	// RecentJobs lists an account's jobs, newest first.
	RecentJobs(ctx context.Context, k AccountKey, limit int) ([]Job, error)
	// Audit lists a scope's audit entries, newest first ("" = all scopes).
	Audit(ctx context.Context, scope string, limit int) ([]AuditEntry, error)
}

// Exclusive is implemented by stores that one process holds at a time (a
// bbolt file is locked while it is open). Exclusive reports whether this
// one is: then every job pending in it at start was left by a process that
// is gone, and Recover refunds them all without waiting for their leases.
// Stores without the method are shared.
type Exclusive interface{ Exclusive() bool }

// ErrTxReadOnly is returned by writes inside View.
var ErrTxReadOnly = errors.New("core: write in a read-only transaction")

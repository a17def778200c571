package core

import (
	"math"
	"time"
)

// JobState is where a job's reservation stands.
type JobState string

const (
	JobPending   JobState = "pending"   // units reserved, image not delivered yet
	JobCommitted JobState = "committed" // delivered; units spent
	JobRefunded  JobState = "refunded"  // failed; units returned
)

// Job is the durable record of one /imagine: its reservation and outcome.
// Key is the idempotency key of the platform event that started it.
type Job struct {
	Key         string
	Account     AccountKey
	User        User
	Model       string
	Prompt      string
	Options     Options
	Units       int
	Day         string // quota day the daily part was taken from
	FromDaily   int
	FromCredits int
	State       JobState
	Outcome     Code   // "" when delivered, else why it failed
	ReplyTo     string // adapter-defined reply target, to tell the user after a crash
	Status      string // adapter-defined reference to the job's status message, to edit it after a crash
	Delivering  bool   // the result was being sent: after a crash the picture may have arrived
	NoticeOwed  bool   // refunded by crash recovery; the user is still to be told
	Lang        Lang
	// Task and Buttons are a Midjourney result's task and its buttons
	// (U1–U4, V1–V4, 🔄, …): kept here so a button press, which carries
	// only the job key and an index, can act on the task.
	Task    string
	Buttons []TaskButton
	// Owner is the process running the job (Service's Config.Instance),
	// and Lease how long that process vouches for it: it renews the lease
	// while the job runs, and a pending job whose lease has passed belongs
	// to a process that died — any instance sharing the ledger refunds it.
	// After such a refund they name the instance telling its user.
	Owner string
	Lease time.Time
	// CancelledBy is who pressed Cancel (User.Key()) on an instance that
	// is not running the job: the owner cancels it when it next renews
	// its lease.
	CancelledBy string
	Created     time.Time
	Finished    time.Time
}

// AuditEntry records one moderator action. The log is append-only.
type AuditEntry struct {
	Time      time.Time
	Scope     string
	Actor     string // User.Key() of the moderator, "cli:cli" for the admin CLI
	ActorName string
	Role      Role
	Action    string // "grant", "ban", "set-daily", …
	Target    string // account user key, or "" for scope-wide actions
	Before    string
	After     string
	Note      string
}

// UnixNano is t in Unix nanoseconds, clamped to int64 (time.UnixNano is
// undefined outside it): how stores keep and order times.
func UnixNano(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

package core

import (
	"fmt"
	"time"
)

// Account is the stored state of one (scope, user) quota account.
type Account struct {
	Key     AccountKey
	Daily   *int   // per-user daily allowance override; nil = the scope's
	Credits int    // granted units; never reset
	UsedDay string // the quota day Used belongs to ("2006-01-02" in the quota zone)
	Used    int    // units of the daily allowance spent on UsedDay
	Banned  bool
	Prefs   Prefs
}

// Prefs are a user's own defaults in one scope (/settings). What a prompt
// says wins over them, and a reroll keeps the original job's.
type Prefs struct {
	Model  string // "" = the configured default
	Aspect string // W:H; "" = none
	Lang   Lang   // "" = the platform's locale
}

// UsedOn is the daily usage on day: usage stamped with another day is stale,
// which is how the daily reset happens without a timer.
func (a Account) UsedOn(day string) int {
	if a.UsedDay == day {
		return a.Used
	}
	return 0
}

// ScopeSettings are moderator overrides for a whole scope.
type ScopeSettings struct {
	Scope string
	Daily *int // daily allowance for users without their own override; nil = config
}

// Balance is an account as a user sees it today.
type Balance struct {
	Daily   int // effective daily allowance
	Used    int // spent today (committed and pending)
	Credits int
	Banned  bool
	ResetAt time.Time // next reset of the daily allowance, in the quota zone
}

// DailyLeft is what remains of today's allowance.
func (b Balance) DailyLeft() int { return max(0, b.Daily-b.Used) }

// Remaining is everything the user can still spend.
func (b Balance) Remaining() int { return b.DailyLeft() + b.Credits }

// Quotas computes quota days and effective allowances.
type Quotas struct {
	Location     *time.Location // the zone whose midnight resets the daily allowance
	DefaultDaily int
	ScopeDaily   map[string]int // config defaults for particular scopes
}

// Day is the quota day of t ("2006-01-02" in the quota zone).
func (q Quotas) Day(t time.Time) string { return t.In(q.loc()).Format(time.DateOnly) }

// NextReset is the first instant of the quota day after t's. Built with
// time.Date so days of 23 or 25 hours (DST) come out right. Where the clocks
// skip midnight (America/Santiago springs from 00:00 to 01:00), time.Date
// answers with 23:00 of the day before; the day then starts at the zone
// transition.
func (q Quotas) NextReset(t time.Time) time.Time {
	y, m, d := t.In(q.loc()).Date()
	next := time.Date(y, m, d+1, 0, 0, 0, 0, q.loc())
	want := time.Date(y, m, d+1, 12, 0, 0, 0, q.loc()).Format(time.DateOnly)
	if q.Day(next) != want {
		_, next = next.ZoneBounds()
	}
	return next
}

func (q Quotas) loc() *time.Location {
	if q.Location == nil {
		return time.UTC
	}
	return q.Location
}

// EffectiveDaily resolves the daily allowance: the user's override, else the
// scope's moderator override, else the config for that scope, else the default.
func (q Quotas) EffectiveDaily(a Account, s ScopeSettings) int {
	switch {
	case a.Daily != nil:
		return *a.Daily
	case s.Daily != nil:
		return *s.Daily
	}
	if d, ok := q.ScopeDaily[a.Key.Scope]; ok {
		return d
	}
	return q.DefaultDaily
}

// Balance is a's balance at now.
func (q Quotas) Balance(a Account, s ScopeSettings, now time.Time) Balance {
	return Balance{
		Daily:   q.EffectiveDaily(a, s),
		Used:    a.UsedOn(q.Day(now)),
		Credits: a.Credits,
		Banned:  a.Banned,
		ResetAt: q.NextReset(now),
	}
}

// charge takes units from a, daily allowance first, then credits. It changes
// nothing when the balance is short.
func (q Quotas) charge(a *Account, s ScopeSettings, units int, now time.Time) (fromDaily, fromCredits int, err error) {
	b := q.Balance(*a, s, now)
	if b.Remaining() < units {
		return 0, 0, &Error{Code: CodeQuotaExceeded, ResetAt: b.ResetAt,
			Err: fmt.Errorf("core: %s has %d units, needs %d", a.Key, b.Remaining(), units)}
	}
	fromDaily = min(units, b.DailyLeft())
	fromCredits = units - fromDaily
	day := q.Day(now)
	a.Used = b.Used + fromDaily
	a.UsedDay = day
	a.Credits -= fromCredits
	return fromDaily, fromCredits, nil
}

// giveBack returns a job's units to a. The daily part only counts while the
// quota day it was taken from lasts: after a reset the allowance is whole again.
func giveBack(a *Account, j Job) {
	if a.UsedDay == j.Day {
		a.Used = max(0, a.Used-j.FromDaily)
	}
	a.Credits += j.FromCredits
}

package core

import (
	"fmt"
	"math"
	"time"

	"golang.org/x/time/rate"
)

// UserLimits are the per-user limits the ledger enforces inside the
// reservation's transaction: stored with the ledger rather than in the
// process, they hold across every instance sharing it, survive restarts, and
// a reservation that fails (duplicate, quota, ban) takes nothing.
type UserLimits struct {
	Rate  rate.Limit // jobs per second per user; rate.Inf or 0 = no rate limit
	Burst int        // jobs a user may start at once before the rate applies
	Jobs  int        // reserved jobs not settled yet per user; 0 = no cap
}

// UserLimit is a user's stored state for UserLimits: a token bucket and the
// count of the user's jobs in flight. The zero value is a full bucket and
// no job.
type UserLimit struct {
	User     string    // User.Key()
	Tokens   float64   // rate tokens left at At
	At       time.Time // when Tokens was computed; zero = never limited (full)
	InFlight int       // jobs reserved and not yet committed or refunded
}

func (l UserLimits) rated() bool { return l.Rate > 0 && l.Rate != rate.Inf && l.Burst > 0 }

// applies reports whether a reservation touches the user's limit record.
func (l UserLimits) applies() bool { return l.rated() || l.Jobs > 0 }

// tokens is u's bucket at now. x/time/rate keeps its bucket private, so a
// bucket stored as data is refilled here: the same rule, min(burst, tokens
// + elapsed × rate). A clock behind the record's (another instance's) adds
// nothing rather than taking tokens away.
func (l UserLimits) tokens(u UserLimit, now time.Time) float64 {
	if u.At.IsZero() {
		return float64(l.Burst)
	}
	elapsed := max(now.Sub(u.At).Seconds(), 0)
	return math.Min(float64(l.Burst), u.Tokens+elapsed*float64(l.Rate))
}

// admit takes a job's rate token and counts it in flight, or says why not.
func (l UserLimits) admit(u *UserLimit, now time.Time) error {
	if l.rated() {
		t := l.tokens(*u, now)
		if t < 1 {
			wait := time.Duration(math.Ceil((1 - t) / float64(l.Rate) * float64(time.Second)))
			return &Error{Code: CodeRateLimited, RetryAfter: wait,
				Err: fmt.Errorf("core: %s rate limited for %s", u.User, wait)}
		}
		u.Tokens, u.At = t-1, now
	}
	if l.Jobs > 0 && u.InFlight >= l.Jobs {
		return &Error{Code: CodeTooManyJobs, Limit: l.Jobs,
			Err: fmt.Errorf("core: %s has %d jobs in flight", u.User, u.InFlight)}
	}
	u.InFlight++
	return nil
}

// settle ends a job in flight; giveBack returns its rate token too (it
// failed through no fault of the user: "try again in a minute" must not
// meet "too fast"). Jobs reserved before the limits were stored were never
// counted, hence the floor.
func (l UserLimits) settle(u *UserLimit, now time.Time, giveBack bool) {
	u.InFlight = max(u.InFlight-1, 0)
	if giveBack && l.rated() {
		u.Tokens, u.At = math.Min(float64(l.Burst), l.tokens(*u, now)+1), now
	}
}

// noFault reports whether a job that ended with code failed through no
// fault of its user: everything but success, a refusal of the prompt and a
// cancel.
func noFault(code Code) bool {
	switch code {
	case "", CodeRefused, CodeCancelled:
		return false
	}
	return true
}

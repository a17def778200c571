package core

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// keyedLimiter is a token bucket per key. x/time/rate has no keyed limiter,
// so it keeps a map and evicts entries idle long enough to have refilled:
// a fresh bucket would be identical, so eviction changes nothing.
type keyedLimiter struct {
	limit rate.Limit
	burst int
	idle  time.Duration

	mu        sync.Mutex
	entries   map[string]*limiterEntry
	lastSweep time.Time
}

type limiterEntry struct {
	lim      *rate.Limiter
	lastSeen time.Time
	// credits are tokens given back after the fact (a job that failed
	// through no fault of the user): x/time/rate can only cancel a
	// reservation at the instant it was made — later it restores nothing,
	// and cancelling "as of then" would rewind the bucket's clock.
	credits int
}

func newKeyedLimiter(limit rate.Limit, burst int) *keyedLimiter {
	k := &keyedLimiter{limit: limit, burst: burst, entries: map[string]*limiterEntry{}}
	if limit > 0 && limit != rate.Inf {
		k.idle = time.Duration(float64(burst) / float64(limit) * float64(time.Second))
	}
	return k
}

// reserve takes a token for key at now. It returns 0 and a cancel func when a
// token was available, or how long to wait (and takes nothing) when not.
func (k *keyedLimiter) reserve(key string, now time.Time) (wait time.Duration, cancel func()) {
	if k.limit == rate.Inf {
		return 0, func() {}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sweep(now)
	e := k.entries[key]
	if e == nil {
		e = &limiterEntry{lim: rate.NewLimiter(k.limit, k.burst)}
		k.entries[key] = e
	}
	e.lastSeen = now
	r := e.lim.ReserveN(now, 1)
	if !r.OK() {
		return time.Hour, func() {}
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		if e.credits > 0 {
			e.credits--
			return 0, func() {
				k.mu.Lock()
				defer k.mu.Unlock()
				e.credits++
			}
		}
		return d, nil
	}
	return 0, func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		r.CancelAt(now)
	}
}

// giveBack returns the token of a request that turned out not to count
// (its job failed through no fault of the user), at any later time: the
// user's next request goes through even if the bucket is empty. Credits
// never exceed the burst; an entry evicted since was full anyway.
func (k *keyedLimiter) giveBack(key string) {
	if k.limit == rate.Inf {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if e := k.entries[key]; e != nil {
		e.credits = min(e.credits+1, k.burst)
	}
}

// sweep evicts idle entries, at most once per idle period so the cost stays
// amortised O(1) per call.
func (k *keyedLimiter) sweep(now time.Time) {
	if k.idle <= 0 || now.Sub(k.lastSweep) < k.idle {
		return
	}
	k.lastSweep = now
	for key, e := range k.entries {
		if now.Sub(e.lastSeen) >= k.idle {
			delete(k.entries, key)
		}
	}
}

func (k *keyedLimiter) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.entries)
}

package telegramtest

import (
	"encoding/json"
	"math"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits enforces the send limits Telegram publishes
// (core.telegram.org/bots/faq): about 30 messages a second overall, one a
// second in a chat (with a burst of two: "we may allow short bursts"), 20 a
// minute in a group. It serves this package's server (WithRateLimits) and
// load tools with fakes of their own.
type Limits struct {
	mu        sync.Mutex
	global    *rate.Limiter
	chats     map[int64]*chatLimits
	tolerance time.Duration // a token due this soon counts as there: network jitter
	refused   int
}

type chatLimits struct {
	second *rate.Limiter
	minute *rate.Limiter // groups only
}

// NewLimits returns the limits with perSecond overall (Telegram: 30) and
// tolerance of network jitter (this package uses 20 ms).
func NewLimits(perSecond float64, tolerance time.Duration) *Limits {
	burst := max(1, int(math.Ceil(perSecond))) // one second's worth
	return &Limits{
		global:    rate.NewLimiter(rate.Limit(perSecond), burst),
		chats:     map[int64]*chatLimits{},
		tolerance: tolerance,
	}
}

// Counted reports whether method counts against the limits: everything that
// puts or changes a message (send*, edit*); deletions, callback answers and
// reads do not.
func Counted(method string) bool {
	return strings.HasPrefix(method, "send") || strings.HasPrefix(method, "edit")
}

// Messages is how many messages a call counts: the pictures of an album
// (its "media" field), one otherwise.
func Messages(method, media string) int {
	if method == "sendMediaGroup" {
		var items []json.RawMessage
		if json.Unmarshal([]byte(media), &items) == nil && len(items) > 0 {
			return len(items)
		}
	}
	return 1
}

func (l *Limits) chat(id int64) *chatLimits {
	c := l.chats[id]
	if c == nil {
		c = &chatLimits{second: rate.NewLimiter(1, 2)}
		if id < 0 {
			c.minute = rate.NewLimiter(rate.Every(3*time.Second), 20)
		}
		// No eviction: a test or a load run has a few thousand chats at most.
		l.chats[id] = c
	}
	return c
}

// Take spends n messages in chat at now. It reports how long the caller
// must wait when a limit is exceeded (and then spends nothing), else 0.
func (l *Limits) Take(chat int64, n int, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.chat(chat)
	type want struct {
		lim *rate.Limiter
		n   int
	}
	// An album lands in the chat at once: one message for the per-second
	// chat limit, n for the counters.
	wants := []want{{l.global, n}, {c.second, 1}}
	if c.minute != nil {
		wants = append(wants, want{c.minute, n})
	}
	var taken []*rate.Reservation
	var wait time.Duration
	for _, w := range wants {
		r := w.lim.ReserveN(now, w.n)
		if !r.OK() {
			wait = max(wait, time.Minute) // more than the bucket holds
			continue
		}
		taken = append(taken, r)
		wait = max(wait, r.DelayFrom(now))
	}
	if wait <= l.tolerance {
		return 0
	}
	for _, r := range taken {
		r.CancelAt(now)
	}
	l.refused++
	return wait
}

// Refused is how many calls Take refused.
func (l *Limits) Refused() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refused
}

// RetryAfter is Telegram's retry_after for a wait: whole seconds, rounded
// up, at least 1.
func RetryAfter(wait time.Duration) int {
	return max(1, int(math.Ceil(wait.Seconds())))
}

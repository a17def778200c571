package main

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// countedMethods are the Bot API methods Telegram's flood limits apply to:
// everything that puts or changes a message in a chat. Deletes, callback
// answers and polling are free.
var countedMethods = map[string]bool{
	"sendMessage": true, "sendPhoto": true, "sendDocument": true, "sendMediaGroup": true,
	"sendChatAction": true, "editMessageText": true, "editMessageReplyMarkup": true,
	"editMessageCaption": true, "editMessageMedia": true,
}

// sendLimiter enforces the limits Telegram publishes: about 30 messages/s
// overall, 1 per second in a chat (with a burst of two: the FAQ allows
// short bursts), 20 per minute in a group.
type sendLimiter struct {
	mu        sync.Mutex
	global    *rate.Limiter
	chats     map[int64]*chatLimits
	tolerance time.Duration // a token due this soon counts as there: network jitter
}

type chatLimits struct {
	second *rate.Limiter
	minute *rate.Limiter // groups only
}

func newSendLimiter(globalPerSecond float64, tolerance time.Duration) *sendLimiter {
	burst := max(1, int(math.Ceil(globalPerSecond))) // one second's worth
	return &sendLimiter{
		global:    rate.NewLimiter(rate.Limit(globalPerSecond), burst),
		chats:     map[int64]*chatLimits{},
		tolerance: tolerance,
	}
}

func (l *sendLimiter) chat(id int64) *chatLimits {
	c := l.chats[id]
	if c == nil {
		c = &chatLimits{second: rate.NewLimiter(1, 2)}
		if id < 0 {
			c.minute = rate.NewLimiter(rate.Every(3*time.Second), 20)
		}
		// No eviction: a run has a few thousand chats at most.
		l.chats[id] = c
	}
	return c
}

// take spends n messages in chat at now. It reports how long the caller
// must wait when a limit is exceeded (and then spends nothing), else 0.
func (l *sendLimiter) take(chat int64, n int, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.chat(chat)
	type want struct {
		lim *rate.Limiter
		n   int
	}
	// An album lands in the chat at once: one message for the per-second
	// chat limit, n for the counters (a burst-1 bucket could never hold n).
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
	return wait
}

// retryAfterSeconds is Telegram's retry_after for a wait: whole seconds,
// rounded up, at least 1.
func retryAfterSeconds(wait time.Duration) int {
	return max(1, int(math.Ceil(wait.Seconds())))
}

// burstWindows answers every send with 429 for `For` out of every `Every`
// (the fault run), counted from an origin.
type burstWindows struct {
	Every, For time.Duration
}

func (b burstWindows) active(origin, now time.Time) bool {
	if b.Every <= 0 || b.For <= 0 || now.Before(origin) {
		return false
	}
	return now.Sub(origin)%b.Every < b.For
}

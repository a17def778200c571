// Package pace decides how often a chat platform may be spoken to: one
// outbound budget per platform (overall, per chat and per group chat), spent
// in order of importance — results first, then replies and refusals, then
// progress — and a status message per job whose updates are merged and sent
// only from what the budget leaves. It knows nothing of any platform's SDK;
// adapters give it their numbers and call it before every send or edit.
package pace

import (
	"container/heap"
	"context"
	"math"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Class is what a message is for. When the budget is short the lower
// classes wait: a result is never held up by progress.
type Class int

const (
	Result      Class = iota // a finished job's picture or its fallback
	Reply                    // refusals, failures, answers to commands
	FirstStatus              // a job's first status message: the sign its prompt was heard
	Progress                 // later edits of a status message
)

// low reports whether c is spent only from what results and replies leave.
func (c Class) low() bool { return c >= FirstStatus }

// Msg is one message to pace.
type Msg struct {
	Chat  Chat
	Class Class
	// N is how many messages the call counts: an album counts each
	// picture overall and once in its chat. 0 means 1.
	N int
	// Order sorts messages of a class: lower first (a job's arrival
	// sequence, so results go out in the order their prompts came); 0 goes
	// before any order, then in the order asked.
	Order uint64
}

// Rate is a token bucket: PerSecond on average, up to Burst at once.
type Rate struct {
	PerSecond float64
	Burst     int
}

func (r Rate) set() bool { return r.PerSecond > 0 }

func (r Rate) limiter() *rate.Limiter {
	return rate.NewLimiter(rate.Limit(r.PerSecond), max(r.Burst, 1))
}

// withResultToken is a chat bucket: one token over the burst, for results.
func (r Rate) withResultToken() *rate.Limiter {
	return rate.NewLimiter(rate.Limit(r.PerSecond), max(r.Burst, 1)+1)
}

// Limits are a platform's send limits.
type Limits struct {
	Global Rate // every message of the bot
	Chat   Rate // each chat
	Group  Rate // each group chat, on top of Chat (zero: none)
	// ProgressShare is the part of Global that status messages may take
	// while results and replies wait (0: none, they get only what is left).
	// A little keeps users who wait long from waiting without a sign.
	ProgressShare float64
}

// MaxBatch is the most messages one call may count (an album of ten).
const MaxBatch = 10

// Telegram's limits (core.telegram.org/bots/faq): about 30 messages a second
// overall (more with paid broadcasts); in one chat about one a second, with
// short bursts allowed; 20 a minute in a group. The bot's buckets are a
// little smaller and burst less than Telegram's, so that network jitter
// cannot make two sends look closer than they were. Each chat keeps one
// message of burst for results (see Budget), so a picture never waits
// behind its own status message.
func Telegram(perSecond int) Limits {
	return Limits{
		Global:        Rate{PerSecond: float64(perSecond), Burst: max(MaxBatch, perSecond/10)},
		Chat:          Rate{PerSecond: 1 / 1.1, Burst: 1},
		Group:         Rate{PerSecond: 19.0 / 60, Burst: 3},
		ProgressShare: 0.1,
	}
}

// Chat is where a message goes.
type Chat struct {
	ID    string
	Group bool // group chats have their own, smaller budget
}

// Budget paces one platform's outbound messages. Callers ask before each
// send; asks are granted when the overall bucket and the chat's buckets all
// have room, most important class first and in order within a class.
// Nothing is ever sent beyond the limits, so 429s stay exceptions.
//
// A chat's buckets hold one token more than their burst, kept for results:
// other classes go only with that token spare, so a result may follow a
// status edit at once (Telegram allows such short bursts in a chat).
type Budget struct {
	limits Limits
	now    func() time.Time

	mu      sync.Mutex
	global  *rate.Limiter
	share   *rate.Limiter // status messages' part of global while others wait
	chats   map[Chat]*chatState
	high    chatHeap // chats whose first ask (a result or reply) fits their own buckets now
	low     chatHeap // the same for a status message first
	parked  chatHeap // chats waiting for their own buckets, by when they fit
	seq     uint64
	after   func(time.Duration, func()) (stop func() bool) // time.AfterFunc; tests replace it
	stop    func() bool                                    // the armed timer
	timerAt time.Time
	sweepAt int
}

type chatState struct {
	chat     Chat
	chatLim  *rate.Limiter
	groupLim *rate.Limiter // nil for private chats or without a group rate
	hold     time.Time     // after a 429: nothing before this
	asks     []*ask        // in the order they go
	readyAt  time.Time     // when asks[0] fits the chat's buckets (parked chats)
	idx      int           // index in its heap
	heap     *chatHeap     // high, low or parked; nil when in none
}

type ask struct {
	chat  *chatState
	class Class
	n     int
	order uint64
	seq   uint64
	grant func()
	done  bool // granted or cancelled
}

func (a *ask) before(b *ask) bool {
	if a.class != b.class {
		return a.class < b.class
	}
	if a.order != b.order {
		return a.order < b.order
	}
	return a.seq < b.seq
}

// NewBudget returns a budget with limits; now is the clock (nil: time.Now).
func NewBudget(limits Limits, now func() time.Time) *Budget {
	if now == nil {
		now = time.Now
	}
	if !limits.Global.set() {
		limits.Global = Rate{PerSecond: math.Inf(1), Burst: MaxBatch}
	}
	limits.Global.Burst = max(limits.Global.Burst, MaxBatch)
	b := &Budget{
		limits:  limits,
		now:     now,
		global:  limits.Global.limiter(),
		chats:   map[Chat]*chatState{},
		sweepAt: 1024,
		after: func(d time.Duration, f func()) func() bool {
			return time.AfterFunc(d, f).Stop
		},
	}
	if limits.ProgressShare > 0 && !math.IsInf(limits.Global.PerSecond, 1) {
		b.share = rate.NewLimiter(rate.Limit(limits.ProgressShare*limits.Global.PerSecond), 1)
	}
	return b
}

// Limits returns the limits in use.
func (b *Budget) Limits() Limits { return b.limits }

// Ask queues m. grant is called once when it may go — possibly before Ask
// returns, always without the budget's lock — and must not block; cancel
// withdraws the ask and reports whether it did so before the grant.
func (b *Budget) Ask(m Msg, grant func()) (cancel func() bool) {
	a := &ask{class: m.Class, n: min(max(m.N, 1), MaxBatch), order: m.Order, grant: grant}
	b.mu.Lock()
	b.seq++
	a.seq = b.seq
	cs := b.chatLocked(m.Chat)
	a.chat = cs
	i, _ := slices.BinarySearchFunc(cs.asks, a, func(x, a *ask) int {
		if x.before(a) {
			return -1
		}
		return 1
	})
	cs.asks = slices.Insert(cs.asks, i, a)
	b.changedLocked(cs, i)
	return func() bool { return b.cancel(a) }
}

// changedLocked follows a change at index i of cs's asks: a new first ask
// moves the chat in the heaps. It unlocks mu and runs the grants due.
func (b *Budget) changedLocked(cs *chatState, i int) {
	now := b.now()
	if i == 0 {
		b.placeLocked(cs, now)
	}
	grants := b.pumpLocked(now)
	b.mu.Unlock()
	run(grants)
}

// Wait blocks until m may be sent, or ctx ends.
func (b *Budget) Wait(ctx context.Context, m Msg) error {
	ok := make(chan struct{})
	cancel := b.Ask(m, func() { close(ok) })
	select {
	case <-ok:
		return nil
	case <-ctx.Done():
		if cancel() {
			return ctx.Err()
		}
		return nil // granted meanwhile: the caller may as well send
	}
}

// Hold keeps chat quiet for d, when the platform answered 429 anyway.
func (b *Budget) Hold(chat Chat, d time.Duration) {
	b.mu.Lock()
	cs := b.chatLocked(chat)
	now := b.now()
	if until := now.Add(d); until.After(cs.hold) {
		cs.hold = until
	}
	b.placeLocked(cs, now)
	grants := b.pumpLocked(now)
	b.mu.Unlock()
	run(grants)
}

func (b *Budget) cancel(a *ask) bool {
	b.mu.Lock()
	if a.done {
		b.mu.Unlock()
		return false
	}
	a.done = true
	cs := a.chat
	i := slices.Index(cs.asks, a)
	cs.asks = slices.Delete(cs.asks, i, i+1)
	b.changedLocked(cs, i)
	return true
}

func (b *Budget) chatLocked(chat Chat) *chatState {
	if cs := b.chats[chat]; cs != nil {
		return cs
	}
	cs := &chatState{chat: chat, idx: -1}
	if b.limits.Chat.set() {
		cs.chatLim = b.limits.Chat.withResultToken()
	}
	if chat.Group && b.limits.Group.set() {
		cs.groupLim = b.limits.Group.withResultToken()
	}
	b.chats[chat] = cs
	b.sweepLocked()
	return cs
}

// fitsAt is when cs's first ask fits the chat's own buckets: a result needs
// one token, anything else also leaves the results' token.
func (cs *chatState) fitsAt(now time.Time) time.Time {
	at := now
	if cs.hold.After(at) {
		at = cs.hold
	}
	need := 1
	if cs.asks[0].class != Result {
		need = 2
	}
	for _, l := range []*rate.Limiter{cs.chatLim, cs.groupLim} {
		if l != nil {
			at = later(at, whenTokens(l, now, need))
		}
	}
	return at
}

// whenTokens is when l holds n tokens.
func whenTokens(l *rate.Limiter, now time.Time, n int) time.Time {
	missing := float64(n) - l.TokensAt(now)
	if missing <= 0 {
		return now
	}
	return now.Add(time.Duration(math.Ceil(missing / float64(l.Limit()) * float64(time.Second))))
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// placeLocked puts cs in the heap its first ask belongs to, or in none.
func (b *Budget) placeLocked(cs *chatState, now time.Time) {
	if cs.heap != nil {
		heap.Remove(cs.heap, cs.idx)
		cs.heap = nil
	}
	if len(cs.asks) == 0 {
		return
	}
	h := &b.high
	cs.readyAt = time.Time{} // zero in the ready heaps: they order by the ask
	if at := cs.fitsAt(now); at.After(now) {
		cs.readyAt, h = at, &b.parked
	} else if cs.asks[0].class.low() {
		h = &b.low
	}
	cs.heap = h
	heap.Push(h, cs)
}

// nextReady is the chat to serve next: results and replies first, but a
// status message now and then from its share while they wait.
func (b *Budget) nextReady(now time.Time) (cs *chatState, fromShare bool) {
	switch {
	case len(b.high) > 0 && len(b.low) > 0 && b.share != nil && b.share.TokensAt(now) >= 1:
		return b.low[0], true
	case len(b.high) > 0:
		return b.high[0], false
	case len(b.low) > 0:
		return b.low[0], false
	}
	return nil, false
}

// pumpLocked grants every ask that fits now, best first, and arms the timer
// for the next moment one may fit. It returns the grants to run unlocked.
func (b *Budget) pumpLocked(now time.Time) []func() {
	for len(b.parked) > 0 && !b.parked[0].readyAt.After(now) {
		cs := heap.Pop(&b.parked).(*chatState)
		cs.heap = nil
		b.placeLocked(cs, now)
	}
	var grants []func()
	var next time.Time
	for {
		cs, fromShare := b.nextReady(now)
		if cs == nil {
			break
		}
		a := cs.asks[0]
		if at := whenTokens(b.global, now, a.n); at.After(now) {
			next = at
			break
		}
		if cs.fitsAt(now).After(now) {
			// The hold or a token went meanwhile (Hold on another ask).
			b.placeLocked(cs, now)
			continue
		}
		if fromShare {
			b.share.AllowN(now, 1)
		}
		b.global.AllowN(now, a.n)
		for _, l := range []*rate.Limiter{cs.chatLim, cs.groupLim} {
			if l != nil {
				l.AllowN(now, 1)
			}
		}
		a.done = true
		cs.asks = cs.asks[1:]
		grants = append(grants, a.grant)
		b.placeLocked(cs, now)
	}
	if len(b.parked) > 0 && (next.IsZero() || b.parked[0].readyAt.Before(next)) {
		next = b.parked[0].readyAt
	}
	if len(b.high) > 0 && len(b.low) > 0 && b.share != nil {
		// The share refills while the global bucket may not run dry.
		// (With a token already there, the global bucket is what waits.)
		if at := whenTokens(b.share, now, 1); at.After(now) && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	b.armLocked(now, next)
	return grants
}

// armLocked makes sure a wake comes by at. A timer already due no later
// is kept: it wakes, pumps and arms again, so asks and grants (which move
// the next moment by rounding) do not churn timers.
func (b *Budget) armLocked(now, at time.Time) {
	if at.IsZero() || (b.stop != nil && !b.timerAt.After(at)) {
		return
	}
	if b.stop != nil {
		b.stop()
	}
	b.timerAt = at
	b.stop = b.after(at.Sub(now), b.wake)
}

func (b *Budget) wake() {
	b.mu.Lock()
	b.stop, b.timerAt = nil, time.Time{}
	grants := b.pumpLocked(b.now())
	b.mu.Unlock()
	run(grants)
}

// sweepLocked drops chats with nothing asked whose buckets are full again:
// a new state would be the same. It runs when the map has doubled since the
// last sweep, so it costs O(1) per chat.
func (b *Budget) sweepLocked() {
	if len(b.chats) < b.sweepAt {
		return
	}
	now := b.now()
	for k, cs := range b.chats {
		if len(cs.asks) == 0 && !cs.hold.After(now) && full(cs.chatLim, now) && full(cs.groupLim, now) {
			delete(b.chats, k)
		}
	}
	b.sweepAt = max(2*len(b.chats), 1024)
}

func full(l *rate.Limiter, now time.Time) bool {
	return l == nil || l.TokensAt(now) >= float64(l.Burst())
}

func run(grants []func()) {
	for _, g := range grants {
		g()
	}
}

// chatHeap orders chats: the ready ones by their first ask, the parked ones
// by when they fit.
type chatHeap []*chatState

func (h chatHeap) Len() int { return len(h) }
func (h chatHeap) Less(i, j int) bool {
	if h[i].readyAt.IsZero() {
		return h[i].asks[0].before(h[j].asks[0])
	}
	return h[i].readyAt.Before(h[j].readyAt)
}
func (h chatHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *chatHeap) Push(x any) {
	cs := x.(*chatState)
	cs.idx = len(*h)
	*h = append(*h, cs)
}
func (h *chatHeap) Pop() any {
	old := *h
	cs := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	cs.idx = -1
	return cs
}

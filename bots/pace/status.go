package pace

import (
	"context"
	"sync"
	"time"
)

// Status is one job's status message ("⏳ Queued #3", "🎨 Generating… 42%").
// The adapter sets the latest text whenever the job reports progress; the
// message is sent, then edited, only with the latest text, at most once per
// interval, and only when the budget has room left by results and replies
// (class Progress). Updates that find the budget short are merged into the
// next one, or dropped when the job ends first: under load a job may show
// no status at all, and its result is then the only message it costs.
type Status struct {
	budget *Budget
	chat   Chat
	order  uint64
	every  time.Duration
	send   func(ctx context.Context, text string) error
	now    func() time.Time

	mu      sync.Mutex
	latest  string
	shown   string
	cancel  func() bool // withdraws the pending ask; nil when none
	timer   *time.Timer // waits out the interval; nil when none
	sending bool
	closed  bool
	idle    *sync.Cond // signalled when a send ends
	nextAt  time.Time
}

// SendTimeout bounds one status send or edit.
const SendTimeout = 15 * time.Second

// NewStatus returns the status of one job in chat; order is the job's place
// among statuses (its arrival). send creates the message the first time and
// edits it after; it runs in its own goroutine, one at a time, and a nil
// error means the text is now shown.
func (b *Budget) NewStatus(chat Chat, order uint64, every time.Duration, send func(ctx context.Context, text string) error) *Status {
	s := &Status{budget: b, chat: chat, order: order, every: every, send: send, now: b.now}
	s.idle = sync.NewCond(&s.mu)
	return s
}

// Set makes text the latest status. It never blocks.
func (s *Status) Set(text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.latest = text
	s.kickLocked()
}

// kickLocked starts whatever the latest text needs next: nothing while a
// send, an ask or an interval is pending (each ends by kicking again).
func (s *Status) kickLocked() {
	if s.closed || s.sending || s.cancel != nil || s.timer != nil || s.latest == s.shown {
		return
	}
	if wait := s.nextAt.Sub(s.now()); wait > 0 {
		s.timer = time.AfterFunc(wait, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.timer = nil
			s.kickLocked()
		})
		return
	}
	// The grant may come inside Ask, while s.mu is held: take it over in a
	// goroutine of its own.
	class := Progress
	if s.shown == "" {
		class = FirstStatus
	}
	s.cancel = s.budget.Ask(Msg{Chat: s.chat, Class: class, Order: s.order}, func() { go s.granted() })
}

func (s *Status) granted() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancel = nil
	if s.closed {
		return
	}
	text := s.latest
	s.sending = true
	go s.deliver(text)
}

func (s *Status) deliver(text string) {
	ctx, cancel := context.WithTimeout(context.Background(), SendTimeout)
	err := s.send(ctx, text)
	cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sending = false
	s.idle.Broadcast()
	if err == nil {
		s.shown = text
	}
	s.nextAt = s.now().Add(s.every)
	s.kickLocked()
}

// Shown is the text the message shows now ("" when none was sent).
func (s *Status) Shown() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shown
}

// Close stops all updates and waits for a send in flight, so the adapter
// may then delete the message or turn it into the result or an apology.
func (s *Status) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.cancel != nil {
		s.cancel()
		s.cancel = nil
	}
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	for s.sending {
		s.idle.Wait()
	}
}

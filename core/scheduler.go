package core

import (
	"container/list"
	"context"
	"sync"
)

// scheduler admits jobs to the upstream: at most `slots` run at once, and
// waiting jobs are served round-robin across users, so one user's burst
// cannot starve the others. Jobs wait in their own goroutine (the caller's),
// so no worker pool is needed.
type scheduler struct {
	mu      sync.Mutex
	slots   int
	running int
	queues  map[string]*list.List // user → FIFO of *waiter
	ring    []string              // users with waiters, in service order
	next    int                   // index in ring of the user served next
	waiting int
	closed  bool
}

type waiter struct {
	user    string
	ready   chan struct{} // closed when admitted
	moved   chan struct{} // signalled (cap 1) when pos changed
	pos     int           // guarded by scheduler.mu
	granted bool          // guarded by scheduler.mu
	elem    *list.Element
}

func newScheduler(slots int) *scheduler {
	return &scheduler{slots: max(1, slots), queues: map[string]*list.List{}}
}

// queued reports how many jobs wait for a slot.
func (s *scheduler) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiting
}

// acquire waits for a slot for user, calling onPos with the 1-based queue
// position whenever it changes. The returned release must be called once.
func (s *scheduler) acquire(ctx context.Context, user string, onPos func(int)) (release func(), err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, &Error{Code: CodeShuttingDown}
	}
	if s.running < s.slots && s.waiting == 0 {
		s.running++
		s.mu.Unlock()
		return s.releaseFunc(), nil
	}
	w := &waiter{user: user, ready: make(chan struct{}), moved: make(chan struct{}, 1)}
	q := s.queues[user]
	if q == nil {
		q = list.New()
		s.queues[user] = q
		s.ring = append(s.ring, user)
	}
	w.elem = q.PushBack(w)
	s.waiting++
	s.reposition()
	s.mu.Unlock()

	last := 0
	for {
		select {
		case <-w.ready:
			return s.releaseFunc(), nil
		case <-w.moved:
			s.mu.Lock()
			if w.granted {
				s.mu.Unlock()
				continue // ready is closed: the next select returns
			}
			if s.closed {
				s.remove(w)
				s.mu.Unlock()
				return nil, &Error{Code: CodeShuttingDown}
			}
			pos := w.pos
			s.mu.Unlock()
			if pos != last && onPos != nil {
				last = pos
				onPos(pos)
			}
		case <-ctx.Done():
			s.mu.Lock()
			if w.granted {
				// Admitted while cancelling: hand the slot back.
				s.mu.Unlock()
				s.releaseFunc()()
				return nil, ctx.Err()
			}
			s.remove(w)
			s.reposition()
			s.mu.Unlock()
			return nil, ctx.Err()
		}
	}
}

func (s *scheduler) releaseFunc() func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.running--
			s.dispatch()
		})
	}
}

// dispatch admits waiters while slots are free. Callers hold mu.
func (s *scheduler) dispatch() {
	admitted := false
	for s.running < s.slots && s.waiting > 0 && !s.closed {
		if s.next >= len(s.ring) {
			s.next = 0
		}
		user := s.ring[s.next]
		w := s.queues[user].Front().Value.(*waiter)
		s.remove(w)
		// remove() dropped the user from the ring if that was their last job,
		// which already moved s.next to the following user.
		if _, still := s.queues[user]; still {
			s.next++
		}
		w.granted = true
		s.running++
		close(w.ready)
		admitted = true
	}
	if admitted {
		s.reposition()
	}
}

// remove takes w out of its user's queue. Callers hold mu.
func (s *scheduler) remove(w *waiter) {
	q := s.queues[w.user]
	q.Remove(w.elem)
	s.waiting--
	if q.Len() > 0 {
		return
	}
	delete(s.queues, w.user)
	for i, u := range s.ring {
		if u == w.user {
			s.ring = append(s.ring[:i], s.ring[i+1:]...)
			if i < s.next {
				s.next--
			}
			break
		}
	}
	if s.next >= len(s.ring) {
		s.next = 0
	}
}

// reposition recomputes every waiter's position in the order dispatch will
// serve them (round by round from s.next) and signals those that moved.
// O(waiting), bounded by the queue cap. Callers hold mu.
func (s *scheduler) reposition() {
	n := len(s.ring)
	if n == 0 {
		return
	}
	cursors := make([]*list.Element, n)
	for i := range n {
		cursors[i] = s.queues[s.ring[(s.next+i)%n]].Front()
	}
	pos, left := 1, s.waiting
	for left > 0 {
		for i := range n {
			e := cursors[i]
			if e == nil {
				continue
			}
			w := e.Value.(*waiter)
			if w.pos != pos {
				w.pos = pos
				select {
				case w.moved <- struct{}{}:
				default:
				}
			}
			cursors[i] = e.Next()
			pos++
			left--
		}
	}
}

// close refuses new jobs and wakes every waiter with CodeShuttingDown.
// Running jobs keep their slots.
func (s *scheduler) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, q := range s.queues {
		for e := q.Front(); e != nil; e = e.Next() {
			select {
			case e.Value.(*waiter).moved <- struct{}{}:
			default:
			}
		}
	}
}

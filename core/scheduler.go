package core

import (
	"container/heap"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// scheduler admits jobs to the upstream: at most `slots` run at once, the
// rest wait in a fair queue.
//
// The queue is round robin over users, first come first served: users stand
// in one line, ordered by when their event arrived (its arrival sequence,
// the order of the platform's updates or interactions); the user at the
// front runs one job and, with more waiting, goes to the back of the line,
// behind everyone who arrived meanwhile. So the queue is plain FIFO while
// everyone has one job, one user's burst costs the others at most one slot
// per turn, and nobody starves however many newcomers arrive.
//
// The cost per job does not grow with the queue: joining and leaving the
// line is a binary search near its end or its front, and a waiter's position
// is computed only when it may have changed enough to be worth showing (see
// nextShown), never by renumbering every waiter when a slot frees. A waiting
// job holds no goroutine: it is a few hundred bytes in the line until
// admitted, when its start runs in a goroutine of its own.
type scheduler struct {
	refreshEvery time.Duration // how often a waiter is checked for having moved back
	// grace is how long a free slot is kept for an earlier arrival still on
	// its way to the queue (validating, reserving) rather than given to a
	// later one.
	grace time.Duration
	now   func() time.Time

	mu       sync.Mutex
	slots    int
	running  int
	waiting  int
	closed   bool
	line     queue[*account]     // users with waiting jobs, in service order
	users    map[string]*account // the same, by user
	multi    queue[*account]     // those with more than one job waiting, in the same order
	maxSeq   uint64              // highest arrival sequence queued or handed out
	order    uint64              // tie-break: the order things were queued in
	removals uint64              // jobs that left the queue: the clock of the watches
	watches  watchHeap

	// Arrivals handed out and not yet queued or given up, in sequence order.
	pending    []arrival
	unresolved map[uint64]int // seq → index in pending (+ pendingBase)
	pendBase   int            // pending[0]'s absolute index
	graceTimer *time.Timer
	graceAt    time.Time
}

type arrival struct {
	seq  uint64
	at   time.Time
	done bool
}

// account is one user's place in the line and their waiting jobs.
type account struct {
	user     string
	jobs     queue[*waiter] // by arrival
	key, n   uint64         // place in the line: arrival sequence, then order
	rejoined bool           // key is from going to the back, not from arrival
}

type waiter struct {
	acct      *account
	seq       uint64 // arrival sequence
	n         uint64 // queue order, breaks ties of seq
	start     func(release func(), err error)
	stopWatch func() bool // stops the context watch once admitted

	// Guarded by scheduler.mu.
	granted bool   // admitted (rather than given up or shut out)
	done    bool   // left the queue
	shown   int    // position last sent
	version int    // bumps with every position to send
	due     uint64 // removal count at which to look again (while in watches)
	hidx    int    // index in watches, -1 when not watched
	timer   *time.Timer

	onPos func(int)
	// pushMu orders position sends: a later position is never overtaken
	// by an earlier one computed in another goroutine.
	pushMu sync.Mutex
	sent   int // version last sent, guarded by pushMu
}

func newScheduler(slots int) *scheduler {
	return &scheduler{
		refreshEvery: 30 * time.Second,
		grace:        time.Second,
		now:          time.Now,
		unresolved:   map[uint64]int{},
		slots:        max(1, slots),
		line:         queue[*account]{before: inLine},
		users:        map[string]*account{},
		multi:        queue[*account]{before: inLine},
	}
}

// inLine orders accounts in the line: by arrival, then by queue order.
func inLine(a, b *account) bool { return a.key < b.key || (a.key == b.key && a.n < b.n) }

// submit queues user's job, which arrived with sequence seq (lower is
// earlier), and returns at once: start runs in a new goroutine with the
// slot's release once the job is admitted, or with the error that ended its
// wait (ctx done: the job is taken out of the queue; the scheduler closed:
// CodeShuttingDown). Waiting costs no goroutine. onPos gets the 1-based
// queue position when the job starts waiting and whenever it changed
// enough to show. release must be called once.
func (s *scheduler) submit(ctx context.Context, user string, seq uint64, onPos func(int), start func(release func(), err error)) {
	s.mu.Lock()
	s.resolveLocked(seq)
	if s.closed {
		s.mu.Unlock()
		go start(nil, &Error{Code: CodeShuttingDown})
		return
	}
	if s.running < s.slots && s.waiting == 0 && !s.expectingBefore(seq) {
		s.running++
		s.mu.Unlock()
		go start(s.releaseFunc(), nil)
		return
	}
	w, first := s.join(user, seq, onPos)
	w.start = start
	// A slot may have been kept free for this very arrival.
	ps := append(pushes{first}, s.dispatch()...)
	if !w.done {
		w.stopWatch = context.AfterFunc(ctx, func() { s.giveUp(w, waitEnded(ctx)) })
	}
	s.mu.Unlock()
	ps.send()
}

// waitEnded is the error of a wait that ctx ended: a deadline names the
// setting that ran out (limits.job_timeout counts the time in the queue).
func waitEnded(ctx context.Context) error {
	if cause := DeadlineCause(ctx); cause != nil {
		return &Error{Code: CodeTimeout, Err: fmt.Errorf("core: %w while the job waited for an upstream slot", cause)}
	}
	return ctx.Err()
}

// giveUp takes w out of the queue when its context ended first.
func (s *scheduler) giveUp(w *waiter, err error) {
	s.mu.Lock()
	if w.done {
		s.mu.Unlock()
		return // admitted meanwhile: start has the slot
	}
	s.remove(w)
	due := s.due()
	s.mu.Unlock()
	due.send()
	go w.start(nil, err)
}

// acquire is submit for a caller that waits: it blocks until the job is
// admitted or its wait ended.
func (s *scheduler) acquire(ctx context.Context, user string, seq uint64, onPos func(int)) (release func(), err error) {
	type result struct {
		release func()
		err     error
	}
	ch := make(chan result, 1)
	s.submit(ctx, user, seq, onPos, func(r func(), err error) { ch <- result{r, err} })
	r := <-ch
	return r.release, r.err
}

func (s *scheduler) releaseFunc() func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.running--
			ps := s.dispatch()
			ps = append(ps, s.due()...)
			s.mu.Unlock()
			ps.send()
		})
	}
}

// join queues a job and returns its first position to send. Callers hold mu.
func (s *scheduler) join(user string, seq uint64, onPos func(int)) (*waiter, push) {
	s.maxSeq = max(s.maxSeq, seq)
	s.order++
	w := &waiter{seq: seq, n: s.order, onPos: onPos, hidx: -1}
	a := s.users[user]
	if a == nil {
		a = &account{user: user, key: seq, n: s.order,
			jobs: queue[*waiter]{before: func(a, b *waiter) bool { return a.seq < b.seq || (a.seq == b.seq && a.n < b.n) }}}
		s.users[user] = a
		a.jobs.insert(w)
		s.line.insert(a)
	} else {
		if a.jobs.len() > 1 {
			s.multi.delete(a)
		}
		if a.jobs.insert(w); a.jobs.front() == w && !a.rejoined && seq < a.key {
			// An earlier event of a user still waiting for their first
			// turn reached the queue late: it takes their place by arrival.
			s.line.delete(a)
			a.key = seq
			s.line.insert(a)
		}
		s.multi.insert(a)
	}
	w.acct = a
	s.waiting++
	pos := s.position(w)
	first := s.show(w, pos)
	s.watch(w, pos)
	return w, first
}

// dispatch admits waiters while slots are free: the first job of the user at
// the front of the line, who then goes to the back if they have more.
// Callers hold mu; it returns the positions to send.
func (s *scheduler) dispatch() pushes {
	var out pushes
	for s.running < s.slots && s.waiting > 0 && !s.closed {
		if s.expectingBefore(s.line.front().key) {
			break // the slot waits for the earlier arrival (or its grace)
		}
		a := s.line.popFront()
		if a.jobs.len() > 1 {
			s.multi.popFront() // the same account: both keep line order
		}
		w := a.jobs.popFront()
		s.leave(w)
		w.granted = true
		s.running++
		if w.stopWatch != nil {
			w.stopWatch()
		}
		if w.start != nil { // nil only for waiters queued by join alone (benchmarks)
			go w.start(s.releaseFunc(), nil)
		}
		if a.jobs.len() == 0 {
			delete(s.users, a.user)
			continue
		}
		s.order++
		a.key, a.n, a.rejoined = s.maxSeq, s.order, true
		s.line.insert(a)
		if a.jobs.len() > 1 {
			s.multi.insert(a)
		}
		// Their next job is first in their own queue now: its position
		// jumps.
		next := a.jobs.front()
		pos := s.position(next)
		out = append(out, s.show(next, pos))
		s.watch(next, pos)
	}
	return out
}

// arrive hands out the next arrival sequence and expects it in the queue.
func (s *scheduler) arrive() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxSeq++
	s.unresolved[s.maxSeq] = s.pendBase + len(s.pending)
	s.pending = append(s.pending, arrival{seq: s.maxSeq, at: s.now()})
	return s.maxSeq
}

// resolve stops expecting seq: its job reached the queue or will never
// come (refused, or its event was not a job after all). Free slots held for
// it go to the next in line.
func (s *scheduler) resolve(seq uint64) {
	s.mu.Lock()
	if !s.resolveLocked(seq) {
		s.mu.Unlock()
		return
	}
	ps := s.dispatch()
	ps = append(ps, s.due()...)
	s.mu.Unlock()
	ps.send()
}

func (s *scheduler) resolveLocked(seq uint64) bool {
	i, ok := s.unresolved[seq]
	if !ok {
		return false
	}
	delete(s.unresolved, seq)
	s.pending[i-s.pendBase].done = true
	return true
}

// expectingBefore reports whether an arrival earlier than seq is still on
// its way and within its grace; if so, a timer dispatches when the grace
// runs out. Callers hold mu.
func (s *scheduler) expectingBefore(seq uint64) bool {
	now := s.now()
	for len(s.pending) > 0 {
		p := s.pending[0]
		if !p.done && now.Sub(p.at) < s.grace {
			break
		}
		delete(s.unresolved, p.seq) // gone past its grace: it lost its place
		s.pending = s.pending[1:]
		s.pendBase++
	}
	if len(s.pending) == 0 {
		s.pending = nil
		return false
	}
	p := s.pending[0]
	if p.seq >= seq {
		return false
	}
	if at := p.at.Add(s.grace); s.graceTimer == nil || at.Before(s.graceAt) {
		if s.graceTimer != nil {
			s.graceTimer.Stop()
		}
		s.graceAt = at
		s.graceTimer = time.AfterFunc(at.Sub(now), func() {
			s.mu.Lock()
			s.graceTimer = nil
			ps := s.dispatch()
			ps = append(ps, s.due()...)
			s.mu.Unlock()
			ps.send()
		})
	}
	return true
}

// remove takes a cancelled waiter out of the queue; its user keeps their
// place in the line for their next job. Callers hold mu.
func (s *scheduler) remove(w *waiter) {
	a := w.acct
	wasFront := a.jobs.front() == w
	a.jobs.delete(w)
	s.leave(w)
	switch a.jobs.len() {
	case 0:
		s.line.delete(a)
		delete(s.users, a.user)
		return
	case 1:
		s.multi.delete(a)
	}
	if wasFront {
		next := a.jobs.front()
		s.watch(next, s.position(next))
	}
}

// leave is the bookkeeping shared by every way out of the queue.
func (s *scheduler) leave(w *waiter) {
	w.done = true
	if w.timer != nil {
		w.timer.Stop()
	}
	if w.hidx >= 0 {
		heap.Remove(&s.watches, w.hidx)
	}
	s.waiting--
	s.removals++
}

// position is w's 1-based place in the order dispatch will serve, if nobody
// else arrives. For a user's first waiting job that is its user's place in
// the line. A later job, k turns behind, waits for everyone else in the
// line to run min(their jobs, k) jobs (one more for those ahead): every user
// with one job once, and those with several counted apart. O(log n) for
// k ≤ 1, which is every job unless users may queue three or more; O(users
// with several jobs) beyond. Callers hold mu.
func (s *scheduler) position(w *waiter) int {
	a := w.acct
	k := a.jobs.index(w)
	if k == 0 {
		return s.line.index(a) + 1
	}
	ahead := s.multi.index(a) // users with several jobs ahead of a
	// k own jobs, one each for users with a single job, then the others.
	pos := k + 1 + s.line.len() - s.multi.len()
	if k == 1 {
		return pos + s.multi.len() - 1 + ahead
	}
	for i, b := range s.multi.items[s.multi.head:] {
		switch {
		case b == a:
		case i < ahead:
			pos += min(b.jobs.len(), k+1)
		default:
			pos += min(b.jobs.len(), k)
		}
	}
	return pos
}

// nextShown is the position below which a waiter shown at p is told again:
// every step of the last ten, each ten below a hundred (99, 89 … 19, 9), and
// further back at the round number (199, 499, 999, 1999 …) at or below half
// of p. So a waiter costs a few updates however long it waits, not one per
// job ahead of it or per minute, and a removal wakes only the few waiters
// crossing a mark.
func nextShown(p int) int {
	switch {
	case p <= 10:
		return p - 1
	case p < 100:
		return (p/10)*10 - 1
	}
	mark := 99
	for unit := 100; ; unit *= 10 {
		for _, m := range []int{unit, 2 * unit, 5 * unit} {
			if 2*(m-1) > p {
				return mark
			}
			mark = m - 1
		}
	}
}

// watch arranges for w, now at pos, to be looked at again when enough jobs
// have left the queue for it to reach the next position worth showing (a
// removal moves it up by at most one, except for a user's later jobs when
// their own earlier job leaves: those are then seen a few removals late),
// and after refreshEvery. Callers hold mu.
func (s *scheduler) watch(w *waiter, pos int) {
	switch t := nextShown(w.shown); {
	case t <= 0 || pos <= t:
		if w.hidx >= 0 {
			heap.Remove(&s.watches, w.hidx)
		}
	case w.hidx >= 0:
		w.due = s.removals + uint64(pos-t)
		heap.Fix(&s.watches, w.hidx)
	default:
		w.due = s.removals + uint64(pos-t)
		heap.Push(&s.watches, w)
	}
	if w.timer == nil && s.refreshEvery > 0 {
		w.timer = time.AfterFunc(s.refreshEvery, func() { s.refresh(w) })
	}
}

// refresh re-sends w's position if it went back since it was last shown
// (an earlier arrival reached the queue late): going forward is the
// watches' part.
func (s *scheduler) refresh(w *waiter) {
	s.mu.Lock()
	if w.done {
		s.mu.Unlock()
		return
	}
	var p push
	if pos := s.position(w); pos > w.shown {
		p = s.show(w, pos)
		s.watch(w, pos)
	}
	w.timer.Reset(s.refreshEvery)
	s.mu.Unlock()
	p.send()
}

// due re-examines the waiters whose watch came due and returns the
// positions to send. Callers hold mu; send the result after unlocking.
func (s *scheduler) due() pushes {
	var out pushes
	if len(s.watches) > 0 && s.watches[0].due <= s.removals {
		// One removal wakes about one waiter per mark (18 below a hundred).
		out = make(pushes, 0, 32)
	}
	for len(s.watches) > 0 && s.watches[0].due <= s.removals {
		w := s.watches[0]
		pos := s.position(w)
		if pos <= nextShown(w.shown) {
			out = append(out, s.show(w, pos))
		}
		s.watch(w, pos)
	}
	return out
}

// show records pos as w's shown position. Callers hold mu.
func (s *scheduler) show(w *waiter, pos int) push {
	w.shown = pos
	w.version++
	return push{w: w, pos: pos, version: w.version}
}

// push is one position to send to a waiter, outside the scheduler's lock.
type push struct {
	w       *waiter
	pos     int
	version int
}

func (p push) send() {
	if p.w == nil || p.w.onPos == nil {
		return
	}
	p.w.pushMu.Lock()
	defer p.w.pushMu.Unlock()
	if p.version > p.w.sent {
		p.w.sent = p.version
		p.w.onPos(p.pos)
	}
}

type pushes []push

func (ps pushes) send() {
	for _, p := range ps {
		p.send()
	}
}

// close refuses new jobs and wakes every waiter with CodeShuttingDown.
// Running jobs keep their slots.
func (s *scheduler) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, a := range s.users {
		for _, w := range a.jobs.items[a.jobs.head:] {
			s.leave(w)
			if w.stopWatch != nil {
				w.stopWatch()
			}
			if w.start != nil {
				go w.start(nil, &Error{Code: CodeShuttingDown})
			}
		}
	}
	clear(s.users)
	s.line = queue[*account]{before: inLine}
	s.multi = queue[*account]{before: inLine}
}

// queue is a slice kept in order by before. Arrivals land at or near the
// end and admissions leave from the front, so both are O(1) amortised; only
// a cancellation moves the entries behind it.
type queue[T comparable] struct {
	items  []T
	head   int
	before func(a, b T) bool
}

func (q *queue[T]) len() int { return len(q.items) - q.head }

func (q *queue[T]) front() T { return q.items[q.head] }

// search is the index in items of the first entry not before x.
func (q *queue[T]) search(x T) int {
	i, _ := slices.BinarySearchFunc(q.items[q.head:], x, func(e, x T) int {
		switch {
		case e == x:
			return 0
		case q.before(e, x):
			return -1
		}
		return 1
	})
	return q.head + i
}

func (q *queue[T]) insert(x T) {
	if n := len(q.items); n == q.head || q.before(q.items[n-1], x) {
		q.items = append(q.items, x)
		return
	}
	q.items = slices.Insert(q.items, q.search(x), x)
}

func (q *queue[T]) popFront() T {
	var zero T
	x := q.items[q.head]
	q.items[q.head] = zero
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	} else if q.head > 64 && q.head*2 > len(q.items) {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return x
}

func (q *queue[T]) delete(x T) {
	i := q.search(x)
	if i == q.head {
		q.popFront()
		return
	}
	q.items = slices.Delete(q.items, i, i+1)
}

// index is x's 0-based place in the queue.
func (q *queue[T]) index(x T) int { return q.search(x) - q.head }

// watchHeap orders the watched waiters by the removal count at which they
// come due; each waiter is in it at most once.
type watchHeap []*waiter

func (h watchHeap) Len() int           { return len(h) }
func (h watchHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h watchHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i, j
}
func (h *watchHeap) Push(x any) {
	w := x.(*waiter)
	w.hidx = len(*h)
	*h = append(*h, w)
}
func (h *watchHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.hidx = -1
	return w
}

package core

// Metrics is what the pipeline tells operators (Prometheus, wired in cmd).
// Every label it passes is bounded: platforms, model names from the
// configuration, codes from this package — never a user, a prompt or a key.
type Metrics interface {
	// Refused counts a request turned away before anything was reserved:
	// rate limited, over quota, banned, too many jobs, queue full, …
	Refused(p Platform, code Code)
	// JobDone counts a reserved job that ended: outcome "" is delivered
	// (committed), any other code is why it was refunded.
	JobDone(p Platform, model string, outcome Code)
	// Recovered counts a job refunded at start-up, left pending by a crash.
	Recovered(outcome Code)
}

// WithMetrics reports to m (default: nowhere).
func WithMetrics(m Metrics) Option { return func(s *Service) { s.metrics = m } }

type noMetrics struct{}

func (noMetrics) Refused(Platform, Code)         {}
func (noMetrics) JobDone(Platform, string, Code) {}
func (noMetrics) Recovered(Code)                 {}

// Stats is the pipeline's state now, for gauges.
type Stats struct {
	Queued   int // jobs waiting for an upstream slot
	Running  int // jobs holding one
	InFlight int // jobs reserved and not yet settled
}

// Stats reads the queue and the jobs in flight.
func (s *Service) Stats() Stats {
	s.sched.mu.Lock()
	st := Stats{Queued: s.sched.waiting, Running: s.sched.running}
	s.sched.mu.Unlock()
	s.mu.Lock()
	st.InFlight = s.inflight
	s.mu.Unlock()
	return st
}

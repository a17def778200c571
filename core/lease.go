package core

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// Each job carries its owner (Config.Instance) and a lease the owner renews
// while the job runs. On a ledger several instances share, a pending job
// whose lease has passed belongs to a process that died: any live instance
// refunds it and tells its user (Watch). A store only one process can hold
// (Exclusive) needs no lease: every job pending in it at start is dead.

// Recover refunds the jobs a crash left pending and returns every job whose
// user is still to be told, for Tell: Outcome is CodeDeliveryCut for a job
// whose result was being sent (it may have arrived), CodeInterrupted
// otherwise. On an exclusive store it takes every pending job and every
// notice owed (call it before accepting new jobs); on a shared one only
// those whose lease has passed — the other instances' running jobs are
// theirs — and Watch takes the rest as their leases pass.
func (s *Service) Recover(ctx context.Context) ([]Job, error) {
	if !s.exclusive {
		return s.reclaim(ctx)
	}
	pending, err := s.store.PendingJobs(ctx)
	if err != nil {
		return nil, fmt.Errorf("core: recover: %w", err)
	}
	for _, j := range pending {
		code := CodeInterrupted
		if j.Delivering {
			code = CodeDeliveryCut
		}
		if err := s.ledger.RefundOwingNotice(ctx, j.Key, code, s.now()); err != nil {
			return nil, fmt.Errorf("core: recover %s: %w", j.Key, err)
		}
		s.metrics.Recovered(code)
		s.log.Warn("refunded job interrupted by a restart", "job", j.Key, "user", j.Account.User, "outcome", code)
	}
	owed, err := s.store.OwedNotices(ctx)
	if err != nil {
		return nil, fmt.Errorf("core: recover: %w", err)
	}
	return owed, nil
}

// Notifier tells the users of refunded jobs how they ended, and confirms
// each notice with Notified.
type Notifier func(ctx context.Context, jobs []Job)

// Tell hands jobs returned by Recover (or taken over by Watch) to notify,
// and holds their leases while it runs: on a shared ledger no other
// instance tells them meanwhile, and a notice notify did not confirm is
// taken up again by some instance once its lease passes.
func (s *Service) Tell(ctx context.Context, jobs []Job, notify Notifier) {
	if len(jobs) == 0 {
		return
	}
	s.mu.Lock()
	for _, j := range jobs {
		s.telling[j.Key]++
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, j := range jobs {
			if s.telling[j.Key]--; s.telling[j.Key] <= 0 {
				delete(s.telling, j.Key)
			}
		}
	}()
	notify(ctx, jobs)
}

// Watch keeps this instance's leases and takes over the jobs of instances
// that died, until ctx ends. Every 2 s (or Lease/3, if shorter) it renews
// the leases of its jobs in flight and of the notices it is telling that
// are due, and cancels the jobs whose cancel was asked on another
// instance; every Lease/3 it refunds the pending jobs whose lease has
// passed and tells their users through notify (as it does notices owed
// that nobody is telling). Run it for as long as jobs run (through
// Shutdown's drain). On an exclusive store it returns at once: there is
// nobody to take over from.
func (s *Service) Watch(ctx context.Context, notify Notifier) error {
	if s.exclusive {
		return nil
	}
	// Leases are looked at more often than they need renewing, for the
	// cancels asked on other instances; each is written once a third of
	// a lease.
	renew := time.NewTicker(min(s.cfg.Lease/3, cancelEvery))
	defer renew.Stop()
	look := time.NewTicker(s.cfg.Lease / 3)
	defer look.Stop()
	var tellers sync.WaitGroup
	defer tellers.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-renew.C:
			s.renewLeases(ctx)
			continue
		case <-look.C:
		}
		jobs, err := s.reclaim(ctx)
		if err != nil {
			s.log.Warn("looking for jobs of stopped instances failed", "err", err)
		}
		if len(jobs) > 0 {
			tellers.Add(1)
			go func() {
				defer tellers.Done()
				s.Tell(ctx, jobs, notify)
			}()
		}
	}
}

// leaseChunk bounds the jobs one renewal transaction locks.
const leaseChunk = 100

// cancelEvery bounds how long a cancel asked on another instance waits for
// the instance running the job to see it.
const cancelEvery = 2 * time.Second

// renewLeases extends the leases of the jobs this instance holds that end
// within two thirds of a lease, and cancels those whose cancel was asked
// on another instance.
func (s *Service) renewLeases(ctx context.Context) {
	s.mu.Lock()
	keys := slices.Sorted(maps.Keys(s.active)) // sorted: renewals lock rows in one order
	for k := range s.telling {
		if _, ok := s.active[k]; !ok {
			keys = append(keys, k)
		}
	}
	s.mu.Unlock()
	if len(keys) == 0 {
		return
	}
	slices.Sort(keys)
	now := s.now()
	until, due := now.Add(s.cfg.Lease), now.Add(s.cfg.Lease*2/3)
	for chunk := range slices.Chunk(keys, leaseChunk) {
		cancels, err := s.ledger.Renew(ctx, s.cfg.Instance, chunk, due, until)
		if err != nil {
			s.log.Error("renewing job leases failed: if it keeps failing past the lease, other instances refund these jobs",
				"jobs", len(chunk), "lease", s.cfg.Lease, "err", err)
		}
		for key, by := range cancels {
			s.cancelLocal(key, by, "another instance")
		}
	}
}

// holds reports whether this instance is running or telling the job of key.
func (s *Service) holds(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, running := s.active[key]
	return running || s.telling[key] > 0
}

// reclaim takes over the pending jobs and notices owed whose lease has
// passed, refunding the jobs, and returns them to tell.
func (s *Service) reclaim(ctx context.Context) ([]Job, error) {
	now := s.now()
	pending, err := s.store.PendingJobs(ctx)
	if err != nil {
		return nil, fmt.Errorf("core: pending jobs: %w", err)
	}
	owed, err := s.store.OwedNotices(ctx)
	if err != nil {
		return nil, fmt.Errorf("core: owed notices: %w", err)
	}
	var out []Job
	seen := map[string]bool{}
	for _, j := range append(pending, owed...) {
		if seen[j.Key] || now.Before(j.Lease) || s.holds(j.Key) {
			continue
		}
		if j.State != JobPending && s.cfg.Platforms != nil && j.User.Platform != "" && !slices.Contains(s.cfg.Platforms, j.User.Platform) {
			continue // a notice for a platform another instance serves
		}
		seen[j.Key] = true
		got, ok, err := s.ledger.Reclaim(ctx, j.Key, s.cfg.Instance, now, now.Add(s.cfg.Lease))
		if err != nil {
			return out, err
		}
		if !ok {
			continue // renewed, settled or taken by another instance meanwhile
		}
		if j.State == JobPending {
			s.metrics.Recovered(got.Outcome)
			s.log.Warn("refunded a job whose instance stopped renewing its lease", "job", j.Key, "user", j.Account.User,
				"owner", j.Owner, "lease_passed", now.Sub(j.Lease).Round(time.Millisecond), "outcome", got.Outcome)
		}
		out = append(out, got)
	}
	return out, nil
}

// randomName is a short random name for an instance not given one.
func randomName() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

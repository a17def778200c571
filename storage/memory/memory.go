// Package memory is an in-memory core.Store: the ledger for tests and for the
// one-shot `imaginebot imagine` check, where nothing needs to outlive the process.
package memory

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/imaginebot/imaginebot/core"
)

// Store keeps everything in maps behind one lock. Transactions stage their
// writes and apply them only when fn succeeds, like a real rollback.
type Store struct {
	mu       sync.RWMutex
	accounts map[core.AccountKey]core.Account
	scopes   map[string]core.ScopeSettings
	jobs     map[string]core.Job
	order    []string // job keys in insertion order, for history
	audit    []core.AuditEntry
	settings map[string]string
	limits   map[string]core.UserLimit
	events   map[string]time.Time // claimed event keys, when claimed
	shared   bool
}

var (
	_ core.Store     = (*Store)(nil)
	_ core.Exclusive = (*Store)(nil)
)

// Option configures New.
type Option func(*Store)

// Shared makes the store report itself shared (Exclusive is false), as a
// database several instances use is: core tests give one such store to two
// services to play two instances sharing a ledger.
func Shared() Option { return func(s *Store) { s.shared = true } }

// New returns an empty store, exclusive unless Shared is given.
func New(opts ...Option) *Store {
	s := &Store{
		accounts: map[core.AccountKey]core.Account{},
		scopes:   map[string]core.ScopeSettings{},
		jobs:     map[string]core.Job{},
		settings: map[string]string{},
		limits:   map[string]core.UserLimit{},
		events:   map[string]time.Time{},
	}
	for _, opt := range opts {
		opt(s)
	}
	return s
}

// Exclusive reports whether one process holds the store (core.Exclusive):
// true, the maps living in it, unless New was given Shared.
func (s *Store) Exclusive() bool { return !s.shared }

// Update runs fn in a write transaction.
func (s *Store) Update(ctx context.Context, fn func(core.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := &tx{s: s, writable: true,
		accounts: map[core.AccountKey]core.Account{},
		scopes:   map[string]core.ScopeSettings{},
		jobs:     map[string]core.Job{},
		settings: map[string]string{},
		limits:   map[string]core.UserLimit{},
		events:   map[string]time.Time{},
	}
	if err := fn(tx); err != nil {
		return err
	}
	for k, a := range tx.accounts {
		s.accounts[k] = a
	}
	for k, sc := range tx.scopes {
		s.scopes[k] = sc
	}
	for _, k := range tx.newJobs {
		s.order = append(s.order, k)
	}
	for k, j := range tx.jobs {
		s.jobs[k] = j
	}
	s.audit = append(s.audit, tx.audit...)
	for k, v := range tx.settings {
		s.settings[k] = v
	}
	for k, l := range tx.limits {
		s.limits[k] = l
	}
	for k, at := range tx.events {
		s.events[k] = at
	}
	return nil
}

// View runs fn in a read-only transaction.
func (s *Store) View(ctx context.Context, fn func(core.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return fn(&tx{s: s})
}

// OwedNotices lists jobs whose user is still to be told, oldest first.
func (s *Store) OwedNotices(ctx context.Context) ([]core.Job, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []core.Job
	for _, k := range s.order {
		if j := s.jobs[k]; j.NoticeOwed {
			out = append(out, j)
		}
	}
	return out, nil
}

// PendingJobs lists jobs still pending, oldest first.
func (s *Store) PendingJobs(ctx context.Context) ([]core.Job, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []core.Job
	for _, k := range s.order {
		if j := s.jobs[k]; j.State == core.JobPending {
			out = append(out, j)
		}
	}
	return out, nil
}

// RecentJobs lists an account's jobs, newest first.
func (s *Store) RecentJobs(ctx context.Context, k core.AccountKey, limit int) ([]core.Job, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []core.Job
	for _, key := range slices.Backward(s.order) {
		if len(out) >= limit {
			break
		}
		if j := s.jobs[key]; j.Account == k {
			out = append(out, j)
		}
	}
	return out, nil
}

// Audit lists audit entries of scope ("" = all), newest first.
func (s *Store) Audit(ctx context.Context, scope string, limit int) ([]core.AuditEntry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []core.AuditEntry
	for _, e := range slices.Backward(s.audit) {
		if len(out) >= limit {
			break
		}
		if scope == "" || e.Scope == scope {
			out = append(out, e)
		}
	}
	return out, nil
}

type tx struct {
	s        *Store
	writable bool
	accounts map[core.AccountKey]core.Account
	scopes   map[string]core.ScopeSettings
	jobs     map[string]core.Job
	newJobs  []string
	audit    []core.AuditEntry
	settings map[string]string
	limits   map[string]core.UserLimit
	events   map[string]time.Time
}

func (t *tx) Setting(name string) (string, bool, error) {
	if v, ok := t.settings[name]; ok {
		return v, true, nil
	}
	v, ok := t.s.settings[name]
	return v, ok, nil
}

func (t *tx) PutSetting(name, value string) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	t.settings[name] = value
	return nil
}

func (t *tx) Account(k core.AccountKey) (core.Account, error) {
	if a, ok := t.accounts[k]; ok {
		return a, nil
	}
	if a, ok := t.s.accounts[k]; ok {
		return a, nil
	}
	return core.Account{Key: k}, nil
}

func (t *tx) PutAccount(a core.Account) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	t.accounts[a.Key] = a
	return nil
}

func (t *tx) Scope(scope string) (core.ScopeSettings, error) {
	if s, ok := t.scopes[scope]; ok {
		return s, nil
	}
	if s, ok := t.s.scopes[scope]; ok {
		return s, nil
	}
	return core.ScopeSettings{Scope: scope}, nil
}

func (t *tx) PutScope(s core.ScopeSettings) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	t.scopes[s.Scope] = s
	return nil
}

func (t *tx) Job(key string) (core.Job, bool, error) {
	if j, ok := t.jobs[key]; ok {
		return j, true, nil
	}
	j, ok := t.s.jobs[key]
	return j, ok, nil
}

func (t *tx) PutJob(j core.Job) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	if _, ok := t.s.jobs[j.Key]; !ok {
		if _, staged := t.jobs[j.Key]; !staged {
			t.newJobs = append(t.newJobs, j.Key)
		}
	}
	t.jobs[j.Key] = j
	return nil
}

func (t *tx) AppendAudit(e core.AuditEntry) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	t.audit = append(t.audit, e)
	return nil
}

func (t *tx) Limit(user string) (core.UserLimit, error) {
	if l, ok := t.limits[user]; ok {
		return l, nil
	}
	if l, ok := t.s.limits[user]; ok {
		return l, nil
	}
	return core.UserLimit{User: user}, nil
}

func (t *tx) PutLimit(l core.UserLimit) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	t.limits[l.User] = l
	return nil
}

func (t *tx) Claim(key string, at time.Time) (bool, error) {
	if !t.writable {
		return false, core.ErrTxReadOnly
	}
	if _, ok := t.events[key]; ok {
		return false, nil
	}
	if _, ok := t.s.events[key]; ok {
		return false, nil
	}
	t.events[key] = at
	return true, nil
}

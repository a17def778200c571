package core

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// AccountView is an account as moderators see it.
type AccountView struct {
	Key         AccountKey
	Balance     Balance
	DailySource string // "user", "scope", "config" or "default": where Daily comes from
	Banned      bool
}

// maxUnits bounds moderator inputs so a typo cannot overflow anything.
const maxUnits = 1_000_000

// Audit actions.
const (
	ActionSetDaily      = "set-daily"
	ActionSetScopeDaily = "set-scope-daily"
	ActionGrant         = "grant"
	ActionRevoke        = "revoke"
	ActionReset         = "reset"
	ActionBan           = "ban"
	ActionUnban         = "unban"
)

// Show returns an account's state. Users may see their own.
func (s *Service) Show(ctx context.Context, actor Actor, k AccountKey) (AccountView, error) {
	if err := s.authorize(actor, k, true); err != nil {
		return AccountView{}, err
	}
	var v AccountView
	err := s.store.View(ctx, func(tx Tx) error {
		a, sc, err := loadAccount(tx, k)
		if err != nil {
			return err
		}
		v = s.view(a, sc, s.now())
		return nil
	})
	return v, wrapStore("show", err)
}

// SetDaily sets a user's daily allowance override; nil clears it.
func (s *Service) SetDaily(ctx context.Context, actor Actor, k AccountKey, daily *int) (AccountView, error) {
	if daily != nil {
		if err := checkUnits(*daily, true); err != nil {
			return AccountView{}, err
		}
	}
	return s.mutate(ctx, actor, k, ActionSetDaily, func(a *Account) error {
		a.Daily = daily
		return nil
	})
}

// Grant adds credits (they never reset).
func (s *Service) Grant(ctx context.Context, actor Actor, k AccountKey, n int) (AccountView, error) {
	if err := checkUnits(n, false); err != nil {
		return AccountView{}, err
	}
	return s.mutate(ctx, actor, k, ActionGrant, func(a *Account) error {
		a.Credits = min(a.Credits+n, maxUnits)
		return nil
	})
}

// Revoke removes up to n credits (never below zero).
func (s *Service) Revoke(ctx context.Context, actor Actor, k AccountKey, n int) (AccountView, error) {
	if err := checkUnits(n, false); err != nil {
		return AccountView{}, err
	}
	return s.mutate(ctx, actor, k, ActionRevoke, func(a *Account) error {
		a.Credits = max(0, a.Credits-n)
		return nil
	})
}

// ResetToday forgets today's usage, giving the whole daily allowance back.
func (s *Service) ResetToday(ctx context.Context, actor Actor, k AccountKey) (AccountView, error) {
	return s.mutate(ctx, actor, k, ActionReset, func(a *Account) error {
		a.Used, a.UsedDay = 0, ""
		return nil
	})
}

// Ban stops a user from making images in the scope.
func (s *Service) Ban(ctx context.Context, actor Actor, k AccountKey) (AccountView, error) {
	if actor.User.Key() == k.User {
		return AccountView{}, &Error{Code: CodeInvalidArgument, Reason: ReasonSelf, Err: fmt.Errorf("core: %s tried to ban themselves", k.User)}
	}
	return s.mutate(ctx, actor, k, ActionBan, func(a *Account) error {
		a.Banned = true
		return nil
	})
}

// Unban lifts a ban.
func (s *Service) Unban(ctx context.Context, actor Actor, k AccountKey) (AccountView, error) {
	return s.mutate(ctx, actor, k, ActionUnban, func(a *Account) error {
		a.Banned = false
		return nil
	})
}

// SetScopeDaily sets the daily allowance for everyone in scope without their
// own override; nil returns the scope to the configured default.
func (s *Service) SetScopeDaily(ctx context.Context, actor Actor, scope string, daily *int) (int, error) {
	if err := s.authorize(actor, AccountKey{Scope: scope}, false); err != nil {
		return 0, err
	}
	if daily != nil {
		if err := checkUnits(*daily, true); err != nil {
			return 0, err
		}
	}
	now := s.now()
	var eff int
	err := s.store.Update(ctx, func(tx Tx) error {
		if err := claimEvent(tx, actor, now); err != nil {
			return err
		}
		sc, err := tx.Scope(scope)
		if err != nil {
			return err
		}
		probe := Account{Key: AccountKey{Scope: scope}}
		before := s.cfg.Quotas.EffectiveDaily(probe, sc)
		sc.Daily = daily
		eff = s.cfg.Quotas.EffectiveDaily(probe, sc)
		if err := tx.PutScope(sc); err != nil {
			return err
		}
		return tx.AppendAudit(AuditEntry{Time: now, Scope: scope, Actor: actor.User.Key(), ActorName: actor.User.Name,
			Role: actor.Role, Action: ActionSetScopeDaily,
			Before: "daily=" + strconv.Itoa(before), After: "daily=" + strconv.Itoa(eff)})
	})
	if err != nil {
		return 0, wrapStore("set scope daily", err)
	}
	s.log.Info("moderator action", "action", ActionSetScopeDaily, "actor", actor.User.Key(), "scope", scope, "daily", eff)
	return eff, nil
}

// History lists an account's recent jobs, newest first. Users may see their own.
func (s *Service) History(ctx context.Context, actor Actor, k AccountKey, limit int) ([]Job, error) {
	if err := s.authorize(actor, k, true); err != nil {
		return nil, err
	}
	jobs, err := s.store.RecentJobs(ctx, k, clampLimit(limit))
	return jobs, wrapStore("history", err)
}

// AuditLog lists a scope's moderator actions, newest first. Only owners may
// read every scope at once (scope "").
func (s *Service) AuditLog(ctx context.Context, actor Actor, scope string, limit int) ([]AuditEntry, error) {
	if scope == "" && actor.Role < RoleOwner {
		return nil, &Error{Code: CodeForbidden, Err: fmt.Errorf("core: %s may not read every scope's audit log", actor.User.Key())}
	}
	if err := s.authorize(actor, AccountKey{Scope: scope}, false); err != nil {
		return nil, err
	}
	entries, err := s.store.Audit(ctx, scope, clampLimit(limit))
	return entries, wrapStore("audit", err)
}

// authorize is the one permission check for moderator operations: owners
// and moderators of the scope may act (adapters resolve Role against the
// scope acted on); users only read their own account when self is allowed.
func (s *Service) authorize(actor Actor, k AccountKey, self bool) error {
	if actor.Role >= RoleModerator || (self && k.User != "" && actor.User.Key() == k.User) {
		return nil
	}
	return &Error{Code: CodeForbidden, Err: fmt.Errorf("core: %s (%s) may not manage %s", actor.User.Key(), actor.Role, k)}
}

// mutate applies one moderator change to an account with its audit entry,
// in one transaction.
func (s *Service) mutate(ctx context.Context, actor Actor, k AccountKey, action string, change func(*Account) error) (AccountView, error) {
	if err := s.authorize(actor, k, false); err != nil {
		return AccountView{}, err
	}
	if k.User == "" || k.Scope == "" {
		return AccountView{}, &Error{Code: CodeInvalidArgument, Err: fmt.Errorf("core: %s: empty account %q", action, k)}
	}
	now := s.now()
	var v AccountView
	err := s.store.Update(ctx, func(tx Tx) error {
		if err := claimEvent(tx, actor, now); err != nil {
			return err
		}
		a, sc, err := loadAccount(tx, k)
		if err != nil {
			return err
		}
		before := s.view(a, sc, now)
		if err := change(&a); err != nil {
			return err
		}
		if err := tx.PutAccount(a); err != nil {
			return err
		}
		v = s.view(a, sc, now)
		return tx.AppendAudit(AuditEntry{Time: now, Scope: k.Scope, Actor: actor.User.Key(), ActorName: actor.User.Name,
			Role: actor.Role, Action: action, Target: k.User, Before: before.String(), After: v.String()})
	})
	if err != nil {
		return AccountView{}, wrapStore(action, err)
	}
	s.log.Info("moderator action", "action", action, "actor", actor.User.Key(), "account", k.String(), "after", v.String())
	return v, nil
}

// claimEvent makes a change carried by actor.Event act once: in the
// change's own transaction, so a change that fails claims nothing.
func claimEvent(tx Tx, actor Actor, now time.Time) error {
	if actor.Event == "" {
		return nil
	}
	fresh, err := tx.Claim(actor.Event, now)
	if err != nil || fresh {
		return err
	}
	return &Error{Code: CodeDuplicate, Err: fmt.Errorf("core: event %s was acted on already", actor.Event)}
}

func (s *Service) view(a Account, sc ScopeSettings, now time.Time) AccountView {
	src := "default"
	switch {
	case a.Daily != nil:
		src = "user"
	case sc.Daily != nil:
		src = "scope"
	default:
		if _, ok := s.cfg.Quotas.ScopeDaily[a.Key.Scope]; ok {
			src = "config"
		}
	}
	return AccountView{Key: a.Key, Balance: s.cfg.Quotas.Balance(a, sc, now), DailySource: src, Banned: a.Banned}
}

// String is the compact form used in audit entries' Before and After. The
// catalogue parses it back to word it per language, and databases hold it:
// change it only in ways that parsing still reads.
func (v AccountView) String() string {
	b := v.Balance
	return fmt.Sprintf("daily=%d(%s) used=%d credits=%d banned=%t", b.Daily, v.DailySource, b.Used, b.Credits, v.Banned)
}

func checkUnits(n int, zeroOK bool) error {
	if n < 0 || n > maxUnits || (n == 0 && !zeroOK) {
		lo := 1
		if zeroOK {
			lo = 0
		}
		return &Error{Code: CodeInvalidArgument, Reason: ReasonOutOfRange, Value: strconv.Itoa(n), Min: lo, Limit: maxUnits}
	}
	return nil
}

func clampLimit(n int) int {
	if n <= 0 || n > 100 {
		return 20
	}
	return n
}

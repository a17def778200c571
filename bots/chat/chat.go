// Package chat is what the chat adapters share beyond their texts: the core
// operations they call, and moderator actions run and worded the same way
// on every platform. Each adapter only parses its own command syntax into
// an Action and shows the answer.
package chat

import (
	"context"
	"time"

	"github.com/imaginebot/imaginebot/bots/catalog"
	"github.com/imaginebot/imaginebot/core"
)

// Jobs is what the adapters need from core to run jobs; *core.Service
// satisfies it.
type Jobs interface {
	Submit(ctx context.Context, req core.Request, rep core.Reporter, done func(core.Receipt, error)) error
	Arrival() uint64
	Abandon(seq uint64)
	Cancel(ctx context.Context, actor core.Actor, key string) error
	Notified(ctx context.Context, key string) error
	Balance(ctx context.Context, k core.AccountKey) (core.Balance, error)
	Job(ctx context.Context, key string) (core.Job, error)
	Models() []core.Model
	Limits() core.Config
}

// Moderation is what moderator actions need from core.
type Moderation interface {
	Show(ctx context.Context, actor core.Actor, k core.AccountKey) (core.AccountView, error)
	SetDaily(ctx context.Context, actor core.Actor, k core.AccountKey, daily *int) (core.AccountView, error)
	Grant(ctx context.Context, actor core.Actor, k core.AccountKey, n int) (core.AccountView, error)
	Revoke(ctx context.Context, actor core.Actor, k core.AccountKey, n int) (core.AccountView, error)
	ResetToday(ctx context.Context, actor core.Actor, k core.AccountKey) (core.AccountView, error)
	Ban(ctx context.Context, actor core.Actor, k core.AccountKey) (core.AccountView, error)
	Unban(ctx context.Context, actor core.Actor, k core.AccountKey) (core.AccountView, error)
	SetScopeDaily(ctx context.Context, actor core.Actor, scope string, daily *int) (int, error)
	History(ctx context.Context, actor core.Actor, k core.AccountKey, limit int) ([]core.Job, error)
	AuditLog(ctx context.Context, actor core.Actor, scope string, limit int) ([]core.AuditEntry, error)
}

// Service is all of them.
type Service interface {
	Jobs
	Moderation
	Settings
}

// Action names, as both platforms' commands call them.
const (
	Show       = "show"
	Grant      = "grant"
	Revoke     = "revoke"
	SetDaily   = "set-daily"
	ScopeDaily = "scope-daily"
	Reset      = "reset"
	Ban        = "ban"
	Unban      = "unban"
	History    = "history"
	Audit      = "audit"
)

// Action is one moderator command, parsed by the adapter.
type Action struct {
	Name   string
	Actor  core.Actor
	Scope  string
	Target string // the account's user key; "" for scope-wide actions
	Who    string // how the target is shown: "@alice"
	N      int    // credits to grant or revoke; how many entries (history, audit)
	Daily  *int   // the allowance to set; nil = back to the default
	// AuditAll lists every scope's actions (an owner's view).
	AuditAll bool
	// Name of a user key in the audit, when the adapter knows it.
	NameOf func(userKey string) string
}

// Do runs a and returns the answer in p's language: what was done, then
// the account as it is now (or the list asked for). An error is a refusal
// or a failure for the adapter to word (catalog.Printer.Error).
func Do(ctx context.Context, svc Moderation, a Action, p catalog.Printer, loc *time.Location) (string, error) {
	k := core.AccountKey{Scope: a.Scope, User: a.Target}
	var v core.AccountView
	var head string
	var err error
	switch a.Name {
	case ScopeDaily:
		eff, err := svc.SetScopeDaily(ctx, a.Actor, a.Scope, a.Daily)
		if err != nil {
			return "", err
		}
		return p.T("mod.scope_daily", "Daily", eff), nil
	case Audit:
		scope := a.Scope
		if a.AuditAll {
			scope = ""
		}
		entries, err := svc.AuditLog(ctx, a.Actor, scope, a.N)
		if err != nil {
			return "", err
		}
		return p.Audit(entries, catalog.AuditLine{Name: a.NameOf, ShowScope: a.AuditAll, Location: loc}), nil
	case History:
		jobs, err := svc.History(ctx, a.Actor, k, a.N)
		if err != nil {
			return "", err
		}
		return p.History(jobs, a.Who, loc), nil
	case Show:
		v, err = svc.Show(ctx, a.Actor, k)
	case Grant:
		v, err = svc.Grant(ctx, a.Actor, k, a.N)
		head = p.N("mod.granted", a.N, "Name", a.Who)
	case Revoke:
		v, err = svc.Revoke(ctx, a.Actor, k, a.N)
		head = p.N("mod.revoked", a.N, "Name", a.Who)
	case SetDaily:
		v, err = svc.SetDaily(ctx, a.Actor, k, a.Daily)
		if a.Daily != nil {
			head = p.T("mod.set_daily", "Name", a.Who, "Daily", *a.Daily)
		} else {
			head = p.T("mod.daily_default", "Name", a.Who)
		}
	case Reset:
		v, err = svc.ResetToday(ctx, a.Actor, k)
		head = p.T("mod.reset", "Name", a.Who)
	case Ban:
		v, err = svc.Ban(ctx, a.Actor, k)
		head = p.T("mod.banned", "Name", a.Who)
	case Unban:
		v, err = svc.Unban(ctx, a.Actor, k)
		head = p.T("mod.unbanned", "Name", a.Who)
	default:
		return "", &core.Error{Code: core.CodeInvalidArgument}
	}
	if err != nil {
		return "", err
	}
	text := p.View(v, a.Who)
	if head != "" {
		text = head + "\n\n" + text
	}
	return text, nil
}

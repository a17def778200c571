package core_test

import (
	"context"
	"testing"

	"github.com/imaginebot/imaginebot/core"
)

func TestModeratorPermissions(t *testing.T) {
	ctx := context.Background()
	owner := core.Actor{User: core.User{Platform: core.PlatformTelegram, ID: "99", Name: "owner"}, Role: core.RoleOwner}
	mod := core.Actor{User: core.User{Platform: core.PlatformTelegram, ID: "98", Name: "mod"}, Role: core.RoleModerator}
	plain := core.Actor{User: bob, Role: core.RoleUser}
	self := core.Actor{User: alice, Role: core.RoleUser}
	three := 3
	ops := []struct {
		name string
		do   func(e *env, a core.Actor) error
		self bool // a user may do it to their own account
	}{
		{"show", func(e *env, a core.Actor) error { _, err := e.svc.Show(ctx, a, acct(alice)); return err }, true},
		{"history", func(e *env, a core.Actor) error { _, err := e.svc.History(ctx, a, acct(alice), 5); return err }, true},
		{"grant", func(e *env, a core.Actor) error { _, err := e.svc.Grant(ctx, a, acct(alice), 5); return err }, false},
		{"revoke", func(e *env, a core.Actor) error { _, err := e.svc.Revoke(ctx, a, acct(alice), 5); return err }, false},
		{"set daily", func(e *env, a core.Actor) error { _, err := e.svc.SetDaily(ctx, a, acct(alice), &three); return err }, false},
		{"reset", func(e *env, a core.Actor) error { _, err := e.svc.ResetToday(ctx, a, acct(alice)); return err }, false},
		{"ban", func(e *env, a core.Actor) error { _, err := e.svc.Ban(ctx, a, acct(alice)); return err }, false},
		{"unban", func(e *env, a core.Actor) error { _, err := e.svc.Unban(ctx, a, acct(alice)); return err }, false},
		{"scope daily", func(e *env, a core.Actor) error { _, err := e.svc.SetScopeDaily(ctx, a, scope, &three); return err }, false},
		{"audit", func(e *env, a core.Actor) error { _, err := e.svc.AuditLog(ctx, a, scope, 5); return err }, false},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			for _, a := range []core.Actor{owner, mod} {
				if err := op.do(newEnv(t, nil), a); err != nil {
					t.Fatalf("%s: %v", a.Role, err)
				}
			}
			e := newEnv(t, nil)
			err := op.do(e, plain)
			if core.ErrorCode(err) != core.CodeForbidden {
				t.Fatalf("plain user: err = %v, want forbidden", err)
			}
			if audit, _ := e.store.Audit(ctx, "", 10); len(audit) != 0 {
				t.Fatalf("refused action audited: %+v", audit)
			}
			if err := op.do(e, self); (err == nil) != op.self {
				t.Fatalf("self: err = %v", err)
			}
		})
	}
}

func TestModeratorActions(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil) // default daily 5
	mod := core.Actor{User: core.User{Platform: core.PlatformTelegram, ID: "98", Name: "mod"}, Role: core.RoleModerator}
	k := acct(alice)
	if _, err := e.svc.Imagine(ctx, req("j1", alice, "x"), &fakeReporter{}); err != nil {
		t.Fatal(err)
	}
	two := 2
	steps := []struct {
		name string
		do   func() (core.AccountView, error)
		want string
	}{
		{"grant", func() (core.AccountView, error) { return e.svc.Grant(ctx, mod, k, 10) }, "daily=5(default) used=1 credits=10 banned=false"},
		{"revoke clamps at zero", func() (core.AccountView, error) { return e.svc.Revoke(ctx, mod, k, 25) }, "daily=5(default) used=1 credits=0 banned=false"},
		{"set daily", func() (core.AccountView, error) { return e.svc.SetDaily(ctx, mod, k, &two) }, "daily=2(user) used=1 credits=0 banned=false"},
		{"reset today", func() (core.AccountView, error) { return e.svc.ResetToday(ctx, mod, k) }, "daily=2(user) used=0 credits=0 banned=false"},
		{"clear daily", func() (core.AccountView, error) { return e.svc.SetDaily(ctx, mod, k, nil) }, "daily=5(default) used=0 credits=0 banned=false"},
		{"ban", func() (core.AccountView, error) { return e.svc.Ban(ctx, mod, k) }, "daily=5(default) used=0 credits=0 banned=true"},
		{"unban", func() (core.AccountView, error) { return e.svc.Unban(ctx, mod, k) }, "daily=5(default) used=0 credits=0 banned=false"},
	}
	for _, s := range steps {
		v, err := s.do()
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if v.String() != s.want {
			t.Fatalf("%s: %s, want %s", s.name, v, s.want)
		}
	}
	if _, err := e.svc.SetScopeDaily(ctx, mod, scope, &two); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.svc.Show(ctx, mod, k); v.String() != "daily=2(scope) used=0 credits=0 banned=false" {
		t.Fatalf("after scope daily: %s", v)
	}
	audit, err := e.svc.AuditLog(ctx, mod, scope, 50)
	if err != nil {
		t.Fatal(err)
	}
	if len(audit) != len(steps)+1 {
		t.Fatalf("audit entries = %d, want %d", len(audit), len(steps)+1)
	}
	last, first := audit[0], audit[len(audit)-1]
	if last.Action != core.ActionSetScopeDaily || last.Before != "daily=5" || last.After != "daily=2" {
		t.Fatalf("newest entry = %+v", last)
	}
	if first.Action != core.ActionGrant || first.Actor != "telegram:98" || first.Target != alice.Key() ||
		first.Before != "daily=5(default) used=1 credits=0 banned=false" || first.After != steps[0].want {
		t.Fatalf("oldest entry = %+v", first)
	}
	if _, err := e.svc.AuditLog(ctx, mod, "", 10); core.ErrorCode(err) != core.CodeForbidden {
		t.Fatalf("moderator reading every scope: %v", err)
	}
	jobs, err := e.svc.History(ctx, mod, k, 10)
	if err != nil || len(jobs) != 1 || jobs[0].Key != "j1" {
		t.Fatalf("history = %+v, %v", jobs, err)
	}
}

func TestModeratorInputChecks(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	mod := core.Actor{User: bob, Role: core.RoleModerator}
	neg := -1
	tests := []struct {
		name string
		do   func() error
	}{
		{"grant zero", func() error { _, err := e.svc.Grant(ctx, mod, acct(alice), 0); return err }},
		{"grant huge", func() error { _, err := e.svc.Grant(ctx, mod, acct(alice), 1<<40); return err }},
		{"negative daily", func() error { _, err := e.svc.SetDaily(ctx, mod, acct(alice), &neg); return err }},
		{"ban yourself", func() error { _, err := e.svc.Ban(ctx, mod, acct(bob)); return err }},
		{"empty account", func() error { _, err := e.svc.Grant(ctx, mod, core.AccountKey{Scope: scope}, 1); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.do(); core.ErrorCode(err) != core.CodeInvalidArgument {
				t.Fatalf("err = %v, want invalid argument", err)
			}
		})
	}
}

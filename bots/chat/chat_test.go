package chat

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/imaginebot/imaginebot/bots/catalog"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/memory"
)

// Each action reaches its core operation, and the answer says what was done
// and shows the account as it is now.
func TestDo(t *testing.T) {
	svc, err := core.NewService(core.Config{Models: []core.Model{{Name: "m"}}, Rate: rate.Inf, Burst: 1,
		Quotas: core.Quotas{Location: time.UTC, DefaultDaily: 5}}, memory.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	mod := core.Actor{User: core.User{Platform: core.PlatformDiscord, ID: "1", Name: "@mod"}, Role: core.RoleModerator}
	seven, zero := 7, 0
	base := Action{Actor: mod, Scope: "discord:guild:12345", Target: "discord:2", Who: "@alice"}
	cases := []struct {
		name   string
		mod    func(*Action)
		want   []string
		credit int
		daily  int
	}{
		{"show", func(a *Action) { a.Name = Show }, []string{"👤 @alice", "Credits: 0"}, 0, 5},
		{"grant", func(a *Action) { a.Name, a.N = Grant, 3 }, []string{"Granted 3 credits to @alice", "Credits: 3"}, 3, 5},
		{"revoke", func(a *Action) { a.Name, a.N = Revoke, 1 }, []string{"Took up to 1 credit from @alice", "Credits: 2"}, 2, 5},
		{"set daily", func(a *Action) { a.Name, a.Daily = SetDaily, &seven }, []string{"Daily allowance of @alice set to 7", "(set for this user)"}, 2, 7},
		{"daily back", func(a *Action) { a.Name = SetDaily }, []string{"back on this chat's daily allowance"}, 2, 5},
		{"scope daily", func(a *Action) { a.Name, a.Daily = ScopeDaily, &zero }, []string{"daily allowance here is now 0"}, 2, 0},
		{"ban", func(a *Action) { a.Name = Ban }, []string{"can no longer make images", "Banned: yes"}, 2, 0},
		{"unban", func(a *Action) { a.Name = Unban }, []string{"can make images again", "Banned: no"}, 2, 0},
		{"reset", func(a *Action) { a.Name = Reset }, []string{"usage of @alice was reset"}, 2, 0},
		{"history", func(a *Action) { a.Name, a.N = History, 5 }, []string{"@alice has made no images here yet"}, 2, 0},
		{"audit", func(a *Action) { a.Name, a.N = Audit, 50 }, []string{"Moderator actions", "grant", "@mod (moderator)"}, 2, 0},
	}
	p := catalog.For(core.English)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := base
			c.mod(&a)
			text, err := Do(context.Background(), svc, a, p, time.UTC)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range c.want {
				if !strings.Contains(text, w) {
					t.Errorf("%q lacks %q", text, w)
				}
			}
			v, err := svc.Show(context.Background(), mod, core.AccountKey{Scope: a.Scope, User: a.Target})
			if err != nil || v.Balance.Credits != c.credit || v.Balance.Daily != c.daily {
				t.Fatalf("account %+v, %v; want %d credits, daily %d", v, err, c.credit, c.daily)
			}
		})
	}
	// A plain user is refused and nothing changes.
	a := base
	a.Name, a.N, a.Actor.Role = Grant, 5, core.RoleUser
	if _, err := Do(context.Background(), svc, a, p, time.UTC); core.ErrorCode(err) != core.CodeForbidden {
		t.Fatalf("plain user: %v", err)
	}
	if _, err := Do(context.Background(), svc, Action{Name: "frobnicate", Actor: mod}, p, time.UTC); core.ErrorCode(err) != core.CodeInvalidArgument {
		t.Fatalf("unknown action: %v", err)
	}
}

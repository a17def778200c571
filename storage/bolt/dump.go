package bolt

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/imaginebot/imaginebot/core"
)

// Contents is everything a ledger holds, for moving it to another store
// (imaginebot export -to postgres). Jobs come with every core.Job field,
// their Owner and Lease among them. Left out on purpose are the per-user
// limits and the claimed events, short-lived state rather than records: in
// the new store a user's rate bucket starts full and the count of jobs in
// flight at zero (settling a job carried over floors it at zero), and a
// claim guards against one event acting twice in running instances, while
// the bot is stopped for an export.
type Contents struct {
	Accounts []core.Account
	Scopes   []core.ScopeSettings
	Jobs     []core.Job
	Audit    []core.AuditEntry // oldest first
	Settings map[string]string
}

// Dump reads the whole ledger in one read transaction: a consistent
// picture to export (imaginebot export -to postgres).
func (db *DB) Dump(ctx context.Context) (Contents, error) {
	c := Contents{Settings: map[string]string{}}
	err := db.view(ctx, func(t *tx) error {
		if err := t.accounts.ForEach(func(_, v []byte) error {
			var r accountRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("bolt: account: %w", err)
			}
			c.Accounts = append(c.Accounts, r.account(core.AccountKey{Scope: r.Scope, User: r.User}))
			return nil
		}); err != nil {
			return err
		}
		if err := t.scopes.ForEach(func(k, v []byte) error {
			var r scopeRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("bolt: scope %s: %w", k, err)
			}
			c.Scopes = append(c.Scopes, core.ScopeSettings{Scope: string(k), Daily: r.Daily})
			return nil
		}); err != nil {
			return err
		}
		if err := t.jobs.ForEach(func(_, v []byte) error {
			j, err := decodeJob(v)
			c.Jobs = append(c.Jobs, j)
			return err
		}); err != nil {
			return err
		}
		if err := t.audit.ForEach(func(_, v []byte) error {
			var r auditRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("bolt: audit: %w", err)
			}
			c.Audit = append(c.Audit, r.entry())
			return nil
		}); err != nil {
			return err
		}
		return t.meta.ForEach(func(k, v []byte) error {
			if name, ok := strings.CutPrefix(string(k), settingPrefix); ok {
				c.Settings[name] = string(v)
			}
			return nil
		})
	})
	return c, err
}

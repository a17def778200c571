package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/imaginebot/imaginebot/storage/postgres"
)

const migrateUsage = `migrate [-config FILE] [-apply]

Shows the schema migrations the PostgreSQL ledger (storage.dsn) lacks; with
-apply, applies them, in one transaction (the bot also does at start). The
bbolt ledger migrates itself when the bot opens it: nothing to do.`

// cmdMigrate shows, and with -apply makes, the ledger's pending schema
// migrations: operators of several instances upgrade the schema once,
// deliberately, before rolling out the new binaries.
func cmdMigrate(ctx context.Context, e env, args []string) error {
	fs, cfgPath := newFlags(e, "migrate")
	apply := fs.Bool("apply", false, "apply the pending migrations (default: only list them)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(e, *cfgPath)
	if err != nil {
		return err
	}
	if cfg.Storage.Driver != driverPostgres {
		fmt.Fprintln(e.stdout, "the ledger is a bbolt file (storage.driver: bolt), which migrates itself when the bot opens it: nothing to do")
		return nil
	}
	db, err := postgres.Open(ctx, cfg.Storage.DSN, postgres.WithoutMigration(), postgres.WithMaxConns(2))
	if err != nil {
		return err
	}
	defer db.Close()
	version, pending, err := db.Pending(ctx)
	if err != nil {
		return err
	}
	where := postgres.Describe(cfg.Storage.DSN)
	switch {
	case len(pending) == 0:
		fmt.Fprintf(e.stdout, "%s: schema version %d, up to date\n", where, version)
	case !*apply:
		fmt.Fprintf(e.stdout, "%s: schema version %d; would apply: %s (run again with -apply)\n", where, version, strings.Join(pending, ", "))
	default:
		now, err := db.Migrate(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s: applied %s; schema version %d\n", where, strings.Join(pending, ", "), now)
	}
	return nil
}

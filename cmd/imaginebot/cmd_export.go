package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/bolt"
	"github.com/imaginebot/imaginebot/storage/postgres"
)

const exportUsage = `export -to postgres [-config FILE] [-db PATH]

Copies the bbolt ledger (-db, default storage.path) into the PostgreSQL
ledger of the configuration (storage.driver: postgres, storage.dsn or
IMAGINEBOT_DATABASE_URL): accounts, scope settings, jobs, the audit log and
the bot's own settings, in one transaction, then checks that every
account's balance reads the same in both. Switch the configuration to
postgres first; the bot must be stopped, and the target empty.`

// cmdExport moves a bbolt ledger to PostgreSQL, once, verified.
func cmdExport(ctx context.Context, e env, args []string) error {
	fs, cfgPath := newFlags(e, "export")
	to := fs.String("to", "", "the target: postgres")
	dbPath := fs.String("db", "", "the bbolt file (default: storage.path)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *to != driverPostgres {
		return &usageError{msg: "give -to postgres (the only target)"}
	}
	cfg, err := loadConfig(e, *cfgPath)
	if err != nil {
		return err
	}
	if cfg.Storage.Driver != driverPostgres {
		return &ConfigError{Problems: []string{"storage.driver: is bolt; set storage.driver: postgres and storage.dsn (IMAGINEBOT_DATABASE_URL) to the database to export to, and -db to the bbolt file"}}
	}
	path := *dbPath
	if path == "" {
		path = cfg.Storage.Path
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("database %s: %w; give -db the bbolt ledger to export", path, err)
	}
	src, err := bolt.Open(path)
	if errors.Is(err, bolt.ErrLocked) {
		return fmt.Errorf("%w: stop the bot before exporting its ledger", err)
	} else if err != nil {
		return err
	}
	defer src.Close()
	c, err := src.Dump(ctx)
	if err != nil {
		return err
	}
	dst, err := postgres.Open(ctx, cfg.Storage.DSN, postgres.WithMaxConns(2))
	if err != nil {
		return err
	}
	defer dst.Close()
	if err := importContents(ctx, dst, c); err != nil {
		return err
	}
	coreCfg, err := coreConfig(cfg)
	if err != nil {
		return err
	}
	if err := sameBalances(ctx, src, dst, coreCfg.Quotas, c.Accounts); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "exported %d accounts, %d scopes, %d jobs, %d audit entries and %d settings from %s to %s; "+
		"the balances of all %d accounts read the same in both.\n",
		len(c.Accounts), len(c.Scopes), len(c.Jobs), len(c.Audit), len(c.Settings), path, postgres.Describe(cfg.Storage.DSN), len(c.Accounts))
	return nil
}

// importContents writes c into store in one transaction, refusing a store
// that already holds any of its jobs or accounts (an export run twice, or a
// database in use).
func importContents(ctx context.Context, store core.Store, c bolt.Contents) error {
	return store.Update(ctx, func(tx core.Tx) error {
		for _, a := range c.Accounts {
			had, err := tx.Account(a.Key)
			if err != nil {
				return err
			}
			if had.Credits != 0 || had.Used != 0 || had.Daily != nil || had.Banned {
				return fmt.Errorf("export: the target already holds account %s: export into an empty database", a.Key)
			}
			if err := tx.PutAccount(a); err != nil {
				return err
			}
		}
		for _, s := range c.Scopes {
			if err := tx.PutScope(s); err != nil {
				return err
			}
		}
		for _, j := range c.Jobs {
			if _, had, err := tx.Job(j.Key); err != nil || had {
				return errors.Join(err, fmt.Errorf("export: the target already holds job %s: export into an empty database", j.Key))
			}
			if err := tx.PutJob(j); err != nil {
				return err
			}
		}
		for _, a := range c.Audit {
			if err := tx.AppendAudit(a); err != nil {
				return err
			}
		}
		for name, v := range c.Settings {
			if err := tx.PutSetting(name, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// sameBalances checks every account reads the same balance in both stores.
func sameBalances(ctx context.Context, a, b core.Store, q core.Quotas, accounts []core.Account) error {
	now := time.Now()
	la, lb := core.NewLedger(a, q), core.NewLedger(b, q)
	for _, acct := range accounts {
		x, err := la.Balance(ctx, acct.Key, now)
		if err != nil {
			return err
		}
		y, err := lb.Balance(ctx, acct.Key, now)
		if err != nil {
			return err
		}
		if x != y {
			return fmt.Errorf("export: account %s reads %+v in the file but %+v in PostgreSQL", acct.Key, x, y)
		}
	}
	return nil
}

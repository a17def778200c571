package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/bolt"
	"github.com/imaginebot/imaginebot/storage/postgres"
)

// storage.driver: where the ledger lives.
const (
	driverBolt     = "bolt"     // one file, one process (the default)
	driverPostgres = "postgres" // a server that several instances share
)

// ledgerStore is what run needs of the ledger, whichever the driver.
type ledgerStore interface {
	core.Store
	PruneJobs(ctx context.Context, olderThan time.Time) (int, error)
	Close() error
}

// openStore opens the configured ledger; observe gets every commit (metrics).
func openStore(ctx context.Context, cfg *Config, log *slog.Logger, observe func(int, time.Duration)) (ledgerStore, error) {
	if cfg.Storage.Driver == driverPostgres {
		db, err := postgres.Open(ctx, cfg.Storage.DSN, postgres.WithLogger(log), postgres.WithCommitObserver(observe))
		if err != nil {
			return nil, err
		}
		return db, nil
	}
	db, err := bolt.Open(cfg.Storage.Path, bolt.WithLogger(log), bolt.WithCommitObserver(observe))
	if err != nil {
		return nil, err
	}
	return db, nil
}

// ledgerName is the ledger for the logs: the file, or the server and
// database (never the password).
func ledgerName(s StorageConfig) string {
	if s.Driver == driverPostgres {
		return postgres.Describe(s.DSN)
	}
	return s.Path
}

// storage checks the driver and, for postgres, the connection string.
func (p *problems) storage(s StorageConfig) {
	switch s.Driver {
	case driverBolt:
		if s.DSN != "" {
			p.add("storage.dsn", "is set (storage.dsn or IMAGINEBOT_DATABASE_URL) but storage.driver is bolt; set storage.driver: postgres to use that server, or unset it to keep the ledger in storage.path")
		}
	case driverPostgres:
		if s.DSN == "" {
			p.add("storage.dsn", "is empty; with storage.driver: postgres set it, or IMAGINEBOT_DATABASE_URL, to the server, e.g. postgres://imaginebot@db.example:5432/imaginebot")
		} else if err := postgres.CheckDSN(s.DSN); err != nil {
			// The reason only: the string itself may hold the password.
			p.add("storage.dsn", "does not parse: %v; write a URL such as postgres://user@host:5432/dbname?sslmode=require, or key=value pairs such as host=db.example dbname=imaginebot", err)
		}
	default:
		p.add("storage.driver", "%q is not a driver; use bolt (the default: a file for one process) or postgres (a server several instances share)", s.Driver)
	}
}

// withPostgres runs a quota or backup command on a PostgreSQL ledger. There
// is no admin socket: the server takes any number of clients, so quota
// changes the ledger directly while the bots run.
func withPostgres(ctx context.Context, e env, cfg *Config, dbFlag string, req adminRequest) error {
	if dbFlag != "" {
		return &usageError{msg: "-db names a bbolt file; with storage.driver: postgres the ledger is storage.dsn (IMAGINEBOT_DATABASE_URL)"}
	}
	if req.Op == opBackup {
		return fmt.Errorf("the ledger is in PostgreSQL (%s), which imaginebot does not copy itself: "+
			"back it up with PostgreSQL's tools while the bots run, e.g.\n"+
			"  pg_dump --format=custom --file=%s \"$IMAGINEBOT_DATABASE_URL\"\n"+
			"and restore with pg_restore --clean --dbname=…; or use your provider's snapshots or point-in-time recovery",
			postgres.Describe(cfg.Storage.DSN), req.BackupName)
	}
	log := newLogger(e.stderr, LogConfig{Level: "warn", Format: cfg.Log.Format})
	db, err := postgres.Open(ctx, cfg.Storage.DSN, postgres.WithLogger(log), postgres.WithMaxConns(2))
	if err != nil {
		return err
	}
	defer db.Close()
	svc, err := adminService(cfg, db, log)
	if err != nil {
		return err
	}
	return quota(ctx, e.stdout, svc, req.Sub, req.Args)
}

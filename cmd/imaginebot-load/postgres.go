package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/imaginebot/imaginebot/storage/postgres"
	"github.com/imaginebot/imaginebot/storage/postgres/pgtest"
)

// pgServer is the PostgreSQL of a -postgres run: a throwaway server of
// pgtest's, or the -dsn one, and the run's own database on it.
type pgServer struct {
	srv  *pgtest.Server
	dsn  string // the run's database (may hold a password: never logged)
	name string
	log  *slog.Logger

	// CPU of a server of its own (its postmaster and every backend), from
	// the moment every bot served to the moment every bot had exited.
	base, used cpuTicks
	measured   bool
}

// pgStartTimeout bounds initdb and the server's start.
const pgStartTimeout = 2 * time.Minute

// startPostgres starts a throwaway server under dir (or connects to the
// one dsn names) and makes the run's database on it.
func startPostgres(ctx context.Context, dsn, dir string, log *slog.Logger) (*pgServer, error) {
	ctx, cancel := context.WithTimeout(ctx, pgStartTimeout)
	defer cancel()
	var srv *pgtest.Server
	var err error
	if dsn != "" {
		if err := postgres.CheckDSN(dsn); err != nil {
			return nil, fmt.Errorf("-dsn: %w", err)
		}
		log.Info("using an existing PostgreSQL server", "server", postgres.Describe(dsn))
		srv, err = pgtest.Connect(ctx, dsn)
	} else {
		log.Info("starting a throwaway PostgreSQL server", "dir", dir)
		srv, err = pgtest.Start(ctx, dir)
	}
	if errors.Is(err, pgtest.ErrUnavailable) {
		return nil, fmt.Errorf("-postgres: %w; install the PostgreSQL server binaries (Debian: apt-get install postgresql) or set %s to their directory, or name a server with -dsn", err, pgtest.EnvBin)
	}
	if err != nil {
		return nil, fmt.Errorf("-postgres: %w", err)
	}
	dbDSN, name, err := srv.CreateDatabase(ctx)
	if err != nil {
		_ = srv.Stop()
		return nil, fmt.Errorf("-postgres: %w", err)
	}
	log.Info("the ledger is a PostgreSQL database", "database", postgres.Describe(dbDSN))
	return &pgServer{srv: srv, dsn: dbDSN, name: name, log: log}, nil
}

// mark takes the server's CPU at t0.
func (p *pgServer) mark() {
	if pid := p.srv.Pid(); pid != 0 {
		if t, err := readTreeCPU(pid); err == nil {
			p.base = t
		}
	}
}

// measure takes the server's CPU since mark, once the bots have exited.
func (p *pgServer) measure() {
	if pid := p.srv.Pid(); pid != 0 && p.base != 0 {
		if t, err := readTreeCPU(pid); err == nil {
			p.used, p.measured = t-p.base, true
		}
	}
}

// open opens the run's database for the ledger check.
func (p *pgServer) open(ctx context.Context) (*postgres.DB, error) {
	return postgres.Open(ctx, p.dsn, postgres.WithMaxConns(4), postgres.WithoutMigration())
}

// stop stops a server of its own (its data stays in the run's directory
// until that is removed) or, on a -dsn server, drops the run's database —
// unless keep: then it is left there, and named, for a look.
func (p *pgServer) stop(keep bool) {
	if keep && p.srv.Pid() == 0 {
		p.log.Info("kept the run's database on the -dsn server", "database", postgres.Describe(p.dsn))
		return
	}
	if err := p.srv.Stop(); err != nil {
		p.log.Warn("stopping PostgreSQL", "err", err)
	}
}

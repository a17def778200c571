package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/bolt"
)

const quotaUsage = `quota [-config FILE] [-db PATH] SUBCOMMAND ARGS

  show      SCOPE USER           balance, overrides and ban state
  set-daily SCOPE USER N|default daily allowance for one user (default: clear the override)
  set-daily SCOPE N|default      daily allowance for everyone in the scope
  grant     SCOPE USER N         add N credits (never reset)
  revoke    SCOPE USER N         remove up to N credits
  reset     SCOPE USER           forget today's usage
  ban       SCOPE USER           stop the user making images in the scope
  unban     SCOPE USER
  history   SCOPE USER [N]       the user's last N jobs (default 20)
  audit     [SCOPE] [N]          the last N moderator actions (default 20; all scopes without SCOPE)

SCOPE is telegram:private, telegram:group:<chat id>, discord:guild:<server id> or
discord:dm; USER is telegram:<user id> or discord:<user id> (a bare number takes the
scope's platform). While the bot runs, the command goes to it through its admin
socket (storage.admin_socket); otherwise it opens the database file. The output is the
same either way, and every change is written to the audit log as "cli". With
storage.driver: postgres it works on the database directly, bots running or not.`

// cmdQuota runs moderator operations through the same core code the chat
// commands use, acting as the CLI owner.
func cmdQuota(ctx context.Context, e env, args []string) error {
	fs, cfgPath := newFlags(e, "quota")
	dbPath := fs.String("db", "", "database file (default: storage.path from the configuration)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return &usageError{msg: "missing subcommand"}
	}
	return withAdmin(ctx, e, *cfgPath, *dbPath, adminRequest{Op: opQuota, Sub: fs.Arg(0), Args: fs.Args()[1:]})
}

// cmdBackup writes a consistent copy of the database.
func cmdBackup(ctx context.Context, e env, args []string) error {
	fs, cfgPath := newFlags(e, "backup")
	dbPath := fs.String("db", "", "database file (default: storage.path from the configuration)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return &usageError{msg: "give the backup file name"}
	}
	path, err := filepath.Abs(fs.Arg(0))
	if err != nil {
		return err
	}
	return withAdmin(ctx, e, *cfgPath, *dbPath, adminRequest{Op: opBackup, Backup: path, BackupName: fs.Arg(0)})
}

// withAdmin runs req in the running bot when it answers on its admin
// socket; otherwise it opens the database and a core service without a
// generator (no jobs run from the CLI) and runs req itself.
func withAdmin(ctx context.Context, e env, cfgPath, dbPath string, req adminRequest) error {
	cfg, err := loadConfig(e, cfgPath)
	if err != nil {
		return err
	}
	if cfg.Storage.Driver == driverPostgres {
		return withPostgres(ctx, e, cfg, dbPath, req)
	}
	if dbPath == "" {
		dbPath = cfg.Storage.Path
	}
	// Opening a missing path would create an empty ledger and answer with
	// default balances: a typo must be an error.
	if _, err := os.Stat(dbPath); err != nil {
		return fmt.Errorf("database %s: %w; give -db the bot's storage.path (nothing was created)", dbPath, err)
	}
	req.DBName = dbPath
	if req.DB, err = filepath.Abs(dbPath); err != nil {
		return err
	}
	sock := adminSocketFor(cfg, dbPath)
	if served, err := askBot(ctx, e.stdout, sock, req); served {
		return err
	}
	log := newLogger(e.stderr, LogConfig{Level: "warn", Format: cfg.Log.Format})
	db, err := bolt.Open(dbPath, bolt.WithLogger(log))
	if errors.Is(err, bolt.ErrLocked) {
		return fmt.Errorf("%w; no bot answered on %s: give -config the running bot's configuration (storage.admin_socket)", err, sock)
	} else if err != nil {
		return err
	}
	defer db.Close()
	svc, err := adminService(cfg, db, log)
	if err != nil {
		return err
	}
	return req.do(ctx, e.stdout, svc, db)
}

// adminService is core over store for the CLI's moderator commands: no
// generator, since no job runs from the CLI.
func adminService(cfg *Config, store core.Store, log *slog.Logger) (*core.Service, error) {
	coreCfg, err := coreConfig(cfg)
	if err != nil {
		return nil, err
	}
	return core.NewService(coreCfg, store, nil, core.WithLogger(log))
}

func quota(ctx context.Context, w io.Writer, svc *core.Service, sub string, args []string) error {
	actor := core.CLIActor()
	need := func(n ...int) error {
		for _, k := range n {
			if len(args) == k {
				return nil
			}
		}
		return &usageError{msg: fmt.Sprintf("%s: wrong number of arguments", sub)}
	}
	account := func() (core.AccountKey, error) {
		k := core.AccountKey{Scope: args[0], User: userKey(args[0], args[1])}
		if err := checkScope(k.Scope); err != nil {
			return k, &usageError{msg: err.Error()}
		}
		if err := checkUserKey(k.User); err != nil {
			return k, &usageError{msg: err.Error()}
		}
		return k, nil
	}
	show := func(v core.AccountView, err error) error {
		if err != nil {
			return adminError(err)
		}
		printAccount(w, v)
		return nil
	}
	// Every subcommand naming an account checks it before anything runs.
	var k core.AccountKey
	switch {
	case sub == "set-daily" && len(args) == 2, sub == "audit":
	case len(args) >= 2:
		var err error
		if k, err = account(); err != nil {
			return err
		}
	}
	switch sub {
	case "show":
		if err := need(2); err != nil {
			return err
		}
		return show(svc.Show(ctx, actor, k))
	case "set-daily":
		if err := need(2, 3); err != nil {
			return err
		}
		daily, err := parseDaily(args[len(args)-1])
		if err != nil {
			return err
		}
		if len(args) == 2 {
			if err := checkScope(args[0]); err != nil {
				return &usageError{msg: err.Error()}
			}
			eff, err := svc.SetScopeDaily(ctx, actor, args[0], daily)
			if err != nil {
				return adminError(err)
			}
			fmt.Fprintf(w, "daily allowance in %s is now %d\n", args[0], eff)
			return nil
		}
		return show(svc.SetDaily(ctx, actor, k, daily))
	case "grant", "revoke":
		if err := need(3); err != nil {
			return err
		}
		n, err := strconv.Atoi(args[2])
		if err != nil {
			return &usageError{msg: fmt.Sprintf("%s: %q is not a number", sub, args[2])}
		}
		if sub == "grant" {
			return show(svc.Grant(ctx, actor, k, n))
		}
		return show(svc.Revoke(ctx, actor, k, n))
	case "reset":
		if err := need(2); err != nil {
			return err
		}
		return show(svc.ResetToday(ctx, actor, k))
	case "ban":
		if err := need(2); err != nil {
			return err
		}
		return show(svc.Ban(ctx, actor, k))
	case "unban":
		if err := need(2); err != nil {
			return err
		}
		return show(svc.Unban(ctx, actor, k))
	case "history":
		if err := need(2, 3); err != nil {
			return err
		}
		n, err := optCount(args, 2)
		if err != nil {
			return err
		}
		jobs, err := svc.History(ctx, actor, k, n)
		if err != nil {
			return adminError(err)
		}
		printJobs(w, jobs)
		return nil
	case "audit":
		if err := need(0, 1, 2); err != nil {
			return err
		}
		scope, n := "", 20
		for _, a := range args {
			if v, err := strconv.Atoi(a); err == nil {
				n = v
			} else if err := checkScope(a); err != nil {
				return &usageError{msg: err.Error()}
			} else {
				scope = a
			}
		}
		entries, err := svc.AuditLog(ctx, actor, scope, n)
		if err != nil {
			return adminError(err)
		}
		printAudit(w, entries)
		return nil
	default:
		return &usageError{msg: fmt.Sprintf("unknown subcommand %q", sub)}
	}
}

// userKey accepts "telegram:42", or a bare id taken to be on the scope's platform.
func userKey(scope, user string) string {
	if strings.Contains(user, ":") {
		return user
	}
	platform, _, _ := strings.Cut(scope, ":")
	return platform + ":" + user
}

func parseDaily(s string) (*int, error) {
	if s == "default" {
		return nil, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return nil, &usageError{msg: fmt.Sprintf("set-daily: %q is neither a number nor \"default\"", s)}
	}
	return &n, nil
}

func optCount(args []string, i int) (int, error) {
	if len(args) <= i {
		return 20, nil
	}
	n, err := strconv.Atoi(args[i])
	if err != nil || n < 1 {
		return 0, &usageError{msg: fmt.Sprintf("%q is not a positive count", args[i])}
	}
	return n, nil
}

// adminError renders a refused operation as the chat would, plus the detail.
func adminError(err error) error { return jobError{err: err, lang: core.English} }

func printAccount(w io.Writer, v core.AccountView) {
	b := v.Balance
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "account\t%s\n", v.Key)
	fmt.Fprintf(tw, "daily\t%d (%s), used today %d, left today %d\n", b.Daily, v.DailySource, b.Used, b.DailyLeft())
	fmt.Fprintf(tw, "credits\t%d\n", b.Credits)
	fmt.Fprintf(tw, "remaining\t%d\n", b.Remaining())
	fmt.Fprintf(tw, "banned\t%t\n", v.Banned)
	fmt.Fprintf(tw, "resets\t%s\n", b.ResetAt.Format("2006-01-02 15:04 MST"))
	tw.Flush()
}

func printJobs(w io.Writer, jobs []core.Job) {
	if len(jobs) == 0 {
		fmt.Fprintln(w, "no jobs")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CREATED\tSTATE\tOUTCOME\tMODEL\tUNITS\tPROMPT")
	for _, j := range jobs {
		outcome := string(j.Outcome)
		if outcome == "" {
			outcome = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", j.Created.Format(time.DateTime), j.State, outcome, j.Model, j.Units,
			core.Truncate(strings.ReplaceAll(j.Prompt, "\n", " "), 60))
	}
	tw.Flush()
}

func printAudit(w io.Writer, entries []core.AuditEntry) {
	if len(entries) == 0 {
		fmt.Fprintln(w, "no moderator actions")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tSCOPE\tACTOR\tACTION\tTARGET\tBEFORE → AFTER")
	for _, a := range entries {
		actor := a.Actor
		if a.ActorName != "" && a.ActorName != a.Actor {
			actor += " (" + a.ActorName + ")"
		}
		target := a.Target
		if target == "" {
			target = "(scope)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s → %s\n", a.Time.Format(time.DateTime), a.Scope, actor, a.Action, target, a.Before, a.After)
	}
	tw.Flush()
}

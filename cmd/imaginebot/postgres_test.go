package main

import (
	"bytes"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/bolt"
	"github.com/imaginebot/imaginebot/storage/postgres"
	"github.com/imaginebot/imaginebot/storage/postgres/pgtest"
)

func TestStorageConfig(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  map[string]string
		want []string // problems expected; none when empty
	}{
		{"default bolt", "", nil, nil},
		{"postgres from the environment", "storage:\n  driver: postgres\n",
			map[string]string{"IMAGINEBOT_DATABASE_URL": "postgres://bot:s3cr3t@db.example/imaginebot"}, nil},
		{"postgres key=value", "storage:\n  driver: postgres\n  dsn: host=db.example dbname=imaginebot user=bot\n", nil, nil},
		{"lease too short", "storage:\n  job_lease: 100ms\n", nil, []string{"storage.job_lease: 100ms is out of range; use 1s to 1h"}},
		{"unknown driver", "storage:\n  driver: sqlite\n", nil,
			[]string{`storage.driver: "sqlite" is not a driver; use bolt`}},
		{"postgres without a dsn", "storage:\n  driver: postgres\n", nil,
			[]string{"storage.dsn: is empty; with storage.driver: postgres set it, or IMAGINEBOT_DATABASE_URL"}},
		{"dsn that does not parse", "storage:\n  driver: postgres\n",
			map[string]string{"IMAGINEBOT_DATABASE_URL": "postgres://bot:s3cr3t@db.example:port/imaginebot"},
			[]string{"storage.dsn: does not parse: invalid port; write a URL such as"}},
		{"dsn with bolt", "", map[string]string{"IMAGINEBOT_DATABASE_URL": "postgres://bot:s3cr3t@db.example/imaginebot"},
			[]string{"storage.dsn: is set (storage.dsn or IMAGINEBOT_DATABASE_URL) but storage.driver is bolt"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = writeConfig(t, tc.file, 0o600)
			}
			_, err := LoadConfig(path, envMap(tc.env), func(string) {})
			msg := ""
			if err != nil {
				msg = err.Error()
			}
			if strings.Contains(msg, "s3cr3t") {
				t.Errorf("the problems show the password: %s", msg)
			}
			if len(tc.want) == 0 && err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("problems %q lack %q", msg, w)
				}
			}
		})
	}
}

// TestWorldReadableDSN: a password in storage.dsn in a world-readable file
// is warned about, like the other secrets.
func TestWorldReadableDSN(t *testing.T) {
	for _, dsn := range []string{"postgres://bot:s3cr3t@db.example/imaginebot", "host=db.example password=s3cr3t"} {
		path := writeConfig(t, "storage:\n  driver: postgres\n  dsn: \""+dsn+"\"\n", 0o644)
		var warned []string
		if _, err := LoadConfig(path, envMap(nil), func(s string) { warned = append(warned, s) }); err != nil {
			t.Fatal(err)
		}
		if len(warned) != 1 || !strings.Contains(warned[0], "holds secrets") {
			t.Errorf("dsn %q: warnings %q", dsn, warned)
		}
	}
}

// TestRunOnPostgres: the bot with storage.driver: postgres serves a job and
// charges it in the server's database; quota works on that database while
// the bot runs (no admin socket), and backup says to use pg_dump. The
// password in the connection string shows nowhere.
func TestRunOnPostgres(t *testing.T) {
	dsn := pgtest.New(t).Database(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), "s3cr3t-pw") // the test server trusts any
	w := newWorld(t, "storage:\n  driver: postgres\n")
	delete(w.env, "IMAGINEBOT_DB")
	w.env["IMAGINEBOT_DATABASE_URL"] = u.String()

	// What run logs of the ledger names the server, not the password.
	cfg, err := LoadConfig(w.cfg, envMap(w.env), func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	db, err := openStore(t.Context(), cfg, slog.New(slog.NewTextHandler(&logs, nil)), func(int, time.Duration) {})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if shown := logs.String() + ledgerName(cfg.Storage); strings.Contains(shown, "s3cr3t") || !strings.Contains(shown, u.Host) {
		t.Errorf("the ledger's log lines show the password, or not the server:\n%s", shown)
	}

	_, stop := w.start(t)
	alice := telegramtest.User(42, "alice", "en")
	w.tg.Inject(w.tg.PrivateText(alice, "a fox in the snow"))
	w.tg.WaitCall(t, "sendPhoto", 10*time.Second)
	// The commit follows the upload: wait for it in the ledger.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out, _ := runCLI(t, w.env, "quota", "-config", w.cfg, "history", "telegram:private", "42")
		if code == 0 && strings.Contains(out, "committed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no committed job in the history:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, out, errOut := runCLI(t, w.env, "quota", "-config", w.cfg, "grant", "telegram:private", "42", "5")
	if code != 0 || !strings.Contains(out, "credits    5") {
		t.Fatalf("quota grant while the bot runs: exit %d\n%s%s", code, out, errOut)
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	if got := w.remaining(t, "telegram:private", "42"); got != "6" {
		t.Errorf("remaining = %s, want 6 (2 a day, 1 spent, 5 granted)", got)
	}
	code, out, errOut = runCLI(t, w.env, "quota", "-config", w.cfg, "audit")
	if code != 0 || !strings.Contains(out, "cli") || !strings.Contains(out, "grant") {
		t.Errorf("quota audit: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = runCLI(t, w.env, "backup", "-config", w.cfg, "ledger.dump")
	if code != 1 || !strings.Contains(errOut, "pg_dump --format=custom --file=ledger.dump") {
		t.Errorf("backup: exit %d\n%s%s", code, out, errOut)
	}
	if strings.Contains(out+errOut, "s3cr3t") {
		t.Errorf("backup shows the password:\n%s%s", out, errOut)
	}
	if code, _, errOut := runCLI(t, w.env, "quota", "-config", w.cfg, "-db", "x.db", "show", "telegram:private", "42"); code != 2 || !strings.Contains(errOut, "-db names a bbolt file") {
		t.Errorf("quota -db with postgres: exit %d %s", code, errOut)
	}
}

// migrate lists the pending migrations without applying them; -apply
// applies them; then the schema is up to date. On bbolt it has nothing to do.
func TestMigrateCommand(t *testing.T) {
	dsn := pgtest.New(t).Database(t)
	cfg := writeConfig(t, "storage:\n  driver: postgres\n", 0o600)
	env := map[string]string{"IMAGINEBOT_DATABASE_URL": dsn}
	steps := []struct {
		args []string
		want string
	}{
		{nil, "schema version 0; would apply: 0001_ledger, 0002_leases_limits"},
		{nil, "would apply: 0001_ledger, 0002_leases_limits"}, // a dry run changed nothing
		{[]string{"-apply"}, "applied 0001_ledger, 0002_leases_limits; schema version 2"},
		{nil, "schema version 2, up to date"},
	}
	for _, s := range steps {
		code, out, errOut := runCLI(t, env, append([]string{"migrate", "-config", cfg}, s.args...)...)
		if code != 0 || !strings.Contains(out, s.want) {
			t.Fatalf("migrate %v: exit %d, %q %s; want %q", s.args, code, out, errOut, s.want)
		}
		if strings.Contains(out+errOut, "password") {
			t.Fatalf("migrate showed a password: %s", out)
		}
	}
	code, out, _ := runCLI(t, map[string]string{}, "migrate", "-config", writeConfig(t, "", 0o600))
	if code != 0 || !strings.Contains(out, "nothing to do") {
		t.Fatalf("bbolt: %d %q", code, out)
	}
}

// export moves a bbolt ledger into PostgreSQL: the balances, the jobs and
// the audit read the same there; a second export into the now-used
// database is refused.
func TestExportToPostgres(t *testing.T) {
	dsn := pgtest.New(t).Database(t)
	dir := t.TempDir()
	path := dir + "/imaginebot.db"
	db, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := core.NewService(core.Config{Models: []core.Model{{Name: "sd"}}, Quotas: core.Quotas{DefaultDaily: 5}}, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	alice := core.AccountKey{Scope: "telegram:private", User: "telegram:42"}
	if _, err := svc.Grant(ctx, core.CLIActor(), alice, 7); err != nil {
		t.Fatal(err)
	}
	seven := 3
	if _, err := svc.SetScopeDaily(ctx, core.CLIActor(), "discord:guild:15000000001", &seven); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Ban(ctx, core.CLIActor(), core.AccountKey{Scope: "discord:guild:15000000001", User: "discord:16000000001"}); err != nil {
		t.Fatal(err)
	}
	lease := time.Date(2025, 3, 10, 12, 1, 30, 123456789, time.UTC)
	if _, _, err := core.NewLedger(db, core.Quotas{DefaultDaily: 5}).Reserve(ctx, core.Job{Key: "telegram:update:1", Account: alice, Units: 2,
		Owner: "imaginebot-a", Lease: lease, Created: time.Now()}, time.Now()); err != nil {
		t.Fatal(err)
	}
	db.Close()

	cfg := writeConfig(t, "storage:\n  driver: postgres\n", 0o600)
	env := map[string]string{"IMAGINEBOT_DATABASE_URL": dsn}
	code, out, errOut := runCLI(t, env, "export", "-config", cfg, "-db", path, "-to", "postgres")
	if code != 0 || !strings.Contains(out, "exported 2 accounts, 1 scopes, 1 jobs, 3 audit entries") || !strings.Contains(out, "read the same") {
		t.Fatalf("export: exit %d %q %s", code, out, errOut)
	}
	pg, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	if bal, err := core.NewLedger(pg, core.Quotas{DefaultDaily: 5}).Balance(ctx, alice, time.Now()); err != nil || bal.Credits != 7 || bal.Used != 2 {
		t.Fatalf("alice in PostgreSQL: %+v, %v", bal, err)
	}
	if audit, err := pg.Audit(ctx, "", 10); err != nil || len(audit) != 3 {
		t.Fatalf("audit in PostgreSQL: %d entries, %v", len(audit), err)
	}
	// A job comes with its owner and lease (per-user limits and claimed
	// events are not exported: see bolt.Contents).
	if pending, err := pg.PendingJobs(ctx); err != nil || len(pending) != 1 || pending[0].Owner != "imaginebot-a" || !pending[0].Lease.Equal(lease) {
		t.Fatalf("pending jobs in PostgreSQL: %+v, %v; want telegram:update:1 owned by imaginebot-a until %v", pending, err, lease)
	}
	if code, _, errOut := runCLI(t, env, "export", "-config", cfg, "-db", path, "-to", "postgres"); code == 0 || !strings.Contains(errOut, "export into an empty database") {
		t.Fatalf("second export: exit %d %s", code, errOut)
	}
}

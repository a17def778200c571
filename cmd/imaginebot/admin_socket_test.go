package main

import (
	"bytes"
	"context"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
	"github.com/imaginebot/imaginebot/storage/bolt"
)

// These tests run the real wiring (run, as in e2e_test.go) and the CLI
// in-process: the ledger is locked by the running bot, so a CLI command that
// succeeds while it runs went through the admin socket.

// timesRe matches the clock times in quota's output, which differ between
// two runs of the same commands.
var timesRe = regexp.MustCompile(`\d{4}-\d{2}-\d{2} \d{2}:\d{2}(:\d{2})?`)

// The same commands give the same output and exit code through a running
// bot's socket as on a stopped bot's file, failures included.
func TestAdminSocketQuotaSameAsFile(t *testing.T) {
	running := newWorld(t, "")
	running.start(t)
	stopped := newWorld(t, "")
	created, err := bolt.Open(stopped.db) // as a stopped bot leaves it
	if err != nil {
		t.Fatal(err)
	}
	created.Close()

	steps := []struct {
		args []string
		code int
		want string // in stdout (code 0) or stderr
	}{
		{[]string{"show", "telegram:private", "42"}, 0, "remaining  2"},
		{[]string{"grant", "telegram:private", "42", "5"}, 0, "credits    5"},
		{[]string{"set-daily", "telegram:private", "telegram:42", "3"}, 0, "daily      3 (user)"},
		{[]string{"set-daily", "telegram:group:-100", "20"}, 0, "daily allowance in telegram:group:-100 is now 20"},
		{[]string{"revoke", "telegram:private", "42", "2"}, 0, "credits    3"},
		{[]string{"ban", "telegram:private", "42"}, 0, "banned     true"},
		{[]string{"unban", "telegram:private", "42"}, 0, "banned     false"},
		{[]string{"reset", "telegram:private", "42"}, 0, "used today 0"},
		{[]string{"show", "telegram:private", "42"}, 0, "remaining  6"},
		{[]string{"history", "telegram:private", "42"}, 0, "no jobs"},
		{[]string{"audit"}, 0, "cli:cli (cli)"},
		{[]string{"grant", "telegram:private", "42", "zero"}, 2, `"zero" is not a number`},
		{[]string{"grant", "telegram:private", "42", "0"}, 1, "imaginebot quota: "}, // the wording is the catalogue's
		{[]string{"show", "telegram:privat", "42"}, 2, "use telegram:"},
		{[]string{"show"}, 2, "wrong number of arguments"},
		{[]string{"frobnicate"}, 2, `unknown subcommand "frobnicate"`},
	}
	for _, s := range steps {
		args := append([]string{"quota", "-config", running.cfg}, s.args...)
		code, out, errOut := runCLI(t, running.env, args...)
		if code != s.code || !strings.Contains(out+errOut, s.want) {
			t.Fatalf("quota %v on the running bot: exit %d, want %d with %q:\n%s%s", s.args, code, s.code, s.want, out, errOut)
		}
		fcode, fout, ferrOut := runCLI(t, stopped.env, append([]string{"quota", "-config", stopped.cfg}, s.args...)...)
		if fcode != code || timesRe.ReplaceAllString(fout, "T") != timesRe.ReplaceAllString(out, "T") || ferrOut != errOut {
			t.Errorf("quota %v: through the socket exit %d\n%s%s\non the file exit %d\n%s%s", s.args, code, out, errOut, fcode, fout, ferrOut)
		}
	}
}

// A change made from the CLI applies to the running bot at once, and what
// the bot spends shows in the CLI.
func TestAdminSocketGrantReachesRunningBot(t *testing.T) {
	w := newWorld(t, "")
	w.start(t)
	quota := func(args ...string) string {
		t.Helper()
		code, out, errOut := runCLI(t, w.env, append([]string{"quota", "-config", w.cfg}, args...)...)
		if code != 0 {
			t.Fatalf("quota %v: exit %d: %s", args, code, errOut)
		}
		return out
	}
	alice := telegramtest.User(42, "alice", "en")
	quota("set-daily", "telegram:private", "42", "0")
	w.tg.Inject(w.tg.PrivateText(alice, "a fox"))
	if !w.tg.WaitFor(10*time.Second, func() bool { return len(w.tg.Texts(42)) > 0 }) {
		t.Fatal("no answer to a prompt with no quota left")
	}
	if n := len(w.tg.Calls("sendPhoto")); n != 0 || w.gw.Calls() != 0 {
		t.Fatalf("with a daily allowance of 0: %d photos, %d gateway calls", n, w.gw.Calls())
	}
	quota("grant", "telegram:private", "42", "1")
	w.tg.Inject(w.tg.PrivateText(alice, "a fox"))
	w.tg.WaitCall(t, "sendPhoto", 10*time.Second)
	if w.gw.Calls() != 1 {
		t.Fatalf("gateway calls = %d, want 1 (the granted image)", w.gw.Calls())
	}
	if out := quota("show", "telegram:private", "42"); !strings.Contains(out, "credits    0") || !strings.Contains(out, "remaining  0") {
		t.Fatalf("after the granted image:\n%s", out)
	}
	if out := quota("history", "telegram:private", "42"); !strings.Contains(out, "a fox") {
		t.Fatalf("history lacks the job:\n%s", out)
	}
}

func TestAdminSocketBackupWhileRunning(t *testing.T) {
	w := newWorld(t, "")
	_, stop := w.start(t)
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, w.env, append([]string{args[0], "-config", w.cfg}, args[1:]...)...)
	}
	if code, _, errOut := cli("quota", "grant", "telegram:private", "42", "5"); code != 0 {
		t.Fatalf("grant: %s", errOut)
	}
	dir := t.TempDir()
	backup := filepath.Join(dir, "copy.db")
	// The report names the files as the operator did, relative to where the
	// CLI runs, whichever process writes the backup.
	t.Chdir(dir)
	rel, err := filepath.Rel(dir, w.db)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := cli("backup", "-db", rel, "copy.db")
	if want := "backed up " + rel + " to copy.db\n"; code != 0 || out != want {
		t.Fatalf("backup: exit %d: %q, want %q; %s", code, out, want, errOut)
	}
	// A snapshot: changes after it are not in it.
	if code, _, errOut := cli("quota", "grant", "telegram:private", "42", "1"); code != 0 {
		t.Fatalf("grant: %s", errOut)
	}
	fi, err := os.Stat(backup)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("backup mode %v, want 0600", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("backup directory holds %d files, want the backup alone", len(entries))
	}
	if err := bolt.Verify(backup); err != nil {
		t.Fatal(err)
	}
	// The backup opens, with the balance at the time it was taken; the
	// CLI reads it from the file while the bot still runs.
	code, out, errOut = cli("quota", "-db", backup, "show", "telegram:private", "42")
	if code != 0 || !strings.Contains(out, "credits    5") {
		t.Fatalf("backup content: exit %d:\n%s%s", code, out, errOut)
	}
	// A socket that reaches the running bot for another file: the bot
	// refuses (it serves its own ledger) and the CLI opens the copy.
	if err := os.Symlink(w.db+".sock", backup+".sock"); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = cli("quota", "-db", backup, "show", "telegram:private", "42")
	if code != 0 || !strings.Contains(out, "credits    5") {
		t.Fatalf("backup content through a socket of the bot: exit %d:\n%s%s", code, out, errOut)
	}
	if code, _, errOut := cli("backup", w.db); code != 1 || !strings.Contains(errOut, "that is the live database") {
		t.Fatalf("backup over the live database: exit %d: %s", code, errOut)
	}
	if code, out, _ := cli("quota", "show", "telegram:private", "42"); code != 0 || !strings.Contains(out, "credits    6") {
		t.Fatalf("the live ledger: exit %d:\n%s", code, out)
	}

	// Stopped, the same command on the file reports the same way.
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = cli("backup", "-db", rel, "copy2.db")
	if want := "backed up " + rel + " to copy2.db\n"; code != 0 || out != want {
		t.Fatalf("backup of the stopped bot: exit %d: %q, want %q; %s", code, out, want, errOut)
	}
	if err := bolt.Verify(filepath.Join(dir, "copy2.db")); err != nil {
		t.Fatal(err)
	}
}

// What run finds at the socket path: nothing, or a socket a killed bot left
// (replaced), or something it must not remove.
func TestAdminSocketLifecycle(t *testing.T) {
	tests := []struct {
		name    string
		before  func(t *testing.T, path string)
		cliOK   bool   // the CLI works on the file before the bot starts
		wantErr string // run refuses to start
	}{
		{"nothing there", func(*testing.T, string) {}, true, ""},
		{"stale socket of a killed bot", func(t *testing.T, path string) {
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			ln.SetUnlinkOnClose(false) // as a SIGKILL leaves it
			ln.Close()
		}, true, ""},
		{"a regular file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, true, "exists and is not a socket"},
		{"another process listening", func(t *testing.T, path string) {
			ln, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
		}, false, "served by another process"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t, "")
			sock := w.db + ".sock"
			created, err := bolt.Open(w.db)
			if err != nil {
				t.Fatal(err)
			}
			created.Close()
			tt.before(t, sock)
			show := []string{"quota", "-config", w.cfg, "show", "telegram:private", "42"}
			if tt.cliOK {
				if code, _, errOut := runCLI(t, w.env, show...); code != 0 {
					t.Fatalf("CLI with the bot stopped: exit %d: %s", code, errOut)
				}
			}
			if tt.wantErr != "" {
				err := w.startErr(t)
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "storage.admin_socket") {
					t.Fatalf("run = %v, want an error naming storage.admin_socket with %q", err, tt.wantErr)
				}
				if _, err := os.Lstat(sock); err != nil {
					t.Errorf("what was at the socket path is gone: %v", err)
				}
				return
			}

			_, stop := w.start(t)
			fi, err := os.Lstat(sock)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
				t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
			}
			if code, out, errOut := runCLI(t, w.env, "quota", "-config", w.cfg, "grant", "telegram:private", "42", "1"); code != 0 || !strings.Contains(out, "credits    1") {
				t.Fatalf("CLI with the bot running: exit %d: %s%s", code, out, errOut)
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(sock); !os.IsNotExist(err) {
				t.Errorf("socket left after the bot stopped: %v", err)
			}
			// Nothing but the ledger (and its socket's staging directory gone).
			entries, _ := os.ReadDir(filepath.Dir(w.db))
			for _, e := range entries {
				if e.Name() != filepath.Base(w.db) {
					t.Errorf("left beside the ledger: %s", e.Name())
				}
			}
			if code, out, errOut := runCLI(t, w.env, show...); code != 0 || !strings.Contains(out, "credits    1") {
				t.Fatalf("CLI after the bot stopped: exit %d: %s%s", code, out, errOut)
			}
		})
	}
}

// startErr runs the bot expecting it to refuse to start.
func (w *world) startErr(t *testing.T) error {
	t.Helper()
	cfg, err := LoadConfig(w.cfg, envMap(w.env), func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return run(ctx, cfg, slog.New(slog.DiscardHandler), func(string) {
		t.Error("run started")
		cancel()
	})
}

func TestAdminSocketConfig(t *testing.T) {
	long := "/" + strings.Repeat("d", 100)
	tests := []struct {
		name    string
		storage string
		want    string // storage.admin_socket after loading
		problem string // or the problem reported
	}{
		{"default beside the database", "  path: /var/lib/imaginebot/bot.db\n", "/var/lib/imaginebot/bot.db.sock", ""},
		{"set", "  path: /var/lib/imaginebot/bot.db\n  admin_socket: /run/imaginebot/admin.sock\n", "/run/imaginebot/admin.sock", ""},
		{"too long", "  admin_socket: " + long + "/admin.sock\n", "", "storage.admin_socket: \"" + long + "/admin.sock\" is too long for a Unix socket"},
		{"default too long", "  path: " + long + "/imaginebot.db\n", "", `it is storage.path + ".sock" by default; set a shorter path`},
		// The socket is bound in a private directory beside it first.
		{"short name in a long directory", "  admin_socket: " + long[:95] + "/a\n", "", "storage.admin_socket: \"" + long[:95] + "/a\" is too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := LoadConfig(writeConfig(t, "storage:\n"+tt.storage, 0o600), envMap(nil), func(string) {})
			if tt.problem != "" {
				if err == nil || !strings.Contains(err.Error(), tt.problem) {
					t.Fatalf("LoadConfig = %v, want a problem with %q", err, tt.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Storage.AdminSocket != tt.want {
				t.Fatalf("admin_socket = %q, want %q", cfg.Storage.AdminSocket, tt.want)
			}
		})
	}
}

// The server refuses requests it cannot run as the CLI would.
func TestAdminSocketRefusals(t *testing.T) {
	w := newWorld(t, "")
	w.start(t)
	other := filepath.Join(t.TempDir(), "other.db")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	abs := func(p string) string { p, _ = filepath.Abs(p); return p }
	tests := []struct {
		name       string
		req        adminRequest
		wantServed bool
		wantErr    string
	}{
		{"another database", adminRequest{DB: other, Op: opQuota, Sub: "show", Args: []string{"telegram:private", "42"}}, false, ""},
		{"relative backup path", adminRequest{DB: abs(w.db), Op: opBackup, Backup: "copy.db"}, true, "must be absolute"},
		{"unknown operation", adminRequest{DB: abs(w.db), Op: "drop"}, true, `unknown admin operation "drop"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			served, err := askBot(t.Context(), &out, w.db+".sock", tt.req)
			if served != tt.wantServed || (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("askBot = %t, %v; want %t, %q", served, err, tt.wantServed, tt.wantErr)
			}
			if out.Len() != 0 {
				t.Fatalf("printed %q", out.String())
			}
		})
	}
}

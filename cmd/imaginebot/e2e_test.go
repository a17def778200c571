package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
	"github.com/imaginebot/imaginebot/storage/bolt"
)

// These tests start the real wiring — run(), with the bbolt ledger, the
// upstream client, the fetcher and the Telegram adapter — against the fake
// gateway and the fake Bot API, and one test starts the real binary.

type world struct {
	gw  *upstreamtest.Gateway
	tg  *telegramtest.Server
	db  string
	env map[string]string
	cfg string
}

func newWorld(t *testing.T, extra string) *world {
	t.Helper()
	w := &world{gw: upstreamtest.New(t), tg: telegramtest.New(t), db: filepath.Join(t.TempDir(), "imaginebot.db")}
	w.gw.RequireKey("sk-e2e")
	w.env = map[string]string{
		"IMAGINEBOT_UPSTREAM_API_KEY":      "sk-e2e",
		"IMAGINEBOT_TELEGRAM_TOKEN":        telegramtest.DefaultToken,
		"IMAGINEBOT_TELEGRAM_API_BASE_URL": w.tg.URL,
		"IMAGINEBOT_DB":                    w.db,
	}
	w.cfg = gatewayConfig(t, w.gw, "quotas:\n  daily: 2\ntelegram:\n  poll_timeout: 1s\n  progress_interval: 1s\n  owners: [900]\n"+extra)
	return w
}

// start runs the bot until the returned stop is called; stop returns run's error.
func (w *world) start(t *testing.T) (httpAddr string, stop func() error) {
	t.Helper()
	cfg, err := LoadConfig(w.cfg, envMap(w.env), func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, cfg, slog.New(slog.DiscardHandler), func(addr string) { addrc <- addr })
	}()
	select {
	case httpAddr = <-addrc:
	case err := <-errc:
		cancel()
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("run did not start")
	}
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-errc:
			case <-time.After(40 * time.Second):
				runErr = fmt.Errorf("run did not stop")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return httpAddr, stop
}

// balance reads an account from the (closed) database with the CLI.
func (w *world) remaining(t *testing.T, scope, user string) string {
	t.Helper()
	code, out, errOut := runCLI(t, w.env, "quota", "-config", w.cfg, "show", scope, user)
	if code != 0 {
		t.Fatalf("quota show: %s", errOut)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "remaining") {
			return strings.TrimSpace(strings.TrimPrefix(line, "remaining"))
		}
	}
	t.Fatalf("no remaining line in %q", out)
	return ""
}

func TestRunPrivateChatToPhoto(t *testing.T) {
	w := newWorld(t, "")
	_, stop := w.start(t)
	alice := telegramtest.User(42, "alice", "en")
	w.tg.Inject(w.tg.PrivateText(alice, "a fox in the snow, *bold* _under_ <b>tag</b>"))

	photo := w.tg.WaitCall(t, "sendPhoto", 10*time.Second)
	caption := photo.Field("caption")
	if !strings.Contains(caption, "a fox in the snow, *bold* _under_ <b>tag</b>") || photo.Has("parse_mode") {
		t.Fatalf("caption %q (parse_mode %q)", caption, photo.Field("parse_mode"))
	}
	if !strings.Contains(caption, "1") || len(photo.Files) != 1 || photo.Files[0].Size == 0 {
		t.Fatalf("photo call = %+v", photo)
	}
	if len(photo.CallbackData()) != 1 || !strings.HasPrefix(photo.CallbackData()[0], "rr:") {
		t.Fatalf("reroll button = %v", photo.CallbackData())
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	// Committed in the ledger: 2 a day, 1 spent. The balance alone cannot
	// tell a commit from a reservation left pending; the job's state can.
	if got := w.remaining(t, "telegram:private", "42"); got != "1" {
		t.Fatalf("remaining = %s, want 1", got)
	}
	code, out, errOut := runCLI(t, w.env, "quota", "-config", w.cfg, "history", "telegram:private", "42")
	if code != 0 {
		t.Fatalf("quota history: %s", errOut)
	}
	if rows := strings.Split(strings.TrimSpace(out), "\n"); len(rows) != 2 ||
		!slices.Contains(strings.Fields(rows[1]), string(core.JobCommitted)) || !strings.Contains(rows[1], "a fox in the snow") {
		t.Fatalf("quota history:\n%s\nwant the one job, committed", out)
	}
	req := w.gw.Requests()[0]
	// The gateway sees a pseudonym keyed by a secret the bot generated and
	// kept, never the Telegram id, and nothing it could derive from the key.
	db, err := bolt.Open(w.db)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := core.NewLedger(db, core.Quotas{}).Setting(context.Background(), userIDSecretSetting, func() (string, error) {
		return "", fmt.Errorf("no secret was kept")
	})
	db.Close()
	if err != nil || len(secret) != 64 {
		t.Fatalf("kept secret %q, %v", secret, err)
	}
	if want := upstream.Pseudonym(secret, "telegram:42"); req.User != want {
		t.Fatalf("user = %q, want the pseudonym %q", req.User, want)
	}
}

func TestRunRefundsJobsInterruptedByACrash(t *testing.T) {
	w := newWorld(t, "")
	// A job left pending, as a crash would leave it.
	w.seedJob(t, "telegram:update:77", "42", core.Chinese, nil)

	_, stop := w.start(t)
	w.tg.WaitText(t, 42, 10*time.Second, "中断", "退回")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := w.remaining(t, "telegram:private", "42"); got != "2" {
		t.Fatalf("remaining = %s, want 2 (refunded)", got)
	}
	// The notice was confirmed: the next start owes nobody anything.
	if owed := w.owedNotices(t); len(owed) != 0 {
		t.Fatalf("notices still owed after they were sent: %v", owed)
	}
}

// A crash while recovery was still telling users: the refund is done, the
// notice still owed, and the next start sends it.
func TestRunSendsNoticesOwedByAnEarlierCrash(t *testing.T) {
	w := newWorld(t, "")
	w.seedJob(t, "telegram:update:79", "43", core.English, func(l *core.Ledger, key string) error {
		return l.RefundOwingNotice(context.Background(), key, core.CodeInterrupted, time.Now())
	})
	_, stop := w.start(t)
	if c := w.tg.WaitText(t, 43, 10*time.Second, "send your prompt again"); c.ReplyTo() != 5 {
		t.Errorf("notice replies to %d", c.ReplyTo())
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if owed := w.owedNotices(t); len(owed) != 0 {
		t.Fatalf("notices still owed: %v", owed)
	}
}

// seedJob leaves in the (closed) database a job of private-chat user id,
// replying to message 5, as a crash would leave it; then, when set, does
// more to it.
func (w *world) seedJob(t *testing.T, key, id string, lang core.Lang, then func(*core.Ledger, string) error) {
	t.Helper()
	db, err := bolt.Open(w.db)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ledger := core.NewLedger(db, core.Quotas{Location: time.UTC, DefaultDaily: 2})
	_, _, err = ledger.Reserve(context.Background(), core.Job{
		Key: key, Account: core.AccountKey{Scope: "telegram:private", User: "telegram:" + id},
		User: core.User{Platform: core.PlatformTelegram, ID: id}, Units: 1, ReplyTo: id + ":5", Lang: lang,
	}, time.Now())
	if err == nil && then != nil {
		err = then(ledger, key)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// owedNotices reads the (closed) database.
func (w *world) owedNotices(t *testing.T) []core.Job {
	t.Helper()
	db, err := bolt.Open(w.db)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	owed, err := db.OwedNotices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return owed
}

// A job cut off while its picture was being sent: its status message becomes
// "it may have arrived, and it is free", and the units come back.
func TestRunRecoversAJobCutOffWhileDelivering(t *testing.T) {
	w := newWorld(t, "")
	w.seedJob(t, "telegram:update:78", "42", core.English, func(l *core.Ledger, key string) error {
		return l.Delivering(context.Background(), key, "42:6")
	})

	_, stop := w.start(t)
	edit := w.tg.WaitText(t, 42, 10*time.Second, "may have arrived", "free")
	if edit.Method != "editMessageText" || edit.Field("message_id") != "6" {
		t.Fatalf("told with %s of message %s", edit.Method, edit.Field("message_id"))
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := w.remaining(t, "telegram:private", "42"); got != "2" {
		t.Fatalf("remaining = %s, want 2 (refunded)", got)
	}
}

func TestRunWebhook(t *testing.T) {
	w := newWorld(t, "http:\n  listen: 127.0.0.1:0\n")
	w.env["IMAGINEBOT_TELEGRAM_WEBHOOK_URL"] = "https://bot.example/telegram/webhook"
	w.env["IMAGINEBOT_TELEGRAM_WEBHOOK_SECRET"] = "s3cret-token"
	addr, stop := w.start(t)
	defer stop()
	set := w.tg.WaitCall(t, "setWebhook", 5*time.Second)
	if set.Field("url") != "https://bot.example/telegram/webhook" || set.Field("secret_token") != "s3cret-token" {
		t.Fatalf("setWebhook = %v", set.Fields)
	}

	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	update := func(id int, secret string) int {
		body := fmt.Sprintf(`{"update_id":%d,"message":{"message_id":%d,"date":1,"chat":{"id":42,"type":"private"},"from":{"id":42,"is_bot":false,"first_name":"a"},"text":"a cat"}}`, id, id)
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/telegram/webhook", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if secret != "" {
			req.Header.Set("X-Telegram-Bot-Api-Secret-Token", secret)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := update(1, ""); code != http.StatusUnauthorized {
		t.Fatalf("no secret: %d", code)
	}
	if code := update(2, "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %d", code)
	}
	time.Sleep(200 * time.Millisecond)
	if w.gw.Calls() != 0 {
		t.Fatal("an unsigned update started a job")
	}
	if code := update(3, "s3cret-token"); code != http.StatusOK {
		t.Fatalf("right secret: %d", code)
	}
	w.tg.WaitCall(t, "sendPhoto", 10*time.Second)
	if w.gw.Calls() != 1 {
		t.Fatalf("gateway calls = %d", w.gw.Calls())
	}
}

func TestRunRefusesBadStartup(t *testing.T) {
	w := newWorld(t, "")
	delete(w.env, "IMAGINEBOT_TELEGRAM_TOKEN")
	delete(w.env, "IMAGINEBOT_UPSTREAM_API_KEY")
	code, _, errOut := runCLI(t, w.env, "run", "-config", w.cfg)
	if code != 1 || !strings.Contains(errOut, "upstream.api_key") || !strings.Contains(errOut, "telegram.token") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

// TestBinary builds imaginebot and runs it as an operator would: it serves a
// private chat and exits cleanly on SIGTERM.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "imaginebot")
	// -buildvcs=false: a checkout without the git binary must still build.
	build := exec.Command("go", "build", "-buildvcs=false", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	w := newWorld(t, "")
	cmd := exec.Command(bin, "run", "-config", w.cfg)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range w.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var logs strings.Builder
	cmd.Stderr = &syncWriter{w: &logs}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.tg.Inject(w.tg.PrivateText(telegramtest.User(42, "alice", "zh-hans"), "雪地里的狐狸"))
	photo := w.tg.WaitCall(t, "sendPhoto", 15*time.Second)
	if !strings.Contains(photo.Field("caption"), "雪地里的狐狸") {
		t.Fatalf("caption %q", photo.Field("caption"))
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("no exit after SIGTERM\n%s", logs.String())
	}
	if strings.Contains(logs.String(), telegramtest.DefaultToken) || strings.Contains(logs.String(), "sk-e2e") {
		t.Fatalf("a secret reached the logs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "imaginebot started") || !strings.Contains(logs.String(), "stopped") {
		t.Fatalf("logs:\n%s", logs.String())
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// String is what was written so far (w must be a fmt.Stringer), safe to
// read while the child process still writes.
func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.(fmt.Stringer).String()
}

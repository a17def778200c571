package main

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
)

// The real binary, as an operator runs it: /healthz and /readyz answer,
// /readyz says 503 while the gateway is down and 200 once it is back;
// /metrics counts a delivered job, a refunded one and a refusal; `quota`
// and `backup` work while the bot runs, a grant reaches the running bot at
// once (a user whose allowance is 0 can then make a picture), and the
// backup opens with the same balances.
func TestBinaryOperations(t *testing.T) {
	w := newWorld(t, "http:\n  listen: 127.0.0.1:0\n")
	cmd, logs, done := startBinary(t, w)
	base := "http://" + httpAddr(t, logs)

	if code, body := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	waitStatus(t, base+"/readyz", http.StatusOK) // once Telegram answered a poll

	alice, bob, carol := telegramtest.User(42, "alice", "en"), telegramtest.User(43, "bob", "en"), telegramtest.User(44, "carol", "en")
	w.tg.Inject(w.tg.PrivateText(alice, "a fox in the snow"))
	w.tg.WaitCall(t, "sendPhoto", 15*time.Second)

	// The gateway goes down: bob's job fails and is refunded, and /readyz
	// says why until the gateway is back.
	w.gw.SetDown(true)
	w.tg.Inject(w.tg.PrivateText(bob, "a fox in the rain"))
	w.tg.WaitText(t, bob.ID, 15*time.Second, "refunded")
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "gateway:") {
		t.Fatalf("/readyz with the gateway down: %d %s", code, body)
	}
	w.gw.SetDown(false)
	waitStatus(t, base+"/readyz", http.StatusOK)

	// Live admin through the running bot: carol gets no daily allowance
	// and is refused; one credit granted, and her next prompt is served.
	binCLI(t, w, "quota", "-config", w.cfg, "set-daily", "telegram:private", "telegram:44", "0")
	w.tg.Inject(w.tg.PrivateText(carol, "a fox at night"))
	w.tg.WaitText(t, carol.ID, 15*time.Second, "used all your images")
	if out := binCLI(t, w, "quota", "-config", w.cfg, "grant", "telegram:private", "telegram:44", "1"); !strings.Contains(out, "credits") {
		t.Fatalf("grant printed %q", out)
	}
	w.tg.Inject(w.tg.PrivateText(carol, "a fox at dawn"))
	w.tg.WaitCalls(t, "sendPhoto", 2, 15*time.Second)

	backup := filepath.Join(t.TempDir(), "backup.db")
	binCLI(t, w, "backup", "-config", w.cfg, backup)
	for _, user := range []string{"telegram:42", "telegram:43", "telegram:44"} {
		live := binCLI(t, w, "quota", "-config", w.cfg, "show", "telegram:private", user)
		copied := binCLI(t, w, "quota", "-config", w.cfg, "-db", backup, "show", "telegram:private", user)
		if live != copied || !strings.Contains(live, "remaining") {
			t.Errorf("%s in the running bot:\n%s\nin the backup:\n%s", user, live, copied)
		}
	}

	_, metrics := get(t, base+"/metrics")
	for _, want := range []string{
		`imaginebot_jobs_total{model="stable-diffusion",outcome="delivered",platform="telegram"} 2`,
		`imaginebot_jobs_total{model="stable-diffusion",outcome="bad_response",platform="telegram"} 1`,
		`imaginebot_refunds_total{reason="bad_response"} 1`,
		`imaginebot_refusals_total{platform="telegram",reason="quota_exhausted"} 1`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", grepLines(metrics, "imaginebot_(jobs|refunds|refusals)_total"))
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, done, logs, 30*time.Second)
	// Closed: the CLI opens the file, and finds what the bot left.
	if got := w.remaining(t, "telegram:private", "telegram:44"); got != "0" {
		t.Errorf("carol has %s left, want 0 (her credit spent)", got)
	}
	if got := w.remaining(t, "telegram:private", "telegram:43"); got != "2" {
		t.Errorf("bob has %s left, want 2 (refunded)", got)
	}
}

// httpAddr is the address the binary's start-up line says it listens on.
func httpAddr(t *testing.T, logs *syncWriter) string {
	t.Helper()
	re := regexp.MustCompile(`msg="imaginebot started".* http=(\S+)`)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			return m[1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no start-up line:\n%s", logs.String())
	return ""
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func waitStatus(t *testing.T, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := get(t, url)
		if code == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %s, want %d", url, code, body, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// binCLI runs the built binary with w's environment and returns its
// output; it fails the test unless the command exits 0.
func binCLI(t *testing.T, w *world, args ...string) string {
	t.Helper()
	cmd := exec.Command(builtBinary(t), args...)
	cmd.Env = startEnv(w)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
		t.Fatalf("imaginebot %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// startEnv is the environment startBinary gives the binary.
func startEnv(w *world) []string {
	env := []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range w.env {
		env = append(env, k+"="+v)
	}
	return env
}

func grepLines(text, pattern string) string {
	re := regexp.MustCompile(pattern)
	var b strings.Builder
	for _, line := range strings.Split(text, "\n") {
		if re.MatchString(line) {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// builtBinary builds imaginebot once for the tests that run it.
func builtBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "imaginebot-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "imaginebot")
		// -buildvcs=false: a checkout without the git binary must still build.
		out, err := exec.Command("go", "build", "-buildvcs=false", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = &buildError{out: string(out), err: err}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + "\n" + e.out }

// startBinary runs the real binary in w's world.
func startBinary(t *testing.T, w *world) (*exec.Cmd, *syncWriter, <-chan error) {
	t.Helper()
	cmd := exec.Command(builtBinary(t), "run", "-config", w.cfg)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range w.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// The tests read the logs while the bot writes them.
	logs := &syncWriter{w: &strings.Builder{}}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return cmd, logs, done
}

func waitExit(t *testing.T, done <-chan error, logs *syncWriter, within time.Duration) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, logs.String())
		}
	case <-time.After(within):
		t.Fatalf("no exit within %s\n%s", within, logs.String())
	}
}

// SIGTERM with jobs in flight at a slow gateway: the one that finishes
// within shutdown.drain is delivered and charged, the one that does not is
// refunded and its user told; the bot exits 0 with the ledger consistent.
func TestBinaryDrainsOnSIGTERM(t *testing.T) {
	w := newWorld(t, "shutdown:\n  drain: 3s\nlimits:\n  concurrency: 2\n")
	release := make(chan struct{})
	w.gw.Push(upstreamtest.Wait(release, upstreamtest.JSON(200, upstreamtest.Completion("![img]("+w.gw.ImageURL("a.png")+")"))), upstreamtest.Hang())
	w.gw.ServeImage("a.png", "image/png", upstreamtest.PNG(16, 16))
	cmd, logs, done := startBinary(t, w)
	alice, bob := telegramtest.User(42, "alice", "en"), telegramtest.User(43, "bob", "en")
	w.tg.Inject(w.tg.PrivateText(alice, "a quick fox"))
	w.tg.WaitFor(15*time.Second, func() bool { return w.gw.Calls() == 1 })
	w.tg.Inject(w.tg.PrivateText(bob, "a slow fox"))
	w.tg.WaitFor(15*time.Second, func() bool { return w.gw.Calls() == 2 })

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// A new prompt during the drain is refused, free.
	carol := telegramtest.User(44, "carol", "en")
	w.tg.Inject(w.tg.PrivateText(carol, "too late"))
	w.tg.WaitText(t, carol.ID, 10*time.Second, "restarting")
	close(release) // alice's job ends within the drain
	w.tg.WaitCall(t, "sendPhoto", 10*time.Second)
	w.tg.WaitText(t, bob.ID, 15*time.Second, "The bot is restarting", "try again in a minute")
	waitExit(t, done, logs, 30*time.Second)

	for user, want := range map[string]string{"telegram:42": "1", "telegram:43": "2", "telegram:44": "2"} {
		if got := w.remaining(t, "telegram:private", user); got != want {
			t.Errorf("%s has %s left, want %s", user, got, want)
		}
	}
}

// A second signal skips the drain: the hung job is refunded at once and
// the bot exits cleanly long before shutdown.drain (10 minutes here).
func TestBinarySecondSignalSkipsDrain(t *testing.T) {
	w := newWorld(t, "shutdown:\n  drain: 10m\n")
	w.gw.Handle(upstreamtest.Hang())
	cmd, logs, done := startBinary(t, w)
	bob := telegramtest.User(43, "bob", "en")
	w.tg.Inject(w.tg.PrivateText(bob, "a slow fox"))
	w.tg.WaitFor(15*time.Second, func() bool { return w.gw.Calls() == 1 })
	_ = cmd.Process.Signal(syscall.SIGTERM)
	w.tg.WaitFor(15*time.Second, func() bool { return strings.Contains(logs.String(), "stopping") })
	_ = cmd.Process.Signal(syscall.SIGTERM)
	w.tg.WaitText(t, bob.ID, 15*time.Second, "The bot is restarting")
	waitExit(t, done, logs, 30*time.Second)
	if !strings.Contains(logs.String(), "second signal") {
		t.Fatalf("logs:\n%s", logs.String())
	}
	if got := w.remaining(t, "telegram:private", "telegram:43"); got != "2" {
		t.Fatalf("bob has %s left, want 2 (refunded)", got)
	}
}

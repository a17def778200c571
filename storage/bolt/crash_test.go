package bolt_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/bolt"
	"github.com/imaginebot/imaginebot/storage/ledgertest"
)

// The helper processes are this test binary run again with these variables set.
const (
	envHelper = "IMAGINEBOT_BOLT_HELPER" // "crash" or "hold"
	envPath   = "IMAGINEBOT_BOLT_PATH"
	envRun    = "IMAGINEBOT_BOLT_RUN"
	readyLine = "IMAGINEBOT-HELPER-READY"
)

var (
	crashNow      = time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
	crashQuotas   = core.Quotas{DefaultDaily: 10}
	crashCredits  = 100_000
	crashAccounts = []core.AccountKey{
		{Scope: "discord:g1", User: "discord:1"},
		{Scope: "discord:g1", User: "discord:2"},
		{Scope: "discord:g2", User: "discord:1"},
		{Scope: "telegram:private", User: "telegram:7"},
	}
)

type helper struct {
	cmd    *exec.Cmd
	stdin  io.Closer
	stderr *bytes.Buffer
	exited chan error
}

// startHelper runs this binary as a helper process in mode on path and
// returns once it has opened the database and said so.
func startHelper(t *testing.T, mode, path string, run int) *helper {
	t.Helper()
	test := map[string]string{"crash": "TestCrashChild", "hold": "TestLockHolderChild"}[mode]
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), envHelper+"="+mode, envPath+"="+path, envRun+"="+strconv.Itoa(run))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// The helper exits when this pipe closes, so it cannot outlive a failed test.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, stdin: stdin, stderr: &bytes.Buffer{}, exited: make(chan error, 1)}
	cmd.Stderr = h.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		found := false
		for sc.Scan() {
			if sc.Text() == readyLine && !found {
				found = true
				ready <- true
			}
		}
		if !found {
			ready <- false
		}
		h.exited <- cmd.Wait()
	}()
	select {
	case ok := <-ready:
		if !ok {
			err := <-h.exited
			t.Fatalf("helper %s exited before it was ready: %v\n%s", mode, err, h.stderr)
		}
	case <-time.After(30 * time.Second):
		h.kill()
		t.Fatalf("helper %s never became ready\n%s", mode, h.stderr)
	}
	return h
}

// kill sends SIGKILL and waits for the process to be gone (and its lock with it).
// It reports whether the helper was still running, as a crash test needs.
func (h *helper) kill() (wasRunning bool) {
	select {
	case <-h.exited:
		return false
	default:
	}
	_ = h.cmd.Process.Signal(syscall.SIGKILL)
	<-h.exited
	_ = h.stdin.Close()
	return true
}

// exitOnStdinEOF ends a helper whose parent went away.
func exitOnStdinEOF() {
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(2)
	}()
}

// TestLockHolderChild is not a test: it holds the database open for
// TestLockedByAnotherProcess.
func TestLockHolderChild(t *testing.T) {
	if os.Getenv(envHelper) != "hold" {
		t.Skip("helper process")
	}
	exitOnStdinEOF()
	db, err := bolt.Open(os.Getenv(envPath))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	defer db.Close()
	fmt.Println(readyLine)
	select {}
}

// TestCrashChild is not a test: it is the process TestCrashRecovery kills.
// Several goroutines reserve, commit, refund and grant as fast as they can.
func TestCrashChild(t *testing.T) {
	if os.Getenv(envHelper) != "crash" {
		t.Skip("helper process")
	}
	exitOnStdinEOF()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	db, err := bolt.Open(os.Getenv(envPath))
	if err != nil {
		fail(err)
	}
	run := os.Getenv(envRun)
	l := core.NewLedger(db, crashQuotas)
	ctx := context.Background()
	fmt.Println(readyLine)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
			for i := 0; ; i++ {
				k := crashAccounts[rng.IntN(len(crashAccounts))]
				if rng.IntN(20) == 0 {
					if err := grant(ctx, db, k, 1+rng.IntN(5)); err != nil {
						fail(err)
					}
					continue
				}
				key := fmt.Sprintf("r%s-g%d-%d", run, g, i)
				if _, _, err := l.Reserve(ctx, core.Job{Key: key, Account: k, Units: 1 + rng.IntN(3)}, crashNow); err != nil {
					fail(err)
				}
				var err error
				switch p := rng.IntN(100); {
				case p < 45:
					err = l.Commit(ctx, key, crashNow)
				case p < 80:
					err = l.Refund(ctx, key, core.CodeUpstreamFailed, crashNow)
				}
				if err != nil {
					fail(err)
				}
			}
		})
	}
	wg.Wait()
}

// grant adds credits and records them in the audit log in one transaction,
// so the parent can count exactly what was granted before the crash.
func grant(ctx context.Context, db core.Store, k core.AccountKey, n int) error {
	return db.Update(ctx, func(tx core.Tx) error {
		a, err := tx.Account(k)
		if err != nil {
			return err
		}
		before := a.Credits
		a.Credits += n
		if err := tx.PutAccount(a); err != nil {
			return err
		}
		return tx.AppendAudit(core.AuditEntry{Time: crashNow, Scope: k.Scope, Actor: "cli:cli", Role: core.RoleOwner,
			Action: "grant", Target: k.User, Before: strconv.Itoa(before), After: strconv.Itoa(a.Credits), Note: strconv.Itoa(n)})
	})
}

// TestCrashRecovery kills a busy writer with SIGKILL at random moments and
// checks after each crash that start-up recovery leaves a consistent ledger:
// initial + granted = remaining + committed + pending, with nothing pending.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes; skipped with -short")
	}
	// At least minRuns crashes; up to maxRuns while the time budget lasts.
	const minRuns, maxRuns, budget = 20, 30, 15 * time.Second
	path := filepath.Join(t.TempDir(), "ledger.db")
	db, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(t.Context(), func(tx core.Tx) error {
		for _, k := range crashAccounts {
			if err := tx.PutAccount(core.Account{Key: k, Credits: crashCredits}); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	deadline := time.Now().Add(budget)
	totalRecovered := 0
	for run := range maxRuns {
		if run >= minRuns && time.Now().After(deadline) {
			break
		}
		child := startHelper(t, "crash", path, run)
		time.Sleep(time.Duration(20+rng.IntN(281)) * time.Millisecond)
		if !child.kill() {
			t.Fatalf("run %d: the child stopped on its own: %v\n%s", run, <-child.exited, child.stderr)
		}
		n, jobs := recoverAndCheck(t, path, run)
		totalRecovered += n
		t.Logf("run %d: %d jobs in the ledger, %d recovered", run, jobs, n)
	}
	if totalRecovered == 0 {
		t.Log("no crash ever left a reservation pending (unlikely, but not an error)")
	}
}

// recoverAndCheck reopens the file, refunds what the crash left pending and
// checks the invariant; then bbolt's own consistency check runs on the file.
func recoverAndCheck(t *testing.T, path string, run int) (recovered, jobs int) {
	t.Helper()
	db, err := bolt.Open(path)
	if err != nil {
		t.Fatalf("run %d: reopen: %v", run, err)
	}
	defer func() {
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		checkFile(t, path, run)
	}()
	ctx := t.Context()
	l := core.NewLedger(db, crashQuotas)
	pending, err := db.PendingJobs(ctx)
	if err != nil {
		t.Fatalf("run %d: %v", run, err)
	}
	for _, j := range pending {
		if err := l.Refund(ctx, j.Key, core.CodeInterrupted, crashNow); err != nil {
			t.Fatalf("run %d: refund %s: %v", run, j.Key, err)
		}
	}
	if left, err := db.PendingJobs(ctx); err != nil || len(left) != 0 {
		t.Fatalf("run %d: %d still pending after recovery (%v)", run, len(left), err)
	}
	granted := map[core.AccountKey]int{}
	entries, err := db.Audit(ctx, "", 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Note)
		if e.Action != "grant" || err != nil {
			t.Fatalf("run %d: unexpected audit entry %+v", run, e)
		}
		granted[core.AccountKey{Scope: e.Scope, User: e.Target}] += n
	}
	for _, k := range crashAccounts {
		tally, err := ledgertest.Invariant(ctx, db, l, k, crashQuotas.DefaultDaily+crashCredits, granted[k], crashNow)
		if err != nil {
			t.Errorf("run %d: %v", run, err)
		}
		jobs += tally.Jobs
	}
	return len(pending), jobs
}

// checkFile runs bbolt's page-level consistency check on the closed file.
func checkFile(t *testing.T, path string, run int) {
	t.Helper()
	raw, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("run %d: %v", run, err)
	}
	defer raw.Close()
	err = raw.View(func(tx *bbolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Fatalf("run %d: bbolt check: %v", run, err)
	}
}

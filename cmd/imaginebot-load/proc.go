package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
)

// botPackage is built by import path, so the tool works from any directory
// of the module (its own test runs in cmd/imaginebot-load).
const botPackage = "github.com/imaginebot/imaginebot/cmd/imaginebot"

// buildBot compiles the bot into dir. -buildvcs=false: a checkout without
// the git binary must still build (as in the bot's own e2e test).
func buildBot(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "imaginebot")
	cmd := exec.CommandContext(ctx, "go", "build", "-buildvcs=false", "-o", bin, botPackage)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", botPackage, err, out)
	}
	return bin, nil
}

// botConfig is what goes into the bot's YAML file.
type botConfig struct {
	GatewayURL      string
	Retries         int
	UpstreamTimeout time.Duration
	JobTimeout      time.Duration
	Concurrency     int
	QueueCap        int
	PerUserJobs     int
	Daily           int
	DBPath          string        // the bbolt file, when not Postgres
	Postgres        bool          // storage.driver: postgres; the DSN comes by env
	JobLease        time.Duration // storage.job_lease; 0 = not written
	Platform        string        // the one configured; its secrets come by env
	TGRate          int           // 0 = leave telegram.messages_per_second out
	Extra           string        // YAML merged over the rest
}

// yaml renders the config. Extra is merged key by key rather than appended:
// appending "limits: {...}" to a file that already has limits would be a
// duplicate key, which the YAML decoder rejects.
func (c botConfig) yaml() ([]byte, error) {
	cfg := map[string]any{
		"upstream": map[string]any{
			"base_url": c.GatewayURL,
			"retries":  c.Retries,
			"timeout":  c.UpstreamTimeout.String(),
		},
		"images": map[string]any{"allow_private_hosts": []string{"127.0.0.1"}},
		"limits": map[string]any{
			"concurrency":     c.Concurrency,
			"queue_cap":       c.QueueCap,
			"rate_per_minute": 0,
			"per_user_jobs":   c.PerUserJobs,
			"job_timeout":     c.JobTimeout.String(),
		},
		"quotas":  map[string]any{"daily": c.Daily},
		"log":     map[string]any{"level": "warn"},
		"storage": map[string]any{"path": c.DBPath},
	}
	if c.Postgres {
		storage := map[string]any{"driver": "postgres"}
		if c.JobLease > 0 {
			storage["job_lease"] = c.JobLease.String()
		}
		cfg["storage"] = storage
	}
	switch c.Platform {
	case platformDiscord:
		// Commands in the one guild: registered at once, as on Discord.
		cfg["discord"] = map[string]any{"guilds": []string{discordGuild}}
	default:
		telegram := map[string]any{"poll_timeout": "1s"}
		if c.TGRate > 0 {
			telegram["messages_per_second"] = c.TGRate
		}
		cfg["telegram"] = telegram
	}
	if strings.TrimSpace(c.Extra) != "" {
		var extra map[string]any
		if err := yaml.Unmarshal([]byte(c.Extra), &extra); err != nil {
			return nil, fmt.Errorf("-extra-config: %w", err)
		}
		merge(cfg, extra)
	}
	return yaml.Marshal(cfg)
}

// merge copies src into dst, descending into maps both have.
func merge(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// botProc is one running bot process.
type botProc struct {
	cmd      *exec.Cmd
	pid      int
	instance int // 0 with -instances 1
	exited   chan struct{}
	err      error // Wait's, valid once exited is closed

	baseline cpuTicks // at readiness
	ready    bool
	killing  atomic.Bool // we ended it: its exit is no crash
}

// launcher starts bot processes, each the same way but for the instance's
// environment, each instance logging to a file of its own.
type launcher struct {
	bin, config string
	env         [][]string // by instance
	logs        []*os.File // by instance
	mu          sync.Mutex
	starts      []int // by instance
}

func (l *launcher) start(instance int) (*botProc, error) {
	log := l.logs[instance]
	l.mu.Lock()
	l.starts[instance]++
	fmt.Fprintf(log, "=== imaginebot start #%d at %s ===\n", l.starts[instance], time.Now().Format(time.RFC3339Nano))
	l.mu.Unlock()
	cmd := exec.Command(l.bin, "run", "-config", l.config)
	cmd.Env = l.env[instance]
	cmd.Stdout = log
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", l.bin, err)
	}
	p := &botProc{cmd: cmd, pid: cmd.Process.Pid, instance: instance, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// botEnv is the bot's environment: PATH and HOME, plus the secrets, which
// the config file never holds.
func botEnv(secrets map[string]string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range secrets {
		env = append(env, k+"="+v)
	}
	return env
}

// Exited reports whether the process has ended.
func (p *botProc) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// ExitCode is the exit status (-1 when killed by a signal or still running).
func (p *botProc) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// kill ends the process with SIGKILL and waits for it.
func (p *botProc) kill() {
	p.killing.Store(true)
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// terminate sends SIGTERM and waits up to grace for the exit, then kills.
func (p *botProc) terminate(grace time.Duration) (code int, timedOut bool) {
	p.killing.Store(true)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.ExitCode(), false
	case <-time.After(grace):
		p.kill()
		return p.ExitCode(), true
	}
}

// cpuTicks is utime+stime of a process, in clock ticks.
type cpuTicks int64

// readCPU reads /proc/<pid>/stat. Fields after the command name (which may
// hold spaces and parentheses) are split after its last ')'.
func readCPU(pid int) (cpuTicks, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu: %w", err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("cpu: malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("cpu: short /proc stat")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("cpu: bad utime/stime")
	}
	return cpuTicks(u + st), nil
}

// readTreeCPU is what a PostgreSQL server has used: its postmaster's
// utime+stime, with those of its children it has reaped (cutime, cstime:
// the backends of connections closed), and those of its children still
// running (the backends of open connections, its background workers).
func readTreeCPU(pid int) (cpuTicks, error) {
	own, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	sum := func(f []string, from, to int) (cpuTicks, error) {
		var t cpuTicks
		for k := from; k <= to; k++ {
			n, err := strconv.ParseInt(f[k], 10, 64)
			if err != nil {
				return 0, errors.New("cpu: bad /proc stat")
			}
			t += cpuTicks(n)
		}
		return t, nil
	}
	total, err := sum(own, 11, 14) // utime, stime, cutime, cstime
	if err != nil {
		return 0, err
	}
	entries, _ := os.ReadDir("/proc")
	parent := strconv.Itoa(pid)
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		f, err := statFields(child)
		if err != nil || f[1] != parent { // f[1] is field 4, the parent
			continue
		}
		if t, err := sum(f, 11, 12); err == nil {
			total += t
		}
	}
	return total, nil
}

// statFields is /proc/<pid>/stat from field 3 (the state) on, split after
// the command name (which may hold spaces and parentheses).
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, fmt.Errorf("cpu: %w", err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, errors.New("cpu: malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return nil, errors.New("cpu: short /proc stat")
	}
	return f, nil
}

// readHWM is VmHWM (peak resident set) from /proc/<pid>/status, in bytes.
func readHWM(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("rss: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("rss: %w", err)
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("rss: no VmHWM")
}

// clockTicks is the kernel's USER_HZ: 100 on every Linux we run, but asked.
func clockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			return float64(n)
		}
	}
	return 100
}

// tail returns the last n lines of a file, for error reports.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Package pgtest gives tests a PostgreSQL server to run against: a throwaway
// one it starts itself from the PostgreSQL server binaries (initdb into a
// temporary directory, postgres on 127.0.0.1 and a free port, as an
// unprivileged user when the tests run as root, stopped at the end), or an
// existing one named by IMAGINEBOT_TEST_DATABASE_URL. Each test gets a
// database of its own on it.
//
// Without either, tests are skipped with a message naming the variables
// below; IMAGINEBOT_TEST_POSTGRES=1 makes that a failure instead (CI sets
// it, so the tests cannot silently stop running), and =0 skips them even
// where the binaries are.
//
//	IMAGINEBOT_TEST_DATABASE_URL  an existing server (a superuser, or a role with CREATEDB)
//	IMAGINEBOT_PG_BIN             the directory of initdb and postgres, when not on PATH
//	                              or in /usr/lib/postgresql/*/bin
//	IMAGINEBOT_TEST_POSTGRES      1: PostgreSQL tests must run; 0: skip them
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The environment variables of the package documentation.
const (
	EnvDatabaseURL = "IMAGINEBOT_TEST_DATABASE_URL"
	EnvBin         = "IMAGINEBOT_PG_BIN"
	EnvRequire     = "IMAGINEBOT_TEST_POSTGRES"
)

// ErrUnavailable is returned by Start when no PostgreSQL can be had.
var ErrUnavailable = errors.New("pgtest: no PostgreSQL server available")

// Server is a PostgreSQL server for tests.
type Server struct {
	admin  string // DSN of the maintenance database, as a superuser
	cmd    *exec.Cmd
	exited chan struct{}
	dir    string // removed by Stop when the server is ours ("" otherwise)
	log    string // the server's log file
	dbs    []string
	n      atomic.Int64
	mu     sync.Mutex
	owned  bool
}

// Start returns the server tests should use: the one named by
// IMAGINEBOT_TEST_DATABASE_URL, or a new throwaway one whose data directory
// is made under dir ("" = a new temporary directory, removed by Stop).
// It fails with ErrUnavailable when neither can be had.
func Start(ctx context.Context, dir string) (*Server, error) {
	if dsn := os.Getenv(EnvDatabaseURL); dsn != "" {
		s := &Server{admin: dsn}
		if err := s.ping(ctx); err != nil {
			return nil, fmt.Errorf("pgtest: %s: %w", EnvDatabaseURL, err)
		}
		return s, nil
	}
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	return startLocal(ctx, bin, dir)
}

// Connect returns the existing server dsn names (a superuser, or a role
// with CREATEDB), as Start does for IMAGINEBOT_TEST_DATABASE_URL, for
// programs that take the server as a flag: CreateDatabase makes databases
// on it, and Stop drops those that are left.
func Connect(ctx context.Context, dsn string) (*Server, error) {
	s := &Server{admin: dsn}
	if err := s.ping(ctx); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	return s, nil
}

// skipOrFail ends t when no server can be had: a skip naming how to enable
// the tests, or a failure when IMAGINEBOT_TEST_POSTGRES=1.
func skipOrFail(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrUnavailable) && os.Getenv(EnvRequire) != "1" {
		t.Skipf("PostgreSQL tests skipped: %v. Install the PostgreSQL server binaries (Debian: apt-get install postgresql) "+
			"or set %s to their directory, or set %s to an existing server; %s=1 makes this a failure", err, EnvBin, EnvDatabaseURL, EnvRequire)
	}
	t.Fatalf("PostgreSQL for tests: %v", err)
}

// New starts a server for t alone (see Start), in t.TempDir(), stopped when
// t ends. It skips t when no server can be had (see the package documentation).
func New(t testing.TB) *Server {
	t.Helper()
	if os.Getenv(EnvRequire) == "0" {
		t.Skipf("PostgreSQL tests skipped: %s=0", EnvRequire)
	}
	s, err := Start(t.Context(), t.TempDir())
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	})
	return s
}

var shared struct {
	once sync.Once
	s    *Server
	err  error
}

// Shared is New for a whole test binary: one server, started by the first
// test that asks and stopped by Main. Use it with TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
func Shared(t testing.TB) *Server {
	t.Helper()
	if os.Getenv(EnvRequire) == "0" {
		t.Skipf("PostgreSQL tests skipped: %s=0", EnvRequire)
	}
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shared.s, shared.err = Start(ctx, "")
	})
	if shared.err != nil {
		skipOrFail(t, shared.err)
	}
	return shared.s
}

// Main runs the tests and then stops the server Shared started, if any.
func Main(m *testing.M) int {
	code := m.Run()
	if shared.s != nil {
		if err := shared.s.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Database creates an empty database and returns its connection string.
// On a server of its own it is left for Stop; on an existing server it is
// dropped when t ends.
func (s *Server) Database(t testing.TB) string {
	t.Helper()
	dsn, name, err := s.CreateDatabase(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !s.owned {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := s.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
				t.Logf("pgtest: drop database %s: %v", name, err)
			}
		})
	}
	return dsn
}

// CreateDatabase creates an empty database and returns its connection
// string and name.
func (s *Server) CreateDatabase(ctx context.Context) (dsn, name string, err error) {
	name = fmt.Sprintf("imaginebot_test_%d_%d", os.Getpid(), s.n.Add(1))
	if err := s.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", "", fmt.Errorf("pgtest: create database: %w", err)
	}
	s.mu.Lock()
	s.dbs = append(s.dbs, name)
	s.mu.Unlock()
	return withDatabase(s.admin, name), name, nil
}

// DSN is the connection string of the server's maintenance database.
func (s *Server) DSN() string { return s.admin }

// Pid is the process id of a server of its own (the postmaster, whose
// children are the backends), for measuring what it costs; 0 for an
// existing server.
func (s *Server) Pid() int {
	if !s.owned || s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Log is the server's log file ("" for an existing server).
func (s *Server) Log() string { return s.log }

// Stop stops a server of its own (fast shutdown, then SIGKILL after 10 s)
// and removes its directory; on an existing server it drops what is left
// of the databases it made.
func (s *Server) Stop() error {
	if !s.owned {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s.mu.Lock()
		dbs := slices.Clone(s.dbs)
		s.mu.Unlock()
		var errs []error
		for _, name := range dbs {
			if err := s.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	var err error
	select {
	case <-s.exited:
	default:
		_ = s.cmd.Process.Signal(syscall.SIGINT) // fast shutdown: connections are closed
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
			err = fmt.Errorf("pgtest: the server did not stop within 10s; killed (log: %s)", s.log)
		}
	}
	if s.dir != "" {
		if rerr := os.RemoveAll(s.dir); rerr != nil && err == nil {
			err = fmt.Errorf("pgtest: %w", rerr)
		}
	}
	return err
}

func (s *Server) ping(ctx context.Context) error { return s.exec(ctx, "SELECT 1") }

func (s *Server) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, s.admin)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// withDatabase is dsn (a URL or key=value pairs) naming database name.
func withDatabase(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		return u.String()
	}
	return dsn + " dbname=" + name
}

// findBin finds the directory holding initdb and postgres.
func findBin() (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv(EnvBin); dir != "" {
		if !has(dir) {
			return "", fmt.Errorf("%w: %s=%s has no initdb and postgres", ErrUnavailable, EnvBin, dir)
		}
		return dir, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
		if has(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	// Debian and Ubuntu keep them off PATH, one directory per major version.
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return majorOf(b) - majorOf(a) })
	dirs = append(dirs, "/usr/local/pgsql/bin", "/opt/homebrew/bin", "/usr/pgsql/bin")
	for _, dir := range dirs {
		if has(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("%w: no initdb and postgres on PATH or in /usr/lib/postgresql/*/bin", ErrUnavailable)
}

func majorOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// startLocal runs initdb and postgres from bin, in a data directory under
// dir, as an unprivileged user when this process is root (both refuse to
// run as root).
func startLocal(ctx context.Context, bin, dir string) (*Server, error) {
	s := &Server{owned: true}
	if dir == "" {
		d, err := os.MkdirTemp("", "imaginebot-pg-")
		if err != nil {
			return nil, fmt.Errorf("pgtest: %w", err)
		}
		dir, s.dir = d, d
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	cred, err := runAs(dir, data)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	initdb.Dir, initdb.Stdout, initdb.Stderr = data, &out, &out
	initdb.Env = append(os.Environ(), "LC_ALL=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := initdb.Run(); err != nil {
		return nil, fmt.Errorf("pgtest: initdb: %w\n%s", err, out.String())
	}
	s.log = filepath.Join(dir, "postgres.log")
	var lastErr error
	for range 3 { // the free port may be taken before postgres binds it
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		if lastErr = s.run(ctx, bin, data, port, cred); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

// run starts postgres on port and waits until it takes connections.
func (s *Server) run(ctx context.Context, bin, data string, port int, cred *syscall.Credential) error {
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer logf.Close()
	// fsync stays on: the ledger's benchmarks measure durable commits.
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
		"-c", "max_connections=300", "-c", "fsync=on", "-c", "log_min_messages=warning")
	cmd.Dir, cmd.Stdout, cmd.Stderr = data, logf, logf
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	// The server dies with the test binary, even when it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: postgres: %w", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.exited) }()
	s.admin = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	deadline := time.After(30 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := s.ping(pctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			log, _ := os.ReadFile(s.log)
			return fmt.Errorf("pgtest: postgres exited: %v\n%s", cmd.ProcessState, log)
		case <-deadline:
			_ = cmd.Process.Kill()
			<-s.exited
			return fmt.Errorf("pgtest: postgres did not take connections within 30s: %v (log: %s)", err, s.log)
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-s.exited
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// runAs returns the credentials to run the server with: none when this
// process is not root; otherwise the postgres user's, or nobody's, with
// data handed to that user and dir's ancestors under the temporary
// directory made traversable (t.TempDir makes them 0700).
func runAs(dir, data string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var u *user.User
	var err error
	for _, name := range []string{"postgres", "nobody"} {
		if u, err = user.Lookup(name); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: running as root, and no postgres or nobody user to run the server as", ErrUnavailable)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(data, uid, gid); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	tmp, _ := filepath.Abs(os.TempDir())
	for d, _ := filepath.Abs(dir); strings.HasPrefix(d, tmp+string(filepath.Separator)); d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return nil, fmt.Errorf("pgtest: %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				return nil, fmt.Errorf("pgtest: %w", err)
			}
		}
	}
	// The log file is opened by this process, so only the data directory
	// needs to be the server's.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

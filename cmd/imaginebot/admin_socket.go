package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/imaginebot/imaginebot/core"
)

// The admin socket. bbolt lets one process open the ledger, so while the bot
// runs, `imaginebot quota` and `imaginebot backup` send their operation to it
// over a Unix socket beside the database (storage.admin_socket) and the bot
// runs it with the same code the CLI runs on the file when the bot is
// stopped: adminRequest.do, audited as "cli". The socket is 0600: whoever
// can connect is the bot's own user, who could open the file anyway.
//
// The protocol is HTTP: POST /v1/command with an adminRequest, answered with
// an adminResponse holding exactly what the CLI prints and how it exits.

const (
	opQuota  = "quota"
	opBackup = "backup"
)

// adminRequest is one CLI operation, run by whichever process holds the ledger.
type adminRequest struct {
	// DB is the database the operator means, absolute: a bot serving
	// another file refuses, and the CLI opens the file itself. DBName is
	// the same path as the operator wrote it, for the report.
	DB     string `json:"db"`
	DBName string `json:"db_name"`
	Op     string `json:"op"`
	// quota
	Sub  string   `json:"sub,omitempty"`
	Args []string `json:"args,omitempty"`
	// backup: the file, absolute (the bot's working directory is not the
	// operator's), and as the operator wrote it.
	Backup     string `json:"backup,omitempty"`
	BackupName string `json:"backup_name,omitempty"`
}

type adminResponse struct {
	Output string `json:"output"`
	// Usage is a usage error's message (exit 2 with the usage), Error any
	// other failure's (exit 1).
	Usage string `json:"usage,omitempty"`
	Error string `json:"error,omitempty"`
}

// ledgerFile is what the operations need of the database beside the service.
type ledgerFile interface {
	Path() string
	BackupFile(path string) error
}

// do runs the operation, writing what the CLI prints to w.
func (r adminRequest) do(ctx context.Context, w io.Writer, svc *core.Service, db ledgerFile) error {
	switch r.Op {
	case opQuota:
		return quota(ctx, w, svc, r.Sub, r.Args)
	case opBackup:
		// One read transaction, verified before it is renamed into place.
		if err := db.BackupFile(r.Backup); err != nil {
			return err
		}
		fmt.Fprintf(w, "backed up %s to %s\n", r.DBName, r.BackupName)
		return nil
	default:
		return fmt.Errorf("unknown admin operation %q", r.Op)
	}
}

// maxSocketPath is the longest path bind(2) accepts: sun_path (108 bytes on
// Linux, 104 on the BSDs and macOS) less its terminating NUL.
func maxSocketPath() int {
	switch runtime.GOOS {
	case "linux", "android", "windows":
		return 107
	default:
		return 103
	}
}

// stagingOverhead is how much longer than its directory the path the socket
// is first bound at is: dir + "/." + up to 10 random digits + "/s".
const stagingOverhead = len("/.4294967295/s")

// checkSocketPath says why path cannot be the admin socket, or nil.
func checkSocketPath(path string) error {
	n := max(len(path), len(filepath.Dir(path))+stagingOverhead)
	if n > maxSocketPath() {
		return fmt.Errorf("%q is too long for a Unix socket: %d bytes, counting the private directory it is first created in, and the limit here is %d", path, n, maxSocketPath())
	}
	return nil
}

// adminServer serves the admin socket of a running bot.
type adminServer struct {
	path string
	sock os.FileInfo // the socket as bound: Close removes only this one
	srv  *http.Server
	done chan struct{}
	log  *slog.Logger
}

// serveAdmin listens on path (replacing a stale socket) and serves the
// operations against svc and db until Close.
func serveAdmin(path string, svc *core.Service, db ledgerFile, log *slog.Logger) (*adminServer, error) {
	ln, sock, err := listenAdmin(path, log)
	if err != nil {
		return nil, err
	}
	a := &adminServer{path: path, sock: sock, done: make(chan struct{}), log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/command", func(w http.ResponseWriter, r *http.Request) { a.command(w, r, svc, db) })
	// No write timeout: a backup of a big ledger takes as long as it takes.
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		IdleTimeout: time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin socket stopped serving", "path", path, "err", err)
		}
	}()
	log.Info("admin socket listening", "path", path)
	return a, nil
}

func (a *adminServer) command(w http.ResponseWriter, r *http.Request, svc *core.Service, db ledgerFile) {
	var req adminRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields() // a newer CLI's request is refused, not half understood
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "admin: bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if req.Op == opBackup && !filepath.IsAbs(req.Backup) {
		http.Error(w, "admin: the backup path must be absolute", http.StatusBadRequest)
		return
	}
	if !sameFile(req.DB, db.Path()) {
		// quota -db on a copy, through a socket path shared with this bot.
		http.Error(w, "admin: this bot serves "+db.Path(), http.StatusConflict)
		return
	}
	var out bytes.Buffer
	err := req.do(r.Context(), &out, svc, db)
	resp := adminResponse{Output: out.String()}
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		resp.Usage = ue.msg
	case err != nil:
		resp.Error = err.Error()
	}
	// Arguments stay out of the log: the audit log records every change.
	a.log.Info("admin command", "op", req.Op, "sub", req.Sub, "err", err)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// Close stops serving, waiting briefly for operations in flight, and
// removes the socket.
func (a *adminServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.srv.Shutdown(ctx); err != nil {
		_ = a.srv.Close()
	}
	<-a.done
	// Another bot may have replaced a socket it took for stale; its socket is not ours to remove.
	if fi, err := os.Lstat(a.path); err == nil && os.SameFile(fi, a.sock) {
		if err := os.Remove(a.path); err != nil {
			a.log.Warn("admin socket not removed", "path", a.path, "err", err)
		}
	}
}

// listenAdmin binds the socket at path with mode 0600. A socket a killed
// bot left behind is replaced; anything else at path is an error.
//
// The socket is bound in a private directory, made 0600 there, and renamed
// into place: bound at path directly it would exist with the umask's mode
// for a moment, long enough for another user to connect.
func listenAdmin(path string, log *slog.Logger) (*net.UnixListener, os.FileInfo, error) {
	if err := checkSocketPath(path); err != nil {
		return nil, nil, err
	}
	if err := checkStale(path, log); err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	staged := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: staged, Net: "unix"})
	if err != nil {
		return nil, nil, err
	}
	ln.SetUnlinkOnClose(false) // it is renamed; Close removes it by its final name
	fail := func(err error) (*net.UnixListener, os.FileInfo, error) {
		_ = ln.Close()
		return nil, nil, err
	}
	if err := os.Chmod(staged, 0o600); err != nil {
		return fail(err)
	}
	if err := os.Rename(staged, path); err != nil {
		return fail(err)
	}
	sock, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return ln, sock, nil
}

// checkStale says whether path may be replaced: nothing is there, or a
// socket nothing listens on.
func checkStale(path string, log *slog.Logger) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("%s exists and is not a socket; move it away or set storage.admin_socket to another path", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	switch {
	case err == nil:
		conn.Close()
		return fmt.Errorf("%s is served by another process, another imaginebot with the same socket perhaps; give each bot its own storage.admin_socket", path)
	case errors.Is(err, syscall.ECONNREFUSED):
		// A killed bot leaves its socket behind, and nothing listens on
		// it; the new socket is renamed over it.
		log.Info("admin socket: replacing a stale socket", "path", path)
		return nil
	default:
		return fmt.Errorf("%s: %w", path, err)
	}
}

// adminSocketFor is where a bot serving dbPath listens: the configured
// socket for the configured database, the default beside any other file
// (quota -db on a copy must not reach the running bot).
func adminSocketFor(cfg *Config, dbPath string) string {
	if sameFile(dbPath, cfg.Storage.Path) {
		return cfg.Storage.AdminSocket
	}
	return dbPath + ".sock"
}

// askBot sends req to the bot listening on sock and prints its answer to w.
// served is false when no bot runs there, or that bot serves another file:
// the caller then opens the database itself. A socket left by a killed bot
// refuses connections, which counts as no bot.
func askBot(ctx context.Context, w io.Writer, sock string, req adminRequest) (served bool, err error) {
	if len(sock) > maxSocketPath() {
		return false, nil // no bot could have bound it
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := net.Dialer{Timeout: 5 * time.Second}
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
	body, err := json.Marshal(req)
	if err != nil {
		return true, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://imaginebot/v1/command", bytes.NewReader(body))
	if err != nil {
		return true, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	switch {
	// Connecting failed, so nothing was sent: the file is safe to open.
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return false, nil
	case errors.Is(err, fs.ErrPermission):
		return true, fmt.Errorf("admin socket %s: %w; run imaginebot as the bot's user", sock, err)
	case err != nil:
		return true, fmt.Errorf("admin socket %s: %w", sock, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusConflict:
		return false, nil
	default:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return true, fmt.Errorf("admin socket %s: %s: %s", sock, resp.Status, strings.TrimSpace(string(msg)))
	}
	var ar adminResponse
	if err := json.NewDecoder(resp.Body).Decode(&ar); err != nil {
		return true, fmt.Errorf("admin socket %s: reading the answer: %w", sock, err)
	}
	if _, err := io.WriteString(w, ar.Output); err != nil {
		return true, err
	}
	switch {
	case ar.Usage != "":
		return true, &usageError{msg: ar.Usage}
	case ar.Error != "":
		return true, errors.New(ar.Error)
	}
	return true, nil
}

func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false
	}
	return os.SameFile(fa, fb)
}

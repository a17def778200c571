// Package discordtest is a fake Discord REST API for tests: an httptest
// server that answers the routes the adapter uses the way discord.com does,
// records every call (JSON bodies, multipart payload_json and files),
// measures how many requests of a route were in flight at once, injects
// latency, failures and 429s, and enforces Discord's limit of 50 requests a
// second for bot-token calls (interaction webhooks are apart, as on Discord).
// It also signs interaction requests the way Discord does (ed25519), for
// the HTTP interactions endpoint.
package discordtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
)

// Token is the bot token the server accepts ("Bot " + Token).
const Token = "MTIzNDU2Nzg5MDEyMzQ1Njc4.Gfake0.discordtest-bot-token-0123456789abcd"

// AppID is the fake application's id.
const AppID = "1100000000000000001"

// Call is one recorded request.
type Call struct {
	Method string
	Path   string // without /api/vN
	Route  string // the path with ids and tokens replaced: "PATCH /webhooks/:app/:token/messages/@original"
	Query  string
	Header http.Header
	// JSON is the request's JSON body, or the payload_json part of a
	// multipart one.
	JSON  []byte
	Files []File
	Time  time.Time
	// Status is what the server answered.
	Status int
}

// File is an uploaded attachment.
type File struct {
	Field, Name, ContentType string
	Data                     []byte
}

// Decode unmarshals the call's JSON into v.
func (c Call) Decode(v any) error { return json.Unmarshal(c.JSON, v) }

// Failure is a scripted answer instead of the normal one.
type Failure struct {
	Status int
	Body   string
	Header http.Header
}

// Server is the fake. Its methods are safe for concurrent use.
type Server struct {
	URL string // the API base, for discord.api_base_url

	srv *httptest.Server

	mu          sync.Mutex
	changed     chan struct{}
	calls       []Call
	failures    map[string][]Failure // by route
	latency     map[string]time.Duration
	inflight    map[string]int
	peak        map[string]int
	commands    map[string][]json.RawMessage // "" global, else guild id
	expired     map[string]bool              // interaction tokens that no longer work
	nextID      atomic.Int64
	global      *rate.Limiter // bot-token calls, when enforced
	tooMany     int
	gatewayWS   string
	gw          *gateway
	attachments map[string][]byte // AddAttachment
	// GET /gateway/bot's advice
	shards, maxConcurrency int
	onCall                 func(Call)
}

// Option configures a Server.
type Option func(*Server)

// AddAttachment serves data as an uploaded attachment (Discord's CDN) and
// returns its URL.
func (s *Server) AddAttachment(name string, data []byte) string {
	s.locked(func() {
		if s.attachments == nil {
			s.attachments = map[string][]byte{}
		}
		s.attachments[name] = data
	})
	return s.URL + "/attachments/" + name
}

// WithShards makes GET /gateway/bot recommend n shards, max_concurrency at
// a time.
func WithShards(n, maxConcurrency int) Option {
	return func(s *Server) { s.shards, s.maxConcurrency = n, maxConcurrency }
}

// WithRateLimits enforces 50 requests a second for bot-token calls.
func WithRateLimits() Option {
	return func(s *Server) { s.global = rate.NewLimiter(50, 50) }
}

// OnCall has f see every call once it is answered, before the answer goes
// out: a load tool keeps its own running figures with it instead of
// scanning Calls, which copies every call so far. f must not block.
func OnCall(f func(Call)) Option {
	return func(s *Server) { s.onCall = f }
}

// New starts a fake closed when the test ends.
func New(t testing.TB, opts ...Option) *Server {
	s := NewServer(opts...)
	t.Cleanup(s.Close)
	return s
}

// NewServer starts a fake for a caller without a testing.TB (a command);
// Close stops it.
func NewServer(opts ...Option) *Server {
	s := &Server{
		changed:  make(chan struct{}),
		failures: map[string][]Failure{},
		latency:  map[string]time.Duration{},
		inflight: map[string]int{},
		peak:     map[string]int{},
		commands: map[string][]json.RawMessage{},
		expired:  map[string]bool{},
	}
	s.nextID.Store(1300000000000000000)
	s.gw = &gateway{conns: map[*websocket.Conn]*sync.Mutex{}, shardOf: map[*websocket.Conn]int{}, identify: make(chan json.RawMessage, 16)}
	for _, o := range opts {
		o(s)
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	s.gatewayWS = "ws" + strings.TrimPrefix(s.URL, "http") + "/gateway"
	return s
}

// Close stops the server, waiting for the requests in flight.
func (s *Server) Close() { s.srv.Close() }

var (
	apiPrefix = regexp.MustCompile(`^/api(/v\d+)?`)
	idRe      = regexp.MustCompile(`^\d{5,20}$`)
)

// route names a path with its ids and tokens replaced, so failures,
// latency and counts apply to every call of one kind.
func route(method, path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i, p := range parts {
		if idRe.MatchString(p) {
			parts[i] = ":id"
		}
	}
	if len(parts) >= 3 && (parts[0] == "webhooks" || parts[0] == "interactions") {
		parts[2] = ":token"
	}
	return method + " /" + strings.Join(parts, "/")
}

// Routes the adapter uses.
const (
	RouteCallback      = "POST /interactions/:id/:token/callback"
	RouteEditOriginal  = "PATCH /webhooks/:id/:token/messages/@original"
	RouteGetOriginal   = "GET /webhooks/:id/:token/messages/@original"
	RouteDeleteOrig    = "DELETE /webhooks/:id/:token/messages/@original"
	RouteFollowup      = "POST /webhooks/:id/:token"
	RouteChannelPost   = "POST /channels/:id/messages"
	RouteGlobalCmds    = "PUT /applications/:id/commands"
	RouteGuildCmds     = "PUT /applications/:id/guilds/:id/commands"
	RouteGetGlobalCmds = "GET /applications/:id/commands"
	RouteGetGuildCmds  = "GET /applications/:id/guilds/:id/commands"
)

// FailNext makes the next call of route answer f instead. Failures queue.
func (s *Server) FailNext(route string, f Failure) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[route] = append(s.failures[route], f)
}

// TooManyRequests is a Discord 429 with retry_after seconds in the body
// and the headers.
func TooManyRequests(retryAfter float64, global bool) Failure {
	h := http.Header{}
	h.Set("Retry-After", strconv.Itoa(int(retryAfter+0.999)))
	h.Set("X-RateLimit-Remaining", "0")
	h.Set("X-RateLimit-Reset-After", strconv.FormatFloat(retryAfter, 'f', 3, 64))
	if global {
		h.Set("X-RateLimit-Global", "true")
	}
	body, _ := json.Marshal(map[string]any{"message": "You are being rate limited.", "retry_after": retryAfter, "global": global})
	return Failure{Status: http.StatusTooManyRequests, Body: string(body), Header: h}
}

// locked runs f holding the server's lock.
func (s *Server) locked(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

// SetLatency delays every answer of route by d.
func (s *Server) SetLatency(route string, d time.Duration) {
	s.locked(func() { s.latency[route] = d })
}

// Expire makes an interaction token invalid, as Discord does after 15 minutes.
func (s *Server) Expire(token string) { s.locked(func() { s.expired[token] = true }) }

// PeakInFlight is the most requests of route that were in flight at once.
func (s *Server) PeakInFlight(route string) (n int) {
	s.locked(func() { n = s.peak[route] })
	return n
}

// Refused429 is how many calls the enforced rate limit refused.
func (s *Server) Refused429() (n int) {
	s.locked(func() { n = s.tooMany })
	return n
}

// Calls returns the calls of route ("" = all), oldest first.
func (s *Server) Calls(route string) (out []Call) {
	s.locked(func() {
		for _, c := range s.calls {
			if route == "" || c.Route == route {
				out = append(out, c)
			}
		}
	})
	return out
}

// WaitCalls waits for n calls of route that match (nil: all) and returns
// them, failing the test after timeout.
func (s *Server) WaitCalls(t testing.TB, route string, n int, timeout time.Duration, match func(Call) bool) []Call {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		ch := s.changed
		var got []Call
		for _, c := range s.calls {
			if c.Route == route && (match == nil || match(c)) {
				got = append(got, c)
			}
		}
		s.mu.Unlock()
		if len(got) >= n {
			return got
		}
		left := time.Until(deadline)
		if left <= 0 {
			var seen []string
			for _, c := range s.Calls("") {
				seen = append(seen, fmt.Sprintf("%s(%d)", c.Route, c.Status))
			}
			t.Fatalf("discordtest: waited %s for %d %s, got %d; calls: %v", timeout, n, route, len(got), seen)
		}
		select {
		case <-ch:
		case <-time.After(min(left, 20*time.Millisecond)):
		}
	}
}

// Commands returns the commands registered globally (guild "") or in a guild.
func (s *Server) Commands(guild string) []json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]json.RawMessage(nil), s.commands[guild]...)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if name, ok := strings.CutPrefix(r.URL.Path, "/attachments/"); ok {
		var data []byte
		s.locked(func() { data, ok = s.attachments[name] })
		if ok {
			_, _ = w.Write(data)
		} else {
			http.NotFound(w, r)
		}
		return
	}
	if strings.TrimSuffix(r.URL.Path, "/") == "/gateway" && websocket.IsWebSocketUpgrade(r) {
		s.gw.serve(w, r)
		return
	}
	path := apiPrefix.ReplaceAllString(r.URL.Path, "")
	c := Call{Method: r.Method, Path: path, Route: route(r.Method, path), Query: r.URL.RawQuery, Header: r.Header.Clone(), Time: time.Now()}
	if err := readBody(r, &c); err != nil {
		s.finish(w, c, http.StatusBadRequest, `{"message":"`+err.Error()+`","code":50109}`, nil)
		return
	}
	s.mu.Lock()
	s.inflight[c.Route]++
	s.peak[c.Route] = max(s.peak[c.Route], s.inflight[c.Route])
	delay := s.latency[c.Route]
	var fail *Failure
	if q := s.failures[c.Route]; len(q) > 0 {
		fail, s.failures[c.Route] = &q[0], q[1:]
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight[c.Route]--
		s.mu.Unlock()
	}()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if fail != nil {
		s.finish(w, c, fail.Status, fail.Body, fail.Header)
		return
	}
	webhook := strings.HasPrefix(path, "/webhooks/") || strings.HasPrefix(path, "/interactions/")
	if !webhook {
		if r.Header.Get("Authorization") != "Bot "+Token {
			s.finish(w, c, http.StatusUnauthorized, `{"message":"401: Unauthorized","code":0}`, nil)
			return
		}
		if s.global != nil && !s.global.Allow() {
			s.mu.Lock()
			s.tooMany++
			s.mu.Unlock()
			f := TooManyRequests(1, true)
			s.finish(w, c, f.Status, f.Body, f.Header)
			return
		}
	}
	status, body := s.answer(c)
	s.finish(w, c, status, body, nil)
}

// answer is the normal result of a call.
func (s *Server) answer(c Call) (int, string) {
	parts := strings.Split(strings.Trim(c.Path, "/"), "/")
	if len(parts) >= 3 && (parts[0] == "webhooks" || parts[0] == "interactions") {
		s.mu.Lock()
		expired := s.expired[parts[2]]
		s.mu.Unlock()
		if expired {
			return http.StatusUnauthorized, `{"message":"Invalid Webhook Token","code":50027}`
		}
	}
	switch c.Route {
	case RouteCallback, RouteDeleteOrig:
		return http.StatusNoContent, ""
	case RouteEditOriginal, RouteGetOriginal, RouteFollowup, RouteChannelPost:
		return http.StatusOK, s.message(c)
	case RouteGlobalCmds, RouteGuildCmds:
		guild := ""
		if c.Route == RouteGuildCmds {
			guild = parts[3]
		}
		var cmds []map[string]any
		if err := json.Unmarshal(c.JSON, &cmds); err != nil {
			return http.StatusBadRequest, `{"message":"Invalid Form Body","code":50035}`
		}
		var stored []json.RawMessage
		for _, cmd := range cmds {
			cmd["id"] = strconv.FormatInt(s.nextID.Add(1), 10)
			cmd["application_id"] = AppID
			cmd["version"] = "1"
			raw, _ := json.Marshal(cmd)
			stored = append(stored, raw)
		}
		s.mu.Lock()
		s.commands[guild] = stored
		s.mu.Unlock()
		out, _ := json.Marshal(stored)
		return http.StatusOK, string(out)
	case RouteGetGlobalCmds, RouteGetGuildCmds:
		guild := ""
		if c.Route == RouteGetGuildCmds {
			guild = parts[3]
		}
		out, _ := json.Marshal(s.Commands(guild))
		if string(out) == "null" {
			out = []byte("[]")
		}
		return http.StatusOK, string(out)
	case "GET /gateway", "GET /gateway/bot":
		return http.StatusOK, fmt.Sprintf(`{"url":%q,"shards":%d,"session_start_limit":{"total":1000,"remaining":999,"reset_after":0,"max_concurrency":%d}}`,
			s.gatewayWS, max(s.shards, 1), max(s.maxConcurrency, 1))
	case "GET /users/@me":
		return http.StatusOK, `{"id":"` + AppID + `","username":"Imagine Test Bot","bot":true}`
	}
	return http.StatusNotFound, `{"message":"404: Not Found","code":0}`
}

// message answers with a Message built from the call's body.
func (s *Server) message(c Call) string {
	var m map[string]any
	_ = json.Unmarshal(c.JSON, &m)
	if m == nil {
		m = map[string]any{}
	}
	m["id"] = strconv.FormatInt(s.nextID.Add(1), 10)
	m["channel_id"] = "1200000000000000001"
	m["timestamp"] = time.Now().UTC().Format(time.RFC3339)
	m["author"] = map[string]any{"id": AppID, "username": "Imagine Test Bot", "bot": true}
	var atts []map[string]any
	for i, f := range c.Files {
		atts = append(atts, map[string]any{"id": strconv.Itoa(i), "filename": f.Name, "size": len(f.Data), "url": "https://cdn.discordapp.com/attachments/x/" + f.Name})
	}
	if atts != nil {
		m["attachments"] = atts
	}
	out, _ := json.Marshal(m)
	return string(out)
}

func (s *Server) finish(w http.ResponseWriter, c Call, status int, body string, h http.Header) {
	for k, vs := range h {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	c.Status = status
	s.mu.Lock()
	s.calls = append(s.calls, c)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	if s.onCall != nil {
		s.onCall(c)
	}
	if body != "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// readBody reads a JSON body, or a multipart one (payload_json and files,
// as discordgo.MultipartBodyWithJSON writes it), into c.
func readBody(r *http.Request, c *Call) error {
	mr, err := r.MultipartReader()
	if errors.Is(err, http.ErrNotMultipart) {
		c.JSON, err = io.ReadAll(r.Body)
		return err
	}
	if err != nil {
		return err
	}
	for p, err := mr.NextPart(); err != io.EOF; p, err = mr.NextPart() {
		if err != nil {
			return err
		}
		data, err := io.ReadAll(p)
		switch {
		case err != nil:
			return err
		case p.FormName() == "payload_json":
			c.JSON = data
		default:
			c.Files = append(c.Files, File{Field: p.FormName(), Name: p.FileName(), ContentType: p.Header.Get("Content-Type"), Data: data})
		}
	}
	return nil
}

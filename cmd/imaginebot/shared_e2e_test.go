package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
	"github.com/imaginebot/imaginebot/storage/ledgertest"
	"github.com/imaginebot/imaginebot/storage/postgres"
	"github.com/imaginebot/imaginebot/storage/postgres/pgtest"
)

// These tests run two real `imaginebot run` processes on one PostgreSQL
// ledger, both in Telegram webhook mode, against one fake Bot API and one
// fake gateway, and post the Telegram updates to their webhooks themselves:
// what one user may spend, how fast and how much at once, holds across the
// instances, and a job of an instance that dies is refunded by the other.
//
// The bot paces its messages to Telegram's limits, about one a second in a
// private chat (bots/pace), and every request is answered in its chat (a
// picture or a refusal): the load is spread over enough users that no chat
// needs more than a dozen or so messages from each instance.

// What the bot answers, in English (bots/catalog/locales/en.yaml).
const (
	textQuotaExhausted = "You've used all your images for today"   // error.quota_exhausted
	textRateLimited    = "going too fast"                          // error.rate_limited
	textTooManyJobs    = "You already have images in progress"     // error.too_many_jobs
	textInterrupted    = "The bot stopped while making your image" // error.interrupted
	textShuttingDown   = "The bot is restarting"                   // error.shutting_down
	textGranted        = "Granted 7 credits"                       // mod.granted
	textCancelled      = "Cancelled. Your quota was refunded."     // error.cancelled
)

const (
	sharedWebhookURL    = "https://bot.example/telegram/webhook"
	sharedWebhookPath   = "/telegram/webhook" // telegram.webhook.path's default
	sharedWebhookSecret = "shared-ledger-s3cret"
)

// sharedPostgres builds the binary (skipping under -short before a server
// is started for nothing) and starts a PostgreSQL server for t (skipping
// where there is none).
func sharedPostgres(t *testing.T) *pgtest.Server {
	t.Helper()
	builtBinary(t)
	return pgtest.New(t)
}

// sharedOwner moderates everywhere (telegram.owners).
const sharedOwner = 900

// sharedSetup is what differs between the tests' configurations.
type sharedSetup struct {
	daily   int
	limits  string // the lines of limits:, indented two spaces
	storage string // more lines of storage: (job_lease), indented two spaces
	models  string // a models: section ("" = the default models, 1 unit a picture)
}

// sharedWorld is one ledger (a database of its own) with the fakes its
// instances talk to.
type sharedWorld struct {
	bin   string
	gw    *upstreamtest.Gateway
	tg    *telegramtest.Server
	cfg   string
	env   map[string]string
	daily int

	client *http.Client // posts to the webhooks
	db     *postgres.DB // the test's own connection, open once an instance migrated the schema
	ledger *core.Ledger
}

func newSharedWorld(t *testing.T, pg *pgtest.Server, s sharedSetup) *sharedWorld {
	t.Helper()
	w := &sharedWorld{bin: builtBinary(t), gw: upstreamtest.New(t), tg: telegramtest.New(t), daily: s.daily}
	w.gw.RequireKey("sk-e2e")
	w.env = map[string]string{
		"IMAGINEBOT_UPSTREAM_API_KEY":        "sk-e2e",
		"IMAGINEBOT_TELEGRAM_TOKEN":          telegramtest.DefaultToken,
		"IMAGINEBOT_TELEGRAM_API_BASE_URL":   w.tg.URL,
		"IMAGINEBOT_DATABASE_URL":            pg.Database(t),
		"IMAGINEBOT_TELEGRAM_WEBHOOK_URL":    sharedWebhookURL,
		"IMAGINEBOT_TELEGRAM_WEBHOOK_SECRET": sharedWebhookSecret,
		"IMAGINEBOT_TELEGRAM_OWNERS":         strconv.FormatInt(sharedOwner, 10),
	}
	// messages_per_second: the overall budget is not what these tests are
	// about (the per-chat one cannot be raised, see above).
	w.cfg = gatewayConfig(t, w.gw, fmt.Sprintf("quotas:\n  daily: %d\nstorage:\n  driver: postgres\n%slimits:\n%s"+
		"telegram:\n  progress_interval: 1s\n  messages_per_second: 1000\n%s", s.daily, s.storage, s.limits, s.models))
	tr := &http.Transport{MaxIdleConnsPerHost: 128}
	w.client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return w
}

// instance is one running `imaginebot run`.
type instance struct {
	name   string
	cmd    *exec.Cmd
	logs   *syncWriter
	addr   string        // its HTTP listener (webhook, readyz)
	exited chan struct{} // closed when the process ended; err is Wait's then
	err    error
}

var startedRe = regexp.MustCompile(`msg="imaginebot started".* http=(\S+)`)

// start runs an instance on its own free port (http.listen 127.0.0.1:0,
// read back from its start-up line) and waits until /readyz says it is
// ready: ledger and gateway reachable, webhook registered.
func (w *sharedWorld) start(t *testing.T, name string) *instance {
	t.Helper()
	cmd := exec.Command(w.bin, "run", "-config", w.cfg)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "IMAGINEBOT_HTTP_LISTEN=127.0.0.1:0"}
	for k, v := range w.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	in := &instance{name: name, cmd: cmd, logs: &syncWriter{w: &strings.Builder{}}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = in.logs, in.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		in.err = cmd.Wait()
		close(in.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-in.exited:
		case <-time.After(10 * time.Second):
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for in.addr == "" {
		if m := startedRe.FindStringSubmatch(in.logs.String()); m != nil {
			in.addr = m[1]
			break
		}
		select {
		case <-in.exited:
			t.Fatalf("instance %s exited before it started: %v\n%s", name, in.err, tail(in.logs.String()))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s logged no start-up line within 30s\n%s", name, tail(in.logs.String()))
		}
	}
	status := 0
	if !waitUntil(15*time.Second, 50*time.Millisecond, func() bool {
		resp, err := w.client.Get("http://" + in.addr + "/readyz")
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		status = resp.StatusCode
		return status == http.StatusOK
	}) {
		t.Fatalf("instance %s not ready within 15s (readyz %d)\n%s", name, status, tail(in.logs.String()))
	}
	if w.db == nil {
		db, err := postgres.Open(t.Context(), w.env["IMAGINEBOT_DATABASE_URL"], postgres.WithMaxConns(4))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		w.db = db
		w.ledger = core.NewLedger(db, core.Quotas{Location: time.UTC, DefaultDaily: w.daily})
	}
	return in
}

// stop sends SIGTERM and waits for a clean exit: by then every job the
// instance reserved is settled and its user told.
func (in *instance) stop(t *testing.T) {
	t.Helper()
	if err := in.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("instance %s: SIGTERM: %v", in.name, err)
	}
	select {
	case <-in.exited:
		if in.err != nil {
			t.Fatalf("instance %s: exit after SIGTERM: %v\n%s", in.name, in.err, tail(in.logs.String()))
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("instance %s did not exit within 60s of SIGTERM\n%s", in.name, tail(in.logs.String()))
	}
}

// kill sends SIGKILL: the instance ends at once, settling nothing.
func (in *instance) kill(t *testing.T) {
	t.Helper()
	if err := in.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("instance %s: SIGKILL: %v", in.name, err)
	}
	select {
	case <-in.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("instance %s still runs 10s after SIGKILL", in.name)
	}
}

// tail is the end of a log, enough to see why without burying the report.
func tail(s string) string {
	const n = 6000
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

func logsOf(ins ...*instance) string {
	var b strings.Builder
	for _, in := range ins {
		fmt.Fprintf(&b, "--- instance %s:\n%s\n", in.name, tail(in.logs.String()))
	}
	return b.String()
}

// waitUntil polls cond every interval until it holds or timeout passes.
func waitUntil(timeout, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(every)
	}
}

// prompt is a fresh /imagine update from user (own update and message id).
func (w *sharedWorld) prompt(user models.User, n int) models.Update {
	u := w.tg.PrivateText(user, fmt.Sprintf("/imagine a red fox in the snow, take %d", n))
	u.ID = w.tg.NewUpdateID()
	return u
}

// post is one update for one instance's webhook.
type post struct {
	to *instance
	u  models.Update
}

func (w *sharedWorld) post(p post) error {
	body, err := json.Marshal(&p.u)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+p.to.addr+sharedWebhookPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Telegram-Bot-Api-Secret-Token", sharedWebhookSecret)
	resp, err := w.client.Do(req)
	if err != nil {
		return fmt.Errorf("update %d to %s: %v", p.u.ID, p.to.name, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("update %d to %s: HTTP %d", p.u.ID, p.to.name, resp.StatusCode)
	}
	return nil
}

// sendAll posts every batch, senders batches at a time; the posts of one
// batch leave at the same instant (one update to both instances).
func (w *sharedWorld) sendAll(t *testing.T, batches [][]post, senders int) {
	t.Helper()
	work := make(chan []post)
	var mu sync.Mutex
	var errs []string
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			for batch := range work {
				start := make(chan struct{})
				var bw sync.WaitGroup
				for _, p := range batch {
					bw.Go(func() {
						<-start
						if err := w.post(p); err != nil {
							mu.Lock()
							errs = append(errs, err.Error())
							mu.Unlock()
						}
					})
				}
				close(start)
				bw.Wait()
			}
		})
	}
	for _, b := range batches {
		work <- b
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d webhook posts failed, e.g. %s", len(errs), strings.Join(errs[:min(5, len(errs))], "; "))
	}
}

// tally counts Bot API calls by chat and by the user's message they answer.
type tally struct {
	total   int
	byChat  map[int64]int
	byReply map[int]int // reply_parameters.message_id; 0 for edits
}

func tallyOf(calls []telegramtest.Call, keep func(telegramtest.Call) bool) tally {
	t := tally{byChat: map[int64]int{}, byReply: map[int]int{}}
	for _, c := range calls {
		if keep(c) {
			t.total++
			t.byChat[c.ChatID()]++
			t.byReply[c.ReplyTo()]++
		}
	}
	return t
}

// photos are the pictures delivered.
func (w *sharedWorld) photos() tally {
	return tallyOf(w.tg.Calls("sendPhoto"), func(c telegramtest.Call) bool { return c.Status == http.StatusOK })
}

// texts are the messages sent, or status messages edited, saying fragment.
func (w *sharedWorld) texts(fragment string) tally {
	return tallyOf(w.tg.Calls(""), func(c telegramtest.Call) bool {
		return (c.Method == "sendMessage" || c.Method == "editMessageText") && c.Status == http.StatusOK &&
			strings.Contains(c.Text(), fragment)
	})
}

func privateAccount(id int64) core.AccountKey {
	return core.AccountKey{Scope: "telegram:private", User: "telegram:" + strconv.FormatInt(id, 10)}
}

// remaining is what user has left today, read from the shared ledger.
func (w *sharedWorld) remaining(t *testing.T, id int64) int {
	t.Helper()
	bal, err := w.ledger.Balance(t.Context(), privateAccount(id), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return bal.Remaining()
}

// pending is how many jobs the ledger holds reserved and not settled.
func (w *sharedWorld) pending(t *testing.T) int {
	t.Helper()
	jobs, err := w.db.PendingJobs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return len(jobs)
}

// checkLedger checks that no unit of user's was lost or invented (initial =
// daily, plus granted) and that committed units were charged.
func (w *sharedWorld) checkLedger(t *testing.T, id int64, committed, granted int) {
	t.Helper()
	got, err := ledgertest.Invariant(t.Context(), w.db, w.ledger, privateAccount(id), w.daily, granted, time.Now())
	if err != nil {
		t.Errorf("ledger invariant of user %d: %v", id, err)
		return
	}
	if got.Committed != committed || got.Pending != 0 {
		t.Errorf("user %d's jobs: %d units committed, %d pending; want %d committed, 0 pending", id, got.Committed, got.Pending, committed)
	}
}

func sharedUsers(first int64, n int) []models.User {
	users := make([]models.User, n)
	for i := range users {
		id := first + int64(i)
		users[i] = telegramtest.User(id, "user"+strconv.FormatInt(id, 10), "en")
	}
	return users
}

// limitsLines are limits: that keep out of the way of the quota: no rate
// limit, as many jobs per user and in the queue as the tests send.
const limitsLines = "  rate_per_minute: 0\n  burst: 1000\n  per_user_jobs: 1000\n  concurrency: 16\n  queue_cap: 5000\n"

// TestSharedLedgerExactCharges: two instances on one PostgreSQL ledger
// charge every unit exactly once, whichever instance takes a request and
// however many take it at once.
func TestSharedLedgerExactCharges(t *testing.T) {
	pg := sharedPostgres(t)

	// 1000 requests at once, split between the instances, from 40 users
	// with 100 units each and pictures at 5 units: they can afford 800 of
	// them. Exactly 800 are charged and delivered, 200 refused as out of
	// quota, and every balance ends at 0.
	//
	// 40 users rather than 8 with 125 requests each: each chat would need
	// 125 answers, which the bot paces at about one a second per chat and
	// instance (bots/pace, Telegram's limit): the pictures would take over a
	// minute, and most refusals, which wait behind them, pass their
	// one-minute send deadline and are dropped. The contention is the same:
	// 25 concurrent requests on each account, half through each instance.
	t.Run("1000 concurrent requests over both instances", func(t *testing.T) {
		const (
			users    = 40
			daily    = 100 // units a user has
			cost     = 5   // units a picture
			pictures = daily / cost
			requests = 1000
			senders  = 64
			perUser  = requests / users
			charged  = users * pictures
		)
		w := newSharedWorld(t, pg, sharedSetup{daily: daily, limits: limitsLines,
			models: "models:\n  - name: stable-diffusion\n    cost: " + strconv.Itoa(cost) + "\n"})
		a, b := w.start(t, "A"), w.start(t, "B")
		us := sharedUsers(1001, users)
		var batches [][]post
		for i := range requests {
			// A user's k-th request goes to A when k is even, B when odd.
			batches = append(batches, []post{{[]*instance{a, b}[(i/users)%2], w.prompt(us[i%users], i)}})
		}

		began := time.Now()
		w.sendAll(t, batches, senders)
		posted := time.Since(began)
		var photos, refused tally
		if !waitUntil(2*time.Minute, 100*time.Millisecond, func() bool {
			photos, refused = w.photos(), w.texts(textQuotaExhausted)
			return photos.total+refused.total >= requests
		}) {
			t.Fatalf("after 2m only %d of %d requests answered: %d pictures, %d out-of-quota refusals\n%s",
				photos.total+refused.total, requests, photos.total, refused.total, logsOf(a, b))
		}
		wall := time.Since(began)
		t.Logf("phase 1: %d requests from %d users over 2 instances, %d senders: all posted in %s, all answered in %s (%.0f requests/s)",
			requests, users, senders, posted.Round(time.Millisecond), wall.Round(time.Millisecond), requests/wall.Seconds())

		// Stopped, the instances have settled everything: the counts are final.
		a.stop(t)
		b.stop(t)
		photos, refused = w.photos(), w.texts(textQuotaExhausted)
		if photos.total != charged {
			t.Errorf("%d pictures delivered, want exactly %d (%d users × %d units / %d a picture)", photos.total, charged, users, daily, cost)
		}
		if refused.total != requests-charged {
			t.Errorf("%d requests refused as out of quota, want exactly %d", refused.total, requests-charged)
		}
		if n := w.gw.Calls(); n != charged {
			t.Errorf("the gateway was asked %d times, want exactly %d", n, charged)
		}
		if n := w.texts(textShuttingDown).total; n != 0 {
			t.Errorf("%d requests were refused by the stop: not every update was handled before it", n)
		}
		twice := 0
		for msg, n := range photos.byReply {
			if n != 1 || refused.byReply[msg] != 0 {
				twice++
			}
		}
		if twice > 0 {
			t.Errorf("%d requests got more than one answer (two pictures, or a picture and a refusal)", twice)
		}
		for _, u := range us {
			if got, want := photos.byChat[u.ID], pictures; got != want {
				t.Errorf("user %d got %d pictures, want %d", u.ID, got, want)
			}
			if got, want := refused.byChat[u.ID], perUser-pictures; got != want {
				t.Errorf("user %d got %d out-of-quota refusals, want %d", u.ID, got, want)
			}
			if got := w.remaining(t, u.ID); got != 0 {
				t.Errorf("user %d has %d left, want 0", u.ID, got)
			}
			w.checkLedger(t, u.ID, daily, 0)
		}
		// What an operator sees: the CLI reads the same ledger.
		if got := (&world{env: w.env, cfg: w.cfg}).remaining(t, "telegram:private", "telegram:1001"); got != "0" {
			t.Errorf("quota show telegram:private telegram:1001: remaining %s, want 0", got)
		}
	})

	// Telegram may deliver an update to any instance, and a retried webhook
	// call may reach another one: each update posted to both at the same
	// instant is charged and delivered once.
	//
	// 20 users × 5 updates rather than one user × 100, for the per-chat
	// pacing (see above).
	t.Run("each update posted to both instances at once", func(t *testing.T) {
		const (
			users   = 20
			perUser = 5
			daily   = 100
			updates = users * perUser
		)
		w := newSharedWorld(t, pg, sharedSetup{daily: daily, limits: limitsLines})
		a, b := w.start(t, "A"), w.start(t, "B")
		us := sharedUsers(2001, users)
		var batches [][]post
		var msgs []int
		for i := range updates {
			u := w.prompt(us[i%users], i)
			msgs = append(msgs, u.Message.ID)
			batches = append(batches, []post{{a, u}, {b, u}})
		}
		began := time.Now()
		w.sendAll(t, batches, 32)
		var photos tally
		if !waitUntil(time.Minute, 100*time.Millisecond, func() bool {
			photos = w.photos()
			return photos.total >= updates && w.pending(t) == 0
		}) {
			t.Fatalf("after 1m %d of %d updates delivered, %d jobs pending\n%s", photos.total, updates, w.pending(t), logsOf(a, b))
		}
		t.Logf("phase 2: %d updates, each posted to both instances, delivered in %s", updates, time.Since(began).Round(time.Millisecond))

		// A moderator's grant is not a job, and not idempotent: posted to
		// both, it is applied once, and answered once.
		owner := telegramtest.User(sharedOwner, "owner", "en")
		grant := w.tg.PrivateText(owner, fmt.Sprintf("/quota grant 7 %d", us[0].ID))
		grant.ID = w.tg.NewUpdateID()
		w.sendAll(t, [][]post{{{a, grant}, {b, grant}}}, 1)
		if !waitUntil(30*time.Second, 50*time.Millisecond, func() bool { return w.texts(textGranted).total >= 1 }) {
			t.Fatalf("the grant was not answered\n%s", logsOf(a, b))
		}
		a.stop(t)
		b.stop(t)
		if n := w.texts(textGranted).total; n != 1 {
			t.Errorf("the grant posted to both instances was answered %d times, want once", n)
		}

		photos = w.photos()
		if photos.total != updates {
			t.Errorf("%d pictures delivered for %d updates, want one each", photos.total, updates)
		}
		for _, m := range msgs {
			if n := photos.byReply[m]; n != 1 {
				t.Errorf("message %d got %d pictures, want 1", m, n)
			}
		}
		if n := w.gw.Calls(); n != updates {
			t.Errorf("the gateway was asked %d times for %d updates, want once each", n, updates)
		}
		if n := w.texts(textShuttingDown).total; n != 0 {
			t.Errorf("%d updates were refused by the stop: not every post was handled before it", n)
		}
		spent := 0
		for _, u := range us {
			left := w.remaining(t, u.ID)
			granted := 0
			if u.ID == us[0].ID {
				granted = 7 // once, though posted twice
			}
			spent += daily + granted - left
			if left != daily+granted-perUser {
				t.Errorf("user %d has %d left, want %d (%d charged once each, %d granted)", u.ID, left, daily+granted-perUser, perUser, granted)
			}
			w.checkLedger(t, u.ID, perUser, granted)
		}
		if spent != updates {
			t.Errorf("%d units spent in all for %d updates, want exactly %d", spent, updates, updates)
		}
	})
}

// TestSharedLedgerRateLimitsAreGlobal: a user's rate limit and jobs in
// flight are counted in the ledger, across instances, not per instance.
func TestSharedLedgerRateLimitsAreGlobal(t *testing.T) {
	pg := sharedPostgres(t)

	// burst 3 and one more a minute: of 6 requests at once, half through
	// each instance, 3 go through, not 3 per instance.
	t.Run("rate limit", func(t *testing.T) {
		const (
			daily    = 100
			burst    = 3
			requests = 6
		)
		w := newSharedWorld(t, pg, sharedSetup{daily: daily,
			limits: fmt.Sprintf("  rate_per_minute: 1\n  burst: %d\n  per_user_jobs: 100\n  concurrency: 8\n  queue_cap: 100\n", burst)})
		a, b := w.start(t, "A"), w.start(t, "B")
		alice := telegramtest.User(3001, "alice", "en")
		var batches [][]post
		for i := range requests {
			batches = append(batches, []post{{[]*instance{a, b}[i%2], w.prompt(alice, i)}})
		}
		w.sendAll(t, batches, requests)
		var photos, limited tally
		if !waitUntil(30*time.Second, 100*time.Millisecond, func() bool {
			photos, limited = w.photos(), w.texts(textRateLimited)
			return photos.total+limited.total >= requests
		}) {
			t.Fatalf("after 30s %d of %d requests answered: %d pictures, %d rate-limit refusals\n%s",
				photos.total+limited.total, requests, photos.total, limited.total, logsOf(a, b))
		}
		a.stop(t)
		b.stop(t)
		photos, limited = w.photos(), w.texts(textRateLimited)
		if photos.total != burst || limited.total != requests-burst {
			t.Errorf("%d of %d requests at once accepted and %d refused as too fast, want %d accepted and %d refused: "+
				"the burst of %d must hold across both instances, not per instance",
				photos.total, requests, limited.total, burst, requests-burst, burst)
		}
		if n := w.gw.Calls(); n != burst {
			t.Errorf("the gateway was asked %d times, want %d", n, burst)
		}
		if got := w.remaining(t, alice.ID); got != daily-burst {
			t.Errorf("alice has %d left, want %d (%d charged)", got, daily-burst, burst)
		}
		w.checkLedger(t, alice.ID, burst, 0)
	})

	// per_user_jobs 2 with the gateway holding every job: of 6 requests at
	// once, half through each instance, 2 run and 4 are refused.
	t.Run("jobs in flight", func(t *testing.T) {
		const (
			daily    = 100
			perUser  = 2
			requests = 6
		)
		w := newSharedWorld(t, pg, sharedSetup{daily: daily,
			limits: fmt.Sprintf("  rate_per_minute: 0\n  burst: 100\n  per_user_jobs: %d\n  concurrency: 8\n  queue_cap: 100\n", perUser)})
		release := make(chan struct{})
		released := sync.OnceFunc(func() { close(release) })
		defer released()
		w.gw.Handle(upstreamtest.Wait(release, upstreamtest.JSON(200, upstreamtest.Completion("![img]("+w.gw.ImageURL("a.png")+")"))))
		a, b := w.start(t, "A"), w.start(t, "B")
		bob := telegramtest.User(3101, "bob", "en")
		var batches [][]post
		for i := range requests {
			batches = append(batches, []post{{[]*instance{a, b}[i%2], w.prompt(bob, i)}})
		}
		w.sendAll(t, batches, requests)
		var busy tally
		if !waitUntil(30*time.Second, 100*time.Millisecond, func() bool {
			busy = w.texts(textTooManyJobs)
			return w.gw.Calls()+busy.total >= requests
		}) {
			t.Fatalf("after 30s of %d requests %d reached the gateway and %d were refused as too many at once\n%s",
				requests, w.gw.Calls(), busy.total, logsOf(a, b))
		}
		running := w.gw.Calls()
		if running != perUser || busy.total != requests-perUser {
			t.Errorf("%d of bob's jobs running at once over both instances and %d refused as too many, want %d running and %d refused: "+
				"per_user_jobs must hold across both instances, not per instance", running, busy.total, perUser, requests-perUser)
		}
		released()
		if !waitUntil(30*time.Second, 100*time.Millisecond, func() bool { return w.photos().total >= running }) {
			t.Fatalf("after the gateway answered, %d of %d running jobs delivered\n%s", w.photos().total, running, logsOf(a, b))
		}
		a.stop(t)
		b.stop(t)
		if n := w.photos().total; n != running {
			t.Errorf("%d pictures delivered, want the %d jobs that ran", n, running)
		}
		if got := w.remaining(t, bob.ID); got != daily-running {
			t.Errorf("bob has %d left, want %d (%d charged)", got, daily-running, running)
		}
		w.checkLedger(t, bob.ID, running, 0)
	})
}

// TestSharedLedgerSurvivorRefundsAfterSIGKILL: every job carries its
// instance and a lease the instance renews while the job runs. An instance
// killed mid-load settles nothing; once its leases expire the survivor
// refunds its jobs and tells their users. While it lives, its running jobs
// are left alone however long they run.
func TestSharedLedgerSurvivorRefundsAfterSIGKILL(t *testing.T) {
	pg := sharedPostgres(t)
	const (
		lease = 2 * time.Second
		users = 20
		daily = 5
	)
	w := newSharedWorld(t, pg, sharedSetup{daily: daily, storage: "  job_lease: " + lease.String() + "\n",
		limits: "  rate_per_minute: 0\n  burst: 100\n  per_user_jobs: 10\n  concurrency: 32\n  queue_cap: 100\n"})
	release := make(chan struct{})
	released := sync.OnceFunc(func() { close(release) })
	defer released()
	w.gw.Handle(upstreamtest.Wait(release, upstreamtest.JSON(200, upstreamtest.Completion("![img]("+w.gw.ImageURL("a.png")+")"))))
	a, b := w.start(t, "A"), w.start(t, "B")

	us := sharedUsers(4001, users)
	var batches [][]post
	for i, u := range us {
		batches = append(batches, []post{{a, w.prompt(u, i)}})
	}
	w.sendAll(t, batches, users)
	if !waitUntil(30*time.Second, 50*time.Millisecond, func() bool { return w.gw.Calls() == users && w.pending(t) == users }) {
		t.Fatalf("after 30s %d of %d jobs at the gateway, %d reserved\n%s", w.gw.Calls(), users, w.pending(t), logsOf(a, b))
	}

	// A lives and its jobs run on past their lease: A renews it, and B,
	// which watches the ledger for expired leases, leaves them alone.
	hold := 3 * lease
	var broke string
	waitUntil(hold, 100*time.Millisecond, func() bool {
		if n := w.pending(t); n != users {
			broke = fmt.Sprintf("%d of A's %d running jobs are no longer pending", users-n, users)
		} else if n := w.texts(textInterrupted).total; n != 0 {
			broke = fmt.Sprintf("%d users were told their job was interrupted", n)
		}
		return broke != ""
	})
	if broke != "" {
		t.Fatalf("with A alive and its jobs running (within %s of a %s lease): %s; the lease must be renewed while they run\n%s",
			hold, lease, broke, logsOf(a, b))
	}
	for _, u := range us {
		if got := w.remaining(t, u.ID); got != daily-1 {
			t.Fatalf("user %d has %d left while A's job runs, want %d (charged)", u.ID, got, daily-1)
		}
	}

	a.kill(t)
	killed := time.Now()
	var told tally
	var notRefunded []int64
	pending := -1
	if !waitUntil(30*time.Second, 100*time.Millisecond, func() bool {
		told, notRefunded, pending = w.texts(textInterrupted), nil, w.pending(t)
		for _, u := range us {
			if w.remaining(t, u.ID) != daily {
				notRefunded = append(notRefunded, u.ID)
			}
		}
		return len(told.byChat) == users && len(notRefunded) == 0 && pending == 0
	}) {
		t.Fatalf("30s after A was killed: %d of %d users told their job was interrupted, %d jobs still pending, not refunded: %v\n%s",
			len(told.byChat), users, pending, notRefunded, logsOf(a, b))
	}
	t.Logf("phase 4: the survivor refunded and told all %d users %s after the SIGKILL (lease %s)", users, time.Since(killed).Round(100*time.Millisecond), lease)

	released()
	b.stop(t)
	told = w.texts(textInterrupted)
	for _, u := range us {
		if n := told.byChat[u.ID]; n != 1 {
			t.Errorf("user %d was told %d times that the job was interrupted, want once", u.ID, n)
		}
		if got := w.remaining(t, u.ID); got != daily {
			t.Errorf("user %d has %d left, want %d (refunded)", u.ID, got, daily)
		}
		w.checkLedger(t, u.ID, 0, 0)
	}
	if n := w.pending(t); n != 0 {
		t.Errorf("%d jobs left pending", n)
	}
	if n := w.photos().total; n != 0 {
		t.Errorf("%d pictures delivered for refunded jobs", n)
	}
	if n := w.gw.Calls(); n != users {
		t.Errorf("the gateway was asked %d times, want %d (A's jobs, none run again)", n, users)
	}
}

// TestSharedLedgerCancelOnTheOtherInstance: the ✖ under a job's status
// message may be pressed into either instance; pressed into the one not
// running the job, it still cancels it, and the job is refunded.
func TestSharedLedgerCancelOnTheOtherInstance(t *testing.T) {
	pg := sharedPostgres(t)
	const daily = 5
	w := newSharedWorld(t, pg, sharedSetup{daily: daily, limits: limitsLines})
	release := make(chan struct{})
	released := sync.OnceFunc(func() { close(release) })
	defer released()
	w.gw.Handle(upstreamtest.Wait(release, upstreamtest.JSON(200, upstreamtest.Completion("![img]("+w.gw.ImageURL("a.png")+")"))))
	a, b := w.start(t, "A"), w.start(t, "B")
	carol := telegramtest.User(4001, "carol", "en")
	w.sendAll(t, [][]post{{{a, w.prompt(carol, 0)}}}, 1)

	// A's status message, with its ✖.
	var status telegramtest.Call
	if !waitUntil(30*time.Second, 50*time.Millisecond, func() bool {
		for _, c := range w.tg.Calls("sendMessage") {
			if c.ChatID() == carol.ID && slices.ContainsFunc(c.CallbackData(), func(d string) bool { return strings.HasPrefix(d, "cx:") }) {
				status = c
				return w.gw.Calls() == 1
			}
		}
		return false
	}) {
		t.Fatalf("no status message with a cancel button, or the job did not reach the gateway\n%s", logsOf(a, b))
	}
	press := w.tg.Callback(carol, status.Message(), status.CallbackData()[0])
	press.ID = w.tg.NewUpdateID()
	w.sendAll(t, [][]post{{{b, press}}}, 1)

	if !waitUntil(30*time.Second, 50*time.Millisecond, func() bool { return w.texts(textCancelled).total >= 1 }) {
		t.Fatalf("the job running on A was not cancelled by the press on B\n%s", logsOf(a, b))
	}
	answered := false
	for _, c := range w.tg.Calls("answerCallbackQuery") {
		answered = answered || c.Field("text") == "✖ Cancelling…"
	}
	if !answered {
		t.Error("B did not answer the press with \"✖ Cancelling…\"")
	}
	released()
	a.stop(t)
	b.stop(t)
	if n := w.photos().total; n != 0 {
		t.Errorf("%d pictures sent for a cancelled job", n)
	}
	if got := w.remaining(t, carol.ID); got != daily {
		t.Errorf("carol has %d left, want %d: a cancelled job is refunded", got, daily)
	}
	w.checkLedger(t, carol.ID, 0, 0)
}

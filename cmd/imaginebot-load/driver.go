package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-telegram/bot/models"
	"go.yaml.in/yaml/v3"

	"github.com/imaginebot/imaginebot/core"
)

// Identities of the simulated crowd.
const (
	firstUserID  int64 = 1000001
	heavyUserID  int64 = 999999
	firstGroupID int64 = -1001000000001
	botToken           = "123456789:LOAD-fake-token_abcdefghijklmnopq"
	apiKey             = "sk-load-test"
	readyTimeout       = time.Minute
	stopGrace          = 3 * time.Minute // the bot's own grace (30 s) plus its cancellation and replies
)

// loadJob is one message a simulated user sends.
type loadJob struct {
	Index    int // arrival order, from 1
	Platform string
	User     int64
	Chat     int64 // Telegram
	Heavy    bool
	Prompt   string
	Arrival  time.Duration // injected at t0+Arrival

	// Assigned when sent.
	MsgID       int    // Telegram: the user's message
	UpdateID    int64  // Telegram
	Interaction string // Discord: the interaction's id
	Token       string // Discord: its token, which the bot's edits carry
	Instance    int    // the bot instance it went to (0 with -instances 1)
	// InstanceIndex is its order among the jobs of its instance, from 1,
	// with -instances > 1: each instance has a queue and slots of its own,
	// so the ideal schedule is each instance's.
	InstanceIndex int
}

// Key is the job's idempotency key in the ledger, as the adapter names it.
func (j *loadJob) Key() string {
	if j.Platform == platformDiscord {
		return "discord:interaction:" + j.Interaction
	}
	return "telegram:update:" + strconv.FormatInt(j.UpdateID, 10)
}

// Account is the job's ledger account, as the adapter names it.
func (j *loadJob) Account() core.AccountKey {
	user := strconv.FormatInt(j.User, 10)
	switch {
	case j.Platform == platformDiscord:
		return core.AccountKey{Scope: "discord:guild:" + discordGuild, User: "discord:" + user}
	case j.Chat < 0:
		return core.AccountKey{Scope: "telegram:group:" + strconv.FormatInt(j.Chat, 10), User: "telegram:" + user}
	}
	return core.AccountKey{Scope: "telegram:private", User: "telegram:" + user}
}

// planJobs lays out the crowd in update order: the heavy user's burst
// first, then one message per user, spread at rate per second (0 = all at t0).
func planJobs(cfg Config) []*loadJob {
	var jobs []*loadJob
	add := func(j *loadJob) {
		j.Index = len(jobs) + 1
		jobs = append(jobs, j)
	}
	first, heavy := firstUserID, heavyUserID
	if cfg.Platform == platformDiscord {
		first, heavy = discordFirstUser, discordHeavyUser
	}
	for r := 1; r <= cfg.Heavy; r++ {
		add(&loadJob{Platform: cfg.Platform, User: heavy, Chat: heavy, Heavy: true, Prompt: fmt.Sprintf("load test heavy user request %d", r)})
	}
	for i := 1; i <= cfg.Users; i++ {
		id := first + int64(i-1)
		j := &loadJob{Platform: cfg.Platform, User: id, Chat: id, Prompt: fmt.Sprintf("load test user %d request 1", i)}
		if cfg.Groups > 0 {
			j.Chat = firstGroupID - int64((i-1)%cfg.Groups)
		}
		if cfg.ArrivalRate > 0 {
			j.Arrival = time.Duration(float64(i-1) / cfg.ArrivalRate * float64(time.Second))
		}
		add(j)
	}
	return jobs
}

// update is the Telegram update carrying j: a private text, or
// "/imagine <prompt>" in a group.
func (j *loadJob) update() models.Update {
	n := j.User - firstUserID + 1
	if j.Heavy {
		n = 0
	}
	from := models.User{ID: j.User, FirstName: "Load", LastName: strconv.FormatInt(n, 10),
		Username: "load_user_" + strconv.FormatInt(n, 10), LanguageCode: "en"}
	m := &models.Message{ID: j.MsgID, From: &from, Date: int(time.Now().Unix()), Text: j.Prompt,
		Chat: models.Chat{ID: j.Chat, Type: models.ChatTypePrivate, FirstName: from.FirstName, Username: from.Username}}
	if j.Chat < 0 {
		m.Chat = models.Chat{ID: j.Chat, Type: models.ChatTypeSupergroup, Title: "Load group " + strconv.FormatInt(-j.Chat, 10)}
		m.Text = "/imagine " + j.Prompt
		m.Entities = []models.MessageEntity{{Type: models.MessageEntityTypeBotCommand, Offset: 0, Length: len("/imagine")}}
	}
	return models.Update{Message: m}
}

// harness is one load run: the fakes, the bot processes and the crowd.
type harness struct {
	cfg   Config
	log   *slog.Logger
	dir   string
	db    string // the bbolt file ("" on PostgreSQL)
	pg    *pgServer
	daily int // quotas.daily as written
	gw    *gateway
	plat  platform
	lnch  *launcher
	jobs  []*loadJob
	t0    time.Time

	mu      sync.Mutex
	procs   []*procRecord // every process started, in order
	current []*botProc    // each instance's latest process
	crashed bool          // a bot exited without being told to
	kills   []killRecord  // -instances > 1
}

// killRecord is one SIGKILL of an instance.
type killRecord struct {
	At       time.Duration // after t0
	Instance int
}

// procRecord is what one bot process cost.
type procRecord struct {
	p      *botProc
	cpu    cpuTicks
	hwm    int64
	killed bool
}

// instances is how many bot processes run at once.
func (h *harness) instances() int { return max(h.cfg.Instances, 1) }

// slots is the upstream slots of every instance together, which the ideal
// schedule is about: limits.concurrency is per process.
func (h *harness) slots() int { return h.cfg.Concurrency * h.instances() }

// setup builds (or takes) the binary, starts the fakes and writes the config.
func (h *harness) setup(ctx context.Context) error {
	bin := h.cfg.Bin
	if bin == "" {
		h.log.Info("building the bot", "package", botPackage)
		var err error
		if bin, err = buildBot(ctx, h.dir); err != nil {
			return err
		}
	}
	var err error
	h.gw, err = newGateway(gatewayConfig{Latency: h.cfg.Latency, ImageKB: h.cfg.ImageKB, Fail5xx: h.cfg.Fail5xx, Hang: h.cfg.Hang, Seed: h.cfg.Seed})
	if err != nil {
		return err
	}
	// Assigned only on success: close must not see a nil fake in the interface.
	if h.cfg.Platform == platformDiscord {
		d, err := newDiscord(discordConfig{Limits: h.cfg.Limits, Latency: h.cfg.DiscordLatency, Conns: h.cfg.Users + h.cfg.Heavy, Instances: h.instances()})
		if err != nil {
			return err
		}
		h.plat = d
	} else {
		tg, err := newTelegram(telegramConfig{Token: botToken, Limits: h.cfg.Limits, GlobalRate: h.cfg.TGGlobal,
			Tolerance: 20 * time.Millisecond, Burst: h.cfg.Burst429, LinkPrefix: h.gw.URL + "/img/"})
		if err != nil {
			return err
		}
		h.plat = telegramPlatform{tg}
	}
	h.jobs = planJobs(h.cfg)
	if h.cfg.Heavy > 1000 {
		h.log.Warn("the bot allows at most 1000 jobs in flight per user: the heavy user's extra prompts will be refused", "heavy", h.cfg.Heavy)
	}
	if h.cfg.Postgres {
		if h.pg, err = startPostgres(ctx, h.cfg.DSN, h.dir, h.log); err != nil {
			return err
		}
	} else {
		h.db = filepath.Join(h.dir, "imaginebot.db")
	}
	data, err := h.botConfig().yaml()
	if err != nil {
		return err
	}
	// The ledger check needs the allowance the bot runs with, which
	// -extra-config may have changed.
	var written struct {
		Quotas struct{ Daily int } `yaml:"quotas"`
	}
	if err := yaml.Unmarshal(data, &written); err != nil {
		return fmt.Errorf("read back the config: %w", err)
	}
	h.daily = written.Quotas.Daily
	cfgPath := filepath.Join(h.dir, "config.yaml")
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	n := h.instances()
	h.lnch = &launcher{bin: bin, config: cfgPath, starts: make([]int, n)}
	h.current = make([]*botProc, n)
	for i := range n {
		// bot.log, and with several instances bot-2.log, bot-3.log, …
		name := "bot.log"
		if i > 0 {
			name = fmt.Sprintf("bot-%d.log", i+1)
		}
		logf, err := os.OpenFile(filepath.Join(h.dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("bot log: %w", err)
		}
		h.lnch.logs = append(h.lnch.logs, logf)
		secrets := h.plat.Env(i)
		secrets["IMAGINEBOT_UPSTREAM_API_KEY"] = apiKey
		if h.pg != nil {
			secrets["IMAGINEBOT_DATABASE_URL"] = h.pg.dsn
		} else {
			secrets["IMAGINEBOT_DB"] = h.db
		}
		h.lnch.env = append(h.lnch.env, botEnv(secrets))
	}
	return nil
}

func (h *harness) botConfig() botConfig {
	return botConfig{
		GatewayURL:      h.gw.URL,
		Retries:         h.cfg.Retries,
		UpstreamTimeout: h.cfg.UpstreamTimeout,
		JobTimeout:      h.cfg.JobTimeout,
		Concurrency:     h.cfg.Concurrency,
		QueueCap:        len(h.jobs) + 100,
		// The config caps it at 100; a heavier user meets the bot's own limit.
		PerUserJobs: min(1000, max(2, h.cfg.Heavy)),
		Daily:       len(h.jobs) + 10,
		DBPath:      h.db,
		Postgres:    h.pg != nil,
		JobLease:    h.cfg.jobLease(),
		Platform:    h.cfg.Platform,
		TGRate:      h.cfg.TGRate,
		Extra:       h.cfg.ExtraConfig,
	}
}

// close stops the fakes and PostgreSQL; keep leaves the run's database on
// a -dsn server.
func (h *harness) close(keep bool) {
	if h.pg != nil {
		h.pg.stop(keep)
	}
	if h.gw != nil {
		h.gw.Close()
	}
	if h.plat != nil {
		h.plat.Close()
	}
	if h.lnch != nil {
		for _, f := range h.lnch.logs {
			f.Close()
		}
	}
}

// botLog is the log file of an instance.
func (h *harness) botLog(instance int) string { return h.lnch.logs[instance].Name() }

// startBot starts a process of the instance and waits until it serves users.
func (h *harness) startBot(ctx context.Context, instance int) (*botProc, error) {
	ready := h.plat.Readiness(instance)
	p, err := h.lnch.start(instance)
	if err != nil {
		return nil, err
	}
	rec := &procRecord{p: p}
	h.mu.Lock()
	h.procs = append(h.procs, rec)
	h.current[instance] = p
	h.mu.Unlock()
	deadline := time.Now().Add(readyTimeout)
	for !ready() {
		if p.Exited() {
			return nil, fmt.Errorf("the bot exited during start-up (%v); its log ends:\n%s", p.err, tail(h.botLog(instance), 20))
		}
		if ctx.Err() != nil {
			p.kill()
			return nil, fmt.Errorf("waiting for the bot to start: %w", ctx.Err())
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("the bot did not serve %s users within %s; its log ends:\n%s", h.cfg.Platform, readyTimeout, tail(h.botLog(instance), 20))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if t, err := readCPU(p.pid); err == nil {
		p.baseline, p.ready = t, true
	}
	return p, nil
}

// sample records the process's CPU and peak RSS; call it just before it ends.
func (h *harness) sample(p *botProc, killed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.procs {
		if r.p != p {
			continue
		}
		r.killed = killed
		if t, err := readCPU(p.pid); err == nil {
			r.cpu = t - p.baseline // a process killed before it was ready has baseline 0
		}
		if hwm, err := readHWM(p.pid); err == nil {
			r.hwm = hwm
		}
	}
}

// inject sends every job's message at its arrival time, and returns once
// the bot has them all.
func (h *harness) inject(ctx context.Context) error {
	defer h.plat.Sent()
	for _, j := range h.jobs {
		if d := time.Until(h.t0.Add(j.Arrival)); d > 0 {
			if !sleepCtx(ctx, d) {
				return ctx.Err()
			}
		}
		if err := h.plat.Send(ctx, j); err != nil {
			return err
		}
	}
	return nil
}

// expectedRun is how long the ideal bot takes: the last job's ideal finish.
func (h *harness) expectedRun() time.Duration {
	var end time.Duration
	for _, j := range h.jobs {
		end = max(end, idealFinish(j.Index, j.Arrival, h.slots(), h.cfg.Latency))
	}
	return end
}

// idealFinish is when the k-th arrival would be done by a bot that only
// waits for its C upstream slots: max(ceil(k/C)·L, arrival + L).
func idealFinish(k int, arrival time.Duration, c int, l time.Duration) time.Duration {
	rounds := time.Duration(math.Ceil(float64(k) / float64(c)))
	return max(rounds*l, arrival+l)
}

// killer SIGKILLs the bot K times at random moments of the expected run and
// restarts it at once with the same config and database. ctx ends the
// kills; a restart under way runs on under restartCtx, so the run always
// ends with a bot to stop.
func (h *harness) killer(ctx, restartCtx context.Context) error {
	if h.instances() > 1 {
		return h.killInstances(ctx, restartCtx)
	}
	for i, d := range h.killTimes() {
		if !sleepCtx(ctx, time.Until(h.t0.Add(d))) {
			return nil
		}
		if h.plat.Answered() >= len(h.jobs) {
			return nil
		}
		p := h.process(0)
		h.sample(p, true)
		p.kill()
		h.log.Warn("killed the bot", "kill", i+1, "of", h.cfg.Kill, "at", time.Since(h.t0).Round(time.Millisecond), "answered", h.plat.Answered())
		if _, err := h.startBot(restartCtx, 0); err != nil {
			return fmt.Errorf("restart after kill %d: %w", i+1, err)
		}
	}
	return nil
}

// killTimes are the -kill moments, after t0, in order.
func (h *harness) killTimes() []time.Duration {
	rnd := rand.New(rand.NewPCG(h.cfg.Seed, 0x6b696c6c))
	span := h.expectedRun()
	at := make([]time.Duration, h.cfg.Kill)
	for i := range at {
		at[i] = time.Duration((0.05 + 0.9*rnd.Float64()) * float64(span))
	}
	slices.Sort(at)
	return at
}

// drainTimeout bounds how long the load balancer waits, before a kill, for
// the interactions it sent the instance to be acknowledged: Discord's own
// deadline for an acknowledgement.
const drainTimeout = ackDeadline

// killInstances is -kill with several instances: at each moment it takes
// the next instance (round-robin) out of the load balancer's rotation,
// waits for the interactions it was answering, SIGKILLs it, leaves it down
// for -restart-after — the survivors take every new interaction, and once
// its jobs' lease has passed refund them and tell their users — then
// restarts it and puts it back into rotation. One instance is down at a
// time: a kill due meanwhile waits for the restart. When the run ends
// while an instance is down, it stays down.
func (h *harness) killInstances(ctx, restartCtx context.Context) error {
	lb, ok := h.plat.(balancer)
	if !ok {
		return fmt.Errorf("-instances %d: the %s platform has no load balancer", h.instances(), h.cfg.Platform)
	}
	for i, d := range h.killTimes() {
		if !sleepCtx(ctx, time.Until(h.t0.Add(d))) {
			return nil
		}
		if h.plat.Answered() >= len(h.jobs) {
			return nil
		}
		inst := i % h.instances()
		lb.Down(inst)
		left := lb.Drain(inst, drainTimeout)
		p := h.process(inst)
		h.sample(p, true)
		p.kill()
		h.mu.Lock()
		h.kills = append(h.kills, killRecord{At: time.Since(h.t0), Instance: inst})
		h.mu.Unlock()
		h.log.Warn("killed an instance", "kill", i+1, "of", h.cfg.Kill, "instance", inst+1, "pid", p.pid,
			"at", time.Since(h.t0).Round(time.Millisecond), "answered", h.plat.Answered(), "interactions_cut", left,
			"restart_in", h.cfg.RestartAfter)
		if !sleepCtx(ctx, h.cfg.RestartAfter) {
			h.log.Info("the run ended with the instance down: not restarted", "instance", inst+1)
			return nil
		}
		if _, err := h.startBot(restartCtx, inst); err != nil {
			return fmt.Errorf("restart of instance %d after kill %d: %w", inst+1, i+1, err)
		}
		lb.Up(inst)
		h.log.Info("instance restarted and back in rotation", "instance", inst+1, "at", time.Since(h.t0).Round(time.Millisecond))
	}
	return nil
}

// process is an instance's latest process.
func (h *harness) process(instance int) *botProc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.current[instance]
}

// processes is every instance's latest process.
func (h *harness) processes() []*botProc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.current)
}

// waitOutcome is why the wait for answers ended.
type waitOutcome string

const (
	outcomeAnswered waitOutcome = "all jobs answered"
	outcomeDeadline waitOutcome = "deadline"
	outcomeIdle     waitOutcome = "idle"
	outcomeCrashed  waitOutcome = "bot exited on its own"
)

// wait waits until every job got an answer, the deadline passes, nothing
// has moved for cfg.Idle, or the bot exits on its own.
func (h *harness) wait(ctx context.Context, injected, killed <-chan error) (waitOutcome, error) {
	end := h.t0.Add(h.cfg.Timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lastLog := time.Now()
	injecting := true
	for {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case err := <-injected:
			if err != nil {
				return "", fmt.Errorf("inject updates: %w", err)
			}
			injecting, injected = false, nil
		case err := <-killed:
			if err != nil {
				return "", err
			}
			killed = nil // every kill done: the rest is an ordinary wait
		case <-tick.C:
		}
		answered := h.plat.Answered()
		now := time.Now()
		if !injecting && answered >= len(h.jobs) {
			return outcomeAnswered, nil
		}
		if now.After(end) {
			return outcomeDeadline, nil
		}
		if h.cfg.Idle > 0 && !injecting && h.gw.InFlight() == 0 {
			last := latest(h.plat.LastSend(), h.gw.LastSeen(), h.t0)
			if now.Sub(last) > h.cfg.Idle {
				return outcomeIdle, nil
			}
		}
		for _, p := range h.processes() {
			if p.Exited() && !p.killing.Load() {
				h.mu.Lock()
				h.crashed = true
				h.mu.Unlock()
				return outcomeCrashed, nil
			}
		}
		if now.Sub(lastLog) >= 5*time.Second {
			lastLog = now
			st := h.plat.Stats()
			h.log.Info("progress", "elapsed", now.Sub(h.t0).Round(time.Second), "answered", answered, "of", len(h.jobs),
				"gateway", h.gw.requests.Load(), "sent", st.Sends, "429s", limited(st)+burst429s(st))
		}
	}
}

// drive runs the whole load: start, crowd, kills, stop.
func (h *harness) drive(ctx context.Context) (waitOutcome, int, bool, error) {
	// Every instance at once, as a deployment starts them: they migrate
	// the one database under its lock.
	errs := make([]error, h.instances())
	var starting sync.WaitGroup
	for i := range errs {
		starting.Go(func() {
			if _, err := h.startBot(ctx, i); err != nil {
				errs[i] = err
				if h.instances() > 1 {
					errs[i] = fmt.Errorf("instance %d: %w", i+1, err)
				}
			}
		})
	}
	starting.Wait()
	if err := errors.Join(errs...); err != nil {
		return "", 0, false, err
	}
	h.log.Info("bot ready; sending the crowd", "jobs", len(h.jobs), "instances", h.instances(), "ideal", h.expectedRun().Round(time.Millisecond))
	if h.pg != nil {
		h.pg.mark()
	}
	h.t0 = time.Now()
	h.plat.Start(h.t0)

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	injected := make(chan error, 1)
	var injecting sync.WaitGroup
	injecting.Go(func() { injected <- h.inject(ctx) })
	killed := make(chan error, 1)
	var killing sync.WaitGroup
	if h.cfg.Kill > 0 {
		killing.Go(func() { killed <- h.killer(ctx, parent) })
	}

	outcome, err := h.wait(ctx, injected, killed)
	cancel()
	injecting.Wait() // the report reads the ids it assigns
	killing.Wait()   // a restart under way finishes before the stop
	select {
	case kerr := <-killed: // a restart that failed after the wait ended
		if kerr != nil && err == nil {
			err = kerr
		}
	default:
	}
	// Every instance's latest process, at once; the exit code is the
	// first instance's that is not 0 (a process killed and not restarted
	// has none to give).
	procs := h.processes()
	codes, timedOut := make([]int, len(procs)), make([]bool, len(procs))
	var stopping sync.WaitGroup
	for i, p := range procs {
		if p.Exited() {
			codes[i] = p.ExitCode()
			if p.killing.Load() && len(procs) > 1 {
				codes[i] = 0 // killed, down when the run ended
			}
			continue
		}
		h.sample(p, false)
		stopping.Go(func() { codes[i], timedOut[i] = p.terminate(stopGrace) })
	}
	h.log.Info("stopping the bot", "why", outcome, "instances", len(procs))
	stopping.Wait()
	if h.pg != nil {
		h.pg.measure()
	}
	code, anyTimedOut := 0, false
	for i := range procs {
		if code == 0 {
			code = codes[i]
		}
		anyTimedOut = anyTimedOut || timedOut[i]
	}
	return outcome, code, anyTimedOut, err
}

func limited(st platformStats) int64 {
	var n int64
	for _, s := range st.Methods {
		n += s.Limited
	}
	return n
}

func burst429s(st platformStats) int64 {
	var n int64
	for _, s := range st.Methods {
		n += s.Burst429
	}
	return n
}

// textGroups counts texts with their numbers masked, so "Queued #17" and
// "Queued #18" are one line of the report.
func textGroups(texts []string) map[string]int {
	out := map[string]int{}
	for _, t := range texts {
		var b strings.Builder
		digits := false
		for _, r := range t {
			if r >= '0' && r <= '9' {
				if !digits {
					b.WriteByte('N')
				}
				digits = true
				continue
			}
			digits = false
			b.WriteRune(r)
		}
		out[strings.ReplaceAll(b.String(), "\n", " ⏎ ")]++
	}
	return out
}

func latest(ts ...time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}

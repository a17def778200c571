package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/bolt"
)

// Report is the figures of one run; -json writes it as is.
type Report struct {
	Setup setup `json:"setup"`

	Outcome      string  `json:"outcome"`        // why the wait ended
	WaitSeconds  float64 `json:"wait_seconds"`   // t0 to the end of the wait
	ExitCode     int     `json:"exit_code"`      // of the last bot process
	StopTimedOut bool    `json:"stop_timed_out"` // SIGTERM did not end it: killed
	BotCrashed   bool    `json:"bot_crashed"`
	Processes    int     `json:"processes"`

	Jobs       int `json:"jobs"`
	Delivered  int `json:"delivered"`  // jobs whose photo (or document) arrived
	LinksOnly  int `json:"links_only"` // jobs that got only the image's URL as text
	Unanswered int `json:"unanswered"`

	LastDeliverySeconds float64 `json:"last_delivery_seconds"`
	JobsPerSecond       float64 `json:"jobs_per_second"`
	IdealJobsPerSecond  float64 `json:"ideal_jobs_per_second"` // C/L
	ThroughputRatio     float64 `json:"throughput_ratio"`
	// The ideal schedule's own last finish: for N not a multiple of C its
	// jobs/s is below C/L too.
	IdealLastSeconds   float64   `json:"ideal_last_finish_seconds"`
	AddedLatency       quantile  `json:"added_latency_seconds"`                  // over the ideal schedule
	AddedLatencyNormal *quantile `json:"added_latency_normal_seconds,omitempty"` // -heavy runs
	AddedLatencyHeavy  *quantile `json:"added_latency_heavy_seconds,omitempty"`
	// FinishNormal is when the users other than the heavy one got their
	// picture, seconds after t0: compare a -heavy run with the same run
	// without it (fairness).
	FinishNormal     *quantile `json:"finish_normal_seconds,omitempty"`
	DisplacementMean float64   `json:"displacement_mean"` // |served − arrival position|
	DisplacementMax  int       `json:"displacement_max"`

	// CPUSeconds is every bot process's, summed over the instances;
	// PeakRSSBytes is the largest of one process.
	CPUSeconds    float64 `json:"cpu_seconds"`
	CPUPerJobMs   float64 `json:"cpu_per_job_ms"`
	PeakRSSBytes  int64   `json:"peak_rss_bytes"`
	UploadedBytes int64   `json:"uploaded_bytes"`
	// PostgresCPUSeconds is the throwaway PostgreSQL server's (postmaster
	// and backends), from t0 until every bot had exited (-postgres without
	// -dsn).
	PostgresCPUSeconds *float64 `json:"postgres_cpu_seconds,omitempty"`

	// Instances is each bot instance's share, with -instances > 1.
	Instances []instanceFigures `json:"instances,omitempty"`

	Calls        map[string]methodStats `json:"calls"`
	CallsPerJob  map[string]float64     `json:"calls_per_job"`
	SendsPerJob  float64                `json:"sends_per_job"` // send* and edit* calls, 429s included
	Limited429   int64                  `json:"limited_429"`   // beyond Telegram's limits
	Burst429     int64                  `json:"burst_429"`     // -burst429 windows
	Unattributed int                    `json:"unattributed"`  // sends no job could be found for

	// Discord is the acknowledgements and the time to the picture, with
	// -platform discord.
	Discord *discordFigures `json:"discord,omitempty"`

	Gateway        gatewayStats `json:"gateway"`
	GatewayPerJob  float64      `json:"gateway_requests_per_job"`
	Ledger         ledgerCheck  `json:"ledger"`
	DuplicatePhoto int          `json:"duplicate_photos"` // jobs that got more than one photo

	// Answers groups the final texts users were told (numbers masked).
	Answers map[string]int `json:"answers"`
	// Interrupted is the kill run's view of "the bot stopped" messages.
	Interrupted interruptCheck `json:"interrupted"`

	Problems []string `json:"problems"` // what -check fails on
	Dir      string   `json:"dir"`
	BotLog   string   `json:"bot_log"`
	BotLogs  []string `json:"bot_logs,omitempty"` // every instance's, with -instances > 1
}

// instanceFigures is what one bot instance (-instances > 1) took and cost,
// over its processes (one per start).
type instanceFigures struct {
	Instance     int     `json:"instance"` // from 1
	Processes    int     `json:"processes"`
	Killed       int     `json:"killed"`
	CPUSeconds   float64 `json:"cpu_seconds"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"` // the largest of its processes
	// Interactions is what the load balancer sent it, and Acks how it
	// answered them.
	Interactions int            `json:"interactions"`
	Acks         map[string]int `json:"acks"`
	// From the ledger, by the job's owner at the end: the jobs it
	// delivered, the ones it refunded as they failed, and those of a killed
	// process it took over (refunded as interrupted and told their users).
	Committed int `json:"committed"`
	Refunded  int `json:"refunded"`
	TookOver  int `json:"took_over"`
}

// setup echoes the parameters of the run.
type setup struct {
	Platform    string  `json:"platform"`
	Users       int     `json:"users"`
	Heavy       int     `json:"heavy"`
	Groups      int     `json:"groups"`
	Concurrency int     `json:"concurrency"`
	LatencySec  float64 `json:"latency_seconds"`
	ArrivalRate float64 `json:"arrival_rate"`
	Limits      bool    `json:"limits"`
	TGGlobal    float64 `json:"tg_global"`
	Burst429    string  `json:"burst429,omitempty"`
	Fail5xx     float64 `json:"fail5xx"`
	Hang        float64 `json:"hang"`
	Kill        int     `json:"kill"`
	TGRate      int     `json:"tg_rate,omitempty"`
	// DiscordLatency is the fake REST API's, per request.
	DiscordLatency float64 `json:"discord_latency_seconds,omitempty"`
	// Ledger is bolt or postgres; Instances the bot processes sharing it
	// (Concurrency is each one's); JobLease the storage.job_lease written
	// (0: the bot's default); RestartAfter how long a killed instance
	// stayed down.
	Ledger          string  `json:"ledger"`
	Instances       int     `json:"instances"`
	JobLeaseSec     float64 `json:"job_lease_seconds,omitempty"`
	RestartAfterSec float64 `json:"restart_after_seconds,omitempty"`
}

type quantile struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// ledgerCheck is what the database says after the bot has exited.
type ledgerCheck struct {
	Accounts             int      `json:"accounts"`
	Committed            int      `json:"committed"`
	Refunded             int      `json:"refunded"`
	Pending              int      `json:"pending_left"`
	UnitsLost            int      `json:"units_lost"` // |initial − (remaining + committed + pending)|
	BrokenAccounts       []string `json:"broken_accounts,omitempty"`
	DoubleCharges        int      `json:"double_charges"`          // committed units > photos and links delivered
	CommittedNoPhoto     int      `json:"committed_without_photo"` // charged, photo never arrived
	CommittedLinkOnly    int      `json:"committed_link_only"`     // of those, got the URL as text
	RefundedButDelivered int      `json:"refunded_but_delivered"`  // photo arrived, charge returned
	// InterruptedButDelivered is those of them refunded as interrupted
	// (not "cut while sending", after which the photo may have arrived).
	InterruptedButDelivered int            `json:"interrupted_but_delivered"`
	NoRecord                int            `json:"no_record"` // never reserved: refused up front, or lost
	RefundsByOutcome        map[string]int `json:"refunds_by_outcome"`
	Error                   string         `json:"error,omitempty"`
}

// interruptCheck covers users told their job was interrupted.
type interruptCheck struct {
	Told             int            `json:"told"`
	ToldButDelivered int            `json:"told_but_delivered"` // the photo did arrive
	ToldAndRefunded  int            `json:"told_and_refunded"`
	ToldButCommitted int            `json:"told_but_committed"`
	Texts            map[string]int `json:"texts"`
	// ToldAfterKill is, with -instances > 1, how long after its instance
	// was killed each user was told (the survivors wait for the lease).
	ToldAfterKill *quantile `json:"told_after_kill_seconds,omitempty"`
	// Kills are when each instance was killed, seconds after t0.
	Kills []killFigure `json:"kills,omitempty"`
}

type killFigure struct {
	AtSeconds float64 `json:"at_seconds"`
	Instance  int     `json:"instance"` // from 1
}

// isInterruptText matches what the bot says about a job a restart cut
// short, loosely: the wording is being reworked.
func isInterruptText(s string) bool {
	l := strings.ToLower(s)
	for _, frag := range []string{"interrupted", "stopped", "restarted", "may have arrived", "send again", "send your prompt again", "中断"} {
		if strings.Contains(l, frag) {
			return true
		}
	}
	return false
}

// jobOutcome joins one job's answers from the fake Telegram and its ledger record.
type jobOutcome struct {
	job    *loadJob
	view   jobView
	record *core.Job
}

// buildReport computes every figure once the bot has exited.
func (h *harness) buildReport(ctx context.Context, outcome waitOutcome, waited time.Duration, exitCode int, stopTimedOut bool) *Report {
	cfg := h.cfg
	r := &Report{
		Setup: setup{Platform: cfg.Platform, DiscordLatency: cfg.DiscordLatency.Seconds(), Users: cfg.Users, Heavy: cfg.Heavy, Groups: cfg.Groups, Concurrency: cfg.Concurrency,
			LatencySec: cfg.Latency.Seconds(), ArrivalRate: cfg.ArrivalRate, Limits: cfg.Limits, TGGlobal: cfg.TGGlobal,
			Burst429: cfg.Burst429Spec, Fail5xx: cfg.Fail5xx, Hang: cfg.Hang, Kill: cfg.Kill, TGRate: cfg.TGRate,
			Ledger: "bolt", Instances: h.instances(), JobLeaseSec: cfg.jobLease().Seconds()},
		Outcome: string(outcome), WaitSeconds: waited.Seconds(), ExitCode: exitCode, StopTimedOut: stopTimedOut,
		Jobs: len(h.jobs), Dir: h.dir, BotLog: h.botLog(0),
		Answers: map[string]int{}, Problems: []string{},
	}
	if h.pg != nil {
		r.Setup.Ledger = "postgres"
		if h.pg.measured {
			sec := float64(h.pg.used) / clockTicks()
			r.PostgresCPUSeconds = &sec
		}
	}
	if h.instances() > 1 {
		r.Setup.RestartAfterSec = cfg.RestartAfter.Seconds()
		for i := range h.instances() {
			r.BotLogs = append(r.BotLogs, h.botLog(i))
		}
	}
	h.mu.Lock()
	r.BotCrashed = h.crashed
	r.Processes = len(h.procs)
	var ticks cpuTicks
	for _, p := range h.procs {
		ticks += p.cpu
		r.PeakRSSBytes = max(r.PeakRSSBytes, p.hwm)
	}
	h.mu.Unlock()
	r.CPUSeconds = float64(ticks) / clockTicks()

	outs := make([]*jobOutcome, len(h.jobs))
	for i, j := range h.jobs {
		outs[i] = &jobOutcome{job: j, view: h.plat.Job(j)}
	}
	r.Ledger = h.checkLedger(ctx, outs)
	if h.instances() > 1 {
		h.instanceFigures(r, outs)
	}
	if o, ok := h.plat.(reorderer); ok {
		o.reorder(outs)
	}

	h.timing(r, outs)
	h.calls(r)
	h.answers(r, outs)
	if f, ok := h.plat.(figurer); ok {
		f.figures(r, outs)
	}
	r.problems(cfg)
	return r
}

// instanceFigures fills each instance's share: its processes' CPU and
// RSS, what the load balancer sent it, and the ledger's jobs by owner (the
// owner names its process: host-pid-random).
func (h *harness) instanceFigures(r *Report, outs []*jobOutcome) {
	n := h.instances()
	figs := make([]instanceFigures, n)
	byPid := map[int]int{}
	ticks := make([]cpuTicks, n)
	h.mu.Lock()
	for _, p := range h.procs {
		i := p.p.instance
		byPid[p.p.pid] = i
		figs[i].Processes++
		if p.killed {
			figs[i].Killed++
		}
		ticks[i] += p.cpu
		figs[i].PeakRSSBytes = max(figs[i].PeakRSSBytes, p.hwm)
	}
	h.mu.Unlock()
	var routed []int
	var acks []map[string]int
	if lb, ok := h.plat.(balancer); ok {
		routed, acks = lb.Routed(), lb.Acks()
	}
	for i := range figs {
		figs[i].Instance = i + 1
		figs[i].CPUSeconds = float64(ticks[i]) / clockTicks()
		if i < len(routed) {
			figs[i].Interactions, figs[i].Acks = routed[i], acks[i]
		}
	}
	for _, o := range outs {
		if o.record == nil {
			continue
		}
		i, ok := byPid[ownerPid(o.record.Owner)]
		if !ok {
			continue
		}
		switch {
		case o.record.State == core.JobCommitted:
			figs[i].Committed++
		case o.record.State == core.JobRefunded && (o.record.Outcome == core.CodeInterrupted || o.record.Outcome == core.CodeDeliveryCut):
			figs[i].TookOver++
		case o.record.State == core.JobRefunded:
			figs[i].Refunded++
		}
	}
	r.Instances = figs
}

// ownerPid is the process id in a job's owner, host-pid-random (0 when
// it is not of that form).
func ownerPid(owner string) int {
	parts := strings.Split(owner, "-")
	if len(parts) < 3 {
		return 0
	}
	pid, err := strconv.Atoi(parts[len(parts)-2])
	if err != nil {
		return 0
	}
	return pid
}

// timing fills throughput, added latency and displacement.
func (h *harness) timing(r *Report, outs []*jobOutcome) {
	cfg := h.cfg
	type served struct {
		o  *jobOutcome
		at time.Duration
	}
	var got []served
	var all, normal, heavy, finish []float64
	for _, o := range outs {
		if len(o.view.Deliveries) == 0 {
			if o.view.Links > 0 {
				r.LinksOnly++
			}
			if !o.view.Answered {
				r.Unanswered++
			}
			continue
		}
		at := o.view.Deliveries[0].Sub(h.t0)
		got = append(got, served{o, at})
		added := (at - h.idealFinish(o.job)).Seconds()
		all = append(all, added)
		if o.job.Heavy {
			heavy = append(heavy, added)
		} else {
			normal = append(normal, added)
			finish = append(finish, at.Seconds())
		}
		if len(o.view.Deliveries) > 1 {
			r.DuplicatePhoto++
		}
	}
	r.Delivered = len(got)
	r.AddedLatency = quantiles(all)
	qf := quantiles(finish)
	r.FinishNormal = &qf
	if cfg.Heavy > 0 {
		qn, qh := quantiles(normal), quantiles(heavy)
		r.AddedLatencyNormal, r.AddedLatencyHeavy = &qn, &qh
	}
	if len(got) == 0 {
		return
	}
	// Positions among the delivered jobs, so a failed job shifts nobody;
	// with several instances among those of the job's instance, each
	// serving its own queue.
	byInstance := map[int][]served{}
	for _, s := range got {
		byInstance[s.o.job.Instance] = append(byInstance[s.o.job.Instance], s)
	}
	sum := 0
	for _, group := range byInstance {
		sort.SliceStable(group, func(a, b int) bool { return group[a].o.job.Index < group[b].o.job.Index })
		arrival := map[*jobOutcome]int{}
		for i, s := range group {
			arrival[s.o] = i + 1
		}
		sort.SliceStable(group, func(a, b int) bool { return group[a].at < group[b].at })
		for i, s := range group {
			d := abs(i + 1 - arrival[s.o])
			sum += d
			r.DisplacementMax = max(r.DisplacementMax, d)
		}
	}
	r.DisplacementMean = float64(sum) / float64(len(got))
	sort.SliceStable(got, func(a, b int) bool { return got[a].at < got[b].at })
	last := got[len(got)-1].at
	r.LastDeliverySeconds = last.Seconds()
	if last > 0 {
		r.JobsPerSecond = float64(len(got)) / last.Seconds()
	}
	r.IdealJobsPerSecond = float64(h.slots()) / cfg.Latency.Seconds()
	r.ThroughputRatio = r.JobsPerSecond / r.IdealJobsPerSecond
	r.IdealLastSeconds = h.expectedRun().Seconds()
	if r.Delivered > 0 {
		r.CPUPerJobMs = r.CPUSeconds * 1000 / float64(r.Delivered)
	}
}

// idealFinish is when j would be done by the ideal bot: the k-th arrival
// over all the slots, or with several instances the k-th of its instance
// over that instance's slots (no queue spans the instances).
func (h *harness) idealFinish(j *loadJob) time.Duration {
	if h.instances() > 1 && j.InstanceIndex > 0 {
		return idealFinish(j.InstanceIndex, j.Arrival, h.cfg.Concurrency, h.cfg.Latency)
	}
	return idealFinish(j.Index, j.Arrival, h.slots(), h.cfg.Latency)
}

// calls fills the platform and gateway figures.
func (h *harness) calls(r *Report) {
	st := h.plat.Stats()
	r.Calls = st.Methods
	r.UploadedBytes = st.UploadBytes
	r.Unattributed = st.Unmatched
	r.Limited429, r.Burst429 = limited(st), burst429s(st)
	r.Gateway = h.gw.Stats()
	r.CallsPerJob = map[string]float64{}
	per := func(n int64) float64 {
		if r.Delivered == 0 {
			return 0
		}
		return float64(n) / float64(r.Delivered)
	}
	for m, s := range st.Methods {
		r.CallsPerJob[m] = per(s.Calls)
	}
	r.SendsPerJob = per(st.Sends)
	r.GatewayPerJob = per(r.Gateway.Requests)
}

// answers groups what users were told and checks the interrupted ones.
func (h *harness) answers(r *Report, outs []*jobOutcome) {
	r.Interrupted.Texts = map[string]int{}
	h.mu.Lock()
	kills := slices.Clone(h.kills)
	h.mu.Unlock()
	for _, k := range kills {
		r.Interrupted.Kills = append(r.Interrupted.Kills, killFigure{AtSeconds: k.At.Seconds(), Instance: k.Instance + 1})
	}
	var finals, interrupts []string
	var toldAfter []float64
	for _, o := range outs {
		told := false
		for i, t := range o.view.Texts {
			if isFinalText(t) {
				finals = append(finals, t)
			}
			if isInterruptText(t) {
				interrupts = append(interrupts, t)
				if !told && i < len(o.view.TextAt) {
					if d, ok := sinceKill(kills, o.job.Instance, o.view.TextAt[i].Sub(h.t0)); ok {
						toldAfter = append(toldAfter, d.Seconds())
					}
				}
				told = true
			}
		}
		if !told {
			continue
		}
		r.Interrupted.Told++
		if len(o.view.Deliveries) > 0 {
			r.Interrupted.ToldButDelivered++
		}
		if o.record != nil {
			switch o.record.State {
			case core.JobRefunded:
				r.Interrupted.ToldAndRefunded++
			case core.JobCommitted:
				r.Interrupted.ToldButCommitted++
			}
		}
	}
	r.Answers = textGroups(finals)
	r.Interrupted.Texts = textGroups(interrupts)
	if len(kills) > 0 {
		q := quantiles(toldAfter)
		r.Interrupted.ToldAfterKill = &q
	}
}

// sinceKill is how long before at the instance was last killed.
func sinceKill(kills []killRecord, instance int, at time.Duration) (time.Duration, bool) {
	var last time.Duration
	found := false
	for _, k := range kills {
		if k.Instance == instance && k.At <= at {
			last, found = k.At, true
		}
	}
	return at - last, found
}

// problems lists what -check fails on.
func (r *Report) problems(cfg Config) {
	add := func(cond bool, format string, args ...any) {
		if cond {
			r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
		}
	}
	l := r.Ledger
	add(l.Error != "", "ledger check failed: %s", l.Error)
	add(r.Unanswered > 0, "%d job(s) never answered", r.Unanswered)
	add(l.UnitsLost > 0, "%d quota unit(s) lost (invariant broken in %d account(s))", l.UnitsLost, len(l.BrokenAccounts))
	add(l.Pending > 0, "%d job(s) left pending", l.Pending)
	add(l.DoubleCharges > 0, "%d account(s) charged for more images than they received", l.DoubleCharges)
	add(l.CommittedNoPhoto > 0, "%d job(s) charged but the photo never arrived (%d got only a link)", l.CommittedNoPhoto, l.CommittedLinkOnly)
	add(r.DuplicatePhoto > 0, "%d job(s) got more than one photo", r.DuplicatePhoto)
	add(len(r.Gateway.GeneratedTwice) > 0, "%d prompt(s) generated successfully twice", len(r.Gateway.GeneratedTwice))
	if d := r.Discord; d != nil {
		// Discord's own limits are not optional: a 429 on Discord costs
		// the bot its bucket, and after many its token.
		add(r.Limited429 > 0, "%d call(s) answered 429 by Discord (%d beyond the 50 requests/s per bot token)", r.Limited429, d.Refused429)
		add(d.AcksLate > 0, "%d interaction(s) acknowledged after %s: Discord would have shown them as failed", d.AcksLate, ackDeadline)
		add(d.wrongAcks() > 0, "%d interaction(s) not answered with a deferred reply or an ephemeral refusal: %s", d.wrongAcks(), countsText(d.Acks))
	} else {
		add(cfg.Limits && r.Limited429 > 0, "%d call(s) answered 429 for exceeding Telegram's limits", r.Limited429)
	}
	if r.Setup.Instances > 1 {
		// A refund by crash recovery is of a process that died: a job
		// refunded as interrupted whose picture arrived, or whose user was
		// told it was interrupted and charged anyway, was taken from an
		// instance still running it.
		add(l.InterruptedButDelivered > 0, "%d job(s) refunded as interrupted by a restart although their picture arrived (taken over from a live instance?)", l.InterruptedButDelivered)
		add(r.Interrupted.ToldButCommitted > 0, "%d user(s) told their job was interrupted and charged for it", r.Interrupted.ToldButCommitted)
	}
	add(r.BotCrashed, "the bot exited on its own during the run")
	add(r.StopTimedOut, "the bot did not exit within %s of SIGTERM", stopGrace)
	add(!r.BotCrashed && !r.StopTimedOut && r.ExitCode != 0, "the bot exited with status %d after SIGTERM", r.ExitCode)
}

// checkLedger opens the ledger the bots left — the bbolt file, or the
// PostgreSQL database — and checks every account.
func (h *harness) checkLedger(ctx context.Context, outs []*jobOutcome) ledgerCheck {
	var db interface {
		core.Store
		Close() error
	}
	var err error
	if h.pg != nil {
		db, err = h.pg.open(ctx)
	} else {
		db, err = bolt.Open(h.db, bolt.WithLockTimeout(5*time.Second))
	}
	if err != nil {
		return ledgerCheck{RefundsByOutcome: map[string]int{}, Error: err.Error()}
	}
	defer db.Close()
	return checkLedger(ctx, db, h.daily, outs)
}

// checkLedger checks every account of the crowd in db.
func checkLedger(ctx context.Context, db core.Store, daily int, outs []*jobOutcome) ledgerCheck {
	lc := ledgerCheck{RefundsByOutcome: map[string]int{}}
	ledger := core.NewLedger(db, core.Quotas{Location: time.UTC, DefaultDaily: daily})

	byKey := map[string]*jobOutcome{}
	accounts := map[core.AccountKey][]*jobOutcome{}
	for _, o := range outs {
		byKey[o.job.Key()] = o
		k := o.job.Account()
		accounts[k] = append(accounts[k], o)
	}
	lc.Accounts = len(accounts)
	now := time.Now()
	for _, k := range slices.SortedFunc(maps.Keys(accounts), func(a, b core.AccountKey) int { return strings.Compare(a.String(), b.String()) }) {
		if err := lc.account(ctx, db, ledger, k, accounts[k], byKey, daily, now); err != nil {
			lc.Error = err.Error()
			return lc
		}
	}
	for _, o := range outs {
		if o.record == nil {
			lc.NoRecord++
		}
	}
	return lc
}

// account checks one account: the invariant, and each job against what arrived.
func (lc *ledgerCheck) account(ctx context.Context, db core.Store, ledger *core.Ledger, k core.AccountKey,
	outs []*jobOutcome, byKey map[string]*jobOutcome, daily int, now time.Time) error {
	jobs, err := db.RecentJobs(ctx, k, 1<<30)
	if err != nil {
		return fmt.Errorf("jobs of %s: %w", k, err)
	}
	bal, err := ledger.Balance(ctx, k, now)
	if err != nil {
		return fmt.Errorf("balance of %s: %w", k, err)
	}
	committed, pending := 0, 0
	for i := range jobs {
		j := &jobs[i]
		o := byKey[j.Key]
		if o != nil {
			o.record = j
		}
		delivered := o != nil && len(o.view.Deliveries) > 0
		switch j.State {
		case core.JobCommitted:
			committed += j.Units
			lc.Committed++
			if !delivered {
				lc.CommittedNoPhoto++
				if o != nil && o.view.Links > 0 {
					lc.CommittedLinkOnly++
				}
			}
		case core.JobPending:
			pending += j.Units
			lc.Pending++
		case core.JobRefunded:
			lc.Refunded++
			lc.RefundsByOutcome[string(j.Outcome)]++
			if delivered {
				lc.RefundedButDelivered++
				if j.Outcome == core.CodeInterrupted {
					lc.InterruptedButDelivered++
				}
			}
		}
	}
	// initial = remaining + committed + pending (no credits are granted in a run).
	if d := daily - (bal.Remaining() + committed + pending); d != 0 {
		lc.UnitsLost += abs(d)
		lc.BrokenAccounts = append(lc.BrokenAccounts, fmt.Sprintf("%s: initial %d != remaining %d + committed %d + pending %d",
			k, daily, bal.Remaining(), committed, pending))
	}
	// A link is what the bot sends when an upload is impossible: it
	// counts as received here; CommittedNoPhoto tells it apart.
	received := 0
	for _, o := range outs {
		received += len(o.view.Deliveries) + o.view.Links
	}
	if committed > received {
		lc.DoubleCharges++
	}
	return nil
}

func quantiles(xs []float64) quantile {
	if len(xs) == 0 {
		return quantile{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	at := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return quantile{N: len(s), P50: at(0.50), P99: at(0.99), Max: s[len(s)-1]}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// Print writes the report as a table.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	s := r.Setup
	fmt.Fprintln(tw, "== imaginebot load ==")
	if s.Platform == platformDiscord {
		row("setup", "platform=discord (HTTP interactions) N=%d heavy=%d C=%d L=%gs arrival=%s limits=%v discord-latency=%gs fail5xx=%g hang=%g%s",
			s.Users, s.Heavy, s.Concurrency, s.LatencySec, arrivalText(s.ArrivalRate), s.Limits, s.DiscordLatency, s.Fail5xx, s.Hang, ledgerText(s))
	} else {
		row("setup", "platform=telegram N=%d heavy=%d groups=%d C=%d L=%gs arrival=%s limits=%v tg-global=%g burst429=%q fail5xx=%g hang=%g kill=%d%s",
			s.Users, s.Heavy, s.Groups, s.Concurrency, s.LatencySec, arrivalText(s.ArrivalRate), s.Limits, s.TGGlobal, s.Burst429, s.Fail5xx, s.Hang, s.Kill, ledgerText(s))
	}
	row("run", "%s after %.1fs; bot exit code %d%s; %d process(es)", r.Outcome, r.WaitSeconds, r.ExitCode, stopNote(r), r.Processes)
	row("jobs", "%d: photo delivered %d, link only %d, unanswered %d; ledger: committed %d, refunded %d, pending %d, never reserved %d",
		r.Jobs, r.Delivered, r.LinksOnly, r.Unanswered, r.Ledger.Committed, r.Ledger.Refunded, r.Ledger.Pending, r.Ledger.NoRecord)
	ideal := "C/L"
	if s.Instances > 1 {
		ideal = fmt.Sprintf("%d instances × C/L", s.Instances)
	}
	row("throughput", "%.2f jobs/s (last delivery at %.1fs); ideal %s = %.2f; ratio %.2f (ideal schedule ends at %.1fs)",
		r.JobsPerSecond, r.LastDeliverySeconds, ideal, r.IdealJobsPerSecond, r.ThroughputRatio, r.IdealLastSeconds)
	row("added latency", "%s", qText(r.AddedLatency))
	if r.AddedLatencyNormal != nil && r.AddedLatencyHeavy != nil {
		row("  normal users", "%s", qText(*r.AddedLatencyNormal))
		row("  heavy user", "%s", qText(*r.AddedLatencyHeavy))
	}
	if r.FinishNormal != nil {
		row("finish (not heavy)", "%s after t0", qText(*r.FinishNormal))
	}
	if s.Instances > 1 {
		row("order", "|served − arrival position| within each instance: mean %.1f, max %d", r.DisplacementMean, r.DisplacementMax)
	} else {
		row("order", "|served − arrival position|: mean %.1f, max %d", r.DisplacementMean, r.DisplacementMax)
	}
	if len(r.Instances) > 1 {
		var sumRSS int64
		for _, in := range r.Instances {
			sumRSS += in.PeakRSSBytes
		}
		row("bot CPU", "%.2fs total over %d instances (%d processes), %.2f ms/job", r.CPUSeconds, len(r.Instances), r.Processes, r.CPUPerJobMs)
		row("bot peak RSS", "%.1f MiB (VmHWM of the largest process); the instances' peaks add up to %.1f MiB", float64(r.PeakRSSBytes)/(1<<20), float64(sumRSS)/(1<<20))
	} else {
		row("bot CPU", "%.2fs total, %.2f ms/job", r.CPUSeconds, r.CPUPerJobMs)
		row("bot peak RSS", "%.1f MiB (VmHWM)", float64(r.PeakRSSBytes)/(1<<20))
	}
	if c := r.PostgresCPUSeconds; c != nil {
		perJob := 0.0
		if r.Delivered > 0 {
			perJob = *c * 1000 / float64(r.Delivered)
		}
		row("PostgreSQL CPU", "%.2fs (the server and its backends, t0 to the bots' exit), %.2f ms/job", *c, perJob)
	}
	row("uploads", "%.1f MiB", float64(r.UploadedBytes)/(1<<20))
	row("platform sends+edits", "%.2f per job", r.SendsPerJob)
	if d := r.Discord; d != nil {
		row("acks", "%s", countsText(d.Acks))
		row("ack latency", "%s; %d at or over %s", qText(d.AckLatency), d.AcksLate, ackDeadline)
		row("POST to picture", "%s", qText(d.Delivery))
		row("429 answered", "%d (the 50/s per bot token refused %d); edits in flight at once: up to %d", r.Limited429, d.Refused429, d.PeakEditsInFlight)
	} else {
		row("429 answered", "%d beyond limits, %d in burst windows", r.Limited429, r.Burst429)
	}
	row("gateway", "%d requests (%.2f per job): %d ok, %d 5xx, %d hung; %d image downloads",
		r.Gateway.Requests, r.GatewayPerJob, r.Gateway.Successes, r.Gateway.Failed5xx, r.Gateway.Hung, r.Gateway.ImageGets)
	l := r.Ledger
	row("ledger", "%d accounts; units lost %d; pending left %d; double charges %d; charged without photo %d (%d got a link); photo but refunded %d",
		l.Accounts, l.UnitsLost, l.Pending, l.DoubleCharges, l.CommittedNoPhoto, l.CommittedLinkOnly, l.RefundedButDelivered)
	if l.Error != "" {
		row("ledger error", "%s", l.Error)
	}
	row("refunds by outcome", "%s", countsText(l.RefundsByOutcome))
	row("duplicates", "photos twice for one job %d; prompts generated twice %d", r.DuplicatePhoto, len(r.Gateway.GeneratedTwice))
	if r.Unattributed > 0 {
		row("unattributed sends", "%d", r.Unattributed)
	}
	tw.Flush()

	if len(r.Instances) > 1 {
		fmt.Fprintf(w, "\ninstances (C=%d each; interactions as the load balancer sent them, jobs by their owner in the ledger at the end):\n", s.Concurrency)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "instance\tprocesses\tkilled\tCPU s\tpeak RSS MiB\tinteractions\tdeferred\trefused\tdelivered\trefunded\ttook over\t")
		for _, in := range r.Instances {
			other := in.Interactions - in.Acks[ackDeferred] - in.Acks[ackEphemeral]
			refused := fmt.Sprint(in.Acks[ackEphemeral])
			if other > 0 {
				refused += fmt.Sprintf(" (+%d other)", other)
			}
			fmt.Fprintf(tw, "%d\t%d\t%d\t%.2f\t%.1f\t%d\t%d\t%s\t%d\t%d\t%d\t\n", in.Instance, in.Processes, in.Killed, in.CPUSeconds,
				float64(in.PeakRSSBytes)/(1<<20), in.Interactions, in.Acks[ackDeferred], refused, in.Committed, in.Refunded, in.TookOver)
		}
		tw.Flush()
		fmt.Fprintln(w, "  (took over: jobs of a killed process it refunded as interrupted and told their users)")
	}

	fmt.Fprintln(w, "\nplatform calls by method (Discord: by route):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "method\tcalls\tper job\tok\t429 limit\t429 burst\tother errors\t")
	for _, m := range slices.Sorted(maps.Keys(r.Calls)) {
		c := r.Calls[m]
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%d\t%d\t%d\t%d\t\n", m, c.Calls, r.CallsPerJob[m], c.OK, c.Limited, c.Burst429, c.Failed)
	}
	tw.Flush()

	printGroups(w, "final texts users were told (numbers masked)", r.Answers)
	if s.Kill > 0 || r.Interrupted.Told > 0 {
		i := r.Interrupted
		fmt.Fprintf(w, "\ninterrupted: %d user(s) told; of them %d got the photo anyway, %d refunded, %d charged\n",
			i.Told, i.ToldButDelivered, i.ToldAndRefunded, i.ToldButCommitted)
		if len(i.Kills) > 0 {
			var ks []string
			for _, k := range i.Kills {
				ks = append(ks, fmt.Sprintf("instance %d at %.1fs", k.Instance, k.AtSeconds))
			}
			fmt.Fprintf(w, "kills: %s\n", strings.Join(ks, ", "))
		}
		if q := i.ToldAfterKill; q != nil {
			fmt.Fprintf(w, "told after their instance was killed: %s\n", qText(*q))
		}
		printGroups(w, "interruption texts", i.Texts)
	}
	if len(l.BrokenAccounts) > 0 {
		fmt.Fprintln(w, "\nbroken accounts:")
		for _, a := range l.BrokenAccounts[:min(10, len(l.BrokenAccounts))] {
			fmt.Fprintln(w, "  "+a)
		}
	}
	if len(r.Problems) > 0 {
		fmt.Fprintln(w, "\nproblems:")
		for _, p := range r.Problems {
			fmt.Fprintln(w, "  - "+p)
		}
	} else {
		fmt.Fprintln(w, "\nproblems: none")
	}
	if len(r.BotLogs) > 1 {
		fmt.Fprintf(w, "\nbot logs: %s\n", strings.Join(r.BotLogs, " "))
	} else if r.BotLog != "" {
		fmt.Fprintf(w, "\nbot log: %s\n", r.BotLog)
	} else {
		fmt.Fprintln(w, "\nbot log: removed with the run's files after a clean run (-keep keeps them)")
	}
}

func printGroups(w io.Writer, title string, groups map[string]int) {
	if len(groups) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s:\n", title)
	keys := slices.Collect(maps.Keys(groups))
	sort.Slice(keys, func(a, b int) bool {
		if groups[keys[a]] != groups[keys[b]] {
			return groups[keys[a]] > groups[keys[b]]
		}
		return keys[a] < keys[b]
	})
	for i, k := range keys {
		if i == 15 {
			fmt.Fprintf(w, "  … %d more\n", len(keys)-i)
			break
		}
		fmt.Fprintf(w, "  %6d  %s\n", groups[k], truncate(k, 160))
	}
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func qText(q quantile) string {
	if q.N == 0 {
		return "no deliveries"
	}
	return fmt.Sprintf("p50 %.2fs, p99 %.2fs, max %.2fs (n=%d)", q.P50, q.P99, q.Max, q.N)
}

func countsText(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		name := k
		if name == "" {
			name = "(none)"
		}
		parts = append(parts, fmt.Sprintf("%s %d", name, m[k]))
	}
	return strings.Join(parts, ", ")
}

// ledgerText is the setup's ledger and instances, when not one bot on bbolt.
func ledgerText(s setup) string {
	if s.Ledger != "postgres" && s.Instances <= 1 {
		return ""
	}
	t := fmt.Sprintf(" ledger=%s instances=%d", s.Ledger, s.Instances)
	if s.Platform == platformDiscord {
		t += fmt.Sprintf(" kill=%d", s.Kill)
	}
	if s.JobLeaseSec > 0 {
		t += fmt.Sprintf(" job-lease=%gs", s.JobLeaseSec)
	}
	if s.Instances > 1 && s.Kill > 0 {
		t += fmt.Sprintf(" restart-after=%gs", s.RestartAfterSec)
	}
	return t
}

func arrivalText(rate float64) string {
	if rate <= 0 {
		return "all at t0"
	}
	return fmt.Sprintf("%g/s", rate)
}

func stopNote(r *Report) string {
	switch {
	case r.BotCrashed:
		return " (exited on its own)"
	case r.StopTimedOut:
		return " (no exit after SIGTERM: killed)"
	}
	return ""
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

// Config holds the pipeline's limits. Zero values take DefaultConfig's,
// except QueueCap: zero means no job waits for a slot.
type Config struct {
	Models         []Model // at least one
	DefaultModel   string  // "" = the first model
	MaxPromptRunes int

	Rate        rate.Limit // jobs per second per user; rate.Inf disables the limit
	Burst       int
	PerUserJobs int // queued or running jobs per user
	Concurrency int // upstream calls at once
	QueueCap    int // jobs waiting for a slot; 0 = none

	JobTimeout      time.Duration // generation budget per job, queue wait included
	DeliveryTimeout time.Duration // budget to send the result: in a busy group it may wait minutes for the platform's send budget
	ProgressEvery   time.Duration // elapsed-time progress while generating

	// Instance names this process in the jobs it owns ("" = a random
	// name); it must differ between processes sharing a ledger.
	Instance string
	// Lease is how long a job's process vouches for it without renewing:
	// Watch renews it while the job runs, and on a shared ledger any
	// instance refunds a pending job whose lease passed.
	Lease time.Duration
	// Platforms are those this instance serves, to tell users on (nil =
	// all): on a shared ledger it leaves the notices of the others to
	// instances that serve them.
	Platforms []Platform

	Quotas Quotas
}

// DefaultConfig is the one place the pipeline's defaults live: the
// configuration loader starts from it, and NewService fills zero fields
// from it.
func DefaultConfig() Config {
	return Config{
		MaxPromptRunes:  1000,
		Rate:            rate.Every(10 * time.Second),
		Burst:           3,
		PerUserJobs:     2,
		Concurrency:     4,
		QueueCap:        100,
		JobTimeout:      5 * time.Minute,
		DeliveryTimeout: 10 * time.Minute,
		ProgressEvery:   5 * time.Second,
		Lease:           30 * time.Second,
	}
}

func (c *Config) defaults() {
	d := DefaultConfig()
	setDefault(&c.MaxPromptRunes, d.MaxPromptRunes)
	if c.Rate == 0 {
		c.Rate = d.Rate
	}
	setDefault(&c.Burst, d.Burst)
	setDefault(&c.PerUserJobs, d.PerUserJobs)
	setDefault(&c.Concurrency, d.Concurrency)
	setDefault(&c.JobTimeout, d.JobTimeout)
	setDefault(&c.DeliveryTimeout, d.DeliveryTimeout)
	setDefault(&c.ProgressEvery, d.ProgressEvery)
	setDefault(&c.Lease, d.Lease)
}

func setDefault[T int | time.Duration](p *T, v T) {
	if *p <= 0 {
		*p = v
	}
}

// Request is one /imagine from a platform event.
type Request struct {
	Key     string // idempotency key: the platform event id ("telegram:update:42")
	Seq     uint64 // arrival order from Service.Arrival, taken as the event came in; 0 = now
	User    User
	Scope   string
	Lang    Lang
	Prompt  string
	Model   string // "" = the default model
	Options Options
	ReplyTo string // adapter-defined reply target, stored for crash recovery
	// AsIs keeps Model and Options as given, without the user's settings:
	// a reroll makes the original job again.
	AsIs bool
	// Action is a Midjourney button pressed on an earlier result: the job
	// runs it on that task (at the model's action cost) instead of a new
	// prompt. nil for a prompt.
	Action *TaskAction
	// Input is a picture the user gave to start from, downloaded and
	// checked (size, type) by the adapter; nil without. It is not stored:
	// a reroll of the job makes it from the prompt alone.
	Input *Image
}

// Receipt is what a successful Imagine returns.
type Receipt struct {
	Job     Job
	Images  int
	Balance Balance
}

// Service runs the job pipeline and the quota operations.
type Service struct {
	cfg     Config
	models  map[string]Model
	ledger  *Ledger
	store   Store
	gen     Generator
	log     *slog.Logger
	now     func() time.Time
	metrics Metrics

	sched *scheduler
	// exclusive: the store is this process's alone (Exclusive), so every
	// job pending in it at start is refunded at once, and no lease is
	// kept or watched.
	exclusive bool

	notesMu    sync.Mutex
	notes      map[string]string // status references not yet written
	notesTimer *time.Timer

	mu       sync.Mutex
	stopping bool
	active   map[string]*activeJob // reserved jobs not settled yet, by key
	telling  map[string]int        // refunded jobs whose users this process is telling (Tell), by key
	inflight int
	jobs     sync.WaitGroup

	hardStop context.Context // cancelled when Shutdown's grace period ends
	stopHard context.CancelFunc
}

// Option configures a Service.
type Option func(*Service)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Service) { s.log = l } }

// WithClock sets the time source (tests).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// NewService builds the pipeline over store and gen.
func NewService(cfg Config, store Store, gen Generator, opts ...Option) (*Service, error) {
	cfg.defaults()
	if len(cfg.Models) == 0 {
		return nil, errors.New("core: no models configured")
	}
	if cfg.QueueCap < 0 {
		return nil, fmt.Errorf("core: queue cap %d is negative", cfg.QueueCap)
	}
	s := &Service{
		cfg:     cfg,
		models:  map[string]Model{},
		ledger:  NewLedger(store, cfg.Quotas),
		store:   store,
		gen:     gen,
		log:     slog.Default(),
		now:     time.Now,
		metrics: noMetrics{},
		active:  map[string]*activeJob{},
		telling: map[string]int{},
		notes:   map[string]string{},
	}
	s.ledger = s.ledger.Limited(UserLimits{Rate: cfg.Rate, Burst: cfg.Burst, Jobs: cfg.PerUserJobs})
	if ex, ok := store.(Exclusive); ok {
		s.exclusive = ex.Exclusive()
	}
	if s.cfg.Instance == "" {
		s.cfg.Instance = "imaginebot-" + randomName()
	}
	for _, m := range cfg.Models {
		if m.Cost <= 0 {
			m.Cost = 1
		}
		s.models[strings.ToLower(m.Name)] = m
	}
	if s.cfg.DefaultModel == "" {
		s.cfg.DefaultModel = cfg.Models[0].Name
	}
	if _, ok := s.models[strings.ToLower(s.cfg.DefaultModel)]; !ok {
		return nil, fmt.Errorf("core: default model %q is not among the models", s.cfg.DefaultModel)
	}
	s.sched = newScheduler(cfg.Concurrency)
	for _, o := range opts {
		o(s)
	}
	s.hardStop, s.stopHard = context.WithCancel(context.Background())
	return s, nil
}

// Models lists the configured models, default first.
func (s *Service) Models() []Model {
	out := []Model{s.models[strings.ToLower(s.cfg.DefaultModel)]}
	for _, m := range s.cfg.Models {
		if !strings.EqualFold(m.Name, s.cfg.DefaultModel) {
			out = append(out, s.models[strings.ToLower(m.Name)])
		}
	}
	return out
}

// Limits is the pipeline configuration, for help texts.
func (s *Service) Limits() Config { return s.cfg }

// Ledger exposes the quota ledger (admin CLI, recovery tools).
func (s *Service) Ledger() *Ledger { return s.ledger }

// Job returns a stored job (rerolls re-run its prompt, model and options).
func (s *Service) Job(ctx context.Context, key string) (Job, error) {
	var j Job
	err := s.store.View(ctx, func(tx Tx) error {
		var ok bool
		var err error
		if j, ok, err = tx.Job(key); err == nil && !ok {
			return &Error{Code: CodeNotFound, Err: fmt.Errorf("core: no job %s", key)}
		}
		return err
	})
	return j, wrapStore("job", err)
}

// Balance is what an account has left now (for /quota and captions).
func (s *Service) Balance(ctx context.Context, k AccountKey) (Balance, error) {
	return s.ledger.Balance(ctx, k, s.now())
}

// Arrival numbers a platform event in the order events come in. Adapters
// call it where events are still in order (before handing them to their own
// goroutines) and put it in Request.Seq, so the queue serves first come,
// first served even when validations and reservations finish out of order:
// a free slot waits (up to a second) for an earlier arrival still on its
// way. An event that ends up not calling Imagine must be given up with
// Abandon; giving up one that did is harmless.
func (s *Service) Arrival() uint64 { return s.sched.arrive() }

// Abandon says the event numbered seq will not reach the queue.
func (s *Service) Abandon(seq uint64) { s.sched.resolve(seq) }

// NoteStatus stores the adapter's reference to a job's status message, so
// that after a crash the message can be turned into the apology. Notes are
// written together, at most noteEvery apart, or with the job's delivering
// mark if that comes first: one transaction for many jobs instead of one
// each. A crash loses the notes of the last noteEvery at most (those users
// get the apology as a new message, beside the old status).
func (s *Service) NoteStatus(_ context.Context, key, ref string) error {
	s.notesMu.Lock()
	defer s.notesMu.Unlock()
	s.notes[key] = ref
	if s.notesTimer == nil {
		s.notesTimer = time.AfterFunc(noteEvery, s.flushNotes)
	}
	return nil
}

// noteEvery bounds how long a status reference waits to be written.
const noteEvery = 500 * time.Millisecond

func (s *Service) flushNotes() {
	s.notesMu.Lock()
	notes := s.notes
	s.notes = map[string]string{}
	s.notesTimer = nil
	s.notesMu.Unlock()
	if len(notes) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.ledger.NoteStatuses(ctx, notes); err != nil {
		s.log.Warn("storing status messages failed", "jobs", len(notes), "err", err)
	}
}

// takeNote removes and returns the unwritten note of key.
func (s *Service) takeNote(key string) string {
	s.notesMu.Lock()
	defer s.notesMu.Unlock()
	ref := s.notes[key]
	delete(s.notes, key)
	return ref
}

// Imagine runs one job to its end: validation, policy, reservation, queue,
// generation, delivery through rep, then commit — or refund on any failure.
// It blocks until the job is done; progress goes to rep meanwhile. Errors
// are *Error: render them with Message. CodeDuplicate means the event was
// already handled and should be ignored. Adapters serving crowds use
// Submit, which holds no goroutine while a job waits in the queue.
func (s *Service) Imagine(ctx context.Context, req Request, rep Reporter) (Receipt, error) {
	type outcome struct {
		r   Receipt
		err error
	}
	ch := make(chan outcome, 1)
	if err := s.Submit(ctx, req, rep, func(r Receipt, err error) { ch <- outcome{r, err} }); err != nil {
		return Receipt{}, err
	}
	o := <-ch
	return o.r, o.err
}

// Submit checks and reserves a job in the caller's goroutine and queues it.
// A refusal (invalid prompt, limits, quota, ban, duplicate, shutting down)
// is returned at once and done is not called. Otherwise Submit returns nil
// and the job runs later in a goroutine of its own — none while it waits —
// and done is called once with its outcome, after the commit or the refund.
// ctx bounds the job (with the job timeout); done may block (to tell the
// user), and runs in the job's goroutine.
func (s *Service) Submit(ctx context.Context, req Request, rep Reporter, done func(Receipt, error)) error {
	err := s.submit(ctx, req, rep, done)
	if err != nil {
		s.metrics.Refused(req.User.Platform, ErrorCode(err))
	}
	return err
}

func (s *Service) submit(ctx context.Context, req Request, rep Reporter, done func(Receipt, error)) error {
	if req.Seq == 0 {
		req.Seq = s.Arrival()
	}
	// Every refusal below gives the arrival up; reaching the queue does too.
	defer s.Abandon(req.Seq)
	log := s.log.With("job", req.Key, "user", req.User.Key(), "scope", req.Scope)
	if err := s.applyPrefs(ctx, &req); err != nil {
		return err
	}
	model, prompt, err := s.validate(&req)
	if err != nil {
		return err
	}
	userKey := req.User.Key()
	now := s.now()

	if err := s.admit(); err != nil {
		return err
	}
	job, _, err := s.ledger.Reserve(ctx, Job{
		Key:     req.Key,
		Account: AccountKey{Scope: req.Scope, User: userKey},
		User:    req.User,
		Model:   model.Name,
		Prompt:  req.Prompt,
		Options: req.Options,
		Units:   units(model, req),
		ReplyTo: req.ReplyTo,
		Lang:    req.Lang,
		Owner:   s.cfg.Instance,
		Lease:   now.Add(s.cfg.Lease),
	}, now)
	if err != nil {
		s.leave()
		if c := ErrorCode(err); c != CodeDuplicate && c != CodeQuotaExceeded && c != CodeBanned {
			log.Error("reserve failed", "err", err)
		}
		return err
	}
	log.Info("job reserved", "model", model.Name, "units", job.Units)

	cctx, cancelCause := context.WithCancelCause(ctx)
	jctx, cancel := WithSettingTimeout(cctx, s.cfg.JobTimeout, "limits.job_timeout")
	stopHard := context.AfterFunc(s.hardStop, cancel)
	s.track(job, cancelCause)
	s.sched.submit(jctx, userKey, req.Seq, func(pos int) {
		rep.Progress(Progress{Stage: StageQueued, Position: pos})
	}, func(release func(), err error) {
		r, err := s.run(jctx, release, err, job, model, prompt, req, rep, log, now)
		s.metrics.JobDone(req.User.Platform, model.Name, ErrorCode(err))
		s.untrack(job.Key)
		stopHard()
		cancel()
		cancelCause(nil)
		// Settled in the ledger: Shutdown need not wait for the adapter
		// telling the user (the adapter's own Wait does).
		s.leave()
		done(r, err)
	})
	return nil
}

// activeJob is a reserved job that can still be cancelled.
type activeJob struct {
	owner      string // User.Key()
	scope      string
	cancel     context.CancelCauseFunc
	delivering bool // too late to cancel: the picture is being sent
}

// errCancelled is the cause of a job's context when Cancel ended it.
var errCancelled = errors.New("core: cancelled")

func (s *Service) track(j Job, cancel context.CancelCauseFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active[j.Key] = &activeJob{owner: j.Account.User, scope: j.Account.Scope, cancel: cancel}
}

func (s *Service) untrack(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.active, key)
}

// delivering marks a job as past cancelling; false when it was cancelled
// meanwhile.
func (s *Service) delivering(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.active[key]
	if a == nil {
		return true
	}
	if a.cancel == nil {
		return false
	}
	a.delivering = true
	return true
}

// Cancel ends a queued or generating job, which is refunded
// (CodeCancelled) and reported to its adapter like any failure. Its
// requester may cancel it, and moderators of its scope (the adapter
// resolves actor's role there). CodeNotFound when the job has ended (or
// never was), CodeConflict once its picture is being sent. A job another
// instance sharing the ledger runs is marked in the ledger, and that
// instance cancels it when it next renews its lease (within Lease/3).
func (s *Service) Cancel(ctx context.Context, actor Actor, key string) error {
	s.mu.Lock()
	a := s.active[key]
	s.mu.Unlock()
	if a == nil && !s.exclusive {
		return s.cancelElsewhere(ctx, actor, key)
	}
	if a == nil {
		return &Error{Code: CodeNotFound, Err: fmt.Errorf("core: no job %s to cancel", key)}
	}
	if actor.User.Key() != a.owner && actor.Role < RoleModerator {
		return &Error{Code: CodeForbidden, Err: fmt.Errorf("core: %s may not cancel %s's job %s", actor.User.Key(), a.owner, key)}
	}
	if err := s.cancelLocal(key, actor.User.Key(), actor.Role.String()); err != nil {
		return err
	}
	return nil
}

// cancelLocal cancels the job of key this instance runs, once.
func (s *Service) cancelLocal(key, by, role string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.active[key]
	switch {
	case a == nil || a.cancel == nil:
		return &Error{Code: CodeNotFound, Err: fmt.Errorf("core: no job %s to cancel", key)}
	case a.delivering:
		return &Error{Code: CodeConflict, Err: fmt.Errorf("core: job %s is being delivered", key)}
	}
	a.cancel(errCancelled)
	a.cancel = nil // once
	s.log.Info("job cancelled", "job", key, "by", by, "role", role)
	return nil
}

// cancelElsewhere asks the instance running the job of key to cancel it.
func (s *Service) cancelElsewhere(ctx context.Context, actor Actor, key string) error {
	j, err := s.Job(ctx, key)
	if err != nil {
		return err
	}
	if j.State != JobPending {
		return &Error{Code: CodeNotFound, Err: fmt.Errorf("core: job %s has ended", key)}
	}
	if actor.User.Key() != j.Account.User && actor.Role < RoleModerator {
		return &Error{Code: CodeForbidden, Err: fmt.Errorf("core: %s may not cancel %s's job %s", actor.User.Key(), j.Account.User, key)}
	}
	if err := s.ledger.RequestCancel(ctx, key, actor.User.Key()); err != nil {
		return err
	}
	s.log.Info("job cancel asked of its instance", "job", key, "owner", j.Owner, "by", actor.User.Key(), "role", actor.Role)
	return nil
}

// validate checks the request and renders the upstream prompt.
func (s *Service) validate(req *Request) (Model, string, error) {
	req.Prompt = strings.TrimSpace(req.Prompt)
	req.Options.Negative = strings.TrimSpace(req.Options.Negative)
	if req.Prompt == "" {
		return Model{}, "", &Error{Code: CodeInvalidPrompt}
	}
	if HasControl(req.Prompt) || HasControl(req.Options.Negative) {
		return Model{}, "", &Error{Code: CodePromptControl}
	}
	if n := utf8.RuneCountInString(req.Prompt) + utf8.RuneCountInString(req.Options.Negative); n > s.cfg.MaxPromptRunes {
		return Model{}, "", &Error{Code: CodePromptTooLong, Limit: s.cfg.MaxPromptRunes}
	}
	if req.Options.Aspect != "" && !ValidAspect(req.Options.Aspect) {
		return Model{}, "", &Error{Code: CodeInvalidOption, Reason: ReasonMalformed, Option: OptionAspect, Value: Truncate(req.Options.Aspect, 40)}
	}
	name := req.Model
	if name == "" {
		name = s.cfg.DefaultModel
	}
	m, ok := s.models[strings.ToLower(name)]
	if !ok {
		names := make([]string, 0, len(s.cfg.Models))
		for _, m := range s.Models() {
			names = append(names, m.Name)
		}
		return Model{}, "", &Error{Code: CodeUnknownModel, Option: OptionModel, Value: Truncate(name, 40), Choices: names}
	}
	if err := m.CheckOptions(req.Options); err != nil {
		return Model{}, "", err
	}
	if req.Input != nil && !m.AcceptsImage {
		var takers []string
		for _, t := range s.Models() {
			if t.AcceptsImage {
				takers = append(takers, t.Name)
			}
		}
		return Model{}, "", &Error{Code: CodeInvalidOption, Reason: ReasonNoImage, Option: OptionModel, Value: m.Name, Choices: takers,
			Err: fmt.Errorf("core: model %s takes no picture (models[].accepts_image)", m.Name)}
	}
	prompt, err := m.Render(req.Prompt, req.Options)
	if err != nil {
		return Model{}, "", &Error{Code: CodeInternal, Err: err}
	}
	return m, prompt, nil
}

// admit applies this instance's queue cap and counts the job in flight for
// Shutdown. The per-user limits are the ledger's (Reserve), so that they
// hold across instances.
func (s *Service) admit() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopping:
		return &Error{Code: CodeShuttingDown}
	case s.inflight >= s.cfg.Concurrency+s.cfg.QueueCap:
		return &Error{Code: CodeQueueFull, Limit: s.cfg.QueueCap,
			Err: fmt.Errorf("core: %d jobs in flight", s.inflight)}
	}
	s.inflight++
	s.jobs.Add(1)
	return nil
}

func (s *Service) leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	s.jobs.Done()
}

// units is what a job costs: a Midjourney action its model's action cost.
func units(m Model, req Request) int {
	if req.Action != nil {
		return max(m.ActionUnits(), 1)
	}
	return m.Cost
}

// run generates and delivers a reserved job once the scheduler admitted it
// (release, or the error that ended its wait), then commits it or refunds
// it.
func (s *Service) run(ctx context.Context, release func(), err error, job Job, model Model, prompt string, req Request, rep Reporter, log *slog.Logger, start time.Time) (Receipt, error) {
	var images []Image
	var bal Balance
	if err == nil {
		images, err = s.generate(ctx, model, prompt, job, req, rep)
		release()
	}
	if err == nil && len(images) > 0 && images[0].Task != "" {
		// Its buttons act on the task: keep it before anyone can press one.
		if nerr := s.ledger.NoteTask(context.WithoutCancel(ctx), job.Key, images[0].Task, images[0].Buttons); nerr != nil {
			log.Warn("storing the task failed: its buttons will find nothing", "err", nerr)
		}
	}
	if err == nil {
		bal, err = s.deliver(ctx, job, model, req, rep, images)
	}
	if err != nil {
		return Receipt{}, s.fail(ctx, log, job, err)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.ledger.Commit(cctx, job.Key, s.now()); ErrorCode(err) == CodeConflict {
		// Refunded meanwhile: another instance took the job over because
		// this one had not renewed its lease in time.
		log.Error("commit refused: another instance refunded the job after its lease passed; the picture was free",
			"lease", s.cfg.Lease, "err", err)
	} else if err != nil {
		// The user has the image; the reservation stays pending, and
		// recovery refunds it as delivered (it is marked delivering).
		log.Error("commit failed", "err", err)
	}
	job.State = JobCommitted
	log.Info("job delivered", "images", len(images), "elapsed", s.now().Sub(start))
	return Receipt{Job: job, Images: len(images), Balance: bal}, nil
}

// deliver hands the images to the adapter, after marking the job as
// delivering, and returns the balance the caption showed.
func (s *Service) deliver(ctx context.Context, job Job, model Model, req Request, rep Reporter, images []Image) (Balance, error) {
	bal, err := s.ledger.Balance(ctx, job.Account, s.now())
	if err != nil {
		return Balance{}, err
	}
	dctx, dcancel := WithSettingTimeout(context.WithoutCancel(ctx), s.cfg.DeliveryTimeout, "limits.delivery_timeout")
	defer dcancel()
	defer context.AfterFunc(s.hardStop, dcancel)()
	if !s.delivering(job.Key) {
		return Balance{}, &Error{Code: CodeCancelled, Err: errCancelled}
	}
	// Durable before the first byte is sent: a crash from here on may
	// leave the picture with the user, and recovery must not ask for it again.
	if err := s.ledger.Delivering(dctx, job.Key, s.takeNote(job.Key)); err != nil {
		return Balance{}, err
	}
	err = rep.Deliver(dctx, Delivery{Job: job, Model: model, Prompt: req.Prompt, Options: req.Options, Images: images, Balance: bal})
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			err = &Error{Code: CodeDeliveryFailed, Err: err}
		}
		return Balance{}, explainDeadline(dctx, err)
	}
	return bal, nil
}

// generate calls the generator, forwarding its progress and an elapsed-time
// tick so users see the job is alive during long generations.
func (s *Service) generate(ctx context.Context, model Model, prompt string, job Job, req Request, rep Reporter) ([]Image, error) {
	start := s.now()
	var mu sync.Mutex // serialises rep.Progress between the ticker and the generator
	last := Progress{Stage: StageGenerating, Percent: -1}
	report := func(update func(*Progress)) {
		mu.Lock()
		defer mu.Unlock()
		if update != nil {
			update(&last)
		}
		last.Elapsed = s.now().Sub(start)
		rep.Progress(last)
	}
	report(nil)

	// The ticker must be gone before generate returns: a late tick would
	// overwrite the delivered result with a progress message.
	var ticker sync.WaitGroup
	done := make(chan struct{})
	defer ticker.Wait()
	defer close(done)
	ticker.Add(1)
	go func() {
		defer ticker.Done()
		t := time.NewTicker(s.cfg.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				report(nil)
			case <-done:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	images, err := s.gen.Generate(ctx, GenRequest{Model: model, Prompt: prompt, User: job.Account.User, Job: job.Key, Aspect: job.Options.Aspect, Input: req.Input, Action: req.Action}, func(p GenProgress) {
		report(func(last *Progress) {
			if p.Percent >= 0 {
				last.Percent = min(p.Percent, 100)
			}
			if t := CleanUpstreamText(p.Text, 200); t != "" {
				last.Text = t
			}
		})
	})
	if err == nil && len(images) == 0 {
		err = &Error{Code: CodeLostInRelay, Err: errors.New("core: generator returned no image")}
	}
	return images, err
}

// fail refunds job and returns err classified, with upstream text cleaned.
func (s *Service) fail(ctx context.Context, log *slog.Logger, job Job, err error) error {
	e := AsError(err)
	if errors.Is(context.Cause(ctx), errCancelled) {
		e = &Error{Code: CodeCancelled, Err: err}
	} else if e.Code == CodeInterrupted && s.hardStop.Err() != nil {
		// Cancelled by Shutdown rather than by the caller.
		e = &Error{Code: CodeShuttingDown, Err: err}
	}
	e.Detail = CleanUpstreamText(e.Detail, 500)
	s.takeNote(job.Key) // settled now: the adapter turns its status into the message
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if rerr := s.ledger.Refund(rctx, job.Key, e.Code, s.now()); rerr != nil {
		log.Error("refund failed", "err", rerr, "cause", err)
	}
	log.Warn("job failed", "code", e.Code, "err", e.Err)
	return e
}

// Notified records that the user of a recovered job was told (or cannot
// be: the chat is gone), so the notice is not sent again.
func (s *Service) Notified(ctx context.Context, key string) error {
	return s.ledger.Notified(ctx, key)
}

// Shutdown stops intake, fails queued jobs (refunded), and lets running jobs
// finish until ctx ends; then it cancels them, which refunds them too.
func (s *Service) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	s.sched.close()

	// Notes still buffered belong to jobs that are ending: write them
	// while the ledger is open rather than from a timer after it closed.
	defer func() {
		s.notesMu.Lock()
		if s.notesTimer != nil {
			s.notesTimer.Stop()
		}
		s.notesMu.Unlock()
		s.flushNotes()
	}()
	done := make(chan struct{})
	go func() {
		s.jobs.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.stopHard()
	select {
	case <-done:
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("core: shutdown: jobs still running after cancellation")
	}
}

package main

import (
	"context"
	"time"
)

// Platforms the crowd can be on (-platform).
const (
	platformTelegram = "telegram"
	platformDiscord  = "discord"
)

// platform is the chat platform the crowd is on: the fake the bot talks to
// and the way a user's message reaches the bot. The harness knows nothing
// else of either platform, so a run, its kills and its ledger check are the
// same code for both.
type platform interface {
	// Env is what the environment of the bot instance (0 with -instances
	// 1) needs to reach the fake.
	Env(instance int) map[string]string
	// Readiness is taken just before a bot process of the instance
	// starts; the check it returns reports when that process serves users.
	Readiness(instance int) func() bool
	// Start marks t0, the moment the crowd starts sending.
	Start(t0 time.Time)
	// Send hands j's message to the bot without waiting for the answer, so
	// that arrivals keep their schedule whatever the bot does; Sent waits
	// for what Send started.
	Send(ctx context.Context, j *loadJob) error
	Sent()
	// Answered is how many jobs got their picture or a final text.
	Answered() int
	// LastSend is when the bot last spoke to the fake.
	LastSend() time.Time
	// Job is what the bot sent in answer to j.
	Job(j *loadJob) jobView
	Stats() platformStats
	Close()
}

// figurer is a platform with figures of its own for the report.
type figurer interface {
	figures(r *Report, outs []*jobOutcome)
}

// reorderer is a platform whose users' messages may reach the bot in
// another order than they were sent (Discord's POSTs all run at once): it
// renumbers the jobs in the order the bot took them, which the ideal
// schedule and the order figures are about. The ledger's records are
// joined to outs by then.
type reorderer interface {
	reorder(outs []*jobOutcome)
}

// balancer is a platform whose users' messages can be spread over several
// bot instances (-instances): its fake load balancer.
type balancer interface {
	// Down takes an instance out of rotation, Up puts it back.
	Down(instance int)
	Up(instance int)
	// Drain waits for the messages sent to an instance to be taken, at
	// most for timeout, and returns how many were not.
	Drain(instance int, timeout time.Duration) int
	// Routed is how many messages went to each instance.
	Routed() []int
	// Acks counts each instance's acknowledgements by kind.
	Acks() []map[string]int
}

// platformStats is what a fake saw, for the report.
type platformStats struct {
	Methods     map[string]methodStats // by Bot API method, or by Discord route
	UploadBytes int64
	Unmatched   int   // deliveries and texts no job could be found for
	Sends       int64 // calls that put or change a message, refused ones included
}

// telegramPlatform is the fake Bot API as the harness's platform: users'
// messages are updates queued for the bot's long poll.
type telegramPlatform struct {
	*telegram
}

func (t telegramPlatform) Env(int) map[string]string {
	return map[string]string{
		"IMAGINEBOT_TELEGRAM_TOKEN":        t.cfg.Token,
		"IMAGINEBOT_TELEGRAM_API_BASE_URL": t.URL,
	}
}

// Readiness: a process serves users once it polls for updates.
func (t telegramPlatform) Readiness(int) func() bool {
	before := t.Polls()
	return func() bool { return t.Polls() != before }
}

// Start begins the -burst429 windows at t0.
func (t telegramPlatform) Start(t0 time.Time) { t.SetOrigin(t0) }

// Send queues the update at once: the bot takes it with its next poll, in
// update order, which is arrival order.
func (t telegramPlatform) Send(_ context.Context, j *loadJob) error {
	j.MsgID = t.NewMessageID()
	t.Expect(j.Chat, j.MsgID)
	id, err := t.Inject(j.update())
	if err != nil {
		return err
	}
	j.UpdateID = id
	return nil
}

func (t telegramPlatform) Sent() {}

func (t telegramPlatform) Job(j *loadJob) jobView { return t.telegram.Job(j.MsgID) }

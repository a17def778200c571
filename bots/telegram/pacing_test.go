package telegram_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/bots/telegram"
	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// TestCrowdStaysWithinTelegramLimits: a crowd writing at once, against a
// fake Bot API that enforces Telegram's published limits, gets every
// picture without a single 429, and costs at most two sends or edits a job:
// the result, and a status message only when the budget had room for one.
func TestCrowdStaysWithinTelegramLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("paced by Telegram's real limits: a few seconds")
	}
	e := newEnv(t, func(c *envConfig) {
		c.paced = true
		c.core.Concurrency = 8
		c.core.QueueCap = 100
	})
	const users = 60
	prompts := map[int64]int{} // chat → the prompt's message id
	for i := range users {
		u := telegramtest.User(int64(5000+i), "", "en")
		prompts[u.ID] = e.send(e.tg.PrivateText(u, fmt.Sprint("a crowd of ", i))).Message.ID
	}
	photos := e.tg.WaitCalls(t, "sendPhoto", users, 30*time.Second)
	perChat := map[int64]int{}
	for _, c := range e.tg.Calls("") {
		if strings.HasPrefix(c.Method, "send") || strings.HasPrefix(c.Method, "edit") {
			perChat[c.ChatID()]++
		}
	}
	for _, p := range photos {
		if p.Status != http.StatusOK || p.ReplyTo() != prompts[p.ChatID()] {
			t.Errorf("photo to %d: status %d, replies to %d", p.ChatID(), p.Status, p.ReplyTo())
		}
		if n := perChat[p.ChatID()]; n > 2 {
			t.Errorf("chat %d cost %d sends and edits", p.ChatID(), n)
		}
	}
	if n := e.tg.TooManyRequests(); n != 0 {
		t.Fatalf("Telegram answered 429 %d times", n)
	}
}

// TestJobsServedInArrivalOrder: with one upstream slot, the queue serves
// the updates in the order Telegram delivered them.
func TestJobsServedInArrivalOrder(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.core.Concurrency = 1 })
	var mu sync.Mutex
	var order []string
	e.gw.Handle(func(w http.ResponseWriter, r *upstreamtest.Request) {
		mu.Lock()
		order = append(order, r.Messages[len(r.Messages)-1].Content)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		upstreamtest.JSON(200, upstreamtest.Completion("![a]("+e.gw.ImageURL("a.png")+")"))(w, r)
	})
	var want []string
	for i := range 12 {
		p := fmt.Sprint("prompt ", i)
		want = append(want, p)
		e.send(e.tg.PrivateText(telegramtest.User(int64(6000+i), "", "en"), p))
	}
	e.tg.WaitCalls(t, "sendPhoto", len(want), 20*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(order, want) {
		t.Fatalf("served %q,\nwant %q", order, want)
	}
}

// Above Telegram's free 30 a second the bot pays for broadcasts, and says so.
func TestPaidBroadcastAboveThirtyPerSecond(t *testing.T) {
	for _, tc := range []struct {
		perSecond int
		paid      bool
	}{{0, false}, {30, false}, {100, true}} {
		t.Run(fmt.Sprint(tc.perSecond), func(t *testing.T) {
			e := newEnv(t, func(c *envConfig) { c.telegram.MessagesPerSecond = tc.perSecond })
			e.send(e.tg.PrivateText(alice, "a paid fox"))
			photo := e.tg.WaitCall(t, "sendPhoto", wait)
			if got := photo.Field("allow_paid_broadcast") == "true"; got != tc.paid {
				t.Fatalf("allow_paid_broadcast = %q", photo.Field("allow_paid_broadcast"))
			}
		})
	}
	if _, err := telegram.New(telegram.Config{Token: telegramtest.DefaultToken, MessagesPerSecond: 1001}, &fakeService{}); err == nil {
		t.Fatal("1001 messages a second accepted")
	}
}

// TestPhotoStillRateLimitedFailsCleanly: when Telegram keeps answering 429
// past the retries, the job fails and is refunded: no document, and never
// the gateway's URL as a link.
func TestPhotoStillRateLimitedFailsCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out three retry_after seconds")
	}
	e := newEnv(t)
	for range 4 {
		e.tg.FailNext("sendPhoto", 429, "Too Many Requests: retry after 1", 1)
	}
	upd := e.send(e.tg.PrivateText(alice, "a crowded lake"))
	e.waitText(t, alice.ID, "couldn't send it here", "refunded")
	if n := len(e.tg.Calls("sendPhoto")); n != 4 {
		t.Errorf("%d photo attempts, want 4", n)
	}
	if n := len(e.tg.Calls("sendDocument")); n != 0 {
		t.Errorf("%d document uploads after 429s", n)
	}
	for _, c := range e.tg.Texts(alice.ID) {
		if strings.Contains(c.Text(), e.gw.URL) {
			t.Errorf("the gateway's URL was sent: %q", c.Text())
		}
	}
	j, err := e.svc.Job(context.Background(), "telegram:update:"+itoa(upd.ID))
	if err != nil || j.State != core.JobRefunded || j.Outcome != core.CodeDeliveryFailed {
		t.Fatalf("job %+v, %v; want refunded as delivery_failed", j, err)
	}
}

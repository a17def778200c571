package telegram_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/bots/telegram"
	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

const cancelledText = "Cancelled. Your quota was refunded."

// A status message's ✖ button ends the job, queued or generating: it is
// refunded and the status becomes the notice, without the button.
func TestCancelQueuedAndGenerating(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.core.Concurrency = 1 })
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	e.gw.Push(upstreamtest.Wait(release, upstreamtest.JSON(200, upstreamtest.Completion("![a]("+e.gw.ImageURL("a.png")+")"))))
	first := e.send(e.tg.PrivateText(alice, "first"))
	e.tg.WaitFor(wait, func() bool { return e.gw.Calls() == 1 })
	second := e.send(e.tg.PrivateText(bob, "second"))
	generating := e.waitText(t, alice.ID, "🎨 Generating…")
	queued := e.waitText(t, bob.ID, "⏳ Queued #1")

	tests := []struct {
		name   string
		who    models.User
		job    models.Update
		status telegramtest.Call
	}{
		{"queued", bob, second, queued},
		{"generating", alice, first, generating},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "telegram:update:" + itoa(tt.job.ID)
			data := tt.status.CallbackData()
			if !slices.Equal(data, []string{"cx:" + key}) {
				t.Fatalf("status buttons %q, want [cx:%s]", data, key)
			}
			status := tt.status.Message()
			cb := e.send(e.tg.Callback(tt.who, status, data[0]))
			if ans := e.answer(t, cb); ans.Field("text") != "✖ Cancelling…" || ans.Field("show_alert") == "true" {
				t.Errorf("answer = %v", ans.Fields)
			}
			done := e.waitText(t, tt.who.ID, cancelledText)
			if done.Method != "editMessageText" || done.Field("message_id") != itoa(int64(status.ID)) {
				t.Errorf("%s of message %s, want the status %d edited", done.Method, done.Field("message_id"), status.ID)
			}
			if !done.Has("reply_markup") || len(done.CallbackData()) != 0 {
				t.Errorf("the notice keeps buttons: reply_markup %q", done.Field("reply_markup"))
			}
			j, err := e.svc.Job(context.Background(), key)
			if err != nil || j.State != core.JobRefunded || j.Outcome != core.CodeCancelled {
				t.Errorf("job %s / %s (%v), want refunded as cancelled", j.State, j.Outcome, err)
			}
			if bal := e.balance(t, telegram.ScopePrivate, tt.who); bal.Used != 0 {
				t.Errorf("used %d after a cancel", bal.Used)
			}
			texts := e.tg.Texts(tt.who.ID)
			if last := texts[len(texts)-1]; last.Text() != cancelledText {
				t.Errorf("a status came after the notice: %q", last.Text())
			}
		})
	}
	if n := e.gw.Calls(); n != 1 {
		t.Errorf("upstream calls = %d: the cancelled queued job still ran", n)
	}
	if n := len(e.tg.Calls("sendPhoto")); n != 0 {
		t.Errorf("%d photos sent for cancelled jobs", n)
	}
}

// Only the requester or a moderator of the chat may cancel: another member
// is told so and the job goes on, charged; a group admin cancels it.
func TestCancelWhoMay(t *testing.T) {
	e := newEnv(t)
	other := telegramtest.GroupChat(-1009876543210, "Elsewhere")
	e.tg.SetChatMember(group.ID, gwen.ID, models.ChatMemberTypeAdministrator)
	e.tg.SetChatMember(other.ID, gwen.ID, models.ChatMemberTypeAdministrator)
	scope := "telegram:group:" + itoa(group.ID)
	release := make(chan struct{})
	e.gw.Push(
		upstreamtest.Wait(release, upstreamtest.JSON(200, upstreamtest.Completion("![a]("+e.gw.ImageURL("a.png")+")"))),
		upstreamtest.Hang(),
	)

	first := e.send(e.tg.GroupText(group, alice, "/imagine a castle"))
	status := e.statusFor(t, group.ID, first)
	data := status.CallbackData()
	if len(data) != 1 {
		t.Fatalf("status buttons %q", data)
	}
	refusals := []struct {
		name string
		upd  models.Update
		want string
	}{
		{"plain member", e.tg.Callback(carol, status.Message(), data[0]), "Only the person who asked, or a moderator, can cancel"},
		// gwen moderates the other group, not the job's.
		{"button from another chat", e.tg.Callback(gwen, e.tg.Message(other, gwen, "hi"), data[0]), "can't find that any more"},
		{"unknown token", e.tg.Callback(gwen, status.Message(), "ch:AAAAAAAAAAAAAAAAAAAA"), "expired"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			ans := e.answer(t, e.send(tt.upd))
			if ans.Field("show_alert") != "true" || !strings.Contains(ans.Field("text"), tt.want) {
				t.Errorf("answer = %v, want an alert about %q", ans.Fields, tt.want)
			}
		})
	}
	close(release)
	photo := e.tg.WaitCall(t, "sendPhoto", wait)
	if !strings.Contains(photo.Field("caption"), "a castle") {
		t.Errorf("caption %q", photo.Field("caption"))
	}
	firstKey := "telegram:update:" + itoa(first.ID)
	if !e.tg.WaitFor(wait, func() bool {
		j, err := e.svc.Job(context.Background(), firstKey)
		return err == nil && j.State == core.JobCommitted
	}) {
		t.Error("the job others could not cancel was not charged")
	}
	if bal := e.balance(t, scope, alice); bal.Used != 1 {
		t.Errorf("alice used %d, want 1", bal.Used)
	}
	// Too late: the job is over.
	ans := e.answer(t, e.send(e.tg.Callback(alice, status.Message(), data[0])))
	if !strings.Contains(ans.Field("text"), "can't find that any more") {
		t.Errorf("late press answered %v", ans.Fields)
	}

	second := e.send(e.tg.GroupText(group, alice, "/imagine a tower"))
	status = e.statusFor(t, group.ID, second)
	ans = e.answer(t, e.send(e.tg.Callback(gwen, status.Message(), status.CallbackData()[0])))
	if ans.Field("text") != "✖ Cancelling…" {
		t.Errorf("admin's press answered %v", ans.Fields)
	}
	done := e.waitText(t, group.ID, cancelledText)
	if done.Method != "editMessageText" || done.Field("message_id") != itoa(int64(status.Message().ID)) {
		t.Errorf("%s of message %s, want the status edited", done.Method, done.Field("message_id"))
	}
	j, err := e.svc.Job(context.Background(), "telegram:update:"+itoa(second.ID))
	if err != nil || j.State != core.JobRefunded || j.Outcome != core.CodeCancelled {
		t.Errorf("job %s / %s (%v), want refunded as cancelled", j.State, j.Outcome, err)
	}
	if bal := e.balance(t, scope, alice); bal.Used != 1 {
		t.Errorf("alice used %d after the admin's cancel, want 1", bal.Used)
	}
	// Her own presses needed no getChatMember; the others' did.
	for _, c := range e.tg.Calls("getChatMember") {
		if c.Field("user_id") == itoa(alice.ID) {
			t.Error("asked Telegram about the requester's role")
		}
	}
}

// answer waits for the answer to a callback query.
func (e *env) answer(t testing.TB, cb models.Update) telegramtest.Call {
	t.Helper()
	var ans telegramtest.Call
	if !e.tg.WaitFor(wait, func() bool {
		for _, c := range e.tg.Calls("answerCallbackQuery") {
			if c.Field("callback_query_id") == cb.CallbackQuery.ID {
				ans = c
				return true
			}
		}
		return false
	}) {
		t.Fatal("the callback query was not answered")
	}
	return ans
}

// statusFor waits for the status message of the job upd started.
func (e *env) statusFor(t testing.TB, chat int64, upd models.Update) telegramtest.Call {
	t.Helper()
	var status telegramtest.Call
	if !e.tg.WaitFor(wait, func() bool {
		for _, c := range e.tg.Calls("sendMessage") {
			if c.ChatID() == chat && c.ReplyTo() == upd.Message.ID && c.Message() != nil {
				status = c
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no status message for %q", upd.Message.Text)
	}
	return status
}

package telegram_test

import (
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// A second press of 🔄 by the same person while their reroll of that
// picture is being made is answered "already making it" and not charged;
// another person's press is a reroll of its own.
func TestRerollDoubleTap(t *testing.T) {
	e := newEnv(t)
	e.send(e.tg.GroupText(group, alice, "/imagine a lighthouse"))
	first := e.tg.WaitCall(t, "sendPhoto", wait)
	release := make(chan struct{})
	e.gw.Handle(upstreamtest.Wait(release, upstreamtest.JSON(200, upstreamtest.Completion("![img]("+e.gw.ImageURL("a.png")+")"))))
	e.gw.ServeImage("a.png", "image/png", upstreamtest.PNG(16, 16))

	e.send(e.tg.Callback(bob, first.Message(), first.CallbackData()[0]))
	e.tg.WaitFor(wait, func() bool { return e.gw.Calls() == 2 }) // bob's reroll is running
	e.send(e.tg.Callback(bob, first.Message(), first.CallbackData()[0]))
	answers := e.tg.WaitCalls(t, "answerCallbackQuery", 2, wait)
	found := false
	for _, a := range answers {
		found = found || a.Field("text") == "🔄 Already making it: it will appear here when it is ready."
	}
	if !found {
		t.Fatalf("answers %v", answers)
	}
	close(release)
	e.tg.WaitCalls(t, "sendPhoto", 2, wait)
	scope := "telegram:group:" + itoa(group.ID)
	if used := e.balance(t, scope, bob).Used; used != 1 {
		t.Fatalf("bob used %d, want 1: the double tap was charged", used)
	}
	// Once it is done (just after the upload), bob may reroll again.
	for i := 0; len(e.tg.Calls("sendPhoto")) < 3; i++ {
		if i == 20 {
			t.Fatal("a reroll after the first one ended was refused")
		}
		e.send(e.tg.Callback(bob, first.Message(), first.CallbackData()[0]))
		e.tg.WaitFor(250*time.Millisecond, func() bool { return len(e.tg.Calls("sendPhoto")) >= 3 })
	}
	if used := e.balance(t, scope, bob).Used; used != 2 {
		t.Fatalf("bob used %d after a later reroll, want 2", used)
	}
}

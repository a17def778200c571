package main

import (
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
)

// The users the bot has seen survive a restart: after one, a moderator can
// still name @alice, and the audit shows her name, not her raw key.
func TestUsernamesSurviveRestart(t *testing.T) {
	w := newWorld(t, "")
	group := telegramtest.GroupChat(-1001234567890, "Artists")
	alice := telegramtest.User(42, "alice", "en")
	owner := telegramtest.User(900, "owner", "en")
	_, stop := w.start(t)
	w.tg.Inject(w.tg.GroupText(group, alice, "/imagine a fox"))
	w.tg.WaitCall(t, "sendPhoto", 10*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	_, stop = w.start(t)
	defer stop()
	w.tg.Inject(w.tg.GroupText(group, owner, "/quota grant 5 @alice"))
	w.tg.WaitText(t, group.ID, 10*time.Second, "Granted 5 credits to @alice")
	w.tg.Inject(w.tg.GroupText(group, owner, "/audit"))
	w.tg.WaitText(t, group.ID, 10*time.Second, "@alice (42)")
}

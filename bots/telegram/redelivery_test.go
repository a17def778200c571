package telegram_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/bots/telegram"
	"github.com/imaginebot/imaginebot/core"
)

// Telegram delivers an update again when it is not sure the bot got it (a
// webhook answered late): the copy must do nothing. A job is idempotent in
// core by its key, but a moderator command is not, so a redelivered grant
// is what shows whether the adapter drops the copy: run twice, it grants
// twice and answers twice. Webhook mode makes the redelivery exact: the
// handler routes each update before it answers, so once both posts are
// answered, both copies were seen, and Wait lets their work finish.
func TestRedeliveredUpdateRunsOnce(t *testing.T) {
	const secret = "s3cret-Token_1"
	e := newEnv(t, func(c *envConfig) {
		c.telegram.WebhookURL = "https://bot.example.com/telegram/webhook"
		c.telegram.WebhookSecret = secret
	})
	e.tg.WaitCall(t, "setWebhook", wait)
	srv := httptest.NewServer(e.bot.WebhookHandler())
	defer srv.Close()
	post := func(u models.Update) {
		t.Helper()
		body, _ := json.Marshal(&u)
		req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Telegram-Bot-Api-Secret-Token", secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("update %d: status %d, want 200", u.ID, resp.StatusCode)
		}
	}
	withID := func(u models.Update) models.Update {
		u.ID = e.tg.NewUpdateID()
		return u
	}
	imagine := withID(e.tg.PrivateText(alice, "a red kite"))
	grant := withID(e.tg.PrivateText(owner, "/quota grant 5 1001"))
	for _, u := range []models.Update{imagine, imagine, grant, grant} {
		post(u)
	}
	e.waitSettled(t, updateKey(imagine), core.JobCommitted)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.bot.Wait(ctx); err != nil { // every copy's work is over
		t.Fatal(err)
	}

	if n := e.gw.Calls(); n != 1 {
		t.Errorf("upstream calls = %d, want 1", n)
	}
	if n := len(e.tg.Calls("sendPhoto")); n != 1 {
		t.Errorf("%d photos sent, want 1", n)
	}
	bal := e.balance(t, telegram.ScopePrivate, alice)
	if bal.Used != 1 || bal.Credits != 5 {
		t.Errorf("alice used %d, credits %d; want 1 and 5 (charged once, granted once)", bal.Used, bal.Credits)
	}
	granted := 0
	for _, c := range e.tg.Texts(owner.ID) {
		if strings.Contains(c.Text(), "Granted 5 credits") {
			granted++
		}
	}
	if granted != 1 {
		t.Errorf("%d grant confirmations, want 1", granted)
	}
	entries, err := e.svc.AuditLog(context.Background(), core.CLIActor(), "", 10)
	if err != nil || len(entries) != 1 {
		t.Errorf("audit log has %d entries (%v), want 1", len(entries), err)
	}
}

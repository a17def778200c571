package telegram_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"image/png"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-telegram/bot/models"
	"golang.org/x/time/rate"

	"github.com/imaginebot/imaginebot/bots/telegram"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// 1. A private plain text becomes a photo with caption and reroll button.
func TestPrivateTextBecomesPhoto(t *testing.T) {
	e := newEnv(t)
	upd := e.send(e.tg.PrivateText(alice, "a red fox in the snow"))

	photo := e.tg.WaitCall(t, "sendPhoto", wait)
	f, ok := photo.File("photo")
	if !ok || f.Size == 0 || !bytes.Equal(f.Data, upstreamtest.PNG(16, 16)) {
		t.Fatalf("photo upload = %+v, %t; want the gateway's PNG", f.Filename, ok)
	}
	if photo.ChatID() != alice.ID || photo.ReplyTo() != upd.Message.ID {
		t.Errorf("photo went to chat %d replying to %d; want %d replying to %d", photo.ChatID(), photo.ReplyTo(), alice.ID, upd.Message.ID)
	}
	capt := photo.Field("caption")
	for _, want := range []string{"a red fox in the snow", "Stable Diffusion", "Quota left today: 4", "resets 00:00 (UTC)"} {
		if !strings.Contains(capt, want) {
			t.Errorf("caption lacks %q:\n%s", want, capt)
		}
	}
	key := "telegram:update:" + itoa(upd.ID)
	if got := photo.CallbackData(); !slices.Equal(got, []string{"rr:" + key}) {
		t.Errorf("reroll button data = %q, want [rr:%s]", got, key)
	}
	if e.gw.Calls() != 1 {
		t.Errorf("upstream calls = %d, want 1", e.gw.Calls())
	}
	job, err := e.svc.Job(context.Background(), key)
	if err != nil || job.ReplyTo != itoa(alice.ID)+":"+itoa(int64(upd.Message.ID)) || job.Lang != core.English {
		t.Errorf("job = %+v, %v", job, err)
	}
	if bal := e.balance(t, telegram.ScopePrivate, alice); bal.Used != 1 {
		t.Errorf("used = %d, want 1", bal.Used)
	}
	// The status message, if one made it out before the result, is gone.
	for _, c := range e.tg.Calls("sendMessage") {
		if m := c.Message(); m != nil && c.ChatID() == alice.ID {
			ok := e.tg.WaitFor(wait, func() bool {
				for _, d := range e.tg.Calls("deleteMessage") {
					if d.Field("message_id") == itoa(int64(m.ID)) {
						return true
					}
				}
				return false
			})
			if !ok {
				t.Errorf("status message %q was not deleted", c.Text())
			}
		}
	}
	e.noParseMode(t)
}

// 2. In groups only /imagine and /imagine@ThisBot start jobs.
func TestGroupAddressing(t *testing.T) {
	e := newEnv(t)
	ignored := []models.Update{
		e.send(e.tg.GroupText(group, bob, "/imagine@OtherBot a dog")),
		e.send(e.tg.GroupText(group, bob, "a plain message about a dog")),
		e.send(e.tg.GroupText(group, bob, "/weather tomorrow")),
	}
	e.send(e.tg.GroupText(group, bob, "/imagine@imaginetestbot a cat on a roof"))

	photo := e.tg.WaitCall(t, "sendPhoto", wait)
	if photo.ChatID() != group.ID || !strings.Contains(photo.Field("caption"), "a cat on a roof") {
		t.Fatalf("photo to %d with caption %q", photo.ChatID(), photo.Field("caption"))
	}
	// Updates are routed in order: the ignored ones were dropped before.
	if n := e.gw.Calls(); n != 1 {
		t.Fatalf("upstream calls = %d, want 1", n)
	}
	if got := e.gw.Requests()[0].Messages; !strings.Contains(got[len(got)-1].Content, "a cat on a roof") {
		t.Errorf("upstream prompt = %q", got[len(got)-1].Content)
	}
	for _, c := range e.tg.Calls("sendMessage") {
		for _, u := range ignored {
			if c.ReplyTo() == u.Message.ID {
				t.Errorf("answered an ignored message %q with %q", u.Message.Text, c.Text())
			}
		}
	}
	if bal := e.balance(t, "telegram:group:-1001234567890", bob); bal.Used != 1 {
		t.Errorf("bob's group usage = %d, want 1", bal.Used)
	}
}

// 3. A reroll pressed by someone else charges the presser.
func TestRerollChargesPresser(t *testing.T) {
	e := newEnv(t)
	e.send(e.tg.GroupText(group, alice, "/imagine a lighthouse at dusk --ar 16:9"))
	first := e.tg.WaitCall(t, "sendPhoto", wait)
	result := first.Message()
	data := first.CallbackData()
	if result == nil || len(data) != 1 {
		t.Fatalf("result message %v, buttons %q", result, data)
	}

	cb := e.send(e.tg.Callback(bob, result, data[0]))
	ans := e.tg.WaitCall(t, "answerCallbackQuery", wait)
	if ans.Field("callback_query_id") != cb.CallbackQuery.ID || ans.Field("show_alert") == "true" {
		t.Errorf("answer = %v", ans.Fields)
	}
	second := e.tg.WaitCall(t, "sendPhoto", wait)
	if second.ReplyTo() != result.ID || second.ChatID() != group.ID {
		t.Errorf("reroll went to %d replying to %d, want %d replying to %d", second.ChatID(), second.ReplyTo(), group.ID, result.ID)
	}
	if c := second.Field("caption"); !strings.Contains(c, "a lighthouse at dusk") || !strings.Contains(c, "16:9") || !strings.Contains(c, "asked by @bob") {
		t.Errorf("reroll caption = %q, want it to name the presser", c)
	}
	if c := result.Caption; !strings.Contains(c, "asked by @alice") {
		t.Errorf("group caption = %q, want it to name who asked", c)
	}
	if got := second.CallbackData(); !slices.Equal(got, []string{"rr:telegram:callback:" + cb.CallbackQuery.ID}) {
		t.Errorf("reroll's own button = %q", got)
	}
	reqs := e.gw.Requests()
	if len(reqs) != 2 || !strings.Contains(reqs[1].Messages[len(reqs[1].Messages)-1].Content, "Aspect ratio: 16:9") {
		t.Errorf("upstream requests = %d, the second without the options", len(reqs))
	}
	scope := "telegram:group:" + itoa(group.ID)
	if a, b := e.balance(t, scope, alice), e.balance(t, scope, bob); a.Used != 1 || b.Used != 1 {
		t.Errorf("used: alice %d, bob %d; want 1 and 1", a.Used, b.Used)
	}
	e.tg.WaitFor(wait, func() bool { // committed just after the upload
		j, err := e.svc.Job(context.Background(), "telegram:callback:"+cb.CallbackQuery.ID)
		return err == nil && j.State == core.JobCommitted
	})
	e.send(e.tg.GroupText(group, bob, "/quota history"))
	e.waitText(t, group.ID, "Recent images of @bob", "stable-diffusion · ✅ done · a lighthouse at dusk")
}

func TestRerollRefusals(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.core.Quotas.DefaultDaily = 1 })
	e.send(e.tg.GroupText(group, alice, "/imagine a lighthouse"))
	photo := e.tg.WaitCall(t, "sendPhoto", wait)
	result, data := photo.Message(), photo.CallbackData()[0]

	tests := []struct {
		name string
		upd  models.Update
		want string
	}{
		{"out of quota", e.tg.Callback(alice, result, data), "used all your images"},
		{"inaccessible message", e.tg.Callback(bob, nil, data), "can't reroll here"},
		{"unknown job", e.tg.Callback(bob, result, "rr:telegram:update:999999"), "can't find that image"},
		{"expired short token", e.tg.Callback(bob, result, "rh:AAAAAAAAAAAAAAAAAAAA"), "expired"},
		{"foreign data", e.tg.Callback(bob, result, "vote:42"), "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ans := e.answer(t, e.send(tt.upd))
			if ans.Field("show_alert") != "true" || !strings.Contains(ans.Field("text"), tt.want) {
				t.Errorf("answer = %v, want an alert about %q", ans.Fields, tt.want)
			}
		})
	}
	if n := e.gw.Calls(); n != 1 {
		t.Errorf("upstream calls = %d, want 1", n)
	}
}

// 4. Refusals: the right message, and no upstream call.
func TestRefusals(t *testing.T) {
	t.Run("quota exhausted", func(t *testing.T) {
		e := newEnv(t, func(c *envConfig) { c.core.Quotas.DefaultDaily = 0 })
		en := e.send(e.tg.PrivateText(alice, "a cat"))
		zh := e.send(e.tg.PrivateText(li, "一只猫"))
		c := e.waitText(t, alice.ID, "used all your images for today", "resets at 00:00 (UTC)", "grant you credits")
		if c.ReplyTo() != en.Message.ID {
			t.Errorf("refusal replies to %d, want %d", c.ReplyTo(), en.Message.ID)
		}
		if c := e.waitText(t, li.ID, "今天的额度已用完", "00:00（UTC）"); c.ReplyTo() != zh.Message.ID {
			t.Errorf("zh refusal replies to %d", c.ReplyTo())
		}
		if e.gw.Calls() != 0 {
			t.Errorf("upstream calls = %d, want 0", e.gw.Calls())
		}
		e.noParseMode(t)
	})
	t.Run("rate limited", func(t *testing.T) {
		e := newEnv(t, func(c *envConfig) { c.core.Rate, c.core.Burst = rate.Every(time.Hour), 1 })
		e.send(e.tg.PrivateText(alice, "a cat"))
		e.tg.WaitCall(t, "sendPhoto", wait)
		e.send(e.tg.PrivateText(alice, "another cat"))
		e.waitText(t, alice.ID, "You're going too fast", "Try again in")
		e.send(e.tg.PrivateText(li, "一只猫"))
		e.tg.WaitCalls(t, "sendPhoto", 2, wait)
		e.send(e.tg.PrivateText(li, "又一只猫"))
		e.waitText(t, li.ID, "操作太频繁")
		if n := e.gw.Calls(); n != 2 {
			t.Errorf("upstream calls = %d, want 2", n)
		}
	})
}

// 5. An upstream failure is apologised for and refunded.
func TestUpstreamFailureRefunds(t *testing.T) {
	tests := []struct {
		name  string
		setup func(gw *upstreamtest.Gateway)
		want  []string
	}{
		{"model not found", func(gw *upstreamtest.Gateway) {
			gw.Push(upstreamtest.Status(503, upstreamtest.ErrorBody("model_not_found", "当前分组 default 下对于模型 stable-diffusion 无可用渠道"), nil))
		}, []string{"not available right now", "your quota was refunded"}},
		{"bad key", func(gw *upstreamtest.Gateway) { gw.RequireKey("sk-another-key") },
			[]string{"rejected the bot's credentials", "your quota was refunded"}},
		{"refusal", func(gw *upstreamtest.Gateway) {
			gw.Push(upstreamtest.JSON(200, upstreamtest.Completion("抱歉，您的请求包含敏感内容 *[x](y)*")))
		}, []string{"declined this prompt", "敏感内容 *[x](y)*"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			tt.setup(e.gw)
			e.send(e.tg.PrivateText(alice, "a castle"))
			e.waitText(t, alice.ID, tt.want...)
			var apologies []string
			for _, c := range e.tg.Texts(alice.ID) {
				if strings.Contains(c.Text(), tt.want[0]) {
					apologies = append(apologies, c.Method)
				}
			}
			if len(apologies) != 1 {
				t.Errorf("apologies sent as %q, want exactly one", apologies)
			}
			if bal := e.balance(t, telegram.ScopePrivate, alice); bal.Used != 0 || bal.DailyLeft() != 5 {
				t.Errorf("balance after failure = %+v, want all refunded", bal)
			}
			if n := len(e.tg.Calls("sendPhoto")); n != 0 {
				t.Errorf("%d photos sent", n)
			}
			e.noParseMode(t)
		})
	}
}

// 6. A 429 on sendPhoto is waited out and the photo sent again, whole.
func TestPhotoRetriedAfter429(t *testing.T) {
	e := newEnv(t)
	e.tg.FailNext("sendPhoto", 429, "Too Many Requests: retry after 1", 1)
	upd := e.send(e.tg.PrivateText(alice, "a mountain lake"))

	calls := e.tg.WaitCalls(t, "sendPhoto", 2, wait)
	if calls[0].Status != 429 || calls[1].Status != 200 {
		t.Fatalf("statuses %d, %d; want 429 then 200", calls[0].Status, calls[1].Status)
	}
	f1, ok1 := calls[0].File("photo")
	f2, ok2 := calls[1].File("photo")
	if !ok1 || !ok2 || f1.Size == 0 || !bytes.Equal(f1.Data, f2.Data) {
		t.Fatalf("uploads: %d and %d bytes; want the same image twice", f1.Size, f2.Size)
	}
	if gap := calls[1].Time.Sub(calls[0].Time); gap < 900*time.Millisecond {
		t.Errorf("retried after %s, before retry_after", gap)
	}
	// Delivered means committed: Used was 1 from the reservation on.
	e.waitSettled(t, updateKey(upd), core.JobCommitted)
	if bal := e.balance(t, telegram.ScopePrivate, alice); bal.Used != 1 {
		t.Errorf("used = %d, want 1 (charged once)", bal.Used)
	}
}

// 7. Webhook mode: the secret header is checked before anything runs.
func TestWebhookSecret(t *testing.T) {
	const secret = "s3cret-Token_1"
	e := newEnv(t, func(c *envConfig) {
		c.telegram.WebhookURL = "https://bot.example.com/telegram/webhook"
		c.telegram.WebhookSecret = secret
	})
	set := e.tg.WaitCall(t, "setWebhook", wait)
	var allowed []string
	if err := set.JSON("allowed_updates", &allowed); err != nil || set.Field("secret_token") != secret ||
		set.Field("url") != "https://bot.example.com/telegram/webhook" || !slices.Contains(allowed, "message") || !slices.Contains(allowed, "callback_query") {
		t.Fatalf("setWebhook = %v (%v)", set.Fields, err)
	}
	srv := httptest.NewServer(e.bot.WebhookHandler())
	defer srv.Close()

	post := func(method, secretHeader string, u models.Update) int {
		body, _ := json.Marshal(&u)
		req, _ := http.NewRequest(method, srv.URL, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if secretHeader != "" {
			req.Header.Set("X-Telegram-Bot-Api-Secret-Token", secretHeader)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	update := func(text string) models.Update {
		u := e.tg.PrivateText(alice, text)
		u.ID = e.tg.NewUpdateID()
		return u
	}
	if got := post(http.MethodPost, "", update("no secret")); got != http.StatusUnauthorized {
		t.Errorf("missing secret: %d, want 401", got)
	}
	if got := post(http.MethodPost, "s3cret-Token_2", update("wrong secret")); got != http.StatusUnauthorized {
		t.Errorf("wrong secret: %d, want 401", got)
	}
	if got := post(http.MethodGet, secret, update("a GET")); got != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d, want 405", got)
	}
	big := update(strings.Repeat("x", 2<<20))
	if got := post(http.MethodPost, secret, big); got != http.StatusRequestEntityTooLarge {
		t.Errorf("2 MiB body: %d, want 413", got)
	}
	good := update("a valid webhook cat")
	if got := post(http.MethodPost, secret, good); got != http.StatusOK {
		t.Fatalf("valid update: %d, want 200", got)
	}
	// Telegram redelivers when unsure: the second copy does nothing.
	if got := post(http.MethodPost, secret, good); got != http.StatusOK {
		t.Fatalf("redelivered update: %d, want 200", got)
	}
	photo := e.tg.WaitCall(t, "sendPhoto", wait)
	if !strings.Contains(photo.Field("caption"), "a valid webhook cat") {
		t.Errorf("caption = %q", photo.Field("caption"))
	}
	if n := e.gw.Calls(); n != 1 {
		t.Errorf("upstream calls = %d, want 1 (only the valid update)", n)
	}
	if n := len(e.tg.Calls("getUpdates")) + len(e.tg.Calls("deleteWebhook")); n != 0 {
		t.Errorf("webhook mode polled or deleted the webhook (%d calls)", n)
	}
}

// 8. Moderators: an owner in private, a group admin in the group; a plain
// member is refused and changes nothing.
func TestModeration(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	private := telegram.ScopePrivate
	scope := "telegram:group:" + itoa(group.ID)
	e.tg.SetChatMember(group.ID, gwen.ID, models.ChatMemberTypeAdministrator)

	t.Run("owner grants in private by id", func(t *testing.T) {
		e.send(e.tg.PrivateText(owner, "/quota grant 5 1002"))
		e.waitText(t, owner.ID, "Granted 5 credits", "Credits: 5", "Left today: 10")
		if bal := e.balance(t, private, bob); bal.Credits != 5 {
			t.Errorf("bob's credits = %d, want 5", bal.Credits)
		}
	})
	t.Run("owner bans in private", func(t *testing.T) {
		e.send(e.tg.PrivateText(owner, "/quota ban 1002"))
		e.waitText(t, owner.ID, "can no longer make images", "Banned: yes")
		e.send(e.tg.PrivateText(bob, "a cat"))
		e.waitText(t, bob.ID, "a moderator has blocked you")
		if e.gw.Calls() != 0 {
			t.Errorf("a banned user reached the upstream")
		}
	})
	t.Run("group admin grants by reply", func(t *testing.T) {
		hello := e.send(e.tg.GroupText(group, bob, "hello everyone"))
		e.send(e.tg.Reply(group, gwen, hello.Message, "/quota grant 3"))
		e.waitText(t, group.ID, "Granted 3 credits to @bob", "Credits: 3")
		if bal := e.balance(t, scope, bob); bal.Credits != 3 {
			t.Errorf("bob's group credits = %d, want 3", bal.Credits)
		}
		if bal := e.balance(t, private, bob); bal.Credits != 5 {
			t.Errorf("the private scope changed: credits %d", bal.Credits)
		}
	})
	t.Run("group admin by username", func(t *testing.T) {
		e.send(e.tg.GroupText(group, gwen, "/quota@ImagineTestBot revoke 1 @BOB"))
		e.waitText(t, group.ID, "Took up to 1 credit from @bob", "Credits: 2")
		e.send(e.tg.GroupText(group, gwen, "/quota show @nobody_here"))
		e.waitText(t, group.ID, "I don't know @nobody_here yet")
	})
	t.Run("plain member is refused", func(t *testing.T) {
		e.send(e.tg.GroupText(group, carol, "/quota grant 3 1002"))
		e.waitText(t, group.ID, "Only this group's administrators")
		e.send(e.tg.PrivateText(carol, "/quota grant 3 1002"))
		e.waitText(t, carol.ID, "Only this group's administrators")
		if bal := e.balance(t, scope, bob); bal.Credits != 2 {
			t.Errorf("bob's group credits = %d, want 2 (unchanged)", bal.Credits)
		}
		if bal := e.balance(t, private, bob); bal.Credits != 5 {
			t.Errorf("bob's private credits = %d, want 5 (unchanged)", bal.Credits)
		}
	})
	t.Run("scope daily and audit", func(t *testing.T) {
		e.send(e.tg.GroupText(group, gwen, "/quota scope daily 7"))
		e.waitText(t, group.ID, "daily allowance here is now 7")
		if bal := e.balance(t, scope, carol); bal.Daily != 7 {
			t.Errorf("carol's daily = %d, want 7", bal.Daily)
		}
		e.send(e.tg.GroupText(group, gwen, "/audit 5"))
		e.waitText(t, group.ID, "Moderator actions", "set everyone's daily allowance", "revoke · @bob (1002)", "credits 3→2")
		e.send(e.tg.PrivateText(owner, "/audit"))
		e.waitText(t, owner.ID, "ban", "telegram:private", scope)
		entries, err := e.svc.AuditLog(ctx, core.CLIActor(), "", 50)
		if err != nil || len(entries) != 5 {
			t.Errorf("audit log has %d entries (%v), want 5", len(entries), err)
		}
	})
	t.Run("set daily, reset, unban", func(t *testing.T) {
		hello := e.send(e.tg.GroupText(group, bob, "me again"))
		e.send(e.tg.Reply(group, gwen, hello.Message, "/quota set daily 2"))
		e.waitText(t, group.ID, "Daily allowance of @bob set to 2", "Daily allowance: 2 (set for this user)")
		e.send(e.tg.GroupText(group, gwen, "/quota set daily default @bob"))
		e.waitText(t, group.ID, "@bob is back on this chat's daily allowance", "Daily allowance: 7 (this chat's setting)")
		e.send(e.tg.GroupText(group, gwen, "/quota reset @bob"))
		e.waitText(t, group.ID, "Today's usage of @bob was reset")
		e.send(e.tg.PrivateText(owner, "/quota unban 1002"))
		e.waitText(t, owner.ID, "@bob (id 1002) can make images again", "Banned: no")
	})
	t.Run("bad syntax gets the usage", func(t *testing.T) {
		e.send(e.tg.GroupText(group, gwen, "/quota grant lots"))
		e.waitText(t, group.ID, "/quota grant N [who]")
	})
	t.Run("own quota", func(t *testing.T) {
		e.send(e.tg.GroupText(group, carol, "/quota"))
		e.waitText(t, group.ID, "Your quota here", "Left today: 7 of 7", "Resets at 00:00 (UTC), in ")
	})
}

// 9. An image over 10 MB goes as a document.
func TestBigImageGoesAsDocument(t *testing.T) {
	e := newEnv(t)
	big := bigPNG(11 << 20)
	if _, err := png.DecodeConfig(bytes.NewReader(big)); err != nil || len(big) <= telegram.DefaultMaxPhotoBytes {
		t.Fatalf("test image: %d bytes, %v", len(big), err)
	}
	e.gw.ServeImage("big.png", "image/png", big)
	e.gw.Push(upstreamtest.JSON(200, upstreamtest.Completion("![big]("+e.gw.ImageURL("big.png")+")")))
	e.send(e.tg.PrivateText(alice, "a very detailed map"))

	doc := e.tg.WaitCall(t, "sendDocument", wait)
	f, ok := doc.File("document")
	if !ok || f.Size != len(big) || f.Filename != "image.png" {
		t.Fatalf("document = %q, %d bytes; want image.png, %d bytes", f.Filename, f.Size, len(big))
	}
	if !strings.Contains(doc.Field("caption"), "a very detailed map") || len(doc.CallbackData()) != 1 {
		t.Errorf("document caption %q, buttons %q", doc.Field("caption"), doc.CallbackData())
	}
	if n := len(e.tg.Calls("sendPhoto")); n != 0 {
		t.Errorf("%d sendPhoto calls for an image over the photo limit", n)
	}
}

// bigPNG is a valid, decodable 16×16 PNG padded to about size bytes with a
// tEXt chunk (cheaper to build than noise of that size).
func bigPNG(size int) []byte {
	small := upstreamtest.PNG(16, 16)
	iend := small[len(small)-12:]
	data := append([]byte("Comment\x00"), bytes.Repeat([]byte("a"), size)...)
	chunk := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
	chunk = append(chunk, "tEXt"...)
	chunk = append(chunk, data...)
	chunk = binary.BigEndian.AppendUint32(chunk, crc32.ChecksumIEEE(chunk[4:]))
	out := append([]byte{}, small[:len(small)-12]...)
	out = append(out, chunk...)
	return append(out, iend...)
}

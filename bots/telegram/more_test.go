package telegram_test

import (
	"context"
	"encoding/base64"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/bots/pace"
	"github.com/imaginebot/imaginebot/bots/telegram"
	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// Prompts full of Markdown and HTML go through untouched, with no parse
// mode (the fake refuses markup that would not parse, as Telegram does).
func TestUntrustedTextUntouched(t *testing.T) {
	e := newEnv(t)
	prompt := "*bold* _it_ __u__ [link](http://x.y) ~s~ `code` ```pre``` >q #h +-=|{}.! <b>html</b> <script>&amp; \\ end"
	e.send(e.tg.PrivateText(alice, prompt))
	photo := e.tg.WaitCall(t, "sendPhoto", wait)
	if !strings.HasPrefix(photo.Field("caption"), prompt+"\n\n") {
		t.Errorf("caption = %q, want the prompt verbatim first", photo.Field("caption"))
	}
	// Core's refusal details carry user text too.
	e.send(e.tg.PrivateText(alice, "a cat --model <b>*flux_*"))
	e.waitText(t, alice.ID, "I don't know the model “<b>*flux_*”. Choose one of: stable-diffusion, flux.")
	e.send(e.tg.PrivateText(alice, "a cat --bogus_[x]"))
	e.waitText(t, alice.ID, "“--bogus_[x]” is not an option I know", "--model NAME, --ar W:H and --no TEXT")
	e.noParseMode(t)
}

// An all-emoji prompt still fits the caption (Telegram counts UTF-16).
func TestEmojiPromptCaptionFits(t *testing.T) {
	e := newEnv(t)
	prompt := strings.Repeat("🦊", 1000)
	e.send(e.tg.PrivateText(alice, prompt))
	photo := e.tg.WaitCall(t, "sendPhoto", wait)
	if photo.Status != 200 {
		t.Fatalf("sendPhoto answered %d", photo.Status)
	}
	c := photo.Field("caption")
	if n := len(utf16.Encode([]rune(c))); n > 1024 || !strings.HasPrefix(c, "🦊🦊🦊") || !strings.Contains(c, "Quota left today: 4") {
		t.Errorf("caption of %d units: %q…", n, c[:40])
	}
}

func TestStartupCalls(t *testing.T) {
	e := newEnv(t)
	e.tg.WaitCall(t, "getUpdates", wait)
	if n := len(e.tg.Calls("getMe")); n != 1 {
		t.Errorf("getMe calls = %d", n)
	}
	if n := len(e.tg.Calls("deleteWebhook")); n != 1 {
		t.Errorf("deleteWebhook calls = %d", n)
	}
	cmds := e.tg.Calls("setMyCommands")
	if len(cmds) != 2 {
		t.Fatalf("setMyCommands calls = %d, want 2", len(cmds))
	}
	var langs []string
	for _, c := range cmds {
		langs = append(langs, c.Field("language_code"))
		var list []models.BotCommand
		if err := c.JSON("commands", &list); err != nil || len(list) == 0 || list[0].Command != "imagine" {
			t.Errorf("commands = %v (%v)", list, err)
		}
	}
	if !slices.Equal(langs, []string{"", "zh"}) {
		t.Errorf("language codes = %q, want the default and zh", langs)
	}
	if e.bot.Username() != telegramtest.BotUsername {
		t.Errorf("username = %q", e.bot.Username())
	}
}

func TestRunRedactsToken(t *testing.T) {
	tg := telegramtest.New(t, telegramtest.WithToken("999:another-token"))
	for name, base := range map[string]string{"rejected token": tg.URL, "unreachable server": "http://127.0.0.1:1"} {
		t.Run(name, func(t *testing.T) {
			b, err := telegram.New(telegram.Config{Token: telegramtest.DefaultToken, APIBaseURL: base}, &fakeService{}, telegram.WithLogger(quiet))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			err = b.Run(ctx)
			if err == nil || strings.Contains(err.Error(), telegramtest.DefaultToken) || !strings.Contains(err.Error(), "getMe") {
				t.Fatalf("Run = %v; want a getMe error without the token", err)
			}
		})
	}
}

func TestHelpAndUsage(t *testing.T) {
	e := newEnv(t)
	e.send(e.tg.PrivateText(alice, "/start"))
	e.waitText(t, alice.ID, "👋", "/imagine a fox in the snow", "/help")
	e.send(e.tg.PrivateText(alice, "/help"))
	e.waitText(t, alice.ID, "I turn descriptions into images", "Stable Diffusion (--model stable-diffusion) — 1 credit per picture [default]",
		"FLUX (--model flux) — 2 credits per picture", "--ar W:H", "--no TEXT", "5 a day here (resets at 00:00 (UTC))", "/quota history your recent pictures")
	e.send(e.tg.GroupText(group, li, "/help@ImagineTestBot"))
	e.waitText(t, group.ID, "我可以把文字描述变成图片", "模型", "在群里请使用 /imagine", "示例")
	e.send(e.tg.GroupText(group, bob, "/imagine"))
	e.waitText(t, group.ID, "Describe the picture you want")
	e.send(e.tg.PrivateText(alice, "--ar 16:9"))
	e.waitText(t, alice.ID, "Describe the picture you want", "just send the description")
	e.send(e.tg.PrivateText(alice, "/imagine a cat --ar 16x9"))
	e.waitText(t, alice.ID, "“16x9” is not an aspect ratio", "--ar 16:9")
	e.send(e.tg.PrivateText(alice, "/frobnicate"))
	e.waitText(t, alice.ID, "I don't know that command")
	e.send(e.tg.PrivateText(li, "/quota"))
	e.waitText(t, li.ID, "你在这里的额度", "今日剩余：5 / 5", "小时")
	if e.gw.Calls() != 0 {
		t.Errorf("upstream calls = %d", e.gw.Calls())
	}
}

// Status: one message per job, replying to the user, showing the queue
// position and then generation; deleted when the result arrives.
func TestQueueAndProgress(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.core.Concurrency = 1 })
	release := make(chan struct{})
	e.gw.Push(upstreamtest.Wait(release, upstreamtest.JSON(200, upstreamtest.Completion("![a]("+e.gw.ImageURL("a.png")+")"))))
	first := e.send(e.tg.PrivateText(alice, "first"))
	e.tg.WaitFor(wait, func() bool { return e.gw.Calls() == 1 })
	second := e.send(e.tg.PrivateText(bob, "second"))

	gen := e.waitText(t, alice.ID, "🎨 Generating…")
	queued := e.waitText(t, bob.ID, "⏳ Queued #1")
	if gen.ReplyTo() != first.Message.ID || queued.ReplyTo() != second.Message.ID {
		t.Errorf("status replies to %d and %d", gen.ReplyTo(), queued.ReplyTo())
	}
	close(release)
	e.tg.WaitCalls(t, "sendPhoto", 2, wait)
	for _, status := range []telegramtest.Call{gen, queued} {
		id := status.Message().ID
		if !e.tg.WaitFor(wait, func() bool {
			return slices.ContainsFunc(e.tg.Calls("deleteMessage"), func(c telegramtest.Call) bool {
				return c.Field("message_id") == itoa(int64(id)) && c.ChatID() == status.ChatID()
			})
		}) {
			t.Errorf("status %q not deleted", status.Text())
		}
	}
	// One status message per job.
	statuses := 0
	for _, c := range e.tg.Calls("sendMessage") {
		if strings.HasPrefix(c.Text(), "⏳") || strings.HasPrefix(c.Text(), "🎨") {
			statuses++
		}
	}
	if statuses != 2 {
		t.Errorf("%d status messages, want 2", statuses)
	}
}

// Several images: an album with the caption, then the reroll button.
func TestAlbum(t *testing.T) {
	e := newEnv(t)
	e.gw.Push(upstreamtest.JSON(200, upstreamtest.Completion("生成完成\n![1]("+e.gw.ImageURL("1.png")+")\n![2]("+e.gw.ImageURL("2.jpg")+")")))
	upd := e.send(e.tg.PrivateText(alice, "two owls"))
	album := e.tg.WaitCall(t, "sendMediaGroup", wait)
	var media []struct {
		Type, Media, Caption string
	}
	if err := album.JSON("media", &media); err != nil || len(media) != 2 || len(album.Files) != 2 {
		t.Fatalf("media = %+v, %d files (%v)", media, len(album.Files), err)
	}
	if !strings.HasPrefix(media[0].Caption, "two owls") || media[1].Caption != "" || album.ReplyTo() != upd.Message.ID {
		t.Errorf("captions %q / %q, reply to %d", media[0].Caption, media[1].Caption, album.ReplyTo())
	}
	btn := e.waitText(t, alice.ID, "Quota left today: 4")
	if got := btn.CallbackData(); len(got) != 1 || !strings.HasPrefix(got[0], "rr:telegram:update:") {
		t.Errorf("buttons %q", got)
	}
}

// Fallbacks: Telegram refusing a photo → document; too big for a document
// → the link; a data URI too big has no link → refunded failure.
func TestDeliveryFallbacks(t *testing.T) {
	t.Run("photo refused", func(t *testing.T) {
		e := newEnv(t)
		e.tg.FailNext("sendPhoto", 400, "Bad Request: PHOTO_INVALID_DIMENSIONS", 0)
		e.send(e.tg.PrivateText(alice, "a very tall tower"))
		doc := e.tg.WaitCall(t, "sendDocument", wait)
		if _, ok := doc.File("document"); !ok || !strings.Contains(doc.Field("caption"), "a very tall tower") {
			t.Errorf("document %v", doc.Fields)
		}
	})
	t.Run("link", func(t *testing.T) {
		e := newEnv(t, func(c *envConfig) {
			c.telegram.MaxPhotoBytes, c.telegram.MaxDocumentBytes = 10, 20
			c.cdn = "cdn.example.net"
		})
		link := "https://cdn.example.net/img/default.png?sig=a%2Fb%3D"
		e.gw.Push(upstreamtest.JSON(200, upstreamtest.Completion("![a]("+link+")")))
		upd := e.send(e.tg.PrivateText(alice, "a forest"))
		msg := e.waitText(t, alice.ID, "a forest", "🔗 "+link)
		if len(msg.CallbackData()) != 1 || len(e.tg.Calls("sendPhoto"))+len(e.tg.Calls("sendDocument")) != 0 {
			t.Errorf("link message buttons %q; uploads were tried", msg.CallbackData())
		}
		// A link counts as delivered: the job is committed (Used alone
		// was already 1 from the reservation).
		e.waitSettled(t, updateKey(upd), core.JobCommitted)
		if bal := e.balance(t, telegram.ScopePrivate, alice); bal.Used != 1 {
			t.Errorf("a link counts as delivered: used %d", bal.Used)
		}
	})
	// A link to the operator's network is useless to users and leaks the
	// address: the delivery fails and is refunded instead.
	for _, tt := range []struct {
		name, cdn string
		private   []string
	}{
		{"private gateway link", "", []string{"127.0.0.1"}},
		{"private host name", "images.corp.example", []string{"images.corp.example"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *envConfig) {
				c.telegram.MaxPhotoBytes, c.telegram.MaxDocumentBytes = 10, 20
				c.telegram.PrivateHosts = tt.private
				c.cdn = tt.cdn
			})
			if tt.cdn != "" {
				e.gw.Push(upstreamtest.JSON(200, upstreamtest.Completion("![a](https://"+tt.cdn+"/img/a.png)")))
			}
			upd := e.send(e.tg.PrivateText(alice, "a harbour"))
			e.waitText(t, alice.ID, "couldn't send it here", "your quota was refunded")
			for _, c := range e.tg.Texts(alice.ID) {
				if strings.Contains(c.Text(), "🔗") || strings.Contains(c.Text(), "127.0.0.1") || strings.Contains(c.Text(), "corp.example") {
					t.Errorf("%s sent the private link: %q", c.Method, c.Text())
				}
			}
			j, err := e.svc.Job(context.Background(), "telegram:update:"+itoa(upd.ID))
			if err != nil || j.State != core.JobRefunded || j.Outcome != core.CodeDeliveryFailed {
				t.Errorf("job %s / %s (%v), want refunded after a failed delivery", j.State, j.Outcome, err)
			}
			if bal := e.balance(t, telegram.ScopePrivate, alice); bal.Used != 0 {
				t.Errorf("used %d after a failed delivery", bal.Used)
			}
		})
	}
	t.Run("data URI without a link", func(t *testing.T) {
		e := newEnv(t, func(c *envConfig) { c.telegram.MaxPhotoBytes, c.telegram.MaxDocumentBytes = 10, 20 })
		uri := "data:image/png;base64," + base64.StdEncoding.EncodeToString(upstreamtest.PNG(16, 16))
		e.gw.Push(upstreamtest.JSON(200, upstreamtest.Completion("![x]("+uri+")")))
		e.send(e.tg.PrivateText(alice, "a desert"))
		e.waitText(t, alice.ID, "couldn't send it here", "your quota was refunded")
		if bal := e.balance(t, telegram.ScopePrivate, alice); bal.Used != 0 {
			t.Errorf("used %d after a failed delivery", bal.Used)
		}
	})
}

func TestNotifyInterrupted(t *testing.T) {
	e := newEnv(t)
	jobs := []core.Job{
		{Key: "telegram:update:7", User: core.User{Platform: core.PlatformTelegram, ID: "1003"}, ReplyTo: "1003:77", Lang: core.Chinese},
		{Key: "telegram:callback:x", User: core.User{Platform: core.PlatformTelegram, ID: "1002"}, ReplyTo: "-1001234567890:78", Lang: core.English},
		{Key: "discord:1", User: core.User{Platform: core.PlatformDiscord, ID: "5"}, ReplyTo: "1:2"},
		{Key: "telegram:update:8", User: core.User{Platform: core.PlatformTelegram, ID: "1"}, ReplyTo: "garbage"},
	}
	e.bot.NotifyInterrupted(context.Background(), jobs)
	if c := e.waitText(t, li.ID, "机器人在生成图片时中断了", "额度已退回"); c.ReplyTo() != 77 {
		t.Errorf("zh notice replies to %d", c.ReplyTo())
	}
	if c := e.waitText(t, group.ID, "The bot stopped while making your image"); c.ReplyTo() != 78 {
		t.Errorf("en notice replies to %d", c.ReplyTo())
	}
	if n := len(e.tg.Calls("sendMessage")); n != 2 {
		t.Errorf("%d notices, want 2", n)
	}
}

// A job cut off while its picture was being sent says so, and its status
// message becomes the notice instead of staying at "Generating…".
func TestNotifyInterruptedWhileDelivering(t *testing.T) {
	e := newEnv(t)
	e.bot.NotifyInterrupted(context.Background(), []core.Job{
		{Key: "telegram:update:9", User: core.User{Platform: core.PlatformTelegram, ID: "1001"},
			ReplyTo: "1001:80", Status: "1001:81", Outcome: core.CodeDeliveryCut, Lang: core.English},
		{Key: "telegram:update:10", User: core.User{Platform: core.PlatformTelegram, ID: "1002"},
			ReplyTo: "1002:90", Status: "1002:91", Outcome: core.CodeInterrupted, Lang: core.English},
	})
	edit := e.waitText(t, alice.ID, "may have arrived", "free")
	if edit.Method != "editMessageText" || edit.Field("message_id") != "81" {
		t.Errorf("alice got %s of message %s", edit.Method, edit.Field("message_id"))
	}
	edit = e.waitText(t, bob.ID, "send your prompt again")
	if edit.Method != "editMessageText" || edit.Field("message_id") != "91" {
		t.Errorf("bob got %s of message %s", edit.Method, edit.Field("message_id"))
	}
	if n := len(e.tg.Calls("sendMessage")); n != 0 {
		t.Errorf("%d new messages beside the edited statuses", n)
	}
}

var quiet = slog.New(slog.DiscardHandler)

// A fake core, for the adapter's own timing behaviour.
type fakeService struct {
	telegram.Service // unimplemented methods panic
	imagine          func(ctx context.Context, req core.Request, rep core.Reporter) (core.Receipt, error)
}

// SeeUser forgets.
func (f *fakeService) SeeUser(context.Context, core.User, string) error { return nil }

// Prefs: nobody has settings.
func (f *fakeService) Prefs(context.Context, core.AccountKey) (core.Prefs, error) {
	return core.Prefs{}, nil
}

// Submit runs the fake's imagine in the caller, as if all of it were the
// reservation: a blocked imagine holds the update's handler.
func (f *fakeService) Submit(ctx context.Context, req core.Request, rep core.Reporter, done func(core.Receipt, error)) error {
	r, err := f.imagine(ctx, req, rep)
	if err != nil {
		return err
	}
	done(r, nil)
	return nil
}

func (f *fakeService) Arrival() uint64 { return 0 }

func (f *fakeService) Abandon(uint64) {}

func (f *fakeService) Notified(context.Context, string) error { return nil }

func (f *fakeService) NoteStatus(context.Context, string, string) error { return nil }

// Cancel finds nothing to cancel: the fake's jobs end on their own.
func (f *fakeService) Cancel(context.Context, core.Actor, string) error {
	return &core.Error{Code: core.CodeNotFound}
}

func runFake(t *testing.T, tg *telegramtest.Server, svc *fakeService, interval time.Duration) *telegram.Bot {
	t.Helper()
	return runFakeConfig(t, svc, telegram.Config{Token: tg.Token, APIBaseURL: tg.URL, PollTimeout: time.Second, ProgressInterval: interval})
}

// runFakeConfig runs a bot over svc until the test ends, then waits for it.
func runFakeConfig(t *testing.T, svc *fakeService, cfg telegram.Config) *telegram.Bot {
	t.Helper()
	b, err := telegram.New(cfg, svc, telegram.WithLogger(quiet), telegram.WithLimits(pace.Limits{}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		wctx, wcancel := context.WithTimeout(context.Background(), wait)
		defer wcancel()
		if err := b.Wait(wctx); err != nil {
			t.Error(err)
		}
	})
	return b
}

func delivery(req core.Request) core.Delivery {
	return core.Delivery{
		Job:    core.Job{Key: req.Key},
		Model:  core.Model{Name: "m"},
		Prompt: req.Prompt,
		Images: []core.Image{{Data: upstreamtest.PNG(8, 8), MIME: "image/png"}},
	}
}

func TestProgressThrottledAndCoalesced(t *testing.T) {
	tg := telegramtest.New(t)
	var calls int
	svc := &fakeService{imagine: func(ctx context.Context, req core.Request, rep core.Reporter) (core.Receipt, error) {
		rep.Progress(core.Progress{Stage: core.StageQueued, Position: 3})
		if !tg.WaitFor(wait, func() bool { return len(tg.Calls("sendMessage")) == 1 }) {
			return core.Receipt{}, core.Errorf(core.CodeInternal, "no status")
		}
		for i := range 500 {
			rep.Progress(core.Progress{Stage: core.StageGenerating, Percent: i % 100})
			calls++
		}
		return core.Receipt{}, rep.Deliver(ctx, delivery(req))
	}}
	runFake(t, tg, svc, time.Hour)
	tg.Inject(tg.PrivateText(alice, "a quiet lake"))
	tg.WaitCall(t, "sendPhoto", wait)
	status := tg.Calls("sendMessage")
	if len(status) != 1 || status[0].Text() != "⏳ Queued #3" {
		t.Fatalf("status messages %d: %q", len(status), status[0].Text())
	}
	if n := len(tg.Calls("editMessageText")); n != 0 {
		t.Errorf("%d edits within the progress interval after %d updates", n, calls)
	}
	tg.WaitCall(t, "deleteMessage", wait)
}

func TestProgressEditsWhenAllowed(t *testing.T) {
	tg := telegramtest.New(t)
	svc := &fakeService{imagine: func(ctx context.Context, req core.Request, rep core.Reporter) (core.Receipt, error) {
		rep.Progress(core.Progress{Stage: core.StageQueued, Position: 2})
		tg.WaitFor(wait, func() bool { return len(tg.Calls("sendMessage")) == 1 })
		rep.Progress(core.Progress{Stage: core.StageGenerating, Percent: 42, Text: "图像生成中，请稍候..."})
		tg.WaitFor(wait, func() bool { return len(tg.Calls("editMessageText")) == 1 })
		rep.Progress(core.Progress{Stage: core.StageGenerating, Percent: -1, Elapsed: 12 * time.Second})
		tg.WaitFor(wait, func() bool { return len(tg.Calls("editMessageText")) == 2 })
		return core.Receipt{}, rep.Deliver(ctx, delivery(req))
	}}
	runFake(t, tg, svc, time.Millisecond)
	tg.Inject(tg.PrivateText(li, "一只猫"))
	tg.WaitCall(t, "sendPhoto", wait)
	edits := tg.Calls("editMessageText")
	if len(edits) != 2 || edits[0].Text() != "🎨 生成中… 42%\n图像生成中，请稍候..." || edits[1].Text() != "🎨 生成中… 12 秒" {
		var texts []string
		for _, e := range edits {
			texts = append(texts, e.Text())
		}
		t.Errorf("edits %q", texts)
	}
}

// Progress returns at once even while Telegram is slow to answer.
func TestProgressNeverBlocks(t *testing.T) {
	tg := telegramtest.New(t)
	unblock := make(chan struct{})
	tg.Handle("sendMessage", func(c telegramtest.Call) (any, *telegramtest.Failure) {
		<-unblock
		return map[string]any{"message_id": 99, "date": 1, "chat": map[string]any{"id": c.ChatID(), "type": "private"}}, nil
	})
	progressed := make(chan struct{})
	svc := &fakeService{imagine: func(ctx context.Context, req core.Request, rep core.Reporter) (core.Receipt, error) {
		for i := range 1000 {
			rep.Progress(core.Progress{Stage: core.StageGenerating, Percent: i / 10})
		}
		close(progressed)
		return core.Receipt{}, rep.Deliver(ctx, delivery(req))
	}}
	runFake(t, tg, svc, time.Millisecond)
	tg.Inject(tg.PrivateText(alice, "a slow day"))
	select {
	case <-progressed:
	case <-time.After(wait):
		t.Error("Progress blocked on a slow sendMessage")
	}
	close(unblock)
	tg.WaitCall(t, "sendPhoto", wait)
}

// A flood of updates must not turn into a flood of goroutines: past
// MaxHandlers, intake waits (long polling stops fetching) until work ends.
func TestFloodIsBounded(t *testing.T) {
	tg := telegramtest.New(t)
	release := make(chan struct{})
	var running, peak, total atomic.Int64
	svc := &fakeService{imagine: func(ctx context.Context, req core.Request, rep core.Reporter) (core.Receipt, error) {
		n := running.Add(1)
		defer running.Add(-1)
		total.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		return core.Receipt{}, &core.Error{Code: core.CodeQueueFull}
	}}
	runFakeConfig(t, svc, telegram.Config{Token: tg.Token, APIBaseURL: tg.URL, PollTimeout: time.Second, MaxHandlers: 8})
	const flood = 200
	for i := range flood {
		tg.Inject(tg.PrivateText(telegramtest.User(int64(1000+i), "", "en"), "a cat"))
	}
	if !tg.WaitFor(wait, func() bool { return running.Load() == 8 }) {
		t.Fatalf("running = %d, want 8", running.Load())
	}
	time.Sleep(100 * time.Millisecond) // would more start if nothing held them back?
	if p := peak.Load(); p != 8 {
		t.Fatalf("peak handlers = %d, want 8", p)
	}
	close(release)
	if !tg.WaitFor(5*wait, func() bool { return total.Load() == flood }) {
		t.Fatalf("handled %d of %d updates", total.Load(), flood)
	}
}

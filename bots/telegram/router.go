package telegram

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/go-telegram/bot"
	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/bots/pace"
	"github.com/imaginebot/imaginebot/core"
)

// Scopes and keys shared with the rest of the system.
const (
	ScopePrivate      = "telegram:private"
	scopeGroupPrefix  = "telegram:group:"
	keyUpdatePrefix   = "telegram:update:"
	keyCallbackPrefix = "telegram:callback:"
	commandTimeout    = time.Minute
)

// ScopeOf is the quota scope of a chat: one shared scope for private chats,
// one per group; "" for channels, where the bot does nothing.
func ScopeOf(chat models.Chat) string {
	switch chat.Type {
	case models.ChatTypePrivate:
		return ScopePrivate
	case models.ChatTypeGroup, models.ChatTypeSupergroup:
		return scopeGroupPrefix + strconv.FormatInt(chat.ID, 10)
	}
	return ""
}

// coreUser is the core identity of a Telegram user.
func coreUser(u *models.User) core.User {
	return core.User{Platform: core.PlatformTelegram, ID: strconv.FormatInt(u.ID, 10), Name: displayName(u)}
}

// onUpdate routes one update, in update order, and starts its work in a
// goroutine. The work outlives the update's context: jobs are ended by
// core's Shutdown, commands by their own timeout.
func (b *Bot) onUpdate(ctx context.Context, _ *bot.Bot, upd *models.Update) {
	if upd == nil {
		return
	}
	if upd.ID != 0 {
		// Jobs are idempotent in core; moderator commands are not.
		if !b.seen.Add(upd.ID, true, 0) {
			return
		}
	}
	work := b.route(upd)
	if work == nil {
		return
	}
	wctx := context.WithoutCancel(ctx)
	if !b.spawn(ctx, func() { work(wctx) }) {
		b.log.Info("telegram: update dropped: shutting down", "update", upd.ID)
	}
}

// route decides what an update asks for, without any network call, and
// returns the work to do (nil = ignore).
func (b *Bot) route(upd *models.Update) func(ctx context.Context) {
	switch {
	case upd.Message != nil:
		return b.routeMessage(upd.ID, upd.Message)
	case upd.CallbackQuery != nil:
		cq := upd.CallbackQuery
		b.remember(&cq.From)
		if cancelButton.of(cq.Data) {
			return func(ctx context.Context) { b.cancel(ctx, cq) } // starts no job: no arrival
		}
		if taskButton.of(cq.Data) {
			return b.arrival(func(ctx context.Context, seq uint64) { b.taskAction(ctx, cq, seq) })
		}
		return b.arrival(func(ctx context.Context, seq uint64) { b.reroll(ctx, cq, seq) })
	}
	return nil
}

// arrival numbers a job's update here, in update order, so the queue serves
// jobs in the order their updates arrived whatever their goroutines do
// next; the work gives the number up if it ends without a job.
func (b *Bot) arrival(work func(ctx context.Context, seq uint64)) func(ctx context.Context) {
	seq := b.svc.Arrival()
	return func(ctx context.Context) {
		defer b.svc.Abandon(seq)
		work(ctx, seq)
	}
}

func (b *Bot) routeMessage(updateID int64, m *models.Message) func(ctx context.Context) {
	// Channel posts, anonymous group admins and other bots have no person
	// to charge.
	if m.From == nil || m.From.IsBot {
		if m.SenderChat != nil && m.SenderChat.ID == m.Chat.ID && b.addressedToUs(m.Text) {
			return func(ctx context.Context) {
				b.replyText(ctx, m, anonymousText())
			}
		}
		return nil
	}
	private := m.Chat.Type == models.ChatTypePrivate
	if !private && ScopeOf(m.Chat) == "" {
		return nil
	}
	b.remember(m.From)
	if r := realReply(m); r != nil {
		b.remember(r.From)
	}
	text := m.Text
	if text == "" && len(m.Photo) > 0 {
		text = m.Caption // a photo with /imagine … as its caption
	}
	if text == "" {
		return nil
	}
	cmd, mention, args, isCmd := splitCommand(text)
	if !isCmd {
		if !private {
			return nil
		}
		return b.arrival(func(ctx context.Context, seq uint64) { b.imagine(ctx, updateID, seq, m, text) })
	}
	if mention != "" && !strings.EqualFold(mention, b.Username()) {
		return nil // addressed to another bot
	}
	switch cmd {
	case "imagine":
		return b.arrival(func(ctx context.Context, seq uint64) { b.imagine(ctx, updateID, seq, m, args) })
	case "start":
		return func(ctx context.Context) {
			b.replyText(ctx, m, tr(b.langOf(ctx, ScopeOf(m.Chat), m.From)).T("telegram.start"))
		}
	case "help":
		return func(ctx context.Context) { b.help(ctx, m) }
	case "quota":
		return func(ctx context.Context) { b.quota(ctx, m, args) }
	case "settings":
		return func(ctx context.Context) { b.settings(ctx, m, args) }
	case "audit":
		return func(ctx context.Context) { b.audit(ctx, m, args) }
	}
	if !private {
		return nil // another bot's command
	}
	return func(ctx context.Context) {
		lang := b.langOf(ctx, ScopeOf(m.Chat), m.From)
		b.replyText(ctx, m, tr(lang).T("telegram.unknown_command"))
	}
}

// addressedToUs reports whether text is one of our commands that needs a
// person (imagine, quota, audit) meant for this bot.
func (b *Bot) addressedToUs(text string) bool {
	cmd, mention, _, ok := splitCommand(text)
	if !ok || (mention != "" && !strings.EqualFold(mention, b.Username())) {
		return false
	}
	return cmd == "imagine" || cmd == "quota" || cmd == "audit"
}

// splitCommand splits "/cmd@bot args" into its parts. Text that does not
// start with a well-formed command (1–32 of A–Z a–z 0–9 _) is no command, so
// "/r/aww style" in a private chat is a prompt.
func splitCommand(text string) (cmd, mention, args string, ok bool) {
	if !strings.HasPrefix(text, "/") {
		return "", "", "", false
	}
	head, rest := text, ""
	if i := strings.IndexAny(text, " \t\r\n"); i >= 0 {
		head, rest = text[:i], text[i+1:]
	}
	head = head[1:]
	if at := strings.IndexByte(head, '@'); at >= 0 {
		head, mention = head[:at], head[at+1:]
		if mention == "" {
			return "", "", "", false
		}
	}
	if head == "" || len(head) > 32 {
		return "", "", "", false
	}
	for _, r := range head {
		if !(r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return "", "", "", false
		}
	}
	return strings.ToLower(head), mention, strings.TrimSpace(rest), true
}

// realReply is the message m replies to, unless that is only the root of a
// forum topic (Telegram sets reply_to_message on every topic message).
func realReply(m *models.Message) *models.Message {
	r := m.ReplyToMessage
	if r == nil || (m.IsTopicMessage && r.ID == m.MessageThreadID) {
		return nil
	}
	return r
}

// replyTarget is where answers to m go.
func replyTarget(m *models.Message) target {
	t := target{chat: m.Chat.ID, msg: m.ID}
	if m.IsTopicMessage {
		t.thread = m.MessageThreadID
	}
	return t
}

// replyText answers m with text (best effort, logged).
func (b *Bot) replyText(ctx context.Context, m *models.Message, text string) {
	if _, err := b.sendText(ctx, replyTarget(m), pace.Reply, text, nil); err != nil {
		b.log.Warn("telegram: reply failed", "chat", m.Chat.ID, "err", b.redact(err))
	}
}

// imagine starts a job from a message: "/imagine <text>" or a private text.
func (b *Bot) imagine(ctx context.Context, updateID int64, seq uint64, m *models.Message, text string) {
	lang := b.langOf(ctx, ScopeOf(m.Chat), m.From)
	private := m.Chat.Type == models.ChatTypePrivate
	cmd, err := core.ParseCommand(text)
	if err != nil {
		b.replyText(ctx, m, tr(lang).Error(err, syntax))
		return
	}
	if strings.TrimSpace(cmd.Prompt) == "" {
		b.replyText(ctx, m, usageImagine(lang, private))
		return
	}
	var input *core.Image
	if p := inputPhoto(m); p != nil {
		// Checked here, before anything is reserved: a refusal costs nothing.
		if input, err = b.download(ctx, p); err != nil {
			b.svc.Abandon(seq)
			b.log.Info("telegram: input picture refused", "code", core.ErrorCode(err), "err", err)
			b.replyText(ctx, m, tr(lang).Error(err, syntax))
			return
		}
	}
	to := replyTarget(m)
	req := core.Request{
		Key:     keyUpdatePrefix + strconv.FormatInt(updateID, 10),
		Input:   input,
		Seq:     seq,
		User:    coreUser(m.From),
		Scope:   ScopeOf(m.Chat),
		Lang:    lang,
		Prompt:  cmd.Prompt,
		Model:   cmd.Model,
		Options: cmd.Options,
		ReplyTo: to.replyTo(),
	}
	b.runJob(ctx, req, to, nil, nil)
}

// help answers /help.
func (b *Bot) help(ctx context.Context, m *models.Message) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	lang := b.langOf(ctx, ScopeOf(m.Chat), m.From)
	var balp *core.Balance
	if bal, err := b.svc.Balance(ctx, core.AccountKey{Scope: ScopeOf(m.Chat), User: coreUser(m.From).Key()}); err == nil {
		balp = &bal
	} else {
		b.log.Warn("telegram: balance for /help failed", "err", err)
	}
	b.replyText(ctx, m, helpText(lang, m.Chat.Type == models.ChatTypePrivate, b.svc.Models(), b.svc.Limits(), balp))
}

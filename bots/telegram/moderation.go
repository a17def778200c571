package telegram

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/go-telegram/bot"
	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/bots/chat"
	"github.com/imaginebot/imaginebot/core"
)

const adminTTL = 2 * time.Minute

// quotaCmd is a parsed /quota command.
type quotaCmd struct {
	op     string // self, help, show, set-daily, grant, revoke, reset, ban, unban, history, scope-daily
	n      int
	clear  bool   // "default" instead of a number (set daily, scope daily)
	target string // "@username", a numeric user id, or "" for the replied-to author
}

var errUsage = errors.New("usage")

// parseQuota reads the words after /quota:
//
//	(nothing) | help | show [who] | history [who] | reset [who] | ban [who] | unban [who]
//	grant N [who] | revoke N [who] | set daily N|default [who] | scope daily N|default
//
// who is @username or a numeric user id, and an @username may stand anywhere.
func parseQuota(args string) (quotaCmd, error) {
	words := strings.Fields(args)
	if len(words) == 0 {
		return quotaCmd{op: "self"}, nil
	}
	var c quotaCmd
	var rest []string
	for _, w := range words[1:] {
		if strings.HasPrefix(w, "@") {
			if c.target != "" || len(w) < 2 {
				return c, errUsage
			}
			c.target = w
			continue
		}
		rest = append(rest, w)
	}
	// who takes the last word when it is a user id.
	who := func(words []string) error {
		switch len(words) {
		case 0:
			return nil
		case 1:
			if c.target != "" {
				return errUsage
			}
			id, err := strconv.ParseInt(words[0], 10, 64)
			if err != nil || id <= 0 {
				return errUsage
			}
			c.target = words[0]
			return nil
		}
		return errUsage
	}
	number := func(w string) (int, error) {
		n, err := strconv.Atoi(w)
		if err != nil {
			return 0, errUsage
		}
		return n, nil
	}
	daily := func(w string) error {
		if strings.EqualFold(w, "default") {
			c.clear = true
			return nil
		}
		var err error
		c.n, err = number(w)
		return err
	}
	var err error
	switch sub := strings.ToLower(words[0]); sub {
	case "help":
		c.op = "help"
		if len(rest) > 0 || c.target != "" {
			err = errUsage
		}
	case "show", "history", "reset", "ban", "unban":
		c.op = sub
		err = who(rest)
	case "grant", "revoke":
		c.op = sub
		if len(rest) == 0 {
			return c, errUsage
		}
		if c.n, err = number(rest[0]); err == nil {
			err = who(rest[1:])
		}
	case "set":
		c.op = "set-daily"
		if len(rest) < 2 || !strings.EqualFold(rest[0], "daily") {
			return c, errUsage
		}
		if err = daily(rest[1]); err == nil {
			err = who(rest[2:])
		}
	case "scope":
		c.op = "scope-daily"
		if len(rest) != 2 || !strings.EqualFold(rest[0], "daily") || c.target != "" {
			return c, errUsage
		}
		err = daily(rest[1])
	default:
		err = errUsage
	}
	return c, err
}

func quotaUsage(lang core.Lang) string { return tr(lang).T("telegram.quota_usage") }

// quota handles /quota: the caller's own balance, or a moderator operation.
func (b *Bot) quota(ctx context.Context, m *models.Message, args string) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	lang := b.langOf(ctx, ScopeOf(m.Chat), m.From)
	scope := ScopeOf(m.Chat)
	c, err := parseQuota(args)
	if err != nil || c.op == "help" {
		b.replyText(ctx, m, quotaUsage(lang))
		return
	}
	me := coreUser(m.From)
	if c.op == "self" {
		bal, err := b.svc.Balance(ctx, core.AccountKey{Scope: scope, User: me.Key()})
		if err != nil {
			b.replyText(ctx, m, tr(lang).Error(err, syntax))
			return
		}
		b.replyText(ctx, m, tr(lang).Self(bal, time.Now()))
		return
	}
	// The message is the event: redelivered, to this instance or another
	// sharing the ledger, its change is made once.
	a := chat.Action{Name: c.op, Actor: core.Actor{User: me, Role: core.RoleUser, Event: messageEvent(m)}, Scope: scope, N: c.n}
	if !c.clear {
		a.Daily = &c.n
	}
	if c.op == chat.ScopeDaily {
		a.Actor.Role = b.role(ctx, m.Chat, m.From.ID)
	} else {
		who, name, msg := b.resolveTarget(ctx, m, c, lang)
		if msg != "" {
			b.replyText(ctx, m, msg)
			return
		}
		// Anyone may look at their own account; the rest needs the role.
		if who != m.From.ID || (c.op != chat.Show && c.op != chat.History) {
			a.Actor.Role = b.role(ctx, m.Chat, m.From.ID)
		}
		a.Target, a.Who = core.User{Platform: core.PlatformTelegram, ID: strconv.FormatInt(who, 10)}.Key(), name
		if c.op == chat.History {
			a.N = 10
		}
	}
	text, err := chat.Do(ctx, b.svc, a, tr(lang), b.svc.Limits().Quotas.Location)
	if core.ErrorCode(err) == core.CodeDuplicate {
		return // answered where it was first handled
	}
	if err != nil {
		text = tr(lang).Error(err, syntax)
	}
	b.replyText(ctx, m, text)
}

// resolveTarget finds whom a /quota command is about: the named user, else
// the author of the replied-to message, else (for show and history) the
// caller. msg, when set, tells the caller what is wrong.
func (b *Bot) resolveTarget(ctx context.Context, m *models.Message, c quotaCmd, lang core.Lang) (id int64, name, msg string) {
	switch {
	case strings.HasPrefix(c.target, "@"):
		u, ok := b.lookupUser(ctx, c.target)
		if !ok {
			return 0, "", tr(lang).T("telegram.unknown_user", "Name", fit(c.target, 64))
		}
		return u.id, u.name, ""
	case c.target != "":
		id, _ := strconv.ParseInt(c.target, 10, 64)
		name := b.userName(ctx, id)
		if name == "" {
			name = "id " + c.target
		} else {
			name += " (id " + c.target + ")"
		}
		return id, name, ""
	}
	if r := realReply(m); r != nil && r.From != nil && !r.From.IsBot {
		return r.From.ID, displayName(r.From), ""
	}
	if c.op == "show" || c.op == "history" {
		return m.From.ID, displayName(m.From), ""
	}
	return 0, "", tr(lang).T("telegram.who")
}

// role resolves what a user may do in a chat: owners everywhere, group
// administrators in their group (asked from Telegram, cached briefly).
func (b *Bot) role(ctx context.Context, chat models.Chat, user int64) core.Role {
	if b.owners[user] {
		return core.RoleOwner
	}
	if chat.Type != models.ChatTypeGroup && chat.Type != models.ChatTypeSupergroup {
		return core.RoleUser
	}
	key := [2]int64{chat.ID, user}
	if admin, ok := b.admins.Get(key); ok {
		return roleOf(admin)
	}
	var cm *models.ChatMember
	err := b.retry429(ctx, func(ctx context.Context) error {
		var err error
		cm, err = b.api.GetChatMember(ctx, &bot.GetChatMemberParams{ChatID: chat.ID, UserID: user})
		return err
	})
	if err != nil {
		b.log.Warn("telegram: getChatMember failed", "chat", chat.ID, "err", b.redact(err))
		return core.RoleUser
	}
	admin := cm.Type == models.ChatMemberTypeOwner || cm.Type == models.ChatMemberTypeAdministrator
	b.admins.Put(key, admin, adminTTL)
	return roleOf(admin)
}

func roleOf(admin bool) core.Role {
	if admin {
		return core.RoleModerator
	}
	return core.RoleUser
}

// audit handles /audit [N]: the scope's moderator actions; owners in a
// private chat see every scope.
func (b *Bot) audit(ctx context.Context, m *models.Message, args string) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	lang := b.langOf(ctx, ScopeOf(m.Chat), m.From)
	limit := 20
	if f := strings.Fields(args); len(f) == 1 {
		n, err := strconv.Atoi(f[0])
		if err != nil || n <= 0 {
			b.replyText(ctx, m, tr(lang).T("telegram.audit_usage"))
			return
		}
		limit = min(n, 100)
	} else if len(f) > 1 {
		b.replyText(ctx, m, tr(lang).T("telegram.audit_usage"))
		return
	}
	actor := core.Actor{User: coreUser(m.From), Role: b.role(ctx, m.Chat, m.From.ID)}
	// Owners in a private chat see every scope.
	all := m.Chat.Type == models.ChatTypePrivate && actor.Role == core.RoleOwner
	a := chat.Action{Name: chat.Audit, Actor: actor, Scope: ScopeOf(m.Chat), N: limit, AuditAll: all, NameOf: b.targetName}
	text, err := chat.Do(ctx, b.svc, a, tr(lang), b.svc.Limits().Quotas.Location)
	if err != nil {
		text = tr(lang).Error(err, syntax)
	}
	b.replyText(ctx, m, text)
}

// messageEvent names the event of a command message: its chat and id.
func messageEvent(m *models.Message) string {
	return "telegram:message:" + strconv.FormatInt(m.Chat.ID, 10) + ":" + strconv.Itoa(m.ID)
}

// targetName shows a user key as the name the bot knows, if any.
func (b *Bot) targetName(key string) string {
	if id, ok := strings.CutPrefix(key, string(core.PlatformTelegram)+":"); ok {
		if n, err := strconv.ParseInt(id, 10, 64); err == nil {
			if name := b.userName(context.Background(), n); name != "" {
				return name + " (" + id + ")"
			}
		}
	}
	return key
}

// The users the bot has seen: in memory (bounded), and in the ledger so
// that @handles and names survive a restart.

// remember notes u as seen; a new name or handle is written to the ledger.
func (b *Bot) remember(u *models.User) {
	if u == nil || u.IsBot {
		return
	}
	if !b.users.remember(u.ID, u.Username, displayName(u)) {
		return
	}
	b.inflight.Add(1)
	go func() {
		defer b.inflight.Done()
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		defer cancel()
		if err := b.svc.SeeUser(ctx, coreUser(u), u.Username); err != nil {
			b.log.Warn("telegram: could not record a user", "err", err)
		}
	}()
}

func (b *Bot) lookupUser(ctx context.Context, handle string) (seenUser, bool) {
	if u, ok := b.users.lookup(handle); ok {
		return u, true
	}
	key, name, ok, err := b.svc.FindUser(ctx, core.PlatformTelegram, strings.TrimPrefix(handle, "@"))
	if err != nil || !ok {
		return seenUser{}, false
	}
	id, err := strconv.ParseInt(strings.TrimPrefix(key, string(core.PlatformTelegram)+":"), 10, 64)
	return seenUser{id: id, name: name}, err == nil
}

func (b *Bot) userName(ctx context.Context, id int64) string {
	if name := b.users.name(id); name != "" {
		return name
	}
	name, err := b.svc.UserName(ctx, core.User{Platform: core.PlatformTelegram, ID: strconv.FormatInt(id, 10)}.Key())
	if err != nil {
		return ""
	}
	return name
}

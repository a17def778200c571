package telegram

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-telegram/bot"
	"github.com/go-telegram/bot/models"

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

func quotaUsage(lang core.Lang) string {
	return lang.Pick(`/quota — what you have left today

Moderators (group admins in their group, the bot's owners everywhere):
/quota show [who]
/quota grant N [who] — add credits (they never reset)
/quota revoke N [who]
/quota set daily N|default [who] — the user's daily allowance
/quota reset [who] — give back today's usage
/quota ban [who] · /quota unban [who]
/quota history [who] — recent images
/quota scope daily N|default — everyone's daily allowance in this chat
/audit [N] — recent moderator actions

who: reply to the person's message with the command, or write their @username or numeric user id.
Example: /quota grant 5 @alice`,
		`/quota — 查看今日剩余额度

管理员（群管理员管理本群，机器人所有者管理所有聊天）：
/quota show [用户]
/quota grant N [用户] — 增加额外额度（不会重置）
/quota revoke N [用户]
/quota set daily N|default [用户] — 设置该用户的每日额度
/quota reset [用户] — 清零今日用量
/quota ban [用户] · /quota unban [用户]
/quota history [用户] — 最近的图片
/quota scope daily N|default — 本聊天所有人的每日额度
/audit [N] — 最近的管理操作

用户：回复该用户的消息并发送命令，或写上其 @用户名 或数字 ID。
示例：/quota grant 5 @alice`)
}

// quota handles /quota: the caller's own balance, or a moderator operation.
func (b *Bot) quota(ctx context.Context, m *models.Message, args string) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	lang := core.LangFromCode(m.From.LanguageCode)
	scope := ScopeOf(m.Chat)
	c, err := parseQuota(args)
	if err != nil {
		b.replyText(ctx, m, quotaUsage(lang))
		return
	}
	me := coreUser(m.From)
	switch c.op {
	case "help":
		b.replyText(ctx, m, quotaUsage(lang))
		return
	case "self":
		bal, err := b.svc.Balance(ctx, core.AccountKey{Scope: scope, User: me.Key()})
		if err != nil {
			b.replyText(ctx, m, core.Message(err, lang))
			return
		}
		b.replyText(ctx, m, selfText(bal, lang))
		return
	case "scope-daily":
		actor := core.Actor{User: me, Role: b.role(ctx, m.Chat, m.From.ID)}
		var daily *int
		if !c.clear {
			daily = &c.n
		}
		eff, err := b.svc.SetScopeDaily(ctx, actor, scope, daily)
		if err != nil {
			b.replyText(ctx, m, core.Message(err, lang))
			return
		}
		b.replyText(ctx, m, lang.Pick(fmt.Sprintf("✅ Everyone's daily allowance in this chat is now %d (people with their own setting keep it).", eff),
			fmt.Sprintf("✅ 本聊天所有人的每日额度现为 %d（单独设置过的用户不变）。", eff)))
		return
	}

	who, name, msg := b.resolveTarget(m, c, lang)
	if msg != "" {
		b.replyText(ctx, m, msg)
		return
	}
	actor := core.Actor{User: me, Role: core.RoleUser}
	if who != m.From.ID || (c.op != "show" && c.op != "history") {
		actor.Role = b.role(ctx, m.Chat, m.From.ID)
	}
	k := core.AccountKey{Scope: scope, User: core.User{Platform: core.PlatformTelegram, ID: strconv.FormatInt(who, 10)}.Key()}

	if c.op == "history" {
		jobs, err := b.svc.History(ctx, actor, k, 10)
		if err != nil {
			b.replyText(ctx, m, core.Message(err, lang))
			return
		}
		b.replyText(ctx, m, historyText(jobs, name, lang, b.svc.Limits().Quotas.Location))
		return
	}

	var v core.AccountView
	var head string
	switch c.op {
	case "show":
		v, err = b.svc.Show(ctx, actor, k)
	case "grant":
		v, err = b.svc.Grant(ctx, actor, k, c.n)
		head = lang.Pick(fmt.Sprintf("✅ Granted %d credits to %s.", c.n, name), fmt.Sprintf("✅ 已给 %s 增加 %d 点额度。", name, c.n))
	case "revoke":
		v, err = b.svc.Revoke(ctx, actor, k, c.n)
		head = lang.Pick(fmt.Sprintf("✅ Took up to %d credits from %s.", c.n, name), fmt.Sprintf("✅ 已从 %s 扣除最多 %d 点额度。", name, c.n))
	case "set-daily":
		var daily *int
		if !c.clear {
			daily = &c.n
			head = lang.Pick(fmt.Sprintf("✅ Daily allowance of %s set to %d.", name, c.n), fmt.Sprintf("✅ 已将 %s 的每日额度设为 %d。", name, c.n))
		} else {
			head = lang.Pick(fmt.Sprintf("✅ %s is back on this chat's daily allowance.", name), fmt.Sprintf("✅ %s 已恢复使用本聊天的默认每日额度。", name))
		}
		v, err = b.svc.SetDaily(ctx, actor, k, daily)
	case "reset":
		v, err = b.svc.ResetToday(ctx, actor, k)
		head = lang.Pick(fmt.Sprintf("✅ Today's usage of %s was reset.", name), fmt.Sprintf("✅ 已清零 %s 今日的用量。", name))
	case "ban":
		v, err = b.svc.Ban(ctx, actor, k)
		head = lang.Pick(fmt.Sprintf("🚫 %s can no longer make images in this chat.", name), fmt.Sprintf("🚫 %s 已被禁止在本聊天生成图片。", name))
	case "unban":
		v, err = b.svc.Unban(ctx, actor, k)
		head = lang.Pick(fmt.Sprintf("✅ %s can make images again.", name), fmt.Sprintf("✅ %s 已可以重新生成图片。", name))
	}
	if err != nil {
		b.replyText(ctx, m, core.Message(err, lang))
		return
	}
	text := viewText(v, name, lang)
	if head != "" {
		text = head + "\n\n" + text
	}
	b.replyText(ctx, m, text)
}

// resolveTarget finds whom a /quota command is about: the named user, else
// the author of the replied-to message, else (for show and history) the
// caller. msg, when set, tells the caller what is wrong.
func (b *Bot) resolveTarget(m *models.Message, c quotaCmd, lang core.Lang) (id int64, name, msg string) {
	switch {
	case strings.HasPrefix(c.target, "@"):
		u, ok := b.users.lookup(c.target)
		if !ok {
			return 0, "", lang.Pick(
				fmt.Sprintf("I don't know %s yet: I only know people who have written in a chat I'm in. Reply to one of their messages with the command, or use their numeric user id.", fit(c.target, 64)),
				fmt.Sprintf("我还不认识 %s：我只认识在我所在的聊天里发过言的人。请回复其消息并发送命令，或使用其数字 ID。", fit(c.target, 64)))
		}
		return u.id, u.name, ""
	case c.target != "":
		id, _ := strconv.ParseInt(c.target, 10, 64)
		name := b.users.name(id)
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
	return 0, "", lang.Pick("Whom do you mean? Reply to their message with the command, or add their @username or numeric user id, e.g. /quota grant 5 @alice.",
		"请指定用户：回复其消息并发送命令，或加上其 @用户名 或数字 ID，例如 /quota grant 5 @alice。")
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
	lang := core.LangFromCode(m.From.LanguageCode)
	limit := 20
	if f := strings.Fields(args); len(f) == 1 {
		n, err := strconv.Atoi(f[0])
		if err != nil || n <= 0 {
			b.replyText(ctx, m, lang.Pick("Usage: /audit [N] — the last N moderator actions in this chat.", "用法：/audit [N] — 本聊天最近 N 条管理操作。"))
			return
		}
		limit = min(n, 100)
	} else if len(f) > 1 {
		b.replyText(ctx, m, lang.Pick("Usage: /audit [N] — the last N moderator actions in this chat.", "用法：/audit [N] — 本聊天最近 N 条管理操作。"))
		return
	}
	actor := core.Actor{User: coreUser(m.From), Role: b.role(ctx, m.Chat, m.From.ID)}
	scope := ScopeOf(m.Chat)
	all := m.Chat.Type == models.ChatTypePrivate && actor.Role == core.RoleOwner
	if all {
		scope = ""
	}
	entries, err := b.svc.AuditLog(ctx, actor, scope, limit)
	if err != nil {
		b.replyText(ctx, m, core.Message(err, lang))
		return
	}
	b.replyText(ctx, m, b.auditText(entries, all, lang, b.svc.Limits().Quotas.Location))
}

// selfText is a user's own /quota.
func selfText(bal core.Balance, lang core.Lang) string {
	if bal.Banned {
		return lang.Pick("🚫 A moderator has blocked you from making images in this chat.", "🚫 你已被管理员禁止在本聊天生成图片。")
	}
	s := lang.Pick(
		fmt.Sprintf("📊 Your quota in this chat\nLeft today: %d of %d\n", bal.DailyLeft(), bal.Daily),
		fmt.Sprintf("📊 你在本聊天的额度\n今日剩余：%d / %d\n", bal.DailyLeft(), bal.Daily))
	if bal.Credits > 0 {
		s += lang.Pick(fmt.Sprintf("Credits: %d (never reset)\n", bal.Credits), fmt.Sprintf("额外额度：%d（不会重置）\n", bal.Credits))
	}
	return s + lang.Pick("Resets at "+core.FormatReset(bal.ResetAt), "重置时间："+core.FormatReset(bal.ResetAt))
}

// viewText is an account as a moderator sees it.
func viewText(v core.AccountView, name string, lang core.Lang) string {
	bal := v.Balance
	src := map[string][2]string{
		"user":    {"set for this user", "单独设置"},
		"scope":   {"this chat's setting", "本聊天设置"},
		"config":  {"configured for this chat", "配置文件设置"},
		"default": {"default", "默认"},
	}[v.DailySource]
	if src[0] == "" {
		src = [2]string{v.DailySource, v.DailySource}
	}
	yes := lang.Pick("no", "否")
	if v.Banned {
		yes = lang.Pick("yes", "是")
	}
	return lang.Pick(
		fmt.Sprintf("👤 %s\nDaily allowance: %d (%s)\nUsed today: %d\nCredits: %d\nLeft today: %d\nBanned: %s\nResets at %s",
			name, bal.Daily, src[0], bal.Used, bal.Credits, bal.Remaining(), yes, core.FormatReset(bal.ResetAt)),
		fmt.Sprintf("👤 %s\n每日额度：%d（%s）\n今日已用：%d\n额外额度：%d\n今日剩余：%d\n已封禁：%s\n重置时间：%s",
			name, bal.Daily, src[1], bal.Used, bal.Credits, bal.Remaining(), yes, core.FormatReset(bal.ResetAt)))
}

func historyText(jobs []core.Job, name string, lang core.Lang, loc *time.Location) string {
	if len(jobs) == 0 {
		return lang.Pick(fmt.Sprintf("%s has made no images here yet.", name), fmt.Sprintf("%s 还没有在这里生成过图片。", name))
	}
	var b strings.Builder
	b.WriteString(lang.Pick("🕘 Recent images of "+name+":\n", "🕘 "+name+" 最近的图片：\n"))
	for _, j := range jobs {
		state := "⏳"
		switch j.State {
		case core.JobCommitted:
			state = "✅"
		case core.JobRefunded:
			state = "↩️ " + string(j.Outcome)
		}
		fmt.Fprintf(&b, "• %s · %s · %s · %s\n", localTime(j.Created, loc), j.Model, state, fit(j.Prompt, 60))
	}
	return strings.TrimRight(b.String(), "\n")
}

func (b *Bot) auditText(entries []core.AuditEntry, all bool, lang core.Lang, loc *time.Location) string {
	if len(entries) == 0 {
		return lang.Pick("No moderator actions yet.", "还没有管理操作。")
	}
	var sb strings.Builder
	sb.WriteString(lang.Pick("📜 Moderator actions, newest first:\n", "📜 管理操作（最新在前）：\n"))
	for _, e := range entries {
		actor := e.ActorName
		if actor == "" {
			actor = e.Actor
		}
		line := fmt.Sprintf("• %s · %s (%s) · %s", localTime(e.Time, loc), actor, e.Role, e.Action)
		if e.Target != "" {
			line += " · " + b.targetName(e.Target)
		}
		if all {
			line += " · " + e.Scope
		}
		if d := diffFields(e.Before, e.After); d != "" {
			line += " · " + d
		}
		sb.WriteString(fit(line, 400) + "\n")
	}
	return strings.TrimRight(sb.String(), "\n")
}

// targetName shows a user key as the name the bot knows, if any.
func (b *Bot) targetName(key string) string {
	if id, ok := strings.CutPrefix(key, string(core.PlatformTelegram)+":"); ok {
		if n, err := strconv.ParseInt(id, 10, 64); err == nil {
			if name := b.users.name(n); name != "" {
				return name + " (" + id + ")"
			}
		}
	}
	return key
}

// diffFields shows what an audit entry changed: "credits 0→5".
func diffFields(before, after string) string {
	bf := map[string]string{}
	for _, f := range strings.Fields(before) {
		if k, v, ok := strings.Cut(f, "="); ok {
			bf[k] = v
		}
	}
	var out []string
	for _, f := range strings.Fields(after) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		if old, had := bf[k]; !had || old != v {
			out = append(out, k+" "+old+"→"+v)
		}
	}
	return strings.Join(out, ", ")
}

func localTime(t time.Time, loc *time.Location) string {
	if loc == nil {
		loc = time.UTC
	}
	return t.In(loc).Format("01-02 15:04")
}

package telegram

import (
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-telegram/bot/models"
	"golang.org/x/time/rate"

	"github.com/imaginebot/imaginebot/core"
)

// utf16Len is a text's length as Telegram counts it: in UTF-16 code units,
// so an emoji outside the BMP counts twice.
func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		n += runeUnits(r)
	}
	return n
}

func runeUnits(r rune) int {
	if r >= 0x10000 {
		return 2
	}
	return 1
}

// fit cuts s by runes so that it takes at most limit UTF-16 code units,
// ending with "…" when cut. It never splits a UTF-8 sequence.
func fit(s string, limit int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if utf16Len(s) <= limit {
		return s
	}
	if limit <= 0 {
		return ""
	}
	n := 0
	for i, r := range s {
		if n+runeUnits(r) > limit-1 { // room for "…" (one unit)
			return s[:i] + "…"
		}
		n += runeUnits(r)
	}
	return s
}

// caption is a result's caption: the prompt, then the model and options,
// then what is left of the quota. The prompt is cut so the whole fits
// Telegram's 1024 units.
func caption(prompt string, model core.Model, opts core.Options, bal core.Balance, lang core.Lang) string {
	meta := fit(metaLine(model, opts, lang)+"\n"+quotaLine(bal, lang), 500)
	return fit(strings.TrimSpace(prompt), maxCaptionLen-utf16Len(meta)-2) + "\n\n" + meta
}

// metaLine names the model and the options used.
func metaLine(model core.Model, opts core.Options, lang core.Lang) string {
	parts := []string{"🎨 " + fit(model.DisplayName(), 64)}
	if opts.Aspect != "" {
		parts = append(parts, opts.Aspect)
	}
	if opts.Negative != "" {
		parts = append(parts, lang.Pick("no: ", "不要：")+fit(opts.Negative, 200))
	}
	return strings.Join(parts, " · ")
}

// quotaLine is "Quota left today: N · resets HH:MM (zone)".
func quotaLine(bal core.Balance, lang core.Lang) string {
	reset := core.FormatReset(bal.ResetAt)
	if bal.Credits > 0 {
		return lang.Pick(
			fmt.Sprintf("Quota left today: %d (+%d credits) · resets %s", bal.DailyLeft(), bal.Credits, reset),
			fmt.Sprintf("今日剩余额度：%d（另有 %d 点）· %s 重置", bal.DailyLeft(), bal.Credits, reset))
	}
	return lang.Pick(
		fmt.Sprintf("Quota left today: %d · resets %s", bal.DailyLeft(), reset),
		fmt.Sprintf("今日剩余额度：%d · %s 重置", bal.DailyLeft(), reset))
}

// statusText is the job's status message.
func statusText(p core.Progress, lang core.Lang) string {
	if p.Stage == core.StageQueued {
		return lang.Pick(fmt.Sprintf("⏳ Queued #%d", max(p.Position, 1)), fmt.Sprintf("⏳ 排队中，第 %d 位", max(p.Position, 1)))
	}
	var s string
	if p.Percent >= 0 {
		s = lang.Pick("🎨 Generating… ", "🎨 生成中… ") + fmt.Sprintf("%d%%", min(p.Percent, 100))
	} else {
		secs := int(p.Elapsed / time.Second)
		s = lang.Pick(fmt.Sprintf("🎨 Generating… %d s", secs), fmt.Sprintf("🎨 生成中… %d 秒", secs))
	}
	if t := strings.TrimSpace(p.Text); t != "" {
		s += "\n" + fit(t, 300)
	}
	return s
}

func rerollLabel(lang core.Lang) string { return lang.Pick("🔄 Reroll", "🔄 重新生成") }

// commandList is the command menu (setMyCommands) in lang.
func commandList(lang core.Lang) []models.BotCommand {
	return []models.BotCommand{
		{Command: "imagine", Description: lang.Pick("Make an image: /imagine a fox in the snow", "生成图片：/imagine 雪地里的狐狸")},
		{Command: "quota", Description: lang.Pick("What you have left today", "查看今日剩余额度")},
		{Command: "help", Description: lang.Pick("How to use the bot: models, options, limits", "使用说明：模型、选项和限制")},
	}
}

func usageImagine(lang core.Lang, private bool) string {
	if private {
		return lang.Pick("Describe the picture you want, e.g.\n/imagine a fox in the snow, watercolor\n(in this chat you can also just send the description). See /help for options.",
			"请描述你想要的图片，例如：\n/imagine 雪地里的狐狸，水彩风格\n（在私聊中也可以直接发送描述）。选项见 /help。")
	}
	return lang.Pick("Describe the picture you want, e.g.\n/imagine a fox in the snow, watercolor\nSee /help for options.",
		"请描述你想要的图片，例如：\n/imagine 雪地里的狐狸，水彩风格\n选项见 /help。")
}

// helpText explains the bot: what it does, the models with their cost, the
// options, examples and the limits.
func helpText(lang core.Lang, private bool, ms []core.Model, lim core.Config, bal *core.Balance) string {
	var b strings.Builder
	b.WriteString(lang.Pick("🎨 I turn descriptions into images.\n\n", "🎨 我可以把文字描述变成图片。\n\n"))
	if private {
		b.WriteString(lang.Pick("Just send me a description, or use /imagine <description>.\n\n",
			"直接发送描述即可，也可以用 /imagine <描述>。\n\n"))
	} else {
		b.WriteString(lang.Pick("In this group use /imagine <description>.\n\n", "在群里请使用 /imagine <描述>。\n\n"))
	}
	b.WriteString(lang.Pick("Models:\n", "模型：\n"))
	for i, m := range ms {
		cost := max(m.Cost, 1)
		fmt.Fprintf(&b, "• %s (--model %s) — %s", fit(m.DisplayName(), 64), m.Name,
			lang.Pick(fmt.Sprintf("%d per image", cost), fmt.Sprintf("每张 %d 点", cost)))
		if i == 0 {
			b.WriteString(lang.Pick(" [default]", "【默认】"))
		}
		b.WriteString("\n")
	}
	b.WriteString(lang.Pick(
		"\nOptions (anywhere in the text):\n--model NAME  pick a model\n--ar W:H  aspect ratio, e.g. 16:9\n--no TEXT  things to leave out\n",
		"\n选项（可写在描述中任意位置）：\n--model 名称  选择模型\n--ar 宽:高  画面比例，例如 16:9\n--no 内容  不希望出现的内容\n"))
	b.WriteString(lang.Pick("\nExamples:\n", "\n示例：\n"))
	second := ""
	if len(ms) > 1 {
		second = " --model " + ms[1].Name
	}
	b.WriteString(lang.Pick(
		"/imagine a fox in the snow, watercolor\n/imagine a neon city at night"+second+" --ar 16:9 --no people\n",
		"/imagine 雪地里的狐狸，水彩风格\n/imagine 夜晚的霓虹城市"+second+" --ar 16:9 --no 人物\n"))

	b.WriteString(lang.Pick("\nLimits:\n", "\n限制：\n"))
	if bal != nil {
		fmt.Fprint(&b, lang.Pick(
			fmt.Sprintf("• %d a day here (resets at %s); you have %d left today", bal.Daily, core.FormatReset(bal.ResetAt), bal.DailyLeft()),
			fmt.Sprintf("• 本聊天每天 %d 点（%s 重置）；你今天还剩 %d 点", bal.Daily, core.FormatReset(bal.ResetAt), bal.DailyLeft())))
		if bal.Credits > 0 {
			fmt.Fprint(&b, lang.Pick(fmt.Sprintf(", plus %d credits", bal.Credits), fmt.Sprintf("，另有 %d 点额外额度", bal.Credits)))
		}
		b.WriteString("\n")
	}
	if lim.MaxPromptRunes > 0 {
		fmt.Fprint(&b, lang.Pick(fmt.Sprintf("• descriptions up to %d characters\n", lim.MaxPromptRunes),
			fmt.Sprintf("• 描述最多 %d 个字符\n", lim.MaxPromptRunes)))
	}
	if lim.Rate > 0 && lim.Rate != rate.Inf {
		every := time.Duration(math.Round(float64(time.Second) / float64(lim.Rate)))
		fmt.Fprint(&b, lang.Pick(fmt.Sprintf("• one image every %s (up to %d in a row)\n", roundDuration(every), max(lim.Burst, 1)),
			fmt.Sprintf("• 每 %s 一张（最多连续 %d 张）\n", roundDuration(every), max(lim.Burst, 1))))
	}
	if lim.PerUserJobs > 0 {
		fmt.Fprint(&b, lang.Pick(fmt.Sprintf("• %d of your images in progress at a time\n", lim.PerUserJobs),
			fmt.Sprintf("• 每人同时最多 %d 张在生成\n", lim.PerUserJobs)))
	}
	b.WriteString(lang.Pick(
		"\n/quota shows what you have left. Failed images are refunded. Press 🔄 Reroll under a result to try the same description again.\nModerators: /quota help",
		"\n/quota 查看剩余额度。生成失败会自动退回额度。点击结果下方的 🔄 重新生成 可用相同描述再生成一次。\n管理员：/quota help"))
	return b.String()
}

func roundDuration(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d >= time.Second:
		return d.Round(time.Second).String()
	}
	return d.String()
}

// displayName is how a Telegram user appears in views: @username, else the
// first name.
func displayName(u *models.User) string {
	if u == nil {
		return ""
	}
	if u.Username != "" {
		return "@" + u.Username
	}
	name := strings.TrimSpace(u.FirstName)
	if name == "" || !utf8.ValidString(name) {
		return fmt.Sprint(u.ID)
	}
	return fit(name, 64)
}

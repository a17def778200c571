package core

import (
	"fmt"
	"math"
	"time"
)

// Message renders err for a chat user in lang: what happened and what to do.
// It never includes the operator detail (Error.Err).
func Message(err error, lang Lang) string {
	if err == nil {
		return ""
	}
	e := AsError(err)
	detail := ""
	if e.Detail != "" {
		detail = "\n\n" + e.Detail
	}
	switch e.Code {
	case CodeInvalidPrompt:
		return lang.Pick("Please describe the picture you want, e.g. /imagine a fox in the snow.", "请描述你想要的图片，例如 /imagine 雪地里的狐狸。") + detail
	case CodePromptTooLong:
		return lang.Pick(fmt.Sprintf("Your prompt is too long: keep it under %d characters and try again.", e.Limit),
			fmt.Sprintf("提示词太长，请控制在 %d 个字符以内后重试。", e.Limit))
	case CodePromptControl:
		return lang.Pick("Your prompt contains invisible control characters. Please retype it and try again.",
			"提示词中含有不可见的控制字符，请重新输入后再试。")
	case CodeUnknownModel:
		return lang.Pick("I don't know that model.", "没有这个模型。") + detail
	case CodeInvalidOption:
		return lang.Pick("One of the options is not valid.", "有一个选项无效。") + detail
	case CodeBanned:
		return lang.Pick("You can't make images here: a moderator has blocked you. Ask a moderator if you think this is a mistake.",
			"你已被管理员禁止在这里生成图片。如有误会，请联系管理员。")
	case CodeRateLimited:
		return lang.Pick(fmt.Sprintf("You're going too fast. Try again in %s.", seconds(e.RetryAfter, lang)),
			fmt.Sprintf("操作太频繁，请在 %s 后再试。", seconds(e.RetryAfter, lang)))
	case CodeTooManyJobs:
		return lang.Pick("You already have images in progress. Wait for them to finish, then try again.",
			"你已有图片正在生成，请等它们完成后再试。")
	case CodeQueueFull:
		return lang.Pick(fmt.Sprintf("The bot is busy right now. Try again in %s; nothing was charged.", seconds(orDefault(e.RetryAfter, time.Minute), lang)),
			fmt.Sprintf("机器人现在太忙，请在 %s 后再试，本次未扣额度。", seconds(orDefault(e.RetryAfter, time.Minute), lang)))
	case CodeQuotaExceeded:
		return lang.Pick(fmt.Sprintf("You've used all your images for today. Your quota resets at %s; a moderator can also grant you credits.", clock(e.ResetAt)),
			fmt.Sprintf("今天的额度已用完，将于 %s 重置；也可以请管理员给你增加额度。", clock(e.ResetAt)))
	case CodeDuplicate:
		return lang.Pick("This request was already handled.", "这个请求已经处理过了。")
	case CodeShuttingDown:
		return lang.Pick("The bot is restarting. Please try again in a minute; nothing was charged.",
			"机器人正在重启，请一分钟后再试，本次未扣额度。")
	case CodeUpstreamAuth:
		return lang.Pick("The image service rejected the bot's credentials. The bot's operator needs to fix its configuration; your quota was refunded.",
			"图片服务拒绝了机器人的密钥，需要机器人管理者修正配置；你的额度已退回。")
	case CodeUpstreamBalance:
		return lang.Pick("The bot's image service account has run out of credit. Please tell the bot's operator; your quota was refunded.",
			"机器人的图片服务账户余额不足，请告知机器人管理者；你的额度已退回。")
	case CodeModelUnavailable:
		return lang.Pick("That model is not available right now. Try another model (see /help) or try again later; your quota was refunded.",
			"该模型暂时不可用，请换一个模型（见 /help）或稍后再试；你的额度已退回。")
	case CodeOverloaded:
		return lang.Pick(fmt.Sprintf("The image service is overloaded. Try again in %s; your quota was refunded.", seconds(orDefault(e.RetryAfter, 30*time.Second), lang)),
			fmt.Sprintf("图片服务负载已满，请在 %s 后再试；你的额度已退回。", seconds(orDefault(e.RetryAfter, 30*time.Second), lang)))
	case CodeUpstreamFailed:
		return lang.Pick("The image service failed to make your picture. Try again in a minute; your quota was refunded.",
			"图片服务生成失败，请一分钟后再试；你的额度已退回。")
	case CodeBadResponse:
		return lang.Pick("The image service sent back something I couldn't read. Try again in a minute; your quota was refunded.",
			"图片服务返回了无法识别的内容，请一分钟后再试；你的额度已退回。")
	case CodeRefused:
		return lang.Pick("The image service declined this prompt. Try rewording it; your quota was refunded.",
			"图片服务拒绝了这个提示词，请换个说法再试；你的额度已退回。") + detail
	case CodeLostInRelay:
		return lang.Pick("The image was lost on its way from the image service (the reply came back empty). Try again; your quota was refunded.",
			"图片在从图片服务传回的途中丢失了（返回内容为空），请重试；你的额度已退回。")
	case CodeTimeout:
		return lang.Pick("The image took too long to make. Try again later or with a faster model; your quota was refunded.",
			"生成超时，请稍后再试或换一个更快的模型；你的额度已退回。")
	case CodeImageRejected:
		return lang.Pick("The image service returned a picture I can't safely download (too large, not an image, or at a blocked address). Try again; your quota was refunded.",
			"图片服务返回的图片无法安全下载（过大、不是图片或地址被禁止），请重试；你的额度已退回。")
	case CodeDeliveryFailed:
		return lang.Pick("Your image was made but I couldn't send it here. Check that I may send photos in this chat, then try again; your quota was refunded.",
			"图片已生成但无法发送到这里。请确认机器人有发送图片的权限后重试；你的额度已退回。")
	case CodeInterrupted:
		return lang.Pick("The bot stopped while making your image. Please send your prompt again; your quota was refunded.",
			"机器人在生成图片时中断了，请重新发送提示词；你的额度已退回。")
	case CodeCancelled:
		return lang.Pick("Cancelled. Your quota was refunded.", "已取消，额度已退回。")
	case CodeDeliveryCut:
		return lang.Pick("The bot restarted while sending your picture, so it may have arrived just above. Either way it's free: your quota was refunded, no need to ask again.",
			"机器人在发送图片时重启了，图片可能已经在上方送达。无论如何本次免费：额度已退回，无需重新发送。")
	case CodeForbidden:
		return lang.Pick("Only this group's moderators (its administrators) and the bot's owners can do that.",
			"只有本群的管理员和机器人所有者可以这样做。") + detail
	case CodeInvalidArgument:
		return lang.Pick("That command is not valid.", "命令无效。") + detail
	case CodeNotFound:
		return lang.Pick("Nothing found.", "没有找到。") + detail
	case CodeConflict:
		return lang.Pick("That can't be done in the current state.", "当前状态下无法这样做。") + detail
	default:
		return lang.Pick("Something went wrong on my side. Please try again later; if you were charged, your quota was refunded.",
			"机器人内部出错，请稍后再试；如已扣额度，已经退回。")
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// seconds renders a wait, rounded up to whole seconds (minutes past 90 s).
func seconds(d time.Duration, lang Lang) string {
	s := int(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	if s > 90 {
		m := (s + 59) / 60
		return lang.Pick(fmt.Sprintf("%d min", m), fmt.Sprintf("%d 分钟", m))
	}
	return lang.Pick(fmt.Sprintf("%d s", s), fmt.Sprintf("%d 秒", s))
}

// clock renders a reset time with its zone, e.g. "00:00 (Asia/Shanghai)".
func clock(t time.Time) string {
	if t.IsZero() {
		return "00:00"
	}
	return t.Format("15:04") + " (" + t.Location().String() + ")"
}

// FormatReset renders a quota reset time for captions and /quota.
func FormatReset(t time.Time) string { return clock(t) }

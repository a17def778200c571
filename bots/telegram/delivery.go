package telegram

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-telegram/bot"
	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/bots/chat"
	"github.com/imaginebot/imaginebot/bots/pace"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/fetch"
)

// buttonKind is what a button does. Its callback data is plain+<job key>,
// or hashed+<token> for keys too long for Telegram's 64 bytes (the token
// maps back in memory, shared by every kind).
type buttonKind struct{ plain, hashed string }

var (
	rerollButton = buttonKind{plain: "rr:", hashed: "rh:"}
	cancelButton = buttonKind{plain: "cx:", hashed: "ch:"}
	taskButton   = buttonKind{plain: "mj:", hashed: "mh:"} // a Midjourney button: <index>#<job key>
)

// of reports whether data belongs to a button of this kind.
func (k buttonKind) of(data string) bool {
	return strings.HasPrefix(data, k.plain) || strings.HasPrefix(data, k.hashed)
}

// keyboard is an inline keyboard of callback buttons. The library's button
// type always sends an empty copy_text object; this sends only what is set.
type keyboard struct {
	InlineKeyboard [][]callbackButton `json:"inline_keyboard"`
}

type callbackButton struct {
	Text         string `json:"text"`
	CallbackData string `json:"callback_data"`
}

// noKeyboard removes a message's buttons when it is edited.
var noKeyboard = &keyboard{InlineKeyboard: [][]callbackButton{}}

// buttonData is the callback data of a job's button of kind k (≤ 64 bytes).
func (b *Bot) buttonData(k buttonKind, key string) string {
	if data := k.plain + key; len(data) <= maxCallbackLen {
		return data
	}
	sum := sha256.Sum256([]byte(key))
	tok := base64.RawURLEncoding.EncodeToString(sum[:15])
	b.buttonKeys.Put(tok, key, 0)
	return k.hashed + tok
}

// buttonKey maps callback data of kind k back to a job key.
func (b *Bot) buttonKey(k buttonKind, data string) (string, bool) {
	if key, ok := strings.CutPrefix(data, k.plain); ok && key != "" {
		return key, true
	}
	if tok, ok := strings.CutPrefix(data, k.hashed); ok {
		return b.buttonKeys.Get(tok)
	}
	return "", false
}

// jobKeyboard is one button of kind k for the job key.
func (b *Bot) jobKeyboard(k buttonKind, key, text string) *keyboard {
	return &keyboard{InlineKeyboard: [][]callbackButton{{{Text: text, CallbackData: b.buttonData(k, key)}}}}
}

// taskRows are a Midjourney result's own buttons (U1–U4, V1–V4, …); each
// carries the button's index and the job key, which keeps the task.
func (b *Bot) taskRows(key string, buttons []core.TaskButton) [][]callbackButton {
	var rows [][]callbackButton
	var row []callbackButton
	for i, tb := range buttons[:min(len(buttons), chat.TaskButtonsMax)] {
		row = append(row, callbackButton{Text: chat.ButtonLabel(tb), CallbackData: b.buttonData(taskButton, strconv.Itoa(i)+"#"+key)})
		if len(row) == chat.TaskButtonsPerRow {
			rows, row = append(rows, row), nil
		}
	}
	if row != nil {
		rows = append(rows, row)
	}
	return rows
}

func replyParams(to target) *models.ReplyParameters {
	if to.msg == 0 {
		return nil
	}
	// The user may have deleted their message meanwhile: send anyway.
	return &models.ReplyParameters{MessageID: to.msg, AllowSendingWithoutReply: true}
}

func noPreview() *models.LinkPreviewOptions {
	t := true
	return &models.LinkPreviewOptions{IsDisabled: &t}
}

// sendText sends text (no parse mode, cut to Telegram's limit) as a reply,
// within the budget for class.
func (b *Bot) sendText(ctx context.Context, to target, class pace.Class, text string, markup any) (*models.Message, error) {
	var m *models.Message
	err := b.send(ctx, to, class, 1, func(ctx context.Context) error {
		var err error
		m, err = b.api.SendMessage(ctx, &bot.SendMessageParams{ChatID: to.chat, MessageThreadID: to.thread,
			Text: fit(text, maxMessageLen), ReplyParameters: replyParams(to), LinkPreviewOptions: noPreview(), ReplyMarkup: markup,
			AllowPaidBroadcast: b.paid})
		return err
	})
	return m, err
}

// deliver sends a finished job's images as a reply. It returns nil only
// when the user got them (or a link to them).
func (b *Bot) deliver(ctx context.Context, to target, lang core.Lang, d core.Delivery) error {
	kb := b.jobKeyboard(rerollButton, d.Job.Key, tr(lang).T("button.reroll"))
	if len(d.Images) > 0 {
		kb.InlineKeyboard = append(b.taskRows(d.Job.Key, d.Images[0].Buttons), kb.InlineKeyboard...)
	}
	switch len(d.Images) {
	case 0:
		return &core.Error{Code: core.CodeDeliveryFailed, Err: errors.New("telegram: nothing to deliver")}
	case 1:
		return b.sendImage(ctx, to, d.Images[0], withNote(caption(d.Prompt, d.Model, d.Options, d.Balance, lang, asker(to, d)), d.Images[0].Note, lang), kb)
	}
	return b.sendAlbum(ctx, to, lang, d, kb)
}

// sendImage uploads one image as a photo, as a document when it is too big
// for a photo (or Telegram refuses it as one), or sends its link.
func (b *Bot) sendImage(ctx context.Context, to target, img core.Image, capt string, kb *keyboard) error {
	size := int64(len(img.Data))
	name := "image" + img.Ext()
	var markup any
	if kb != nil {
		markup = kb
	}
	var err error
	tryDocument := size <= b.cfg.MaxDocumentBytes
	if size <= b.cfg.MaxPhotoBytes && img.MIME != "image/gif" { // a GIF photo loses its animation
		err = b.send(ctx, to, pace.Result, 1, func(ctx context.Context) error {
			_, err := b.api.SendPhoto(ctx, &bot.SendPhotoParams{ChatID: to.chat, MessageThreadID: to.thread,
				Photo:   &models.InputFileUpload{Filename: name, Data: bytes.NewReader(img.Data)}, // a new reader per attempt
				Caption: capt, ReplyParameters: replyParams(to), ReplyMarkup: markup, AllowPaidBroadcast: b.paid})
			return err
		})
		if err == nil {
			return nil
		}
		b.log.Warn("telegram: photo upload failed", "job", to.job, "chat", to.chat, "bytes", size, "err", b.redact(err))
		if retryAfter(err) > 0 {
			// Still rate limited after the retries: another form would be
			// refused just the same, and a link hands out the gateway's URL.
			return &core.Error{Code: core.CodeDeliveryFailed, Err: fmt.Errorf("telegram: deliver: %s", b.redact(err))}
		}
		tryDocument = tryDocument && photoRejected(err)
	}
	if tryDocument {
		err = b.send(ctx, to, pace.Result, 1, func(ctx context.Context) error {
			_, err := b.api.SendDocument(ctx, &bot.SendDocumentParams{ChatID: to.chat, MessageThreadID: to.thread,
				Document: &models.InputFileUpload{Filename: name, Data: bytes.NewReader(img.Data)},
				Caption:  capt, ReplyParameters: replyParams(to), ReplyMarkup: markup, AllowPaidBroadcast: b.paid})
			return err
		})
		if err == nil {
			b.metrics.Fallback("document")
			return nil
		}
		b.log.Warn("telegram: document upload failed", "job", to.job, "chat", to.chat, "bytes", size, "err", b.redact(err))
		if retryAfter(err) > 0 {
			return &core.Error{Code: core.CodeDeliveryFailed, Err: fmt.Errorf("telegram: deliver: %s", b.redact(err))}
		}
	}
	if err == nil {
		err = fmt.Errorf("image of %d bytes is over the %d-byte document limit", size, b.cfg.MaxDocumentBytes)
	}
	return b.sendLink(ctx, to, img, capt, markup, err)
}

// sendLink sends the image's address instead of the image. Images that came
// as data URIs have none, and an address on the operator's network is no
// use to users and must not leak: then the delivery failed (core refunds).
func (b *Bot) sendLink(ctx context.Context, to target, img core.Image, capt string, markup any, cause error) error {
	fail := func(err error) error {
		return &core.Error{Code: core.CodeDeliveryFailed, Err: fmt.Errorf("telegram: deliver: %s", b.redact(err))}
	}
	link := img.Source
	if link == "" || utf16Len(link) > maxMessageLen-200 {
		return fail(cause)
	}
	if !fetch.Shareable(link, b.cfg.PrivateHosts) {
		return fail(fmt.Errorf("%s; the image's link is not public", b.redact(cause)))
	}
	text := fit(capt, maxMessageLen-utf16Len(link)-4) + "\n\n🔗 " + link
	err := b.send(ctx, to, pace.Result, 1, func(ctx context.Context) error {
		_, err := b.api.SendMessage(ctx, &bot.SendMessageParams{ChatID: to.chat, MessageThreadID: to.thread,
			Text: text, ReplyParameters: replyParams(to), ReplyMarkup: markup, AllowPaidBroadcast: b.paid})
		return err
	})
	if err != nil {
		return fail(fmt.Errorf("%s; then the link: %s", b.redact(cause), b.redact(err)))
	}
	b.metrics.Fallback("link")
	return nil
}

// photoRejected reports whether Telegram refused an upload as a photo (size,
// dimensions, format) — worth retrying as a document.
func photoRejected(err error) bool {
	s := strings.ToLower(err.Error())
	for _, frag := range []string{"photo_", "image_process_failed", "dimension", "too big", "too large", "413", "wrong type of the web page content", "failed to get http url content"} {
		if strings.Contains(s, frag) {
			return true
		}
	}
	return false
}

// sendAlbum sends several images: an album with the caption on the first,
// then a short message with the quota and the reroll button (albums cannot
// carry buttons). Images an album cannot hold go one by one.
func (b *Bot) sendAlbum(ctx context.Context, to target, lang core.Lang, d core.Delivery, kb *keyboard) error {
	imgs := d.Images
	if len(imgs) > maxMediaGroup {
		imgs = imgs[:maxMediaGroup]
	}
	first := fit(strings.TrimSpace(d.Prompt), maxCaptionLen-300) + "\n\n" + fit(tr(lang).MetaBy(d.Model, d.Options, asker(to, d)), 290)
	album := true
	for _, img := range imgs {
		if int64(len(img.Data)) > b.cfg.MaxPhotoBytes || img.MIME == "image/gif" {
			album = false
		}
	}
	delivered := 0
	var lastErr error
	if album {
		err := b.send(ctx, to, pace.Result, len(imgs), func(ctx context.Context) error {
			media := make([]models.InputMedia, len(imgs))
			for i, img := range imgs {
				p := &models.InputMediaPhoto{Media: "attach://img" + strconv.Itoa(i), MediaAttachment: bytes.NewReader(img.Data)}
				if i == 0 {
					p.Caption = first
				}
				media[i] = p
			}
			_, err := b.api.SendMediaGroup(ctx, &bot.SendMediaGroupParams{ChatID: to.chat, MessageThreadID: to.thread,
				Media: media, ReplyParameters: replyParams(to), AllowPaidBroadcast: b.paid})
			return err
		})
		if err == nil {
			delivered = len(imgs)
		} else {
			lastErr = err
			b.log.Warn("telegram: album upload failed; sending one by one", "job", to.job, "chat", to.chat, "err", b.redact(err))
		}
	}
	if delivered == 0 {
		for i, img := range imgs {
			c := ""
			if i == 0 {
				c = first
			}
			if err := b.sendImage(ctx, to, img, c, nil); err != nil {
				lastErr = err
				continue
			}
			delivered++
		}
	}
	if delivered == 0 {
		if lastErr == nil {
			lastErr = errors.New("no image sent")
		}
		var ce *core.Error
		if errors.As(lastErr, &ce) {
			return ce
		}
		return &core.Error{Code: core.CodeDeliveryFailed, Err: fmt.Errorf("telegram: deliver: %s", b.redact(lastErr))}
	}
	if _, err := b.sendText(ctx, to, pace.Result, tr(lang).QuotaLine(d.Balance), kb); err != nil {
		// The images arrived; only the button is missing.
		b.log.Warn("telegram: reroll message failed", "job", to.job, "chat", to.chat, "err", b.redact(err))
	}
	return nil
}

package telegram

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/go-telegram/bot"
	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/bots/chat"
	"github.com/imaginebot/imaginebot/core"
)

// inputPhoto is the picture a prompt starts from: the photo it is the
// caption of, else the photo it replies to; nil when there is none.
func inputPhoto(m *models.Message) *models.PhotoSize {
	for _, msg := range []*models.Message{m, realReply(m)} {
		if msg != nil && len(msg.Photo) > 0 {
			return &msg.Photo[len(msg.Photo)-1] // the largest
		}
	}
	return nil
}

// download fetches a photo from Telegram, refusing one over the input
// limit (before and while reading) or that is not a picture. The file URL
// holds the bot's token: it is never logged or put in an error.
func (b *Bot) download(ctx context.Context, p *models.PhotoSize) (*core.Image, error) {
	limit := b.cfg.MaxInputBytes
	if p.FileSize > 0 && int64(p.FileSize) > limit {
		return nil, chat.InputTooLarge(int64(p.FileSize), limit)
	}
	f, err := b.api.GetFile(ctx, &bot.GetFileParams{FileID: p.FileID})
	if err != nil {
		return nil, &core.Error{Code: core.CodeInvalidOption, Reason: core.ReasonBadInput, Err: fmt.Errorf("telegram: getFile: %s", b.redact(err))}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.api.FileDownloadLink(f), nil)
	if err != nil {
		return nil, &core.Error{Code: core.CodeInvalidOption, Reason: core.ReasonBadInput, Err: errors.New("telegram: bad file path")}
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return nil, &core.Error{Code: core.CodeInvalidOption, Reason: core.ReasonBadInput, Err: fmt.Errorf("telegram: download the photo: %s", b.redact(err))}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &core.Error{Code: core.CodeInvalidOption, Reason: core.ReasonBadInput, Err: fmt.Errorf("telegram: download the photo: HTTP %d", resp.StatusCode)}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, &core.Error{Code: core.CodeInvalidOption, Reason: core.ReasonBadInput, Err: fmt.Errorf("telegram: download the photo: %s", b.redact(err))}
	}
	return chat.CheckInput(data, limit)
}

package discord

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/chat"
	"github.com/imaginebot/imaginebot/core"
)

// attachment is the resolved attachment an option names, or nil.
func attachment(data discordgo.ApplicationCommandInteractionData, o *discordgo.ApplicationCommandInteractionDataOption) *discordgo.MessageAttachment {
	if o == nil || o.Type != discordgo.ApplicationCommandOptionAttachment || data.Resolved == nil {
		return nil
	}
	id, _ := o.Value.(string)
	return data.Resolved.Attachments[id]
}

// download fetches an attachment from Discord's CDN, refusing one over the
// input limit (before and while reading) or that is not a picture.
func (b *Bot) download(ctx context.Context, a *discordgo.MessageAttachment) (*core.Image, error) {
	limit := b.cfg.MaxInputBytes
	if int64(a.Size) > limit {
		return nil, chat.InputTooLarge(int64(a.Size), limit)
	}
	bad := func(err error) error {
		return &core.Error{Code: core.CodeInvalidOption, Reason: core.ReasonBadInput, Err: fmt.Errorf("discord: download the attachment: %w", err)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL, nil)
	if err != nil {
		return nil, bad(err)
	}
	resp, err := b.hooks.client.Do(req)
	if err != nil {
		return nil, bad(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, bad(fmt.Errorf("HTTP %d", resp.StatusCode))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, bad(err)
	}
	return chat.CheckInput(data, limit)
}

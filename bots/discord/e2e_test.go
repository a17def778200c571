package discord

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/discord/discordtest"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

type editBody struct {
	Content    string                            `json:"content"`
	Embeds     []*discordgo.MessageEmbed         `json:"embeds"`
	Components []json.RawMessage                 `json:"components"`
	Mentions   *discordgo.MessageAllowedMentions `json:"allowed_mentions"`
}

func decodeEdit(t testing.TB, c discordtest.Call) editBody {
	t.Helper()
	var b editBody
	if err := c.Decode(&b); err != nil {
		t.Fatalf("edit body %s: %v", c.JSON, err)
	}
	return b
}

// customIDs are the buttons' custom ids in a message's components.
func customIDs(t testing.TB, comps []json.RawMessage) []string {
	t.Helper()
	var ids []string
	for _, raw := range comps {
		var row struct {
			Components []struct {
				CustomID string `json:"custom_id"`
			} `json:"components"`
		}
		_ = json.Unmarshal(raw, &row)
		for _, c := range row.Components {
			ids = append(ids, c.CustomID)
		}
	}
	return ids
}

// The whole way of one prompt, in both connection modes: a deferred ack,
// the queue position and progress in the reply, then the picture as a
// multipart upload in an embed with the prompt, the model, who asked and
// the quota left, and a reroll button.
func TestImagineFlow(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, mode)
			release := make(chan struct{})
			e.gw.Push(upstreamtest.Wait(release, upstreamtest.JSON(200, upstreamtest.Completion("![img]("+e.gw.ImageURL("a.png")+")"))))
			e.gw.ServeImage("a.png", "image/png", upstreamtest.PNG(64, 64))
			token, ack := e.imagine(t, inGuild(alice, "en-US"), "a fox in the snow @everyone", discordtest.String(optAspect, "16:9"))
			if ack.Type != discordgo.InteractionResponseDeferredChannelMessageWithSource {
				t.Fatalf("ack type %d, want deferred", ack.Type)
			}
			status := e.edits(t, token, 1, withText("Generating"))
			if ids := customIDs(t, decodeEdit(t, status[0]).Components); len(ids) != 1 || !strings.HasPrefix(ids[0], cancelPrefix) {
				t.Fatalf("progress buttons %v, want a cancel", ids)
			}
			close(release)
			res := e.edits(t, token, 1, withFiles)
			body := decodeEdit(t, res[0])
			if len(body.Embeds) != 1 || body.Embeds[0].Image == nil || body.Embeds[0].Image.URL != "attachment://"+res[0].Files[0].Name {
				t.Fatalf("embed %+v, files %v", body.Embeds, res[0].Files)
			}
			em := body.Embeds[0]
			if em.Description != "a fox in the snow @everyone" {
				t.Errorf("description %q", em.Description)
			}
			for _, w := range []string{"Stable Diffusion", "16:9", "asked by @alice", "Quota left today: 4", "00:00 (UTC)"} {
				if !strings.Contains(em.Footer.Text, w) {
					t.Errorf("footer %q lacks %q", em.Footer.Text, w)
				}
			}
			ids := customIDs(t, body.Components)
			if len(ids) != 1 || !strings.HasPrefix(ids[0], rerollPrefix) || len(ids[0]) > 100 {
				t.Fatalf("result buttons %v", ids)
			}
			if bal := e.balance(t, "discord:guild:"+guildID, alice); bal.Used != 1 {
				t.Fatalf("used %d, want 1", bal.Used)
			}
		})
	}
}

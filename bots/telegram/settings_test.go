package telegram_test

import (
	"strings"
	"testing"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// /settings keeps a user's defaults per chat: the model and aspect serve
// their prompts (a prompt's own flags win), the language is what the bot
// answers them in, and a reroll keeps the original job's.
func TestSettings(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.core.Quotas.DefaultDaily = 20 })
	e.send(e.tg.PrivateText(alice, "/settings"))
	e.waitText(t, alice.ID, "⚙️ Your settings here", "Model: default (Stable Diffusion)", "Language: automatic (English)", "/settings model NAME")
	e.send(e.tg.PrivateText(alice, "/settings model dalle"))
	e.waitText(t, alice.ID, "I don't know the model “dalle”", "stable-diffusion, flux")
	e.send(e.tg.PrivateText(alice, "/settings language klingon"))
	e.waitText(t, alice.ID, "I don't speak “klingon”")
	e.send(e.tg.PrivateText(alice, "/settings model flux"))
	e.waitText(t, alice.ID, "✅ Saved.", "Model: FLUX (flux)")
	e.send(e.tg.PrivateText(alice, "/settings aspect 16:9"))
	e.waitText(t, alice.ID, "✅ Saved.", "Aspect ratio: 16:9")
	e.send(e.tg.PrivateText(alice, "/settings language zh-hant"))
	e.waitText(t, alice.ID, "✅ 已儲存。", "語言：繁體中文")

	e.send(e.tg.PrivateText(alice, "a fox"))
	photo := e.tg.WaitCall(t, "sendPhoto", wait)
	if c := photo.Field("caption"); !strings.Contains(c, "FLUX") || !strings.Contains(c, "16:9") || !strings.Contains(c, "今日剩餘額度") {
		t.Fatalf("caption %q: want flux, 16:9, in Traditional Chinese", c)
	}
	e.send(e.tg.PrivateText(alice, "a fox --model stable-diffusion --ar 1:1"))
	second := e.tg.WaitCalls(t, "sendPhoto", 2, wait)[1]
	if c := second.Field("caption"); !strings.Contains(c, "Stable Diffusion") || !strings.Contains(c, "1:1") {
		t.Fatalf("the prompt's flags did not win: %q", c)
	}
	reqs := e.gw.Requests()
	if len(reqs) != 2 || reqs[0].Model != "flux" || reqs[1].Model != "stable-diffusion" {
		t.Fatalf("gateway models: %+v", reqs)
	}
	// A reroll makes the original job again, not with the presser's
	// current settings: a picture made without an aspect stays without.
	e.send(e.tg.PrivateText(alice, "/settings aspect default"))
	e.waitText(t, alice.ID, "已儲存", "畫面比例：無")
	e.send(e.tg.PrivateText(alice, "a plain fox"))
	plain := e.tg.WaitCalls(t, "sendPhoto", 3, wait)[2]
	e.send(e.tg.PrivateText(alice, "/settings aspect 1:1"))
	e.waitText(t, alice.ID, "已儲存", "畫面比例：1:1")
	e.send(e.tg.Callback(alice, plain.Message(), plain.CallbackData()[0]))
	e.tg.WaitCalls(t, "sendPhoto", 4, wait)
	reqs = e.gw.Requests()
	if last := reqs[len(reqs)-1]; len(reqs) != 4 || strings.Contains(last.Messages[len(last.Messages)-1].Content, "Aspect ratio") {
		t.Fatalf("the reroll took the presser's aspect: %+v", last.Messages)
	}
	// Settings are per chat: in the group Alice has none.
	e.send(e.tg.GroupText(group, alice, "/settings"))
	e.waitText(t, group.ID, "Model: default (Stable Diffusion)")
	e.send(e.tg.PrivateText(alice, "/settings reset"))
	e.waitText(t, alice.ID, "✅ Saved.", "Model: default (Stable Diffusion)", "Language: automatic (English)")
}

// An images-API model's rewording of the prompt (revised_prompt) is shown
// under the picture, labelled, in the user's language.
func TestRevisedPromptShown(t *testing.T) {
	e := newEnv(t, func(c *envConfig) {
		c.core.Models = append(c.core.Models, core.Model{Name: "dalle", Label: "DALL·E 3", API: core.APIImages})
	})
	e.gw.Push(upstreamtest.JSON(200, upstreamtest.Images(upstreamtest.B64Image(upstreamtest.PNG(8, 8), "A red fox curled up in fresh snow, soft light"))))
	e.send(e.tg.PrivateText(li, "狐狸 --model dalle"))
	photo := e.tg.WaitCall(t, "sendPhoto", wait)
	if c := photo.Field("caption"); !strings.Contains(c, "改写后的描述：A red fox curled up in fresh snow") {
		t.Fatalf("caption %q lacks the revised prompt", c)
	}
}

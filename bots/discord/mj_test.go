package discord

import (
	"strings"
	"testing"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/discord/discordtest"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// A Midjourney job: imagine → progress → the grid with its U/V buttons;
// U2 pressed by another member runs that action on the task, charged to
// them at the model's action cost, and delivers the upscale.
func TestMidjourneyButtons(t *testing.T) {
	e := newEnv(t, ModeInteractions, func(c *envConfig) {
		c.core.Models = append(c.core.Models, core.Model{Name: "mj", Label: "Midjourney", API: core.APIMidjourney, Cost: 3, ActionCost: 1})
	})
	e.gw.ServeImage("grid.png", "image/png", upstreamtest.PNG(32, 32))
	e.gw.ServeImage("up.png", "image/png", upstreamtest.PNG(16, 16))
	e.gw.PushMJ(
		upstreamtest.MJScript{Steps: append(upstreamtest.MJProgress(20, 60), upstreamtest.MJSuccess(e.gw.ImageURL("grid.png"), upstreamtest.GridButtons("h1")))},
		upstreamtest.MJScript{Steps: []upstreamtest.MJStep{upstreamtest.MJSuccess(e.gw.ImageURL("up.png"), upstreamtest.UpscaleButtons("h2"))}},
	)
	token, _ := e.imagine(t, inGuild(alice, "en-US"), "a castle", discordtest.String(optModel, "mj"))
	res := e.edits(t, token, 1, withFiles)[0]
	ids := customIDs(t, decodeEdit(t, res).Components)
	var u2 string
	for _, id := range ids {
		if strings.HasPrefix(id, taskPrefix+"1:") {
			u2 = id // the second button: U2
		}
	}
	if len(ids) != 10 || u2 == "" { // U1–U4, 🔄, V1–V4, and our reroll
		t.Fatalf("result buttons %v", ids)
	}
	press := discordtest.Interaction(discordgo.InteractionMessageComponent, inGuild(bob, "en-US"), discordtest.Button(u2))
	_, ptoken := discordtest.Fields(press)
	e.send(t, press)
	up := e.edits(t, ptoken, 1, withFiles)[0]
	if up.Files[0].Data == nil || len(up.Files[0].Data) == len(res.Files[0].Data) {
		t.Fatal("the upscale is not a new picture")
	}
	var action *upstreamtest.Request
	for _, r := range e.gw.Requests() {
		if strings.HasSuffix(r.Path, "/mj/submit/action") {
			action = &r
		}
	}
	if action == nil || !strings.Contains(string(action.Body), "MJ::JOB::upsample::2::h1") {
		t.Fatalf("no U2 action sent: %+v", action)
	}
	if a, b := e.balance(t, scope, alice).Used, e.balance(t, scope, bob).Used; a != 3 || b != 1 {
		t.Fatalf("alice used %d (want 3), bob %d (want the action cost 1)", a, b)
	}
	// A button of a job that kept none, or crafted, finds nothing.
	r := e.send(t, discordtest.Interaction(discordgo.InteractionMessageComponent, inGuild(bob, "en-US"), discordtest.Button(taskPrefix+"7:discord:interaction:1")))
	if r.Data == nil || !strings.Contains(r.Data.Content, "can't find that image") {
		t.Fatalf("crafted: %+v", r.Data)
	}
}

// A banned prompt (code 24), a failed task and a queue-full answer are
// told to the user and refunded; a picture goes to the proxy as
// base64Array.
func TestMidjourneyFailuresRefunded(t *testing.T) {
	e := newEnv(t, ModeInteractions, func(c *envConfig) {
		c.core.Models = append(c.core.Models, core.Model{Name: "mj", Label: "Midjourney", API: core.APIMidjourney, Cost: 3, AcceptsImage: true})
	})
	cases := []struct {
		script upstreamtest.MJScript
		want   string
	}{
		{upstreamtest.MJScript{Code: upstreamtest.MJBanned, Description: "banned prompt", BannedWord: "castle"}, "declined this prompt"},
		{upstreamtest.MJScript{Steps: []upstreamtest.MJStep{upstreamtest.MJFailure("internal error")}}, "failed to make your picture"},
	}
	for _, c := range cases {
		e.gw.PushMJ(c.script)
		token, _ := e.imagine(t, inGuild(alice, "en-US"), "a castle", discordtest.String(optModel, "mj"))
		e.edits(t, token, 1, withText(c.want, "refunded"))
	}
	if used := e.balance(t, scope, alice).Used; used != 0 {
		t.Fatalf("used %d, want 0: not refunded", used)
	}
	photo := upstreamtest.PNG(8, 8)
	e.gw.ServeImage("grid.png", "image/png", upstreamtest.PNG(32, 32))
	e.gw.PushMJ(upstreamtest.MJScript{Steps: []upstreamtest.MJStep{upstreamtest.MJSuccess(e.gw.ImageURL("grid.png"), upstreamtest.GridButtons("h"))}})
	url := e.dc.AddAttachment("in.png", photo)
	cmd := discordtest.WithAttachment(discordtest.Command(cmdImagine, discordtest.String(optPrompt, "like this"), discordtest.String(optModel, "mj")), optImage, url, len(photo), "image/png")
	body := discordtest.Interaction(discordgo.InteractionApplicationCommand, inGuild(alice, "en-US"), cmd)
	_, token := discordtest.Fields(body)
	e.send(t, body)
	e.edits(t, token, 1, withFiles)
	if got := e.gw.MJInputs(); len(got) != 1 || !strings.HasPrefix(got[0], "data:image/png;base64,") {
		t.Fatalf("base64Array %v", e.gw.MJInputs())
	}
}

package telegram_test

import (
	"strings"
	"testing"

	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// A Midjourney job in a group: the grid comes with its U/V buttons; U2
// pressed by another member runs that action on the task, charged to them
// at the model's action cost, and delivers the upscale as a reply.
func TestMidjourneyButtons(t *testing.T) {
	e := newEnv(t, func(c *envConfig) {
		c.core.Models = append(c.core.Models, core.Model{Name: "mj", Label: "Midjourney", API: core.APIMidjourney, Cost: 3, ActionCost: 1})
	})
	e.gw.ServeImage("grid.png", "image/png", upstreamtest.PNG(32, 32))
	e.gw.ServeImage("up.png", "image/png", upstreamtest.PNG(16, 16))
	e.gw.PushMJ(
		upstreamtest.MJScript{Steps: []upstreamtest.MJStep{upstreamtest.MJSuccess(e.gw.ImageURL("grid.png"), upstreamtest.GridButtons("h1"))}},
		upstreamtest.MJScript{Steps: []upstreamtest.MJStep{upstreamtest.MJSuccess(e.gw.ImageURL("up.png"), upstreamtest.UpscaleButtons("h2"))}},
	)
	e.send(e.tg.GroupText(group, alice, "/imagine a castle --model mj"))
	grid := e.tg.WaitCall(t, "sendPhoto", wait)
	data := grid.CallbackData()
	if len(data) != 10 || !strings.HasPrefix(data[1], "mj:") { // U1–U4, 🔄, V1–V4, and our reroll
		t.Fatalf("buttons %q", data)
	}
	e.send(e.tg.Callback(bob, grid.Message(), data[1])) // U2
	up := e.tg.WaitCalls(t, "sendPhoto", 2, wait)[1]
	if up.ReplyTo() != grid.Message().ID {
		t.Errorf("the upscale replies to %d, want the grid %d", up.ReplyTo(), grid.Message().ID)
	}
	var sent bool
	for _, r := range e.gw.Requests() {
		sent = sent || (strings.HasSuffix(r.Path, "/mj/submit/action") && strings.Contains(string(r.Body), "MJ::JOB::upsample::2::h1"))
	}
	if !sent {
		t.Fatal("no U2 action was sent")
	}
	scope := "telegram:group:" + itoa(group.ID)
	if a, b := e.balance(t, scope, alice).Used, e.balance(t, scope, bob).Used; a != 3 || b != 1 {
		t.Fatalf("alice used %d (want 3), bob %d (want the action cost 1)", a, b)
	}
}

// A photo with /imagine … as its caption goes to a Midjourney model as
// base64Array.
func TestMidjourneyPictureInput(t *testing.T) {
	e := newEnv(t, func(c *envConfig) {
		c.core.Models = append(c.core.Models, core.Model{Name: "mj", Label: "Midjourney", API: core.APIMidjourney, AcceptsImage: true})
	})
	photo := upstreamtest.PNG(8, 8)
	e.tg.AddFile("cat", photo)
	e.gw.ServeImage("grid.png", "image/png", upstreamtest.PNG(32, 32))
	e.gw.PushMJ(upstreamtest.MJScript{Steps: []upstreamtest.MJStep{upstreamtest.MJSuccess(e.gw.ImageURL("grid.png"), upstreamtest.GridButtons("h"))}})
	e.send(e.tg.Photo(telegramtest.PrivateChat(alice), alice, "cat", len(photo), "/imagine like this --model mj"))
	e.tg.WaitCall(t, "sendPhoto", wait)
	if got := e.gw.MJInputs(); len(got) != 1 || !strings.HasPrefix(got[0], "data:image/png;base64,") {
		t.Fatalf("base64Array %v", e.gw.MJInputs())
	}
}

package telegram_test

import (
	"strings"
	"testing"

	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// A photo with /imagine … as its caption, or /imagine … replying to a
// photo, starts from that picture: to a chat model as an image part, to an
// images model as an edit. A model that takes no picture, a file that is
// not one and a picture over the limit are refused before anything is
// charged.
func TestPictureInput(t *testing.T) {
	e := newEnv(t, func(c *envConfig) {
		c.core.Models = append(c.core.Models,
			core.Model{Name: "vision", Label: "Vision", AcceptsImage: true},
			core.Model{Name: "editor", Label: "Editor", API: core.APIImages, AcceptsImage: true})
		c.telegram.MaxInputBytes = 64 << 10
	})
	photo := upstreamtest.PNG(32, 32)
	e.tg.AddFile("cat", photo)
	e.tg.AddFile("text", []byte("not a picture at all, just words"))
	e.tg.AddFile("huge", append(upstreamtest.NoisePNG(256, 256), make([]byte, 70<<10)...))

	e.send(e.tg.Photo(telegramtest.PrivateChat(alice), alice, "cat", len(photo), "/imagine make it blue --model vision"))
	e.tg.WaitCall(t, "sendPhoto", wait)
	msgs := e.gw.Requests()[0].Messages
	if last := msgs[len(msgs)-1]; len(last.Images) != 1 || !strings.HasPrefix(last.Images[0], "data:image/png;base64,") {
		t.Fatalf("chat request without the picture: %+v", last)
	}

	first := e.tg.Calls("sendPhoto")[0].Message()
	e.tg.AddFile(first.Photo[len(first.Photo)-1].FileID, photo) // the bot's own result, replied to
	e.gw.Push(upstreamtest.JSON(200, upstreamtest.Images(upstreamtest.B64Image(upstreamtest.PNG(8, 8), ""))))
	e.send(e.tg.Reply(telegramtest.PrivateChat(alice), alice, first, "/imagine now green --model editor"))
	e.tg.WaitCalls(t, "sendPhoto", 2, wait)
	edit := e.gw.Requests()[1]
	if !strings.HasSuffix(edit.Path, "/v1/images/edits") || edit.Part("image") == nil {
		t.Fatalf("images request %s without the picture", edit.Path)
	}

	before := e.balance(t, "telegram:private", alice).Used
	for _, c := range []struct{ file, caption, want string }{
		{"cat", "/imagine make it blue", "does not take a picture"},
		{"text", "/imagine make it blue --model vision", "I can only start from a picture"},
		{"huge", "/imagine make it blue --model vision", "That picture is too large"},
	} {
		e.send(e.tg.Photo(telegramtest.PrivateChat(alice), alice, c.file, 100, c.caption))
		e.waitText(t, alice.ID, c.want)
	}
	if got := e.balance(t, "telegram:private", alice).Used; got != before || len(e.gw.Requests()) != 2 {
		t.Fatalf("refused pictures were charged (%d→%d) or sent (%d requests)", before, got, len(e.gw.Requests()))
	}
}

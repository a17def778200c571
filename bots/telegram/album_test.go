package telegram_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/imaginebot/imaginebot/bots/telegram"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// When Telegram refuses the album, each picture goes alone, the caption on
// the first, then the quota line with the reroll button; the user has the
// pictures, so the job is committed, not refunded.
func TestAlbumRefusedSendsPhotosAlone(t *testing.T) {
	e := newEnv(t)
	e.tg.FailNext("sendMediaGroup", 400, "Bad Request: failed to send message #1 with the error message \"WEBPAGE_MEDIA_EMPTY\"", 0)
	one, two := upstreamtest.PNG(16, 16), upstreamtest.PNG(24, 24)
	e.gw.ServeImage("1.png", "image/png", one)
	e.gw.ServeImage("2.png", "image/png", two)
	e.gw.Push(upstreamtest.JSON(200, upstreamtest.Completion("![1]("+e.gw.ImageURL("1.png")+")\n![2]("+e.gw.ImageURL("2.png")+")")))
	upd := e.send(e.tg.PrivateText(alice, "two owls"))

	photos := e.tg.WaitCalls(t, "sendPhoto", 2, wait)
	for i, want := range [][]byte{one, two} {
		f, ok := photos[i].File("photo")
		if !ok || !bytes.Equal(f.Data, want) || photos[i].Status != 200 {
			t.Errorf("photo %d: %d bytes, status %d; want image %d alone", i+1, f.Size, photos[i].Status, i+1)
		}
	}
	if c := photos[0].Field("caption"); !strings.HasPrefix(c, "two owls") {
		t.Errorf("first photo's caption = %q, want the prompt", c)
	}
	if c := photos[1].Field("caption"); c != "" {
		t.Errorf("second photo's caption = %q, want none", c)
	}
	btn := e.waitText(t, alice.ID, "Quota left today: 4")
	if got := btn.CallbackData(); len(got) != 1 || !strings.HasPrefix(got[0], "rr:") {
		t.Errorf("reroll button %q", got)
	}
	if calls := e.tg.Calls("sendMediaGroup"); len(calls) != 1 || calls[0].Status != 400 {
		t.Errorf("%d album calls, want the one refused", len(calls))
	}
	e.waitSettled(t, updateKey(upd), core.JobCommitted)
	if bal := e.balance(t, telegram.ScopePrivate, alice); bal.Used != 1 {
		t.Errorf("used %d, want 1", bal.Used)
	}
}

package upstream_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// A picture given to a chat model goes as an image_url part (a data URI)
// beside the prompt's text part.
func TestChatWithAPicture(t *testing.T) {
	e := newEnv(t, upstream.Config{Retries: -1})
	in := upstreamtest.PNG(4, 4)
	req := request(false)
	req.Model.AcceptsImage = true
	req.Input = &core.Image{Data: in, MIME: "image/png"}
	if _, err, _ := e.generate(t, req); err != nil {
		t.Fatal(err)
	}
	msgs := e.gw.Requests()[0].Messages
	last := msgs[len(msgs)-1]
	want := "data:image/png;base64," + base64.StdEncoding.EncodeToString(in)
	if len(last.Images) != 1 || last.Images[0] != want || !strings.Contains(last.Content, "一只在雪地里的狐狸") {
		t.Fatalf("message %+v", last)
	}
}

package discord

import (
	"encoding/json"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/discord/discordtest"
)

// Any interaction body, correctly signed, and any custom id is answered
// without a panic: 200 with a valid response, or 400 for what is not an
// interaction. The adapter's own recover would hide a panic from the
// process, so the test also fails on the panic log.
func FuzzInteraction(f *testing.F) {
	where := inGuild(alice, "en-US")
	seeds := [][]byte{
		discordtest.Interaction(discordgo.InteractionApplicationCommand, where, discordtest.Command(cmdImagine, discordtest.String(optPrompt, "a fox"))),
		discordtest.Interaction(discordgo.InteractionApplicationCommand, where, discordtest.Command(cmdQuotaAdmin, discordtest.Sub("grant", discordtest.UserOpt(optUser, "1"), discordtest.Int(optAmount, 3)))),
		discordtest.Interaction(discordgo.InteractionApplicationCommand, discordtest.DM("1", "x", "zh-TW"), discordtest.Command(cmdQuota)),
		discordtest.Interaction(discordgo.InteractionMessageComponent, where, discordtest.Button(rerollPrefix+"discord:interaction:1")),
		discordtest.Interaction(discordgo.InteractionMessageComponent, where, discordtest.Button(cancelPrefix+"x")),
		[]byte(`{"type":2,"id":"1","token":"t","data":{"name":"imagine","options":[{"name":"prompt","type":3,"value":7}]}}`),
		[]byte(`{"type":3,"id":"1","token":"t","member":{"user":{"id":"5"}},"data":{"custom_id":"rr:"}}`),
		[]byte(`{"type":2,"member":null,"user":null}`),
		[]byte(`[]`),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	e := newEnv(f, ModeInteractions, func(c *envConfig) { c.quiet = true })
	h := e.bot.InteractionsHandler(f.Context())
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := newRecorder()
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.ServeHTTP(rec, e.signer.Request("http://bot/discord/interactions", body, time.Now()))
		}()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			buf := make([]byte, 1<<16)
			t.Fatalf("no answer within 3 s to %q\n%s", body, buf[:runtime.Stack(buf, true)])
		}
		switch rec.code {
		case http.StatusOK:
			var r discordgo.InteractionResponse
			if err := json.Unmarshal(rec.body.Bytes(), &r); err != nil || r.Type == 0 {
				t.Fatalf("200 with %q: %v", rec.body.String(), err)
			}
		case http.StatusBadRequest:
		default:
			t.Fatalf("answered %d to a signed request", rec.code)
		}
	})
}

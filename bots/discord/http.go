package discord

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
)

// maxSkew is how old (or how far ahead) a signed timestamp may be:
// discordgo checks the signature but not the time, and an old signed
// request replayed must not run again.
const maxSkew = 5 * time.Minute

// InteractionsHandler serves Discord's HTTP interactions: every request is
// checked against the application's public key (unsigned or wrongly signed:
// 401, and nothing runs), PING is answered with PONG, and everything else
// is answered within Discord's 3 seconds in the HTTP response itself.
func (b *Bot) InteractionsHandler(ctx context.Context) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if !discordgo.VerifyInteraction(r, b.pubKey) || !recent(r.Header.Get("X-Signature-Timestamp"), time.Now()) {
			http.Error(w, "invalid request signature", http.StatusUnauthorized)
			return
		}
		var i discordgo.Interaction
		if err := json.Unmarshal(body, &i); err != nil {
			http.Error(w, "not an interaction", http.StatusBadRequest)
			return
		}
		if i.Type == discordgo.InteractionPing {
			writeJSON(w, &discordgo.InteractionResponse{Type: discordgo.InteractionResponsePong})
			return
		}
		b.inflight.Add(1)
		defer b.inflight.Done()
		var once sync.Once
		answered := make(chan struct{})
		ack := func(_ context.Context, resp *discordgo.InteractionResponse) error {
			once.Do(func() {
				if resp.Data != nil && len(resp.Data.Files) > 0 {
					// Files need a multipart answer; the bot never sends them
					// in an acknowledgement.
					resp.Data.Files = nil
				}
				writeJSON(w, resp)
				// Out now, so that the job's first edit finds the reply.
				_ = http.NewResponseController(w).Flush()
				close(answered)
			})
			return nil
		}
		// The handler returns once answered; the job goes on with ctx (the
		// bot's), not the request's.
		b.handle(ctx, &i, uploadLimit(body), ack)
		<-answered
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// recent reports whether a signed Unix timestamp is within maxSkew of now.
func recent(ts string, now time.Time) bool {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return false
	}
	d := now.Sub(time.Unix(sec, 0))
	return d <= maxSkew && d >= -maxSkew
}

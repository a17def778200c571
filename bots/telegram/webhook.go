package telegram

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/go-telegram/bot/models"
)

// maxWebhookBody caps an update's size: a text message is at most 4096
// characters plus entities, far below this.
const maxWebhookBody = 1 << 20

// secretHeader is where Telegram puts setWebhook's secret_token.
const secretHeader = "X-Telegram-Bot-Api-Secret-Token"

// WebhookHandler receives updates in webhook mode. It answers 401 (and
// does nothing) unless the secret header matches, 405 to anything but POST,
// 413 to oversized bodies and 503 before Run has started or after it ended;
// valid updates are routed and answered 200 at once while their work runs
// in the background.
func (b *Bot) WebhookHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		secret := b.cfg.WebhookSecret
		if secret == "" || subtle.ConstantTimeCompare([]byte(r.Header.Get(secretHeader)), []byte(secret)) != 1 {
			b.log.Warn("telegram: webhook request with a missing or wrong secret", "remote", r.RemoteAddr)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		var upd models.Update
		if err := json.Unmarshal(body, &upd); err != nil {
			b.log.Warn("telegram: undecodable webhook update", "err", err)
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		b.mu.Lock()
		base, closed := b.base, b.closed
		b.mu.Unlock()
		if base == nil || base.Err() != nil || closed {
			// Telegram retries later: the update is not lost.
			w.Header().Set("Retry-After", "5")
			http.Error(w, "not running", http.StatusServiceUnavailable)
			return
		}
		b.api.ProcessUpdate(base, &upd)
		w.WriteHeader(http.StatusOK)
	})
}

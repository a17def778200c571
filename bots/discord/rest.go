package discord

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/bwmarrin/discordgo"
)

// webhooks calls the interaction webhook routes (the callback, the original
// response, follow-ups) directly with discordgo's types and endpoints.
// discordgo's own client would serialise every edit behind one bucket mutex
// and keep a bucket per interaction token forever; these routes are not
// bound to the bot's global limit, and the budget paces them instead.
type webhooks struct {
	client *http.Client
	appID  string
}

// apiError is Discord's answer to a call that failed. It never holds the
// URL: interaction tokens are in it.
type apiError struct {
	Method, Route string
	Status        int
	Code          int // Discord's JSON error code
	Message       string
	RetryAfter    time.Duration
}

func (e *apiError) Error() string {
	return fmt.Sprintf("discord: %s %s: %d %s (code %d)", e.Method, e.Route, e.Status, e.Message, e.Code)
}

// Discord's JSON error codes the adapter acts on.
const (
	codeUnknownWebhook      = 10015
	codeUnknownInteraction  = 10062
	codeInvalidWebhookToken = 50027
	codeAlreadyAcknowledged = 40060
)

// tokenGone reports whether err says the interaction token no longer works
// (it lasts 15 minutes): only a new message in the channel can reach the
// user then.
func tokenGone(err error) bool {
	var e *apiError
	if !errors.As(err, &e) {
		return false
	}
	return e.Code == codeInvalidWebhookToken || e.Code == codeUnknownWebhook || e.Code == codeUnknownInteraction ||
		(e.Status == http.StatusUnauthorized && e.Route != "callback")
}

// retryAfter is how long a 429 asked to wait, or 0.
func retryAfter(err error) time.Duration {
	var e *apiError
	if errors.As(err, &e) && e.Status == http.StatusTooManyRequests {
		return max(e.RetryAfter, 100*time.Millisecond)
	}
	return 0
}

// respond answers an interaction (the 3-second acknowledgement).
func (w *webhooks) respond(ctx context.Context, id, token string, r *discordgo.InteractionResponse) error {
	var files []*discordgo.File
	if r.Data != nil {
		files = r.Data.Files
	}
	_, err := w.do(ctx, http.MethodPost, discordgo.EndpointInteractionResponse(id, token), "callback", r, files, false)
	return err
}

// edit changes the original response.
func (w *webhooks) edit(ctx context.Context, token string, e *discordgo.WebhookEdit) (*discordgo.Message, error) {
	return w.do(ctx, http.MethodPatch, discordgo.EndpointInteractionResponseActions(w.appID, token), "edit original", e, e.Files, true)
}

// followup posts a new message under the interaction.
func (w *webhooks) followup(ctx context.Context, token string, p *discordgo.WebhookParams) (*discordgo.Message, error) {
	return w.do(ctx, http.MethodPost, discordgo.EndpointFollowupMessage(w.appID, token)+"?wait=true", "followup", p, p.Files, true)
}

func (w *webhooks) do(ctx context.Context, method, u, route string, body any, files []*discordgo.File, want bool) (*discordgo.Message, error) {
	var buf []byte
	ctype := "application/json"
	var err error
	if len(files) > 0 {
		ctype, buf, err = discordgo.MultipartBodyWithJSON(body, files)
	} else {
		buf, err = json.Marshal(body)
	}
	if err != nil {
		return nil, fmt.Errorf("discord: %s %s: encode: %w", method, route, err)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(buf))
	if err != nil {
		return nil, fmt.Errorf("discord: %s %s: cannot build the request", method, route)
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("User-Agent", "DiscordBot (https://github.com/imaginebot/imaginebot, 1) imaginebot")
	resp, err := w.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its URL holds the interaction token
		}
		return nil, fmt.Errorf("discord: %s %s: %w", method, route, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("discord: %s %s: read: %w", method, route, err)
	}
	if resp.StatusCode >= 300 {
		return nil, decodeError(method, route, resp, data)
	}
	if !want || len(data) == 0 {
		return nil, nil
	}
	var m discordgo.Message
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("discord: %s %s: decode: %w", method, route, err)
	}
	return &m, nil
}

func decodeError(method, route string, resp *http.Response, data []byte) error {
	e := &apiError{Method: method, Route: route, Status: resp.StatusCode}
	var body struct {
		Message    string  `json:"message"`
		Code       int     `json:"code"`
		RetryAfter float64 `json:"retry_after"`
	}
	if json.Unmarshal(data, &body) == nil {
		e.Message, e.Code = body.Message, body.Code
		e.RetryAfter = time.Duration(body.RetryAfter * float64(time.Second))
	}
	if e.RetryAfter == 0 {
		if s, err := strconv.ParseFloat(resp.Header.Get("Retry-After"), 64); err == nil {
			e.RetryAfter = time.Duration(s * float64(time.Second))
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

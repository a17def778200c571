package telegram

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path"
	"time"

	"github.com/go-telegram/bot"
)

// Per-call deadlines. One client timeout cannot fit both a 50 s long poll
// and a 50 MB upload, so each call gets its own.
const (
	callTimeout   = 30 * time.Second
	uploadTimeout = 5 * time.Minute
	pollSlack     = 30 * time.Second
	sendRetries   = 3 // after a 429
)

// deadlineClient gives every Bot API call a deadline by method.
type deadlineClient struct {
	hc   *http.Client
	poll time.Duration
}

func (c *deadlineClient) Do(req *http.Request) (*http.Response, error) {
	d := callTimeout
	switch path.Base(req.URL.Path) {
	case "getUpdates":
		d = c.poll + pollSlack
	case "sendPhoto", "sendDocument", "sendMediaGroup":
		d = uploadTimeout
	}
	ctx, cancel := context.WithTimeout(req.Context(), d)
	resp, err := c.hc.Do(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelBody releases the call's deadline when the body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// retry429 runs call, and again after Telegram's retry_after when it answers
// 429, at most sendRetries times and never past ctx's deadline. Only sends
// that matter (results, error replies) go through it; progress edits skip
// instead.
func (b *Bot) retry429(ctx context.Context, call func(ctx context.Context) error) error {
	for attempt := 0; ; attempt++ {
		err := call(ctx)
		var tm *bot.TooManyRequestsError
		if err == nil || !errors.As(err, &tm) || attempt >= sendRetries {
			return err
		}
		wait := time.Duration(max(tm.RetryAfter, 1)) * time.Second
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return err
		}
		b.log.Warn("telegram: rate limited by Telegram, retrying", "retry_after", wait, "attempt", attempt+1)
		if serr := b.sleep(ctx, wait); serr != nil {
			return err
		}
	}
}

// retryAfter is the wait a 429 asks for (0 for other errors).
func retryAfter(err error) time.Duration {
	var tm *bot.TooManyRequestsError
	if errors.As(err, &tm) {
		return time.Duration(max(tm.RetryAfter, 1)) * time.Second
	}
	return 0
}

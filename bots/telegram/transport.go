package telegram

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"regexp"
	"time"

	"github.com/go-telegram/bot"

	"github.com/imaginebot/imaginebot/bots/pace"
)

// Per-call deadlines. One client timeout cannot fit both a 50 s long poll
// and a 50 MB upload, so each call gets its own.
const (
	callTimeout   = 30 * time.Second
	uploadTimeout = 5 * time.Minute
	pollSlack     = 30 * time.Second
	sendRetries   = 3 // after a 429
)

// deadlineClient gives every Bot API call a deadline by method, and counts
// the calls.
type deadlineClient struct {
	hc      *http.Client
	poll    time.Duration
	metrics Metrics
	polled  func() // a getUpdates answered: readiness
}

// methodRe bounds the method label: the path ends in the method's name, and
// anything else (a proxy's odd path) is "other".
var methodRe = regexp.MustCompile(`^[a-zA-Z]{1,40}$`)

func (c *deadlineClient) Do(req *http.Request) (*http.Response, error) {
	method := path.Base(req.URL.Path)
	if !methodRe.MatchString(method) {
		method = "other"
	}
	resp, err := c.do(req, method)
	status := 0 // no answer
	if err == nil {
		status = resp.StatusCode
	}
	c.metrics.Call(method, status)
	if method == "getUpdates" && status == http.StatusOK {
		c.polled()
	}
	return resp, err
}

func (c *deadlineClient) do(req *http.Request, method string) (*http.Response, error) {
	d := callTimeout
	switch method {
	case "getUpdates":
		d = c.poll + pollSlack
	case "sendPhoto", "sendDocument", "sendMediaGroup":
		d = uploadTimeout
	}
	ctx, cancel := context.WithTimeout(req.Context(), d)
	if req.Body != nil && req.ContentLength <= 0 {
		// The library streams its multipart form through a pipe: sent as
		// it comes, every field would be a chunk and a write syscall of its
		// own (the biggest CPU cost per call under load). Read it first and
		// send it in one piece, with its length.
		body, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			cancel()
			return nil, err
		}
		req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
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

// newTransport is the HTTP transport for Bot API calls: every call goes to
// one host, so the idle pool per host is sized to the calls in flight at
// once (Go's default of 2 would open a new connection, and a TLS handshake,
// for most of them under load).
func newTransport(conns int) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// send runs call, a send or edit to to's chat counting n messages, once the
// budget allows a message of class there. After a 429 — which the budget
// should have prevented — the chat is held for Telegram's retry_after and the
// call made again, at most sendRetries times and never past ctx's deadline.
func (b *Bot) send(ctx context.Context, to target, class pace.Class, n int, call func(ctx context.Context) error) error {
	chat := to.chatKey()
	for attempt := 0; ; attempt++ {
		if err := b.budget.Wait(ctx, pace.Msg{Chat: chat, Class: class, N: n, Order: to.order}); err != nil {
			return fmt.Errorf("%w: %w", errNoBudget, err)
		}
		err := call(ctx)
		wait := retryAfter(err)
		if wait == 0 {
			return err
		}
		b.budget.Hold(chat, wait)
		if dl, ok := ctx.Deadline(); attempt >= sendRetries || (ok && time.Until(dl) < wait) {
			return err
		}
		b.log.Warn("telegram: rate limited by Telegram, retrying", "job", to.job, "chat", to.chat, "retry_after", wait, "attempt", attempt+1)
	}
}

// retry429 runs a call that is not a message (getMe, answerCallbackQuery,
// getChatMember), and again after Telegram's retry_after when it answers
// 429, at most sendRetries times and never past ctx's deadline.
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

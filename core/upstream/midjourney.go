package upstream

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/imaginebot/imaginebot/core"
)

// The Midjourney API (core.APIMidjourney): the midjourney-proxy protocol
// that one-api and new-api relay under {base}/mj. A job is a task:
//
//	POST {base}/mj/submit/imagine {prompt, base64Array?}  → {code, description, result: task id}
//	POST {base}/mj/submit/action  {customId, taskId}      → the same, for a button of a result
//	GET  {base}/mj/task/{id}/fetch → {id, status, progress: "45%", imageUrl, failReason, buttons}
//
// The client submits, then fetches the task with a growing wait until it
// succeeds or fails, within the job's deadline; the image is downloaded
// through the Fetcher like any other. Submits are retried like chat
// requests (429, 5xx, connection errors, code 23); a failed fetch is
// tried again at the next poll, up to maxPollFailures in a row.
//
// The model id is not sent: the proxy knows one model, and the gateway
// prices by action. The user's pseudonym is not sent either: the API has
// no field for it. Submit attempts count in Metrics.Attempt like other
// requests; fetches do not (a task takes dozens), and a task the job gives
// up on runs on at the gateway: the API cannot cancel one.

const (
	mjImaginePath = "/mj/submit/imagine"
	mjActionPath  = "/mj/submit/action"

	defaultTaskPoll    = time.Second
	defaultTaskPollMax = 5 * time.Second
	// maxPollFailures is how many fetches in a row may fail (5xx, a
	// dropped connection, an unreadable answer) before the job does.
	maxPollFailures = 5
	maxButtonLabel  = 80
	maxButtonEmoji  = 16
)

// Submit codes of midjourney-proxy.
const (
	mjSubmitted = 1
	mjExists    = 21 // the task exists already: result is its id
	mjQueued    = 22 // submitted, waiting in the proxy's queue
	mjQueueFull = 23
	mjBanned    = 24 // the prompt holds a banned word
)

// Task statuses. NOT_START, SUBMITTED and IN_PROGRESS (and any status this
// client does not know) mean "not yet".
const (
	mjSuccess = "SUCCESS"
	mjFailure = "FAILURE"
	mjModal   = "MODAL"  // the action wants a form filled (custom zoom, vary region): the bot has none
	mjCancel  = "CANCEL" // cancelled on the proxy
)

// mjBase is the gateway's root, which /mj hangs off.
func (c *Client) mjBase() string { return strings.TrimSuffix(c.apiBase(), "/v1") }

// generateMidjourney runs a Midjourney job within generate's deadline:
// submit, poll, download.
func (c *Client) generateMidjourney(ctx context.Context, log *slog.Logger, req core.GenRequest, progress func(core.GenProgress)) ([]core.Image, error) {
	start := time.Now()
	rq, err := c.mjSubmitCall(req)
	if err != nil {
		return nil, err
	}
	if a := req.Action; a != nil {
		log = log.With("action", a.CustomID, "of_task", a.TaskID)
	}
	imgs, e := c.midjourney(ctx, log, req.Model.Name, rq, c.progressFunc(log, progress))
	if e != nil {
		log.Info("upstream: generation failed", "code", e.Code, "err", e.Err, "elapsed", time.Since(start))
		return nil, e
	}
	log.Info("upstream: generated", "task", imgs[0].Task, "buttons", len(imgs[0].Buttons), "elapsed", time.Since(start))
	return imgs, nil
}

func (c *Client) midjourney(ctx context.Context, log *slog.Logger, model string, rq call, progress func(core.GenProgress)) ([]core.Image, *core.Error) {
	res, e := c.complete(ctx, log, model, rq, nil)
	if e != nil {
		return nil, e
	}
	if res.task == nil {
		// A 2xx that was no submit answer (an event stream, say).
		return nil, core.Errorf(core.CodeBadResponse, "upstream: the midjourney submit answer held no task: %s", c.excerpt([]byte(res.text)))
	}
	id := res.task.ID
	log = log.With("task", id)
	if res.task.Status == "queued" {
		log.Info("upstream: the task waits in the proxy's queue", "description", core.Truncate(c.redact(res.task.FailReason), 200))
	} else {
		log.Debug("upstream: task submitted")
	}
	task, e := c.awaitTask(ctx, log, id, progress)
	if e != nil {
		return nil, e
	}
	imgs, e := c.download(ctx, log, result{refs: []string{c.resolveRef(task.ImageURL)}})
	if e != nil {
		return nil, e
	}
	img := imgs[0]
	img.Task = id
	img.Buttons = task.Buttons
	return []core.Image{img}, nil
}

// mjImagineBody is POST /mj/submit/imagine's body.
type mjImagineBody struct {
	Prompt string `json:"prompt"`
	// Base64Array holds reference pictures as data URIs.
	Base64Array []string `json:"base64Array,omitempty"`
}

// mjActionBody is POST /mj/submit/action's body.
type mjActionBody struct {
	CustomID string `json:"customId"`
	TaskID   string `json:"taskId"`
}

// mjSubmitCall is the imagine request, or the action request when the job
// presses a button.
func (c *Client) mjSubmitCall(req core.GenRequest) (call, error) {
	var (
		path string
		v    any
	)
	switch a := req.Action; {
	case a != nil && (strings.TrimSpace(a.TaskID) == "" || strings.TrimSpace(a.CustomID) == ""):
		return call{}, core.Errorf(core.CodeInternal, "upstream: a midjourney action needs a task id and a custom id (got %q, %q)", a.TaskID, a.CustomID)
	case a != nil:
		path, v = mjActionPath, mjActionBody{CustomID: a.CustomID, TaskID: a.TaskID}
	default:
		b := mjImagineBody{Prompt: req.Prompt}
		if in := req.Input; in != nil {
			if len(in.Data) == 0 {
				return call{}, core.Errorf(core.CodeInternal, "upstream: the input picture is empty")
			}
			mt := in.MIME
			if mt == "" {
				mt = http.DetectContentType(in.Data)
			}
			b.Base64Array = []string{"data:" + mt + ";base64," + base64.StdEncoding.EncodeToString(in.Data)}
		}
		path, v = mjImaginePath, b
	}
	body, err := encodeJSON(v)
	if err != nil {
		return call{}, core.Errorf(core.CodeInternal, "upstream: encode midjourney request: %v", err)
	}
	return call{url: c.mjBase() + path, contentType: "application/json", body: body, parse: c.parseMJSubmit, failure: c.mjFailure}, nil
}

// mjAnswer is a submit answer, or a task: the proxy's fields, and the
// gateway's own error shapes.
type mjAnswer struct {
	Code        json.RawMessage `json:"code"`
	Description string          `json:"description"`
	Result      json.RawMessage `json:"result"`
	Properties  struct {
		BannedWord string `json:"bannedWord"`
	} `json:"properties"`

	ID         json.RawMessage `json:"id"`
	Status     string          `json:"status"`
	Progress   string          `json:"progress"`
	ImageURL   string          `json:"imageUrl"`
	FailReason string          `json:"failReason"`
	Buttons    []struct {
		CustomID string `json:"customId"`
		Label    string `json:"label"`
		Emoji    string `json:"emoji"`
	} `json:"buttons"`

	Error json.RawMessage `json:"error"`
}

// mjTask is what the client keeps of a submit answer or a fetched task.
type mjTask struct {
	ID       string
	Status   string // a submit's: "submitted" or "queued"
	Progress string
	ImageURL string
	// FailReason is the task's failReason, raw; a submit's description.
	FailReason string
	Buttons    []core.TaskButton
}

// code is a submit answer's code (a number, or on some relays a string);
// 0 when absent or unreadable.
func (a *mjAnswer) code() int {
	n, _ := strconv.Atoi(strings.TrimSpace(codeString(a.Code)))
	return n
}

// parseMJSubmit reads a 2xx submit answer.
func (c *Client) parseMJSubmit(status int, raw []byte) (result, *core.Error, bool) {
	var a mjAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		return c.failure(&gatewayError{status: status, malformed: true, why: "malformed JSON: " + err.Error(), body: raw})
	}
	if api, ok := decodeAPIError(a.Error); ok {
		return c.failure(&gatewayError{status: http.StatusOK, api: api, malformed: api.Message == "", why: "error object in the body", body: raw})
	}
	return c.mjSubmitOutcome(status, &a, raw)
}

// mjSubmitOutcome judges a submit answer by its code.
func (c *Client) mjSubmitOutcome(status int, a *mjAnswer, raw []byte) (result, *core.Error, bool) {
	desc := strings.TrimSpace(a.Description)
	switch code := a.code(); code {
	case mjSubmitted, mjExists, mjQueued:
		id := strings.TrimSpace(codeString(a.Result))
		if id == "" {
			return result{}, core.Errorf(core.CodeBadResponse, "upstream: HTTP %d: midjourney submit code %d without a task id: %s", status, code, c.excerpt(raw)), false
		}
		t := &mjTask{ID: id, Status: "submitted", FailReason: desc}
		if code == mjQueued {
			t.Status = "queued"
		}
		return result{task: t}, nil, false
	case mjQueueFull:
		// The proxy's accounts are all busy: like a 429, worth another try
		// after a wait.
		return result{}, &core.Error{Code: core.CodeOverloaded,
			Err: fmt.Errorf("upstream: HTTP %d: midjourney submit code 23 (queue full): %s", status, c.excerpt([]byte(desc)))}, true
	case mjBanned:
		detail := desc
		if w := strings.TrimSpace(a.Properties.BannedWord); w != "" {
			detail += ": " + w
		}
		return result{}, &core.Error{Code: core.CodeRefused,
			Err:    fmt.Errorf("upstream: HTTP %d: midjourney submit code 24 (banned prompt): %s", status, c.excerpt([]byte(detail))),
			Detail: core.CleanUpstreamText(c.redact(detail), maxDetail)}, false
	case 0:
		return c.failure(&gatewayError{status: status, malformed: true, why: "not a midjourney submit answer (no code)", body: raw})
	default:
		// A code is the proxy's decision, not a passing failure: not
		// retried, unless its words say overload (classify).
		ce := classify(http.StatusOK, apiError{Message: desc, Code: strconv.Itoa(code)}, false)
		return result{}, &core.Error{Code: ce,
			Err: fmt.Errorf("upstream: HTTP %d: midjourney submit code %d: %s", status, code, c.excerpt([]byte(desc)))}, ce == core.CodeOverloaded
	}
}

// mjFailure judges a non-2xx answer of the /mj routes. A submit code
// that says what went wrong (23, 24) wins over the status; an unknown
// task is the gateway's failure, not a misconfiguration; the rest follow
// the chat taxonomy, with new-api's {"description", "code": 4} read as the
// message (parseErrorBody).
func (c *Client) mjFailure(g *gatewayError) (result, *core.Error, bool) {
	var a mjAnswer
	if json.Unmarshal(g.body, &a) == nil {
		switch a.code() {
		case mjQueueFull, mjBanned:
			return c.mjSubmitOutcome(g.status, &a, g.body)
		}
	}
	if taskNotFoundRe.MatchString(g.api.Message) {
		return result{}, core.Errorf(core.CodeUpstreamFailed, "upstream: HTTP %d: the gateway does not know the task (another key's, or expired): %s", g.status, c.excerpt(g.body)), false
	}
	return c.failure(g)
}

// taskNotFoundRe matches new-api's words for a task id it does not know.
var taskNotFoundRe = regexp.MustCompile(`(?i)task_no(t)?_found|task not found|任务不存在`)

// mjFetchCall fetches a task.
func (c *Client) mjFetchCall(id string) call {
	return call{method: http.MethodGet, url: c.mjBase() + "/mj/task/" + url.PathEscape(id) + "/fetch", parse: c.parseMJTask, failure: c.mjFailure}
}

// parseMJTask reads a 2xx fetch answer. An answer with no status (null:
// the proxy does not know the task yet) is a failed fetch worth another.
func (c *Client) parseMJTask(status int, raw []byte) (result, *core.Error, bool) {
	var a mjAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		return result{}, core.Errorf(core.CodeBadResponse, "upstream: HTTP %d: task fetch: malformed JSON: %v: %s", status, err, c.excerpt(raw)), true
	}
	if api, ok := decodeAPIError(a.Error); ok {
		return c.failure(&gatewayError{status: http.StatusOK, api: api, malformed: api.Message == "", why: "error object in the body", body: raw})
	}
	if strings.TrimSpace(a.Status) == "" {
		if desc := strings.TrimSpace(a.Description); desc != "" && a.code() != 0 {
			return c.mjFailure(&gatewayError{status: status, api: apiError{Message: desc, Code: codeString(a.Code)}, body: raw})
		}
		return result{}, core.Errorf(core.CodeBadResponse, "upstream: HTTP %d: task fetch: no status: %s", status, c.excerpt(raw)), true
	}
	t := &mjTask{
		ID:         strings.TrimSpace(codeString(a.ID)),
		Status:     strings.ToUpper(strings.TrimSpace(a.Status)),
		Progress:   strings.TrimSpace(a.Progress),
		ImageURL:   strings.TrimSpace(a.ImageURL),
		FailReason: a.FailReason,
	}
	for _, b := range a.Buttons {
		id := strings.TrimSpace(b.CustomID)
		label := core.Truncate(strings.TrimSpace(core.StripControl(c.redact(b.Label))), maxButtonLabel)
		emoji := core.Truncate(strings.TrimSpace(core.StripControl(c.redact(b.Emoji))), maxButtonEmoji)
		if id == "" || label == "" && emoji == "" {
			continue // nothing to press, or nothing to show
		}
		t.Buttons = append(t.Buttons, core.TaskButton{CustomID: id, Label: label, Emoji: emoji})
	}
	return result{task: t}, nil, false
}

// awaitTask fetches task id until it ends, waiting TaskPollInterval
// first and half as long again each time after, up to TaskPollMax. It
// reports each new progress percentage.
func (c *Client) awaitTask(ctx context.Context, log *slog.Logger, id string, progress func(core.GenProgress)) (*mjTask, *core.Error) {
	wait := c.cfg.TaskPollInterval
	lastPercent := -2
	last := &mjTask{ID: id, Status: "SUBMITTED"}
	failures := 0
	for polls := 1; ; polls++ {
		if err := c.sleep(ctx, wait); err != nil {
			return nil, c.taskEnded(ctx, id, last, polls-1)
		}
		wait = min(wait+wait/2, c.cfg.TaskPollMax)
		res, e, retry := c.attempt(ctx, log, c.mjFetchCall(id), nil)
		if e != nil {
			e = c.clean(e)
			if ctx.Err() != nil {
				return nil, c.taskEnded(ctx, id, last, polls)
			}
			failures++
			if !retry || failures >= maxPollFailures {
				return nil, &core.Error{Code: e.Code, Detail: e.Detail, RetryAfter: e.RetryAfter,
					Err: fmt.Errorf("upstream: midjourney task %s: fetch %d: %w", id, polls, e)}
			}
			log.Warn("upstream: task fetch failed; fetching again at the next poll", "poll", polls, "failures", failures, "code", e.Code, "err", e.Err)
			wait = max(wait, min(e.RetryAfter, backoffCap))
			continue
		}
		t := res.task
		if t == nil {
			return nil, core.Errorf(core.CodeBadResponse, "upstream: midjourney task %s: fetch %d answered no task", id, polls)
		}
		failures = 0
		last = t
		log.Debug("upstream: task", "poll", polls, "status", t.Status, "progress", t.Progress)
		switch t.Status {
		case mjSuccess:
			if t.ImageURL == "" {
				return nil, core.Errorf(core.CodeBadResponse, "upstream: midjourney task %s succeeded without an imageUrl", id)
			}
			return t, nil
		case mjFailure, mjCancel:
			return nil, c.taskFailed(id, t)
		case mjModal:
			return nil, core.Errorf(core.CodeUpstreamFailed, "upstream: midjourney task %s waits for a form (status MODAL: custom zoom, vary region…), which the bot cannot fill", id)
		}
		if p := parsePercent(t.Progress); p != lastPercent && progress != nil {
			lastPercent = p
			progress(core.GenProgress{Percent: p})
		}
	}
}

// taskEnded is the error for a job whose context ended while its task ran:
// a timeout that names the setting that ran out (like the other APIs), and
// where the task was.
func (c *Client) taskEnded(ctx context.Context, id string, last *mjTask, polls int) *core.Error {
	code, cause := core.CodeTimeout, core.DeadlineCause(ctx)
	if cause == nil {
		// Cancelled (shutdown, the user), or a sleep that gave up early.
		code, cause = core.CodeInterrupted, cmp.Or(context.Cause(ctx), errors.New("the wait ended early"))
	}
	where := last.Status
	if last.Progress != "" {
		where += " at " + last.Progress
	}
	return &core.Error{Code: code, Err: fmt.Errorf("upstream: midjourney task %s still %s after %d fetches: %w", id, where, polls, cause)}
}

// mjRefusalRe matches the failReasons that are about the prompt or the
// picture (the user should change them), as Midjourney and the proxies
// word them; any other failure is the service's.
var mjRefusalRe = regexp.MustCompile(`(?i)banned|community (standards|guidelines)|moderat|filter|violat|policy|sensitive|nsfw|not allowed|` +
	`invalid (parameter|value|image|link)|unrecognized (parameter|argument)|parameter|` +
	`敏感|违规|违禁|禁止|屏蔽|审核|参数`)

// taskFailed is the error for a task that ended in FAILURE (or CANCEL),
// with its failReason, cleaned, as Detail.
func (c *Client) taskFailed(id string, t *mjTask) *core.Error {
	reason := core.CleanUpstreamText(c.redact(t.FailReason), maxDetail)
	code := core.CodeUpstreamFailed
	if t.Status == mjFailure && mjRefusalRe.MatchString(reason) {
		code = core.CodeRefused
	}
	return &core.Error{Code: code, Detail: reason,
		Err: fmt.Errorf("upstream: midjourney task %s ended %s: %s", id, t.Status, c.excerpt([]byte(t.FailReason)))}
}

// parsePercent reads a task's progress ("45%", "45.5%", "45"): 0–100, or
// -1 when absent or unreadable.
func parsePercent(s string) int {
	s = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "%"))
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != f {
		return -1
	}
	return int(min(max(f, 0), 100))
}

// resolveRef makes an imageUrl given as a path ("/mj/image/123", new-api's
// image proxy without a server address) absolute on the gateway.
func (c *Client) resolveRef(ref string) string {
	if !strings.HasPrefix(ref, "/") || strings.HasPrefix(ref, "//") {
		return ref
	}
	base, err := url.Parse(c.mjBase() + "/")
	if err != nil {
		return ref
	}
	r, err := url.Parse(ref)
	if err != nil {
		return ref
	}
	return base.ResolveReference(r).String()
}

// TaskButtons fetches a Midjourney task once and returns its buttons, for
// running an action from the terminal (imaginebot imagine -action U2 -task
// ID), where no job kept them.
func (c *Client) TaskButtons(ctx context.Context, taskID string) ([]core.TaskButton, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	res, e, _ := c.attempt(ctx, c.log.With("task", taskID), c.mjFetchCall(taskID), nil)
	if e != nil {
		return nil, c.clean(e)
	}
	if res.task == nil {
		return nil, core.Errorf(core.CodeBadResponse, "upstream: midjourney task %s: no task in the answer", taskID)
	}
	return res.task.Buttons, nil
}

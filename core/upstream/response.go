package upstream

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/imaginebot/imaginebot/core"
)

// errTooLarge is returned when a response exceeds MaxResponseBytes.
var errTooLarge = errors.New("upstream: response too large")

// gatewayError is an error answer from the gateway: a non-2xx status, or an
// error object in a 200 body or in a stream. The client turns it into a
// *core.Error with classify.
type gatewayError struct {
	status    int
	api       apiError
	malformed bool        // HTML, truncated JSON, an error without a message
	why       string      // what was wrong, for the operator
	body      []byte      // for the operator's excerpt
	header    http.Header // Retry-After, Location; nil for a stream's errors
}

func (e *gatewayError) Error() string {
	return fmt.Sprintf("upstream: HTTP %d: %s %s", e.status, e.why, e.api.Message)
}

// completion is a chat.completion, or one chat.completion.chunk of a stream
// (which has delta instead of message). Only what carries images, text or
// errors is decoded.
type completion struct {
	Choices []choice        `json:"choices"`
	Error   json.RawMessage `json:"error"`
}

type choice struct {
	Index   int      `json:"index"`
	Message *message `json:"message"`
	Delta   *message `json:"delta"`
}

type message struct {
	Content          content     `json:"content"`
	Refusal          string      `json:"refusal"`
	ReasoningContent string      `json:"reasoning_content"`
	Reasoning        string      `json:"reasoning"` // OpenRouter's name for it
	Images           []imagePart `json:"images"`
}

// content is a message's content: a string, an array of content parts, or null.
type content struct {
	parts []contentPart
}

type contentPart struct {
	Type     string   `json:"type"`
	Text     string   `json:"text"`
	ImageURL imageURL `json:"image_url"`
}

// UnmarshalJSON also accepts a bare string as a text part.
func (p *contentPart) UnmarshalJSON(b []byte) error {
	if b = bytes.TrimSpace(b); len(b) > 0 && b[0] == '"' {
		p.Type = "text"
		return json.Unmarshal(b, &p.Text)
	}
	type plain contentPart
	if len(b) > 0 && b[0] == '{' {
		return json.Unmarshal(b, (*plain)(p))
	}
	return nil
}

type imagePart struct {
	Type     string   `json:"type"`
	ImageURL imageURL `json:"image_url"`
}

// imageURL is {"url": "..."}; a few gateways send the URL as a plain string.
type imageURL struct {
	URL string `json:"url"`
}

func (c *content) UnmarshalJSON(b []byte) error {
	switch b = bytes.TrimSpace(b); {
	case len(b) > 0 && b[0] == '"':
		var s string
		// A data-URI image makes this string megabytes long, and the decoder
		// has already validated it: without escapes it is its own value, so
		// skip a second validating pass.
		if inner := b[1:max(1, len(b)-1)]; bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) && len(b) >= 2 && b[len(b)-1] == '"' {
			s = string(inner)
		} else if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		c.parts = []contentPart{{Type: "text", Text: s}}
		return nil
	case len(b) > 0 && b[0] == '[':
		return json.Unmarshal(b, &c.parts)
	}
	return nil // null, or a shape nobody sends: no content
}

func (u *imageURL) UnmarshalJSON(b []byte) error {
	if b = bytes.TrimSpace(b); len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &u.URL)
	}
	type plain imageURL
	if len(b) > 0 && b[0] == '{' {
		return json.Unmarshal(b, (*plain)(u))
	}
	return nil
}

// apiError is the gateway's {"error":{...}} object. Type is not decoded on
// purpose: resellers rebrand it, so nothing may depend on it.
type apiError struct {
	Message string
	Code    string
}

// decodeAPIError decodes an "error" value: an object with message and code
// (a string, or a number on some gateways), or a bare string. ok is false for
// an absent or null error.
func decodeAPIError(raw json.RawMessage) (e apiError, ok bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return e, false
	}
	if raw[0] == '"' {
		_ = json.Unmarshal(raw, &e.Message)
		return e, true
	}
	var obj struct {
		Message string          `json:"message"`
		Code    json.RawMessage `json:"code"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return e, true // an error it is, even if unreadable
	}
	return apiError{Message: obj.Message, Code: codeString(obj.Code)}, true
}

// codeString reads error.code: a string, a number on some gateways, or null.
func codeString(raw json.RawMessage) string {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	if raw = bytes.TrimSpace(raw); string(raw) == "null" {
		return ""
	}
	return string(raw)
}

// parseErrorBody reads a non-2xx body. malformed is true for HTML pages,
// empty bodies and anything that is not a JSON error object with a message.
func parseErrorBody(body []byte) (e apiError, malformed bool) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return e, true
	}
	var env struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"` // a few proxies answer {"message": "..."}
		Code    json.RawMessage `json:"code"`
		// midjourney-proxy, and new-api's /mj routes, answer
		// {"description": "...", "code": 4}.
		Description string `json:"description"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return e, true
	}
	if ae, ok := decodeAPIError(env.Error); ok {
		return ae, ae.Message == ""
	}
	if msg := cmp.Or(env.Message, strings.TrimSpace(env.Description)); msg != "" {
		return apiError{Message: msg, Code: codeString(env.Code)}, false
	}
	return e, true
}

// refusalCodes are error codes that mean the prompt was refused: the user
// should reword it, not wait for the operator.
var refusalCodes = map[string]bool{
	"sensitive_words_detected": true, // new-api's prompt filter
	"content_policy_violation": true, // DALL·E's safety system
	"moderation_blocked":       true, // gpt-image's safety system
	"content_filter":           true,
}

// tokenQuotaRe matches the relays' messages for an account or token without
// quota left (one-api, new-api and their resellers, in both languages).
var tokenQuotaRe = regexp.MustCompile(`额度|余额|quota|insufficient balance|credit`)

// classify maps a status and the gateway's error to a Code. It looks at the
// HTTP status, error.code and a few well-known messages, never at error.type.
// status is 200 for errors inside a 200 body or a stream.
func classify(status int, e apiError, malformed bool) core.Code {
	msg := strings.ToLower(e.Message)
	switch {
	case e.Code == "insufficient_user_quota" || e.Code == "insufficient_quota",
		status == http.StatusPaymentRequired,
		strings.Contains(msg, "quota_not_enough"), // new-api's /mj routes (HTTP 400)
		(status == http.StatusForbidden || status == http.StatusUnauthorized) && tokenQuotaRe.MatchString(msg):
		// one-api answers 401 "该令牌额度已用尽" when the bot's own token ran
		// dry: a balance to top up, not a key to fix.
		return core.CodeUpstreamBalance
	case e.Code == "model_not_found" || strings.Contains(msg, "无可用渠道") || strings.Contains(msg, "no available channel"):
		return core.CodeModelUnavailable
	case refusalCodes[e.Code]:
		return core.CodeRefused
	case status == http.StatusTooManyRequests:
		return core.CodeOverloaded
	case status >= 500 || status == http.StatusRequestTimeout:
		if malformed {
			return core.CodeBadResponse
		}
		return core.CodeUpstreamFailed
	case status >= 300 && status != http.StatusOK:
		return core.CodeUpstreamAuth // 400, 401, 403, 404, a redirect: the configuration is wrong
	case malformed:
		return core.CodeBadResponse
	case e.Code == "rate_limit_exceeded" || strings.Contains(msg, "负载已饱和"):
		return core.CodeOverloaded
	}
	return core.CodeUpstreamFailed // an error object in a 200 or mid-stream
}

// retryable reports whether another attempt may help.
func retryable(code core.Code, status int) bool {
	switch code {
	case core.CodeOverloaded, core.CodeUpstreamFailed:
		return true
	case core.CodeBadResponse:
		return status >= 500
	}
	return false
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs <= 0 || secs > 24*3600 {
			return 0
		}
		return time.Duration(secs * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d.Round(time.Second)
		}
	}
	return 0
}

// accumulator gathers what the choices of a response (or of a stream's
// chunks) carry, per choice index.
type accumulator struct {
	choices   map[int]*choiceAcc
	size      int // bytes of text held, against the response cap
	reasoning strings.Builder
}

type choiceAcc struct {
	text    strings.Builder
	images  []ref // image parts, at their offset in text
	refusal strings.Builder
}

// maxReasoning caps the reasoning text kept for a refusal message.
const maxReasoning = 64 << 10

func (a *accumulator) choice(i int) *choiceAcc {
	if a.choices == nil {
		a.choices = map[int]*choiceAcc{}
	}
	c := a.choices[i]
	if c == nil {
		c = &choiceAcc{}
		a.choices[i] = c
	}
	return c
}

// add appends a message or delta to choice i. sep goes between text parts
// of one content array (a stream's deltas are concatenated as they are).
func (a *accumulator) add(i int, m *message, sep string) {
	c := a.choice(i)
	for k, p := range m.Content.parts {
		if p.ImageURL.URL != "" {
			c.images = append(c.images, ref{url: p.ImageURL.URL, strong: true, pos: c.text.Len()})
			continue
		}
		if k > 0 && sep != "" && c.text.Len() > 0 {
			c.text.WriteString(sep)
		}
		c.text.WriteString(p.Text)
		a.size += len(p.Text)
	}
	for _, im := range m.Images {
		if im.ImageURL.URL != "" {
			c.images = append(c.images, ref{url: im.ImageURL.URL, strong: true, pos: c.text.Len()})
		}
	}
	c.refusal.WriteString(m.Refusal)
	r := m.ReasoningContent + m.Reasoning
	if room := maxReasoning - a.reasoning.Len(); room > 0 {
		a.reasoning.WriteString(r[:min(len(r), room)])
	}
}

// result is what a response amounts to before downloads.
type result struct {
	refs []string
	weak bool   // refs are links that do not look like images (the fallback)
	text string // the message text (refusal, progress), raw
	// reasoningOnly: text is the reasoning (progress) of an answer whose
	// content was empty.
	reasoningOnly bool
	// notes are, per ref, the text to show under its image (the images
	// API's revised_prompt); nil for chat answers.
	notes []string
	// task is a Midjourney submit answer (the new task's id) or a fetched
	// task; nil for the other APIs.
	task *mjTask
}

// finish joins the choices in index order and picks the image references.
func (a *accumulator) finish() result {
	idx := make([]int, 0, len(a.choices))
	for i := range a.choices {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	var refs []ref
	var texts, refusals []string
	for _, i := range idx {
		c := a.choices[i]
		text := c.text.String()
		found := scan(text, 0, nil)
		refs = append(refs, mergeByPos(found, c.images)...)
		if strings.TrimSpace(text) != "" {
			texts = append(texts, text)
		}
		if r := c.refusal.String(); strings.TrimSpace(r) != "" {
			refusals = append(refusals, r)
		}
	}
	var res result
	res.refs, res.weak = pick(refs)
	switch {
	case len(texts) > 0:
		res.text = strings.Join(texts, "\n\n")
	case len(refusals) > 0:
		res.text = strings.Join(refusals, "\n\n")
	default:
		res.text, res.reasoningOnly = a.reasoning.String(), a.reasoning.Len() > 0
	}
	return res
}

// mergeByPos merges two position-ordered ref lists; on ties the image part
// (b) comes first, as it was added before the text at that offset.
func mergeByPos(a, b []ref) []ref {
	if len(b) == 0 {
		return a
	}
	out := make([]ref, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if b[0].pos <= a[0].pos {
			out, b = append(out, b[0]), b[1:]
		} else {
			out, a = append(out, a[0]), a[1:]
		}
	}
	return append(append(out, a...), b...)
}

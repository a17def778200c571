package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/imaginebot/imaginebot/core"
)

// The images API (core.APIImages): DALL·E, gpt-image and Flux as most
// one-api / new-api gateways relay them. A job without a picture is
// POST {base}/v1/images/generations (JSON); one with a picture is
// POST {base}/v1/images/edits (multipart). Both answer
// {"created": …, "data": [{"url" | "b64_json", "revised_prompt"}]}, and fail
// like chat completions ({"error": {…}}, the same statuses), so the same
// attempts, retries and classify apply.

const (
	imagesGenerationsPath = "/images/generations"
	imagesEditsPath       = "/images/edits"
	// maxNote caps a revised prompt kept for the caption; adapters cut it
	// further to fit their platform.
	maxNote = 1000
)

// generateImages runs an images-API job within generate's deadline.
func (c *Client) generateImages(ctx context.Context, log *slog.Logger, req core.GenRequest) ([]core.Image, error) {
	size, err := req.Model.Size(req.Aspect)
	if err != nil {
		// Core refuses this before charging (Model.CheckOptions); a caller
		// that did not check still gets the same refusal, before any call.
		return nil, err
	}
	rq, err := c.imagesCall(req, size)
	if err != nil {
		return nil, core.Errorf(core.CodeInternal, "upstream: encode images request: %v", err)
	}
	log = log.With("endpoint", strings.TrimPrefix(rq.url, c.apiBase()), "size", size)
	start := time.Now()
	res, e := c.complete(ctx, log, req.Model.Name, rq, nil)
	if e == nil {
		var imgs []core.Image
		if imgs, e = c.download(ctx, log, res); e == nil {
			log.Info("upstream: generated", "images", len(imgs), "elapsed", time.Since(start))
			return imgs, nil
		}
	}
	log.Info("upstream: generation failed", "code", e.Code, "err", e.Err, "elapsed", time.Since(start))
	return nil, e
}

// apiBase is the gateway's /v1 URL, which every endpoint hangs off.
func (c *Client) apiBase() string { return strings.TrimSuffix(c.endpoint, "/chat/completions") }

// imagesCall builds the generations request, or the edits request when the
// job carries a picture.
func (c *Client) imagesCall(req core.GenRequest, size string) (call, error) {
	m := req.Model
	f := imagesFields{
		Model:          m.ID(),
		Prompt:         req.Prompt,
		N:              max(c.cfg.N, 1),
		Size:           size,
		Quality:        m.Quality,
		Style:          m.Style,
		ResponseFormat: m.ImagesResponseFormat(),
	}
	if req.User != "" {
		f.User = Pseudonym(c.cfg.UserIDSecret, req.User)
	}
	if req.Input != nil {
		body, contentType, err := editsBody(f, req.Input)
		if err != nil {
			return call{}, err
		}
		return call{url: c.apiBase() + imagesEditsPath, contentType: contentType, body: body, parse: c.parseImages}, nil
	}
	body, err := encodeJSON(f)
	if err != nil {
		return call{}, err
	}
	return call{url: c.apiBase() + imagesGenerationsPath, contentType: "application/json", body: body, parse: c.parseImages}, nil
}

// imagesFields are the generations body, and the edits form's fields. The
// optional ones are left out when empty: gateways pass unknown or empty
// fields on, and the models refuse what they do not take (gpt-image answers
// 400 to any response_format, DALL·E 2 to a style).
type imagesFields struct {
	Model          string `json:"model"`
	Prompt         string `json:"prompt"`
	N              int    `json:"n"`
	Size           string `json:"size,omitempty"`
	Quality        string `json:"quality,omitempty"`
	Style          string `json:"style,omitempty"`
	ResponseFormat string `json:"response_format,omitempty"`
	User           string `json:"user,omitempty"`
}

// editsBody is the multipart form of an edit: the fields, then the picture
// as the "image" file part with its own content type (the API tells PNG,
// JPEG and WebP apart by it).
func editsBody(f imagesFields, in *core.Image) ([]byte, string, error) {
	if len(in.Data) == 0 {
		return nil, "", errors.New("the input picture is empty")
	}
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	fields := []struct{ name, value string }{
		{"model", f.Model}, {"prompt", f.Prompt}, {"n", strconv.Itoa(f.N)}, {"size", f.Size},
		{"quality", f.Quality}, {"response_format", f.ResponseFormat}, {"user", f.User},
	}
	// No style: the edits endpoint has none, and refuses unknown fields.
	for _, fv := range fields {
		if fv.value == "" {
			continue
		}
		if err := w.WriteField(fv.name, fv.value); err != nil {
			return nil, "", err
		}
	}
	ct := in.MIME
	if ct == "" {
		ct = http.DetectContentType(in.Data)
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="image"; filename="image%s"`, core.Image{MIME: ct}.Ext()))
	h.Set("Content-Type", ct)
	part, err := w.CreatePart(h)
	if err != nil {
		return nil, "", err
	}
	if _, err := part.Write(in.Data); err != nil {
		return nil, "", err
	}
	if err := w.Close(); err != nil {
		return nil, "", err
	}
	return b.Bytes(), w.FormDataContentType(), nil
}

// imagesAnswer is an images response. Data stays nil when the field is
// absent or null (not an images answer), and is empty for "data": [].
type imagesAnswer struct {
	Data  []imageDatum    `json:"data"`
	Error json.RawMessage `json:"error"`
}

type imageDatum struct {
	URL           string `json:"url"`
	B64JSON       string `json:"b64_json"`
	RevisedPrompt string `json:"revised_prompt"`
}

// parseImages reads a non-streamed 2xx images answer. Its images become
// references for the same fetcher as chat answers: a url is downloaded
// through the SSRF guard, a b64_json decoded, capped and sniffed as a data
// URI.
func (c *Client) parseImages(status int, raw []byte) (result, *core.Error, bool) {
	var a imagesAnswer
	if err := json.Unmarshal(raw, &a); err != nil {
		return c.failure(&gatewayError{status: status, malformed: true, why: "malformed JSON: " + err.Error(), body: raw})
	}
	if api, ok := decodeAPIError(a.Error); ok {
		return c.failure(&gatewayError{status: http.StatusOK, api: api, malformed: api.Message == "", why: "error object in the body", body: raw})
	}
	if a.Data == nil {
		return c.failure(&gatewayError{status: status, malformed: true, why: "not an images answer (no data)", body: raw})
	}
	var res result
	for _, d := range a.Data {
		ref := strings.TrimSpace(d.URL)
		if b := strings.TrimSpace(d.B64JSON); b != "" {
			// Both is unusual; the bytes at hand beat a download.
			ref = b64Ref(b)
		}
		if ref == "" {
			continue
		}
		res.refs = append(res.refs, ref)
		res.notes = append(res.notes, core.CleanUpstreamText(c.redact(d.RevisedPrompt), maxNote))
	}
	if len(res.refs) == 0 {
		return res, &core.Error{Code: core.CodeLostInRelay, Reason: core.ReasonEmpty,
			Err: fmt.Errorf("upstream: the images answer held no image (%d data entries)", len(a.Data))}, false
	}
	return res, nil, false
}

// b64Ref is a b64_json payload as a data URI. The media type is left
// empty: the fetcher sniffs the bytes rather than trust a label.
func b64Ref(b64 string) string {
	if len(b64) >= 5 && strings.EqualFold(b64[:5], "data:") {
		return b64 // some relays send a whole data URI
	}
	return "data:;base64," + b64
}

// encodeJSON is v as a request body, leaving <, > and & alone: prompts are
// sent as the user wrote them.
func encodeJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

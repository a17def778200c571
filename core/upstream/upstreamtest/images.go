package upstreamtest

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
)

// The images API, as one-api and new-api relay it for DALL·E, gpt-image and
// Flux:
//
//	gw.Push(upstreamtest.JSON(200, upstreamtest.Images(
//		upstreamtest.URLImage(gw.ImageURL("a.png"), "A fox in deep snow, at dusk"))))
//
// Requests to both paths share the reply queue with chat requests.
const (
	ImagesGenerationsPath = "/v1/images/generations"
	ImagesEditsPath       = "/v1/images/edits"
)

// Part is one part of a multipart request body.
type Part struct {
	Name        string // the form field name ("image", "prompt", …)
	FileName    string // "" for a plain field
	ContentType string // the part's own Content-Type, "" when it sent none
	Data        []byte
}

// Part returns the first part named name, or nil.
func (r *Request) Part(name string) *Part {
	for i := range r.Parts {
		if r.Parts[i].Name == name {
			return &r.Parts[i]
		}
	}
	return nil
}

// FormValue is the value of the plain form field name ("" when absent).
func (r *Request) FormValue(name string) string {
	if p := r.Part(name); p != nil && p.FileName == "" {
		return string(p.Data)
	}
	return ""
}

// parseForm reads a multipart body into Parts, and its fields into the
// same fields a JSON body sets, so that tests check both alike.
func (r *Request) parseForm() {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		return
	}
	mr := multipart.NewReader(bytes.NewReader(r.Body), params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				r.Parts = nil
			}
			break
		}
		data, err := io.ReadAll(p)
		if err != nil {
			r.Parts = nil
			break
		}
		r.Parts = append(r.Parts, Part{Name: p.FormName(), FileName: p.FileName(), ContentType: p.Header.Get("Content-Type"), Data: data})
	}
	r.Model, r.Prompt, r.User = r.FormValue("model"), r.FormValue("prompt"), r.FormValue("user")
	r.Size, r.Quality, r.Style, r.ResponseFormat = r.FormValue("size"), r.FormValue("quality"), r.FormValue("style"), r.FormValue("response_format")
	if n, err := strconv.Atoi(r.FormValue("n")); err == nil {
		r.N = &n
	}
}

func (g *Gateway) images(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, []byte(ErrorBody("", "method not allowed")))
		return
	}
	g.serve(w, r, g.defaultImages)
}

func (g *Gateway) defaultImages(w http.ResponseWriter, r *Request) {
	JSON(http.StatusOK, Images(URLImage(g.ImageURL("default.png"), "")))(w, r)
}

// ImageDatum is one entry of an images answer's data array.
type ImageDatum struct {
	URL           string `json:"url,omitempty"`
	B64JSON       string `json:"b64_json,omitempty"`
	RevisedPrompt string `json:"revised_prompt,omitempty"`
}

// URLImage is an entry pointing at url (response_format "url").
func URLImage(url, revisedPrompt string) ImageDatum {
	return ImageDatum{URL: url, RevisedPrompt: revisedPrompt}
}

// B64Image is an entry carrying data inline (response_format "b64_json").
func B64Image(data []byte, revisedPrompt string) ImageDatum {
	return ImageDatum{B64JSON: base64.StdEncoding.EncodeToString(data), RevisedPrompt: revisedPrompt}
}

// Images is an images answer body: {"created": …, "data": [...]}.
func Images(data ...ImageDatum) []byte {
	if data == nil {
		data = []ImageDatum{} // "data": [], not null
	}
	return mustJSON(map[string]any{"created": 1732386637, "data": data})
}

// PolicyRefusal is DALL·E's answer to a prompt its safety system rejects.
func PolicyRefusal() Reply {
	return Status(http.StatusBadRequest, ErrorBody("content_policy_violation",
		"Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system."), nil)
}

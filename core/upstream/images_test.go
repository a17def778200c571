package upstream_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/fetch"
	"github.com/imaginebot/imaginebot/core/upstream"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

func imagesModel(upstreamModel string) core.Model {
	return core.Model{Name: "img", UpstreamModel: upstreamModel, API: core.APIImages}
}

func imagesRequest(m core.Model, aspect string) core.GenRequest {
	return core.GenRequest{Model: m, Prompt: "a fox in the snow <b>&</b>", User: testUser, Aspect: aspect}
}

func fieldNames(r upstreamtest.Request) []string {
	var names []string
	for k := range r.Fields {
		names = append(names, k)
	}
	for _, p := range r.Parts {
		names = append(names, p.Name)
	}
	return sorted(names)
}

func TestImagesGenerationsRequest(t *testing.T) {
	withSizes := imagesModel("my-sdxl")
	withSizes.Sizes = map[string]string{"21:9": "1536x640", "1:1": "1024x1024"}
	dalle := imagesModel("dall-e-3")
	dalle.Quality, dalle.Style = "hd", "vivid"
	b64 := imagesModel("flux-schnell")
	b64.ResponseFormat = "b64_json"
	tests := []struct {
		name       string
		cfg        upstream.Config
		model      core.Model
		aspect     string
		wantSize   string
		wantFormat string
		wantN      int
		wantFields []string // the body's top-level fields, exactly
	}{
		{name: "DALL·E 3 16:9 with quality and style", model: dalle, aspect: "16:9", wantSize: "1792x1024", wantFormat: "url", wantN: 1,
			wantFields: []string{"model", "n", "prompt", "quality", "response_format", "size", "style", "user"}},
		{name: "DALL·E 3 without an aspect is square", model: imagesModel("dall-e-3"), wantSize: "1024x1024", wantFormat: "url", wantN: 1,
			wantFields: []string{"model", "n", "prompt", "response_format", "size", "user"}},
		{name: "DALL·E 3 portrait", model: imagesModel("dall-e-3"), aspect: "9:16", wantSize: "1024x1792", wantFormat: "url", wantN: 1,
			wantFields: []string{"model", "n", "prompt", "response_format", "size", "user"}},
		// gpt-image answers 400 to any response_format: it is not sent.
		{name: "gpt-image-1 3:2 without response_format", model: imagesModel("gpt-image-1"), aspect: "3:2", wantSize: "1536x1024", wantN: 1,
			wantFields: []string{"model", "n", "prompt", "size", "user"}},
		{name: "Flux 16:9", model: imagesModel("black-forest-labs/FLUX.1-schnell"), aspect: "16:9", wantSize: "1344x768", wantFormat: "url", wantN: 1,
			wantFields: []string{"model", "n", "prompt", "response_format", "size", "user"}},
		{name: "Flux 3:4 and b64_json", model: b64, aspect: "3:4", wantSize: "896x1152", wantFormat: "b64_json", wantN: 1,
			wantFields: []string{"model", "n", "prompt", "response_format", "size", "user"}},
		{name: "configured sizes", model: withSizes, aspect: "21:9", wantSize: "1536x640", wantFormat: "url", wantN: 1,
			wantFields: []string{"model", "n", "prompt", "response_format", "size", "user"}},
		{name: "an unknown model is square only", model: imagesModel("my-model"), wantSize: "1024x1024", wantFormat: "url", wantN: 1,
			wantFields: []string{"model", "n", "prompt", "response_format", "size", "user"}},
		{name: "upstream.n", cfg: upstream.Config{N: 2}, model: imagesModel("flux"), aspect: "1:1", wantSize: "1024x1024", wantFormat: "url", wantN: 2,
			wantFields: []string{"model", "n", "prompt", "response_format", "size", "user"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.cfg)
			req := imagesRequest(tt.model, tt.aspect)
			if _, err, _ := e.generate(t, req); err != nil {
				t.Fatalf("Generate: %v", err)
			}
			reqs := e.gw.Requests()
			if len(reqs) != 1 {
				t.Fatalf("gateway got %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != http.MethodPost || r.Path != upstreamtest.ImagesGenerationsPath {
				t.Errorf("request line = %s %s", r.Method, r.Path)
			}
			for h, want := range map[string]string{"Authorization": "Bearer " + testKey, "Content-Type": "application/json"} {
				if got := r.Header.Get(h); got != want {
					t.Errorf("header %s = %q, want %q", h, got, want)
				}
			}
			if r.Model != tt.model.ID() || r.Prompt != req.Prompt || r.Size != tt.wantSize || r.ResponseFormat != tt.wantFormat ||
				r.Quality != tt.model.Quality || r.Style != tt.model.Style || r.N == nil || *r.N != tt.wantN {
				t.Errorf("body %s: want model %q, the prompt verbatim, size %q, response_format %q, quality %q, style %q, n %d",
					r.Body, tt.model.ID(), tt.wantSize, tt.wantFormat, tt.model.Quality, tt.model.Style, tt.wantN)
			}
			if r.User != upstream.Pseudonym(testSecret, testUser) {
				t.Errorf("user = %q, want the pseudonym", r.User)
			}
			if got := fieldNames(r); !slices.Equal(got, tt.wantFields) {
				t.Errorf("body fields = %v, want %v", got, tt.wantFields)
			}
		})
	}
}

func TestImagesAnswers(t *testing.T) {
	png, jpg := upstreamtest.PNG(4, 4), upstreamtest.JPEG(4, 4)
	tests := []struct {
		name      string
		format    string
		reply     func(gw *upstreamtest.Gateway) upstreamtest.Reply
		wantMIME  []string
		wantData  [][]byte
		wantNotes []string
		wantFrom  []string // Source: the URL, or "" for inline data
	}{
		{
			name: "url with revised_prompt", format: "url",
			reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.JSON(200, upstreamtest.Images(upstreamtest.URLImage(gw.ImageURL("a.png"), "A red fox curled up in deep snow at dusk.")))
			},
			wantMIME: []string{"image/png"}, wantData: [][]byte{upstreamtest.PNG(16, 16)},
			wantNotes: []string{"A red fox curled up in deep snow at dusk."}, wantFrom: []string{"a.png"},
		},
		{
			name: "b64_json, two images, each with its note", format: "b64_json",
			reply: func(*upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.JSON(200, upstreamtest.Images(upstreamtest.B64Image(png, "first"), upstreamtest.B64Image(jpg, "")))
			},
			wantMIME: []string{"image/png", "image/jpeg"}, wantData: [][]byte{png, jpg},
			wantNotes: []string{"first", ""}, wantFrom: []string{"", ""},
		},
		{
			name: "b64_json sent as a whole data URI", format: "b64_json",
			reply: func(*upstreamtest.Gateway) upstreamtest.Reply {
				d := upstreamtest.B64Image(png, "")
				d.B64JSON = "data:image/png;base64," + d.B64JSON
				return upstreamtest.JSON(200, upstreamtest.Images(d))
			},
			wantMIME: []string{"image/png"}, wantData: [][]byte{png}, wantNotes: []string{""}, wantFrom: []string{""},
		},
		{
			name: "the note is cleaned: no control characters, no markdown images", format: "url",
			reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.JSON(200, upstreamtest.Images(upstreamtest.URLImage(gw.ImageURL("a.png"), "a fox\x1b[31m ![x](https://e.example/x.png)\x00")))
			},
			wantMIME: []string{"image/png"}, wantData: [][]byte{upstreamtest.PNG(16, 16)}, wantNotes: []string{"a fox[31m"}, wantFrom: []string{"a.png"},
		},
		{
			name: "entries without an image are skipped", format: "url",
			reply: func(gw *upstreamtest.Gateway) upstreamtest.Reply {
				return upstreamtest.JSON(200, upstreamtest.Images(upstreamtest.ImageDatum{RevisedPrompt: "nothing"}, upstreamtest.URLImage(gw.ImageURL("b.jpg"), "b")))
			},
			wantMIME: []string{"image/jpeg"}, wantData: [][]byte{upstreamtest.JPEG(16, 16)}, wantNotes: []string{"b"}, wantFrom: []string{"b.jpg"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := upstreamtest.New(t)
			// The real fetcher, with the fake gateway's loopback address allowed.
			f := fetch.New(fetch.Config{AllowedHosts: []string{"127.0.0.1"}})
			c := upstream.New(upstream.Config{BaseURL: gw.URL, APIKey: testKey, UserIDSecret: testSecret}, f)
			gw.Push(tt.reply(gw))
			m := imagesModel("flux")
			m.ResponseFormat = tt.format
			imgs, err := c.Generate(context.Background(), imagesRequest(m, ""), nil)
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			if len(imgs) != len(tt.wantMIME) {
				t.Fatalf("got %d images, want %d", len(imgs), len(tt.wantMIME))
			}
			for i, img := range imgs {
				if img.MIME != tt.wantMIME[i] || !bytes.Equal(img.Data, tt.wantData[i]) || img.Note != tt.wantNotes[i] {
					t.Errorf("image %d: %s, %d bytes, note %q; want %s, %d bytes, note %q", i, img.MIME, len(img.Data), img.Note, tt.wantMIME[i], len(tt.wantData[i]), tt.wantNotes[i])
				}
				if want := tt.wantFrom[i]; (want == "") != (img.Source == "") || !strings.HasSuffix(img.Source, want) {
					t.Errorf("image %d: Source = %q, want one ending in %q", i, img.Source, want)
				}
			}
		})
	}
}

func TestImagesErrors(t *testing.T) {
	html502 := "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"
	tests := []struct {
		name      string
		replies   []upstreamtest.Reply
		wantCode  core.Code
		wantCalls int
		wantWaits int
		timeout   time.Duration // upstream.timeout; default 1m
		check     func(t *testing.T, e *core.Error)
	}{
		{name: "401 bad key", replies: []upstreamtest.Reply{upstreamtest.Status(401, upstreamtest.ErrorBody("", "无效的令牌"), nil)}, wantCode: core.CodeUpstreamAuth, wantCalls: 1},
		{name: "401 token quota used up", replies: []upstreamtest.Reply{upstreamtest.Status(401, upstreamtest.ErrorBody("", "该令牌额度已用尽 (request id: 2024112416405184547498)"), nil)}, wantCode: core.CodeUpstreamBalance, wantCalls: 1},
		{name: "403 insufficient_user_quota", replies: []upstreamtest.Reply{upstreamtest.Status(403, upstreamtest.ErrorBody("insufficient_user_quota", "用户额度不足"), nil)}, wantCode: core.CodeUpstreamBalance, wantCalls: 1},
		{name: "404 wrong base URL", replies: []upstreamtest.Reply{upstreamtest.Status(404, "404 page not found", nil)}, wantCode: core.CodeUpstreamAuth, wantCalls: 1},
		{name: "400 unknown parameter", replies: []upstreamtest.Reply{upstreamtest.Status(400, upstreamtest.ErrorBody("unknown_parameter", "Unknown parameter: 'response_format'."), nil)}, wantCode: core.CodeUpstreamAuth, wantCalls: 1},
		{name: "503 model_not_found", replies: []upstreamtest.Reply{upstreamtest.Status(503, upstreamtest.ErrorBody("model_not_found", "当前分组 default 下对于模型 dall-e-3 无可用渠道"), nil)}, wantCode: core.CodeModelUnavailable, wantCalls: 1},
		{name: "429 retried with Retry-After, then fine", replies: []upstreamtest.Reply{upstreamtest.Status(429, upstreamtest.ErrorBody("", "当前分组上游负载已饱和"), upstreamtest.RetryAfter(3*time.Second))}, wantCalls: 2, wantWaits: 1},
		{name: "429 until exhausted", replies: repeat(3, upstreamtest.Status(429, upstreamtest.ErrorBody("", "当前分组上游负载已饱和"), nil)), wantCode: core.CodeOverloaded, wantCalls: 3, wantWaits: 2},
		{name: "500 retried until exhausted", replies: repeat(3, upstreamtest.Status(500, upstreamtest.ErrorBody("bad_response_status_code", "bad response status code 500"), nil)), wantCode: core.CodeUpstreamFailed, wantCalls: 3, wantWaits: 2},
		{name: "HTML 502 retried, then bad response", replies: repeat(3, upstreamtest.Status(502, html502, nil)), wantCode: core.CodeBadResponse, wantCalls: 3, wantWaits: 2,
			check: func(t *testing.T, e *core.Error) {
				if !strings.Contains(e.Error(), "502 Bad Gateway") {
					t.Errorf("operator detail %q lacks the page excerpt", e.Error())
				}
			}},
		{name: "truncated JSON", replies: []upstreamtest.Reply{upstreamtest.JSON(200, `{"created":1,"data":[{"url":"https://img.exa`)}, wantCode: core.CodeBadResponse, wantCalls: 1},
		{name: "not an images answer", replies: []upstreamtest.Reply{upstreamtest.JSON(200, upstreamtest.Completion("![a](https://img.example.com/a.png)"))}, wantCode: core.CodeBadResponse, wantCalls: 1},
		{name: "error inside a 200", replies: []upstreamtest.Reply{upstreamtest.JSON(200, upstreamtest.ErrorBody("insufficient_user_quota", "用户额度不足"))}, wantCode: core.CodeUpstreamBalance, wantCalls: 1},
		{name: "empty data", replies: []upstreamtest.Reply{upstreamtest.JSON(200, upstreamtest.Images())}, wantCode: core.CodeLostInRelay, wantCalls: 1},
		{name: "DALL·E content policy is a refusal with its words", replies: []upstreamtest.Reply{upstreamtest.PolicyRefusal()}, wantCode: core.CodeRefused, wantCalls: 1,
			check: func(t *testing.T, e *core.Error) {
				if !strings.Contains(e.Detail, "rejected as a result of our safety system") {
					t.Errorf("Detail = %q", e.Detail)
				}
			}},
		{name: "gpt-image moderation is a refusal", replies: []upstreamtest.Reply{upstreamtest.Status(400, upstreamtest.ErrorBody("moderation_blocked", "Your request was rejected by the safety system."), nil)}, wantCode: core.CodeRefused, wantCalls: 1},
		{name: "a hang hits upstream.timeout", timeout: 200 * time.Millisecond, replies: []upstreamtest.Reply{upstreamtest.Hang()}, wantCode: core.CodeTimeout, wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, upstream.Config{Timeout: cmp.Or(tt.timeout, time.Minute)})
			e.gw.Push(tt.replies...)
			for _, withInput := range []bool{false, true} {
				req := imagesRequest(imagesModel("dall-e-3"), "")
				path := upstreamtest.ImagesGenerationsPath
				if withInput {
					req.Input = &core.Image{Data: upstreamtest.PNG(4, 4), MIME: "image/png"}
					path = upstreamtest.ImagesEditsPath
					e.gw.Push(tt.replies...) // edits fail the same way
				}
				before, waits := e.gw.Calls(), len(e.sleeper.Waits())
				imgs, err := e.client.Generate(context.Background(), req, nil)
				if got := core.ErrorCode(err); got != tt.wantCode {
					t.Errorf("input %v: code = %q, want %q (%v)", withInput, got, tt.wantCode, err)
				}
				if calls := e.gw.Calls() - before; calls != tt.wantCalls {
					t.Errorf("input %v: gateway calls = %d, want %d", withInput, calls, tt.wantCalls)
				}
				if w := len(e.sleeper.Waits()) - waits; w != tt.wantWaits {
					t.Errorf("input %v: %d waits between attempts, want %d", withInput, w, tt.wantWaits)
				}
				for _, r := range e.gw.Requests()[before:] {
					if r.Path != path {
						t.Errorf("input %v: request to %s, want %s", withInput, r.Path, path)
					}
				}
				if tt.wantCode == "" {
					if len(imgs) != 1 {
						t.Errorf("input %v: got %d images", withInput, len(imgs))
					}
					continue
				}
				var ce *core.Error
				if !errors.As(err, &ce) || !strings.HasPrefix(ce.Err.Error(), "upstream: ") {
					t.Fatalf("input %v: error %v is not a *core.Error with an upstream: detail", withInput, err)
				}
				if strings.Contains(ce.Error(), testKey) || strings.Contains(ce.Detail, testKey) {
					t.Errorf("the key leaked: %v", ce)
				}
				if tt.check != nil {
					tt.check(t, ce)
				}
			}
			if refs := e.fetcher.Refs(); tt.wantCode != "" && len(refs) != 0 {
				t.Errorf("fetched %q after a failure", refs)
			}
		})
	}
}

// An aspect the model has no size for is refused before the gateway is
// asked: the size is part of the request.
func TestImagesAspectWithoutSize(t *testing.T) {
	tests := []struct {
		name   string
		model  core.Model
		aspect string
		want   []string // the choices offered
	}{
		{"DALL·E 3 has no 3:2", imagesModel("dall-e-3"), "3:2", []string{"16:9", "1:1", "9:16"}},
		{"gpt-image-1 has no 16:9", imagesModel("gpt-image-1"), "16:9", []string{"3:2", "1:1", "2:3"}},
		{"an unknown model is square only", imagesModel("some-model"), "4:3", []string{"1:1"}},
		{"configured sizes replace the defaults", core.Model{Name: "d", UpstreamModel: "dall-e-3", API: core.APIImages, Sizes: map[string]string{"1:1": "1024x1024"}}, "16:9", []string{"1:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, upstream.Config{})
			_, err, _ := e.generate(t, imagesRequest(tt.model, tt.aspect))
			if err == nil || err.Code != core.CodeInvalidOption || err.Reason != core.ReasonUnsupported || err.Option != core.OptionAspect || err.Value != tt.aspect {
				t.Fatalf("err = %#v, want an unsupported aspect", err)
			}
			if !slices.Equal(err.Choices, tt.want) {
				t.Errorf("choices = %v, want %v", err.Choices, tt.want)
			}
			if e.gw.Calls() != 0 {
				t.Errorf("the gateway was called %d times", e.gw.Calls())
			}
		})
	}
}

func TestImagesEditRequest(t *testing.T) {
	tests := []struct {
		name     string
		input    core.Image
		model    core.Model
		wantType string
		wantFile string
		wantForm map[string]string
	}{
		{
			name:     "PNG to gpt-image-1",
			input:    core.Image{Data: upstreamtest.PNG(8, 8), MIME: "image/png"},
			model:    core.Model{Name: "gpt", UpstreamModel: "gpt-image-1", API: core.APIImages, Quality: "high", Style: "vivid", AcceptsImage: true},
			wantType: "image/png", wantFile: "image.png",
			wantForm: map[string]string{"model": "gpt-image-1", "n": "1", "size": "1536x1024", "quality": "high", "response_format": ""},
		},
		{
			name:     "JPEG to Flux, its type sniffed",
			input:    core.Image{Data: upstreamtest.JPEG(8, 8)},
			model:    core.Model{Name: "flux", UpstreamModel: "flux-kontext-pro", API: core.APIImages, AcceptsImage: true},
			wantType: "image/jpeg", wantFile: "image.jpg",
			wantForm: map[string]string{"model": "flux-kontext-pro", "n": "1", "size": "1216x832", "quality": "", "response_format": "url"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, upstream.Config{})
			e.gw.Push(upstreamtest.JSON(200, upstreamtest.Images(upstreamtest.B64Image(upstreamtest.PNG(2, 2), "edited"))))
			req := imagesRequest(tt.model, "3:2")
			input := tt.input
			req.Input = &input
			imgs, err, _ := e.generate(t, req)
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			if len(imgs) != 1 || imgs[0].Note != "edited" {
				t.Errorf("images = %+v, want one with the note", imgs)
			}
			r := e.gw.Requests()[0]
			if r.Path != upstreamtest.ImagesEditsPath || !strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data; boundary=") {
				t.Fatalf("request %s with Content-Type %q, want a multipart edit", r.Path, r.Header.Get("Content-Type"))
			}
			img := r.Part("image")
			if img == nil || img.FileName != tt.wantFile || img.ContentType != tt.wantType || !bytes.Equal(img.Data, tt.input.Data) {
				t.Fatalf("image part = %+v, want %s as %s with the input's bytes", img, tt.wantFile, tt.wantType)
			}
			want := map[string]string{"prompt": req.Prompt, "user": upstream.Pseudonym(testSecret, testUser), "style": ""}
			for k, v := range tt.wantForm {
				want[k] = v
			}
			for k, v := range want {
				if got := r.FormValue(k); got != v {
					t.Errorf("form field %s = %q, want %q", k, got, v)
				}
				if v == "" && r.Part(k) != nil {
					t.Errorf("form field %s is sent empty; it should be left out", k)
				}
			}
		})
	}
}

// The images' addresses come from the gateway: the fetcher's guard applies
// to them as to chat answers.
func TestImagesPrivateURLRefused(t *testing.T) {
	for _, url := range []string{
		"http://169.254.169.254/latest/meta-data/iam/security-credentials/",
		"http://10.0.0.1/a.png",
		"http://[::1]/a.png",
		"", // the fake gateway itself, on 127.0.0.1 (set below)
	} {
		t.Run(url, func(t *testing.T) {
			gw := upstreamtest.New(t)
			if url == "" {
				url = gw.ImageURL("a.png")
			}
			c := upstream.New(upstream.Config{BaseURL: gw.URL, APIKey: testKey}, fetch.New(fetch.Config{}))
			gw.Push(upstreamtest.JSON(200, upstreamtest.Images(upstreamtest.URLImage(url, "x"))))
			_, err := c.Generate(context.Background(), imagesRequest(imagesModel("dall-e-3"), ""), nil)
			if core.ErrorCode(err) != core.CodeImageRejected || !errors.Is(err, fetch.ErrBlockedAddress) {
				t.Fatalf("err = %v, want image_rejected for a blocked address", err)
			}
			if hits := gw.ImageRequests(); len(hits) != 0 {
				t.Errorf("the image was fetched: %v", hits)
			}
		})
	}
}

// A b64_json image is held to the same size cap as a data URI.
func TestImagesB64TooLarge(t *testing.T) {
	gw := upstreamtest.New(t)
	c := upstream.New(upstream.Config{BaseURL: gw.URL, APIKey: testKey}, fetch.New(fetch.Config{MaxBytes: 4 << 10}))
	gw.Push(upstreamtest.JSON(200, upstreamtest.Images(upstreamtest.B64Image(upstreamtest.NoisePNG(64, 64), ""))))
	_, err := c.Generate(context.Background(), imagesRequest(imagesModel("flux"), ""), nil)
	if core.ErrorCode(err) != core.CodeImageRejected || !errors.Is(err, fetch.ErrTooLarge) {
		t.Fatalf("err = %v, want image_rejected: too large", err)
	}
	gw.Push(upstreamtest.JSON(200, upstreamtest.Images(upstreamtest.ImageDatum{B64JSON: "PGh0bWw+PC9odG1sPg=="})))
	_, err = c.Generate(context.Background(), imagesRequest(imagesModel("flux"), ""), nil)
	if core.ErrorCode(err) != core.CodeImageRejected || !errors.Is(err, fetch.ErrNotImage) {
		t.Fatalf("err = %v, want image_rejected: not an image", err)
	}
}

// The pipeline with an images model: the aspect becomes the size, the
// revised prompt reaches the delivery, and an aspect without a size is
// refused before any quota is reserved or the gateway asked.
func TestImagesPipeline(t *testing.T) {
	flux := core.Model{Name: "flux-pro", UpstreamModel: "flux-1.1-pro", API: core.APIImages}
	dalle := core.Model{Name: "dalle", UpstreamModel: "dall-e-3", API: core.APIImages, Quality: "hd"}
	tests := []struct {
		name     string
		model    string
		aspect   string
		wantCode core.Code
		wantSize string
		wantLeft int
	}{
		{name: "flux 16:9", model: "flux-pro", aspect: "16:9", wantSize: "1344x768", wantLeft: 2},
		{name: "dall-e-3 default aspect", model: "dalle", wantSize: "1024x1024", wantLeft: 2},
		{name: "dall-e-3 has no 21:9", model: "dalle", aspect: "21:9", wantCode: core.CodeInvalidOption, wantLeft: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPipelineWith(t, flux, dalle)
			p.gw.Push(upstreamtest.JSON(200, upstreamtest.Images(upstreamtest.URLImage(p.gw.ImageURL("a.png"), "A fox, rewritten."))))
			rep := &recorder{}
			_, err := p.svc.Imagine(context.Background(), core.Request{Key: "k", User: user, Scope: scope, Lang: core.English,
				Prompt: "a fox in the snow", Model: tt.model, Options: core.Options{Aspect: tt.aspect, Negative: "people"}}, rep)
			if got := core.ErrorCode(err); got != tt.wantCode {
				t.Fatalf("code = %q, want %q (%v)", got, tt.wantCode, err)
			}
			if left := p.remaining(t); left != tt.wantLeft {
				t.Errorf("remaining = %d, want %d", left, tt.wantLeft)
			}
			if tt.wantCode != "" {
				if p.gw.Calls() != 0 {
					t.Errorf("the gateway was called %d times for a refused job", p.gw.Calls())
				}
				return
			}
			r := p.gw.Requests()[0]
			if r.Path != upstreamtest.ImagesGenerationsPath || r.Size != tt.wantSize {
				t.Errorf("request %s size %q, want generations at %s", r.Path, r.Size, tt.wantSize)
			}
			if want := "a fox in the snow\nNegative prompt: people"; r.Prompt != want {
				t.Errorf("prompt = %q, want %q (no aspect line: the size carries it)", r.Prompt, want)
			}
			if len(rep.delivered) != 1 || len(rep.delivered[0].Images) != 1 || rep.delivered[0].Images[0].Note != "A fox, rewritten." {
				t.Fatalf("delivered %+v, want one image with the revised prompt", rep.delivered)
			}
		})
	}
}

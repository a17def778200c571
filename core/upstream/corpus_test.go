package upstream_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// The data URIs inside testdata/responses (a real 2×2 JPEG and PNG).
const (
	corpusJPEG = "data:image/jpeg;base64,/9j/2wCEAAYEBQYFBAYGBQYHBwYIChAKCgkJChQODwwQFxQYGBcUFhYaHSUfGhsjHBYWICwgIyYnKSopGR8tMC0oMCUoKSgBBwcHCggKEwoKEygaFhooKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKP/AABEIAAIAAgMBIgACEQEDEQH/xAGiAAABBQEBAQEBAQAAAAAAAAAAAQIDBAUGBwgJCgsQAAIBAwMCBAMFBQQEAAABfQECAwAEEQUSITFBBhNRYQcicRQygZGhCCNCscEVUtHwJDNicoIJChYXGBkaJSYnKCkqNDU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6g4SFhoeIiYqSk5SVlpeYmZqio6Slpqeoqaqys7S1tre4ubrCw8TFxsfIycrS09TV1tfY2drh4uPk5ebn6Onq8fLz9PX29/j5+gEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoLEQACAQIEBAMEBwUEBAABAncAAQIDEQQFITEGEkFRB2FxEyIygQgUQpGhscEJIzNS8BVictEKFiQ04SXxFxgZGiYnKCkqNTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqCg4SFhoeIiYqSk5SVlpeYmZqio6Slpqeoqaqys7S1tre4ubrCw8TFxsfIycrS09TV1tfY2dri4+Tl5ufo6ery8/T19vf4+fr/2gAMAwEAAhEDEQA/AMuy0rT/ALHB/oFp/q1/5Yr6fSpv7K0//nwtP+/K/wCFTWX/AB5wf9c1/lU9bSqTu9WKjVqezj7z2XU//9k="
	corpusPNG  = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAGklEQVR4nGJhYGioZ2BgYahnYGBgAAQAAP//DVMBhx4eML4AAAAASUVORK5CYII="
)

// golden is what a recorded gateway answer must come to.
type golden struct {
	status   int       // HTTP status to serve the file with (200 when 0)
	refs     []string  // what the fetcher is asked for, in order
	code     core.Code // the failure, "" for success
	detail   string    // a substring of the user-facing Detail
	percents []int     // progress percentages reported (streams)
}

func img(path string) string { return "https://img.example.com/" + path }

var corpus = map[string]golden{
	"markdown_single.json":              {refs: []string{img("sd/2024/11/24/a1b2c3d4.png")}},
	"markdown_multi_lines_chinese.json": {refs: []string{img("flux/7f3e/1.png"), img("flux/7f3e/2.png")}},
	"markdown_multi_one_line.json":      {refs: []string{img("batch/1.webp"), img("batch/2.webp")}},
	"markdown_title.json":               {refs: []string{img("cat.png")}},
	"markdown_empty_alt.json":           {refs: []string{img("empty-alt.jpeg")}},
	"signed_url_percent.json":           {refs: []string{img("outputs/8c1f.png?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20241124%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20241124T023037Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=9f86d081884c7d65%3D%3D")}},
	"data_uri_jpeg.json":                {refs: []string{corpusJPEG}},
	"bare_url.json":                     {refs: []string{img("files/xyz789.png")}},
	"bare_url_trailing_punct.json":      {refs: []string{img("files/abc.jpg"), img("files/abc-thumb.jpg")}},
	"download_link_dup.json":            {refs: []string{img("u/0b9e.png")}},
	"link_only_no_ext.json":             {refs: []string{img("view?id=42")}},
	"linked_thumbnail.json":             {refs: []string{img("t/thumb.png")}},
	"message_images.json":               {refs: []string{img("gemini/out-1.png")}},
	"content_parts.json":                {refs: []string{img("parts/1.jpg"), corpusPNG}},
	"multi_choice.json":                 {refs: []string{img("n/1.png"), img("n/2.png")}},
	"refusal_sensitive.json":            {code: core.CodeRefused, detail: "包含敏感内容"},
	"refusal_field.json":                {code: core.CodeRefused, detail: "I'm sorry"},
	"empty_content.json":                {code: core.CodeLostInRelay},
	"no_choices.json":                   {code: core.CodeBadResponse},
	"truncated.json":                    {code: core.CodeBadResponse},

	"error_in_200.json":                   {code: core.CodeUpstreamFailed},
	"error_insufficient_quota.json":       {status: 403, code: core.CodeUpstreamBalance},
	"error_rebranded_type.json":           {status: 403, code: core.CodeUpstreamBalance},
	"error_model_not_found.json":          {status: 503, code: core.CodeModelUnavailable},
	"error_overloaded.json":               {status: 429, code: core.CodeOverloaded},
	"error_bad_response_status_code.json": {status: 500, code: core.CodeUpstreamFailed},
	"error_do_request_failed.json":        {status: 500, code: core.CodeUpstreamFailed},
	"error_invalid_key.json":              {status: 401, code: core.CodeUpstreamAuth},
	"error_empty_message.json":            {status: 502, code: core.CodeBadResponse},
	"error_numeric_code.json":             {status: 500, code: core.CodeUpstreamFailed},
	"error_sensitive_words.json":          {status: 400, code: core.CodeRefused, detail: "sensitive words detected"},
	"html_502.html":                       {status: 502, code: core.CodeBadResponse},

	"stream_basic.sse":              {refs: []string{img("s/basic.png")}},
	"stream_progress_percent.sse":   {refs: []string{img("p/final.png")}, percents: []int{-1, 10, 45, 100}},
	"stream_reasoning.sse":          {refs: []string{img("r/1.jpg")}, percents: []int{-1, 50}},
	"stream_no_space_keepalive.sse": {refs: []string{img("k/1.png")}, percents: []int{-1}},
	"stream_multi_index.sse":        {refs: []string{img("m/a.png"), img("m/b.png")}},
	"stream_error_midway.sse":       {code: core.CodeOverloaded, percents: []int{-1}},
	"stream_empty_done.sse":         {code: core.CodeLostInRelay},
	"stream_refusal.sse":            {code: core.CodeRefused, detail: "抱歉，您的请求包含敏感内容", percents: []int{-1, -1}},
	"stream_crlf.sse":               {refs: []string{img("crlf/1.png")}},
	"stream_data_uri_split.sse":     {refs: []string{corpusPNG}},
	"stream_no_done.sse":            {refs: []string{img("nd/1.png")}},
	"stream_malformed_only.sse":     {code: core.CodeBadResponse},
}

func TestCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "responses", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 15 {
		t.Fatalf("only %d corpus files", len(files))
	}
	seen := map[string]bool{}
	for _, path := range files {
		name := filepath.Base(path)
		seen[name] = true
		want, ok := corpus[name]
		if !ok {
			t.Errorf("%s has no golden expectation", name)
			continue
		}
		t.Run(name, func(t *testing.T) {
			body, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			stream := strings.HasSuffix(name, ".sse")
			e := newEnv(t, upstream.Config{Retries: -1})
			switch status := max(want.status, 200); {
			case stream:
				// A relay loss is asked again without streaming: answer that
				// with nothing either.
				e.gw.Push(upstreamtest.SSE(string(body)), upstreamtest.JSON(200, upstreamtest.Completion("")))
			default:
				e.gw.Push(upstreamtest.Status(status, string(body), nil))
			}
			var percents []int
			imgs, gerr := e.client.Generate(context.Background(), request(stream), func(p core.GenProgress) {
				percents = append(percents, p.Percent)
			})
			if got := core.ErrorCode(gerr); got != want.code {
				t.Fatalf("code = %q, want %q (%v)", got, want.code, gerr)
			}
			if got := e.fetcher.Refs(); !equal(got, want.refs) {
				t.Errorf("fetched\n%q\nwant\n%q", got, want.refs)
			}
			if want.code == "" && len(imgs) != len(want.refs) {
				t.Errorf("got %d images, want %d", len(imgs), len(want.refs))
			}
			if d := core.AsError(gerr).Detail; gerr != nil && !strings.Contains(d, want.detail) {
				t.Errorf("Detail = %q, want it to contain %q", d, want.detail)
			}
			if stream && !slices.Equal(percents, want.percents) {
				t.Errorf("progress percents = %v, want %v", percents, want.percents)
			}
			// The same content through Extract (JSON bodies only: the
			// extractor sees decoded text, not the wire format).
			if want.code == "" && !stream && len(want.refs) > 0 && name != "message_images.json" && name != "content_parts.json" && name != "multi_choice.json" {
				if got := upstream.Extract(messageContent(t, body)); !equal(got, want.refs) {
					t.Errorf("Extract = %q, want %q", got, want.refs)
				}
			}
		})
	}
	for name := range corpus {
		if !seen[name] {
			t.Errorf("golden entry %s has no file", name)
		}
	}
}

// messageContent is choices[0].message.content of a chat.completion body.
func messageContent(t *testing.T, body []byte) string {
	t.Helper()
	var cc struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(body, &cc); err != nil || len(cc.Choices) == 0 {
		t.Fatalf("not a chat.completion: %v", err)
	}
	return cc.Choices[0].Message.Content
}

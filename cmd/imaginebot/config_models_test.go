package main

import (
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/imaginebot/imaginebot/core"
)

func TestModelAPIConfig(t *testing.T) {
	tests := []struct {
		name   string
		models string // the models: list
		want   []string
	}{
		{name: "chat by default, images with its keys", models: `
  - name: sd
  - name: dalle
    api: images
    upstream_model: dall-e-3
    sizes: {"1:1": 1024x1024, "16:9": 1792x1024}
    quality: hd
    style: natural
    response_format: b64_json
    accepts_image: true
  - name: chat-vision
    api: chat
    accepts_image: true
  - name: mj
    api: midjourney
    cost: 2
    action_cost: 1
    accepts_image: true
    prompt_template: "{{.Prompt}} --v 6.1{{with .Aspect}} --ar {{.}}{{end}}"
`},
		{name: "bad midjourney keys", models: `
  - name: mj
    api: midjourney
    stream: true
    system_prompt: "You draw."
    sizes: {"1:1": 1024x1024}
    quality: hd
    action_cost: 0
  - name: mj-dear
    api: midjourney
    action_cost: 1001
`, want: []string{
			"models[0].sizes: is only for api: images; remove it, or set models[0].api: images",
			"models[0].quality: is only for api: images",
			"models[0].stream: the midjourney API does not stream",
			"models[0].system_prompt: is sent only to chat models",
			"models[0].action_cost: 0 is out of range; use 1 to 1000 quota units per button pressed (default: the model's cost)",
			"models[1].action_cost: 1001 is out of range",
		}},
		{name: "action_cost on other kinds", models: `
  - name: sd
    action_cost: 1
  - name: dalle
    api: images
    action_cost: 1
`, want: []string{
			"models[0].action_cost: is only for api: midjourney; remove it, or set models[0].api: midjourney",
			"models[1].action_cost: is only for api: midjourney",
		}},
		{name: "an unknown api", models: `
  - name: x
    api: image
`, want: []string{`models[0].api: "image" is not a model API; use chat (the default: POST /v1/chat/completions), images (POST /v1/images/generations: DALL·E, gpt-image, Flux) or midjourney (the /mj task API)`}},
		{name: "images keys on a chat model", models: `
  - name: sd
    sizes: {"1:1": 1024x1024}
    quality: hd
    style: vivid
    response_format: url
`, want: []string{
			"models[0].sizes: is only for api: images; remove it, or set models[0].api: images",
			"models[0].quality: is only for api: images",
			"models[0].style: is only for api: images",
			"models[0].response_format: is only for api: images",
		}},
		{name: "bad images values", models: `
  - name: dalle
    api: images
    stream: true
    system_prompt: "You draw."
    sizes: {"16/9": 1792x1024, "1:1": "1024 x 1024", "9:16": 1024x1792}
    quality: "very high"
    style: "<b>"
    response_format: png
`, want: []string{
			"models[0].stream: the images API does not stream; remove it",
			"models[0].system_prompt: is sent only to chat models",
			`models[0].sizes: "16/9" is not an aspect ratio; use W:H`,
			`models[0].sizes["1:1"]: "1024 x 1024" is not a size; use WIDTHxHEIGHT`,
			`models[0].quality: "very high" is not a quality value`,
			`models[0].style: "<b>" is not a style value`,
			`models[0].response_format: "png" is not a response format; use url (default`,
		}},
		{name: "empty sizes", models: `
  - name: g
    api: images
    upstream_model: gpt-image-1
    sizes: {}
`, want: []string{"models[0].sizes: is empty; list at least one \"W:H\": WIDTHxHEIGHT, or remove it for the defaults of gpt-image-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, "models:"+tt.models, 0o600)
			cfg, err := LoadConfig(path, envMap(nil), func(string) {})
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.Models[0].API != "chat" {
					t.Errorf("api defaults to %q, want chat", cfg.Models[0].API)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a ConfigError", err)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("missing problem %q in:\n%s", w, msg)
				}
			}
			if len(ce.Problems) != len(tt.want) {
				t.Errorf("%d problems, want %d:\n%s", len(ce.Problems), len(tt.want), msg)
			}
		})
	}
}

// The configuration reaches the pipeline's models as written, with the
// images API's own defaults (template, no streaming).
func TestModelAPIWiring(t *testing.T) {
	path := writeConfig(t, `
upstream:
  stream: true
models:
  - name: sd
  - name: dalle
    api: images
    upstream_model: dall-e-3
    sizes: {"1:1": 1024x1024, "16:9": 1792x1024}
    quality: hd
    style: natural
    response_format: b64_json
    accepts_image: true
  - name: flux-pro
    api: images
    upstream_model: flux-1.1-pro
    prompt_template: "{{.Prompt}}, {{.Aspect}}"
  - name: mj
    api: midjourney
    cost: 3
    accepts_image: true
  - name: mj-cheap-buttons
    api: midjourney
    cost: 3
    action_cost: 1
`, 0o600)
	cfg, err := LoadConfig(path, envMap(nil), func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := coreConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sd, dalle, flux := cc.Models[0], cc.Models[1], cc.Models[2]
	if sd.API != core.APIChat || !sd.Stream || sd.Sizes != nil {
		t.Errorf("chat model = %+v, want api chat streaming as upstream.stream says", sd)
	}
	if dalle.API != core.APIImages || dalle.Stream || dalle.Quality != "hd" || dalle.Style != "natural" || dalle.ResponseFormat != "b64_json" ||
		!dalle.AcceptsImage || !maps.Equal(dalle.Sizes, map[string]string{"1:1": "1024x1024", "16:9": "1792x1024"}) {
		t.Errorf("images model = %+v", dalle)
	}
	if got, _ := dalle.Render("a cat", core.Options{Aspect: "16:9"}); got != "a cat" {
		t.Errorf("images model's default template rendered %q, want the prompt without the aspect", got)
	}
	if got, _ := flux.Render("a cat", core.Options{Aspect: "16:9"}); got != "a cat, 16:9" {
		t.Errorf("a configured template rendered %q", got)
	}
	if s, err := flux.Size("16:9"); err != nil || s != "1344x768" || flux.Sizes != nil {
		t.Errorf("flux 16:9 = %q, %v with sizes %v; want the Flux default", s, err, flux.Sizes)
	}
	mj, cheap := cc.Models[3], cc.Models[4]
	if mj.API != core.APIMidjourney || mj.Stream || !mj.AcceptsImage || mj.Cost != 3 || mj.ActionUnits() != 3 {
		t.Errorf("midjourney model = %+v, want no streaming and actions at the model's cost", mj)
	}
	if cheap.ActionUnits() != 1 || cheap.Cost != 3 {
		t.Errorf("action_cost 1 gave actions at %d units", cheap.ActionUnits())
	}
	if got, _ := mj.Render("a cat", core.Options{Aspect: "16:9", Negative: "dogs"}); got != "a cat --ar 16:9 --no dogs" {
		t.Errorf("midjourney model's default template rendered %q, want the options as parameters", got)
	}
}

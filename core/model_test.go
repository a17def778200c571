package core_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/imaginebot/imaginebot/core"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want core.Command
		code core.Code
	}{
		{"plain", "a fox in the snow", core.Command{Prompt: "a fox in the snow"}, ""},
		{"all flags", "a fox --model flux --ar 16:9 --no people, text", core.Command{Prompt: "a fox", Model: "flux", Options: core.Options{Aspect: "16:9", Negative: "people, text"}}, ""},
		{"flags first", "--ar 1:1 --m sd a cat", core.Command{Prompt: "a cat", Model: "sd", Options: core.Options{Aspect: "1:1"}}, ""},
		{"no then more prompt flag", "cat --no dog --ar 3:2", core.Command{Prompt: "cat", Options: core.Options{Aspect: "3:2", Negative: "dog"}}, ""},
		{"equals form", "cat --model=flux --ar=4:3", core.Command{Prompt: "cat", Model: "flux", Options: core.Options{Aspect: "4:3"}}, ""},
		{"em dash from phones", "cat —ar 9:16", core.Command{Prompt: "cat", Options: core.Options{Aspect: "9:16"}}, ""},
		{"chinese", "雪地里的狐狸 --no 人", core.Command{Prompt: "雪地里的狐狸", Options: core.Options{Negative: "人"}}, ""},
		{"markdown chars kept", "_*[]()~`>#+-=|{}.! <b>", core.Command{Prompt: "_*[]()~`>#+-=|{}.! <b>"}, ""},
		{"bad aspect", "cat --ar wide", core.Command{}, core.CodeInvalidOption},
		{"missing value", "cat --model", core.Command{}, core.CodeInvalidOption},
		{"unknown flag", "cat --seed 4", core.Command{}, core.CodeInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := core.ParseCommand(tt.in)
			if code := core.ErrorCode(err); code != tt.code {
				t.Fatalf("code = %q (%v), want %q", code, err, tt.code)
			}
			if tt.code == "" && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRenderTemplate(t *testing.T) {
	def := core.Model{Name: "sd"}
	got, err := def.Render("a cat", core.Options{Aspect: "16:9", Negative: "dogs"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "a cat\nAspect ratio: 16:9\nNegative prompt: dogs"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got, _ := def.Render("a cat", core.Options{}); got != "a cat" {
		t.Fatalf("no options: %q", got)
	}
	if _, err := core.ParseTemplate("bad", "{{.Prompt}} {{.Seed}}"); err == nil {
		t.Fatal("template with an unknown field accepted")
	}
	if _, err := core.ParseTemplate("bad", "{{.Prompt"); err == nil {
		t.Fatal("broken template accepted")
	}
}

func TestImagesModelSizes(t *testing.T) {
	images := func(upstream string, sizes map[string]string) core.Model {
		return core.Model{Name: "m", UpstreamModel: upstream, API: core.APIImages, Sizes: sizes}
	}
	tests := []struct {
		name    string
		model   core.Model
		aspect  string
		want    string
		choices []string // when refused
	}{
		{"DALL·E 3 square", images("dall-e-3", nil), "1:1", "1024x1024", nil},
		{"DALL·E 3 landscape", images("dall-e-3", nil), "16:9", "1792x1024", nil},
		{"DALL·E 3 portrait", images("dall-e-3", nil), "9:16", "1024x1792", nil},
		{"DALL·E 3 by a reseller's name", images("DALL-E-3-HD", nil), "16:9", "1792x1024", nil},
		{"DALL·E 3 has no 4:3", images("dall-e-3", nil), "4:3", "", []string{"16:9", "1:1", "9:16"}},
		{"gpt-image-1 3:2", images("gpt-image-1", nil), "3:2", "1536x1024", nil},
		{"gpt-image-1 2:3", images("gpt-image-1", nil), "2:3", "1024x1536", nil},
		{"gpt-image-1 has no 9:16", images("gpt-image-1", nil), "9:16", "", []string{"3:2", "1:1", "2:3"}},
		{"Flux 16:9", images("black-forest-labs/FLUX.1-schnell", nil), "16:9", "1344x768", nil},
		{"Flux 2:3", images("flux-dev", nil), "2:3", "832x1216", nil},
		{"Flux 4:3", images("flux-pro", nil), "4:3", "1152x896", nil},
		{"Flux has no 21:9", images("flux", nil), "21:9", "", []string{"16:9", "3:2", "4:3", "1:1", "3:4", "2:3", "9:16"}},
		{"the name is the id without upstream_model", core.Model{Name: "dall-e-3", API: core.APIImages}, "16:9", "1792x1024", nil},
		{"unknown model: square", images("sdxl-turbo", nil), "1:1", "1024x1024", nil},
		{"unknown model: nothing else", images("sdxl-turbo", nil), "16:9", "", []string{"1:1"}},
		{"no aspect takes 1:1", images("gpt-image-1", nil), "", "1024x1024", nil},
		{"configured sizes win", images("dall-e-3", map[string]string{"16:9": "1344x768", "21:9": "1536x640"}), "21:9", "1536x640", nil},
		{"configured sizes replace the defaults", images("dall-e-3", map[string]string{"16:9": "1344x768"}), "1:1", "", []string{"16:9"}},
		{"configured without 1:1: no aspect sends no size", images("dall-e-3", map[string]string{"16:9": "1344x768"}), "", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.model.Size(tt.aspect)
			checkErr := tt.model.CheckOptions(core.Options{Aspect: tt.aspect})
			if tt.choices == nil {
				if err != nil || checkErr != nil || got != tt.want {
					t.Fatalf("Size(%q) = %q, %v (CheckOptions %v); want %q", tt.aspect, got, err, checkErr, tt.want)
				}
				return
			}
			var e *core.Error
			if !errors.As(err, &e) || e.Code != core.CodeInvalidOption || e.Reason != core.ReasonUnsupported ||
				e.Option != core.OptionAspect || e.Value != tt.aspect || !slices.Equal(e.Choices, tt.choices) {
				t.Fatalf("Size(%q) = %q, %#v; want an unsupported-aspect error offering %v", tt.aspect, got, err, tt.choices)
			}
			if core.ErrorCode(checkErr) != core.CodeInvalidOption {
				t.Errorf("CheckOptions = %v, want the same refusal", checkErr)
			}
		})
	}
	// A chat model takes any aspect: it only reads it in the prompt.
	if err := (core.Model{Name: "sd"}).CheckOptions(core.Options{Aspect: "21:9"}); err != nil {
		t.Errorf("chat model CheckOptions = %v", err)
	}
	// DefaultSizes hands out a copy: a caller's change does not leak.
	core.DefaultSizes("dall-e-3")["1:1"] = "1x1"
	if s, _ := images("dall-e-3", nil).Size("1:1"); s != "1024x1024" {
		t.Errorf("a change to DefaultSizes' map leaked: %q", s)
	}
}

func TestImagesModelDefaults(t *testing.T) {
	tests := []struct {
		model  core.Model
		format string
	}{
		{core.Model{Name: "d", UpstreamModel: "dall-e-3", API: core.APIImages}, "url"},
		{core.Model{Name: "f", UpstreamModel: "flux", API: core.APIImages}, "url"},
		// gpt-image answers b64_json whatever is asked, and refuses the field.
		{core.Model{Name: "g", UpstreamModel: "gpt-image-1", API: core.APIImages}, ""},
		{core.Model{Name: "g", UpstreamModel: "gpt-image-1", API: core.APIImages, ResponseFormat: "b64_json"}, "b64_json"},
		{core.Model{Name: "d", UpstreamModel: "dall-e-3", API: core.APIImages, ResponseFormat: "b64_json"}, "b64_json"},
	}
	for _, tt := range tests {
		if got := tt.model.ImagesResponseFormat(); got != tt.format {
			t.Errorf("%s %q: response format %q, want %q", tt.model.UpstreamModel, tt.model.ResponseFormat, got, tt.format)
		}
	}
	// An images model's default template leaves the aspect to the size.
	got, err := core.Model{Name: "d", API: core.APIImages}.Render("a cat", core.Options{Aspect: "16:9", Negative: "dogs"})
	if want := "a cat\nNegative prompt: dogs"; err != nil || got != want {
		t.Errorf("Render = %q, %v; want %q", got, err, want)
	}
}

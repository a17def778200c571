package core_test

import (
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

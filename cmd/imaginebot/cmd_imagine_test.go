package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

var goodKey = map[string]string{"IMAGINEBOT_UPSTREAM_API_KEY": "sk-good"}

// Two runs in the same second into one folder keep both files.
func TestImagineCommandRunsKeepEachOthersFiles(t *testing.T) {
	gw := upstreamtest.New(t)
	cfg := gatewayConfig(t, gw, "")
	dir := t.TempDir()
	var saved []string
	for i := range 2 {
		code, out, errOut := runCLI(t, goodKey, "imagine", "-config", cfg, "-o", dir, fmt.Sprintf("fox %d", i))
		if code != 0 {
			t.Fatalf("run %d: exit %d: %s", i, code, errOut)
		}
		saved = append(saved, strings.Fields(out)...)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(saved) != 2 || saved[0] == saved[1] || len(entries) != 2 {
		t.Fatalf("saved %q, folder holds %d files", saved, len(entries))
	}
}

// The same second and even the same job key never overwrite a file: the
// next free name is taken.
func TestCLIReporterNeverOverwrites(t *testing.T) {
	dir := t.TempDir()
	created := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	png := core.Image{Data: upstreamtest.PNG(4, 4), MIME: "image/png"}
	deliver := func(key string) []string {
		t.Helper()
		var out bytes.Buffer
		r := &cliReporter{w: &bytes.Buffer{}, out: &out, dir: dir, lang: core.English}
		d := core.Delivery{Job: core.Job{Key: key, Created: created}, Images: []core.Image{png, png}}
		if err := r.Deliver(context.Background(), d); err != nil {
			t.Fatal(err)
		}
		return strings.Fields(out.String())
	}
	first := deliver("cli:1")
	other := deliver("cli:2")
	again := deliver("cli:1")

	seen := map[string]bool{}
	for _, name := range append(append(first, other...), again...) {
		if seen[name] {
			t.Fatalf("%s written twice: %q %q %q", name, first, other, again)
		}
		seen[name] = true
		if !strings.HasPrefix(filepath.Base(name), "imaginebot-20240501-120000-") || !strings.HasSuffix(name, ".png") {
			t.Errorf("name %s", name)
		}
	}
	if len(seen) != 6 {
		t.Fatalf("%d files", len(seen))
	}
	if want := strings.TrimSuffix(first[0], ".png") + "_2.png"; again[0] != want {
		t.Errorf("taken name gave %s, want %s", again[0], want)
	}
}

func TestCreateFreeFailsClearlyWhenEveryNameIsTaken(t *testing.T) {
	dir := t.TempDir()
	for n := 1; n <= 100; n++ {
		if _, err := createFree(dir, "x", ".png", []byte("old")); err != nil {
			t.Fatalf("file %d: %v", n, err)
		}
	}
	_, err := createFree(dir, "x", ".png", []byte("new"))
	if err == nil || !strings.Contains(err.Error(), "nothing was overwritten") {
		t.Fatalf("err = %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "x.png")); string(data) != "old" {
		t.Fatalf("x.png = %q", data)
	}
}

// Flags work before and after the prompt and never end up in it.
func TestImagineCommandFlagsAfterThePrompt(t *testing.T) {
	tests := []struct {
		name    string
		args    []string // DIR is replaced by the output folder
		prompt  string   // the text sent upstream
		model   string
		code    int
		wantErr string
	}{
		{name: "flags first", args: []string{"-o", "DIR", "-model", "flux", "a fox"}, prompt: "a fox", model: "flux"},
		{name: "flags after a quoted prompt", args: []string{"a fox", "-o", "DIR", "-model", "flux"}, prompt: "a fox", model: "flux"},
		{name: "flags after loose words", args: []string{"a", "fox", "-o", "DIR", "in", "snow"}, prompt: "a fox in snow"},
		{name: "flags on both sides", args: []string{"-model", "flux", "a fox", "-o=DIR"}, prompt: "a fox", model: "flux"},
		{name: "double-dash flag after the prompt", args: []string{"a fox", "--o", "DIR"}, prompt: "a fox"},
		{name: "double dash ends the flags", args: []string{"-o", "DIR", "--", "a fox", "-o", "x"}, prompt: "a fox -o x"},
		{name: "a negative number is prompt text", args: []string{"-o", "DIR", "a fox at", "-5", "degrees"}, prompt: "a fox at -5 degrees"},
		{name: "unknown flag after the prompt", args: []string{"a fox", "-x"}, code: 2, wantErr: "flag provided but not defined: -x"},
		{name: "flag after the prompt without a value", args: []string{"a fox", "-o"}, code: 2, wantErr: "flag needs an argument: -o"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := upstreamtest.New(t)
			dir := t.TempDir()
			args := []string{"imagine", "-config", gatewayConfig(t, gw, "")}
			for _, a := range tt.args {
				args = append(args, strings.ReplaceAll(a, "DIR", dir))
			}
			code, out, errOut := runCLI(t, goodKey, args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d: %s", code, tt.code, errOut)
			}
			if tt.code != 0 {
				if !strings.Contains(errOut, tt.wantErr) || gw.Calls() != 0 {
					t.Fatalf("stderr lacks %q or the gateway was called (%d):\n%s", tt.wantErr, gw.Calls(), errOut)
				}
				return
			}
			req := gw.Requests()[0]
			if req.Messages[len(req.Messages)-1].Content != tt.prompt {
				t.Errorf("prompt sent %q, want %q", req.Messages[len(req.Messages)-1].Content, tt.prompt)
			}
			if tt.model != "" && req.Model != tt.model {
				t.Errorf("model %q, want %q", req.Model, tt.model)
			}
			if files := strings.Fields(out); len(files) != 1 || filepath.Dir(files[0]) != dir {
				t.Errorf("saved %q, want one file in %s", out, dir)
			}
		})
	}
}

// Options inside the prompt are read as a chat user's; a flag wins over the
// same option there.
func TestImagineCommandPromptOptions(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		content string // the message sent upstream
		model   string
		code    int
		want    []string // in stderr, for failures
	}{
		{name: "aspect in the prompt", args: []string{"a fox --ar 16:9"}, content: "a fox\nAspect ratio: 16:9"},
		{name: "aspect in loose words", args: []string{"a", "fox", "--ar", "16:9"}, content: "a fox\nAspect ratio: 16:9"},
		{name: "model and negative in the prompt", args: []string{"a fox --model flux --no people, text"}, model: "flux",
			content: "a fox\nNegative prompt: people, text"},
		{name: "em dash as phones type it", args: []string{"a fox —ar 3:2"}, content: "a fox\nAspect ratio: 3:2"},
		{name: "the flag wins", args: []string{"-ar", "1:1", "-model", "stable-diffusion", "a fox --ar 16:9 --model flux"},
			model: "stable-diffusion", content: "a fox\nAspect ratio: 1:1"},
		{name: "the flag wins after the prompt", args: []string{"a fox --no cats", "-no", "dogs"}, content: "a fox\nNegative prompt: dogs"},
		{name: "unknown option in the prompt", args: []string{"a fox --size 3"}, code: 2,
			want: []string{"“--size” in the prompt is not an option", "-model NAME, -ar W:H and -no TEXT", "usage: imaginebot imagine"}},
		{name: "bad aspect in the prompt", args: []string{"a fox --ar 16x9"}, code: 2, want: []string{"“16x9” is not an aspect ratio", "-ar 16:9"}},
		{name: "bad aspect flag", args: []string{"-ar", "16x9", "a fox"}, code: 2, want: []string{"“16x9” is not an aspect ratio", "-ar 16:9"}},
		{name: "option without a value", args: []string{"a fox --ar"}, code: 2, want: []string{"-ar needs a value"}},
		{name: "nothing left but options", args: []string{"--", "--ar 16:9"}, code: 2, want: []string{"give a prompt"}},
		{name: "unknown model in the prompt", args: []string{"a fox --model dalle"}, code: 1,
			want: []string{"unknown model “dalle”: -model takes", "stable-diffusion, flux"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := upstreamtest.New(t)
			args := append([]string{"imagine", "-config", gatewayConfig(t, gw, ""), "-o", t.TempDir()}, tt.args...)
			code, _, errOut := runCLI(t, goodKey, args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d: %s", code, tt.code, errOut)
			}
			if tt.code != 0 {
				for _, w := range tt.want {
					if !strings.Contains(errOut, w) {
						t.Errorf("stderr lacks %q:\n%s", w, errOut)
					}
				}
				if gw.Calls() != 0 {
					t.Errorf("the gateway was called %d times", gw.Calls())
				}
				return
			}
			req := gw.Requests()[0]
			if got := req.Messages[len(req.Messages)-1].Content; got != tt.content {
				t.Errorf("sent %q, want %q", got, tt.content)
			}
			if want := cmpOr(tt.model, "stable-diffusion"); req.Model != want {
				t.Errorf("model %q, want %q", req.Model, want)
			}
		})
	}
}

func cmpOr(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// Every failure the CLI can show speaks to the operator: nothing about a
// chat user's quota or /help, and options spelled as the flags.
func TestImagineErrorsSpeakToTheOperator(t *testing.T) {
	type tc struct {
		name string
		err  *core.Error
		want []string
	}
	var tests []tc
	for _, c := range core.Codes {
		tests = append(tests, tc{name: string(c), err: &core.Error{Code: c, Err: errors.New("upstream: HTTP 500")}})
	}
	tests = append(tests,
		tc{"unknown model", &core.Error{Code: core.CodeUnknownModel, Option: core.OptionModel, Value: "dalle", Choices: []string{"stable-diffusion", "flux"}},
			[]string{"-model", "stable-diffusion, flux", "“dalle”"}},
		tc{"unknown option", &core.Error{Code: core.CodeInvalidOption, Reason: core.ReasonUnknownOption, Option: "size"},
			[]string{"--size", "-model NAME", "-ar W:H", "-no TEXT"}},
		tc{"model without a value", &core.Error{Code: core.CodeInvalidOption, Reason: core.ReasonNoValue, Option: core.OptionModel},
			[]string{"-model needs a value", "-ar W:H"}},
		tc{"bad aspect", &core.Error{Code: core.CodeInvalidOption, Reason: core.ReasonMalformed, Option: core.OptionAspect, Value: "16x9"},
			[]string{"-ar 16:9"}},
		tc{"bad key", &core.Error{Code: core.CodeUpstreamAuth}, []string{"upstream.api_key", "IMAGINEBOT_UPSTREAM_API_KEY", "upstream.base_url"}},
		tc{"no channel", &core.Error{Code: core.CodeModelUnavailable}, []string{"upstream_model", "-model"}},
		tc{"unreachable", &core.Error{Code: core.CodeUpstreamFailed}, []string{"upstream.base_url", "network"}},
		tc{"private image host", &core.Error{Code: core.CodeImageRejected}, []string{"images.allow_private_hosts"}},
		tc{"too slow", &core.Error{Code: core.CodeTimeout}, []string{"limits.job_timeout", "upstream.timeout"}},
		tc{"overloaded", &core.Error{Code: core.CodeOverloaded, RetryAfter: 1500 * time.Millisecond}, []string{"try again in 2s"}},
		tc{"refusal shows the gateway's words", &core.Error{Code: core.CodeRefused, Detail: "抱歉，内容敏感"}, []string{"the gateway said: “抱歉，内容敏感”"}},
		tc{"empty reply", &core.Error{Code: core.CodeLostInRelay, Reason: core.ReasonEmpty}, []string{"came back empty", "upstream.stream"}},
		tc{"detail follows", &core.Error{Code: core.CodeUpstreamAuth, Err: errors.New("upstream: HTTP 401")}, []string{"\n  detail: upstream: HTTP 401"}},
		tc{"bare error", &core.Error{Code: core.CodeInternal, Err: errors.New("boom")}, []string{"internal error", "detail: boom"}},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, lang := range []core.Lang{core.English, core.SimplifiedChinese, core.TraditionalChinese} {
				msg := jobError{err: tt.err, lang: lang}.Error()
				if strings.TrimSpace(strings.Split(msg, "\n")[0]) == "" {
					t.Errorf("%s: no message: %q", lang, msg)
				}
				for _, bad := range []string{"refund", "/help", "--model", "your quota"} {
					if strings.Contains(msg, bad) {
						t.Errorf("%s: %q shows %q", lang, msg, bad)
					}
				}
				for _, w := range tt.want {
					if !strings.Contains(msg, w) {
						t.Errorf("%s: %q lacks %q", lang, msg, w)
					}
				}
			}
		})
	}
}

package core_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/imaginebot/imaginebot/core"
)

// FuzzParseCommand: any chat text parses into a prompt without the flags it
// held, or into a classified error; a known flag never ends up in the
// prompt, and options are always valid.
func FuzzParseCommand(f *testing.F) {
	for _, seed := range []string{
		"a fox in the snow",
		"a fox --model flux --ar 16:9 --no people, text",
		"--ar 香蕉 a fox",
		"—model flux a fox —no dogs",
		"--no --ar 1:1",
		"a fox --model",
		"--m=flux --aspect=3:2 --neg=blur",
		"--frobnicate a fox",
		"  \t\n ",
		"a\u202efox --ar 99:99",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		c, err := core.ParseCommand(text)
		if err != nil {
			if core.ErrorCode(err) != core.CodeInvalidOption {
				t.Fatalf("ParseCommand(%q): unclassified error %v", text, err)
			}
			return
		}
		if c.Options.Aspect != "" && !core.ValidAspect(c.Options.Aspect) {
			t.Fatalf("ParseCommand(%q): invalid aspect %q accepted", text, c.Options.Aspect)
		}
		for _, w := range strings.Fields(c.Prompt) {
			switch strings.ToLower(w) {
			case "--model", "--m", "--ar", "--aspect", "--no", "--neg", "--negative":
				t.Fatalf("ParseCommand(%q): flag %q left in the prompt %q", text, w, c.Prompt)
			}
		}
		if utf8.ValidString(text) && (!utf8.ValidString(c.Prompt) || !utf8.ValidString(c.Options.Negative)) {
			t.Fatalf("ParseCommand(%q): split a UTF-8 sequence", text)
		}
	})
}

package core_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/imaginebot/imaginebot/core"
)

func TestTruncate(t *testing.T) {
	tests := []struct {
		name string
		in   string
		n    int
		want string
	}{
		{"short", "abc", 5, "abc"},
		{"exact", "abcde", 5, "abcde"},
		{"cut ascii", "abcdef", 5, "abcd…"},
		{"cut chinese", "雪地里的狐狸", 4, "雪地里…"},
		{"cut emoji", "🦊🦊🦊", 2, "🦊…"},
		{"zero", "abc", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := core.Truncate(tt.in, tt.n)
			if got != tt.want || !utf8.ValidString(got) || utf8.RuneCountInString(got) > max(tt.n, 0) {
				t.Fatalf("Truncate(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
			}
		})
	}
}

func TestCleanUpstreamText(t *testing.T) {
	in := "抱歉，您的请求包含敏感内容。\x1b[0m\u202e\n\n\n\n![img](https://x/y.png) data:image/png;base64,AAAA 👨\u200d👩\u200d👧"
	got := core.CleanUpstreamText(in, 100)
	if strings.Contains(got, "![") || strings.Contains(got, "base64") || strings.ContainsRune(got, 0x1b) || strings.ContainsRune(got, 0x202e) {
		t.Fatalf("not cleaned: %q", got)
	}
	if !strings.Contains(got, "敏感内容") || !strings.Contains(got, "👨\u200d👩\u200d👧") || strings.Contains(got, "\n\n\n") {
		t.Fatalf("over-cleaned: %q", got)
	}
	if long := core.CleanUpstreamText(strings.Repeat("长", 1000), 10); utf8.RuneCountInString(long) != 10 {
		t.Fatalf("not capped: %q", long)
	}
}

func TestHasControl(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want bool
	}{
		{"plain", "a fox in the snow", false},
		{"pasted newlines and tabs", "a fox\n\tin the snow\r\n", false},
		{"emoji with joiners", "👨\u200d👩\u200d👧 family", false},
		{"escape", "a fox \x1b[31m", true},
		{"right-to-left override", "a fox \u202egnp.exe", true},
		{"left-to-right embedding", "\u202aa fox", true},
		{"isolate", "a \u2066fox\u2069", true},
		{"first strong isolate", "a \u2068fox", true},
	} {
		if got := core.HasControl(tc.in); got != tc.want {
			t.Errorf("%s: HasControl(%q) = %t", tc.name, tc.in, got)
		}
	}
}

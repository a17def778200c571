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

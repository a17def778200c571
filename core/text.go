package core

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Truncate cuts s to at most n runes, ending with "…" when cut. It never
// splits a UTF-8 sequence.
func Truncate(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i, count := 0, 0
	for i = range s {
		if count == n-1 {
			break
		}
		count++
	}
	return s[:i] + "…"
}

var (
	mdImageRe = regexp.MustCompile(`!\[[^\]]*\]\([^)]*\)`)
	dataURIRe = regexp.MustCompile(`data:[a-zA-Z0-9.+/-]+;base64,[A-Za-z0-9+/=_-]+`)
	blankRe   = regexp.MustCompile(`\n{3,}`)
)

// CleanUpstreamText makes gateway text (refusals, progress) fit to show:
// markdown images and data URIs removed, control characters dropped, blank
// runs folded, cut to max runes.
func CleanUpstreamText(s string, max int) string {
	s = mdImageRe.ReplaceAllString(s, "")
	s = dataURIRe.ReplaceAllString(s, "")
	s = StripControl(s)
	s = blankRe.ReplaceAllString(s, "\n\n")
	return Truncate(strings.TrimSpace(s), max)
}

// StripControl drops control characters except newlines and tabs, format
// characters such as bidi overrides (but not the zero-width joiner emoji
// need), and invalid UTF-8.
func StripControl(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n' || r == '\t':
			return r
		case r == utf8.RuneError, unicode.IsControl(r), r != '\u200d' && unicode.Is(unicode.Cf, r):
			return -1
		}
		return r
	}, s)
}

// HasControl reports whether s holds control characters other than newlines
// and tabs (which prompts may contain when pasted), or bidirectional
// embedding, override and isolate characters (U+202A–U+202E, U+2066–U+2069),
// which reorder what moderators read in captions and logs.
func HasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool {
		return r != '\n' && r != '\t' && r != '\r' && unicode.IsControl(r) ||
			r >= '\u202a' && r <= '\u202e' || r >= '\u2066' && r <= '\u2069'
	})
}

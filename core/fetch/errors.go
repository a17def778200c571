package fetch

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/imaginebot/imaginebot/core"
)

// Sentinel errors, wrapped inside the *core.Error that Fetch returns so that
// callers can tell refusals apart with errors.Is. Their text carries no
// package prefix because they always appear inside a "fetch: …" message.
var (
	ErrScheme           = errors.New("unsupported scheme")
	ErrMalformed        = errors.New("malformed image reference")
	ErrBlockedAddress   = errors.New("blocked address")
	ErrTooManyRedirects = errors.New("too many redirects")
	ErrStatus           = errors.New("unexpected HTTP status")
	ErrTooLarge         = errors.New("image too large")
	ErrNotImage         = errors.New("not an image")
)

// maxShownPath caps the path shown in errors and logs: it is upstream text,
// and some gateways put long tokens in the path rather than the query.
const maxShownPath = 160

// Redact renders an image reference for errors and logs:
// scheme://host/path, without userinfo, query or fragment, where signatures
// and tokens live. Data URIs are reduced to their size.
func Redact(ref string) string {
	if hasPrefixFold(ref, "data:") {
		return fmt.Sprintf("data URI (%d bytes)", len(ref))
	}
	u, err := url.Parse(ref)
	if err != nil || u.Scheme == "" {
		return "<invalid URL>"
	}
	if u.Opaque != "" {
		return u.Scheme + ":…"
	}
	p := u.EscapedPath()
	if len(p) > maxShownPath {
		cut := maxShownPath
		for cut > 0 && !utf8.RuneStart(p[cut]) {
			cut--
		}
		p = p[:cut] + "…"
	}
	return u.Scheme + "://" + u.Host + p
}

// urlRe finds http(s) URLs in free text, up to a space, a quote or a
// bracket (markdown wraps them in parentheses).
var urlRe = regexp.MustCompile(`(?i)https?://[^\s"'<>()\[\]]+`)

// RedactText is s with every http(s) URL in it in its Redact form: for
// logging the gateway's text, where signed image URLs carry their
// signatures (X-Amz-Signature=…) in the query.
func RedactText(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	return urlRe.ReplaceAllStringFunc(s, Redact)
}

// rejected is the error for an image refused for what it is or where it
// points: the user is told the image was unusable, the operator why.
func rejected(ref string, err error) *core.Error {
	return &core.Error{Code: core.CodeImageRejected, Err: fmt.Errorf("fetch: %s: %w", Redact(ref), err)}
}

func tooLarge(ref string, limit int64, format string, args ...any) *core.Error {
	e := rejected(ref, fmt.Errorf("%w: %s exceeds the %d-byte limit", ErrTooLarge, fmt.Sprintf(format, args...), limit))
	e.Limit = int(min(limit, math.MaxInt))
	return e
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// scrubbed hides query strings inside an error's text. net/http quotes URLs
// in some messages (a Location header it could not parse, for one), and a
// query is where a signed URL keeps its signature.
type scrubbed struct{ err error }

func (s scrubbed) Error() string { return scrubQueries(s.err.Error()) }
func (s scrubbed) Unwrap() error { return s.err }

// scrubQueries replaces every "?…" run up to a space or quote with "?…".
func scrubQueries(s string) string {
	if !strings.Contains(s, "?") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '?')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+1])
		s = s[i+1:]
		end := strings.IndexAny(s, " \t\n\"'`")
		if end < 0 {
			end = len(s)
		}
		if end > 0 {
			b.WriteString("…")
		}
		s = s[end:]
	}
}

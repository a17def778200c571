package upstream

import "strings"

// ref is one image reference found in a response, at byte offset pos of the
// text it came from. Strong refs are certainly images (markdown images,
// data:image URIs, image parts); weak ones are links and bare URLs.
type ref struct {
	url    string
	strong bool
	pos    int
}

// Extract returns every image reference in a gateway's message text, in
// order of appearance, de-duplicated and byte for byte as written (signed
// URLs are never re-encoded): markdown image targets and data:image URIs,
// plus links and bare URLs whose path ends in an image extension. When there
// are none of those, it returns all the links and bare URLs, since some
// gateways answer with a plain download link.
//
// It runs in time linear in len(content): a data URI can be megabytes.
func Extract(content string) []string {
	urls, _ := pick(scan(content, 0, nil))
	return urls
}

// pick de-duplicates refs (keeping the first position; a URL seen both as a
// link and as an image is strong) and selects the strong ones and the weak
// ones that look like image files. weak reports that it fell back to all the
// weak refs because there was nothing better.
func pick(refs []ref) (urls []string, weak bool) {
	strong := make(map[string]bool, len(refs))
	var order []string
	for _, r := range refs {
		s, seen := strong[r.url]
		if !seen {
			order = append(order, r.url)
		}
		strong[r.url] = s || r.strong
	}
	for _, u := range order {
		if strong[u] || hasImageExt(u) {
			urls = append(urls, u)
		}
	}
	if len(urls) > 0 {
		return urls, false
	}
	return order, len(order) > 0
}

// scan appends the refs in s to out, with positions offset by base.
//
// It looks for URL starts (http://, https://, data:image/) and decides what
// surrounds them: a markdown target when preceded by "](" (an image when the
// bracket opens with "![") or a bare URL. Every byte is scanned forward once;
// the backward search for an alt text's "[" never goes past the previous
// markdown target, so the whole scan stays linear.
func scan(s string, base int, out []ref) []ref {
	floor := 0 // backward searches for "[" stop here
	for i := 0; i < len(s); {
		c := s[i] | 0x20
		if c != 'h' && c != 'd' || i > 0 && isAlnum(s[i-1]) {
			i++
			continue
		}
		rest := s[i:]
		isData := hasPrefixFold(rest, "data:image/")
		if !isData && !hasPrefixFold(rest, "https://") && !hasPrefixFold(rest, "http://") {
			i++
			continue
		}
		var end int
		strong := isData
		switch {
		case i >= 3 && s[i-3:i] == "](<":
			end = scanAngle(s, i)
			strong = strong || isImageAlt(s, i-3, floor)
			floor = end
		case i >= 2 && s[i-2:i] == "](":
			end = scanTarget(s, i)
			strong = strong || isImageAlt(s, i-2, floor)
			floor = end
		case isData:
			end = scanBareData(s, i)
		default:
			end = scanBareURL(s, i)
		}
		if u := s[i:end]; validRef(u, isData) {
			out = append(out, ref{url: u, strong: strong, pos: base + i})
		}
		i = max(end, i+1)
	}
	return out
}

// scanTarget returns the end of a markdown link destination starting at i:
// the first blank or unbalanced ")" (a title may follow a blank).
func scanTarget(s string, i int) int {
	depth := 0
	for j := i; j < len(s); j++ {
		switch b := s[j]; {
		case b <= ' ':
			return j
		case b == '(':
			depth++
		case b == ')':
			if depth == 0 {
				return j
			}
			depth--
		}
	}
	return len(s)
}

// scanAngle returns the end of a "<...>" markdown destination.
func scanAngle(s string, i int) int {
	for j := i; j < len(s); j++ {
		if b := s[j]; b == '>' || b == '\n' {
			return j
		}
	}
	return len(s)
}

// scanBareURL returns the end of a URL in running text. It stops at bytes
// that cannot be in a URL (blanks, <>"`\{}|^[] and non-ASCII, so Chinese
// text right after a URL is not part of it) and drops trailing punctuation
// and unbalanced closing parentheses.
func scanBareURL(s string, i int) int {
	j, open, closed := i, 0, 0
loop:
	for ; j < len(s); j++ {
		switch b := s[j]; {
		case b <= ' ' || b >= 0x7f:
			break loop
		case strings.IndexByte("<>\"`\\{}|^[]", b) >= 0:
			break loop
		case b == '(':
			open++
		case b == ')':
			closed++
		}
	}
	for j > i {
		switch s[j-1] {
		case ')':
			if closed <= open {
				return j
			}
			closed--
		case '.', ',', '\'', '!', '?', ';', ':', '*':
		default:
			return j
		}
		j--
	}
	return j
}

// scanBareData returns the end of a data URI in running text.
func scanBareData(s string, i int) int {
	j := i
	for ; j < len(s); j++ {
		if b := s[j]; !isAlnum(b) && strings.IndexByte("+/=;,:._-%", b) < 0 {
			break
		}
	}
	for j > i && strings.IndexByte(".,;:", s[j-1]) >= 0 {
		j--
	}
	return j
}

// isImageAlt reports whether the "]" at close ends the alt text of a
// markdown image ("![alt]") rather than a link's text ("[text]").
func isImageAlt(s string, close, floor int) bool {
	depth := 0
	for k := close - 1; k >= floor; k-- {
		switch s[k] {
		case ']':
			depth++
		case '[':
			if depth == 0 {
				return k > 0 && s[k-1] == '!'
			}
			depth--
		}
	}
	return false
}

// validRef rejects scheme-only matches such as "https://" or "data:image/png".
func validRef(u string, isData bool) bool {
	if isData {
		return strings.IndexByte(u, ',') > 0
	}
	_, rest, ok := strings.Cut(u, "://")
	return ok && rest != "" && rest[0] != '/'
}

// hasImageExt reports whether a URL's path (query and fragment ignored)
// ends in an image file extension.
func hasImageExt(u string) bool {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	for _, ext := range [...]string{".png", ".jpg", ".jpeg", ".webp", ".gif"} {
		if len(u) >= len(ext) && strings.EqualFold(u[len(u)-len(ext):], ext) {
			return true
		}
	}
	return false
}

func isAlnum(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
}

// hasPrefixFold is an ASCII-only case-insensitive HasPrefix; prefix is lower case.
func hasPrefixFold(s, prefix string) bool {
	if len(s) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		b := s[i]
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if b != prefix[i] {
			return false
		}
	}
	return true
}

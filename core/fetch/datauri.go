package fetch

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/imaginebot/imaginebot/core"
)

// asciiSpace is the whitespace the WHATWG "forgiving base64" decoder
// removes; gateways wrap long payloads with it.
const asciiSpace = " \t\n\f\r"

// decodeDataURI decodes data:[<mime>][;params];base64,<payload>. The payload
// may be megabytes long, so its size is checked before anything is
// allocated and it is decoded straight from the string into one buffer of
// the exact size, never copied whole.
func (f *Fetcher) decodeDataURI(ref string) (core.Image, error) {
	header, payload, ok := strings.Cut(ref[len("data:"):], ",")
	if !ok {
		return core.Image{}, rejected(ref, fmt.Errorf("%w: data URI without a comma", ErrMalformed))
	}
	params := strings.Split(header, ";")
	if !strings.EqualFold(strings.TrimSpace(params[len(params)-1]), "base64") {
		return core.Image{}, rejected(ref, fmt.Errorf("%w: data URI is not base64-encoded", ErrMalformed))
	}

	// Cheap bound first: even generously wrapped base64 is under twice its
	// bare length, so anything longer is too large without looking at it.
	if encoded := (f.maxBytes + 2) / 3 * 4; int64(len(payload)) > 2*encoded+1024 {
		return core.Image{}, tooLarge(ref, f.maxBytes, "data URI of %d characters", len(payload))
	}

	payload = strings.TrimRight(payload, "="+asciiSpace) // padding is optional
	payload = strings.TrimLeft(payload, asciiSpace)
	n, otherSpace := countBase64(payload)
	if n%4 == 1 {
		return core.Image{}, rejected(ref, fmt.Errorf("%w: truncated base64 in data URI", ErrMalformed))
	}
	size := base64.RawStdEncoding.DecodedLen(n)
	if int64(size) > f.maxBytes {
		return core.Image{}, tooLarge(ref, f.maxBytes, "decoded size %d bytes", size)
	}

	enc := base64.RawStdEncoding
	if strings.IndexByte(payload, '-') >= 0 || strings.IndexByte(payload, '_') >= 0 {
		enc = base64.RawURLEncoding
	}
	data := make([]byte, size)
	if err := decodeWindowed(enc, data, payload, otherSpace); err != nil {
		return core.Image{}, rejected(ref, fmt.Errorf("%w: bad base64 in data URI: %w", ErrMalformed, err))
	}

	mime, err := sniff(data)
	if err != nil {
		return core.Image{}, rejected(ref, err)
	}
	return core.Image{Data: data, MIME: mime}, nil
}

// countBase64 returns how many non-space characters s holds, and whether
// it holds whitespace other than \r and \n. Counting with strings.Count and
// IndexByte keeps this fast on multi-megabyte payloads.
func countBase64(s string) (n int, otherSpace bool) {
	if strings.IndexByte(s, ' ') < 0 && strings.IndexByte(s, '\t') < 0 && strings.IndexByte(s, '\f') < 0 {
		return len(s) - countNewlines(s), false
	}
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(asciiSpace, s[i]) < 0 {
			n++
		}
	}
	return n, true
}

func countNewlines(s string) int { return strings.Count(s, "\n") + strings.Count(s, "\r") }

// decodeWindowed decodes s into dst, which has exactly the decoded size. The
// string goes through a fixed window because the decoder wants a []byte and
// converting s would copy megabytes. The decoder skips \r and \n itself, so
// wrapped payloads are copied as they are, cut where the window holds whole
// quanta; other whitespace (rare) is dropped while filling the window.
func decodeWindowed(enc *base64.Encoding, dst []byte, s string, otherSpace bool) error {
	var window [32 << 10]byte // a multiple of 4
	pos, off := 0, 0
	for pos < len(s) {
		start := pos
		var fill int
		if otherSpace {
			for fill < len(window) && pos < len(s) {
				run := s[pos:min(len(s), pos+len(window)-fill)]
				if i := strings.IndexAny(run, asciiSpace); i >= 0 {
					run = run[:i]
					pos++ // the space itself
				}
				fill += copy(window[fill:], run)
				pos += len(run)
			}
		} else {
			chunk := s[pos:min(len(s), pos+len(window))]
			if pos+len(chunk) < len(s) {
				// Only the last chunk may end inside a quantum.
				k := len(chunk) - countNewlines(chunk)
				for k%4 != 0 {
					if c := chunk[len(chunk)-1]; c != '\r' && c != '\n' {
						k--
					}
					chunk = chunk[:len(chunk)-1]
				}
			}
			fill = copy(window[:], chunk)
			pos += fill
		}
		m, err := enc.Decode(dst[off:], window[:fill])
		if err != nil {
			var corrupt base64.CorruptInputError
			if errors.As(err, &corrupt) && !otherSpace {
				return base64.CorruptInputError(int64(start) + int64(corrupt))
			}
			return err
		}
		off += m
	}
	if off != len(dst) {
		return errors.New("payload shorter than its length implies")
	}
	return nil
}

package fetch_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/fetch"
)

// imageWithTail is a real image followed by random bytes, so that its
// base64 form uses every character of the alphabet ('+' '/' or '-' '_').
func imageWithTail(t testing.TB, head []byte, n int) []byte {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	b := bytes.Clone(head)
	for len(b) < n {
		b = append(b, byte(r.Uint32()))
	}
	return b[:n]
}

// wrap inserts sep every width characters, as MIME encoders do.
func wrap(s string, width int, sep string) string {
	var b strings.Builder
	for len(s) > width {
		b.WriteString(s[:width])
		b.WriteString(sep)
		s = s[width:]
	}
	b.WriteString(s)
	return b.String()
}

func TestDataURIAccepted(t *testing.T) {
	png := imageWithTail(t, pngData(t), 3000)
	jpg := imageWithTail(t, jpegData(t), 3001)
	webp := webpData()
	gif := gifData(t)
	big := imageWithTail(t, pngData(t), 200_003) // spans several decoding windows
	std := base64.StdEncoding.EncodeToString
	tests := []struct {
		name     string
		ref      string
		want     []byte
		wantMIME string
	}{
		{"png std padded", "data:image/png;base64," + std(png), png, "image/png"},
		{"jpeg url-safe unpadded", "data:image/jpeg;base64," + base64.RawURLEncoding.EncodeToString(jpg), jpg, "image/jpeg"},
		{"jpeg url-safe padded", "data:image/jpeg;base64," + base64.URLEncoding.EncodeToString(jpg), jpg, "image/jpeg"},
		{"jpeg std unpadded", "data:image/jpeg;base64," + base64.RawStdEncoding.EncodeToString(jpg), jpg, "image/jpeg"},
		{"crlf every 76", "data:image/png;base64," + wrap(std(png), 76, "\r\n"), png, "image/png"},
		{"lf every 64", "data:image/png;base64," + wrap(std(png), 64, "\n"), png, "image/png"},
		{"spaces and tabs", "data:image/png;base64," + wrap(std(png), 50, " \t "), png, "image/png"},
		{"newline before padding", "data:image/jpeg;base64," + wrap(base64.URLEncoding.EncodeToString(jpg), 4, "\n"), jpg, "image/jpeg"},
		{"surrounding whitespace", "  data:image/png;base64,\n" + std(png) + "\n ", png, "image/png"},
		{"upper-case scheme and token", "DATA:image/png;BASE64," + std(png), png, "image/png"},
		{"extra parameters", "data:image/webp;name=a.webp;charset=binary;base64," + std(webp), webp, "image/webp"},
		{"no mime", "data:;base64," + std(gif), gif, "image/gif"},
		{"large one line", "data:image/png;base64," + std(big), big, "image/png"},
		{"large crlf wrapped", "data:image/png;base64," + wrap(std(big), 76, "\r\n"), big, "image/png"},
		{"large odd wrapping with spaces", "data:image/png;base64," + wrap(std(big), 77, " \t\f"), big, "image/png"},
		{"large url-safe wrapped", "data:image/png;base64," + wrap(base64.RawURLEncoding.EncodeToString(big), 1000, "\n"), big, "image/png"},
		{"declared type is ignored", "data:text/html;base64," + std(gif), gif, "image/gif"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fetch.New(fetch.Config{})
			img, err := f.Fetch(context.Background(), tt.ref)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if img.MIME != tt.wantMIME {
				t.Errorf("MIME = %q, want %q", img.MIME, tt.wantMIME)
			}
			if !bytes.Equal(img.Data, tt.want) {
				t.Errorf("Data differs: got %d bytes, want %d", len(img.Data), len(tt.want))
			}
			if img.Source != "" {
				t.Errorf("Source = %q, want empty for a data URI", img.Source)
			}
		})
	}
}

func TestDataURIRefused(t *testing.T) {
	const limit = 1024
	png := pngData(t)
	std := base64.StdEncoding.EncodeToString
	atLimit := imageWithTail(t, png, limit)
	overLimit := imageWithTail(t, png, limit+1)
	tests := []struct {
		name   string
		ref    string
		want   error
		detail string
	}{
		{"one byte over the cap", "data:image/png;base64," + std(overLimit), fetch.ErrTooLarge, "decoded size 1025 bytes exceeds the 1024-byte limit"},
		// Invalid base64: were it decoded first, this would be ErrMalformed.
		{"oversized garbage refused before decoding", "data:image/png;base64," + strings.Repeat("!", 2000), fetch.ErrTooLarge, "decoded size"},
		{"far over the cap, not even scanned", "data:image/png;base64," + strings.Repeat("A", 100_000), fetch.ErrTooLarge, "data URI of 100000 characters"},
		{"cap met but wrapped in whitespace", "data:image/png;base64," + wrap(std(atLimit), 1, "\n\n\n"), fetch.ErrTooLarge, "characters"},
		{"text payload", "data:image/png;base64," + std([]byte("hello, this is not a picture")), fetch.ErrNotImage, "text/plain"},
		{"html payload", "data:image/png;base64," + std([]byte("<html><script>alert(1)</script>")), fetch.ErrNotImage, "text/html"},
		{"empty payload", "data:image/png;base64,", fetch.ErrNotImage, "empty"},
		{"only padding", "data:image/png;base64,====", fetch.ErrNotImage, "empty"},
		{"not base64", "data:image/png," + string(png), fetch.ErrMalformed, "not base64"},
		{"base64 not last parameter", "data:image/png;base64;charset=x," + std(png), fetch.ErrMalformed, "not base64"},
		{"no comma", "data:image/png;base64", fetch.ErrMalformed, "without a comma"},
		{"garbage", "data:image/png;base64,!!!!????", fetch.ErrMalformed, "bad base64"},
		{"mixed alphabets", "data:image/png;base64," + std(png)[:8] + "-_+/", fetch.ErrMalformed, "bad base64"},
		{"padding inside", "data:image/png;base64,iVBO=Rw0KGgo", fetch.ErrMalformed, "bad base64"},
		{"truncated quantum", "data:image/png;base64," + std(png)[:9], fetch.ErrMalformed, "truncated"},
		{"percent-encoded", "data:image/png;base64," + strings.ReplaceAll(std(imageWithTail(t, png, 600)), "+", "%2B"), fetch.ErrMalformed, "bad base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fetch.New(fetch.Config{MaxBytes: limit})
			img, err := f.Fetch(context.Background(), tt.ref)
			ce := wantRejected(t, err, tt.want)
			if !strings.Contains(ce.Err.Error(), tt.detail) {
				t.Errorf("detail %q does not contain %q", ce.Err, tt.detail)
			}
			if img.Data != nil {
				t.Errorf("a refusal returned %d bytes", len(img.Data))
			}
		})
	}

	for _, sep := range []string{"", "\r\n"} {
		t.Run(fmt.Sprintf("bad character past the first window, separator %q", sep), func(t *testing.T) {
			f := fetch.New(fetch.Config{})
			head := wrap(std(imageWithTail(t, png, 30_000)), 76, sep)
			payload := head + "!" + strings.Repeat("A", 9_999)
			_, err := f.Fetch(context.Background(), "data:image/png;base64,"+payload)
			ce := wantRejected(t, err, fetch.ErrMalformed)
			if want := fmt.Sprintf("illegal base64 data at input byte %d", len(head)); !strings.Contains(ce.Err.Error(), want) {
				t.Errorf("detail %q does not contain %q", ce.Err, want)
			}
		})
	}

	t.Run("exactly the cap", func(t *testing.T) {
		f := fetch.New(fetch.Config{MaxBytes: limit})
		img, err := f.Fetch(context.Background(), "data:image/png;base64,"+std(atLimit))
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		if !bytes.Equal(img.Data, atLimit) {
			t.Errorf("got %d bytes, want %d", len(img.Data), limit)
		}
	})
}

// TestDataURIWindowBoundaries decodes payloads whose encoded length sits
// around multiples of the decoder's 32 KiB window, wrapped in every way, so
// that quanta and line breaks fall across window edges.
func TestDataURIWindowBoundaries(t *testing.T) {
	png := pngData(t)
	seps := []struct{ name, sep string }{
		{"none", ""}, {"lf", "\n"}, {"crlf", "\r\n"}, {"blank lines", "\n\n\r\n"}, {"space", " "}, {"mixed", "\t\r\n "},
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, encoded := range []int{32764, 32766, 32767, 32768, 32769, 32770, 32772, 65536, 65539, 98306} {
		raw := imageWithTail(t, png, encoded*3/4)
		for _, sep := range seps {
			t.Run(fmt.Sprintf("%d/%s", encoded, sep.name), func(t *testing.T) {
				enc := base64.RawStdEncoding.EncodeToString(raw)
				if r.IntN(2) == 0 {
					enc = base64.StdEncoding.EncodeToString(raw)
				}
				if sep.sep != "" {
					enc = wrap(enc, 1+r.IntN(100), sep.sep) + sep.sep
				}
				f := fetch.New(fetch.Config{})
				img, err := f.Fetch(context.Background(), "data:image/png;base64,"+enc)
				if err != nil {
					t.Fatalf("Fetch: %v", err)
				}
				if !bytes.Equal(img.Data, raw) {
					t.Fatalf("decoded %d bytes, want %d (equal prefix: %v)", len(img.Data), len(raw), bytes.HasPrefix(raw, img.Data))
				}
			})
		}
	}
}

func BenchmarkDataURI5MB(b *testing.B) {
	raw := imageWithTail(b, pngData(b), 5<<20)
	benches := []struct {
		name string
		ref  string
	}{
		{"one line", "data:image/png;base64," + base64.StdEncoding.EncodeToString(raw)},
		{"crlf wrapped", "data:image/png;base64," + wrap(base64.StdEncoding.EncodeToString(raw), 76, "\r\n")},
	}
	f := fetch.New(fetch.Config{})
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				img, err := f.Fetch(context.Background(), bb.ref)
				if err != nil || len(img.Data) != len(raw) {
					b.Fatalf("Fetch: %d bytes, %v", len(img.Data), err)
				}
			}
		})
	}
}

func FuzzDataURI(f *testing.F) {
	const limit = 4096
	png := pngData(f)
	for _, seed := range []string{
		"image/png;base64," + base64.StdEncoding.EncodeToString(png),
		"image/jpeg;base64," + base64.RawURLEncoding.EncodeToString(jpegData(f)),
		"image/gif;base64," + wrap(base64.StdEncoding.EncodeToString(gifData(f)), 10, "\r\n"),
		";base64," + base64.StdEncoding.EncodeToString(webpData()),
		"image/png;base64," + base64.StdEncoding.EncodeToString(imageWithTail(f, png, limit+1)),
		"image/png," + string(png),
		"image/png;base64,====",
		"image/png;base64,iVBORw0KGgo",
		",",
		"",
		";base64, \t\f",
	} {
		f.Add(seed)
	}
	fetcher := fetch.New(fetch.Config{MaxBytes: limit})
	f.Fuzz(func(t *testing.T, rest string) {
		img, err := fetcher.Fetch(context.Background(), "data:"+rest)
		if err != nil {
			if core.ErrorCode(err) != core.CodeImageRejected {
				t.Fatalf("code %s for %v", core.ErrorCode(err), err)
			}
			return
		}
		switch img.MIME {
		case "image/png", "image/jpeg", "image/webp", "image/gif":
		default:
			t.Fatalf("accepted MIME %q", img.MIME)
		}
		if got := http.DetectContentType(img.Data); got != img.MIME {
			t.Fatalf("MIME %q but data sniffs as %q", img.MIME, got)
		}
		if len(img.Data) > limit {
			t.Fatalf("accepted %d bytes over the %d cap", len(img.Data), limit)
		}
		if img.Source != "" {
			t.Fatalf("Source = %q", img.Source)
		}
	})
}

package fetch_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/imaginebot/imaginebot/core"
)

func testImage() image.Image {
	img := image.NewRGBA(image.Rect(0, 0, 2, 2))
	img.Set(1, 1, color.RGBA{R: 200, A: 255})
	return img
}

func pngData(t testing.TB) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, testImage()); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func jpegData(t testing.TB) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, testImage(), nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gifData(t testing.TB) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := gif.Encode(&b, testImage(), nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// webpData is a RIFF/WEBP container with a VP8 chunk header; the stdlib has
// no WebP encoder, and sniffing only reads the header.
func webpData() []byte {
	payload := []byte{0x30, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0x01, 0x00, 0x01, 0x00}
	var b bytes.Buffer
	b.WriteString("RIFF")
	_ = binary.Write(&b, binary.LittleEndian, uint32(4+8+len(payload)))
	b.WriteString("WEBPVP8 ")
	_ = binary.Write(&b, binary.LittleEndian, uint32(len(payload)))
	b.Write(payload)
	return b.Bytes()
}

// newServer starts an httptest server on 127.0.0.1 and returns it with its port.
func newServer(t *testing.T, h http.Handler) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return srv, port
}

// serveBytes answers every request with body under the given Content-Type.
func serveBytes(body []byte, contentType string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
}

// wantRejected checks that err is a CodeImageRejected *core.Error wrapping
// sentinel, with an operator message in the package's style.
func wantRejected(t *testing.T, err, sentinel error) *core.Error {
	t.Helper()
	return wantCode(t, err, core.CodeImageRejected, sentinel)
}

func wantCode(t *testing.T, err error, code core.Code, sentinel error) *core.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if got := core.ErrorCode(err); got != code {
		t.Fatalf("code = %q, want %q (err: %v)", got, code, err)
	}
	if sentinel != nil && !errors.Is(err, sentinel) {
		t.Fatalf("error does not wrap %v: %v", sentinel, err)
	}
	var ce *core.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error is not a *core.Error: %v", err)
	}
	if ce.Err == nil || !strings.HasPrefix(ce.Err.Error(), "fetch: ") {
		t.Fatalf("operator detail %q lacks the fetch: prefix", ce.Err)
	}
	return ce
}

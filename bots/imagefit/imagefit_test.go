package imagefit

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"testing"

	"github.com/imaginebot/imaginebot/core"
)

// noisePNG is a picture that compresses badly, like a detailed render.
func noisePNG(t testing.TB, w, h int) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	r := rand.New(rand.NewPCG(1, 2))
	for i := range img.Pix {
		img.Pix[i] = byte(r.IntN(256))
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestFit(t *testing.T) {
	big := noisePNG(t, 1024, 1024) // ~4 MiB
	cases := []struct {
		name  string
		data  []byte
		limit int64
		same  bool
		err   bool
	}{
		{"fits already", big, int64(len(big)), true, false},
		{"re-encoded", big, 1 << 20, false, false},
		{"shrunk too", big, 100 << 10, false, false},
		{"hopeless", big, 200, false, true},
		{"not an image", bytes.Repeat([]byte("x"), 5000), 100, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := Fit(core.Image{Data: c.data, MIME: "image/png"}, c.limit)
			if (err != nil) != c.err {
				t.Fatalf("err = %v", err)
			}
			if c.err {
				return
			}
			if int64(len(out.Data)) > c.limit {
				t.Fatalf("%d bytes, over %d", len(out.Data), c.limit)
			}
			if c.same {
				if !bytes.Equal(out.Data, c.data) || out.MIME != "image/png" {
					t.Fatal("a picture that fits was changed")
				}
				return
			}
			if out.MIME != "image/jpeg" {
				t.Fatalf("MIME %q", out.MIME)
			}
			if _, err := jpeg.Decode(bytes.NewReader(out.Data)); err != nil {
				t.Fatalf("not a JPEG: %v", err)
			}
		})
	}
}

// A small file that claims a huge canvas is refused before decoding.
func TestFitRefusesBombs(t *testing.T) {
	img := image.NewGray(image.Rect(0, 0, 1, 1))
	img.Set(0, 0, color.White)
	var buf bytes.Buffer
	_ = png.Encode(&buf, img)
	data := buf.Bytes()
	// Rewrite the IHDR size to 100000×100000 (the CRC is not checked by DecodeConfig).
	copy(data[16:24], []byte{0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0})
	if _, err := Fit(core.Image{Data: data, MIME: "image/png"}, 10); err == nil {
		t.Fatal("a 10-gigapixel canvas was accepted")
	}
}

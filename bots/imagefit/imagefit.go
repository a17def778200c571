// Package imagefit makes a picture fit a platform's upload limit: it
// re-encodes it as JPEG at falling quality, then smaller, until it fits.
// Pictures come from the image service, so their size is checked before
// anything is decoded (a small file can claim a huge canvas).
package imagefit

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	_ "image/gif" // decoders for what the gateway may send
	"image/jpeg"
	_ "image/png"

	xdraw "golang.org/x/image/draw"
	_ "golang.org/x/image/webp"

	"github.com/imaginebot/imaginebot/core"
)

// MaxPixels bounds the canvas decoded: 64 megapixels (8192×8192), far
// beyond what image models make, and 256 MiB of RGBA.
const MaxPixels = 64 << 20

// ErrTooLarge is returned when no re-encoding fits.
var ErrTooLarge = errors.New("imagefit: the picture does not fit even re-encoded")

var qualities = []int{90, 80, 70}

// Fit returns img unchanged when it is at most limit bytes, else a JPEG of
// it that is.
func Fit(img core.Image, limit int64) (core.Image, error) {
	if int64(len(img.Data)) <= limit {
		return img, nil
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(img.Data))
	if err != nil {
		return img, fmt.Errorf("imagefit: %w", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > MaxPixels {
		return img, fmt.Errorf("imagefit: a %d×%d canvas is too large to decode", cfg.Width, cfg.Height)
	}
	src, _, err := image.Decode(bytes.NewReader(img.Data))
	if err != nil {
		return img, fmt.Errorf("imagefit: %w", err)
	}
	src = opaque(src)
	for scale := 0; scale < 6; scale++ {
		for _, q := range qualities {
			var buf bytes.Buffer
			if err := jpeg.Encode(&buf, src, &jpeg.Options{Quality: q}); err != nil {
				return img, fmt.Errorf("imagefit: %w", err)
			}
			if int64(buf.Len()) <= limit {
				return core.Image{Data: buf.Bytes(), MIME: "image/jpeg", Source: img.Source}, nil
			}
		}
		src = shrink(src, 3, 4)
	}
	return img, ErrTooLarge
}

// opaque puts the picture on white: JPEG has no transparency.
func opaque(src image.Image) image.Image {
	b := src.Bounds()
	dst := image.NewRGBA(b)
	draw.Draw(dst, b, image.NewUniform(color.White), image.Point{}, draw.Src)
	draw.Draw(dst, b, src, b.Min, draw.Over)
	return dst
}

// shrink scales src by num/den.
func shrink(src image.Image, num, den int) image.Image {
	b := src.Bounds()
	w, h := max(b.Dx()*num/den, 1), max(b.Dy()*num/den, 1)
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	xdraw.CatmullRom.Scale(dst, dst.Bounds(), src, b, xdraw.Src, nil)
	return dst
}

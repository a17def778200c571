package chat

import (
	"fmt"
	"net/http"

	"github.com/imaginebot/imaginebot/core"
)

// DefaultMaxInputBytes caps a picture users give to start from: it waits
// in memory with its job while the job is queued.
const DefaultMaxInputBytes = 8 << 20

// InputTooLarge is the refusal of a picture over limit bytes.
func InputTooLarge(size, limit int64) error {
	return &core.Error{Code: core.CodeInvalidOption, Reason: core.ReasonInputTooLarge, Value: mib(size), Limit: int(limit >> 20),
		Err: fmt.Errorf("input picture of %d bytes, over %d", size, limit)}
}

// CheckInput returns data as a picture when it is one (PNG, JPEG, WebP or
// GIF, by its bytes) of at most limit bytes; the refusal otherwise.
func CheckInput(data []byte, limit int64) (*core.Image, error) {
	if int64(len(data)) > limit {
		return nil, InputTooLarge(int64(len(data)), limit)
	}
	switch mime := http.DetectContentType(data); mime {
	case "image/png", "image/jpeg", "image/webp", "image/gif":
		return &core.Image{Data: data, MIME: mime}, nil
	default:
		return nil, &core.Error{Code: core.CodeInvalidOption, Reason: core.ReasonNotImage, Err: fmt.Errorf("input is %s, not a picture", mime)}
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

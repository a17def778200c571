package core

import (
	"context"
	"time"
)

// GenRequest is one upstream image generation.
type GenRequest struct {
	Model  Model
	Prompt string // the rendered message text (template applied)
	User   string // User.Key(); generators send only a pseudonym of it upstream
	Job    string // the job's key, for logs: every line of a job carries it
	// Aspect is the job's aspect option ("16:9", "" for none): the images
	// API sends it as a size (Model.Size).
	Aspect string
	// Input is a picture the user gave, to edit or start from; nil without.
	Input *Image
	// Action, for a midjourney model, presses a button of an earlier
	// result (Image.Task, one of Image.Buttons) instead of making a new
	// picture from Prompt: an upscale, a variation, a reroll. Prompt and
	// Input are not sent then. nil for a new picture.
	Action *TaskAction
}

// TaskAction is a button pressed on a Midjourney result.
type TaskAction struct {
	TaskID   string // Image.Task of the result the button belongs to
	CustomID string // TaskButton.CustomID of the button
}

// TaskButton is a button of a Midjourney result, as the proxy names it:
// U1–U4 (upscale one of the grid's four), V1–V4 (vary one), 🔄 (reroll),
// and on an upscale its own (Vary (Strong), Zoom Out 2x, ⬅️ …). Label and
// Emoji are cleaned for display (either may be empty, not both); CustomID
// is the proxy's, verbatim, and can be longer than a platform's custom id
// allows: keep it server-side.
type TaskButton struct {
	CustomID string
	Label    string
	Emoji    string
}

// GenProgress is what a generator learns while it waits.
type GenProgress struct {
	Percent int    // 0–100, or -1 when unknown
	Text    string // progress text from the gateway, raw (core cleans it)
}

// Image is one generated picture, downloaded and checked.
type Image struct {
	Data   []byte
	MIME   string // image/png, image/jpeg, image/webp or image/gif
	Source string // the URL it came from ("" for data URIs): the link fallback
	// Note is text to show under the picture: the prompt as the model
	// rewrote it (DALL·E's revised_prompt), cleaned; "" for none.
	Note string
	// Task is the Midjourney task that made the picture, and Buttons what
	// can be done with it next (GenRequest.Action); both empty for the
	// other APIs. A grid (imagine, variation, reroll) arrives as one Image
	// of four pictures; an upscale as the single picture.
	Task    string
	Buttons []TaskButton
}

// Ext is the file extension for the image's type.
func (i Image) Ext() string {
	switch i.MIME {
	case "image/jpeg":
		return ".jpg"
	case "image/webp":
		return ".webp"
	case "image/gif":
		return ".gif"
	default:
		return ".png"
	}
}

// Generator makes images. Errors are *Error with an upstream Code
// (CodeUpstreamAuth … CodeImageRejected); it returns at least one image on success.
type Generator interface {
	Generate(ctx context.Context, req GenRequest, progress func(GenProgress)) ([]Image, error)
}

// Stage is where a job is.
type Stage int

const (
	StageQueued     Stage = iota // waiting for an upstream slot; Position is set
	StageGenerating              // the upstream call is running
)

// Progress is sent to the adapter while a job waits and runs.
type Progress struct {
	Stage    Stage
	Position int           // 1 = next to start (StageQueued)
	Percent  int           // 0–100, or -1 when unknown (StageGenerating)
	Elapsed  time.Duration // since generation started
	Text     string        // cleaned gateway progress text, may be empty
}

// Delivery is a finished job handed to the adapter to send.
type Delivery struct {
	Job     Job
	Model   Model
	Prompt  string // the user's prompt (without template)
	Options Options
	Images  []Image
	Balance Balance // after this job, as the caption should show it
}

// Reporter is the adapter's side of one job. Progress is called from the job's
// goroutine and must not block for long (throttle and send asynchronously);
// Deliver sends the result and returns nil only when the user got it.
type Reporter interface {
	Progress(p Progress)
	Deliver(ctx context.Context, d Delivery) error
}

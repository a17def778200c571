package core

import (
	"cmp"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
)

// Model is an image model served by the upstream gateway.
type Model struct {
	Name          string // what users type (--model flux) and the default upstream id
	UpstreamModel string // the gateway's model id, when it differs from Name
	Label         string // shown in captions and /help
	Cost          int    // quota units per image job (≥1)
	SystemPrompt  string // optional system message
	// Template turns the user's prompt and options into the message text; nil
	// uses DefaultPromptTemplate.
	Template *template.Template
	Stream   bool // ask the gateway for SSE (chat models only)

	API API // how the gateway serves the model; "" is APIChat

	// The images API's fields (API == APIImages).

	// Sizes maps an aspect ratio ("16:9") to the size sent for it
	// ("1344x768"); nil takes DefaultSizes(ID()). An aspect missing here is
	// refused before anything is charged (CheckOptions).
	Sizes          map[string]string
	Quality        string // sent when set ("hd", "high", …)
	Style          string // sent when set ("vivid", "natural")
	ResponseFormat string // "url" or "b64_json"; "" takes DefaultResponseFormat(ID())

	// AcceptsImage: the model takes a picture as input (an edit, for the
	// images API; a reference image, for Midjourney); without it a job with
	// a picture is refused.
	AcceptsImage bool

	// ActionCost is the quota units a Midjourney action (U1–U4, V1–V4, 🔄,
	// upscale, zoom, pan) costs on a result of this model; 0 takes Cost.
	// See ActionUnits.
	ActionCost int
}

// API is the gateway interface a model is served through.
type API string

const (
	// APIChat is POST /v1/chat/completions: the image is in the answer's text.
	APIChat API = "chat"
	// APIImages is POST /v1/images/generations, and /v1/images/edits when the
	// job carries a picture: DALL·E, gpt-image, Flux.
	APIImages API = "images"
	// APIMidjourney is the midjourney-proxy task API that one-api and
	// new-api relay: POST /mj/submit/imagine (or /mj/submit/action for a
	// button of an earlier result), then GET /mj/task/{id}/fetch until the
	// task ends. Its images carry the task id and the buttons (Image.Task,
	// Image.Buttons) that GenRequest.Action presses.
	APIMidjourney API = "midjourney"
)

// ActionUnits is what a Midjourney action on the model's result costs:
// ActionCost, or Cost when it is unset.
func (m Model) ActionUnits() int {
	if m.ActionCost > 0 {
		return m.ActionCost
	}
	return m.Cost
}

// ID is the model id sent upstream.
func (m Model) ID() string {
	if m.UpstreamModel != "" {
		return m.UpstreamModel
	}
	return m.Name
}

// DisplayName is the label, or the name when no label is set.
func (m Model) DisplayName() string {
	if m.Label != "" {
		return m.Label
	}
	return m.Name
}

// DefaultPromptTemplate is used for chat models without a prompt_template.
const DefaultPromptTemplate = `{{.Prompt}}{{with .Aspect}}
Aspect ratio: {{.}}{{end}}{{with .Negative}}
Negative prompt: {{.}}{{end}}`

// DefaultImagesPromptTemplate is used for images models without a
// prompt_template: the aspect ratio travels as the size, so the text does
// not repeat it.
const DefaultImagesPromptTemplate = `{{.Prompt}}{{with .Negative}}
Negative prompt: {{.}}{{end}}`

// DefaultMidjourneyPromptTemplate is used for midjourney models without a
// prompt_template: Midjourney reads the options as parameters of the
// prompt itself.
const DefaultMidjourneyPromptTemplate = `{{.Prompt}}{{with .Aspect}} --ar {{.}}{{end}}{{with .Negative}} --no {{.}}{{end}}`

// DefaultTemplate is the prompt template of a model of api without one.
func DefaultTemplate(api API) string {
	switch api {
	case APIImages:
		return DefaultImagesPromptTemplate
	case APIMidjourney:
		return DefaultMidjourneyPromptTemplate
	}
	return DefaultPromptTemplate
}

// ParseTemplate compiles a model prompt template ("" = the default).
func ParseTemplate(name, text string) (*template.Template, error) {
	if text == "" {
		text = DefaultPromptTemplate
	}
	t, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, err
	}
	// Execute once with sample data so a template referring to unknown fields
	// fails at start-up, not on a user's job.
	if err := t.Execute(&strings.Builder{}, TemplateData{Prompt: "p", Negative: "n", Aspect: "1:1"}); err != nil {
		return nil, err
	}
	return t, nil
}

// Options are the per-job knobs users can set besides the prompt.
type Options struct {
	Negative string // things to leave out of the picture
	Aspect   string // "16:9"
}

// TemplateData is what a prompt template sees.
type TemplateData struct {
	Prompt   string
	Negative string
	Aspect   string
}

// Render builds the message text sent upstream.
func (m Model) Render(prompt string, o Options) (string, error) {
	t := m.Template
	if t == nil {
		var err error
		if t, err = ParseTemplate(m.Name, DefaultTemplate(m.API)); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	if err := t.Execute(&b, TemplateData{Prompt: prompt, Negative: o.Negative, Aspect: o.Aspect}); err != nil {
		return "", fmt.Errorf("core: render prompt for model %s: %w", m.Name, err)
	}
	return b.String(), nil
}

// ReasonUnsupported: Value is well formed but the model does not offer it
// (an aspect ratio an images model has no size for); Choices lists what it
// offers.
const ReasonUnsupported Reason = "unsupported"

// Default sizes per upstream model family, from each API's documented
// sizes: DALL·E 3 takes only these three, gpt-image-1 these three (exactly
// 3:2 and 2:3). Flux takes any multiple of 16 up to about 2 MP; these are
// its ~1-megapixel presets (multiples of 64, the sizes it was trained on
// and that Replicate and ComfyUI map its aspect ratios to).
var (
	dalle3Sizes   = map[string]string{"1:1": "1024x1024", "16:9": "1792x1024", "9:16": "1024x1792"}
	gptImageSizes = map[string]string{"1:1": "1024x1024", "3:2": "1536x1024", "2:3": "1024x1536"}
	fluxSizes     = map[string]string{
		"1:1": "1024x1024", "16:9": "1344x768", "9:16": "768x1344",
		"3:2": "1216x832", "2:3": "832x1216", "4:3": "1152x896", "3:4": "896x1152",
	}
	squareSizes = map[string]string{"1:1": "1024x1024"}
)

// DefaultSizes is the aspect → size map for an images model without
// configured sizes, chosen by the gateway's model id (resellers add
// prefixes and suffixes: "dall-e-3-hd", "black-forest-labs/FLUX.1-schnell").
// A model of no known family gets 1:1 only. The map is the caller's.
func DefaultSizes(upstreamModel string) map[string]string {
	id := strings.ToLower(upstreamModel)
	src := squareSizes
	switch {
	case strings.Contains(id, "gpt-image"):
		src = gptImageSizes
	case strings.Contains(id, "dall-e-3"), strings.Contains(id, "dalle-3"), strings.Contains(id, "dalle3"):
		src = dalle3Sizes
	case strings.Contains(id, "flux"):
		src = fluxSizes
	}
	return maps.Clone(src)
}

// DefaultResponseFormat is the response_format sent to an images model
// without one configured: "url", except for gpt-image models, which always
// answer b64_json and refuse the field (400 unknown_parameter), so "" (not
// sent).
func DefaultResponseFormat(upstreamModel string) string {
	if strings.Contains(strings.ToLower(upstreamModel), "gpt-image") {
		return ""
	}
	return "url"
}

// ImagesResponseFormat is the response_format to send ("" = none).
func (m Model) ImagesResponseFormat() string {
	if m.ResponseFormat != "" {
		return m.ResponseFormat
	}
	return DefaultResponseFormat(m.ID())
}

func (m Model) sizes() map[string]string {
	if m.Sizes != nil {
		return m.Sizes
	}
	return DefaultSizes(m.ID())
}

// Size is the images API size for an aspect ratio: aspect "" takes 1:1's
// size, or "" (the gateway's default) when the model has none. An aspect
// the model has no size for is a CodeInvalidOption with ReasonUnsupported
// and the aspects it offers.
func (m Model) Size(aspect string) (string, error) {
	sizes := m.sizes()
	if aspect == "" {
		return sizes["1:1"], nil
	}
	if s, ok := sizes[aspect]; ok {
		return s, nil
	}
	return "", &Error{Code: CodeInvalidOption, Reason: ReasonUnsupported, Option: OptionAspect,
		Value: Truncate(aspect, 40), Choices: Aspects(sizes),
		Err: fmt.Errorf("core: model %s has no size for aspect %s (models[].sizes)", m.Name, aspect)}
}

// Aspects lists the aspect ratios of sizes, widest first.
func Aspects(sizes map[string]string) []string {
	out := slices.Collect(maps.Keys(sizes))
	ratio := func(a string) float64 {
		m := aspectRe.FindStringSubmatch(a)
		if m == nil {
			return 0
		}
		w, _ := strconv.Atoi(m[1])
		h, _ := strconv.Atoi(m[2])
		return float64(w) / float64(h)
	}
	slices.SortFunc(out, func(a, b string) int {
		if c := cmp.Compare(ratio(b), ratio(a)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return out
}

// CheckOptions refuses options the model cannot honour, before anything is
// charged: for an images model, an aspect ratio it has no size for.
func (m Model) CheckOptions(o Options) error {
	if m.API != APIImages {
		return nil
	}
	_, err := m.Size(o.Aspect)
	return err
}

var aspectRe = regexp.MustCompile(`^([1-9][0-9]?):([1-9][0-9]?)$`)

// ValidAspect reports whether s is an aspect ratio like 16:9 (each side 1–99).
func ValidAspect(s string) bool { return aspectRe.MatchString(s) }

// Command is a parsed "/imagine" text: the prompt plus flags.
type Command struct {
	Prompt  string
	Model   string
	Options Options
}

// ParseCommand reads flags out of a chat text:
//
//	a fox in the snow --model flux --ar 16:9 --no people, text
//
// --model (--m) NAME and --ar (--aspect) W:H take one word; --no takes the rest
// of the text up to the next flag. Flags may appear anywhere; an unknown
// --flag is an error so typos don't silently end up in the prompt. An em dash
// (—, which phones substitute for "--") is accepted as well.
func ParseCommand(text string) (Command, error) {
	var c Command
	var prompt, negative []string
	fields := strings.Fields(text)
	inNo := false
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		name, isFlag := flagName(f)
		if !isFlag {
			if inNo {
				negative = append(negative, f)
			} else {
				prompt = append(prompt, f)
			}
			continue
		}
		inNo = false
		value := ""
		if k, v, ok := strings.Cut(name, "="); ok {
			name, value = k, v
		}
		switch name {
		case "no", "neg", "negative":
			inNo = true
			if value != "" {
				negative = append(negative, value)
			}
			continue
		case "model", "m", "ar", "aspect":
		default:
			return c, &Error{Code: CodeInvalidOption, Reason: ReasonUnknownOption, Option: Truncate(name, 40)}
		}
		option := OptionModel
		if name == "ar" || name == "aspect" {
			option = OptionAspect
		}
		if value == "" {
			if i+1 >= len(fields) {
				return c, &Error{Code: CodeInvalidOption, Reason: ReasonNoValue, Option: option}
			}
			i++
			value = fields[i]
		}
		switch option {
		case OptionModel:
			c.Model = value
		case OptionAspect:
			if !ValidAspect(value) {
				return c, &Error{Code: CodeInvalidOption, Reason: ReasonMalformed, Option: option, Value: Truncate(value, 40)}
			}
			c.Options.Aspect = value
		}
	}
	c.Prompt = strings.Join(prompt, " ")
	c.Options.Negative = strings.Join(negative, " ")
	return c, nil
}

// flagName returns the name of a "--flag" (or "—flag") word.
func flagName(w string) (string, bool) {
	switch {
	case strings.HasPrefix(w, "--") && len(w) > 2:
		return strings.ToLower(w[2:]), true
	case strings.HasPrefix(w, "—") && len(w) > len("—"):
		return strings.ToLower(w[len("—"):]), true
	}
	return "", false
}

package core

import (
	"fmt"
	"regexp"
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
	Stream   bool // ask the gateway for SSE
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

// DefaultPromptTemplate is used for models without a prompt_template.
const DefaultPromptTemplate = `{{.Prompt}}{{with .Aspect}}
Aspect ratio: {{.}}{{end}}{{with .Negative}}
Negative prompt: {{.}}{{end}}`

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
		if t, err = ParseTemplate(m.Name, ""); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	if err := t.Execute(&b, TemplateData{Prompt: prompt, Negative: o.Negative, Aspect: o.Aspect}); err != nil {
		return "", fmt.Errorf("core: render prompt for model %s: %w", m.Name, err)
	}
	return b.String(), nil
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

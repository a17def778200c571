package chat

import (
	"strings"

	"github.com/imaginebot/imaginebot/core"
)

// TaskButtonsMax is how many of a Midjourney result's buttons are shown:
// four rows of five (U1–U4, 🔄, V1–V4 and the upscale variants fit).
const TaskButtonsMax = 20

// TaskButtonsPerRow is how many go in a row.
const TaskButtonsPerRow = 5

// ButtonLabel is what a Midjourney button shows: its emoji and its label.
func ButtonLabel(b core.TaskButton) string {
	label := strings.TrimSpace(strings.TrimSpace(b.Emoji) + " " + strings.TrimSpace(b.Label))
	if label == "" {
		return "·"
	}
	return core.Truncate(label, 40)
}

// TaskAction is the action a press of button i on job j asks for: the job's
// task and that button. False when the job kept no such button.
func TaskAction(j core.Job, i int) (*core.TaskAction, bool) {
	if j.Task == "" || i < 0 || i >= len(j.Buttons) || i >= TaskButtonsMax {
		return nil, false
	}
	return &core.TaskAction{TaskID: j.Task, CustomID: j.Buttons[i].CustomID}, true
}

// ActionRequest is the job a press of button i on job j starts: the same
// model and prompt, as the presser's (charged the model's action cost).
func ActionRequest(j core.Job, i int, base core.Request) (core.Request, bool) {
	a, ok := TaskAction(j, i)
	if !ok {
		return core.Request{}, false
	}
	base.Prompt, base.Model, base.Options, base.AsIs, base.Action = j.Prompt, j.Model, j.Options, true, a
	return base, true
}

package upstreamtest

import (
	"fmt"
	"net/http"
	"strings"
)

// The midjourney-proxy task API, as one-api and new-api relay it under /mj:
//
//	gw.PushMJ(upstreamtest.MJScript{Steps: append(upstreamtest.MJProgress(10, 45, 90),
//		upstreamtest.MJSuccess(gw.ImageURL("grid.png"), upstreamtest.GridButtons("h1")))})
//
// Each submit (imagine or action) takes the next pushed Reply first, like
// the other endpoints (for HTTP errors), then the next MJScript, which
// decides its code and, for a task it creates, what each fetch of the task
// answers. Without a script a task goes SUBMITTED 0%, IN_PROGRESS 50%,
// then SUCCESS with the image ImageURL("mj-<id>.png") and the buttons of a
// grid (GridButtons), or of an upscale (UpscaleButtons) for an upsample
// action. Fetches do not take pushed Replies; a step's Reply answers one
// instead. Submits and fetches are recorded with the other requests.
const (
	MJImaginePath  = "/mj/submit/imagine"
	MJActionPath   = "/mj/submit/action"
	MJFetchPattern = "/mj/task/{id}/fetch" // a net/http pattern
)

// Submit codes.
const (
	MJSubmitted = 1
	MJExists    = 21
	MJQueued    = 22
	MJQueueFull = 23
	MJBanned    = 24
)

// MJButton is a button of a task, as the proxy lists it.
type MJButton struct {
	CustomID string `json:"customId"`
	Emoji    string `json:"emoji"`
	Label    string `json:"label"`
	Type     int    `json:"type"`
	Style    int    `json:"style"`
}

// MJTask is a task as GET /mj/task/{id}/fetch answers it. The fake sets
// ID, Action and Prompt; a step sets the rest.
type MJTask struct {
	ID         string     `json:"id"`
	Action     string     `json:"action"`
	Prompt     string     `json:"prompt"`
	Status     string     `json:"status"`
	Progress   string     `json:"progress"`
	ImageURL   string     `json:"imageUrl"`
	FailReason string     `json:"failReason"`
	Buttons    []MJButton `json:"buttons"`
}

// MJStep is what one fetch of a task answers: Task in some state, or,
// when set, Reply (an HTTP error, a hang).
type MJStep struct {
	Task  MJTask
	Reply Reply
}

// MJScript is the fate of one submit.
type MJScript struct {
	// Code is the submit answer's code (0 is MJSubmitted). Codes 1, 21
	// and 22 create a task; any other creates none.
	Code int
	// Description is the answer's description; "" takes the proxy's
	// words for Code.
	Description string
	BannedWord  string // code 24's properties.bannedWord
	// NumericID sends the task id as a JSON number, as some proxies do.
	NumericID bool
	// Steps are the answers to the task's fetches, in order; the last
	// repeats. nil takes the default progression.
	Steps []MJStep
}

type mjState struct {
	scripts []MJScript
	tasks   map[string]*mjFakeTask
	order   []string // task ids as submitted
}

type mjFakeTask struct {
	task    MJTask
	steps   []MJStep
	fetches int
}

// PushMJ queues scripts for the next submits, in order.
func (g *Gateway) PushMJ(scripts ...MJScript) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.mj.scripts = append(g.mj.scripts, scripts...)
}

// MJTasks returns the ids of the tasks created so far, oldest first.
func (g *Gateway) MJTasks() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.mj.order...)
}

// MJFetches is how many times task id was fetched.
func (g *Gateway) MJFetches(id string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if t := g.mj.tasks[id]; t != nil {
		return t.fetches
	}
	return 0
}

// MJStatus is a step with status and progress ("NOT_START", "0%").
func MJStatus(status, progress string) MJStep {
	return MJStep{Task: MJTask{Status: status, Progress: progress}}
}

// MJProgress is IN_PROGRESS steps at each percentage.
func MJProgress(percents ...int) []MJStep {
	steps := make([]MJStep, 0, len(percents))
	for _, p := range percents {
		steps = append(steps, MJStatus("IN_PROGRESS", fmt.Sprintf("%d%%", p)))
	}
	return steps
}

// MJSuccess is the finished task: its image and buttons.
func MJSuccess(imageURL string, buttons []MJButton) MJStep {
	return MJStep{Task: MJTask{Status: "SUCCESS", Progress: "100%", ImageURL: imageURL, Buttons: buttons}}
}

// MJFailure is a task that failed for reason.
func MJFailure(reason string) MJStep {
	return MJStep{Task: MJTask{Status: "FAILURE", Progress: "0%", FailReason: reason}}
}

// MJReply is a step that answers with r instead of the task.
func MJReply(r Reply) MJStep { return MJStep{Reply: r} }

// MJNeverEnds is a task stuck IN_PROGRESS at 10%.
func MJNeverEnds() []MJStep { return MJProgress(10) }

// GridButtons are the buttons of a four-picture grid: U1–U4, 🔄, V1–V4.
func GridButtons(hash string) []MJButton {
	var b []MJButton
	for i := 1; i <= 4; i++ {
		b = append(b, MJButton{CustomID: fmt.Sprintf("MJ::JOB::upsample::%d::%s", i, hash), Label: fmt.Sprintf("U%d", i), Type: 2, Style: 2})
	}
	b = append(b, MJButton{CustomID: "MJ::JOB::reroll::0::" + hash + "::SOLO", Emoji: "🔄", Type: 2, Style: 2})
	for i := 1; i <= 4; i++ {
		b = append(b, MJButton{CustomID: fmt.Sprintf("MJ::JOB::variation::%d::%s", i, hash), Label: fmt.Sprintf("V%d", i), Type: 2, Style: 2})
	}
	return b
}

// UpscaleButtons are the buttons of an upscaled picture (Midjourney v6).
func UpscaleButtons(hash string) []MJButton {
	return []MJButton{
		{CustomID: "MJ::JOB::upsample_v6_2x_subtle::1::" + hash + "::SOLO", Label: "Upscale (Subtle)", Type: 2, Style: 2},
		{CustomID: "MJ::JOB::upsample_v6_2x_creative::1::" + hash + "::SOLO", Label: "Upscale (Creative)", Type: 2, Style: 2},
		{CustomID: "MJ::JOB::low_variation::1::" + hash + "::SOLO", Label: "Vary (Subtle)", Emoji: "🪄", Type: 2, Style: 2},
		{CustomID: "MJ::JOB::high_variation::1::" + hash + "::SOLO", Label: "Vary (Strong)", Emoji: "🪄", Type: 2, Style: 2},
		{CustomID: "MJ::Outpaint::50::1::" + hash + "::SOLO", Label: "Zoom Out 2x", Emoji: "🔍", Type: 2, Style: 2},
		{CustomID: "MJ::JOB::pan_left::1::" + hash + "::SOLO", Emoji: "⬅️", Type: 2, Style: 2},
		{CustomID: "MJ::JOB::pan_right::1::" + hash + "::SOLO", Emoji: "➡️", Type: 2, Style: 2},
	}
}

func (g *Gateway) mjSubmit(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, []byte(mjError("method_not_allowed")))
		return
	}
	g.serve(w, r, g.mjScripted)
}

// mjScripted answers a submit with the next script.
func (g *Gateway) mjScripted(w http.ResponseWriter, r *Request) {
	action := r.Path == MJActionPath
	g.mu.Lock()
	if action {
		if g.mj.tasks[r.TaskID] == nil || r.CustomID == "" {
			g.mu.Unlock()
			// new-api, for an action on a task it does not know.
			writeJSON(w, http.StatusBadRequest, []byte(mjError("task_not_found")))
			return
		}
	} else if strings.TrimSpace(r.Prompt) == "" {
		g.mu.Unlock()
		writeJSON(w, http.StatusBadRequest, []byte(mjError("prompt_is_required")))
		return
	}
	var s MJScript
	if len(g.mj.scripts) > 0 {
		s, g.mj.scripts = g.mj.scripts[0], g.mj.scripts[1:]
	}
	code := s.Code
	if code == 0 {
		code = MJSubmitted
	}
	answer := map[string]any{"code": code, "description": mjDescription(code, s.Description), "properties": map[string]any{}, "result": nil}
	switch code {
	case MJSubmitted, MJExists, MJQueued:
		id := fmt.Sprintf("1732386637%06d", len(g.mj.order)+1)
		t := &mjFakeTask{task: MJTask{ID: id, Action: "IMAGINE", Prompt: r.Prompt}, steps: s.Steps}
		if action {
			t.task.Action = mjActionName(r.CustomID)
		}
		if t.steps == nil {
			t.steps = g.mjDefaultSteps(id, action && strings.Contains(r.CustomID, "::upsample::"))
		}
		if g.mj.tasks == nil {
			g.mj.tasks = map[string]*mjFakeTask{}
		}
		g.mj.tasks[id] = t
		g.mj.order = append(g.mj.order, id)
		answer["result"] = id
		if s.NumericID {
			answer["result"] = jsonNumber(id)
		}
	case MJBanned:
		answer["properties"] = map[string]any{"promptEn": r.Prompt, "bannedWord": s.BannedWord}
	}
	g.mu.Unlock()
	writeJSON(w, http.StatusOK, mustJSON(answer))
}

type jsonNumber string

func (n jsonNumber) MarshalJSON() ([]byte, error) { return []byte(n), nil }

func (g *Gateway) mjDefaultSteps(id string, upscale bool) []MJStep {
	buttons := GridButtons("h" + id)
	if upscale {
		buttons = UpscaleButtons("h" + id)
	}
	return []MJStep{MJStatus("SUBMITTED", "0%"), MJStatus("IN_PROGRESS", "50%"), MJSuccess(g.ImageURL("mj-"+id+".png"), buttons)}
}

func mjActionName(customID string) string {
	switch {
	case strings.Contains(customID, "::upsample"):
		return "UPSCALE"
	case strings.Contains(customID, "::reroll::"):
		return "REROLL"
	case strings.Contains(customID, "variation::"):
		return "VARIATION"
	}
	return "ACTION"
}

func mjDescription(code int, d string) string {
	if d != "" {
		return d
	}
	switch code {
	case MJSubmitted:
		return "提交成功"
	case MJExists:
		return "任务已存在"
	case MJQueued:
		return "排队中，前面还有1个任务"
	case MJQueueFull:
		return "队列已满，请稍后尝试"
	case MJBanned:
		return "可能包含敏感词"
	}
	return "提交失败"
}

// mjError is new-api's error body for its /mj routes (sent with 400).
func mjError(description string) string {
	return string(mustJSON(map[string]any{"description": description + " ", "type": "upstream_error", "code": 4}))
}

func (g *Gateway) mjFetch(w http.ResponseWriter, r *http.Request) {
	req, ok := readRequest(w, r, g.done)
	if !ok {
		return
	}
	g.mu.Lock()
	if !g.recordLocked(req) {
		g.mu.Unlock()
		writeJSON(w, http.StatusUnauthorized, []byte(ErrorBody("", "无效的令牌")))
		return
	}
	if g.down {
		g.mu.Unlock()
		Status(http.StatusBadGateway, "<html><body><h1>502 Bad Gateway</h1></body></html>", nil)(w, &req)
		return
	}
	t := g.mj.tasks[r.PathValue("id")]
	if t == nil {
		g.mu.Unlock()
		writeJSON(w, http.StatusBadRequest, []byte(mjError("task_no_found")))
		return
	}
	step := MJStep{Task: MJTask{Status: "NOT_START", Progress: "0%"}}
	if len(t.steps) > 0 {
		step = t.steps[min(t.fetches, len(t.steps)-1)]
	}
	t.fetches++
	task := step.Task
	task.ID, task.Action, task.Prompt = t.task.ID, t.task.Action, t.task.Prompt
	g.mu.Unlock()
	if step.Reply != nil {
		step.Reply(w, &req)
		return
	}
	writeJSON(w, http.StatusOK, mustJSON(task))
}

// MJInputs is the base64Array of the last imagine submitted (the pictures
// given to start from).
func (g *Gateway) MJInputs() []string {
	var got []string
	for _, r := range g.Requests() {
		if strings.HasSuffix(r.Path, "/mj/submit/imagine") {
			got = r.Base64Array
		}
	}
	return got
}

package upstream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/fetch"
	"github.com/imaginebot/imaginebot/core/upstream"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

func mjModel() core.Model {
	return core.Model{Name: "mj", Label: "Midjourney", API: core.APIMidjourney, AcceptsImage: true}
}

func mjRequest() core.GenRequest {
	return core.GenRequest{Model: mjModel(), Prompt: "a fox in the snow <b>&</b> --ar 16:9", User: testUser, Job: "job-1"}
}

func realSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func percents(ps []core.GenProgress) []int {
	out := []int{}
	for _, p := range ps {
		out = append(out, p.Percent)
	}
	return out
}

func byPath(reqs []upstreamtest.Request, path string) []upstreamtest.Request {
	var out []upstreamtest.Request
	for _, r := range reqs {
		if r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

func fetchPath(id string) string { return "/mj/task/" + id + "/fetch" }

// wantButtons are the buttons the client hands on for the fake's.
func wantButtons(bs []upstreamtest.MJButton) []core.TaskButton {
	var out []core.TaskButton
	for _, b := range bs {
		out = append(out, core.TaskButton{CustomID: b.CustomID, Label: b.Label, Emoji: b.Emoji})
	}
	return out
}

func TestMidjourneyImagine(t *testing.T) {
	grid := upstreamtest.GridButtons("5f0c")
	tests := []struct {
		name         string
		script       func(gw *upstreamtest.Gateway) upstreamtest.MJScript
		wantPercents []int
		wantFetches  int
		wantWaits    []time.Duration
		wantSource   string // image name at the gateway
		wantButtons  []core.TaskButton
	}{
		{
			name: "progress rises, then the grid with its buttons",
			script: func(gw *upstreamtest.Gateway) upstreamtest.MJScript {
				return upstreamtest.MJScript{Steps: append(append([]upstreamtest.MJStep{upstreamtest.MJStatus("SUBMITTED", "0%")},
					upstreamtest.MJProgress(10, 45, 45, 90)...), upstreamtest.MJSuccess(gw.ImageURL("grid.png"), grid))}
			},
			// 45% twice is reported once.
			wantPercents: []int{0, 10, 45, 90}, wantFetches: 6,
			wantWaits:  []time.Duration{time.Second, 1500 * time.Millisecond, 2250 * time.Millisecond, 3375 * time.Millisecond, 5 * time.Second, 5 * time.Second},
			wantSource: "grid.png", wantButtons: wantButtons(grid),
		},
		{
			name: "code 22: queued, then NOT_START without progress, then done",
			script: func(gw *upstreamtest.Gateway) upstreamtest.MJScript {
				return upstreamtest.MJScript{Code: upstreamtest.MJQueued, Steps: []upstreamtest.MJStep{
					upstreamtest.MJStatus("NOT_START", ""), upstreamtest.MJStatus("NOT_START", ""), upstreamtest.MJStatus("IN_PROGRESS", "62%"),
					upstreamtest.MJSuccess(gw.ImageURL("queued.png"), grid)}}
			},
			wantPercents: []int{-1, 62}, wantFetches: 4, wantSource: "queued.png", wantButtons: wantButtons(grid),
		},
		{
			name: "code 21: the task exists; its id is polled",
			script: func(gw *upstreamtest.Gateway) upstreamtest.MJScript {
				return upstreamtest.MJScript{Code: upstreamtest.MJExists, Steps: []upstreamtest.MJStep{upstreamtest.MJSuccess(gw.ImageURL("old.png"), grid)}}
			},
			wantPercents: []int{}, wantFetches: 1, wantSource: "old.png", wantButtons: wantButtons(grid),
		},
		{
			name: "a numeric task id, fractional progress, buttons without a face dropped",
			script: func(gw *upstreamtest.Gateway) upstreamtest.MJScript {
				bs := append(slices.Clone(grid[:2]), upstreamtest.MJButton{CustomID: "MJ::x"}, upstreamtest.MJButton{Label: "no id"})
				return upstreamtest.MJScript{NumericID: true, Steps: []upstreamtest.MJStep{upstreamtest.MJStatus("IN_PROGRESS", "33.3%"),
					upstreamtest.MJSuccess(gw.ImageURL("n.png"), bs)}}
			},
			wantPercents: []int{33}, wantFetches: 2, wantSource: "n.png", wantButtons: wantButtons(grid[:2]),
		},
		{
			name: "an imageUrl given as a path is the gateway's",
			script: func(*upstreamtest.Gateway) upstreamtest.MJScript {
				return upstreamtest.MJScript{Steps: []upstreamtest.MJStep{upstreamtest.MJSuccess("/img/relative.png", nil)}}
			},
			wantPercents: []int{}, wantFetches: 1, wantSource: "relative.png",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, upstream.Config{})
			e.gw.PushMJ(tt.script(e.gw))
			req := mjRequest()
			imgs, err, progress := e.generate(t, req)
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			tasks := e.gw.MJTasks()
			if len(imgs) != 1 || len(tasks) != 1 {
				t.Fatalf("got %d images from %d tasks, want 1 and 1", len(imgs), len(tasks))
			}
			img, id := imgs[0], tasks[0]
			if img.Task != id {
				t.Errorf("Task = %q, want %q", img.Task, id)
			}
			if !slices.Equal(img.Buttons, tt.wantButtons) {
				t.Errorf("Buttons = %+v\nwant %+v", img.Buttons, tt.wantButtons)
			}
			if want := []string{e.gw.ImageURL(tt.wantSource)}; !slices.Equal(e.fetcher.Refs(), want) {
				t.Errorf("fetched %v, want %v", e.fetcher.Refs(), want)
			}
			if got := percents(progress); !slices.Equal(got, tt.wantPercents) {
				t.Errorf("progress = %v, want %v", got, tt.wantPercents)
			}
			if n := e.gw.MJFetches(id); n != tt.wantFetches {
				t.Errorf("task fetched %d times, want %d", n, tt.wantFetches)
			}
			if tt.wantWaits != nil && !slices.Equal(e.sleeper.Waits(), tt.wantWaits) {
				t.Errorf("waits between fetches = %v, want %v", e.sleeper.Waits(), tt.wantWaits)
			}

			reqs := e.gw.Requests()
			submits := byPath(reqs, upstreamtest.MJImaginePath)
			if len(submits) != 1 || len(byPath(reqs, fetchPath(id))) != tt.wantFetches || len(reqs) != 1+tt.wantFetches {
				t.Fatalf("requests: %d submits, %d in all, want 1 submit and %d fetches", len(submits), len(reqs), tt.wantFetches)
			}
			s := submits[0]
			if s.Method != http.MethodPost || s.Header.Get("Authorization") != "Bearer "+testKey || s.Header.Get("Content-Type") != "application/json" {
				t.Errorf("submit %s with headers %v", s.Method, s.Header)
			}
			if s.Prompt != req.Prompt || !slices.Equal(fieldNames(s), []string{"prompt"}) {
				t.Errorf("submit body %s: want only the prompt, verbatim", s.Body)
			}
			for _, f := range byPath(reqs, fetchPath(id)) {
				if f.Method != http.MethodGet || f.Header.Get("Authorization") != "Bearer "+testKey || len(f.Body) != 0 {
					t.Errorf("fetch %s with %d bytes and headers %v", f.Method, len(f.Body), f.Header)
				}
			}
		})
	}
}

func TestMidjourneyInputIsSentAsBase64Array(t *testing.T) {
	pic := upstreamtest.JPEG(8, 8)
	tests := []struct {
		name string
		in   *core.Image
		want string
	}{
		{"with its type", &core.Image{Data: upstreamtest.PNG(4, 4), MIME: "image/png"}, "data:image/png;base64," + b64(upstreamtest.PNG(4, 4))},
		{"sniffed without one", &core.Image{Data: pic}, "data:image/jpeg;base64," + b64(pic)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, upstream.Config{})
			req := mjRequest()
			req.Input = tt.in
			if _, err, _ := e.generate(t, req); err != nil {
				t.Fatal(err)
			}
			s := byPath(e.gw.Requests(), upstreamtest.MJImaginePath)[0]
			if !slices.Equal(s.Base64Array, []string{tt.want}) || s.Prompt != req.Prompt {
				t.Errorf("base64Array = %.60q…, prompt %q; want one data URI and the prompt", s.Base64Array, s.Prompt)
			}
			if !slices.Equal(fieldNames(s), []string{"base64Array", "prompt"}) {
				t.Errorf("fields = %v", fieldNames(s))
			}
		})
	}
}

func TestMidjourneySubmitErrors(t *testing.T) {
	tests := []struct {
		name       string
		replies    []upstreamtest.Reply
		scripts    []upstreamtest.MJScript
		want       core.Code
		wantCalls  int
		wantDetail string
		wantErr    string // in the operator's error
	}{
		{name: "code 23: queue full, retried, then overloaded", want: core.CodeOverloaded, wantCalls: 3, wantErr: "code 23",
			scripts: []upstreamtest.MJScript{{Code: upstreamtest.MJQueueFull}, {Code: upstreamtest.MJQueueFull}, {Code: upstreamtest.MJQueueFull}}},
		{name: "code 23 once, then submitted", want: "", wantCalls: 2 + 3,
			scripts: []upstreamtest.MJScript{{Code: upstreamtest.MJQueueFull}}},
		{name: "code 24: banned prompt, with the word", want: core.CodeRefused, wantCalls: 1, wantDetail: "可能包含敏感词: gore",
			scripts: []upstreamtest.MJScript{{Code: upstreamtest.MJBanned, BannedWord: "gore"}}},
		{name: "code 24 sent with HTTP 400 still refuses", want: core.CodeRefused, wantCalls: 1, wantDetail: "banned prompt",
			replies: []upstreamtest.Reply{upstreamtest.Status(400, `{"code":24,"description":"banned prompt","result":null}`, nil)}},
		{name: "another code: failed, not retried", want: core.CodeUpstreamFailed, wantCalls: 1, wantErr: "code 4",
			scripts: []upstreamtest.MJScript{{Code: 4, Description: "Invalid account"}}},
		{name: "no code at all", want: core.CodeBadResponse, wantCalls: 1,
			replies: []upstreamtest.Reply{upstreamtest.JSON(200, `{"hello":"world"}`)}},
		{name: "401: the key", want: core.CodeUpstreamAuth, wantCalls: 1,
			replies: []upstreamtest.Reply{upstreamtest.Status(401, upstreamtest.ErrorBody("", "无效的令牌"), nil)}},
		{name: "new-api 400 quota_not_enough: the balance", want: core.CodeUpstreamBalance, wantCalls: 1,
			replies: []upstreamtest.Reply{upstreamtest.Status(400, `{"description":"quota_not_enough ","type":"upstream_error","code":4}`, nil)}},
		{name: "new-api 429 (code 30): overloaded and retried", want: "", wantCalls: 2 + 3,
			replies: []upstreamtest.Reply{upstreamtest.Status(429, `{"description":"当前分组负载已饱和，请稍后再试","type":"upstream_error","code":30}`, nil)}},
		{name: "503 no channel", want: core.CodeModelUnavailable, wantCalls: 1,
			replies: []upstreamtest.Reply{upstreamtest.Status(503, upstreamtest.ErrorBody("model_not_found", "当前分组 default 下对于模型 mj_imagine 无可用渠道"), nil)}},
		{name: "502 HTML pages, retried, then a bad response", want: core.CodeBadResponse, wantCalls: 3,
			replies: repeat(3, upstreamtest.Status(502, "<html><body>502 Bad Gateway</body></html>", nil))},
		{name: "code 1 without a task id", want: core.CodeBadResponse, wantCalls: 1,
			replies: []upstreamtest.Reply{upstreamtest.JSON(200, `{"code":1,"description":"提交成功","result":""}`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, upstream.Config{})
			e.gw.Push(tt.replies...)
			e.gw.PushMJ(tt.scripts...)
			_, err, _ := e.generate(t, mjRequest())
			if got := core.ErrorCode(errOrNil(err)); got != tt.want {
				t.Fatalf("code = %q, want %q (%v)", got, tt.want, err)
			}
			if e.gw.Calls() != tt.wantCalls {
				t.Errorf("gateway calls = %d, want %d", e.gw.Calls(), tt.wantCalls)
			}
			if err != nil && err.Detail != tt.wantDetail {
				t.Errorf("Detail = %q, want %q", err.Detail, tt.wantDetail)
			}
			if tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not say %q", err, tt.wantErr)
			}
			if err != nil && len(e.gw.MJTasks()) != 0 {
				t.Errorf("a task was created: %v", e.gw.MJTasks())
			}
		})
	}
}

func TestMidjourneyTaskOutcomes(t *testing.T) {
	tests := []struct {
		name        string
		steps       func(gw *upstreamtest.Gateway) []upstreamtest.MJStep
		want        core.Code
		wantDetail  string
		wantFetches int
	}{
		{name: "FAILURE for the prompt: refused, with the reason", want: core.CodeRefused, wantFetches: 2,
			wantDetail: "Banned prompt detected: the prompt may violate community standards",
			steps: func(*upstreamtest.Gateway) []upstreamtest.MJStep {
				return []upstreamtest.MJStep{upstreamtest.MJStatus("IN_PROGRESS", "5%"),
					upstreamtest.MJFailure("Banned prompt detected: the prompt may violate community standards")}
			}},
		{name: "FAILURE in Chinese for a sensitive picture", want: core.CodeRefused, wantFetches: 1, wantDetail: "图片包含敏感内容",
			steps: func(*upstreamtest.Gateway) []upstreamtest.MJStep {
				return []upstreamtest.MJStep{upstreamtest.MJFailure("图片包含敏感内容")}
			}},
		{name: "FAILURE of the service: failed, reason cleaned of markup and the key", want: core.CodeUpstreamFailed, wantFetches: 1,
			wantDetail: "There was an error processing your request  (key [redacted])",
			steps: func(*upstreamtest.Gateway) []upstreamtest.MJStep {
				return []upstreamtest.MJStep{upstreamtest.MJFailure("There was an error processing your request ![x](https://cdn.example.com/x.png)\x07 (key " + testKey + ")")}
			}},
		{name: "CANCEL", want: core.CodeUpstreamFailed, wantFetches: 1,
			steps: func(*upstreamtest.Gateway) []upstreamtest.MJStep {
				return []upstreamtest.MJStep{upstreamtest.MJStatus("CANCEL", "")}
			}},
		{name: "MODAL: a form the bot cannot fill", want: core.CodeUpstreamFailed, wantFetches: 1,
			steps: func(*upstreamtest.Gateway) []upstreamtest.MJStep {
				return []upstreamtest.MJStep{upstreamtest.MJStatus("MODAL", "")}
			}},
		{name: "SUCCESS without an image", want: core.CodeBadResponse, wantFetches: 1,
			steps: func(*upstreamtest.Gateway) []upstreamtest.MJStep {
				return []upstreamtest.MJStep{upstreamtest.MJSuccess("", nil)}
			}},
		{name: "failed fetches in between are fetched again", want: "", wantFetches: 4,
			steps: func(gw *upstreamtest.Gateway) []upstreamtest.MJStep {
				return []upstreamtest.MJStep{upstreamtest.MJReply(upstreamtest.Status(500, upstreamtest.ErrorBody("do_request_failed", "x"), nil)),
					upstreamtest.MJReply(upstreamtest.Drop()), upstreamtest.MJReply(upstreamtest.JSON(200, "null")),
					upstreamtest.MJSuccess(gw.ImageURL("late.png"), nil)}
			}},
		{name: "fetches failing again and again end the job", want: core.CodeUpstreamFailed, wantFetches: 5,
			steps: func(gw *upstreamtest.Gateway) []upstreamtest.MJStep {
				return []upstreamtest.MJStep{upstreamtest.MJReply(upstreamtest.Status(500, upstreamtest.ErrorBody("do_request_failed", "x"), nil))}
			}},
		{name: "a fetch refused for the key ends the job at once", want: core.CodeUpstreamAuth, wantFetches: 1,
			steps: func(gw *upstreamtest.Gateway) []upstreamtest.MJStep {
				return []upstreamtest.MJStep{upstreamtest.MJReply(upstreamtest.Status(401, upstreamtest.ErrorBody("", "无效的令牌"), nil))}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, upstream.Config{APIKey: testKey})
			e.gw.PushMJ(upstreamtest.MJScript{Steps: tt.steps(e.gw)})
			imgs, err, _ := e.generate(t, mjRequest())
			if got := core.ErrorCode(errOrNil(err)); got != tt.want {
				t.Fatalf("code = %q, want %q (%v)", got, tt.want, err)
			}
			if id := e.gw.MJTasks()[0]; e.gw.MJFetches(id) != tt.wantFetches {
				t.Errorf("fetched %d times, want %d", e.gw.MJFetches(id), tt.wantFetches)
			}
			if err == nil {
				if len(imgs) != 1 || imgs[0].Task == "" {
					t.Errorf("images = %+v", imgs)
				}
				return
			}
			if err.Detail != tt.wantDetail {
				t.Errorf("Detail = %q, want %q", err.Detail, tt.wantDetail)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("the key is in the error: %v", err)
			}
			if !strings.Contains(err.Error(), e.gw.MJTasks()[0]) {
				t.Errorf("the error does not name the task: %v", err)
			}
			if len(e.fetcher.Refs()) != 0 {
				t.Errorf("fetched %v for a failed task", e.fetcher.Refs())
			}
		})
	}
}

func TestMidjourneyTaskThatNeverEndsTimesOut(t *testing.T) {
	tests := []struct {
		name        string
		cfg         upstream.Config
		ctx         func() (context.Context, context.CancelFunc)
		steps       []upstreamtest.MJStep
		want        core.Code
		wantSetting string
		wantLast    int // last progress percent, -2 for none
	}{
		{name: "upstream.timeout", cfg: upstream.Config{Timeout: 300 * time.Millisecond},
			steps: upstreamtest.MJNeverEnds(), want: core.CodeTimeout, wantSetting: "upstream.timeout", wantLast: 10},
		{name: "the job budget (limits.job_timeout) first", cfg: upstream.Config{Timeout: time.Minute},
			ctx: func() (context.Context, context.CancelFunc) {
				return core.WithSettingTimeout(context.Background(), 250*time.Millisecond, "limits.job_timeout")
			}, steps: upstreamtest.MJNeverEnds(), want: core.CodeTimeout, wantSetting: "limits.job_timeout", wantLast: 10},
		{name: "a fetch that hangs", cfg: upstream.Config{Timeout: 300 * time.Millisecond},
			steps: []upstreamtest.MJStep{upstreamtest.MJStatus("IN_PROGRESS", "20%"), upstreamtest.MJReply(upstreamtest.Hang())},
			want:  core.CodeTimeout, wantSetting: "upstream.timeout", wantLast: 20},
		{name: "cancelled", cfg: upstream.Config{Timeout: time.Minute},
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(150*time.Millisecond, cancel)
				return ctx, cancel
			}, steps: upstreamtest.MJNeverEnds(), want: core.CodeInterrupted, wantLast: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.cfg.TaskPollInterval, tt.cfg.TaskPollMax = 10*time.Millisecond, 40*time.Millisecond
			e := newEnv(t, tt.cfg, upstream.WithSleep(realSleep))
			e.gw.PushMJ(upstreamtest.MJScript{Steps: tt.steps})
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if tt.ctx != nil {
				ctx, cancel = tt.ctx()
			}
			defer cancel()
			last := -2
			start := time.Now()
			_, err := e.client.Generate(ctx, mjRequest(), func(p core.GenProgress) { last = p.Percent })
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("took %s", elapsed)
			}
			if got := core.ErrorCode(err); got != tt.want {
				t.Fatalf("code = %q, want %q (%v)", got, tt.want, err)
			}
			id := e.gw.MJTasks()[0]
			if msg := err.Error(); !strings.Contains(msg, tt.wantSetting) || !strings.Contains(msg, id) || !strings.Contains(msg, "IN_PROGRESS") {
				t.Errorf("error %q should name %q, the task %s and its status", msg, tt.wantSetting, id)
			}
			if last != tt.wantLast {
				t.Errorf("last progress = %d, want %d", last, tt.wantLast)
			}
			if n := e.gw.MJFetches(id); n < 2 {
				t.Errorf("fetched %d times: the poll did not go on", n)
			}
		})
	}
}

func TestMidjourneyAction(t *testing.T) {
	// The real fetcher, allowed to reach the fake on 127.0.0.1.
	f := fetch.New(fetch.Config{AllowedHosts: []string{"127.0.0.1"}})
	gw := upstreamtest.New(t)
	c := upstream.New(upstream.Config{BaseURL: gw.URL + "/v1/", APIKey: testKey}, f,
		upstream.WithSleep(func(context.Context, time.Duration) error { return nil }))

	grid, err := c.Generate(context.Background(), mjRequest(), nil)
	if err != nil {
		t.Fatal(err)
	}
	first := grid[0]
	if len(first.Buttons) != 9 || first.Buttons[1].Label != "U2" || first.Buttons[4].Emoji != "🔄" {
		t.Fatalf("grid buttons = %+v", first.Buttons)
	}

	press := core.GenRequest{Model: mjModel(), User: "telegram:42", Job: "job-2",
		Action: &core.TaskAction{TaskID: first.Task, CustomID: first.Buttons[1].CustomID}}
	up, err := c.Generate(context.Background(), press, nil)
	if err != nil {
		t.Fatal(err)
	}
	tasks := gw.MJTasks()
	if len(tasks) != 2 || up[0].Task != tasks[1] || up[0].Task == first.Task {
		t.Fatalf("upscale task %q, tasks %v: want a new task", up[0].Task, tasks)
	}
	actions := byPath(gw.Requests(), upstreamtest.MJActionPath)
	if len(actions) != 1 {
		t.Fatalf("%d action requests", len(actions))
	}
	a := actions[0]
	if a.CustomID != first.Buttons[1].CustomID || a.TaskID != first.Task || !slices.Equal(fieldNames(a), []string{"customId", "taskId"}) {
		t.Errorf("action body %s", a.Body)
	}
	if up[0].Source != gw.ImageURL("mj-"+tasks[1]+".png") || up[0].MIME != "image/png" {
		t.Errorf("upscale from %q (%s)", up[0].Source, up[0].MIME)
	}
	if _, err := png.Decode(bytes.NewReader(up[0].Data)); err != nil {
		t.Errorf("the upscale is no PNG: %v", err)
	}
	if want := wantButtons(upstreamtest.UpscaleButtons("h" + tasks[1])); !slices.Equal(up[0].Buttons, want) {
		t.Errorf("upscale buttons = %+v", up[0].Buttons)
	}
	if got := gw.ImageRequests(); !slices.Equal(got, []string{"mj-" + tasks[0] + ".png", "mj-" + tasks[1] + ".png"}) {
		t.Errorf("images downloaded: %v", got)
	}
}

func TestMidjourneyActionErrors(t *testing.T) {
	tests := []struct {
		name      string
		model     core.Model
		action    core.TaskAction
		want      core.Code
		wantCalls int
	}{
		{"a task the gateway does not know", mjModel(), core.TaskAction{TaskID: "999", CustomID: "MJ::JOB::upsample::2::x"}, core.CodeUpstreamFailed, 1},
		{"no custom id", mjModel(), core.TaskAction{TaskID: "999"}, core.CodeInternal, 0},
		{"not a midjourney model", request(false).Model, core.TaskAction{TaskID: "1", CustomID: "x"}, core.CodeInternal, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, upstream.Config{})
			_, err, _ := e.generate(t, core.GenRequest{Model: tt.model, User: testUser, Action: &tt.action})
			if got := core.ErrorCode(errOrNil(err)); got != tt.want {
				t.Fatalf("code = %q, want %q (%v)", got, tt.want, err)
			}
			if e.gw.Calls() != tt.wantCalls {
				t.Errorf("gateway calls = %d, want %d", e.gw.Calls(), tt.wantCalls)
			}
		})
	}
}

// The image address comes from the gateway: a private one is refused by
// the fetcher's guard, without a connection.
func TestMidjourneyImageAtAPrivateAddressIsRefused(t *testing.T) {
	tests := []struct{ name, url string }{
		{"loopback (the fake itself)", ""},
		{"cloud metadata", "http://169.254.169.254/latest/meta-data/grid.png"},
		{"a private network", "http://10.0.0.7/grid.png"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := upstreamtest.New(t)
			url := tt.url
			if url == "" {
				url = gw.ImageURL("grid.png")
			}
			gw.PushMJ(upstreamtest.MJScript{Steps: []upstreamtest.MJStep{upstreamtest.MJSuccess(url, upstreamtest.GridButtons("h"))}})
			c := upstream.New(upstream.Config{BaseURL: gw.URL, APIKey: testKey}, fetch.New(fetch.Config{}),
				upstream.WithSleep(func(context.Context, time.Duration) error { return nil }))
			imgs, err := c.Generate(context.Background(), mjRequest(), nil)
			if core.ErrorCode(err) != core.CodeImageRejected || imgs != nil {
				t.Fatalf("got %d images, %v; want image_rejected", len(imgs), err)
			}
			if hits := gw.ImageRequests(); len(hits) != 0 {
				t.Errorf("the fake was reached: %v", hits)
			}
		})
	}
}

// The fake's answers have the proxy's shapes (what the client decodes).
func TestFakeMidjourneyShapes(t *testing.T) {
	gw := upstreamtest.New(t)
	gw.PushMJ(upstreamtest.MJScript{NumericID: true})
	resp, err := http.Post(gw.URL+upstreamtest.MJImaginePath, "application/json", strings.NewReader(`{"prompt":"cat"}`))
	if err != nil {
		t.Fatal(err)
	}
	var submit map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&submit); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, isNumber := submit["result"].(float64); !isNumber || submit["code"] != float64(1) {
		t.Errorf("submit answer = %v", submit)
	}
	id := gw.MJTasks()[0]
	resp, err = http.Get(gw.URL + fetchPath(id))
	if err != nil {
		t.Fatal(err)
	}
	var task upstreamtest.MJTask
	if err := json.NewDecoder(resp.Body).Decode(&task); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if task.ID != id || task.Status != "SUBMITTED" || task.Prompt != "cat" || task.Action != "IMAGINE" {
		t.Errorf("task = %+v", task)
	}
	resp, err = http.Get(gw.URL + fetchPath("nope"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("an unknown task answers %d", resp.StatusCode)
	}
}

package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// imagine -model for a Midjourney model prints the task and its buttons;
// -action U2 -task ID then runs that action from the terminal.
func TestImagineMidjourneyAction(t *testing.T) {
	gw := upstreamtest.New(t)
	gw.ServeImage("grid.png", "image/png", upstreamtest.PNG(32, 32))
	gw.ServeImage("up.png", "image/png", upstreamtest.PNG(16, 16))
	gw.PushMJ(
		upstreamtest.MJScript{Steps: []upstreamtest.MJStep{upstreamtest.MJSuccess(gw.ImageURL("grid.png"), upstreamtest.GridButtons("h1"))}},
		upstreamtest.MJScript{Steps: []upstreamtest.MJStep{upstreamtest.MJSuccess(gw.ImageURL("up.png"), upstreamtest.UpscaleButtons("h2"))}},
	)
	cfg := gatewayConfig(t, gw, "models:\n  - name: mj\n    api: midjourney\n    upstream_model: midjourney\n")
	env := map[string]string{"IMAGINEBOT_UPSTREAM_API_KEY": "sk-x"}
	dir := t.TempDir()
	code, _, errOut := runCLI(t, env, "imagine", "-config", cfg, "-o", dir, "-model", "mj", "a castle")
	m := regexp.MustCompile(`task (\S+): .*U2`).FindStringSubmatch(errOut)
	if code != 0 || m == nil {
		t.Fatalf("exit %d, no task with U2 in: %s", code, errOut)
	}
	code, out, errOut := runCLI(t, env, "imagine", "-config", cfg, "-o", dir, "-model", "mj", "-action", "U2", "-task", m[1])
	if code != 0 || !strings.HasSuffix(strings.TrimSpace(out), ".png") {
		t.Fatalf("action: exit %d %s %s", code, out, errOut)
	}
	var sent bool
	for _, r := range gw.Requests() {
		sent = sent || (strings.HasSuffix(r.Path, "/mj/submit/action") && r.CustomID == "MJ::JOB::upsample::2::h1" && r.TaskID == m[1])
	}
	if !sent {
		t.Fatal("the U2 action was not sent for the task")
	}
	if code, _, errOut := runCLI(t, env, "imagine", "-config", cfg, "-model", "mj", "-action", "U9", "-task", m[1]); code != 2 || !strings.Contains(errOut, `no button "U9"`) {
		t.Fatalf("unknown button: %d %s", code, errOut)
	}
}

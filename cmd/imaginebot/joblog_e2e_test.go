package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// jobLineRe matches the messages of the lines a job writes: the pipeline's,
// the upstream client's, the fetcher's and the adapter's about its result.
var jobLineRe = regexp.MustCompile(`msg="?(job |upstream: |fetch: |telegram: (job|photo|document|album|status|could not))`)

// Every line a job logs names it: through the real wiring, a job that is
// retried once and delivered as a document after Telegram refused the
// photo, and a streamed job whose picture is on a blocked address, each
// leave lines from core, the upstream client, the fetcher and the adapter,
// and every one of them carries job=<its key>.
func TestRunLogsTheJobOnEveryLine(t *testing.T) {
	gw := upstreamtest.New(t)
	tg := telegramtest.New(t)
	env := map[string]string{
		"IMAGINEBOT_UPSTREAM_API_KEY":      "sk-joblog",
		"IMAGINEBOT_TELEGRAM_TOKEN":        telegramtest.DefaultToken,
		"IMAGINEBOT_TELEGRAM_API_BASE_URL": tg.URL,
		"IMAGINEBOT_DB":                    t.TempDir() + "/imaginebot.db",
	}
	cfg := writeConfig(t, "upstream:\n  base_url: "+gw.URL+"\n  retries: 1\n"+
		"images:\n  allow_private_hosts: [127.0.0.1]\n"+
		"models:\n  - name: stable-diffusion\n  - name: flux\n    stream: true\n"+
		"telegram:\n  poll_timeout: 1s\n  progress_interval: 1s\n", 0o600)
	logs := startRun(t, cfg, env)
	alice := telegramtest.User(42, "alice", "en")

	gw.Push(upstreamtest.Status(500, upstreamtest.ErrorBody("bad_response_status_code", "upstream error"), nil),
		upstreamtest.JSON(200, upstreamtest.Completion("![x]("+gw.ImageURL("a.png")+")")))
	tg.FailNext("sendPhoto", 400, "Bad Request: PHOTO_INVALID_DIMENSIONS", 0)
	tg.Inject(tg.PrivateText(alice, "a fox in the snow"))
	tg.WaitCall(t, "sendDocument", 15*time.Second)

	// 127.0.0.2 is loopback, and only 127.0.0.1 is allowed.
	gw.Push(upstreamtest.Stream(upstreamtest.Chunk("图像生成中 50%\n"), upstreamtest.Chunk("![x](http://127.0.0.2:9/secret.png)")))
	tg.Inject(tg.PrivateText(alice, "/imagine a second fox --model flux"))
	tg.WaitText(t, 42, 15*time.Second, "can't safely download")

	var keys []string
	for _, m := range regexp.MustCompile(`msg="job reserved" job=(\S+)`).FindAllStringSubmatch(logs.String(), -1) {
		keys = append(keys, m[1])
	}
	if len(keys) != 2 {
		t.Fatalf("%d jobs reserved:\n%s", len(keys), logs)
	}
	// Each job has lines of every kind, and says so.
	want := map[string][]string{
		keys[0]: {"job reserved", "upstream: request", "upstream: retrying", "upstream: generated", "fetch: image ok", "telegram: photo upload failed", "job delivered"},
		keys[1]: {"upstream: progress", "fetch: refused image", "upstream: image fetch failed", "upstream: generation failed", "job failed", "telegram: job refused or failed"},
	}
	for key, msgs := range want {
		for _, msg := range msgs {
			if !regexp.MustCompile(`msg="?` + regexp.QuoteMeta(msg) + `.* job=` + regexp.QuoteMeta(key) + `( |$)`).MatchString(logs.String()) {
				t.Errorf("no %q line with job=%s", msg, key)
			}
		}
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if !jobLineRe.MatchString(line) && !strings.Contains(line, " model=") {
			continue
		}
		if !strings.Contains(line, " job="+keys[0]) && !strings.Contains(line, " job="+keys[1]) {
			t.Errorf("a line of a job does not name it: %s", line)
		}
	}
	if t.Failed() {
		t.Logf("logs:\n%s", logs)
	}
}

package upstreamtest_test

import (
	"bytes"
	"encoding/json"
	"image"
	_ "image/gif"
	_ "image/jpeg"
	_ "image/png"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

func post(t *testing.T, gw *upstreamtest.Gateway, key, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, gw.URL+upstreamtest.ChatPath, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestDefaultReplyAndRecording(t *testing.T) {
	gw := upstreamtest.New(t)
	resp, body := post(t, gw, "k", `{"model":"flux","messages":[{"role":"user","content":"a fox"}],"user":"abc","temperature":0.5}`)
	if resp.StatusCode != 200 || !strings.Contains(body, gw.ImageURL("default.png")) {
		t.Errorf("default reply = %d %s", resp.StatusCode, body)
	}
	var cc struct {
		Object  string `json:"object"`
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal([]byte(body), &cc); err != nil || cc.Object != "chat.completion" || len(cc.Choices) != 1 {
		t.Errorf("default reply is not a chat.completion: %v %s", err, body)
	}
	_, body = post(t, gw, "k", `{"model":"flux","stream":true,"messages":[]}`)
	if !strings.Contains(body, "data: ") || !strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Errorf("default streamed reply = %q", body)
	}
	reqs := gw.Requests()
	if gw.Calls() != 2 || len(reqs) != 2 {
		t.Fatalf("calls = %d", gw.Calls())
	}
	r := reqs[0]
	if r.Model != "flux" || r.User != "abc" || *r.Temperature != 0.5 || r.Messages[0].Content != "a fox" || r.Header.Get("Authorization") != "Bearer k" {
		t.Errorf("recorded %+v", r)
	}
	if _, ok := r.Fields["top_p"]; ok || r.Fields["user"] == nil {
		t.Errorf("Fields = %v", r.Fields)
	}
	if !reqs[1].Stream {
		t.Error("stream not recorded")
	}
}

func TestQueueThenHandler(t *testing.T) {
	gw := upstreamtest.New(t)
	gw.Push(upstreamtest.Status(429, upstreamtest.ErrorBody("", "busy"), upstreamtest.RetryAfter(3*time.Second)))
	gw.Handle(func(w http.ResponseWriter, r *upstreamtest.Request) {
		upstreamtest.JSON(200, upstreamtest.Completion("handled "+r.Model))(w, r)
	})
	resp, _ := post(t, gw, "k", `{"model":"m"}`)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "3" {
		t.Errorf("first = %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if _, body := post(t, gw, "k", `{"model":"m"}`); !strings.Contains(body, "handled m") {
		t.Errorf("second = %s", body)
	}
}

func TestRequireKey(t *testing.T) {
	gw := upstreamtest.New(t)
	gw.RequireKey("sk-right")
	gw.Push(upstreamtest.JSON(200, upstreamtest.Completion("scripted")))
	if resp, _ := post(t, gw, "sk-wrong", `{}`); resp.StatusCode != 401 {
		t.Errorf("wrong key: %d", resp.StatusCode)
	}
	if resp, body := post(t, gw, "sk-right", `{}`); resp.StatusCode != 200 || !strings.Contains(body, "scripted") {
		t.Errorf("right key: %d %s (the scripted reply must wait for it)", resp.StatusCode, body)
	}
}

func TestWaitAndHang(t *testing.T) {
	gw := upstreamtest.New(t)
	release := make(chan struct{})
	gw.Push(upstreamtest.Wait(release, upstreamtest.JSON(200, upstreamtest.Completion("late"))))
	done := make(chan string)
	go func() {
		_, body := post(t, gw, "k", `{}`)
		done <- body
	}()
	select {
	case <-done:
		t.Fatal("Wait answered before release")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if body := <-done; !strings.Contains(body, "late") {
		t.Errorf("after release: %s", body)
	}
	// Hang never answers: the client gives up.
	gw.Push(upstreamtest.Hang())
	c := &http.Client{Timeout: 50 * time.Millisecond}
	resp, err := c.Post(gw.URL+upstreamtest.ChatPath, "application/json", strings.NewReader("{}"))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("Hang answered %d", resp.StatusCode)
	}
	if gw.Calls() != 2 {
		t.Errorf("calls = %d", gw.Calls())
	}
}

func TestImages(t *testing.T) {
	gw := upstreamtest.New(t)
	big := upstreamtest.NoisePNG(300, 300)
	gw.ServeImage("big.png", "image/png", big)
	gw.RedirectImage("moved.png", gw.ImageURL("target.jpg"))
	tests := []struct {
		name, ctype, format string
		status              int
	}{
		{"a.png", "image/png", "png", 200},
		{"b.JPG", "image/jpeg", "jpeg", 200},
		{"c.gif", "image/gif", "gif", 200},
		{"big.png", "image/png", "png", 200},
		{"moved.png", "image/jpeg", "jpeg", 200},
		{"page.html", "text/html; charset=utf-8", "", 200},
		{"gone.404", "", "", 404},
	}
	for _, tt := range tests {
		resp, err := http.Get(gw.ImageURL(tt.name))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s: status %d", tt.name, resp.StatusCode)
			continue
		}
		if tt.ctype != "" && resp.Header.Get("Content-Type") != tt.ctype {
			t.Errorf("%s: Content-Type %q", tt.name, resp.Header.Get("Content-Type"))
		}
		if tt.format == "" {
			continue
		}
		if _, format, err := image.Decode(bytes.NewReader(b)); err != nil || format != tt.format {
			t.Errorf("%s: decode = %s, %v", tt.name, format, err)
		}
	}
	if len(big) < 300*300*3 {
		t.Errorf("NoisePNG(300, 300) is only %d bytes", len(big))
	}
	if got := gw.ImageRequests(); len(got) != len(tests)+1 || got[0] != "a.png" {
		t.Errorf("ImageRequests = %q", got)
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(upstreamtest.PNG(7, 5)))
	if err != nil || format != "png" || cfg.Width != 7 || cfg.Height != 5 {
		t.Errorf("PNG(7, 5) = %v %s %v", cfg, format, err)
	}
}

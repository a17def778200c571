package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
	"github.com/imaginebot/imaginebot/storage/bolt"
)

// runCLI runs the command line in-process with env as the environment.
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = cli(args, &out, &errb, envMap(env))
	return code, out.String(), errb.String()
}

func TestHelpAndVersion(t *testing.T) {
	code, out, _ := runCLI(t, nil, "help")
	for _, c := range []string{"run", "imagine", "quota", "backup", "version", "help"} {
		if !strings.Contains(out, "  "+c+" ") {
			t.Errorf("help does not list %q:\n%s", c, out)
		}
	}
	if code != 0 {
		t.Fatalf("help exit %d", code)
	}
	if code, out, _ := runCLI(t, nil, "version"); code != 0 || !strings.HasPrefix(out, "imaginebot ") {
		t.Fatalf("version: %d %q", code, out)
	}
	if code, _, errOut := runCLI(t, nil, "fly"); code != 2 || !strings.Contains(errOut, `unknown command "fly"`) {
		t.Fatalf("unknown command: %d %q", code, errOut)
	}
	if code, out, _ := runCLI(t, nil, "help", "quota"); code != 0 || !strings.Contains(out, "grant     SCOPE USER N") {
		t.Fatalf("help quota: %d %q", code, out)
	}
}

// gatewayConfig writes a config that points at gw and lets images come from
// the loopback fake.
func gatewayConfig(t *testing.T, gw *upstreamtest.Gateway, extra string) string {
	t.Helper()
	return writeConfig(t, "upstream:\n  base_url: "+gw.URL+"\n  retries: 0\nimages:\n  allow_private_hosts: [127.0.0.1]\n"+extra, 0o600)
}

func TestImagineCommand(t *testing.T) {
	gw := upstreamtest.New(t)
	gw.RequireKey("sk-good")
	cfg := gatewayConfig(t, gw, "")
	dir := t.TempDir()
	env := map[string]string{"IMAGINEBOT_UPSTREAM_API_KEY": "sk-good"}
	gw.Push(upstreamtest.JSON(200, upstreamtest.Completion("生成完成 ![a]("+gw.ImageURL("fox.png")+") ![b]("+gw.ImageURL("fox2.jpg")+")")))

	code, out, errOut := runCLI(t, env, "imagine", "-config", cfg, "-o", dir, "-model", "flux", "-ar", "16:9", "a", "fox", "in", "the", "snow")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	files := strings.Fields(out)
	if len(files) != 2 || !strings.HasSuffix(files[0], ".png") || !strings.HasSuffix(files[1], ".jpg") {
		t.Fatalf("saved %q", out)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil || len(data) < 8 {
			t.Fatalf("%s: %v", f, err)
		}
	}
	if !strings.Contains(errOut, "Generating") || !strings.Contains(errOut, "done in") {
		t.Fatalf("no progress on stderr: %q", errOut)
	}
	req := gw.Requests()[0]
	if req.Model != "flux" || req.Messages[0].Content != "a fox in the snow\nAspect ratio: 16:9" {
		t.Fatalf("request = %+v", req)
	}
}

func TestImagineCommandFailures(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		reply   upstreamtest.Reply
		args    []string
		code    int
		want    []string
		notWant string
	}{
		{name: "bad key", env: map[string]string{"IMAGINEBOT_UPSTREAM_API_KEY": "sk-wrong-secret-key"}, args: []string{"a cat"}, code: 1,
			want: []string{"check the key (upstream.api_key", "upstream.base_url", "detail: upstream: HTTP 401"}, notWant: "sk-wrong-secret-key"},
		{name: "chinese locale: progress in chinese, the failure for the operator", env: map[string]string{"IMAGINEBOT_UPSTREAM_API_KEY": "sk-good", "LANG": "zh_CN.UTF-8"},
			reply: upstreamtest.Status(503, upstreamtest.ErrorBody("model_not_found", "无可用渠道"), nil), args: []string{"a cat"}, code: 1,
			want: []string{"生成中", "no working channel for this model", "choose another with -model", "detail: upstream: HTTP 503"}, notWant: "该模型暂时不可用"},
		{name: "no key", env: map[string]string{}, args: []string{"a cat"}, code: 1, want: []string{"upstream.api_key: is empty; set IMAGINEBOT_UPSTREAM_API_KEY"}},
		{name: "no prompt", env: map[string]string{"IMAGINEBOT_UPSTREAM_API_KEY": "sk-good"}, args: []string{}, code: 2, want: []string{"give a prompt", "usage: imaginebot imagine"}},
		{name: "unknown model", env: map[string]string{"IMAGINEBOT_UPSTREAM_API_KEY": "sk-good"}, args: []string{"-model", "dalle", "a cat"}, code: 1,
			want: []string{"unknown model “dalle”: -model takes", "stable-diffusion, flux"}, notWant: "I don't know"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw := upstreamtest.New(t)
			gw.RequireKey("sk-good")
			if tt.reply != nil {
				gw.Push(tt.reply)
			}
			args := append([]string{"imagine", "-config", gatewayConfig(t, gw, ""), "-o", t.TempDir()}, tt.args...)
			code, _, errOut := runCLI(t, tt.env, args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d: %s", code, tt.code, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			if tt.notWant != "" && strings.Contains(errOut, tt.notWant) {
				t.Errorf("stderr shows %q:\n%s", tt.notWant, errOut)
			}
		})
	}
}

func TestImagineCommandBadConfig(t *testing.T) {
	cfg := writeConfig(t, "upstream:\n  base_url: ftp://x\nquotas:\n  time_zone: Nowhere/Land\n", 0o600)
	code, _, errOut := runCLI(t, map[string]string{"IMAGINEBOT_UPSTREAM_API_KEY": "sk-x"}, "imagine", "-config", cfg, "a cat")
	if code != 1 || !strings.Contains(errOut, "configuration has 2 problems") ||
		!strings.Contains(errOut, "upstream.base_url") || !strings.Contains(errOut, "quotas.time_zone") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

func TestQuotaAndBackupCommands(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "ledger.db")
	env := map[string]string{"IMAGINEBOT_DB": db}
	// A path that does not exist is an error, and nothing is created there.
	if code, _, errOut := runCLI(t, env, "quota", "show", "telegram:group:-100", "42"); code != 1 || !strings.Contains(errOut, "storage.path (nothing was created)") {
		t.Fatalf("missing database: %d %s", code, errOut)
	}
	if _, err := os.Stat(db); err == nil {
		t.Fatal("the quota command created a database")
	}
	created, err := bolt.Open(db) // as the bot leaves it
	if err != nil {
		t.Fatal(err)
	}
	created.Close()
	// Typos in scopes and users are refused with the accepted forms.
	for _, args := range [][]string{
		{"show", "telegram:privat", "42"},
		{"show", "telegram:group:abc", "42"},
		{"grant", "telegram:group:-100", "bob", "1"},
		{"set-daily", "discord:guild", "5"},
		{"audit", "telegrm:private"},
	} {
		code, _, errOut := runCLI(t, env, append([]string{"quota"}, args...)...)
		if code != 2 || !strings.Contains(errOut, "use telegram:") {
			t.Errorf("quota %v: exit %d: %s", args, code, errOut)
		}
	}
	steps := []struct {
		args []string
		want []string
	}{
		{[]string{"grant", "telegram:group:-100", "42", "5"}, []string{"account    telegram:group:-100/telegram:42", "credits    5", "remaining  15"}},
		{[]string{"set-daily", "telegram:group:-100", "telegram:42", "3"}, []string{"daily      3 (user)", "remaining  8"}},
		{[]string{"set-daily", "telegram:group:-100", "20"}, []string{"daily allowance in telegram:group:-100 is now 20"}},
		{[]string{"set-daily", "telegram:group:-100", "42", "default"}, []string{"daily      20 (scope)"}},
		{[]string{"revoke", "telegram:group:-100", "42", "2"}, []string{"credits    3"}},
		{[]string{"ban", "telegram:group:-100", "42"}, []string{"banned     true"}},
		{[]string{"unban", "telegram:group:-100", "42"}, []string{"banned     false"}},
		{[]string{"reset", "telegram:group:-100", "42"}, []string{"used today 0"}},
		{[]string{"show", "telegram:group:-100", "42"}, []string{"remaining  23"}},
		{[]string{"history", "telegram:group:-100", "42"}, []string{"no jobs"}},
		{[]string{"audit", "telegram:group:-100"}, []string{"cli:cli (cli)", "grant", "set-scope-daily", "ban", "credits=0 banned=false → daily=10(default) used=0 credits=5"}},
	}
	for _, s := range steps {
		code, out, errOut := runCLI(t, env, append([]string{"quota"}, s.args...)...)
		if code != 0 {
			t.Fatalf("quota %v: exit %d: %s", s.args, code, errOut)
		}
		for _, w := range s.want {
			if !strings.Contains(out, w) {
				t.Fatalf("quota %v: output lacks %q:\n%s", s.args, w, out)
			}
		}
	}
	if code, _, errOut := runCLI(t, env, "quota", "grant", "telegram:group:-100", "42", "zero"); code != 2 || !strings.Contains(errOut, `"zero" is not a number`) {
		t.Fatalf("bad count: %d %s", code, errOut)
	}
	if code, _, errOut := runCLI(t, env, "quota", "grant", "telegram:group:-100", "42", "0"); code != 1 || !strings.Contains(errOut, "0 is out of range") {
		t.Fatalf("zero grant: %d %s", code, errOut)
	}

	backup := filepath.Join(dir, "copy.db")
	if code, out, errOut := runCLI(t, env, "backup", backup); code != 0 || !strings.Contains(out, "backed up") {
		t.Fatalf("backup: %d %s %s", code, out, errOut)
	}
	if code, out, _ := runCLI(t, env, "quota", "-db", backup, "show", "telegram:group:-100", "42"); code != 0 || !strings.Contains(out, "remaining  23") {
		t.Fatalf("backup content: %d %s", code, out)
	}

	// While another process holds the database, the CLI says so instead of hanging.
	held, err := bolt.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if code, _, errOut := runCLI(t, env, "quota", "show", "telegram:group:-100", "42"); code != 1 || !strings.Contains(errOut, "the database is in use by another imaginebot process") {
		t.Fatalf("locked: %d %s", code, errOut)
	}
}

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeConfig(t *testing.T, body string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadConfigNoFile(t *testing.T) {
	cfg, err := LoadConfig("", envMap(map[string]string{
		"IMAGINEBOT_UPSTREAM_API_KEY": "sk-test",
		"IMAGINEBOT_TELEGRAM_TOKEN":   "123:abc",
		"IMAGINEBOT_TELEGRAM_OWNERS":  "1, 2",
	}), func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Upstream.BaseURL != "https://api.chatgptsb.com" || cfg.Upstream.APIKey != "sk-test" || cfg.Upstream.Timeout != 5*time.Minute {
		t.Fatalf("upstream = %+v", cfg.Upstream)
	}
	if len(cfg.Models) != 2 || cfg.DefaultModel != "stable-diffusion" || *cfg.Quotas.Daily != 10 || cfg.Images.MaxBytes != 20<<20 {
		t.Fatalf("defaults = %+v", cfg)
	}
	if len(cfg.Telegram.Owners) != 2 || cfg.Telegram.Owners[1] != 2 {
		t.Fatalf("owners = %v", cfg.Telegram.Owners)
	}
	if p := cfg.validateRun(); len(p) != 0 {
		t.Fatalf("run problems: %v", p)
	}
}

func TestExampleConfigLoads(t *testing.T) {
	var warned []string
	cfg, err := LoadConfig("../../config.example.yaml", envMap(map[string]string{
		"IMAGINEBOT_UPSTREAM_API_KEY": "sk-from-env",
		"IMAGINEBOT_TELEGRAM_TOKEN":   "123:abc",
	}), func(s string) { warned = append(warned, s) })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Upstream.APIKey != "sk-from-env" || cfg.Telegram.Token != "123:abc" || cfg.Models[1].Name != "flux" {
		t.Fatalf("cfg = %+v", cfg)
	}
	if len(warned) != 0 {
		t.Fatalf("the example holds no literal secret, yet: %v", warned)
	}
}

func TestLoadConfigReportsEveryProblem(t *testing.T) {
	path := writeConfig(t, `
upstream:
  bse_url: https://x
  timeout: 1s
models:
  - name: flux
    cost: -1
    prompt_template: "{{.Prompt} broken"
  - name: FLUX
    colour: red
default_model: dalle
limits:
  concurrency: -3
quotas:
  time_zone: Mars/Olympus
  daily: -1
images:
  max_bytes: lots
telegram:
  token: not-a-token
  webhook:
    url: http://insecure.example/hook
`, 0o600)
	_, err := LoadConfig(path, envMap(nil), func(string) {})
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v", err)
	}
	want := []string{
		`upstream.bse_url: unknown key (line 3); did you mean "base_url"?`,
		`models[1].colour: unknown key`,
		`upstream.timeout: 1s is out of range`,
		`models[0].cost: -1 is out of range`,
		`models[0].prompt_template:`,
		`models[1].name: "FLUX" is listed twice`,
		`default_model: "dalle" is not one of models[].name`,
		`limits.concurrency: -3 is out of range`,
		`quotas.time_zone: "Mars/Olympus" is not a time zone`,
		`quotas.daily: -1 is negative`,
		`"lots" is not a size`,
		`telegram.token: does not look like a bot token`,
		`telegram.webhook.url: "http://insecure.example/hook" must use https`,
		`telegram.webhook.secret_token: is missing or invalid`,
	}
	msg := err.Error()
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("missing problem %q in:\n%s", w, msg)
		}
	}
	if n := strings.Count(msg, "\n  - "); n != len(want) {
		t.Errorf("%d problems listed, want %d one per line:\n%s", n, len(want), msg)
	}
	// limits.job_timeout follows upstream.timeout: the one problem is reported once.
	if strings.Contains(msg, "limits.job_timeout") {
		t.Errorf("a derived value was reported again:\n%s", msg)
	}
}

// Values of the wrong kind are named by key path with the fix, not by a
// YAML line and Go type; fractions are refused for whole numbers; and a
// run's own needs (key, token) come in the same list.
func TestConfigValueKinds(t *testing.T) {
	path := writeConfig(t, `
upstream:
  timeout: 30
  stream: maybe
  temperature: warm
limits:
  per_user_jobs: "many"
  burst: 1.5
  rate_per_minute: often
quotas:
  scopes:
    "telegram:group:-100": lots
telegram:
  owners: [12, "bob"]
  poll_timeout: 50x
`, 0o600)
	_, err := LoadConfig(path, envMap(nil), func(string) {}, (*Config).validateRun)
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v", err)
	}
	msg := err.Error()
	for _, w := range []string{
		`upstream.timeout: 30 has no unit; write 30s`,
		`upstream.stream: "maybe" is not true or false`,
		`upstream.temperature: "warm" is not a number`,
		`limits.per_user_jobs: "many" is not a whole number`,
		`limits.burst: 1.5 is not a whole number`,
		`limits.rate_per_minute: "often" is not a number`,
		`quotas.scopes.telegram:group:-100: "lots" is not a whole number`,
		`telegram.owners[1]: "bob" is not a whole number`,
		`telegram.poll_timeout: "50x" is not a duration`,
		`upstream.api_key: is empty`,
		`no chat platform is enabled`,
	} {
		if !strings.Contains(msg, w) {
			t.Errorf("missing %q in:\n%s", w, msg)
		}
	}
	if strings.Contains(msg, "cannot unmarshal") || strings.Contains(msg, "YAML value") {
		t.Errorf("a raw YAML type error leaked:\n%s", msg)
	}
}

func TestLoadConfigEnvironment(t *testing.T) {
	path := writeConfig(t, `
upstream:
  api_key: ${MY_KEY}
  base_url: https://file.example
telegram:
  token: ${UNSET_TOKEN}
`, 0o600)
	cfg, err := LoadConfig(path, envMap(map[string]string{
		"MY_KEY":                       "sk-ref",
		"IMAGINEBOT_UPSTREAM_BASE_URL": "https://env.example",
	}), func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Upstream.APIKey != "sk-ref" || cfg.Upstream.BaseURL != "https://env.example" {
		t.Fatalf("upstream = %+v", cfg.Upstream)
	}
	p := cfg.validateRun()
	if len(p) != 1 || !strings.Contains(p[0], "no chat platform is enabled") || !strings.Contains(p[0], "IMAGINEBOT_TELEGRAM_TOKEN") || !strings.Contains(p[0], "IMAGINEBOT_DISCORD_TOKEN") {
		t.Fatalf("run problems = %v", p)
	}
}

func TestLoadConfigWorldReadableSecrets(t *testing.T) {
	tests := []struct {
		name string
		body string
		mode os.FileMode
		warn bool
	}{
		{"literal secret, world readable", "upstream:\n  api_key: sk-literal\n", 0o644, true},
		{"literal secret, private", "upstream:\n  api_key: sk-literal\n", 0o600, false},
		{"env reference, world readable", "upstream:\n  api_key: ${K}\n", 0o644, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.body, tt.mode)
			if err := os.Chmod(path, tt.mode); err != nil { // umask may have narrowed it
				t.Fatal(err)
			}
			var warned []string
			if _, err := LoadConfig(path, envMap(map[string]string{"K": "sk-x"}), func(s string) { warned = append(warned, s) }); err != nil {
				t.Fatal(err)
			}
			if (len(warned) > 0) != tt.warn {
				t.Fatalf("warnings = %v", warned)
			}
			for _, w := range warned {
				if strings.Contains(w, "sk-literal") {
					t.Fatalf("warning shows the secret: %s", w)
				}
			}
		})
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1024", 1024, true}, {"20MiB", 20 << 20, true}, {"10MB", 10_000_000, true}, {"512 KiB", 512 << 10, true},
		{"1GiB", 1 << 30, true}, {"lots", 0, false}, {"-1", 0, false}, {"5TiB", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseByteSize(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("parseByteSize(%q) = %d, %v", tt.in, got, err)
			}
		})
	}
}

// TestExampleDocumentsEveryKey keeps config.example.yaml complete: every key
// of Config appears in it (set, or commented out with its comment).
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	var walk func(typ reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct {
			return
		}
		for i := range typ.NumField() {
			f := typ.Field(i)
			key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if key == "" {
				continue
			}
			if !regexp.MustCompile(`(?m)^[ #-]*` + regexp.QuoteMeta(key) + `:`).MatchString(text) {
				t.Errorf("config.example.yaml does not document %s", join(path, key))
			}
			walk(f.Type, join(path, key))
		}
	}
	walk(reflect.TypeOf(Config{}), "")
}

func TestAllowPrivateHosts(t *testing.T) {
	path := writeConfig(t, "images:\n  allow_private_hosts: [10.0.0.0/8, gateway.lan, 192.168.1.5, \"http://x\", \"*.lan\"]\n", 0o600)
	_, err := LoadConfig(path, envMap(nil), func(string) {})
	msg := fmt.Sprint(err)
	if !strings.Contains(msg, `images.allow_private_hosts[3]: "http://x"`) || !strings.Contains(msg, `images.allow_private_hosts[4]: "*.lan"`) ||
		strings.Contains(msg, "[0]") || strings.Contains(msg, "[1]") || strings.Contains(msg, "[2]") {
		t.Fatalf("err = %v", err)
	}
}

func TestConfigScopeNames(t *testing.T) {
	path := writeConfig(t, `
quotas:
  scopes:
    "telegram:private": 3
    "telegram:privat": 3
    "telegram:group:abc": 3
    "discord:guild:123456789012345678": 4
`, 0o600)
	_, err := LoadConfig(path, envMap(nil), func(string) {})
	msg := fmt.Sprint(err)
	for _, bad := range []string{`quotas.scopes.telegram:privat: "telegram:privat" is not a scope; use telegram:private, telegram:group:<chat id>`, `quotas.scopes.telegram:group:abc:`} {
		if !strings.Contains(msg, bad) {
			t.Errorf("missing %q in:\n%s", bad, msg)
		}
	}
	for _, good := range []string{"quotas.scopes.telegram:private:", "quotas.scopes.discord:guild"} {
		if strings.Contains(msg, good) {
			t.Errorf("a valid scope was refused:\n%s", msg)
		}
	}
}

// A secret can come from a file (Docker secrets): NAME_FILE.
func TestSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "api_key")
	if err := os.WriteFile(keyFile, []byte("sk-from-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig("", envMap(map[string]string{
		"IMAGINEBOT_UPSTREAM_API_KEY_FILE": keyFile,
		"IMAGINEBOT_TELEGRAM_TOKEN":        "123:abc",
	}), func(string) {})
	if err != nil || cfg.Upstream.APIKey != "sk-from-a-file" {
		t.Fatalf("cfg %+v, %v", cfg, err)
	}
	_, err = LoadConfig("", envMap(map[string]string{"IMAGINEBOT_TELEGRAM_TOKEN_FILE": filepath.Join(dir, "missing")}), func(string) {})
	if err == nil || !strings.Contains(err.Error(), "IMAGINEBOT_TELEGRAM_TOKEN_FILE:") {
		t.Fatalf("a missing secret file: %v", err)
	}
}

// Discord's settings are checked with the key and the fix, all at once.
func TestDiscordConfigProblems(t *testing.T) {
	cases := []struct {
		name, yaml string
		env        map[string]string
		want       []string
	}{
		{"token without application", "discord:\n  token: a.b.c\n", nil, []string{"discord.application_id", "IMAGINEBOT_DISCORD_APPLICATION_ID"}},
		{"token with Bot prefix", "discord:\n  token: Bot a.b.c\n  application_id: \"110000000000000001\"\n", nil, []string{"discord.token: does not look like a bot token"}},
		{"bad mode", "discord:\n  token: a.b.c\n  application_id: \"110000000000000001\"\n  mode: websocket\n", nil, []string{"discord.mode: \"websocket\" is not a mode"}},
		{"interactions without key", "discord:\n  token: a.b.c\n  application_id: \"110000000000000001\"\n  mode: interactions\n", nil, []string{"discord.public_key", "IMAGINEBOT_DISCORD_PUBLIC_KEY"}},
		{"ids", "discord:\n  guilds: [\"abc\"]\n  owners: [\"12\"]\n  moderator_roles: [\"1700000000000000001\"]\n", nil, []string{"discord.guilds[0]: \"abc\" is not a Discord id", "discord.owners[0]"}},
		{"path", "discord:\n  interactions_path: discord\n", nil, []string{"discord.interactions_path: \"discord\" must start with /"}},
		{"requests per second", "discord:\n  requests_per_second: 80\n", nil, []string{"discord.requests_per_second: 80 is out of range; use 1 to 50"}},
		{"shards", "discord:\n  shards: many\n", nil, []string{"discord.shards: \"many\" is not a shard count"}},
		{"shard ids", "discord:\n  shards: 2\n  shard_ids: [0, 2]\n", nil, []string{"discord.shard_ids[1]: 2 is not a shard"}},
		{"shard ids alone", "discord:\n  shard_ids: [0]\n", nil, []string{"discord.shard_ids: is set without discord.shards"}},
		{"from the environment", "", map[string]string{"IMAGINEBOT_DISCORD_TOKEN": "a.b.c", "IMAGINEBOT_DISCORD_MODE": "interactions"}, []string{"discord.application_id", "discord.public_key"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(path, []byte("upstream:\n  api_key: sk-x\n"+c.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(path, envMap(c.env), func(string) {})
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%v\nlacks %q", err, w)
				}
			}
		})
	}
	// In interactions mode the listener defaults to :8080.
	path := filepath.Join(t.TempDir(), "c.yaml")
	_ = os.WriteFile(path, []byte("upstream:\n  api_key: sk-x\ndiscord:\n  token: a.b.c\n  application_id: \"110000000000000001\"\n  mode: interactions\n  public_key: "+strings.Repeat("ab", 32)+"\n"), 0o600)
	cfg, err := LoadConfig(path, envMap(nil), func(string) {})
	if err != nil || cfg.HTTP.Listen != ":8080" {
		t.Fatalf("%v %+v", err, cfg)
	}
}

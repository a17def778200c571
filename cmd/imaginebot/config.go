package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration. Every key is documented in
// config.example.yaml; secrets come from the environment (envSecrets) or
// ${VAR} references in the file.
type Config struct {
	Upstream     UpstreamConfig `yaml:"upstream"`
	Models       []ModelConfig  `yaml:"models"`
	DefaultModel string         `yaml:"default_model"`
	Limits       LimitsConfig   `yaml:"limits"`
	Quotas       QuotasConfig   `yaml:"quotas"`
	Images       ImagesConfig   `yaml:"images"`
	Storage      StorageConfig  `yaml:"storage"`
	Log          LogConfig      `yaml:"log"`
	Shutdown     ShutdownConfig `yaml:"shutdown"`
	HTTP         HTTPConfig     `yaml:"http"`
	Telegram     TelegramConfig `yaml:"telegram"`
	Discord      DiscordConfig  `yaml:"discord"`
	// Proxy is the outbound proxy for Telegram, Discord and the gateway
	// (and the image downloads), unless their own proxy key says otherwise.
	Proxy string `yaml:"proxy"`

	// proxyPassword (IMAGINEBOT_PROXY_PASSWORD) is the password of the user
	// Proxy names, so that the URL can sit in the file without it.
	proxyPassword string
}

type UpstreamConfig struct {
	BaseURL           string        `yaml:"base_url"`
	APIKey            string        `yaml:"api_key"`
	Timeout           time.Duration `yaml:"timeout"`
	Retries           *int          `yaml:"retries"`
	Stream            bool          `yaml:"stream"`
	StreamIdleTimeout time.Duration `yaml:"stream_idle_timeout"`
	UserIDSecret      string        `yaml:"user_id_secret"`
	Temperature       *float64      `yaml:"temperature"`
	TopP              *float64      `yaml:"top_p"`
	MaxTokens         *int          `yaml:"max_tokens"`
	N                 int           `yaml:"n"`
	Proxy             string        `yaml:"proxy"`
}

type ModelConfig struct {
	Name           string `yaml:"name"`
	UpstreamModel  string `yaml:"upstream_model"`
	Label          string `yaml:"label"`
	Cost           int    `yaml:"cost"`
	SystemPrompt   string `yaml:"system_prompt"`
	PromptTemplate string `yaml:"prompt_template"`
	Stream         *bool  `yaml:"stream"`
	// API is how the gateway serves the model: chat (default), images or
	// midjourney; see config_models.go for the keys below that belong to one.
	API            string            `yaml:"api"`
	Sizes          map[string]string `yaml:"sizes"`
	Quality        string            `yaml:"quality"`
	Style          string            `yaml:"style"`
	ResponseFormat string            `yaml:"response_format"`
	AcceptsImage   bool              `yaml:"accepts_image"`
	// ActionCost is what a button on a midjourney result costs (nil: cost).
	ActionCost *int `yaml:"action_cost"`
}

type LimitsConfig struct {
	RatePerMinute  *float64      `yaml:"rate_per_minute"`
	Burst          int           `yaml:"burst"`
	PerUserJobs    int           `yaml:"per_user_jobs"`
	Concurrency    int           `yaml:"concurrency"`
	QueueCap       *int          `yaml:"queue_cap"`
	MaxPromptChars int           `yaml:"max_prompt_chars"`
	JobTimeout     time.Duration `yaml:"job_timeout"`
	// jobTimeoutDerived: job_timeout was not set and follows
	// upstream.timeout, whose own check covers it.
	jobTimeoutDerived bool
	// DeliveryTimeout bounds sending a finished job's picture, which in a
	// busy group may wait minutes for the platform's send budget.
	DeliveryTimeout time.Duration `yaml:"delivery_timeout"`
}

type QuotasConfig struct {
	Daily    *int           `yaml:"daily"`
	TimeZone string         `yaml:"time_zone"`
	Scopes   map[string]int `yaml:"scopes"`
}

type ImagesConfig struct {
	MaxBytes          ByteSize `yaml:"max_bytes"`
	AllowPrivateHosts []string `yaml:"allow_private_hosts"`
}

type StorageConfig struct {
	// Driver is where the ledger lives: bolt (a file, one process) or
	// postgres (a server several instances may share).
	Driver string `yaml:"driver"`
	// DSN is the PostgreSQL connection string (a secret: it may hold the
	// password; never logged).
	DSN          string        `yaml:"dsn"`
	Path         string        `yaml:"path"`
	JobRetention time.Duration `yaml:"job_retention"`
	// JobLease is how long a process vouches for its running jobs between
	// renewals: on a shared ledger, a job not renewed for that long is
	// refunded by another instance (its own process died).
	JobLease time.Duration `yaml:"job_lease"`
	// AdminSocket is where the running bot takes quota and backup commands.
	AdminSocket string `yaml:"admin_socket"`
	// adminSocketDerived: admin_socket was not set and follows path.
	adminSocketDerived bool
}

type ShutdownConfig struct {
	// Drain is how long jobs in flight may run on after a stop signal
	// before the rest are cancelled, refunded and their users told.
	Drain *time.Duration `yaml:"drain"`
}

type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

type HTTPConfig struct {
	Listen string `yaml:"listen"`
}

type TelegramConfig struct {
	Token            string        `yaml:"token"`
	APIBaseURL       string        `yaml:"api_base_url"`
	Owners           []int64       `yaml:"owners"`
	PollTimeout      time.Duration `yaml:"poll_timeout"`
	ProgressInterval time.Duration `yaml:"progress_interval"`
	MaxPhotoBytes    ByteSize      `yaml:"max_photo_bytes"`
	MaxDocumentBytes ByteSize      `yaml:"max_document_bytes"`
	// MessagesPerSecond is the overall send budget (Telegram allows 30;
	// paid broadcasts up to 1000).
	MessagesPerSecond int             `yaml:"messages_per_second"`
	Webhook           TelegramWebhook `yaml:"webhook"`
	Proxy             string          `yaml:"proxy"`
}

type TelegramWebhook struct {
	URL         string `yaml:"url"`
	SecretToken string `yaml:"secret_token"`
	Path        string `yaml:"path"`
}

type DiscordConfig struct {
	Token            string        `yaml:"token"`
	ApplicationID    string        `yaml:"application_id"`
	PublicKey        string        `yaml:"public_key"`
	Mode             string        `yaml:"mode"`
	APIBaseURL       string        `yaml:"api_base_url"`
	Guilds           []string      `yaml:"guilds"`
	Owners           []string      `yaml:"owners"`
	ModeratorRoles   []string      `yaml:"moderator_roles"`
	AllowDMs         bool          `yaml:"allow_dms"`
	Shards           string        `yaml:"shards"`
	ShardIDs         []int         `yaml:"shard_ids"`
	InteractionsPath string        `yaml:"interactions_path"`
	ProgressInterval time.Duration `yaml:"progress_interval"`
	MaxUploadBytes   ByteSize      `yaml:"max_upload_bytes"`
	// RequestsPerSecond is this process's share of Discord's 50 requests
	// a second per bot (interaction replies apart).
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	Proxy             string  `yaml:"proxy"`
}

// envSecrets maps environment variables to the keys they set. The
// environment wins over the file, so a file can be shared without secrets.
func envSecrets(c *Config) map[string]*string {
	return map[string]*string{
		"IMAGINEBOT_UPSTREAM_API_KEY":        &c.Upstream.APIKey,
		"IMAGINEBOT_UPSTREAM_BASE_URL":       &c.Upstream.BaseURL,
		"IMAGINEBOT_USER_ID_SECRET":          &c.Upstream.UserIDSecret,
		"IMAGINEBOT_TELEGRAM_TOKEN":          &c.Telegram.Token,
		"IMAGINEBOT_TELEGRAM_WEBHOOK_SECRET": &c.Telegram.Webhook.SecretToken,
		"IMAGINEBOT_TELEGRAM_API_BASE_URL":   &c.Telegram.APIBaseURL,
		"IMAGINEBOT_DB":                      &c.Storage.Path,
		"IMAGINEBOT_DATABASE_URL":            &c.Storage.DSN,
		"IMAGINEBOT_HTTP_LISTEN":             &c.HTTP.Listen,
		"IMAGINEBOT_TELEGRAM_WEBHOOK_URL":    &c.Telegram.Webhook.URL,
		"IMAGINEBOT_LOG_LEVEL":               &c.Log.Level,
		"IMAGINEBOT_QUOTAS_TIME_ZONE":        &c.Quotas.TimeZone,
		"IMAGINEBOT_DEFAULT_MODEL":           &c.DefaultModel,
		"IMAGINEBOT_DISCORD_TOKEN":           &c.Discord.Token,
		"IMAGINEBOT_DISCORD_APPLICATION_ID":  &c.Discord.ApplicationID,
		"IMAGINEBOT_DISCORD_PUBLIC_KEY":      &c.Discord.PublicKey,
		"IMAGINEBOT_DISCORD_API_BASE_URL":    &c.Discord.APIBaseURL,
		"IMAGINEBOT_DISCORD_MODE":            &c.Discord.Mode,
		"IMAGINEBOT_PROXY":                   &c.Proxy,
		"IMAGINEBOT_PROXY_PASSWORD":          &c.proxyPassword,
		"IMAGINEBOT_TELEGRAM_PROXY":          &c.Telegram.Proxy,
		"IMAGINEBOT_DISCORD_PROXY":           &c.Discord.Proxy,
		"IMAGINEBOT_UPSTREAM_PROXY":          &c.Upstream.Proxy,
	}
}

// defaultBaseURL is the gateway the endpoint documentation names.
const defaultBaseURL = "https://api.chatgptsb.com"

// ConfigError lists every problem found, each with its key and the fix.
type ConfigError struct{ Problems []string }

func (e *ConfigError) Error() string {
	return "configuration has " + plural(len(e.Problems), "problem") + ":\n  - " + strings.Join(e.Problems, "\n  - ")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// LoadConfig reads path ("" = no file: defaults and environment only),
// applies the environment and defaults, and validates the result. warn gets
// non-fatal remarks (a world-readable file).
//
// checks run after validation and add their problems to the same list
// (cmdRun's needs of a runnable bot), so every problem is reported at once.
func LoadConfig(path string, getenv func(string) string, warn func(string), checks ...func(*Config) []string) (*Config, error) {
	var cfg Config
	var problems []string
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o004 != 0 && literalSecrets(data) {
			warn(fmt.Sprintf("%s holds secrets and is readable by every user on this machine: chmod 600 %s, or move the secrets to environment variables", path, path))
		}
		problems = append(problems, decodeYAML(data, getenv, &cfg)...)
	}
	for name, p := range envSecrets(&cfg) {
		if v := getenv(name); v != "" {
			*p = v
		}
		// NAME_FILE reads the value from a file: Docker and Kubernetes
		// secrets are mounted as files, not set as variables.
		if file := getenv(name + "_FILE"); file != "" {
			data, err := os.ReadFile(file)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s_FILE: %v; point it at the file holding the value", name, err))
				continue
			}
			*p = strings.TrimSpace(string(data))
		}
	}
	if v := getenv("IMAGINEBOT_TELEGRAM_OWNERS"); v != "" {
		owners, err := parseIDs(v)
		if err != nil {
			problems = append(problems, "IMAGINEBOT_TELEGRAM_OWNERS: "+err.Error()+"; use comma-separated numeric user ids, e.g. 12345,67890")
		}
		cfg.Telegram.Owners = owners
	}
	cfg.applyDefaults()
	problems = append(problems, cfg.validate()...)
	for _, check := range checks {
		problems = append(problems, check(&cfg)...)
	}
	if len(problems) > 0 {
		return nil, &ConfigError{Problems: problems}
	}
	return &cfg, nil
}

// literalSecrets reports whether the file itself (not a ${VAR} reference)
// holds a secret.
func literalSecrets(data []byte) bool {
	var raw Config
	_ = yaml.Unmarshal(data, &raw) // problems are reported by the real decode
	for _, v := range []string{raw.Upstream.APIKey, raw.Upstream.UserIDSecret, raw.Telegram.Token, raw.Telegram.Webhook.SecretToken, raw.Discord.Token} {
		if v != "" && !envRefRe.MatchString(v) {
			return true
		}
	}
	// A proxy URL or connection string with a password in it, rather than
	// from the environment.
	if v := raw.Storage.DSN; v != "" && !envRefRe.MatchString(v) && strings.Contains(v, "password=") {
		return true
	}
	for _, v := range []string{raw.Proxy, raw.Upstream.Proxy, raw.Telegram.Proxy, raw.Discord.Proxy, raw.Storage.DSN} {
		if u, err := url.Parse(v); err == nil && u.User != nil && !envRefRe.MatchString(v) {
			if _, ok := u.User.Password(); ok {
				return true
			}
		}
	}
	return false
}

var envRefRe = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// decodeYAML expands ${VAR} references, rejects unknown keys (with their
// path) and decodes; it returns every problem rather than the first.
func decodeYAML(data []byte, getenv func(string) string, cfg *Config) []string {
	var problems []string
	// Like the shell, an unset variable expands to nothing; validation then
	// names the key that ended up empty when it is required.
	data = envRefRe.ReplaceAllFunc(data, func(m []byte) []byte {
		return []byte(getenv(string(envRefRe.FindSubmatch(m)[1])))
	})
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return problems
		}
		return append(problems, "YAML syntax: "+err.Error())
	}
	if len(root.Content) == 0 {
		return problems
	}
	walked := walkConfig(root.Content[0], reflect.TypeOf(*cfg), "")
	problems = append(problems, walked...)
	if err := root.Content[0].Decode(cfg); err != nil {
		var te *yaml.TypeError
		switch {
		case errors.As(err, &te) && len(walked) > 0:
			// The walk named these with their keys and fixes already.
		case errors.As(err, &te):
			for _, e := range te.Errors {
				problems = append(problems, "YAML value: "+e)
			}
		default:
			problems = append(problems, "YAML: "+err.Error())
		}
	}
	return problems
}

// walkConfig walks a YAML node against the type it decodes into and reports
// keys the type does not have (with a suggestion when one is close) and
// values that are not of the key's kind, each with its key path and the fix.
func walkConfig(n *yaml.Node, t reflect.Type, path string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var problems []string
	switch {
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			ft, ok := fields[key]
			if !ok {
				shown := key
				if strings.TrimSpace(key) == "" {
					shown = strconv.Quote(key)
				}
				msg := fmt.Sprintf("%s: unknown key (line %d)", join(path, shown), n.Content[i].Line)
				if s := closest(key, fields); s != "" {
					msg += fmt.Sprintf("; did you mean %q?", s)
				} else {
					msg += "; remove it (see config.example.yaml for every key)"
				}
				problems = append(problems, msg)
				continue
			}
			problems = append(problems, walkConfig(n.Content[i+1], ft, join(path, key))...)
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
		for i := 0; i+1 < len(n.Content); i += 2 {
			problems = append(problems, walkConfig(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))...)
		}
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for i, item := range n.Content {
			problems = append(problems, walkConfig(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
	case n.Kind == yaml.ScalarNode:
		if p := checkScalar(n, t); p != "" {
			if path == "" {
				path = "config file" // a whole file of one value
			}
			problems = append(problems, path+": "+p)
		}
	}
	return problems
}

var durationType = reflect.TypeOf(time.Duration(0))

// checkScalar says what is wrong with a scalar for a key of type t, and
// how to write it, or "" when it decodes. yaml.v3 alone would report
// "cannot unmarshal !!str into int" with a line only, and would read a bare
// 30 as 30 nanoseconds and 1.5 as 1.
func checkScalar(n *yaml.Node, t reflect.Type) string {
	v := n.Value
	if n.Tag == "!!null" {
		return ""
	}
	switch {
	case t == reflect.TypeOf(ByteSize(0)):
		if _, err := parseByteSize(v); err != nil {
			return err.Error()
		}
	case t == durationType:
		if n.Tag == "!!int" || n.Tag == "!!float" {
			return fmt.Sprintf("%s has no unit; write %ss (or m, h, ms)", v, v)
		}
		if _, err := time.ParseDuration(v); err != nil {
			return fmt.Sprintf("%q is not a duration; write e.g. 30s, 5m or 1h30m", v)
		}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		if n.Tag != "!!int" {
			if _, err := strconv.ParseFloat(v, 64); err == nil && n.Tag != "!!str" {
				return fmt.Sprintf("%s is not a whole number; write one without a fraction", v)
			}
			return fmt.Sprintf("%q is not a whole number", v)
		}
	case t.Kind() == reflect.Float64 || t.Kind() == reflect.Float32:
		if n.Tag != "!!int" && n.Tag != "!!float" {
			return fmt.Sprintf("%q is not a number", v)
		}
	case t.Kind() == reflect.Bool:
		if n.Tag != "!!bool" {
			return fmt.Sprintf("%q is not true or false", v)
		}
	case t.Kind() == reflect.Struct || t.Kind() == reflect.Map || t.Kind() == reflect.Slice:
		if v != "" {
			return fmt.Sprintf("%q is a single value where a section is expected; see config.example.yaml", v)
		}
	}
	return ""
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// closest suggests a known key within edit distance 2.
func closest(key string, fields map[string]reflect.Type) string {
	best, bestD := "", 3
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if d := editDistance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func parseIDs(s string) ([]int64, error) {
	var out []int64
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		id, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a numeric user id", f)
		}
		out = append(out, id)
	}
	return out, nil
}

// ByteSize is a size in bytes, written as a number or with a unit:
// 20MiB, 10MB, 512KiB.
type ByteSize int64

func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseByteSize(n.Value)
	if err != nil {
		// A *TypeError lets the decoder carry on and report the other keys too.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*b = ByteSize(v)
	return nil
}

func parseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("%q is not a size; write bytes or a number with KiB, MiB or GiB, e.g. 20MiB", s)
	}
	return n * mult, nil
}

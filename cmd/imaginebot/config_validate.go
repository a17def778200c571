package main

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/imaginebot/imaginebot/bots/discord"
	"github.com/imaginebot/imaginebot/bots/telegram"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/fetch"
)

func (c *Config) applyDefaults() {
	u := &c.Upstream
	def(&u.BaseURL, defaultBaseURL)
	def(&u.Timeout, 5*time.Minute)
	if u.Retries == nil {
		u.Retries = ptr(2)
	}
	def(&u.StreamIdleTimeout, 90*time.Second)
	if len(c.Models) == 0 {
		c.Models = []ModelConfig{
			{Name: "stable-diffusion", Label: "Stable Diffusion"},
			{Name: "flux", Label: "FLUX"},
		}
	}
	for i := range c.Models {
		def(&c.Models[i].Cost, 1)
		def(&c.Models[i].API, apiChat)
	}
	if c.DefaultModel == "" {
		c.DefaultModel = c.Models[0].Name
	}
	l := &c.Limits
	d := core.DefaultConfig() // the pipeline owns its defaults
	if l.RatePerMinute == nil {
		l.RatePerMinute = ptr(float64(d.Rate) * 60)
	}
	def(&l.Burst, d.Burst)
	def(&l.PerUserJobs, d.PerUserJobs)
	def(&l.Concurrency, d.Concurrency)
	if l.QueueCap == nil {
		l.QueueCap = ptr(d.QueueCap)
	}
	def(&l.MaxPromptChars, d.MaxPromptRunes)
	if l.JobTimeout == 0 {
		l.JobTimeout, l.jobTimeoutDerived = u.Timeout, true
	}
	def(&l.DeliveryTimeout, d.DeliveryTimeout)
	if c.Quotas.Daily == nil {
		c.Quotas.Daily = ptr(10)
	}
	def(&c.Quotas.TimeZone, "UTC")
	def(&c.Images.MaxBytes, 20<<20)
	def(&c.Storage.Driver, driverBolt)
	def(&c.Storage.Path, "imaginebot.db")
	def(&c.Storage.JobRetention, 90*24*time.Hour)
	def(&c.Storage.JobLease, core.DefaultConfig().Lease)
	if c.Storage.AdminSocket == "" {
		c.Storage.AdminSocket, c.Storage.adminSocketDerived = c.Storage.Path+".sock", true
	}
	if c.Shutdown.Drain == nil {
		d := defaultDrain
		c.Shutdown.Drain = &d
	}
	def(&c.Log.Level, "info")
	def(&c.Log.Format, "text")
	t := &c.Telegram
	def(&t.APIBaseURL, "https://api.telegram.org")
	def(&t.PollTimeout, 50*time.Second)
	def(&t.ProgressInterval, 3*time.Second)
	def(&t.MaxPhotoBytes, 10_000_000) // Telegram's limits, in decimal megabytes
	def(&t.MaxDocumentBytes, 50_000_000)
	def(&t.MessagesPerSecond, telegram.DefaultMessagesPerSecond)
	def(&t.Webhook.Path, "/telegram/webhook")
	if t.Webhook.URL != "" {
		def(&c.HTTP.Listen, ":8080")
	}
	dc := &c.Discord
	def(&dc.Mode, discord.ModeGateway)
	def(&dc.APIBaseURL, "https://discord.com")
	def(&dc.InteractionsPath, discord.DefaultInteractionsPath)
	def(&dc.ProgressInterval, discord.DefaultProgressInterval)
	def(&dc.MaxUploadBytes, discord.DefaultMaxUploadBytes)
	def(&dc.RequestsPerSecond, discord.DefaultRequestsPerSecond)
	if dc.Token != "" && dc.Mode == discord.ModeInteractions {
		def(&c.HTTP.Listen, ":8080")
	}
}

func def[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

func ptr[T any](v T) *T { return &v }

var (
	modelNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$`)
	hostnameRe  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)
	logLevels   = []string{"debug", "info", "warn", "error"}
	logFormats  = []string{"text", "json"}
)

// problemsLimit keeps a badly broken file from burying the first problems.
const problemsLimit = 100

// validate checks the whole configuration and returns every problem, each
// naming its key and how to fix it.
func (c *Config) validate() []string {
	var p problems
	u := c.Upstream
	p.url("upstream.base_url", u.BaseURL, false)
	if u.Timeout < 5*time.Second || u.Timeout > time.Hour {
		p.add("upstream.timeout", "%s is out of range; use 5s to 1h (default 5m)", u.Timeout)
	}
	if *u.Retries < 0 || *u.Retries > 10 {
		p.add("upstream.retries", "%d is out of range; use 0 to 10 (default 2)", *u.Retries)
	}
	if u.StreamIdleTimeout < time.Second {
		p.add("upstream.stream_idle_timeout", "%s is too short; use at least 1s (default 90s)", u.StreamIdleTimeout)
	}
	if u.Temperature != nil && (*u.Temperature < 0 || *u.Temperature > 2) {
		p.add("upstream.temperature", "%g is out of range; use 0 to 2 or remove it", *u.Temperature)
	}
	if u.TopP != nil && (*u.TopP <= 0 || *u.TopP > 1) {
		p.add("upstream.top_p", "%g is out of range; use a value in (0, 1] or remove it", *u.TopP)
	}
	if u.N < 0 || u.N > 4 {
		p.add("upstream.n", "%d is out of range; use 1 to 4 images per request (default 1)", u.N)
	}
	if u.MaxTokens != nil && *u.MaxTokens <= 0 {
		p.add("upstream.max_tokens", "%d must be positive, or remove it", *u.MaxTokens)
	}

	seen := map[string]bool{}
	for i, m := range c.Models {
		key := fmt.Sprintf("models[%d]", i)
		switch {
		case m.Name == "":
			p.add(key+".name", "is empty; set the model id users type, e.g. flux")
		case !modelNameRe.MatchString(m.Name):
			p.add(key+".name", "%q is not a model id; use letters, digits and . _ : / - (no spaces)", m.Name)
		case seen[strings.ToLower(m.Name)]:
			p.add(key+".name", "%q is listed twice; give each model a distinct name", m.Name)
		}
		seen[strings.ToLower(m.Name)] = true
		if m.Cost < 1 || m.Cost > 1000 {
			p.add(key+".cost", "%d is out of range; use 1 to 1000 quota units", m.Cost)
		}
		if _, err := core.ParseTemplate(m.Name, m.PromptTemplate); err != nil {
			p.add(key+".prompt_template", "%v; fields available are {{.Prompt}}, {{.Negative}} and {{.Aspect}}", err)
		}
		m.validateAPI(&p, key)
	}
	if !seen[strings.ToLower(c.DefaultModel)] {
		p.add("default_model", "%q is not one of models[].name; pick one of them", c.DefaultModel)
	}

	l := c.Limits
	if *l.RatePerMinute < 0 || *l.RatePerMinute > 6000 {
		p.add("limits.rate_per_minute", "%g is out of range; use 0 (no limit) to 6000", *l.RatePerMinute)
	}
	if l.Burst < 1 || l.Burst > 1000 {
		p.add("limits.burst", "%d is out of range; use 1 to 1000", l.Burst)
	}
	if l.PerUserJobs < 1 || l.PerUserJobs > 1000 {
		p.add("limits.per_user_jobs", "%d is out of range; use 1 to 1000", l.PerUserJobs)
	}
	if l.Concurrency < 1 || l.Concurrency > 256 {
		p.add("limits.concurrency", "%d is out of range; use 1 to 256", l.Concurrency)
	}
	if *l.QueueCap < 0 || *l.QueueCap > 100000 {
		p.add("limits.queue_cap", "%d is out of range; use 0 to 100000", *l.QueueCap)
	}
	if l.MaxPromptChars < 1 || l.MaxPromptChars > 10000 {
		p.add("limits.max_prompt_chars", "%d is out of range; use 1 to 10000", l.MaxPromptChars)
	}
	if !l.jobTimeoutDerived && (l.JobTimeout < 5*time.Second || l.JobTimeout > time.Hour) {
		p.add("limits.job_timeout", "%s is out of range; use 5s to 1h (default: upstream.timeout)", l.JobTimeout)
	}
	if l.DeliveryTimeout < 10*time.Second || l.DeliveryTimeout > time.Hour {
		p.add("limits.delivery_timeout", "%s is out of range; use 10s to 1h (default 10m)", l.DeliveryTimeout)
	}

	if *c.Quotas.Daily < 0 {
		p.add("quotas.daily", "%d is negative; use 0 or more images per day", *c.Quotas.Daily)
	}
	if _, err := time.LoadLocation(c.Quotas.TimeZone); err != nil {
		p.add("quotas.time_zone", "%q is not a time zone; use an IANA name such as UTC, Asia/Shanghai or Europe/Berlin", c.Quotas.TimeZone)
	}
	for scope, n := range c.Quotas.Scopes {
		if n < 0 {
			p.add("quotas.scopes."+scope, "%d is negative; use 0 or more", n)
		}
		if err := checkScope(scope); err != nil {
			p.add("quotas.scopes."+scope, "%v", err)
		}
	}

	if c.Images.MaxBytes < 1<<10 || c.Images.MaxBytes > 200<<20 {
		p.add("images.max_bytes", "%d is out of range; use 1KiB to 200MiB (default 20MiB)", c.Images.MaxBytes)
	}
	for i, h := range c.Images.AllowPrivateHosts {
		// The fetcher's own parser decides what an entry may be.
		if err := (fetch.Config{AllowedHosts: []string{h}}).Validate(); err != nil {
			p.add(fmt.Sprintf("images.allow_private_hosts[%d]", i), "%q is not a bare hostname, IP address or CIDR (no scheme, port or wildcard)", h)
		}
	}

	p.storage(c.Storage)
	if c.Storage.Driver == driverBolt && c.Storage.Path == "" {
		p.add("storage.path", "is empty; set the bbolt database file, e.g. /var/lib/imaginebot/imaginebot.db")
	}
	if err := checkSocketPath(c.Storage.AdminSocket); err != nil && c.Storage.Path != "" && c.Storage.Driver == driverBolt {
		fix := "set a shorter path, e.g. /run/imaginebot/admin.sock"
		if c.Storage.adminSocketDerived {
			fix = "it is storage.path + \".sock\" by default; " + fix
		}
		p.add("storage.admin_socket", "%v; %s", err, fix)
	}
	if c.Storage.JobRetention < time.Hour {
		p.add("storage.job_retention", "%s is too short; keep job records at least 1h (default 2160h = 90 days)", c.Storage.JobRetention)
	}
	if d := c.Storage.JobLease; d < time.Second || d > time.Hour {
		p.add("storage.job_lease", "%s is out of range; use 1s to 1h (default 30s): a job whose process dies is refunded this long after", d)
	}
	if d := *c.Shutdown.Drain; d < 0 || d > time.Hour {
		p.add("shutdown.drain", "%s is out of range; use 0s (cancel at once) to 1h (default 60s)", d)
	}
	if !slices.Contains(logLevels, c.Log.Level) {
		p.add("log.level", "%q is not a level; use one of %s", c.Log.Level, strings.Join(logLevels, ", "))
	}
	if !slices.Contains(logFormats, c.Log.Format) {
		p.add("log.format", "%q is not a format; use text or json", c.Log.Format)
	}
	if c.HTTP.Listen != "" {
		if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
			p.add("http.listen", "%q is not host:port; use e.g. :8080 or 127.0.0.1:8080", c.HTTP.Listen)
		}
	}

	t := c.Telegram
	if t.Token != "" && !telegram.ValidToken(t.Token) {
		p.add("telegram.token", "does not look like a bot token (123456:ABC-…); copy it from @BotFather into IMAGINEBOT_TELEGRAM_TOKEN")
	}
	p.url("telegram.api_base_url", t.APIBaseURL, false)
	if t.PollTimeout < time.Second || t.PollTimeout > 10*time.Minute {
		p.add("telegram.poll_timeout", "%s is out of range; use 1s to 10m (default 50s)", t.PollTimeout)
	}
	if t.ProgressInterval < time.Second {
		p.add("telegram.progress_interval", "%s is too short; Telegram allows about one edit per second per chat (default 3s)", t.ProgressInterval)
	}
	switch {
	case t.MaxPhotoBytes < 1<<10:
		p.add("telegram.max_photo_bytes", "%d is too small; use at least 1KiB (default 10MB, Telegram's limit)", t.MaxPhotoBytes)
	case t.MaxDocumentBytes < t.MaxPhotoBytes:
		p.add("telegram.max_document_bytes", "%d must be at least telegram.max_photo_bytes (%d)", t.MaxDocumentBytes, t.MaxPhotoBytes)
	}
	if t.MessagesPerSecond < 1 || t.MessagesPerSecond > telegram.MaxMessagesPerSecond {
		p.add("telegram.messages_per_second", "%d is out of range; use 1 to %d (Telegram allows 30, and up to %d with paid broadcasts)",
			t.MessagesPerSecond, telegram.MaxMessagesPerSecond, telegram.MaxMessagesPerSecond)
	}
	for i, id := range t.Owners {
		if id <= 0 {
			p.add(fmt.Sprintf("telegram.owners[%d]", i), "%d is not a user id; owners are positive numeric Telegram user ids", id)
		}
	}
	if w := t.Webhook; w.URL != "" {
		p.url("telegram.webhook.url", w.URL, true)
		if !telegram.ValidSecret(w.SecretToken) {
			p.add("telegram.webhook.secret_token", "is missing or invalid; set IMAGINEBOT_TELEGRAM_WEBHOOK_SECRET to 1–256 characters of A–Z a–z 0–9 _ -")
		}
		if !strings.HasPrefix(w.Path, "/") {
			p.add("telegram.webhook.path", "%q must start with /", w.Path)
		}
		if c.HTTP.Listen == "" {
			p.add("http.listen", "is empty but telegram.webhook.url is set; set the address the webhook listens on, e.g. :8080")
		}
	}
	c.validateDiscord(&p)
	c.validateProxies(&p)
	return p.list
}

var snowflakeRe = regexp.MustCompile(`^[1-9][0-9]{4,19}$`)

// shardCount reads discord.shards: "" = one, "auto" = Discord's advice
// (discord.ShardsAuto; 0 is returned for checks).
func (d DiscordConfig) shardCount() (int, error) {
	switch strings.ToLower(strings.TrimSpace(d.Shards)) {
	case "":
		return 1, nil
	case "auto":
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(d.Shards))
	if err != nil || n < 1 {
		return 0, fmt.Errorf("not a count")
	}
	return n, nil
}

func (c *Config) validateDiscord(p *problems) {
	d := c.Discord
	p.url("discord.api_base_url", d.APIBaseURL, false)
	ids := func(key string, list []string, what string) {
		for i, id := range list {
			if !snowflakeRe.MatchString(id) {
				p.add(fmt.Sprintf("%s[%d]", key, i), "%q is not a Discord id; use the numeric %s id (Developer Mode → Copy ID), quoted", id, what)
			}
		}
	}
	ids("discord.guilds", d.Guilds, "server")
	ids("discord.owners", d.Owners, "user")
	ids("discord.moderator_roles", d.ModeratorRoles, "role")
	if d.ProgressInterval < time.Second {
		p.add("discord.progress_interval", "%s is too short; Discord allows about 5 edits in 5 s per message (default 2s)", d.ProgressInterval)
	}
	if r := d.RequestsPerSecond; r < 1 || r > 50 {
		p.add("discord.requests_per_second", "%g is out of range; use 1 to 50 (default 45, under Discord's 50 a second per bot; give each process sharing the token its share)", r)
	}
	if d.MaxUploadBytes < 1<<10 {
		p.add("discord.max_upload_bytes", "%d is too small; use at least 1KiB (default 10MiB, Discord's limit outside boosted servers)", d.MaxUploadBytes)
	}
	if n, err := d.shardCount(); err != nil {
		p.add("discord.shards", "%q is not a shard count; use auto (as many as Discord advises) or a whole number from 1", d.Shards)
	} else {
		for i, id := range d.ShardIDs {
			if id < 0 || (n > 0 && id >= n) {
				p.add(fmt.Sprintf("discord.shard_ids[%d]", i), "%d is not a shard of this bot; shard ids run from 0 to discord.shards − 1", id)
			}
		}
		if len(d.ShardIDs) > 0 && strings.TrimSpace(d.Shards) == "" {
			p.add("discord.shard_ids", "is set without discord.shards; set the total number of shards (or auto) as well")
		}
	}
	if !strings.HasPrefix(d.InteractionsPath, "/") {
		p.add("discord.interactions_path", "%q must start with /", d.InteractionsPath)
	}
	if d.Token == "" {
		return
	}
	if strings.Count(d.Token, ".") != 2 || strings.HasPrefix(d.Token, "Bot ") {
		p.add("discord.token", "does not look like a bot token (three parts separated by dots, without \"Bot \"); copy it from the Bot page of your application into IMAGINEBOT_DISCORD_TOKEN")
	}
	if !snowflakeRe.MatchString(d.ApplicationID) {
		p.add("discord.application_id", "%q is not an application id; set IMAGINEBOT_DISCORD_APPLICATION_ID to the Application ID on the General Information page", d.ApplicationID)
	}
	switch d.Mode {
	case discord.ModeGateway:
	case discord.ModeInteractions:
		if k, err := hex.DecodeString(d.PublicKey); err != nil || len(k) != 32 {
			p.add("discord.public_key", "is missing or not 64 hex digits; set IMAGINEBOT_DISCORD_PUBLIC_KEY to the Public Key on the General Information page (interactions mode needs it)")
		}
		if c.HTTP.Listen == "" {
			p.add("http.listen", "is empty but discord.mode is interactions; set the address Discord's requests reach, e.g. :8080")
		}
	default:
		p.add("discord.mode", "%q is not a mode; use gateway (default: no public address needed) or interactions (Discord POSTs to http.listen)", d.Mode)
	}
}

// validateRun adds the checks that only matter for starting the bot.
func (c *Config) validateRun() []string {
	var p problems
	if c.Upstream.APIKey == "" {
		p.add("upstream.api_key", "is empty; set IMAGINEBOT_UPSTREAM_API_KEY to your gateway key (sk-…)")
	}
	if c.Telegram.Token == "" && c.Discord.Token == "" {
		p.add("telegram.token, discord.token", "both are empty, so no chat platform is enabled; set IMAGINEBOT_TELEGRAM_TOKEN to the token from @BotFather, or IMAGINEBOT_DISCORD_TOKEN and IMAGINEBOT_DISCORD_APPLICATION_ID from your Discord application (or both)")
	}
	return p.list
}

type problems struct{ list []string }

func (p *problems) add(key, format string, args ...any) {
	if len(p.list) < problemsLimit {
		p.list = append(p.list, key+": "+fmt.Sprintf(format, args...))
	}
}

func (p *problems) url(key, raw string, httpsOnly bool) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "":
		p.add(key, "%q is not an absolute URL; use e.g. https://host.example", raw)
	case httpsOnly && u.Scheme != "https":
		p.add(key, "%q must use https", raw)
	case u.Scheme != "http" && u.Scheme != "https":
		p.add(key, "%q must use http or https", raw)
	case u.User != nil:
		p.add(key, "must not carry credentials; put keys in their own setting")
	}
}

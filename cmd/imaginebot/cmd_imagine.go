package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/imaginebot/imaginebot/bots/catalog"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/memory"
)

// cmdImagine runs the whole pipeline once against the configured gateway,
// with an in-memory ledger and no limits: an operator's check of a key and a
// configuration before any chat platform is connected.
func cmdImagine(ctx context.Context, e env, args []string) error {
	fs, cfgPath := newFlags(e, "imagine")
	model := fs.String("model", "", "model name (default: the configured default_model)")
	outDir := fs.String("o", ".", "directory to save the images in")
	aspect := fs.String("ar", "", "aspect ratio W:H, e.g. 16:9")
	negative := fs.String("no", "", "negative prompt: what to leave out")
	verbose := fs.Bool("v", false, "log the upstream exchange (debug level)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	prompt := strings.Join(fs.Args(), " ")
	if strings.TrimSpace(prompt) == "" {
		return &usageError{msg: "give a prompt, e.g. imaginebot imagine \"a fox in the snow\""}
	}
	cfg, err := loadConfig(e, *cfgPath)
	if err != nil {
		return err
	}
	if cfg.Upstream.APIKey == "" {
		return &ConfigError{Problems: []string{"upstream.api_key: is empty; set IMAGINEBOT_UPSTREAM_API_KEY to your gateway key (sk-…)"}}
	}
	logCfg := LogConfig{Level: "warn", Format: cfg.Log.Format}
	if *verbose {
		logCfg.Level = "debug"
	}
	log := newLogger(e.stderr, logCfg)

	coreCfg, err := coreConfig(cfg)
	if err != nil {
		return err
	}
	// One operator, one job: no rate limit, no quota.
	coreCfg.Rate = rate.Inf
	coreCfg.Quotas.DefaultDaily = 1 << 30
	store := memory.New()
	secret, err := userIDSecret(ctx, cfg, core.NewLedger(store, coreCfg.Quotas))
	if err != nil {
		return err
	}
	svc, err := core.NewService(coreCfg, store, newGenerator(cfg, log, secret), core.WithLogger(log))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	lang := catalog.Match(e.getenv("LANG"))
	rep := &cliReporter{w: e.stderr, out: e.stdout, dir: *outDir, lang: lang}
	started := time.Now()
	_, err = svc.Imagine(ctx, core.Request{
		Key:     fmt.Sprintf("cli:%d", started.UnixNano()),
		User:    core.User{Platform: core.PlatformCLI, ID: "operator", Name: "operator"},
		Scope:   "cli",
		Lang:    lang,
		Prompt:  prompt,
		Model:   *model,
		Options: core.Options{Aspect: *aspect, Negative: *negative},
	}, rep)
	if err != nil {
		return jobError{err: err, lang: lang}
	}
	fmt.Fprintf(e.stderr, "done in %s\n", time.Since(started).Round(100*time.Millisecond))
	return nil
}

// jobError shows a failed job as a chat user would see it, then the
// operator's detail (never a secret: errors are redacted where they arise).
type jobError struct {
	err  error
	lang core.Lang
}

// cliSyntax names the flags of `imaginebot imagine` in messages.
var cliSyntax = catalog.Syntax{
	Platform: "cli", Help: "imaginebot help", Imagine: "imaginebot imagine", Sep: " ", Prefix: "-",
	Names: map[string]string{core.OptionModel: "-model", core.OptionAspect: "-ar", core.OptionNegative: "-no"},
}

func (j jobError) Error() string {
	msg := catalog.For(j.lang).Error(j.err, cliSyntax)
	if e := core.AsError(j.err); e.Err != nil {
		msg += "\n  detail: " + e.Err.Error()
	}
	return msg
}

// cliReporter prints progress on stderr and saves the images.
type cliReporter struct {
	w, out io.Writer
	dir    string
	lang   core.Lang

	mu   sync.Mutex
	last string
}

func (r *cliReporter) Progress(p core.Progress) {
	line := progressLine(p, r.lang)
	r.mu.Lock()
	defer r.mu.Unlock()
	if line != r.last {
		r.last = line
		fmt.Fprintln(r.w, line)
	}
}

func (r *cliReporter) Deliver(_ context.Context, d core.Delivery) error {
	stamp := d.Job.Created.Format("20060102-150405")
	for i, img := range d.Images {
		name := filepath.Join(r.dir, fmt.Sprintf("imaginebot-%s-%d%s", stamp, i+1, img.Ext()))
		if err := os.WriteFile(name, img.Data, 0o644); err != nil {
			return fmt.Errorf("save image: %w", err)
		}
		fmt.Fprintln(r.out, name)
	}
	return nil
}

// progressLine renders a progress event as one line.
func progressLine(p core.Progress, lang core.Lang) string {
	s := catalog.For(lang).Status(core.Progress{Stage: p.Stage, Position: p.Position, Percent: p.Percent, Elapsed: p.Elapsed})
	if p.Stage != core.StageQueued && p.Percent >= 0 {
		s += fmt.Sprintf(" (%ds)", int(p.Elapsed.Seconds()))
	}
	if p.Text != "" {
		s += " " + core.Truncate(strings.ReplaceAll(p.Text, "\n", " "), 80)
	}
	return s
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

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
	action := fs.String("action", "", "a Midjourney button to press on -task, by its label or emoji: U2, V1, 🔄")
	task := fs.String("task", "", "the Midjourney task -action acts on (printed after each Midjourney picture)")
	words, err := parseImagineArgs(fs, args)
	if err != nil {
		return err
	}
	if (*action == "") != (*task == "") {
		return &usageError{msg: "-action and -task go together: imaginebot imagine -model mj -action U2 -task 1712345678901234"}
	}
	if *action != "" && len(words) == 0 {
		words = []string{"action " + *action} // the job record's prompt
	}
	// The prompt is read as a chat user's /imagine text, so --ar, --no and
	// --model in it mean what they mean in chat.
	cmd, err := core.ParseCommand(strings.Join(words, " "))
	if err != nil {
		return &usageError{msg: operatorLine(core.AsError(err))}
	}
	if strings.TrimSpace(cmd.Prompt) == "" {
		return &usageError{msg: "give a prompt, e.g. imaginebot imagine \"a fox in the snow\""}
	}
	// A flag wins over the same option in the prompt: a chat user's prompt
	// can be rerun as it was typed with one option changed.
	if *model != "" {
		cmd.Model = *model
	}
	if *aspect != "" {
		if !core.ValidAspect(*aspect) {
			return &usageError{msg: operatorLine(&core.Error{Code: core.CodeInvalidOption, Reason: core.ReasonMalformed, Option: core.OptionAspect, Value: *aspect})}
		}
		cmd.Options.Aspect = *aspect
	}
	if *negative != "" {
		cmd.Options.Negative = *negative
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
	gen := newGenerator(cfg, log, secret)
	svc, err := core.NewService(coreCfg, store, gen, core.WithLogger(log))
	if err != nil {
		return err
	}
	var act *core.TaskAction
	if *task != "" {
		if act, err = findAction(ctx, gen, *task, *action); err != nil {
			return err
		}
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
		Prompt:  cmd.Prompt,
		Model:   cmd.Model,
		Options: cmd.Options,
		Action:  act,
	}, rep)
	if err != nil {
		return jobError{err: err, lang: lang}
	}
	fmt.Fprintf(e.stderr, "done in %s\n", time.Since(started).Round(100*time.Millisecond))
	return nil
}

// parseImagineArgs parses flags before and after the prompt and returns the
// prompt's words. Go's flag package stops at the first word that is not a
// flag, which would send `"a fox" -o out` upstream as the prompt.
func parseImagineArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var words []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(words, rest...), nil
		}
		i := 0
		for ; i < len(rest); i++ {
			if rest[i] == "--" {
				return append(append(words, rest[:i]...), rest[i+1:]...), nil
			}
			if isFlag(fs, rest[i]) {
				break
			}
		}
		words = append(words, rest[:i]...)
		if i == len(rest) {
			return words, nil
		}
		args = rest[i:]
	}
}

// promptFlags are the flags that are also chat options: after the prompt,
// "--ar 16:9" is read by core.ParseCommand as a chat user's would be.
var promptFlags = map[string]bool{"model": true, "ar": true, "no": true}

// isFlag reports whether a word after the prompt is one of the command's
// flags: "-o", "-model", or "--o" (a flag no chat option shares). Any other
// "--word" stays in the prompt, where core.ParseCommand refuses it when it
// is no option; "-5" and "-" stay too.
func isFlag(fs *flag.FlagSet, w string) bool {
	if name, ok := strings.CutPrefix(w, "--"); ok {
		name, _, _ = strings.Cut(name, "=")
		return name == "h" || name == "help" || fs.Lookup(name) != nil && !promptFlags[name]
	}
	r, _ := utf8.DecodeRuneInString(strings.TrimPrefix(w, "-"))
	return strings.HasPrefix(w, "-") && unicode.IsLetter(r)
}

// jobError shows a failed job to the operator: what failed and what to
// check, then the detail (never a secret: errors are redacted where they
// arise).
type jobError struct {
	err  error
	lang core.Lang // for the quota command's refusals, worded by the catalogue
}

// cliSyntax names the CLI's commands in the catalogue's texts.
var cliSyntax = catalog.Syntax{
	Platform: "cli", Help: "imaginebot help", Imagine: "imaginebot imagine", Sep: " ", Prefix: "-",
	Names: map[string]string{core.OptionModel: "-model", core.OptionAspect: "-ar", core.OptionNegative: "-no"},
}

func (j jobError) Error() string {
	e := core.AsError(j.err)
	var msg string
	switch e.Code {
	case core.CodeForbidden, core.CodeInvalidArgument, core.CodeNotFound, core.CodeConflict:
		// The quota command's refusals read as the moderators' chat
		// replies do, and the same through the admin socket as on the file.
		msg = catalog.For(j.lang).Error(j.err, cliSyntax)
	default:
		msg = operatorLine(e)
	}
	if e.Err != nil {
		msg += "\n  detail: " + e.Err.Error()
	}
	return msg
}

// cliOption spells a core option as the flag that sets it.
func cliOption(option string) string {
	switch option {
	case core.OptionModel:
		return "-model"
	case core.OptionAspect:
		return "-ar"
	case core.OptionNegative:
		return "-no"
	}
	return "--" + option // an unknown option as typed in the prompt
}

const cliOptions = "the options are -model NAME, -ar W:H and -no TEXT"

// operatorLine says what failed and what to check, for the operator at a
// terminal, in English only like the rest of the CLI (usage, configuration
// problems, the detail): it names flags, configuration keys and environment
// variables, which are English in every locale. Chat users' texts, which
// speak of quotas and /help, are the catalogue's.
func operatorLine(e *core.Error) string {
	switch e.Code {
	case core.CodeInvalidPrompt:
		return `the prompt is empty: describe the picture, e.g. imaginebot imagine "a fox in the snow"`
	case core.CodePromptTooLong:
		return fmt.Sprintf("the prompt is longer than %d characters (limits.max_prompt_chars)", e.Limit)
	case core.CodePromptControl:
		return "the prompt contains control or text-direction characters: retype it"
	case core.CodeUnknownModel:
		return fmt.Sprintf("unknown model “%s”: -model takes a model from the configuration (models): %s", e.Value, orNone(e.Choices))
	case core.CodeInvalidOption:
		switch e.Reason {
		case core.ReasonUnknownOption:
			return fmt.Sprintf("“--%s” in the prompt is not an option: %s", e.Option, cliOptions)
		case core.ReasonNoValue:
			return fmt.Sprintf("%s needs a value after it: %s", cliOption(e.Option), cliOptions)
		case core.ReasonMalformed:
			return fmt.Sprintf("“%s” is not an aspect ratio: give -ar W:H with sides from 1 to 99, e.g. -ar 16:9", e.Value)
		}
		return "an option is not valid: " + cliOptions
	case core.CodeBanned:
		return "refused: the account is banned"
	case core.CodeRateLimited:
		return fmt.Sprintf("refused by the rate limit (limits.rate_per_minute): try again in %s", seconds(e.RetryAfter))
	case core.CodeTooManyJobs:
		return "refused: too many jobs at once (limits.per_user_jobs)"
	case core.CodeQueueFull:
		return "refused: the job queue is full (limits.queue_cap)"
	case core.CodeQuotaExceeded:
		return "refused: the quota is used up (quotas.daily)"
	case core.CodeDuplicate:
		return "this job was already run"
	case core.CodeShuttingDown:
		return "stopped before the job started"
	case core.CodeUpstreamAuth:
		return "the gateway refused the key or the address: check the key (upstream.api_key, or IMAGINEBOT_UPSTREAM_API_KEY) " +
			"and upstream.base_url (the gateway's root: the bot adds /v1/chat/completions)"
	case core.CodeUpstreamBalance:
		return "the gateway account behind the key has no credit left: top it up in the gateway's console, or use another key (upstream.api_key)"
	case core.CodeModelUnavailable:
		return "the gateway has no working channel for this model: check that the model's gateway name " +
			"(models: upstream_model, else name) is one the gateway serves, or choose another with -model"
	case core.CodeOverloaded:
		return fmt.Sprintf("the gateway is overloaded (HTTP 429): try again in %s; upstream.retries sets how often the bot retries", seconds(e.RetryAfter))
	case core.CodeUpstreamFailed:
		return "the gateway failed or could not be reached: check upstream.base_url and the network (DNS, proxy, firewall); " +
			"upstream.retries sets how often the bot retries"
	case core.CodeBadResponse:
		return "the gateway's answer was not the JSON expected (a proxy's HTML page, or a reply cut off): " +
			"check that upstream.base_url is the gateway's API root"
	case core.CodeRefused:
		msg := "the gateway answered with text and no image (a refusal): try another prompt or model"
		if d := strings.TrimSpace(e.Detail); d != "" {
			msg += "\n  the gateway said: “" + d + "”"
		}
		return msg
	case core.CodeLostInRelay:
		what := "the reply ended without an image"
		if e.Reason == core.ReasonEmpty {
			what = "the reply came back empty"
		}
		return what + ", as when a relay drops a streamed image: turn streaming off for this model (upstream.stream, models: stream)"
	case core.CodeTimeout:
		return "no image in the time allowed: raise limits.job_timeout or upstream.timeout " +
			"(and upstream.stream_idle_timeout when streaming), or try a faster model with -model"
	case core.CodeImageRejected:
		return "the gateway's image could not be downloaded safely (a private or blocked address, too large, or not an image): " +
			"list a gateway on a private network in images.allow_private_hosts; raise images.max_bytes for large images"
	case core.CodeDeliveryFailed:
		return "the image was made but could not be saved: check that the -o directory is writable and has room"
	case core.CodeInterrupted:
		return "interrupted before the image arrived: nothing was saved"
	case core.CodeDeliveryCut:
		return "interrupted while saving the images: some may have been written"
	case core.CodeCancelled:
		return "the job was cancelled"
	}
	return "internal error: run again with -v and report the detail below"
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none is configured"
	}
	return strings.Join(names, ", ")
}

// seconds renders a wait, rounded up to whole seconds (1 s at least).
func seconds(d time.Duration) string {
	return fmt.Sprintf("%ds", max(int((d+time.Second-1)/time.Second), 1))
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

// Deliver saves each image under a name of its own: the time, a short id of
// the job and the image's number, so runs in the same second (or in
// parallel) into one folder keep every file; a file already there is never
// replaced.
func (r *cliReporter) Deliver(_ context.Context, d core.Delivery) error {
	h := fnv.New32a()
	h.Write([]byte(d.Job.Key))
	base := fmt.Sprintf("imaginebot-%s-%08x", d.Job.Created.Format("20060102-150405"), h.Sum32())
	for i, img := range d.Images {
		name, err := createFree(r.dir, fmt.Sprintf("%s-%d", base, i+1), img.Ext(), img.Data)
		if err != nil {
			return fmt.Errorf("save image: %w", err)
		}
		fmt.Fprintln(r.out, name)
		if img.Task != "" { // what -action -task can press next
			var labels []string
			for _, b := range img.Buttons {
				labels = append(labels, strings.TrimSpace(b.Emoji+b.Label))
			}
			fmt.Fprintf(r.w, "task %s: %s\n", img.Task, strings.Join(labels, " "))
		}
	}
	return nil
}

// createFree writes data to dir/name+ext, or to name_2+ext, name_3+ext, …
// when that exists: O_EXCL makes the check and the creation one step.
func createFree(dir, name, ext string, data []byte) (string, error) {
	const tries = 100
	for n := 1; n <= tries; n++ {
		path := filepath.Join(dir, name+ext)
		if n > 1 {
			path = filepath.Join(dir, fmt.Sprintf("%s_%d%s", name, n, ext))
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path) // a cut-off image is worse than none
			return "", err
		}
		return path, nil
	}
	return "", fmt.Errorf("%s%s and %d more names like it exist already in %s; nothing was overwritten", name, ext, tries-1, dir)
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

// findAction is the button labelled label on Midjourney task id, asked of
// the gateway (the terminal keeps no job to look it up in).
func findAction(ctx context.Context, gen interface {
	TaskButtons(ctx context.Context, taskID string) ([]core.TaskButton, error)
}, id, label string) (*core.TaskAction, error) {
	buttons, err := gen.TaskButtons(ctx, id)
	if err != nil {
		return nil, jobError{err: err, lang: core.English}
	}
	var names []string
	for _, b := range buttons {
		if strings.EqualFold(b.Label, label) || (b.Emoji != "" && b.Emoji == label) {
			return &core.TaskAction{TaskID: id, CustomID: b.CustomID}, nil
		}
		names = append(names, strings.TrimSpace(b.Emoji+b.Label))
	}
	return nil, &usageError{msg: fmt.Sprintf("task %s has no button %q; it has: %s", id, label, strings.Join(names, " "))}
}

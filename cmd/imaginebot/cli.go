package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// env is what a command needs from the process, injected for tests.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

type command struct {
	name    string
	summary string
	usage   string
	run     func(ctx context.Context, e env, args []string) error
}

func commands() []command {
	return []command{
		{"run", "run the bot (Telegram) until interrupted", "run [-config FILE]", cmdRun},
		{"imagine", "make one image with the configured gateway and save it (checks a key and a config)",
			imagineUsage, cmdImagine},
		{"quota", "show and change quotas (through the running bot, or in the database file)", quotaUsage, cmdQuota},
		{"backup", "write a consistent, checked copy of the database to FILE (also while the bot runs)", "backup [-config FILE] [-db PATH] FILE", cmdBackup},
		{"export", "copy the bbolt ledger into PostgreSQL (storage.dsn), verified by comparing balances", exportUsage, cmdExport},
		{"migrate", "show, and with -apply make, the PostgreSQL ledger's pending schema migrations", migrateUsage, cmdMigrate},
		{"healthcheck", "exit 0 when a running bot answers /healthz (container health checks)", "healthcheck [-url URL]", cmdHealthcheck},
		{"version", "print the version", "version", cmdVersion},
		{"help", "list the commands, or explain one", "help [COMMAND]", nil},
	}
}

const imagineUsage = `imagine [-config FILE] [-model NAME] [-ar W:H] [-no TEXT] [-o DIR] [-v] "prompt"

Runs one job through the configured gateway with no limits and no quota, and saves
the images in DIR as imaginebot-TIME-JOB-N.EXT (never over an existing file).
Flags may come before or after the prompt ("--" ends them). The prompt is read as
a chat user's /imagine text: --model, --ar and --no inside it work as in chat, and
the flag wins when both give the same option.`

// exitUsage marks errors that should print the usage and exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func cli(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	e := env{stdout: stdout, stderr: stderr, getenv: getenv}
	if len(args) == 0 {
		printHelp(stderr)
		return 2
	}
	name, rest := args[0], args[1:]
	if name == "help" || name == "-h" || name == "--help" || name == "-help" {
		if len(rest) > 0 {
			if c, ok := findCommand(rest[0]); ok {
				fmt.Fprintf(stdout, "%s — %s\n\nusage: imaginebot %s\n", c.name, c.summary, c.usage)
				return 0
			}
		}
		printHelp(stdout)
		return 0
	}
	c, ok := findCommand(name)
	if !ok {
		fmt.Fprintf(stderr, "imaginebot: unknown command %q\n\n", name)
		printHelp(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := c.run(ctx, e, rest)
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "imaginebot %s: %s\nusage: imaginebot %s\n", c.name, ue.msg, c.usage)
		return 2
	default:
		fmt.Fprintf(stderr, "imaginebot %s: %v\n", c.name, err)
		return 1
	}
}

func findCommand(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "imaginebot — make images from chat through an OpenAI-compatible gateway")
	fmt.Fprintln(w, "\nusage: imaginebot COMMAND [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nThe configuration file is optional (-config FILE or IMAGINEBOT_CONFIG); secrets come from")
	fmt.Fprintln(w, "IMAGINEBOT_UPSTREAM_API_KEY, IMAGINEBOT_TELEGRAM_TOKEN, …  See config.example.yaml.")
	fmt.Fprintln(w, "Run 'imaginebot help COMMAND' for a command's flags.")
}

func cmdVersion(_ context.Context, e env, _ []string) error {
	fmt.Fprintln(e.stdout, "imaginebot", version)
	return nil
}

// newFlags returns a flag set with the -config flag every command shares.
func newFlags(e env, name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	cfgPath := fs.String("config", e.getenv("IMAGINEBOT_CONFIG"), "configuration file (YAML); optional")
	return fs, cfgPath
}

// parseFlags parses args, turning flag errors into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{msg: err.Error()}
	}
	return nil
}

// loadConfig loads and validates the configuration, warning on stderr;
// checks add the command's own requirements to the same list of problems.
func loadConfig(e env, path string, checks ...func(*Config) []string) (*Config, error) {
	return LoadConfig(path, e.getenv, func(w string) { fmt.Fprintln(e.stderr, "warning:", w) }, checks...)
}

// newLogger builds the process logger from the log section.
func newLogger(w io.Writer, c LogConfig) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(c.Level))) // validated already
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

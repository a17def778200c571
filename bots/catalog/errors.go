package catalog

import (
	"math"
	"strings"
	"time"

	"github.com/imaginebot/imaginebot/core"
)

// Syntax is how a platform spells commands and options, so one message
// names what its users actually type.
type Syntax struct {
	Platform string            // "telegram", "discord", "cli": picks <platform>.example, moderators.<platform>
	Help     string            // the help command: "/help"
	Imagine  string            // the image command: "/imagine"
	Names    map[string]string // core option → as typed: "aspect" → "--ar" or "aspect"
	Sep      string            // between an option and its value: " " (--ar 16:9) or ":" (aspect:16:9)
	Prompt   string            // before the description in a command: "" or "prompt:"
	Prefix   string            // before an unknown option's name as typed: "--"
}

// Option spells option (a core.Option… name) for the platform.
func (s Syntax) Option(option string) string {
	if n, ok := s.Names[option]; ok {
		return n
	}
	return s.Prefix + option
}

// Use writes option with value as a user would type it.
func (s Syntax) Use(option, value string) string { return s.Option(option) + s.Sep + value }

// sample values for an option's example.
var samples = map[string]string{core.OptionAspect: "16:9", core.OptionModel: "flux", core.OptionNegative: "text"}

// Error renders err for a chat user: what happened and what to do, never the
// operator's detail. A refusal shows the gateway's own words, labelled.
func (p Printer) Error(err error, s Syntax) string {
	if err == nil {
		return ""
	}
	e := core.AsError(err)
	id := "error." + string(e.Code)
	if !p.Has(id) {
		id = "error.internal"
	}
	if e.Reason != "" && p.Has(id+"."+string(e.Reason)) {
		id += "." + string(e.Reason)
	}
	option := s.Option(e.Option)
	if e.Reason == core.ReasonUnknownOption {
		option = s.Prefix + e.Option
	}
	kv := []any{
		"Example", p.T(s.Platform + ".example"),
		"Help", s.Help,
		"Moderators", p.T("moderators." + s.Platform),
		"Model", s.Option(core.OptionModel), "Aspect", s.Option(core.OptionAspect), "Negative", s.Option(core.OptionNegative),
		"Option", option, "Value", e.Value, "Choices", strings.Join(e.Choices, ", "),
		"Min", e.Min, "Max", e.Limit,
		"Reset", p.Reset(e.ResetAt),
	}
	switch e.Code {
	case core.CodeRateLimited:
		kv = append(kv, "Wait", p.Wait(e.RetryAfter))
	case core.CodeQueueFull:
		kv = append(kv, "Wait", p.Wait(orDefault(e.RetryAfter, time.Minute)))
	case core.CodeOverloaded:
		kv = append(kv, "Wait", p.Wait(orDefault(e.RetryAfter, 30*time.Second)))
	}
	if e.Reason == core.ReasonNoValue {
		kv[1] = s.Use(e.Option, samples[e.Option]) // Example
	}
	var msg string
	if e.Code == core.CodePromptTooLong {
		msg = p.N(id, e.Limit)
	} else {
		msg = p.T(id, kv...)
	}
	if e.Code == core.CodeRefused && strings.TrimSpace(e.Detail) != "" {
		msg += "\n\n" + p.T("error.gateway_said", "Detail", e.Detail)
	}
	return msg
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Wait renders a wait, rounded up to whole seconds (minutes past 90 s).
func (p Printer) Wait(d time.Duration) string {
	s := max(int(math.Ceil(d.Seconds())), 1)
	if s > 90 {
		return p.N("duration.minutes", (s+59)/60)
	}
	return p.N("duration.seconds", s)
}

// Reset renders a quota reset time with its zone: "00:00 (Asia/Shanghai)".
func (p Printer) Reset(t time.Time) string {
	if t.IsZero() {
		return p.T("reset.at", "Time", "00:00", "Zone", "UTC")
	}
	return p.T("reset.at", "Time", t.Format("15:04"), "Zone", t.Location().String())
}

// ResetFrom renders a reset time both ways: "00:00 (UTC), in 3 h 20 min".
func (p Printer) ResetFrom(t, now time.Time) string {
	if t.IsZero() {
		return p.Reset(t)
	}
	return p.T("reset.relative", "At", p.Reset(t), "In", p.Span(t.Sub(now)))
}

// Span renders a longer stretch of time: minutes, or hours and minutes.
func (p Printer) Span(d time.Duration) string {
	m := max(int(math.Ceil(d.Minutes())), 1)
	if m < 60 {
		return p.N("duration.minutes", m)
	}
	return p.T("duration.hours_minutes", "Hours", m/60, "Minutes", m%60)
}

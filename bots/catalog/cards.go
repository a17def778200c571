package catalog

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/imaginebot/imaginebot/core"
)

// The texts below are the same on every platform; adapters only cut them to
// their platform's limits.

// Status is a job's progress line: its place in the queue, then how far the
// generation is, with the gateway's own progress text under it.
func (p Printer) Status(pr core.Progress) string {
	if pr.Stage == core.StageQueued {
		return p.T("status.queued", "Position", max(pr.Position, 1))
	}
	var s string
	if pr.Percent >= 0 {
		s = p.T("status.generating", "Percent", min(pr.Percent, 100))
	} else {
		s = p.N("status.generating_for", int(pr.Elapsed/time.Second))
	}
	if t := strings.TrimSpace(pr.Text); t != "" {
		s += "\n" + core.Truncate(t, 300)
	}
	return s
}

// Meta names the model and the options a picture was made with.
func (p Printer) Meta(model core.Model, opts core.Options) string {
	parts := []string{"🎨 " + core.Truncate(model.DisplayName(), 64)}
	if opts.Aspect != "" {
		parts = append(parts, opts.Aspect)
	}
	if opts.Negative != "" {
		parts = append(parts, p.T("meta.negative", "Text", core.Truncate(opts.Negative, 200)))
	}
	return strings.Join(parts, " · ")
}

// MetaBy is Meta with who asked, for pictures shown to others (groups,
// servers): the quota line under it is theirs. asker "" leaves it out.
func (p Printer) MetaBy(model core.Model, opts core.Options, asker string) string {
	m := p.Meta(model, opts)
	if asker != "" {
		m += " · " + p.T("meta.asked_by", "Name", core.Truncate(asker, 64))
	}
	return m
}

// QuotaLine is what is left after a picture: "Quota left today: N · resets …".
func (p Printer) QuotaLine(bal core.Balance) string {
	if bal.Credits > 0 {
		return p.T("quota.line_credits", "Left", bal.DailyLeft(), "Credits", bal.Credits, "Reset", p.Reset(bal.ResetAt))
	}
	return p.T("quota.line", "Left", bal.DailyLeft(), "Reset", p.Reset(bal.ResetAt))
}

// Self is a user's own /quota card; the reset is shown as a time and as how
// long until then.
func (p Printer) Self(bal core.Balance, now time.Time) string {
	if bal.Banned {
		return p.T("self.banned")
	}
	lines := []string{p.T("self.title"), p.T("self.left", "Left", bal.DailyLeft(), "Daily", bal.Daily)}
	if bal.Credits > 0 {
		lines = append(lines, p.N("self.credits", bal.Credits))
	}
	reset := p.Reset(bal.ResetAt)
	if !now.IsZero() {
		reset = p.ResetFrom(bal.ResetAt, now)
	}
	return strings.Join(append(lines, p.T("self.resets", "Reset", reset)), "\n")
}

// View is an account as a moderator sees it.
func (p Printer) View(v core.AccountView, name string) string {
	b := v.Balance
	return p.T("view.card", "Name", name, "Daily", b.Daily, "Source", p.source(v.DailySource),
		"Used", b.Used, "Credits", b.Credits, "Left", b.Remaining(), "Banned", p.yesNo(v.Banned), "Reset", p.Reset(b.ResetAt))
}

func (p Printer) source(s string) string {
	if p.Has("source." + s) {
		return p.T("source." + s)
	}
	return s
}

func (p Printer) yesNo(b bool) string {
	if b {
		return p.T("answer.yes")
	}
	return p.T("answer.no")
}

// Outcome names how a job ended.
func (p Printer) Outcome(j core.Job) string {
	switch {
	case j.State == core.JobCommitted:
		return "✅ " + p.T("outcome.committed")
	case j.State != core.JobRefunded:
		return "⏳ " + p.T("outcome.pending")
	case j.Outcome != "" && p.Has("outcome."+string(j.Outcome)):
		return "↩️ " + p.T("outcome."+string(j.Outcome))
	}
	return "↩️ " + p.T("outcome.refunded")
}

// History lists a user's recent jobs, newest first, times in loc.
func (p Printer) History(jobs []core.Job, name string, loc *time.Location) string {
	if len(jobs) == 0 {
		return p.T("history.none", "Name", name)
	}
	lines := []string{p.T("history.title", "Name", name)}
	for _, j := range jobs {
		lines = append(lines, fmt.Sprintf("• %s · %s · %s · %s", localTime(j.Created, loc), j.Model, p.Outcome(j), core.Truncate(j.Prompt, 60)))
	}
	return strings.Join(lines, "\n")
}

// AuditLine is what Audit needs to know besides the entry: how to name a
// user key, and whether to show the scope (a view over all scopes).
type AuditLine struct {
	Name      func(userKey string) string
	ShowScope bool
	Location  *time.Location
	MaxRunes  int // each line is cut to this many runes; 0 = 400
}

// Audit lists moderator actions, newest first.
func (p Printer) Audit(entries []core.AuditEntry, o AuditLine) string {
	if len(entries) == 0 {
		return p.T("audit.none")
	}
	if o.MaxRunes <= 0 {
		o.MaxRunes = 400
	}
	lines := []string{p.T("audit.title")}
	for _, e := range entries {
		actor := e.ActorName
		if actor == "" {
			actor = e.Actor
		}
		line := fmt.Sprintf("• %s · %s (%s) · %s", localTime(e.Time, o.Location), actor, p.T("role."+e.Role.String()), p.action(e.Action))
		if e.Target != "" {
			target := e.Target
			if o.Name != nil {
				target = o.Name(e.Target)
			}
			line += " · " + target
		}
		if o.ShowScope {
			line += " · " + e.Scope
		}
		if d := p.Diff(e.Before, e.After); d != "" {
			line += " · " + d
		}
		lines = append(lines, core.Truncate(line, o.MaxRunes))
	}
	return strings.Join(lines, "\n")
}

func (p Printer) action(a string) string {
	if p.Has("action." + a) {
		return p.T("action." + a)
	}
	return a
}

// Diff shows what an audit entry changed, "credits 0→5", from the
// core.AccountView strings it stored, with names and values in p's language.
func (p Printer) Diff(before, after string) string {
	bf := fields(before)
	var out []string
	for _, kv := range strings.Fields(after) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if old, had := bf[k]; !had || old != v {
			name := k
			if p.Has("field." + k) {
				name = p.T("field." + k)
			}
			out = append(out, name+" "+p.value(old)+"→"+p.value(v))
		}
	}
	return strings.Join(out, ", ")
}

func fields(s string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Fields(s) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// value words a stored field value: "5(default)", "true".
func (p Printer) value(v string) string {
	switch v {
	case "true":
		return p.yesNo(true)
	case "false":
		return p.yesNo(false)
	}
	if n, src, ok := strings.Cut(v, "("); ok && strings.HasSuffix(src, ")") {
		return n + "(" + p.source(strings.TrimSuffix(src, ")")) + ")"
	}
	return v
}

func localTime(t time.Time, loc *time.Location) string {
	if loc == nil {
		loc = time.UTC
	}
	return t.In(loc).Format("01-02 15:04")
}

// Help is what /help explains.
type Help struct {
	How     string // message id of how to ask in this chat: help.how_private, …
	Models  []core.Model
	Limits  core.Config
	Balance *core.Balance // the reader's, when known
}

// Help explains the bot: what it does, the models with their cost, the
// options, examples and the limits.
func (p Printer) Help(h Help, s Syntax) string {
	var b strings.Builder
	line := func(s string) { b.WriteString(s + "\n") }
	line(p.T("help.intro"))
	line("")
	line(p.T(h.How))
	line("")
	line(p.T("help.models"))
	for i, m := range h.Models {
		fmt.Fprintf(&b, "• %s (%s) — %s", core.Truncate(m.DisplayName(), 64), s.Use(core.OptionModel, m.Name), p.N("help.cost", max(m.Cost, 1)))
		if i == 0 {
			b.WriteString(" " + p.T("help.default"))
		}
		line("")
	}
	line("")
	line(p.T("help.options_" + s.Platform))
	line("")
	line(p.T("help.examples"))
	line(s.Imagine + " " + s.Prompt + p.T("help.example_1"))
	second := s.Imagine + " " + s.Prompt + p.T("help.example_2")
	if len(h.Models) > 1 {
		second += " " + s.Use(core.OptionModel, h.Models[1].Name)
	}
	line(second + " " + s.Use(core.OptionAspect, "16:9") + " " + s.Use(core.OptionNegative, p.T("help.example_2_extra")))
	line("")
	line(p.T("help.limits"))
	if bal := h.Balance; bal != nil {
		s := p.T("help.limit_daily", "Daily", bal.Daily, "Reset", p.Reset(bal.ResetAt), "Left", bal.DailyLeft())
		if bal.Credits > 0 {
			s += p.N("help.limit_credits", bal.Credits)
		}
		line(s)
	}
	lim := h.Limits
	if lim.MaxPromptRunes > 0 {
		line(p.N("help.limit_prompt", lim.MaxPromptRunes))
	}
	if lim.Rate > 0 && lim.Rate != rate.Inf {
		every := time.Duration(math.Round(float64(time.Second) / float64(lim.Rate)))
		line(p.N("help.limit_rate", max(lim.Burst, 1), "Every", roundDuration(every)))
	}
	if lim.PerUserJobs > 0 {
		line(p.N("help.limit_jobs", lim.PerUserJobs))
	}
	line("")
	b.WriteString(p.T("help.footer_" + s.Platform))
	return b.String()
}

func roundDuration(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	case d >= time.Minute && d%time.Minute == 0:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d >= time.Second:
		return d.Round(time.Second).String()
	}
	return d.String()
}

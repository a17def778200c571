package core_test

import (
	"context"
	"errors"
	"testing"

	"github.com/imaginebot/imaginebot/core"
)

// A user's settings fill what a prompt leaves open; the prompt's own
// options win; a reroll (AsIs) keeps the original job's; a model no longer
// configured is ignored.
func TestPrefsApplyToJobs(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	if _, err := e.svc.SetPrefs(ctx, acct(alice), core.Prefs{Model: "dalle"}); core.ErrorCode(err) != core.CodeUnknownModel {
		t.Fatalf("unknown model: %v", err)
	}
	if _, err := e.svc.SetPrefs(ctx, acct(alice), core.Prefs{Aspect: "wide"}); core.ErrorCode(err) != core.CodeInvalidOption {
		t.Fatalf("bad aspect: %v", err)
	}
	if _, err := e.svc.SetPrefs(ctx, acct(alice), core.Prefs{Model: "flux", Aspect: "16:9", Lang: core.TraditionalChinese}); err != nil {
		t.Fatal(err)
	}
	if p, err := e.svc.Prefs(ctx, acct(alice)); err != nil || p != (core.Prefs{Model: "flux", Aspect: "16:9", Lang: core.TraditionalChinese}) {
		t.Fatalf("prefs %+v, %v", p, err)
	}
	cases := []struct {
		name        string
		req         core.Request
		model, ar   string
		remainAfter int
	}{
		{"settings fill in", req("1", alice, "a fox"), "flux", "16:9", 3},
		{"the prompt wins", func() core.Request {
			r := req("2", alice, "a fox")
			r.Model, r.Options.Aspect = "stable-diffusion", "1:1"
			return r
		}(), "stable-diffusion", "1:1", 2},
		{"a reroll keeps the original", func() core.Request {
			r := req("3", alice, "a fox")
			r.Model, r.AsIs = "stable-diffusion", true
			return r
		}(), "stable-diffusion", "", 1},
		{"someone else's settings are theirs", req("4", bob, "a fox"), "stable-diffusion", "", 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := e.svc.Imagine(ctx, c.req, &fakeReporter{})
			if err != nil {
				t.Fatal(err)
			}
			if r.Job.Model != c.model || r.Job.Options.Aspect != c.ar {
				t.Fatalf("job made with %q %q, want %q %q", r.Job.Model, r.Job.Options.Aspect, c.model, c.ar)
			}
			if got := e.remaining(t, c.req.User); got != c.remainAfter {
				t.Fatalf("remaining %d, want %d", got, c.remainAfter)
			}
		})
	}
	// Settings survive the account's changes by moderators and jobs.
	if _, err := e.svc.Grant(ctx, core.CLIActor(), acct(alice), 3); err != nil {
		t.Fatal(err)
	}
	if p, _ := e.svc.Prefs(ctx, acct(alice)); p.Model != "flux" {
		t.Fatalf("prefs lost: %+v", p)
	}
}

func TestPrefsForAModelNoLongerConfigured(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, nil)
	if _, err := e.svc.SetPrefs(ctx, acct(alice), core.Prefs{Model: "flux"}); err != nil {
		t.Fatal(err)
	}
	// The operator removes flux; the same ledger, a new service.
	svc, err := core.NewService(core.Config{Models: []core.Model{{Name: "stable-diffusion"}}, Quotas: core.Quotas{DefaultDaily: 5}}, e.store, e.gen, core.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	r, err := svc.Imagine(ctx, req("1", alice, "a fox"), &fakeReporter{})
	if err != nil || r.Job.Model != "stable-diffusion" {
		t.Fatalf("job %+v, %v", r.Job, err)
	}
}

// A saved aspect the model cannot make is left out, not refused each time.
func TestPrefsAspectTheModelCannotMake(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, func(c *core.Config) {
		c.Models = append(c.Models, core.Model{Name: "dalle", API: core.APIImages, Sizes: map[string]string{"1:1": "1024x1024", "16:9": "1792x1024"}})
	})
	if _, err := e.svc.SetPrefs(ctx, acct(alice), core.Prefs{Model: "dalle", Aspect: "4:3"}); err != nil {
		t.Fatal(err)
	}
	r, err := e.svc.Imagine(ctx, req("1", alice, "a fox"), &fakeReporter{})
	if err != nil || r.Job.Model != "dalle" || r.Job.Options.Aspect != "" {
		t.Fatalf("job %+v, %v; want dalle without the aspect", r.Job, err)
	}
	// Asked for in the prompt, it is refused before anything is charged.
	rq := req("2", alice, "a fox")
	rq.Options.Aspect = "4:3"
	if _, err := e.svc.Imagine(ctx, rq, &fakeReporter{}); core.ErrorCode(err) != core.CodeInvalidOption {
		t.Fatalf("asked for 4:3: %v", err)
	}
}

// A picture given to a model that takes none is refused before anything is
// charged, naming the models that do.
func TestPictureToAModelThatTakesNone(t *testing.T) {
	e := newEnv(t, func(c *core.Config) {
		c.Models = append(c.Models, core.Model{Name: "editor", AcceptsImage: true})
	})
	rq := req("1", alice, "make it blue")
	rq.Input = &core.Image{Data: []byte("\x89PNG\r\n\x1a\nx"), MIME: "image/png"}
	_, err := e.svc.Imagine(context.Background(), rq, &fakeReporter{})
	var ce *core.Error
	if !errors.As(err, &ce) || ce.Code != core.CodeInvalidOption || ce.Reason != core.ReasonNoImage || len(ce.Choices) != 1 || ce.Choices[0] != "editor" {
		t.Fatalf("err %#v", err)
	}
	if e.gen.Calls() != 0 || e.remaining(t, alice) != 5 {
		t.Fatal("the refused job ran or was charged")
	}
	rq.Key, rq.Model = "2", "editor"
	if _, err := e.svc.Imagine(context.Background(), rq, &fakeReporter{}); err != nil {
		t.Fatalf("to a model that takes it: %v", err)
	}
}

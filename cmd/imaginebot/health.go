package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// readiness is one thing /readyz checks: the ledger, a platform, the gateway.
type readiness struct {
	name  string
	check func(ctx context.Context) error
}

// healthz answers as long as the process serves HTTP: for container health
// checks and restarts.
func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// readyz answers 200 when every check passes, else 503 with each failing
// check and why: for load balancers and operators.
func readyz(checks []readiness) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		defer cancel()
		var bad []string
		for _, c := range checks {
			if err := c.check(ctx); err != nil {
				bad = append(bad, c.name+": "+err.Error())
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if len(bad) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, strings.Join(bad, "\n"))
			return
		}
		fmt.Fprintln(w, "ok")
	}
}

// cmdHealthcheck asks a running bot's /healthz: exit 0 when it answers. The
// container image has no shell or curl, so its HEALTHCHECK runs this.
func cmdHealthcheck(ctx context.Context, e env, args []string) error {
	fs, _ := newFlags(e, "healthcheck")
	url := fs.String("url", "http://127.0.0.1:8080/healthz", "the bot's health URL (http.listen + /healthz)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return &usageError{msg: fmt.Sprintf("-url %q: %v", *url, err)}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", *url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(*url + ": " + resp.Status)
	}
	fmt.Fprintln(e.stdout, "ok")
	return nil
}

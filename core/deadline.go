package core

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DeadlineError is the cause of a deadline that a setting sets. When one
// ends a job, the operator's detail names the setting to raise instead of
// a bare "context deadline exceeded", which could be any of four. It
// matches context.DeadlineExceeded with errors.Is, so callers that only
// ask "was it a timeout?" still get their answer.
type DeadlineError struct {
	Setting string // the configuration key, e.g. "limits.job_timeout"
	Limit   time.Duration
}

func (e *DeadlineError) Error() string {
	return fmt.Sprintf("%s (%s) ran out", e.Setting, e.Limit)
}

func (e *DeadlineError) Unwrap() error { return context.DeadlineExceeded }

// WithSettingTimeout is context.WithTimeout whose expiry has a
// *DeadlineError naming setting as its cause (see DeadlineCause).
func WithSettingTimeout(ctx context.Context, d time.Duration, setting string) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, d, &DeadlineError{Setting: setting, Limit: d})
}

// DeadlineCause says which deadline ended ctx: the *DeadlineError of the
// setting that set it (ctx's own or an ancestor's), context.DeadlineExceeded
// for a deadline without one, or nil when ctx has not passed a deadline.
func DeadlineCause(ctx context.Context) error {
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return nil
	}
	return context.Cause(ctx)
}

// explainDeadline adds to err's operator detail the setting whose deadline
// ended ctx, when one did; err keeps its Code (what the user is told).
func explainDeadline(ctx context.Context, err error) error {
	cause := DeadlineCause(ctx)
	if err == nil || cause == nil || errors.Is(err, cause) {
		return err
	}
	e := *AsError(err)
	if e.Err == nil {
		e.Err = cause
	} else {
		e.Err = fmt.Errorf("%w: %w", cause, e.Err)
	}
	return &e
}

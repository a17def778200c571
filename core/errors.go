package core

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Code classifies a failure. Adapters render it for users with Message; the
// wrapped Err is for operators and logs only.
type Code string

const (
	// Refused before any quota is taken.
	CodeInvalidPrompt Code = "invalid_prompt"
	CodePromptTooLong Code = "prompt_too_long"
	CodePromptControl Code = "prompt_control"
	CodeUnknownModel  Code = "unknown_model"
	CodeInvalidOption Code = "invalid_option"
	CodeBanned        Code = "banned"
	CodeRateLimited   Code = "rate_limited"
	CodeTooManyJobs   Code = "too_many_jobs"
	CodeQueueFull     Code = "queue_full"
	CodeQuotaExceeded Code = "quota_exhausted"
	CodeDuplicate     Code = "duplicate"
	CodeShuttingDown  Code = "shutting_down"

	// Failures of a job that held a reservation (always refunded).
	CodeUpstreamAuth     Code = "upstream_auth"     // bad key or misconfiguration (401, 400, 403, 404, redirects)
	CodeUpstreamBalance  Code = "upstream_balance"  // the gateway account ran dry (403 insufficient_user_quota)
	CodeModelUnavailable Code = "model_unavailable" // 503 model_not_found / no channel
	CodeOverloaded       Code = "overloaded"        // 429
	CodeUpstreamFailed   Code = "upstream_failed"   // 5xx, connection errors after retries
	CodeBadResponse      Code = "bad_response"      // HTML error pages, truncated or malformed JSON
	CodeRefused          Code = "refused"           // 200 with text and no image (content policy)
	CodeLostInRelay      Code = "lost_in_relay"     // stream ended with neither image nor text
	CodeTimeout          Code = "timeout"
	CodeImageRejected    Code = "image_rejected" // unsafe URL, too large, not an image
	CodeDeliveryFailed   Code = "delivery_failed"
	CodeInterrupted      Code = "interrupted"          // the bot stopped while the job ran
	CodeDeliveryCut      Code = "delivery_interrupted" // the bot stopped while sending the result: it may have arrived
	CodeCancelled        Code = "cancelled"            // the requester or a moderator cancelled it

	// Moderator operations.
	CodeForbidden       Code = "forbidden"
	CodeInvalidArgument Code = "invalid_argument"
	CodeNotFound        Code = "not_found"
	CodeConflict        Code = "conflict" // e.g. refund after commit

	CodeInternal Code = "internal"
)

// Error is a classified failure: Code and the fields below drive the user's
// message; Err is the operator's detail. Neither carries secrets.
type Error struct {
	Code       Code
	Err        error         // operator detail; may be nil
	RetryAfter time.Duration // when a retry makes sense (rate limits, overload)
	ResetAt    time.Time     // quota reset time, in the quota time zone
	Detail     string        // cleaned text to show users (refusal text, allowed roles, …)
	Limit      int           // the limit that was hit (prompt length, …)
}

func (e *Error) Error() string {
	if e.Err == nil {
		if e.Detail != "" {
			return string(e.Code) + ": " + e.Detail
		}
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error with a formatted operator detail.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Err: fmt.Errorf(format, args...)}
}

// ErrorCode returns the Code of err: the first *Error in its chain, timeout
// for deadline errors, internal for anything else and "" for nil.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return CodeTimeout
	}
	if errors.Is(err, context.Canceled) {
		return CodeInterrupted
	}
	return CodeInternal
}

// AsError returns err as an *Error, classifying bare errors with ErrorCode.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: ErrorCode(err), Err: err}
}

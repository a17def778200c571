package core

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Code classifies a failure. Adapters render it for users through their
// message catalogue (bots/catalog); the wrapped Err is for operators and logs
// only.
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

// Codes lists every Code, for the catalogue's check that each has a message.
var Codes = []Code{
	CodeInvalidPrompt, CodePromptTooLong, CodePromptControl, CodeUnknownModel, CodeInvalidOption,
	CodeBanned, CodeRateLimited, CodeTooManyJobs, CodeQueueFull, CodeQuotaExceeded, CodeDuplicate,
	CodeShuttingDown, CodeUpstreamAuth, CodeUpstreamBalance, CodeModelUnavailable, CodeOverloaded,
	CodeUpstreamFailed, CodeBadResponse, CodeRefused, CodeLostInRelay, CodeTimeout, CodeImageRejected,
	CodeDeliveryFailed, CodeInterrupted, CodeDeliveryCut, CodeCancelled, CodeForbidden,
	CodeInvalidArgument, CodeNotFound, CodeConflict, CodeInternal,
}

// Error is a classified failure: Code and the fields below drive the user's
// message; Err is the operator's detail. Neither carries secrets. Core writes
// no user text: what went wrong is in fields (the option, the bad value, the
// choices, the limits) so each language words it whole, instead of English
// fragments left inside a translated sentence.
type Error struct {
	Code       Code
	Err        error         // operator detail; may be nil
	RetryAfter time.Duration // when a retry makes sense (rate limits, overload)
	ResetAt    time.Time     // quota reset time, in the quota time zone
	Detail     string        // the gateway's own words (a refusal), cleaned; shown labelled as such
	Limit      int           // the limit that was hit: prompt length, the largest number allowed
	Min        int           // the smallest number allowed (ReasonOutOfRange)
	Reason     Reason        // what was wrong with Option or Value
	Option     string        // the option at fault: an Option… name, or an unknown one as typed
	Value      string        // the value refused, as given (cut)
	Choices    []string      // what would have been accepted (model names)
}

// Reason says what was wrong with an option or an argument
// (CodeInvalidOption, CodeUnknownModel, CodeInvalidArgument).
type Reason string

const (
	ReasonUnknownOption Reason = "unknown_option"  // Option is no option core knows
	ReasonNoValue       Reason = "no_value"        // Option needs a value
	ReasonMalformed     Reason = "malformed"       // Value does not have Option's form (aspect: W:H)
	ReasonOutOfRange    Reason = "out_of_range"    // Value is outside Min–Limit
	ReasonSelf          Reason = "self"            // the actor aimed at their own account, which is refused
	ReasonEmpty         Reason = "empty"           // the gateway's answer was empty (CodeLostInRelay)
	ReasonNoImage       Reason = "no_image"        // a picture was given to a model that takes none (Choices: those that do)
	ReasonInputTooLarge Reason = "input_too_large" // the picture given is Value in size, over Limit MiB
	ReasonNotImage      Reason = "not_image"       // what was given to start from is not a picture
	ReasonBadInput      Reason = "bad_input"       // the picture given could not be fetched from the platform
)

// Option names, as errors name them; adapters show them in their platform's
// syntax (--ar on Telegram, aspect on Discord).
const (
	OptionModel    = "model"
	OptionAspect   = "aspect"
	OptionNegative = "negative"
)

func (e *Error) Error() string {
	s := string(e.Code)
	if e.Reason != "" {
		s += " (" + string(e.Reason) + ")"
	}
	if e.Option != "" || e.Value != "" {
		s += fmt.Sprintf(" %s %q", e.Option, e.Value)
	}
	switch {
	case e.Err != nil:
		return s + ": " + e.Err.Error()
	case e.Detail != "":
		return s + ": " + e.Detail
	}
	return s
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

package main

import "time"

// burstWindows answers every send with 429 for `For` out of every `Every`
// (the fault run), counted from an origin.
type burstWindows struct {
	Every, For time.Duration
}

func (b burstWindows) active(origin, now time.Time) bool {
	if b.Every <= 0 || b.For <= 0 || now.Before(origin) {
		return false
	}
	return now.Sub(origin)%b.Every < b.For
}

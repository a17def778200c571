package core_test

import (
	"testing"
	"time"

	_ "time/tzdata" // the tests must not depend on the machine's zoneinfo

	"github.com/imaginebot/imaginebot/core"
)

func TestQuotaDayAndReset(t *testing.T) {
	tests := []struct {
		name      string
		zone      string
		now       string // RFC 3339
		wantDay   string
		wantReset string // RFC 3339 in the zone
	}{
		{"utc", "UTC", "2026-11-22T23:59:59Z", "2026-11-22", "2026-11-23T00:00:00Z"},
		{"shanghai is ahead", "Asia/Shanghai", "2026-11-22T16:00:00Z", "2026-11-23", "2026-11-24T00:00:00+08:00"},
		// New York falls back on 2026-11-01: that day has 25 hours.
		{"dst fall back day", "America/New_York", "2026-11-01T05:30:00Z", "2026-11-01", "2026-11-02T00:00:00-05:00"},
		// Santiago springs forward at midnight on 2026-09-06: 00:00 does not
		// exist, the day starts at 01:00.
		{"midnight skipped", "America/Santiago", "2026-09-05T12:00:00-04:00", "2026-09-05", "2026-09-06T01:00:00-03:00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loc, err := time.LoadLocation(tt.zone)
			if err != nil {
				t.Fatal(err)
			}
			q := core.Quotas{Location: loc}
			now, _ := time.Parse(time.RFC3339, tt.now)
			if got := q.Day(now); got != tt.wantDay {
				t.Errorf("Day = %s, want %s", got, tt.wantDay)
			}
			reset := q.NextReset(now)
			want, _ := time.Parse(time.RFC3339, tt.wantReset)
			if !reset.Equal(want) {
				t.Errorf("NextReset = %s, want %s", reset, want)
			}
			if q.Day(reset) == q.Day(now) || q.Day(reset.Add(-time.Nanosecond)) != q.Day(now) {
				t.Errorf("reset %s is not the first instant of the next day", reset)
			}
		})
	}
}

func TestEffectiveDaily(t *testing.T) {
	five, zero := 5, 0
	q := core.Quotas{DefaultDaily: 10, ScopeDaily: map[string]int{"g": 20}}
	tests := []struct {
		name  string
		acct  core.Account
		scope core.ScopeSettings
		want  int
	}{
		{"default", core.Account{Key: core.AccountKey{Scope: "x"}}, core.ScopeSettings{}, 10},
		{"config scope", core.Account{Key: core.AccountKey{Scope: "g"}}, core.ScopeSettings{}, 20},
		{"moderator scope override", core.Account{Key: core.AccountKey{Scope: "g"}}, core.ScopeSettings{Daily: &five}, 5},
		{"user override beats scope", core.Account{Key: core.AccountKey{Scope: "g"}, Daily: &zero}, core.ScopeSettings{Daily: &five}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := q.EffectiveDaily(tt.acct, tt.scope); got != tt.want {
				t.Fatalf("got %d, want %d", got, tt.want)
			}
		})
	}
}

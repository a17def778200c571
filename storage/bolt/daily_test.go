package bolt_test

import (
	"fmt"
	"testing"
	"time"
	_ "time/tzdata" // the test must not depend on the host's zoneinfo

	"github.com/imaginebot/imaginebot/core"
)

// TestDailyReset checks the daily allowance through the ledger and this
// store in America/Santiago, where DST starts and ends at midnight: on
// 2024-09-08 the clocks jump from 24:00 to 01:00 (midnight never happens) and
// on 2024-04-07 they fall back from 24:00 to 23:00 (day 6 April lasts 25 h).
func TestDailyReset(t *testing.T) {
	loc, err := time.LoadLocation("America/Santiago")
	if err != nil {
		t.Fatal(err)
	}
	utc := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	q := core.Quotas{Location: loc, DefaultDaily: 2}

	type step struct {
		at      time.Time
		op      string // "reserve" (2 units unless units is set), "refund" (the first job)
		units   int
		want    core.Code
		day     string // the job's quota day, for successful reserves
		used    int    // Balance.Used afterwards
		resetAt time.Time
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"usage on one day is not counted on the next", []step{
			{at: time.Date(2025, 3, 10, 10, 0, 0, 0, loc), op: "reserve", day: "2025-03-10", used: 2},
			{at: time.Date(2025, 3, 10, 23, 59, 59, 0, loc), op: "reserve", want: core.CodeQuotaExceeded, used: 2,
				resetAt: time.Date(2025, 3, 11, 0, 0, 0, 0, loc)},
			{at: time.Date(2025, 3, 11, 0, 0, 0, 0, loc), op: "reserve", units: 1, day: "2025-03-11", used: 1},
		}},
		{"spring forward: the day starts at 01:00", []step{
			{at: utc("2024-09-08T03:30:00Z"), op: "reserve", day: "2024-09-07", used: 2}, // 7 Sep 23:30 -04
			{at: utc("2024-09-08T03:59:59Z"), op: "reserve", want: core.CodeQuotaExceeded, used: 2,
				resetAt: utc("2024-09-08T04:00:00Z")},
			{at: utc("2024-09-08T04:00:00Z"), op: "reserve", day: "2024-09-08", used: 2}, // 8 Sep 01:00 -03
		}},
		{"fall back: the repeated hour is still the same day", []step{
			{at: utc("2024-04-07T02:30:00Z"), op: "reserve", day: "2024-04-06", used: 2}, // 6 Apr 23:30 -03
			{at: utc("2024-04-07T03:30:00Z"), op: "reserve", want: core.CodeQuotaExceeded, used: 2, // 23:30 again, -04
				resetAt: utc("2024-04-07T04:00:00Z")},
			{at: utc("2024-04-07T04:00:00Z"), op: "reserve", day: "2024-04-07", used: 2}, // 7 Apr 00:00 -04
		}},
		{"refund in the repeated hour returns the daily part", []step{
			{at: utc("2024-04-07T02:30:00Z"), op: "reserve", day: "2024-04-06", used: 2},
			{at: utc("2024-04-07T03:30:00Z"), op: "refund", used: 0},
			{at: utc("2024-04-07T03:31:00Z"), op: "reserve", day: "2024-04-06", used: 2},
		}},
		{"refund after the spring-forward reset keeps the new day's usage", []step{
			{at: utc("2024-09-08T03:30:00Z"), op: "reserve", day: "2024-09-07", used: 2},
			{at: utc("2024-09-08T04:00:00Z"), op: "reserve", units: 1, day: "2024-09-08", used: 1},
			{at: utc("2024-09-08T04:30:00Z"), op: "refund", used: 1},
			{at: utc("2024-09-08T04:31:00Z"), op: "reserve", units: 1, day: "2024-09-08", used: 2},
			{at: utc("2024-09-08T04:32:00Z"), op: "reserve", units: 1, want: core.CodeQuotaExceeded, used: 2},
		}},
	}
	db := openTemp(t)
	l := core.NewLedger(db, q)
	for ti, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := core.AccountKey{Scope: "telegram:private", User: fmt.Sprint("telegram:", ti)}
			first := ""
			for i, st := range tc.steps {
				var err error
				switch st.op {
				case "reserve":
					units := st.units
					if units == 0 {
						units = 2
					}
					var j core.Job
					j, _, err = l.Reserve(t.Context(), core.Job{Key: fmt.Sprintf("%s-%d", k.User, i), Account: k, Units: units}, st.at)
					if err == nil {
						if j.Day != st.day {
							t.Errorf("step %d: job day %q, want %q", i, j.Day, st.day)
						}
						if first == "" {
							first = j.Key
						}
					}
				case "refund":
					err = l.Refund(t.Context(), first, core.CodeTimeout, st.at)
				}
				if got := core.ErrorCode(err); got != st.want {
					t.Fatalf("step %d (%s at %v): code %q (%v), want %q", i, st.op, st.at.In(loc), got, err, st.want)
				}
				bal, err := l.Balance(t.Context(), k, st.at)
				if err != nil {
					t.Fatal(err)
				}
				if bal.Used != st.used {
					t.Errorf("step %d: used %d, want %d", i, bal.Used, st.used)
				}
				if !st.resetAt.IsZero() && !bal.ResetAt.Equal(st.resetAt) {
					t.Errorf("step %d: resets at %v, want %v", i, bal.ResetAt.In(loc), st.resetAt.In(loc))
				}
			}
		})
	}
}

package bolt_test

import (
	"fmt"
	"testing"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/bolt"
	"github.com/imaginebot/imaginebot/storage/ledgertest"
)

// BenchmarkReserveCommit measures durable (fsync on) Reserve+Commit pairs,
// each on a distinct key, over 64 accounts, by 1 or 64 concurrent clients:
// one transaction per call (naive), group commit (group, the default) and
// bbolt's db.Batch (batch).
func BenchmarkReserveCommit(b *testing.B) {
	modes := []struct {
		name  string
		opts  []bolt.Option
		batch bool
	}{
		{"naive", []bolt.Option{bolt.WithGroupCommit(false)}, false},
		{"group", nil, false},
		{"batch", nil, true},
	}
	for _, m := range modes {
		for _, clients := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/clients=%d", m.name, clients), func(b *testing.B) {
				db := openTemp(b, m.opts...)
				var store core.Store = db
				if m.batch {
					store = bolt.Batched{DB: db}
				}
				ledgertest.BenchPairs(b, store, clients)
				if st := db.GroupStats(); st.Commits > 0 && !m.batch {
					b.ReportMetric(float64(2*b.N)/float64(st.Commits), "updates/commit")
				}
			})
		}
	}
}

// BenchmarkLoneUpdate is one caller's Update after another: group commit
// must not hold a lone caller back (bbolt's db.Batch would wait its 10 ms
// MaxBatchDelay every time), so ns/op is one transaction and one fsync.
func BenchmarkLoneUpdate(b *testing.B) {
	db := openTemp(b)
	i := 0
	for b.Loop() {
		if err := db.Update(b.Context(), putScopeFn(fmt.Sprint("s", i))); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

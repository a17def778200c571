package postgres_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/bolt"
	"github.com/imaginebot/imaginebot/storage/ledgertest"
	"github.com/imaginebot/imaginebot/storage/postgres"
)

// BenchmarkReserveCommit measures durable Reserve+Commit pairs, each on a
// distinct key, over 64 accounts, by 1 or 64 concurrent clients — the shape
// of storage/bolt's benchmark — on bbolt (group commit, fsync on) and on
// PostgreSQL (fsync on, synchronous_commit on, over loopback TCP) in one
// run: row locks at READ COMMITTED (what the package does), and the same
// transactions at SERIALIZABLE for comparison.
func BenchmarkReserveCommit(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) (core.Store, func() int64)
	}{
		{"bolt", func(b *testing.B) (core.Store, func() int64) {
			db, err := bolt.Open(filepath.Join(b.TempDir(), "bench.db"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = db.Close() })
			return db, func() int64 { return 0 }
		}},
		{"postgres", func(b *testing.B) (core.Store, func() int64) {
			db, _ := openDB(b)
			return db, db.Retries
		}},
		{"postgres-serializable", func(b *testing.B) (core.Store, func() int64) {
			db, _ := openDB(b, postgres.WithSerializable())
			return db, db.Retries
		}},
	}
	for _, st := range stores {
		for _, clients := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/clients=%d", st.name, clients), func(b *testing.B) {
				store, retries := st.open(b)
				before := retries()
				ledgertest.BenchPairs(b, store, clients)
				b.ReportMetric(float64(retries()-before)/float64(2*b.N), "retries/update")
			})
		}
	}
}

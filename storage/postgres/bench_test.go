package postgres_test

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/bolt"
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
				benchPairs(b, store, clients)
				b.ReportMetric(float64(retries()-before)/float64(2*b.N), "retries/update")
			})
		}
	}
}

// benchPairs runs b.N Reserve+Commit pairs by clients goroutines over 64
// accounts and reports pairs/s.
func benchPairs(b *testing.B, store core.Store, clients int) {
	const users = 64
	now := time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
	accounts := make([]core.AccountKey, users)
	err := store.Update(b.Context(), func(tx core.Tx) error {
		for i := range accounts {
			accounts[i] = core.AccountKey{Scope: "discord:g1", User: fmt.Sprint("discord:", 1000+i)}
			if err := tx.PutAccount(core.Account{Key: accounts[i], Credits: 1 << 40}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	l := core.NewLedger(store, core.Quotas{DefaultDaily: 5})
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range clients {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				k := accounts[i%users]
				j := core.Job{Key: fmt.Sprint("discord:interaction:", i), Account: k,
					User:  core.User{Platform: core.PlatformDiscord, ID: k.User[len("discord:"):]},
					Model: "flux-schnell", Prompt: "a watercolor fox in the snow", Units: 1, Lang: core.English}
				if _, _, err := l.Reserve(b.Context(), j, now); err != nil {
					b.Error(err)
					return
				}
				if err := l.Commit(b.Context(), j.Key, now); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

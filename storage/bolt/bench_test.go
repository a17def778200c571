package bolt_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/bolt"
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
	const users = 64
	now := time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
	for _, m := range modes {
		for _, clients := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/clients=%d", m.name, clients), func(b *testing.B) {
				db := openTemp(b, m.opts...)
				accounts := make([]core.AccountKey, users)
				err := db.Update(b.Context(), func(tx core.Tx) error {
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
				var store core.Store = db
				if m.batch {
					store = bolt.Batched{DB: db}
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

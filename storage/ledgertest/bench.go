package ledgertest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/core"
)

// BenchPairs runs b.N durable Reserve+Commit pairs, each on a new job key,
// by clients goroutines over 64 accounts of one scope, and reports pairs/s:
// the figure BENCHMARKS.md compares the stores by. The ledger enforces
// per-user limits as the bot's does (a rate and a cap on jobs in flight,
// both set high enough never to refuse), so each pair also reads and
// writes the user's limit record twice.
func BenchPairs(b *testing.B, store core.Store, clients int) {
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
	l := core.NewLedger(store, core.Quotas{DefaultDaily: 5}).Limited(core.UserLimits{Rate: 1e9, Burst: 1 << 30, Jobs: clients + 1})
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

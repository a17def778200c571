package discord

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/discord/discordtest"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// Every interaction is acknowledged with a deferred reply, whatever the
// queue holds: 500 jobs wait behind one that never ends, and 100 more
// arrive at once. The latencies are logged (machines here are shared: the
// figure is reported, not asserted; BenchmarkAckWith500Queued measures it).
func TestAckWith500Queued(t *testing.T) {
	acks := ackLatencies(t, 500, 100)
	slices.Sort(acks)
	t.Logf("ack latency with 500 queued, 100 at once: p50 %s, p99 %s, max %s",
		acks[len(acks)/2], acks[len(acks)*99/100], acks[len(acks)-1])
}

func BenchmarkAckWith500Queued(b *testing.B) {
	var all []time.Duration
	for b.Loop() {
		all = append(all, ackLatencies(b, 500, 50)...)
	}
	slices.Sort(all)
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(all[len(all)-1].Microseconds())/1000, "max-ms")
}

// ackLatencies queues queued jobs behind a hung one, then sends burst more
// at once and returns how long each took to be acknowledged.
func ackLatencies(t testing.TB, queued, burst int) []time.Duration {
	e := newEnv(t, ModeInteractions, func(c *envConfig) {
		c.core.Concurrency, c.core.QueueCap, c.core.PerUserJobs = 1, queued+burst+1, 1
		c.quiet = true
	})
	e.gw.Handle(upstreamtest.Hang())
	user := func(i int) *discordgo.Member { return discordtest.Member(fmt.Sprintf("1610000000%09d", i), "u", 0) }
	for i := range queued + 1 {
		if r := e.send(t, discordtest.Interaction(discordgo.InteractionApplicationCommand, inGuild(user(i), "en-US"),
			discordtest.Command(cmdImagine, discordtest.String(optPrompt, "a fox")))); r.Type != discordgo.InteractionResponseDeferredChannelMessageWithSource {
			t.Fatalf("job %d: ack %d", i, r.Type)
		}
	}
	out := make([]time.Duration, burst)
	var wg sync.WaitGroup
	for i := range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := discordtest.Interaction(discordgo.InteractionApplicationCommand, inGuild(user(queued+1+i), "en-US"),
				discordtest.Command(cmdImagine, discordtest.String(optPrompt, "a fox")))
			start := time.Now()
			r := e.send(t, body)
			out[i] = time.Since(start)
			if r.Type != discordgo.InteractionResponseDeferredChannelMessageWithSource {
				t.Errorf("ack %d", r.Type)
			}
		}()
	}
	wg.Wait()
	return out
}

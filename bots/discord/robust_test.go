package discord

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/jpeg"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/discord/discordtest"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/netproxy/netproxytest"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
)

// A 429 on the result edit is waited out and the edit made again.
func TestRateLimitOnEditHonoured(t *testing.T) {
	e := newEnv(t, ModeInteractions)
	e.dc.FailNext(discordtest.RouteEditOriginal, discordtest.TooManyRequests(0.3, false))
	token, _ := e.imagine(t, inGuild(alice, "en-US"), "a fox")
	res := e.edits(t, token, 1, withFiles)
	var limited time.Time
	for _, c := range e.dc.Calls(discordtest.RouteEditOriginal) {
		if c.Status == 429 {
			limited = c.Time
		}
	}
	if limited.IsZero() {
		t.Fatal("the 429 was not served")
	}
	if gap := res[0].Time.Sub(limited); gap < 250*time.Millisecond {
		t.Fatalf("edited again %s after the 429, which asked for 300ms", gap)
	}
	if e.balance(t, scope, alice).Used != 1 {
		t.Fatal("the delivered picture was not charged")
	}
}

// A panic in a handler is survived: the user gets an apology, and a panic
// while delivering refunds the job.
func TestPanicSurvived(t *testing.T) {
	var where atomic.Value
	where.Store("")
	e := newEnv(t, ModeGateway, func(c *envConfig) {})
	e.bot.panicHook = func(w string) {
		if where.Load() == w {
			where.Store("")
			panic("injected " + w)
		}
	}
	where.Store("interaction")
	r := e.send(t, discordtest.Interaction(discordgo.InteractionApplicationCommand, inGuild(alice, "zh-TW"), discordtest.Command(cmdQuota)))
	if r.Data == nil || !strings.Contains(r.Data.Content, "機器人內部出錯") {
		t.Fatalf("apology: %+v", r.Data)
	}
	where.Store("delivery")
	token, _ := e.imagine(t, inGuild(alice, "en-US"), "a fox")
	e.edits(t, token, 1, withText("Something went wrong on my side"))
	if got := e.balance(t, scope, alice).Used; got != 0 {
		t.Fatalf("used %d after a panicking delivery, want 0 (refunded)", got)
	}
	if !strings.Contains(e.log.String(), "discord: panic") || !strings.Contains(e.log.String(), "goroutine") {
		t.Fatal("the operator got no stack")
	}
	// And the bot goes on.
	token, _ = e.imagine(t, inGuild(alice, "en-US"), "a fox again")
	e.edits(t, token, 1, withFiles)
}

// A job that ends after the interaction token expired is posted in the
// channel, mentioning only the requester.
func TestTokenExpiryFallback(t *testing.T) {
	e := newEnv(t, ModeInteractions)
	release := make(chan struct{})
	e.gw.Push(upstreamtest.Wait(release, upstreamtest.JSON(200, upstreamtest.Completion("![img]("+e.gw.ImageURL("a.png")+")"))))
	e.gw.ServeImage("a.png", "image/png", upstreamtest.PNG(32, 32))
	token, _ := e.imagine(t, inGuild(alice, "en-US"), "slow fox")
	e.edits(t, token, 1, withText("Generating"))
	e.dc.Expire(token)
	close(release)
	post := e.dc.WaitCalls(t, discordtest.RouteChannelPost, 1, wait, nil)[0]
	var m struct {
		Content         string                           `json:"content"`
		AllowedMentions discordgo.MessageAllowedMentions `json:"allowed_mentions"`
		Embeds          []*discordgo.MessageEmbed        `json:"embeds"`
	}
	_ = post.Decode(&m)
	if !strings.HasPrefix(m.Content, "<@"+alice.User.ID+">") || len(m.AllowedMentions.Users) != 1 || m.AllowedMentions.Users[0] != alice.User.ID || len(m.AllowedMentions.Parse) != 0 {
		t.Fatalf("channel post %s", post.JSON)
	}
	if len(post.Files) != 1 || len(m.Embeds) != 1 {
		t.Fatalf("channel post without the picture: %d files", len(post.Files))
	}
	if e.balance(t, scope, alice).Used != 1 {
		t.Fatal("the delivered picture was not charged")
	}
}

// An image over the 10 MiB attachment limit is re-encoded to fit.
func TestOversizeImageReencoded(t *testing.T) {
	e := newEnv(t, ModeInteractions)
	big := upstreamtest.NoisePNG(1900, 1500) // about 11 MiB of noise
	if len(big) < 10<<20 {
		t.Fatalf("test picture is only %d bytes", len(big))
	}
	e.gw.Push(upstreamtest.JSON(200, upstreamtest.Completion("![img]("+e.gw.ImageURL("big.png")+")")))
	e.gw.ServeImage("big.png", "image/png", big)
	token, _ := e.imagine(t, inGuild(alice, "en-US"), "a detailed fox")
	res := e.edits(t, token, 1, withFiles)[0]
	f := res.Files[0]
	if len(f.Data) > DefaultMaxUploadBytes || !strings.HasSuffix(f.Name, ".jpg") {
		t.Fatalf("uploaded %s of %d bytes", f.Name, len(f.Data))
	}
	if _, err := jpeg.Decode(bytes.NewReader(f.Data)); err != nil {
		t.Fatalf("not a JPEG: %v", err)
	}
	t.Logf("%d-byte PNG re-encoded to a %d-byte JPEG", len(big), len(f.Data))
}

// Progress edits of different interactions go out in parallel: discordgo
// would hold one bucket mutex for every text-only webhook edit.
func TestParallelEdits(t *testing.T) {
	const jobs = 64
	e := newEnv(t, ModeInteractions, func(c *envConfig) {
		c.core.Concurrency, c.core.QueueCap, c.core.PerUserJobs = jobs, jobs, jobs
	})
	e.dc.SetLatency(discordtest.RouteEditOriginal, 200*time.Millisecond)
	release := make(chan struct{})
	e.gw.Handle(upstreamtest.Wait(release, upstreamtest.JSON(200, upstreamtest.Completion("![img]("+e.gw.ImageURL("a.png")+")"))))
	e.gw.ServeImage("a.png", "image/png", upstreamtest.PNG(16, 16))
	var wg sync.WaitGroup
	for i := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := discordtest.Member(fmt.Sprintf("16000000000001%05d", i), "u", 0)
			e.imagine(t, inGuild(u, "en-US"), "a fox")
		}()
	}
	wg.Wait()
	e.dc.WaitCalls(t, discordtest.RouteEditOriginal, jobs, 10*time.Second, withText("Generating"))
	close(release)
	e.dc.WaitCalls(t, discordtest.RouteEditOriginal, jobs, 20*time.Second, withFiles)
	peak := e.dc.PeakInFlight(discordtest.RouteEditOriginal)
	t.Logf("%d jobs, edits with 200 ms latency: %d in flight at once at most", jobs, peak)
	if peak < jobs/4 {
		t.Fatalf("at most %d edits in flight at once: they queue behind each other", peak)
	}
}

// 10,000 interactions leave no per-interaction state behind: each has its
// own token, which discordgo would keep a rate-limit bucket for forever.
// Half are /imagine (refused by the quota after building the job's
// reporter and status), half /quota.
func TestMemoryOverManyInteractions(t *testing.T) {
	e := newEnv(t, ModeInteractions, func(c *envConfig) { c.core.Quotas.DefaultDaily, c.quiet = 0, true })
	h := e.bot.InteractionsHandler(t.Context())
	run := func(n int) {
		for i := range n {
			data := discordtest.Command(cmdQuota)
			if i%2 == 0 {
				data = discordtest.Command(cmdImagine, discordtest.String(optPrompt, "a fox"))
			}
			body := discordtest.Interaction(discordgo.InteractionApplicationCommand, inGuild(alice, "en-US"), data)
			rec := newRecorder()
			h.ServeHTTP(rec, e.signer.Request("http://bot/discord/interactions", body, time.Now()))
			if rec.code != 200 {
				t.Fatalf("answered %d", rec.code)
			}
		}
	}
	run(500) // warm up
	before := heap()
	run(10_000)
	after := heap()
	t.Logf("heap before %d KiB, after 10,000 interactions %d KiB", before>>10, after>>10)
	if after > before+1<<20 {
		t.Fatalf("heap grew by %d KiB over 10,000 interactions", (after-before)>>10)
	}
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// A picture that cannot fit even re-encoded is not handed out as a link to
// the gateway's private address: the job fails and is refunded.
func TestNoPrivateLinkFallback(t *testing.T) {
	e := newEnv(t, ModeInteractions, func(c *envConfig) {
		c.discord.MaxUploadBytes = 300
		c.discord.PrivateHosts = []string{"127.0.0.1"}
	})
	e.gw.Push(upstreamtest.JSON(200, upstreamtest.Completion("![img]("+e.gw.ImageURL("n.png")+")")))
	e.gw.ServeImage("n.png", "image/png", upstreamtest.NoisePNG(256, 256))
	token, _ := e.imagine(t, inGuild(alice, "en-US"), "a noisy fox")
	e.edits(t, token, 1, withText("couldn't send it here"))
	for _, c := range e.dc.Calls("") {
		if strings.Contains(string(c.JSON), "127.0.0.1") {
			t.Fatalf("the private address was sent: %s", c.JSON)
		}
	}
	if e.balance(t, scope, alice).Used != 0 {
		t.Fatal("not refunded")
	}
}

// A boosted server's bigger attachment limit, which Discord puts in the
// interaction, is used: the 11 MiB picture goes as it is (gateway mode, the
// raw event path).
func TestBoostedServerUploadLimit(t *testing.T) {
	e := newEnv(t, ModeGateway)
	big := upstreamtest.NoisePNG(1900, 1500)
	e.gw.Push(upstreamtest.JSON(200, upstreamtest.Completion("![img]("+e.gw.ImageURL("big.png")+")")))
	e.gw.ServeImage("big.png", "image/png", big)
	var m map[string]any
	_ = json.Unmarshal(discordtest.Interaction(discordgo.InteractionApplicationCommand, inGuild(alice, "en-US"),
		discordtest.Command(cmdImagine, discordtest.String(optPrompt, "a detailed fox"))), &m)
	m["attachment_size_limit"] = 50 << 20
	body, _ := json.Marshal(m)
	_, token := discordtest.Fields(body)
	e.send(t, body)
	f := e.edits(t, token, 1, withFiles)[0].Files[0]
	if len(f.Data) != len(big) || !strings.HasSuffix(f.Name, ".png") {
		t.Fatalf("uploaded %s of %d bytes, want the %d-byte PNG", f.Name, len(f.Data), len(big))
	}
}

// In gateway mode the REST calls and the websocket both go through the
// proxy WithProxy names, with its credentials.
func TestBotThroughProxy(t *testing.T) {
	netproxytest.WithSchemes(t, func(t *testing.T, p *netproxytest.Proxy) {
		e := newEnv(t, ModeGateway, func(c *envConfig) { c.opts = append(c.opts, WithProxy(p.URL)) })
		token, _ := e.imagine(t, discordtest.Guild(guildID, alice, "en-US"), "a red fox")
		e.edits(t, token, 1, withFiles)
		websocket, rest := false, false
		for _, r := range p.AskedWithAuth(t, strings.TrimPrefix(e.dc.URL, "http://")) {
			websocket = websocket || strings.HasPrefix(r.First, "GET /gateway")
			rest = rest || strings.Contains(r.Path, "/callback") || strings.Contains(r.First, "/callback")
		}
		if !websocket {
			t.Fatal("the gateway's websocket did not go through the proxy")
		}
		if p.URL.Scheme == "http" && !rest {
			t.Fatal("the interaction's answer did not go through the proxy")
		}
	})
}

// Gateway shards: with shards auto the bot asks Discord for the count,
// opens only the shards listed for this process, max_concurrency at a
// time, each identifying as its shard; an interaction on any of them is
// answered; the bot is ready once all are up.
func TestGatewayShards(t *testing.T) {
	old := identifyEvery
	identifyEvery = 50 * time.Millisecond
	defer func() { identifyEvery = old }()
	e := newEnv(t, ModeGateway, func(c *envConfig) {
		c.discord.Shards, c.discord.ShardIDs = ShardsAuto, []int{0, 2, 3}
		c.dcOpts = append(c.dcOpts, discordtest.WithShards(4, 2))
	})
	got := map[string]bool{}
	for range 3 {
		select {
		case raw := <-e.dc.Identified():
			var id struct {
				Shard   []int `json:"shard"`
				Intents int   `json:"intents"`
			}
			_ = json.Unmarshal(raw, &id)
			got[fmt.Sprint(id.Shard)] = true
			if id.Intents != 0 {
				t.Errorf("identified with intents %d, want none", id.Intents)
			}
		case <-time.After(wait):
			t.Fatalf("identified: %v", got)
		}
	}
	for _, want := range []string{"[0 4]", "[2 4]", "[3 4]"} {
		if !got[want] {
			t.Fatalf("shards identified %v, want %s", got, want)
		}
	}
	body := discordtest.Interaction(discordgo.InteractionApplicationCommand, inGuild(alice, "en-US"), discordtest.Command(cmdImagine, discordtest.String(optPrompt, "a fox on shard 3")))
	_, token := discordtest.Fields(body)
	if !e.dc.DispatchShard(3, "INTERACTION_CREATE", body) {
		t.Fatal("no client on shard 3")
	}
	e.edits(t, token, 1, withFiles)
	if e.dc.DispatchShard(1, "INTERACTION_CREATE", body) {
		t.Fatal("shard 1 is not this process's, yet it is connected")
	}
}

// An image attachment on /imagine starts from that picture; a model that
// takes none, a file that is not a picture and one over the limit are
// refused, only to the asker, before anything is charged.
func TestPictureInput(t *testing.T) {
	e := newEnv(t, ModeInteractions, func(c *envConfig) {
		c.core.Models = append(c.core.Models, core.Model{Name: "editor", Label: "Editor", API: core.APIImages, AcceptsImage: true},
			core.Model{Name: "vision", Label: "Vision", AcceptsImage: true})
		c.discord.MaxInputBytes = 64 << 10
	})
	photo := upstreamtest.PNG(32, 32)
	cat := e.dc.AddAttachment("cat.png", photo)
	words := e.dc.AddAttachment("words.png", []byte("not a picture at all, just words"))
	imagine := func(model string, url string, size int) (string, *discordgo.InteractionResponse) {
		cmd := discordtest.WithAttachment(discordtest.Command(cmdImagine, discordtest.String(optPrompt, "make it blue"), discordtest.String(optModel, model)), optImage, url, size, "image/png")
		body := discordtest.Interaction(discordgo.InteractionApplicationCommand, inGuild(alice, "en-US"), cmd)
		_, token := discordtest.Fields(body)
		return token, e.send(t, body)
	}
	e.gw.Push(upstreamtest.JSON(200, upstreamtest.Images(upstreamtest.B64Image(upstreamtest.PNG(8, 8), ""))))
	token, _ := imagine("editor", cat, len(photo))
	e.edits(t, token, 1, withFiles)
	if edit := e.gw.Requests()[0]; !strings.HasSuffix(edit.Path, "/v1/images/edits") || edit.Part("image") == nil {
		t.Fatalf("images request %s without the picture", edit.Path)
	}
	token, _ = imagine("vision", cat, len(photo)) // a chat model: an image part
	e.edits(t, token, 1, withFiles)
	if msgs := e.gw.Requests()[1].Messages; len(msgs[len(msgs)-1].Images) != 1 {
		t.Fatalf("chat request without the picture: %+v", msgs)
	}
	used := e.balance(t, scope, alice).Used
	for _, c := range []struct {
		model, url string
		size       int
		want       string
	}{
		{"stable-diffusion", cat, len(photo), "does not take a picture"},
		{"editor", words, 32, "I can only start from a picture"},
		{"editor", cat, 1 << 20, "That picture is too large"},
	} {
		if _, r := imagine(c.model, c.url, c.size); r.Data == nil || r.Data.Flags&discordgo.MessageFlagsEphemeral == 0 || !strings.Contains(r.Data.Content, c.want) {
			t.Errorf("%s: %+v", c.want, r.Data)
		}
	}
	if got := e.balance(t, scope, alice).Used; got != used || len(e.gw.Requests()) != 2 {
		t.Fatalf("refused pictures were charged (%d→%d) or sent", used, got)
	}
}

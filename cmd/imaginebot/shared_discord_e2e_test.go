package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/discord/discordtest"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/upstream/upstreamtest"
	"github.com/imaginebot/imaginebot/storage/ledgertest"
	"github.com/imaginebot/imaginebot/storage/postgres/pgtest"
)

// TestSharedLedgerDiscordInteractions runs two real `imaginebot run`
// processes on one PostgreSQL ledger, both serving Discord's HTTP
// interactions, against one fake Discord REST API and one fake gateway,
// and posts the signed interactions to their endpoints itself (what a load
// balancer in front of them would do).
//
// Each interaction is answered in the HTTP response: a deferred reply when
// a job was taken (the job then edits @original with its progress and the
// picture, through the interaction webhook), or a reply only its sender
// sees when it was refused (bots/discord runJob).

// What the bot answers on Discord, in English (bots/catalog/locales/en.yaml).
const (
	textDuplicate  = "This request was already handled." // error.duplicate
	textCancelling = "✖ Cancelling…"                     // button.cancelling
)

const (
	sharedGuild            = "1500000000000000077"
	sharedInteractionsPath = "/discord/interactions" // discord.interactions_path's default
)

// discordWorld is a sharedWorld (one ledger, its own database, one fake
// gateway) whose instances serve Discord interactions against one fake
// Discord REST API.
type discordWorld struct {
	*sharedWorld
	dc     *discordtest.Server
	signer *discordtest.Signer
}

func newDiscordWorld(t *testing.T, pg *pgtest.Server, daily int, limits string) *discordWorld {
	t.Helper()
	w := &sharedWorld{bin: builtBinary(t), gw: upstreamtest.New(t), daily: daily}
	w.gw.RequireKey("sk-e2e")
	// Discord's 50 requests a second for the bot token: a job must not
	// need any (its replies go through the interaction webhook).
	dc := discordtest.New(t, discordtest.WithRateLimits())
	signer := discordtest.NewSigner()
	w.env = map[string]string{
		"IMAGINEBOT_UPSTREAM_API_KEY":       "sk-e2e",
		"IMAGINEBOT_DISCORD_TOKEN":          discordtest.Token,
		"IMAGINEBOT_DISCORD_APPLICATION_ID": discordtest.AppID,
		"IMAGINEBOT_DISCORD_PUBLIC_KEY":     signer.PublicKey(),
		"IMAGINEBOT_DISCORD_API_BASE_URL":   dc.URL,
		"IMAGINEBOT_DATABASE_URL":           pg.Database(t),
	}
	w.cfg = gatewayConfig(t, w.gw, fmt.Sprintf("quotas:\n  daily: %d\nstorage:\n  driver: postgres\nlimits:\n%s"+
		"discord:\n  mode: interactions\n  guilds: [%q]\n", daily, limits, sharedGuild))
	tr := &http.Transport{MaxIdleConnsPerHost: 128}
	w.client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return &discordWorld{sharedWorld: w, dc: dc, signer: signer}
}

// discordMembers are n members of the guild, without permissions.
func discordMembers(first int64, n int) []*discordgo.Member {
	ms := make([]*discordgo.Member, n)
	for i := range ms {
		id := strconv.FormatInt(first+int64(i), 10)
		ms[i] = discordtest.Member(id, "member"+id, 0)
	}
	return ms
}

func guildAccount(m *discordgo.Member) core.AccountKey {
	return core.AccountKey{Scope: "discord:guild:" + sharedGuild, User: "discord:" + m.User.ID}
}

// imagine is a fresh /imagine interaction from m (own id and token).
func imagine(m *discordgo.Member, n int) []byte {
	return discordtest.Interaction(discordgo.InteractionApplicationCommand, discordtest.Guild(sharedGuild, m, "en-US"),
		discordtest.Command("imagine", discordtest.String("prompt", fmt.Sprintf("a red fox in the snow, take %d", n))))
}

// interaction is one signed interaction for one instance's endpoint.
type interaction struct {
	to   *instance
	body []byte
}

// answer is what an instance answered an interaction over HTTP.
type answer struct {
	to        *instance
	id, token string
	status    int
	raw       string
	resp      discordgo.InteractionResponse
}

func (a answer) deferred() bool {
	return a.status == http.StatusOK && a.resp.Type == discordgo.InteractionResponseDeferredChannelMessageWithSource
}

// ephemeral reports whether a is a reply only its sender sees, and its text.
func (a answer) ephemeral() (string, bool) {
	if a.status != http.StatusOK || a.resp.Type != discordgo.InteractionResponseChannelMessageWithSource ||
		a.resp.Data == nil || a.resp.Data.Flags&discordgo.MessageFlagsEphemeral == 0 {
		return "", false
	}
	return a.resp.Data.Content, true
}

func (a answer) String() string {
	return fmt.Sprintf("interaction %s to %s: HTTP %d %s", a.id, a.to.name, a.status, strings.TrimSpace(a.raw))
}

func (w *discordWorld) interact(in interaction) (answer, error) {
	a := answer{to: in.to}
	a.id, a.token = discordtest.Fields(in.body)
	req := w.signer.Request("http://"+in.to.addr+sharedInteractionsPath, in.body, time.Now())
	resp, err := w.client.Do(req)
	if err != nil {
		return a, fmt.Errorf("interaction %s to %s: %v", a.id, in.to.name, err)
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return a, fmt.Errorf("interaction %s to %s: reading the answer: %v", a.id, in.to.name, err)
	}
	a.status, a.raw = resp.StatusCode, string(data)
	if a.status == http.StatusOK {
		if err := json.Unmarshal(data, &a.resp); err != nil {
			return a, fmt.Errorf("interaction %s to %s: answer %q: %v", a.id, in.to.name, data, err)
		}
	}
	return a, nil
}

// interactAll posts every batch, senders batches at a time; the
// interactions of one batch leave at the same instant (one interaction to
// both instances). The answers are in the batches' order.
func (w *discordWorld) interactAll(t *testing.T, batches [][]interaction, senders int) [][]answer {
	t.Helper()
	out := make([][]answer, len(batches))
	work := make(chan int)
	var mu sync.Mutex
	var errs []string
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			for n := range work {
				batch := batches[n]
				answers := make([]answer, len(batch))
				start := make(chan struct{})
				var bw sync.WaitGroup
				for k, in := range batch {
					bw.Go(func() {
						<-start
						a, err := w.interact(in)
						answers[k] = a
						if err != nil {
							mu.Lock()
							errs = append(errs, err.Error())
							mu.Unlock()
						}
					})
				}
				close(start)
				bw.Wait()
				out[n] = answers
			}
		})
	}
	for n := range batches {
		work <- n
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d interaction posts failed, e.g. %s", len(errs), strings.Join(errs[:min(5, len(errs))], "; "))
	}
	return out
}

// tokenOf is the interaction token of a webhook call
// (/webhooks/:app/:token/…).
func tokenOf(c discordtest.Call) string {
	parts := strings.Split(strings.Trim(c.Path, "/"), "/")
	if len(parts) < 3 {
		return ""
	}
	return parts[2]
}

// edit is the part of an @original edit the tests read.
type edit struct {
	Content    *string `json:"content"`
	Components []struct {
		Components []struct {
			CustomID string `json:"custom_id"`
		} `json:"components"`
	} `json:"components"`
}

func decodeEdit(c discordtest.Call) edit {
	var e edit
	_ = c.Decode(&e)
	return e
}

// customIDs are the ids of an edit's buttons.
func (e edit) customIDs() []string {
	var ids []string
	for _, row := range e.Components {
		for _, b := range row.Components {
			ids = append(ids, b.CustomID)
		}
	}
	return ids
}

// editsOf are the successful @original edits, by interaction token.
func (w *discordWorld) editsOf() map[string][]discordtest.Call {
	m := map[string][]discordtest.Call{}
	for _, c := range w.dc.Calls(discordtest.RouteEditOriginal) {
		if c.Status == http.StatusOK {
			m[tokenOf(c)] = append(m[tokenOf(c)], c)
		}
	}
	return m
}

// results counts the pictures delivered: @original edits with a file
// attached, answered 200, by interaction token.
func (w *discordWorld) results() (total int, byToken map[string]int) {
	byToken = map[string]int{}
	for token, cs := range w.editsOf() {
		for _, c := range cs {
			if len(c.Files) > 0 {
				total++
				byToken[token]++
			}
		}
	}
	return total, byToken
}

func (w *discordWorld) remainingOf(t *testing.T, m *discordgo.Member) int {
	t.Helper()
	bal, err := w.ledger.Balance(t.Context(), guildAccount(m), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return bal.Remaining()
}

// checkAccount checks that no unit of m's was lost or invented, and that
// committed units were charged.
func (w *discordWorld) checkAccount(t *testing.T, m *discordgo.Member, committed int) {
	t.Helper()
	got, err := ledgertest.Invariant(t.Context(), w.db, w.ledger, guildAccount(m), w.daily, 0, time.Now())
	if err != nil {
		t.Errorf("ledger invariant of member %s: %v", m.User.ID, err)
		return
	}
	if got.Committed != committed || got.Pending != 0 {
		t.Errorf("member %s's jobs: %d units committed, %d pending; want %d committed, 0 pending", m.User.ID, got.Committed, got.Pending, committed)
	}
}

// reservedBy counts the "job reserved" log lines of an interaction's job in
// an instance's log.
func reservedBy(in *instance, id string) int {
	n := 0
	for _, line := range strings.Split(in.logs.String(), "\n") {
		if strings.Contains(line, `msg="job reserved"`) && strings.Contains(line, "job=discord:interaction:"+id+" ") {
			n++
		}
	}
	return n
}

// checkNoBotTokenLoad checks that the jobs cost nothing of the bot token's
// 50 requests a second: no 429, no channel posts (the fallback when an
// interaction token no longer works).
func (w *discordWorld) checkNoBotTokenLoad(t *testing.T) {
	t.Helper()
	if n := w.dc.Refused429(); n != 0 {
		t.Errorf("the fake Discord API refused %d bot-token calls as over 50 a second", n)
	}
	if n := len(w.dc.Calls(discordtest.RouteChannelPost)); n != 0 {
		t.Errorf("%d channel messages posted, want none (every reply goes through its interaction's webhook)", n)
	}
}

func TestSharedLedgerDiscordInteractions(t *testing.T) {
	pg := sharedPostgres(t)

	// 300 /imagine at once, 32 in flight, alternating between the
	// instances, from 20 members with 10 images each: exactly 200 are taken
	// (a deferred reply, then the picture in it) and 100 refused as out of
	// quota (in the HTTP answer, only for the sender), every balance 0.
	t.Run("interactions split across both instances", func(t *testing.T) {
		const (
			members  = 20
			daily    = 10
			requests = 300
			senders  = 32
			perUser  = requests / members
			charged  = members * daily
		)
		w := newDiscordWorld(t, pg, daily, limitsLines)
		a, b := w.start(t, "A"), w.start(t, "B")
		ms := discordMembers(1600000000000001001, members)
		var batches [][]interaction
		for i := range requests {
			// A member's k-th interaction goes to A when k is even, B when odd.
			batches = append(batches, []interaction{{[]*instance{a, b}[(i/members)%2], imagine(ms[i%members], i)}})
		}

		began := time.Now()
		answers := w.interactAll(t, batches, senders)
		posted := time.Since(began)
		var took, refused []answer
		byInstance := map[string]int{}
		var odd []string
		for n, as := range answers {
			ans := as[0]
			text, eph := ans.ephemeral()
			switch {
			case ans.deferred():
				took = append(took, ans)
				byInstance[ans.to.name]++
			case eph && strings.Contains(text, textQuotaExhausted):
				refused = append(refused, ans)
			default:
				odd = append(odd, fmt.Sprintf("#%d %s", n, ans))
			}
		}
		if len(odd) > 0 {
			t.Errorf("%d interactions answered neither with a deferred reply nor an out-of-quota refusal, e.g. %s",
				len(odd), strings.Join(odd[:min(5, len(odd))], "; "))
		}
		if len(took) != charged || len(refused) != requests-charged {
			t.Errorf("%d interactions taken (deferred) and %d refused as out of quota, want exactly %d and %d",
				len(took), len(refused), charged, requests-charged)
		}
		if byInstance["A"] == 0 || byInstance["B"] == 0 {
			t.Errorf("jobs taken by instance: %v; want both to have taken some", byInstance)
		}

		delivered := 0
		if !waitUntil(time.Minute, 100*time.Millisecond, func() bool {
			delivered, _ = w.results()
			return delivered >= len(took) && w.pending(t) == 0
		}) {
			t.Fatalf("after 1m %d of %d pictures delivered, %d jobs pending\n%s", delivered, len(took), w.pending(t), logsOf(a, b))
		}
		wall := time.Since(began)
		t.Logf("phase 1: %d interactions from %d members over 2 instances, %d senders: all answered in %s, all delivered in %s (%.0f interactions/s); jobs taken: %v",
			requests, members, senders, posted.Round(time.Millisecond), wall.Round(time.Millisecond), requests/wall.Seconds(), byInstance)

		// Stopped, the instances have settled everything: the counts are final.
		a.stop(t)
		b.stop(t)
		delivered, byToken := w.results()
		if delivered != charged {
			t.Errorf("%d pictures delivered, want exactly %d (%d members × %d)", delivered, charged, members, daily)
		}
		for _, ans := range took {
			if n := byToken[ans.token]; n != 1 {
				t.Errorf("interaction %s (deferred by %s) got %d pictures, want 1", ans.id, ans.to.name, n)
			}
		}
		edits := w.editsOf()
		for _, ans := range refused {
			if n := len(edits[ans.token]); n != 0 {
				t.Errorf("interaction %s, refused by %s, had its reply edited %d times: a refusal is only the HTTP answer", ans.id, ans.to.name, n)
			}
		}
		if n := w.gw.Calls(); n != charged {
			t.Errorf("the gateway was asked %d times, want exactly %d", n, charged)
		}
		w.checkNoBotTokenLoad(t)
		for i, m := range ms {
			taken, refusedN := 0, 0
			for n := i; n < requests; n += members {
				ans := answers[n][0]
				if ans.deferred() {
					taken++
				} else if text, eph := ans.ephemeral(); eph && strings.Contains(text, textQuotaExhausted) {
					refusedN++
				}
			}
			if taken != daily || refusedN != perUser-daily {
				t.Errorf("member %s: %d interactions taken and %d refused as out of quota, want %d and %d", m.User.ID, taken, refusedN, daily, perUser-daily)
			}
			if got := w.remainingOf(t, m); got != 0 {
				t.Errorf("member %s has %d left, want 0", m.User.ID, got)
			}
			w.checkAccount(t, m, daily)
		}
	})

	// The same interaction (same id, same token) posted to both instances
	// at the same instant is one job: charged and delivered once; the other
	// instance's answer is the duplicate refusal, and it starts nothing.
	t.Run("the same interaction delivered to both", func(t *testing.T) {
		const (
			members = 10
			perUser = 3
			daily   = 10
			total   = members * perUser
		)
		w := newDiscordWorld(t, pg, daily, limitsLines)
		a, b := w.start(t, "A"), w.start(t, "B")
		ms := discordMembers(1600000000000002001, members)
		var batches [][]interaction
		for i := range total {
			body := imagine(ms[i%members], i)
			batches = append(batches, []interaction{{a, body}, {b, body}})
		}
		answers := w.interactAll(t, batches, 8)
		owner := map[string]*instance{} // interaction id → the instance that took it
		for _, pair := range answers {
			var deferred, dup []answer
			for _, ans := range pair {
				if ans.deferred() {
					deferred = append(deferred, ans)
				} else if text, eph := ans.ephemeral(); eph && text == textDuplicate {
					dup = append(dup, ans)
				}
			}
			if len(deferred) != 1 || len(dup) != 1 {
				t.Errorf("interaction %s posted to both: answers %s | %s; want one deferred reply and one %q only for the sender",
					pair[0].id, pair[0], pair[1], textDuplicate)
				continue
			}
			owner[pair[0].id] = deferred[0].to
		}

		delivered := 0
		if !waitUntil(time.Minute, 100*time.Millisecond, func() bool {
			delivered, _ = w.results()
			return delivered >= total && w.pending(t) == 0
		}) {
			t.Fatalf("after 1m %d of %d interactions delivered, %d jobs pending\n%s", delivered, total, w.pending(t), logsOf(a, b))
		}
		a.stop(t)
		b.stop(t)
		delivered, byToken := w.results()
		if delivered != total {
			t.Errorf("%d pictures delivered for %d interactions, want one each", delivered, total)
		}
		for _, pair := range answers {
			id, token := pair[0].id, pair[0].token
			if n := byToken[token]; n != 1 {
				t.Errorf("interaction %s got %d pictures, want 1", id, n)
			}
			// The job is reserved once, by the instance that deferred.
			ra, rb := reservedBy(a, id), reservedBy(b, id)
			if ra+rb != 1 {
				t.Errorf("interaction %s's job reserved %d times on A and %d on B, want once in all", id, ra, rb)
			} else if o := owner[id]; o != nil && reservedBy(o, id) != 1 {
				t.Errorf("interaction %s: %s answered with the deferred reply but the job was reserved by the other instance", id, o.name)
			}
		}
		if n := w.gw.Calls(); n != total {
			t.Errorf("the gateway was asked %d times for %d interactions, want once each", n, total)
		}
		w.checkNoBotTokenLoad(t)
		spent := 0
		for _, m := range ms {
			left := w.remainingOf(t, m)
			spent += daily - left
			if left != daily-perUser {
				t.Errorf("member %s has %d left, want %d (%d charged once each)", m.User.ID, left, daily-perUser, perUser)
			}
			w.checkAccount(t, m, perUser)
		}
		if spent != total {
			t.Errorf("%d units spent in all for %d interactions, want exactly %d", spent, total, total)
		}
	})

	// The ✖ under a job's reply pressed into the instance not running the
	// job: that instance answers "Cancelling…" and passes it on through
	// the ledger; the owner stops the job, turns the reply into the refund
	// notice, and sends no picture.
	t.Run("cancel pressed into the other instance", func(t *testing.T) {
		const daily = 5
		w := newDiscordWorld(t, pg, daily, limitsLines)
		release := make(chan struct{})
		released := sync.OnceFunc(func() { close(release) })
		defer released()
		w.gw.Handle(upstreamtest.Wait(release, upstreamtest.JSON(200, upstreamtest.Completion("![img]("+w.gw.ImageURL("a.png")+")"))))
		a, b := w.start(t, "A"), w.start(t, "B")
		dana := discordtest.Member("1600000000000003001", "dana", 0)

		job := w.interactAll(t, [][]interaction{{{a, imagine(dana, 0)}}}, 1)[0][0]
		if !job.deferred() {
			t.Fatalf("A answered the /imagine with %s, want a deferred reply\n%s", job, logsOf(a, b))
		}
		// A's reply showing the job's progress, with its ✖.
		cancelID := ""
		if !waitUntil(30*time.Second, 50*time.Millisecond, func() bool {
			for _, c := range w.editsOf()[job.token] {
				for _, id := range decodeEdit(c).customIDs() {
					if strings.HasPrefix(id, "cx:") {
						cancelID = id
					}
				}
			}
			return cancelID != "" && w.gw.Calls() == 1
		}) {
			t.Fatalf("no reply edit with a cancel button (%q), or the job did not reach the gateway (%d calls)\n%s",
				cancelID, w.gw.Calls(), logsOf(a, b))
		}
		if want := "cx:discord:interaction:" + job.id; cancelID != want {
			t.Errorf("the cancel button's custom id is %q, want %q", cancelID, want)
		}

		press := discordtest.Interaction(discordgo.InteractionMessageComponent, discordtest.Guild(sharedGuild, dana, "en-US"),
			discordtest.Button(cancelID))
		ack := w.interactAll(t, [][]interaction{{{b, press}}}, 1)[0][0]
		if text, eph := ack.ephemeral(); !eph || text != textCancelling {
			t.Errorf("B answered the ✖ with %s, want %q only for the presser", ack, textCancelling)
		}
		cancelled := func() bool {
			for _, c := range w.editsOf()[job.token] {
				if e := decodeEdit(c); e.Content != nil && *e.Content == textCancelled && len(e.customIDs()) == 0 {
					return true
				}
			}
			return false
		}
		if !waitUntil(30*time.Second, 50*time.Millisecond, cancelled) {
			t.Fatalf("the job running on A was not cancelled by the press on B: its reply never became %q (without buttons)\n%s",
				textCancelled, logsOf(a, b))
		}
		released()
		a.stop(t)
		b.stop(t)
		if n, _ := w.results(); n != 0 {
			t.Errorf("%d pictures sent for a cancelled job", n)
		}
		if n := w.gw.Calls(); n != 1 {
			t.Errorf("the gateway was asked %d times, want once (the cancelled job, not run again)", n)
		}
		if n := reservedBy(b, job.id); n != 0 {
			t.Errorf("B reserved the job %d times; it only passed the cancel on", n)
		}
		if n := w.pending(t); n != 0 {
			t.Errorf("%d jobs left pending", n)
		}
		if got := w.remainingOf(t, dana); got != daily {
			t.Errorf("dana has %d left, want %d: a cancelled job is refunded", got, daily)
		}
		w.checkAccount(t, dana, 0)
		w.checkNoBotTokenLoad(t)
	})
}

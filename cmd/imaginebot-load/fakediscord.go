package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/discord/discordtest"
)

// Identities on Discord: one guild, each user a member of it, with
// snowflake-sized ids.
const (
	discordGuild           = "1500000000000000001"
	discordFirstUser int64 = 1600000000000000001
	discordHeavyUser int64 = 1599999999999999999
	discordLocale          = "en-US"
	// ackDeadline is Discord's: an interaction not answered by then shows
	// "The application did not respond", whatever the bot does after.
	ackDeadline = 3 * time.Second
)

// discordConfig is how the fake Discord behaves.
type discordConfig struct {
	Limits  bool          // Discord's 50 requests a second per bot token
	Latency time.Duration // before every REST answer
	Conns   int           // users posting at once, for the client's connection pool
	// Instances is how many bots serve the interactions, each on its own
	// http.listen; the platform spreads the POSTs over them (1: the one bot).
	Instances int
}

// discordPlatform is the harness's Discord: discordtest's fake REST API
// (reached through discord.api_base_url) for what the bot sends, and signed
// HTTP interactions POSTed to the bot's http.listen for what users send,
// one goroutine each, as Discord's own servers do. With several instances
// it is also their load balancer: each POST goes to the next instance in
// rotation, round-robin, and an instance taken out of rotation (Down) gets
// none until it is put back (Up).
type discordPlatform struct {
	cfg     discordConfig
	srv     *discordtest.Server
	signer  *discordtest.Signer
	listens []string // each instance's http.listen
	client  *http.Client
	posts   sync.WaitGroup

	mu        sync.Mutex
	drained   *sync.Cond // on mu: an instance's POSTs in flight went down
	up        []bool     // in rotation, by instance
	next      int        // the instance the rotation tries first
	inFlight  []int      // POSTs sent to an instance and not answered yet
	routed    []int      // POSTs sent to each instance
	byToken   map[string]*interaction
	byUser    map[string][]*interaction // for channel posts, which carry no token
	routes    map[string]*methodStats
	answered  int
	lastSend  time.Time
	uploaded  int64
	unmatched int
}

// interaction is one /imagine and what came of it.
type interaction struct {
	user     string
	instance int       // the one its POST went to
	sent     time.Time // the POST left
	acked    time.Time // its answer was read
	// The POST's answer: HTTP status (0: none), the response type and
	// flags, or why there was none.
	status     int
	ackType    discordgo.InteractionResponseType
	ackFlags   discordgo.MessageFlags
	ackErr     string
	deliveries []time.Time
	links      int
	texts      []timedText
	answered   bool
}

func newDiscord(cfg discordConfig) (*discordPlatform, error) {
	cfg.Instances = max(cfg.Instances, 1)
	var listens []string
	for len(listens) < cfg.Instances {
		listen, err := freeAddr()
		if err != nil {
			return nil, fmt.Errorf("discord: %w", err)
		}
		if !slices.Contains(listens, listen) {
			listens = append(listens, listen)
		}
	}
	d := &discordPlatform{
		cfg:      cfg,
		signer:   discordtest.NewSigner(),
		listens:  listens,
		up:       slices.Repeat([]bool{true}, cfg.Instances),
		inFlight: make([]int, cfg.Instances),
		routed:   make([]int, cfg.Instances),
		// Discord keeps connections to an endpoint open; so does this
		// client, one per user posting at once, or the ack latency would
		// be mostly TCP handshakes.
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxIdleConns: cfg.Conns, MaxIdleConnsPerHost: cfg.Conns, IdleConnTimeout: time.Minute}},
		byToken: map[string]*interaction{},
		byUser:  map[string][]*interaction{},
		routes:  map[string]*methodStats{},
	}
	d.drained = sync.NewCond(&d.mu)
	opts := []discordtest.Option{discordtest.OnCall(d.observe)}
	if cfg.Limits {
		opts = append(opts, discordtest.WithRateLimits())
	}
	d.srv = discordtest.NewServer(opts...)
	if cfg.Latency > 0 {
		for _, r := range []string{discordtest.RouteCallback, discordtest.RouteEditOriginal, discordtest.RouteGetOriginal,
			discordtest.RouteDeleteOrig, discordtest.RouteFollowup, discordtest.RouteChannelPost, discordtest.RouteGuildCmds,
			discordtest.RouteGetGuildCmds, discordtest.RouteGlobalCmds, discordtest.RouteGetGlobalCmds} {
			d.srv.SetLatency(r, cfg.Latency)
		}
	}
	return d, nil
}

// freeAddr is a loopback address nothing listens on, for the bot's
// http.listen: the bot does not log the port it got for ":0" at warn.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (d *discordPlatform) Env(instance int) map[string]string {
	return map[string]string{
		"IMAGINEBOT_DISCORD_TOKEN":          discordtest.Token,
		"IMAGINEBOT_DISCORD_APPLICATION_ID": discordtest.AppID,
		"IMAGINEBOT_DISCORD_PUBLIC_KEY":     d.signer.PublicKey(),
		"IMAGINEBOT_DISCORD_API_BASE_URL":   d.srv.URL,
		"IMAGINEBOT_DISCORD_MODE":           "interactions",
		"IMAGINEBOT_HTTP_LISTEN":            d.listens[instance],
	}
}

// Readiness: /readyz says ok once the commands are registered, the ledger
// answers and the gateway does, and the interactions endpoint is served.
func (d *discordPlatform) Readiness(instance int) func() bool {
	url := "http://" + d.listens[instance] + "/readyz"
	return func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		resp, err := d.client.Do(req)
		if err != nil {
			time.Sleep(20 * time.Millisecond) // not listening yet
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
}

func (d *discordPlatform) Start(time.Time) {}

// Send POSTs j's /imagine, signed, on a goroutine of its own.
func (d *discordPlatform) Send(ctx context.Context, j *loadJob) error {
	user := strconv.FormatInt(j.User, 10)
	name := "load_user_" + strconv.Itoa(j.Index)
	body := discordtest.Interaction(discordgo.InteractionApplicationCommand,
		discordtest.Guild(discordGuild, discordtest.Member(user, name, 0), discordLocale),
		discordtest.Command("imagine", discordtest.String("prompt", j.Prompt)))
	j.Interaction, j.Token = discordtest.Fields(body)
	rec := &interaction{user: user}
	d.mu.Lock()
	i := d.pick()
	if i < 0 {
		d.mu.Unlock()
		return fmt.Errorf("discord: no instance in rotation for interaction %s", j.Interaction)
	}
	rec.instance, j.Instance = i, i
	d.inFlight[i]++
	d.routed[i]++
	// Known before the POST: the bot's first edit may come before the
	// POST's answer is read.
	d.byToken[j.Token] = rec
	d.byUser[user] = append(d.byUser[user], rec)
	d.mu.Unlock()
	d.posts.Go(func() { d.post(ctx, rec, body) })
	return nil
}

// pick is the next instance in rotation, round-robin, or -1 when none is;
// call it with mu held.
func (d *discordPlatform) pick() int {
	n := len(d.up)
	for k := range n {
		i := (d.next + k) % n
		if d.up[i] {
			d.next = (i + 1) % n
			return i
		}
	}
	return -1
}

// Down takes an instance out of rotation: the POSTs after it go to the others.
func (d *discordPlatform) Down(instance int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.up[instance] = false
}

// Up puts an instance back into rotation.
func (d *discordPlatform) Up(instance int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.up[instance] = true
}

// Drain waits until the POSTs sent to an instance are answered, at most
// for timeout, and returns how many are still in flight.
func (d *discordPlatform) Drain(instance int, timeout time.Duration) int {
	stop := time.AfterFunc(timeout, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.drained.Broadcast()
	})
	defer stop.Stop()
	deadline := time.Now().Add(timeout)
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.inFlight[instance] > 0 && time.Now().Before(deadline) {
		d.drained.Wait()
	}
	return d.inFlight[instance]
}

// Routed is how many POSTs went to each instance.
func (d *discordPlatform) Routed() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.routed)
}

// Acks counts each instance's acknowledgements by kind (ackKind).
func (d *discordPlatform) Acks() []map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]map[string]int, len(d.listens))
	for i := range out {
		out[i] = map[string]int{}
	}
	for _, rec := range d.byToken {
		out[rec.instance][ackKind(rec)]++
	}
	return out
}

func (d *discordPlatform) Sent() { d.posts.Wait() }

// post sends one interaction and records its acknowledgement.
func (d *discordPlatform) post(ctx context.Context, rec *interaction, body []byte) {
	req := d.signer.Request("http://"+d.listens[rec.instance]+"/discord/interactions", body, time.Now()).WithContext(ctx)
	start := time.Now()
	d.mu.Lock()
	rec.sent = start
	d.mu.Unlock()
	resp, err := d.client.Do(req)
	var data []byte
	if err == nil {
		data, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
	}
	end := time.Now()
	var ack struct {
		Type discordgo.InteractionResponseType `json:"type"`
		Data *struct {
			Flags   discordgo.MessageFlags `json:"flags"`
			Content string                 `json:"content"`
		} `json:"data"`
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	rec.acked = end
	d.inFlight[rec.instance]--
	d.drained.Broadcast()
	switch {
	case err != nil:
		rec.ackErr = err.Error()
		return
	case resp.StatusCode != http.StatusOK:
		rec.status, rec.ackErr = resp.StatusCode, strings.TrimSpace(string(data))
		return
	case json.Unmarshal(data, &ack) != nil:
		rec.status, rec.ackErr = resp.StatusCode, "not an interaction response: "+truncate(string(data), 80)
		return
	}
	rec.status, rec.ackType = resp.StatusCode, ack.Type
	if ack.Data != nil {
		rec.ackFlags = ack.Data.Flags
		if ack.Data.Content != "" {
			rec.texts = append(rec.texts, timedText{at: end, text: ack.Data.Content})
		}
	}
	if ack.Type == discordgo.InteractionResponseChannelMessageWithSource && !rec.answered {
		// A refusal, told in the acknowledgement itself: the job ends here.
		rec.answered = true
		d.answered++
	}
}

// sentMessage is what the bot's edits and posts carry that tells their kind.
type sentMessage struct {
	Content    string `json:"content"`
	Components []struct {
		Components []struct {
			CustomID string `json:"custom_id"`
		} `json:"components"`
	} `json:"components"`
	AllowedMentions struct {
		Users []string `json:"users"`
	} `json:"allowed_mentions"`
}

// button reports whether m carries a button whose custom id starts with prefix.
func (m sentMessage) button(prefix string) bool {
	for _, row := range m.Components {
		for _, c := range row.Components {
			if strings.HasPrefix(c.CustomID, prefix) {
				return true
			}
		}
	}
	return false
}

// observe sees every call the fake answered (discordtest.OnCall). The
// adapter's reply has three shapes, told apart by structure rather than
// wording: a status with ✖ Cancel, the result with 🔄 Reroll (and the
// picture attached), or a final text with every button removed (a failure
// or refund). A channel post is the result or failure of a job whose
// token ran out, mentioning its requester.
func (d *discordPlatform) observe(c discordtest.Call) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.routes[c.Route]
	if s == nil {
		s = &methodStats{}
		d.routes[c.Route] = s
	}
	s.Calls++
	switch {
	case c.Status == http.StatusTooManyRequests:
		s.Limited++
	case c.Status < 300:
		s.OK++
	default:
		s.Failed++
	}
	d.lastSend = c.Time
	if c.Status >= 300 {
		return
	}
	for _, f := range c.Files {
		d.uploaded += int64(len(f.Data))
	}
	var m sentMessage
	_ = c.Decode(&m)
	var rec *interaction
	switch c.Route {
	case discordtest.RouteEditOriginal, discordtest.RouteFollowup:
		if parts := strings.Split(strings.Trim(c.Path, "/"), "/"); len(parts) >= 3 {
			rec = d.byToken[parts[2]]
		}
	case discordtest.RouteChannelPost:
		if len(m.AllowedMentions.Users) == 1 {
			rec = firstOpen(d.byUser[m.AllowedMentions.Users[0]])
		}
	default:
		return // commands and reads
	}
	if rec == nil {
		d.unmatched++
		return
	}
	if m.Content != "" {
		rec.texts = append(rec.texts, timedText{at: c.Time, text: m.Content})
	}
	final := true
	switch {
	case len(c.Files) > 0:
		rec.deliveries = append(rec.deliveries, c.Time)
	case m.button("rr:"):
		rec.links++ // a result without the picture: its link instead
	case m.button("cx:"):
		final = false
	}
	if final && !rec.answered {
		rec.answered = true
		d.answered++
	}
}

// firstOpen is the first of a user's interactions still unanswered, else
// their last.
func firstOpen(recs []*interaction) *interaction {
	for _, r := range recs {
		if !r.answered {
			return r
		}
	}
	if len(recs) == 0 {
		return nil
	}
	return recs[len(recs)-1]
}

func (d *discordPlatform) Answered() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.answered
}

func (d *discordPlatform) LastSend() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastSend
}

func (d *discordPlatform) Job(j *loadJob) jobView {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec := d.byToken[j.Token]
	if rec == nil {
		return jobView{}
	}
	v := jobView{Deliveries: slices.Clone(rec.deliveries), Links: rec.links, Answered: rec.answered}
	texts := slices.Clone(rec.texts)
	sort.SliceStable(texts, func(a, b int) bool { return texts[a].at.Before(texts[b].at) })
	for _, t := range texts {
		v.Texts = append(v.Texts, t.text)
		v.TextAt = append(v.TextAt, t.at)
	}
	return v
}

func (d *discordPlatform) Stats() platformStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := platformStats{Methods: map[string]methodStats{}, UploadBytes: d.uploaded, Unmatched: d.unmatched}
	for r, st := range d.routes {
		s.Methods[r] = *st
		switch r {
		case discordtest.RouteCallback, discordtest.RouteEditOriginal, discordtest.RouteFollowup, discordtest.RouteChannelPost:
			s.Sends += st.Calls
		}
	}
	return s
}

func (d *discordPlatform) Close() {
	d.client.CloseIdleConnections()
	d.srv.Close()
}

// reorder numbers the jobs in the order the bot took them: by the time
// the ledger gives a job, which the bot takes just after the job's place in
// its queue; a job refused before the ledger, by when its POST was
// answered. Both clocks are this machine's.
func (d *discordPlatform) reorder(outs []*jobOutcome) {
	d.mu.Lock()
	at := make(map[*loadJob]time.Time, len(outs))
	for _, o := range outs {
		switch rec := d.byToken[o.job.Token]; {
		case o.record != nil:
			at[o.job] = o.record.Created
		case rec != nil && rec.status != 0:
			at[o.job] = rec.acked
		}
	}
	d.mu.Unlock()
	jobs := make([]*loadJob, len(outs))
	for i, o := range outs {
		jobs[i] = o.job
	}
	slices.SortStableFunc(jobs, func(a, b *loadJob) int {
		ta, oka := at[a]
		tb, okb := at[b]
		switch {
		case oka != okb: // the unknown last
			if oka {
				return -1
			}
			return 1
		case !oka:
			return 0
		}
		return ta.Compare(tb)
	})
	perInstance := make([]int, len(d.listens))
	for i, j := range jobs {
		j.Index = i + 1
		perInstance[j.Instance]++
		j.InstanceIndex = perInstance[j.Instance]
	}
}

// discordFigures is what -platform discord measures besides the common
// figures.
type discordFigures struct {
	// Acks counts the POSTs' answers: "deferred" (type 5), "ephemeral
	// refusal" (type 4, flags 64), anything else by its type, or why there
	// was no answer.
	Acks map[string]int `json:"acks"`
	// AckLatency is from the POST to its answer, for those answered.
	AckLatency quantile `json:"ack_latency_seconds"`
	AcksLate   int      `json:"acks_3s_or_more"`
	// Delivery is from the POST to the edit with the picture.
	Delivery quantile `json:"delivery_seconds"`
	// Refused429 is what the fake's 50 requests/s per bot token refused;
	// Limited429 in the report counts every 429 it answered.
	Refused429 int `json:"refused_429"`
	// PeakEditsInFlight is the most edits of replies the fake held at
	// once: edits of different interactions proceed in parallel.
	PeakEditsInFlight int  `json:"peak_edits_in_flight"`
	Limits            bool `json:"limits"`
}

func (d *discordPlatform) figures(r *Report, outs []*jobOutcome) {
	f := &discordFigures{Acks: map[string]int{}, Refused429: d.srv.Refused429(),
		PeakEditsInFlight: d.srv.PeakInFlight(discordtest.RouteEditOriginal), Limits: d.cfg.Limits}
	var acks, deliveries []float64
	d.mu.Lock()
	for _, o := range outs {
		rec := d.byToken[o.job.Token]
		if rec == nil {
			f.Acks["never sent"]++
			continue
		}
		f.Acks[ackKind(rec)]++
		if rec.status == http.StatusOK {
			lat := rec.acked.Sub(rec.sent)
			acks = append(acks, lat.Seconds())
			if lat >= ackDeadline {
				f.AcksLate++
			}
		}
		if len(rec.deliveries) > 0 {
			deliveries = append(deliveries, rec.deliveries[0].Sub(rec.sent).Seconds())
		}
	}
	d.mu.Unlock()
	f.AckLatency, f.Delivery = quantiles(acks), quantiles(deliveries)
	r.Discord = f
}

// Kinds of acknowledgement; only the first two are right.
const (
	ackDeferred  = "deferred"
	ackEphemeral = "ephemeral refusal"
)

func ackKind(rec *interaction) string {
	switch {
	case rec.status == 0 && rec.ackErr == "":
		return "no answer"
	case rec.status == 0:
		return "failed: " + rec.ackErr
	case rec.status != http.StatusOK:
		return fmt.Sprintf("HTTP %d: %s", rec.status, truncate(rec.ackErr, 80))
	case rec.ackType == discordgo.InteractionResponseDeferredChannelMessageWithSource:
		return ackDeferred
	case rec.ackType == discordgo.InteractionResponseChannelMessageWithSource && rec.ackFlags&discordgo.MessageFlagsEphemeral != 0:
		return ackEphemeral
	}
	return fmt.Sprintf("type %d flags %d", rec.ackType, rec.ackFlags)
}

// wrongAcks is how many interactions were not answered with a deferred
// reply or an ephemeral refusal.
func (f *discordFigures) wrongAcks() int {
	n := 0
	for k, c := range f.Acks {
		if k != ackDeferred && k != ackEphemeral {
			n += c
		}
	}
	return n
}

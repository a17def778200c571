package discord

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/imaginebot/imaginebot/bots/catalog"
	"github.com/imaginebot/imaginebot/bots/chat"
	"github.com/imaginebot/imaginebot/bots/imagefit"
	"github.com/imaginebot/imaginebot/bots/pace"
	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/core/fetch"
)

// tokenLife is how long an interaction token may edit its reply; a little
// under Discord's 15 minutes, so a late edit is not tried in vain.
const tokenLife = 14*time.Minute + 30*time.Second

// runJob submits a job and acknowledges the interaction: a refusal (bad
// prompt, rate limit, quota) in a reply only the person sees, else a
// deferred reply that the job then edits. It returns once core took or
// refused the job; a queued job holds no goroutine. after, when not nil,
// runs once the job ended.
func (b *Bot) runJob(ctx context.Context, i *discordgo.Interaction, p person, req core.Request, ack ackFunc, after func()) {
	req.ReplyTo = replyRef{channel: p.channel, user: p.user.ID, token: i.Token, at: time.Now()}.String()
	j := &job{b: b, token: i.Token, key: req.Key, lang: p.lang, user: p.user.ID, channel: p.channel, order: req.Seq, gate: make(chan struct{}),
		upload: b.cfg.MaxUploadBytes}
	if p.upload > 0 {
		j.upload = p.upload // Discord knows the server's boost level
	}
	j.status = b.budget.NewStatus(chatOf(i.Token), req.Seq, b.cfg.ProgressInterval, j.showStatus)
	b.inflight.Add(1) // the job's end
	err := b.svc.Submit(ctx, req, j, func(_ core.Receipt, err error) {
		defer b.inflight.Done()
		if after != nil {
			defer after()
		}
		j.end(ctx, err)
	})
	if err != nil {
		b.inflight.Done()
		if after != nil {
			after()
		}
		j.status.Close()
		b.log.Info("discord: job refused", "job", req.Key, "code", core.ErrorCode(err))
		_ = ack(ctx, ephemeral(catalog.For(p.lang).Error(err, b.syntax(p.lang))))
		return
	}
	err = ack(ctx, &discordgo.InteractionResponse{Type: discordgo.InteractionResponseDeferredChannelMessageWithSource})
	j.open(err == nil)
	if err != nil {
		// Discord shows "the application did not respond": nobody will see
		// the picture, so stop the job now, which refunds it.
		b.log.Warn("discord: acknowledgement failed; cancelling the job", "job", req.Key, "err", err)
		if cerr := b.svc.Cancel(context.WithoutCancel(ctx), core.Actor{User: p.core(), Role: core.RoleUser}, req.Key); cerr != nil {
			b.log.Warn("discord: could not cancel the unacknowledged job", "job", req.Key, "err", cerr)
		}
	}
}

// replyRef is where a job answers, stored with it so that after a crash the
// user can still be told: the channel and requester (for a new message),
// and the interaction token while it lasts.
type replyRef struct {
	channel, user, token string
	at                   time.Time
}

func (r replyRef) String() string {
	return fmt.Sprintf("discord:%s:%s:%d:%s", r.channel, r.user, r.at.Unix(), r.token)
}

func parseReplyRef(s string) (replyRef, bool) {
	rest, ok := strings.CutPrefix(s, "discord:")
	if !ok {
		return replyRef{}, false
	}
	f := strings.SplitN(rest, ":", 4)
	if len(f) != 4 || f[0] == "" || f[1] == "" {
		return replyRef{}, false
	}
	var unix int64
	if _, err := fmt.Sscan(f[2], &unix); err != nil {
		return replyRef{}, false
	}
	return replyRef{channel: f[0], user: f[1], at: time.Unix(unix, 0), token: f[3]}, true
}

// job is core's Reporter for one interaction's job.
type job struct {
	b       *Bot
	token   string
	key     string
	lang    core.Lang
	user    string
	channel string
	order   uint64
	upload  int64 // attachment limit, bytes
	status  *pace.Status

	// gate is closed once the acknowledgement was sent (or failed). acked
	// and ackAt are written before, and read only after, it closes: the
	// channel orders them, no lock needed.
	gate  chan struct{}
	acked bool
	ackAt time.Time
}

var _ core.Reporter = (*job)(nil)

func (j *job) open(ok bool) {
	j.acked, j.ackAt = ok, time.Now()
	close(j.gate)
}

// wait waits for the acknowledgement; false when there is no reply to edit.
func (j *job) wait(ctx context.Context) bool {
	select {
	case <-j.gate:
	case <-ctx.Done():
		return false
	}
	return j.acked
}

// fresh reports whether the token may still edit the reply; only after
// wait returned true.
func (j *job) fresh() bool { return time.Since(j.ackAt) < tokenLife }

// Progress implements core.Reporter; it never blocks.
func (j *job) Progress(p core.Progress) {
	j.status.Set(catalog.For(j.lang).Status(p))
}

// showStatus edits the reply to the latest status, with a ✖ button; the
// budget was taken by the caller.
func (j *job) showStatus(ctx context.Context, text string) error {
	if !j.wait(ctx) || !j.fresh() {
		return nil
	}
	content := fit(text, maxContent)
	comps := []discordgo.MessageComponent{discordgo.ActionsRow{Components: []discordgo.MessageComponent{
		discordgo.Button{Label: catalog.For(j.lang).T("button.cancel"), Style: discordgo.SecondaryButton, CustomID: cancelPrefix + j.key},
	}}}
	_, err := j.b.hooks.edit(ctx, j.token, &discordgo.WebhookEdit{Content: &content, Components: &comps, AllowedMentions: noMentions()})
	if d := retryAfter(err); d > 0 {
		j.b.budget.Hold(chatOf(j.token), d)
	}
	if err != nil {
		j.b.log.Debug("discord: status edit skipped", "job", j.key, "err", err)
	}
	return err
}

// Deliver implements core.Reporter: the reply becomes the picture, with the
// prompt, model, options and quota left, and a 🔄 button.
func (j *job) Deliver(ctx context.Context, d core.Delivery) (err error) {
	defer j.b.recovered("delivery", &err)
	if j.b.panicHook != nil {
		j.b.panicHook("delivery")
	}
	j.status.Close()
	imgs, links, err := j.b.fitImages(d.Images, j.upload)
	if err != nil {
		return err
	}
	if !j.wait(ctx) {
		return &core.Error{Code: core.CodeDeliveryFailed, Err: errors.New("discord: the interaction was never acknowledged")}
	}
	msg := j.b.result(d, imgs, j.lang)
	if len(links) > 0 {
		msg.Content = fit("🔗 "+strings.Join(links, "\n🔗 "), maxContent)
	}
	if j.fresh() {
		err = j.b.send(ctx, pace.Msg{Chat: chatOf(j.token), Class: pace.Result, Order: j.order}, func(ctx context.Context) error {
			_, err := j.b.hooks.edit(ctx, j.token, &discordgo.WebhookEdit{Content: &msg.Content, Embeds: &msg.Embeds,
				Components: &msg.Components, Files: msg.files(), Attachments: &[]*discordgo.MessageAttachment{}, AllowedMentions: noMentions()})
			return err
		})
		if err == nil {
			return nil
		}
		if !tokenGone(err) {
			return &core.Error{Code: core.CodeDeliveryFailed, Err: err}
		}
	}
	// The token ran out while the job waited or ran: a new message in the
	// channel, which pings the requester (and only them).
	if j.b.metrics != nil {
		j.b.metrics.Fallback("channel_message")
	}
	msg.Content = fit(catalog.For(j.lang).T("discord.late", "Mention", "<@"+j.user+">")+"\n"+msg.Content, maxContent)
	if err := j.b.channelPost(ctx, j.key, j.channel, j.user, msg, j.order); err != nil {
		return &core.Error{Code: core.CodeDeliveryFailed, Err: err}
	}
	return nil
}

// end reports a failure or a refusal after the acknowledgement, in the
// reply (or, when its token ran out, a new message).
func (j *job) end(ctx context.Context, err error) {
	j.status.Close()
	if err == nil {
		return
	}
	code := core.ErrorCode(err)
	j.b.log.Info("discord: job failed", "job", j.key, "code", code)
	text := catalog.For(j.lang).Error(err, j.b.syntax(j.lang))
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if !j.wait(ctx) {
		return
	}
	if j.fresh() {
		if err := j.b.editJobText(ctx, j.key, j.token, text, j.order); err == nil || !tokenGone(err) {
			return
		}
	}
	_ = j.b.channelPost(ctx, j.key, j.channel, j.user, message{Content: fit("<@"+j.user+"> "+text, maxContent)}, j.order)
}

// editText turns a reply into text, without buttons or embeds.
func (b *Bot) editText(ctx context.Context, token, text string, order uint64) error {
	return b.editJobText(ctx, "", token, text, order)
}

// editJobText is editText for the reply of job, whose key it logs.
func (b *Bot) editJobText(ctx context.Context, job, token, text string, order uint64) error {
	content := fit(text, maxContent)
	err := b.send(ctx, pace.Msg{Chat: chatOf(token), Class: pace.Reply, Order: order}, func(ctx context.Context) error {
		_, err := b.hooks.edit(ctx, token, &discordgo.WebhookEdit{Content: &content, Embeds: &[]*discordgo.MessageEmbed{},
			Components: &[]discordgo.MessageComponent{}, AllowedMentions: noMentions()})
		return err
	})
	if err != nil {
		b.log.Warn("discord: could not edit the reply", "job", job, "err", err)
	}
	return err
}

// message is a result or notice, for an edit or a channel post.
type message struct {
	Content    string
	Embeds     []*discordgo.MessageEmbed
	Components []discordgo.MessageComponent
	images     []core.Image
}

// files are new readers over the pictures: a body is read once per attempt.
func (m message) files() []*discordgo.File {
	out := make([]*discordgo.File, len(m.images))
	for i, img := range m.images {
		out[i] = &discordgo.File{Name: fileName(i, img), ContentType: img.MIME, Reader: bytes.NewReader(img.Data)}
	}
	return out
}

func fileName(i int, img core.Image) string { return fmt.Sprintf("imaginebot-%d%s", i+1, img.Ext()) }

// result is a finished job's message: each picture in an embed (Discord
// shows up to ten), the prompt and what it was made with.
func (b *Bot) result(d core.Delivery, imgs []core.Image, lang core.Lang) message {
	p := catalog.For(lang)
	footer := fit(p.MetaBy(d.Model, d.Options, d.Job.User.Name)+"\n"+p.QuotaLine(d.Balance), maxFooter)
	m := message{Content: "", images: imgs}
	for i, img := range imgs[:min(len(imgs), 10)] {
		e := &discordgo.MessageEmbed{URL: "https://imaginebot.invalid/" + d.Job.Key, Image: &discordgo.MessageEmbedImage{URL: "attachment://" + fileName(i, img)}}
		if img.Note != "" { // the model's own rewording (an images API's revised_prompt)
			e.Description = fit("📝 "+p.T("meta.revised", "Text", img.Note), maxDescription/2)
		}
		if i == 0 {
			e.Description = fit(strings.TrimSpace(d.Prompt+"\n\n"+e.Description), maxDescription)
			e.Footer = &discordgo.MessageEmbedFooter{Text: footer}
		}
		m.Embeds = append(m.Embeds, e)
	}
	if len(m.Embeds) == 0 { // the pictures went as links
		m.Embeds = []*discordgo.MessageEmbed{{Description: fit(d.Prompt, maxDescription), Footer: &discordgo.MessageEmbedFooter{Text: footer}}}
	}
	m.Components = append(taskRows(d.Job.Key, imgs), discordgo.ActionsRow{Components: []discordgo.MessageComponent{
		discordgo.Button{Label: p.T("button.reroll"), Style: discordgo.PrimaryButton, CustomID: rerollPrefix + d.Job.Key},
	}})
	return m
}

// taskRows are a Midjourney result's own buttons (U1–U4, V1–V4, …), each
// custom id the job key and the button's index: the task and the proxy's
// id for it stay with the job in the ledger.
func taskRows(key string, imgs []core.Image) []discordgo.MessageComponent {
	if len(imgs) == 0 {
		return nil
	}
	var rows []discordgo.MessageComponent
	var row []discordgo.MessageComponent
	for i, tb := range imgs[0].Buttons[:min(len(imgs[0].Buttons), chat.TaskButtonsMax)] {
		row = append(row, discordgo.Button{Label: chat.ButtonLabel(tb), Style: discordgo.SecondaryButton, CustomID: fmt.Sprintf("%s%d:%s", taskPrefix, i, key)})
		if len(row) == chat.TaskButtonsPerRow {
			rows, row = append(rows, discordgo.ActionsRow{Components: row}), nil
		}
	}
	if row != nil {
		rows = append(rows, discordgo.ActionsRow{Components: row})
	}
	return rows
}

// fitImages makes every picture fit the upload limit (all of them together
// as well), re-encoding those that do not; a picture that cannot fit goes
// as its link, but only a public one: never an address on the operator's
// own network (images.allow_private_hosts).
func (b *Bot) fitImages(imgs []core.Image, limit int64) (fitted []core.Image, links []string, err error) {
	per := limit / int64(max(len(imgs), 1))
	for _, img := range imgs[:min(len(imgs), 10)] {
		f, err := imagefit.Fit(img, per)
		switch {
		case err == nil:
			if len(f.Data) != len(img.Data) && b.metrics != nil {
				b.metrics.Fallback("reencode")
			}
			fitted = append(fitted, f)
		case img.Source != "" && fetch.Shareable(img.Source, b.cfg.PrivateHosts):
			if b.metrics != nil {
				b.metrics.Fallback("link")
			}
			links = append(links, img.Source)
		default:
			return nil, nil, &core.Error{Code: core.CodeDeliveryFailed, Err: fmt.Errorf("discord: %d-byte picture over the %d-byte upload limit, and no public link: %w", len(img.Data), per, err)}
		}
	}
	return fitted, links, nil
}

// channelPost sends m, about job, as a new message in channel with the bot
// token, mentioning only user.
func (b *Bot) channelPost(ctx context.Context, job, channel, user string, m message, order uint64) error {
	err := b.send(ctx, pace.Msg{Chat: pace.Chat{ID: channelChat + channel}, Class: pace.Result, Order: order}, func(ctx context.Context) error {
		_, err := b.session.ChannelMessageSendComplex(channel, &discordgo.MessageSend{Content: m.Content, Embeds: m.Embeds,
			Components: m.Components, Files: m.files(), AllowedMentions: &discordgo.MessageAllowedMentions{Users: []string{user}}},
			discordgo.WithContext(ctx))
		return err
	})
	if err != nil {
		b.log.Warn("discord: channel message failed", "job", job, "channel", channel, "err", err)
	}
	return err
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
)

// telegramConfig is how the fake Bot API behaves.
type telegramConfig struct {
	Token      string
	Limits     bool    // enforce Telegram's published flood limits
	GlobalRate float64 // messages per second across all chats
	Tolerance  time.Duration
	Burst      burstWindows // extra 429 windows (the fault run)
	// LinkPrefix marks a text that carries the gateway's image URL: the
	// bot's fallback when an upload fails is to send the link instead.
	LinkPrefix string
}

// telegram is a fake Bot API for load. telegramtest keeps every call and
// upload in memory; this one streams uploads away and keeps only what the
// report needs: per-method counters and, per job, deliveries and texts.
type telegram struct {
	cfg     telegramConfig
	URL     string
	srv     *http.Server
	done    chan struct{}
	me      models.User
	limiter *telegramtest.Limits
	nextMsg atomic.Int64 // message ids, shared by users' and the bot's messages

	mu          sync.Mutex
	changed     chan struct{} // closed and replaced when updates are injected
	updates     []queuedUpdate
	nextUpdate  int64
	polls       int64
	origin      time.Time // of the burst windows
	methods     map[string]*methodStats
	chats       map[int64]*chatRecord
	jobs        map[int]*jobRecord // by the user's message id
	replyOf     map[int]int        // bot message id → the user message it answers
	answered    int
	lastSend    time.Time
	uploadBytes int64
	unmatched   int // deliveries and texts no job could be found for
}

type queuedUpdate struct {
	id  int64
	raw json.RawMessage
}

// methodStats counts one Bot API method.
type methodStats struct {
	Calls    int64 `json:"calls"`
	OK       int64 `json:"ok"`
	Limited  int64 `json:"limited_429"` // beyond Telegram's limits
	Burst429 int64 `json:"burst_429"`   // inside a -burst429 window
	Failed   int64 `json:"failed"`      // other errors
}

// chatRecord is what one chat received.
type chatRecord struct {
	FirstDelivery time.Time
	Deliveries    int
	Texts         []string
}

// jobRecord is what the bot sent in answer to one user message.
type jobRecord struct {
	chat       int64
	deliveries []time.Time
	links      int // texts carrying the image's URL instead of the image
	texts      []timedText
	answered   bool
}

type timedText struct {
	at   time.Time
	text string
}

func newTelegram(cfg telegramConfig) (*telegram, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("telegram: listen: %w", err)
	}
	t := &telegram{
		cfg:     cfg,
		URL:     "http://" + ln.Addr().String(),
		done:    make(chan struct{}),
		me:      models.User{ID: 7700000001, IsBot: true, FirstName: "Imagine Load Bot", Username: "ImagineLoadBot", CanJoinGroups: true},
		limiter: telegramtest.NewLimits(cfg.GlobalRate, cfg.Tolerance),
		changed: make(chan struct{}),
		// Update ids are large, as Telegram's are; 0 would read as "no offset".
		nextUpdate: 500000000,
		origin:     time.Now(),
		methods:    map[string]*methodStats{},
		chats:      map[int64]*chatRecord{},
		jobs:       map[int]*jobRecord{},
		replyOf:    map[int]int{},
	}
	t.nextMsg.Store(100)
	t.srv = &http.Server{Handler: http.HandlerFunc(t.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = t.srv.Serve(ln) }()
	return t, nil
}

// Close releases long polls, then stops the server.
func (t *telegram) Close() {
	close(t.done)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := t.srv.Shutdown(ctx); err != nil {
		_ = t.srv.Close()
	}
}

// SetOrigin starts the -burst429 windows at origin (t0 of the run).
func (t *telegram) SetOrigin(origin time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.origin = origin
}

// NewMessageID reserves a message id.
func (t *telegram) NewMessageID() int { return int(t.nextMsg.Add(1)) }

// Expect registers a user message whose answers are to be tracked.
func (t *telegram) Expect(chat int64, msgID int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.jobs[msgID] = &jobRecord{chat: chat}
}

// Inject queues an update for getUpdates and returns its id.
func (t *telegram) Inject(u models.Update) (int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.nextUpdate++
	u.ID = t.nextUpdate
	raw, err := json.Marshal(&u)
	if err != nil {
		return 0, fmt.Errorf("telegram: marshal update: %w", err)
	}
	t.updates = append(t.updates, queuedUpdate{id: u.ID, raw: raw})
	close(t.changed)
	t.changed = make(chan struct{})
	return u.ID, nil
}

// Polls is the number of getUpdates calls so far (readiness).
func (t *telegram) Polls() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.polls
}

// Answered is the number of expected jobs that got a delivery or a final text.
func (t *telegram) Answered() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.answered
}

// LastSend is when the bot last called a method other than getUpdates.
func (t *telegram) LastSend() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastSend
}

func (t *telegram) serve(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/bot")
	token, method, ok2 := strings.Cut(rest, "/")
	switch {
	case !ok || !ok2 || method == "":
		writeAPIError(w, http.StatusNotFound, "Not Found", 0)
		return
	case token != t.cfg.Token:
		writeAPIError(w, http.StatusUnauthorized, "Unauthorized", 0)
		return
	}
	fields, uploaded, err := readForm(r)
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, "Bad Request: "+err.Error(), 0)
		return
	}
	if method == "getUpdates" {
		t.getUpdates(w, r, fields)
		return
	}
	now := time.Now()
	chat, _ := strconv.ParseInt(fields["chat_id"], 10, 64)
	if wait, burst := t.limited(method, chat, fields, now); wait > 0 {
		t.count(method, func(s *methodStats) {
			if burst {
				s.Burst429++
			} else {
				s.Limited++
			}
		})
		n := telegramtest.RetryAfter(wait)
		writeAPIError(w, http.StatusTooManyRequests, fmt.Sprintf("Too Many Requests: retry after %d", n), n)
		return
	}
	result, status, desc := t.answer(method, chat, fields, now)
	if status != http.StatusOK {
		t.count(method, func(s *methodStats) { s.Failed++ })
		writeAPIError(w, status, desc, 0)
		return
	}
	t.mu.Lock()
	t.uploadBytes += uploaded
	t.mu.Unlock()
	t.count(method, func(s *methodStats) { s.OK++ })
	raw, err := json.Marshal(result)
	if err != nil {
		writeAPIError(w, http.StatusInternalServerError, "Internal Server Error: "+err.Error(), 0)
		return
	}
	_, _ = writeJSONBytes(w, http.StatusOK, append(append([]byte(`{"ok":true,"result":`), raw...), '}'))
}

// count records one call of method and lets f update its counters.
func (t *telegram) count(method string, f func(*methodStats)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.methods[method]
	if s == nil {
		s = &methodStats{}
		t.methods[method] = s
	}
	s.Calls++
	f(s)
	t.lastSend = time.Now()
}

// limited decides whether a call is refused with 429: inside a burst window
// (burst = true), or beyond Telegram's limits. A refused call is not performed.
func (t *telegram) limited(method string, chat int64, fields map[string]string, now time.Time) (wait time.Duration, burst bool) {
	if !telegramtest.Counted(method) {
		return 0, false
	}
	t.mu.Lock()
	origin := t.origin
	t.mu.Unlock()
	if t.cfg.Burst.active(origin, now) {
		return 2 * time.Second, true
	}
	if !t.cfg.Limits {
		return 0, false
	}
	return t.limiter.Take(chat, telegramtest.Messages(method, fields["media"]), now), false
}

// answer performs a call and returns its result, or an error status.
func (t *telegram) answer(method string, chat int64, f map[string]string, now time.Time) (any, int, string) {
	switch method {
	case "getMe":
		return t.me, http.StatusOK, ""
	case "setMyCommands", "deleteMyCommands", "deleteWebhook", "setWebhook", "sendChatAction",
		"deleteMessage", "answerCallbackQuery":
		return true, http.StatusOK, ""
	case "getChatMember":
		user, _ := strconv.ParseInt(f["user_id"], 10, 64)
		return map[string]any{"status": "member", "user": models.User{ID: user, FirstName: "User"}}, http.StatusOK, ""
	case "sendMessage":
		if strings.TrimSpace(f["text"]) == "" {
			return nil, http.StatusBadRequest, "Bad Request: message text is empty"
		}
		m := t.botMessage(chat, now)
		m.Text = f["text"]
		t.recordText(chat, replyTo(f), m.ID, f["text"], now)
		return m, http.StatusOK, ""
	case "editMessageText":
		id, _ := strconv.Atoi(f["message_id"])
		m := t.botMessage(chat, now)
		m.ID, m.Text, m.EditDate = id, f["text"], int(now.Unix())
		t.mu.Lock()
		user := t.replyOf[id]
		t.mu.Unlock()
		t.recordText(chat, user, 0, f["text"], now)
		return m, http.StatusOK, ""
	case "editMessageReplyMarkup", "editMessageCaption", "editMessageMedia":
		id, _ := strconv.Atoi(f["message_id"])
		m := t.botMessage(chat, now)
		m.ID, m.EditDate = id, int(now.Unix())
		return m, http.StatusOK, ""
	case "sendPhoto", "sendDocument":
		m := t.botMessage(chat, now)
		m.Caption = f["caption"]
		if method == "sendPhoto" {
			m.Photo = []models.PhotoSize{{FileID: "p" + strconv.Itoa(m.ID), FileUniqueID: "u" + strconv.Itoa(m.ID), Width: 512, Height: 512}}
		} else {
			m.Document = &models.Document{FileID: "d" + strconv.Itoa(m.ID), FileUniqueID: "u" + strconv.Itoa(m.ID), FileName: "image.png"}
		}
		t.recordDelivery(chat, replyTo(f), m.ID, now)
		return m, http.StatusOK, ""
	case "sendMediaGroup":
		var media []json.RawMessage
		if json.Unmarshal([]byte(f["media"]), &media) != nil || len(media) < 2 || len(media) > 10 {
			return nil, http.StatusBadRequest, "Bad Request: wrong number of media in the group"
		}
		out := make([]*models.Message, len(media))
		for i := range media {
			m := t.botMessage(chat, now)
			m.MediaGroupID = "mg"
			m.Photo = []models.PhotoSize{{FileID: "p" + strconv.Itoa(m.ID), FileUniqueID: "u" + strconv.Itoa(m.ID), Width: 512, Height: 512}}
			out[i] = m
		}
		t.recordDelivery(chat, replyTo(f), out[0].ID, now)
		return out, http.StatusOK, ""
	}
	return nil, http.StatusNotFound, "Not Found: method not found"
}

func (t *telegram) botMessage(chat int64, now time.Time) *models.Message {
	c := models.Chat{ID: chat, Type: models.ChatTypePrivate, FirstName: "User"}
	if chat < 0 {
		c = models.Chat{ID: chat, Type: models.ChatTypeSupergroup, Title: "Load group"}
	}
	me := t.me
	return &models.Message{ID: t.NewMessageID(), From: &me, Date: int(now.Unix()), Chat: c}
}

// replyTo is the user message a send answers (reply_parameters.message_id).
func replyTo(f map[string]string) int {
	var rp struct {
		MessageID int `json:"message_id"`
	}
	if json.Unmarshal([]byte(f["reply_parameters"]), &rp) != nil {
		return 0
	}
	return rp.MessageID
}

// jobFor finds the job a message to chat answers: the message it replies
// to, else the chat's only job. Callers hold t.mu.
func (t *telegram) jobFor(chat int64, user int) *jobRecord {
	if j := t.jobs[user]; j != nil {
		return j
	}
	var only *jobRecord
	for _, j := range t.jobs {
		if j.chat == chat {
			if only != nil {
				return nil
			}
			only = j
		}
	}
	return only
}

func (t *telegram) chatLocked(chat int64) *chatRecord {
	c := t.chats[chat]
	if c == nil {
		c = &chatRecord{}
		t.chats[chat] = c
	}
	return c
}

func (t *telegram) recordText(chat int64, user, botMsg int, text string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if botMsg != 0 && user != 0 {
		t.replyOf[botMsg] = user
	}
	c := t.chatLocked(chat)
	c.Texts = append(c.Texts, text)
	j := t.jobFor(chat, user)
	if j == nil {
		t.unmatched++
		return
	}
	j.texts = append(j.texts, timedText{at: now, text: text})
	link := t.cfg.LinkPrefix != "" && strings.Contains(text, t.cfg.LinkPrefix)
	if link {
		j.links++
	}
	if !j.answered && (link || isFinalText(text)) {
		j.answered = true
		t.answered++
	}
}

func (t *telegram) recordDelivery(chat int64, user, botMsg int, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if user != 0 {
		t.replyOf[botMsg] = user
	}
	c := t.chatLocked(chat)
	if c.Deliveries == 0 {
		c.FirstDelivery = now
	}
	c.Deliveries++
	j := t.jobFor(chat, user)
	if j == nil {
		t.unmatched++
		return
	}
	j.deliveries = append(j.deliveries, now)
	if !j.answered {
		j.answered = true
		t.answered++
	}
}

// isFinalText reports whether a text ends a job for its user: a refund, a
// refusal or an interruption — not a status ("⏳ Queued", "🎨 Generating").
// Matched loosely, so reworded messages still count.
func isFinalText(s string) bool {
	l := strings.ToLower(s)
	for _, frag := range []string{"refund", "charged", "again", "interrupted", "stopped", "arrived", "quota", "退回", "扣", "重新", "中断"} {
		if strings.Contains(l, frag) {
			return true
		}
	}
	return false
}

// getUpdates long-polls like Telegram: offset confirms every update before
// it, and the call waits up to timeout seconds for one to arrive.
func (t *telegram) getUpdates(w http.ResponseWriter, r *http.Request, f map[string]string) {
	offset, _ := strconv.ParseInt(f["offset"], 10, 64)
	timeout, _ := strconv.Atoi(f["timeout"])
	limit, _ := strconv.Atoi(f["limit"])
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	deadline := time.Now().Add(time.Duration(timeout) * time.Second)
	t.mu.Lock()
	t.polls++
	t.mu.Unlock()
	for {
		batch, changed := t.pending(offset, limit)
		left := time.Until(deadline)
		if len(batch) > 0 || left <= 0 {
			raw, _ := json.Marshal(batch)
			_, _ = writeJSONBytes(w, http.StatusOK, append(append([]byte(`{"ok":true,"result":`), raw...), '}'))
			return
		}
		timer := time.NewTimer(left)
		select {
		case <-changed:
		case <-timer.C:
		case <-r.Context().Done():
		case <-t.done:
		}
		timer.Stop()
		if r.Context().Err() != nil {
			return
		}
		select {
		case <-t.done:
			return
		default:
		}
	}
}

// pending drops the updates offset confirms and returns up to limit of the
// rest, with the channel that signals the next injection.
func (t *telegram) pending(offset int64, limit int) ([]json.RawMessage, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if offset != 0 {
		kept := t.updates[:0]
		for _, u := range t.updates {
			if u.id >= offset {
				kept = append(kept, u)
			}
		}
		t.updates = kept
	}
	batch := []json.RawMessage{}
	for _, u := range t.updates {
		if len(batch) == limit {
			break
		}
		batch = append(batch, u.raw)
	}
	return batch, t.changed
}

// readForm reads the call's parameters. go-telegram/bot sends
// multipart/form-data; file parts are counted and thrown away.
func readForm(r *http.Request) (fields map[string]string, uploaded int64, err error) {
	fields = map[string]string{}
	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "multipart/form-data":
		mr := multipart.NewReader(r.Body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				return fields, uploaded, nil
			}
			if err != nil {
				return nil, 0, fmt.Errorf("multipart: %w", err)
			}
			if p.FileName() != "" {
				n, err := io.Copy(io.Discard, p)
				if err != nil {
					return nil, 0, fmt.Errorf("multipart: %w", err)
				}
				uploaded += n
				continue
			}
			v, err := io.ReadAll(io.LimitReader(p, 1<<20))
			if err != nil {
				return nil, 0, fmt.Errorf("multipart: %w", err)
			}
			fields[p.FormName()] = string(v)
		}
	case "application/json":
		var m map[string]json.RawMessage
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&m); err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, fmt.Errorf("json: %w", err)
		}
		for k, v := range m {
			var s string
			if json.Unmarshal(v, &s) == nil {
				fields[k] = s
			} else {
				fields[k] = string(v)
			}
		}
	default:
		if err := r.ParseForm(); err != nil {
			return nil, 0, fmt.Errorf("form: %w", err)
		}
		for k, v := range r.Form {
			fields[k] = v[0]
		}
	}
	return fields, uploaded, nil
}

func writeAPIError(w http.ResponseWriter, status int, desc string, retryAfter int) {
	rep := map[string]any{"ok": false, "error_code": status, "description": desc}
	if retryAfter > 0 {
		rep["parameters"] = map[string]int{"retry_after": retryAfter}
	}
	body, _ := json.Marshal(rep)
	_, _ = writeJSONBytes(w, status, body)
}

// Stats is what the fake Bot API saw, for the report.
func (t *telegram) Stats() platformStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := platformStats{Methods: map[string]methodStats{}, UploadBytes: t.uploadBytes, Unmatched: t.unmatched}
	for m, st := range t.methods {
		s.Methods[m] = *st
		if telegramtest.Counted(m) {
			s.Sends += st.Calls
		}
	}
	return s
}

// jobView is a copy of one job's answers.
type jobView struct {
	Deliveries []time.Time // photos and documents
	Links      int         // the image's URL sent as text instead
	Texts      []string
	TextAt     []time.Time // when each text came (-platform discord; nil otherwise)
	Answered   bool
}

// Job returns what the bot sent in answer to user message msgID.
func (t *telegram) Job(msgID int) jobView {
	t.mu.Lock()
	defer t.mu.Unlock()
	j := t.jobs[msgID]
	if j == nil {
		return jobView{}
	}
	v := jobView{Deliveries: append([]time.Time(nil), j.deliveries...), Links: j.links, Answered: j.answered}
	sort.Slice(j.texts, func(a, b int) bool { return j.texts[a].at.Before(j.texts[b].at) })
	for _, tt := range j.texts {
		v.Texts = append(v.Texts, tt.text)
	}
	return v
}

// Chat returns what chat received.
func (t *telegram) Chat(chat int64) chatRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.chats[chat]
	if c == nil {
		return chatRecord{}
	}
	return chatRecord{FirstDelivery: c.FirstDelivery, Deliveries: c.Deliveries, Texts: append([]string(nil), c.Texts...)}
}

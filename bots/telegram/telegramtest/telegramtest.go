// Package telegramtest is a fake Telegram Bot API server for tests: an
// httptest server that answers /bot<token>/<method> the way api.telegram.org
// does, records every call (fields and uploaded files), serves injected
// updates through long-polling getUpdates, and fails calls on demand.
//
//	tg := telegramtest.New(t)
//	... point the bot at tg.URL with token tg.Token ...
//	tg.Inject(tg.PrivateText(telegramtest.User(42, "alice", "en"), "a red fox"))
//	photo := tg.WaitCall(t, "sendPhoto", 5*time.Second)
//	photo.Field("caption") ...
//
// Like Telegram it refuses what a real bot would trip over: texts with a
// parse_mode whose markup does not parse, captions over 1024 and texts over
// 4096 UTF-16 code units, empty texts and callback data over 64 bytes.
package telegramtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/go-telegram/bot/models"
)

// DefaultToken is the token New expects unless WithToken says otherwise.
const DefaultToken = "123456789:TEST-fake-token_abcdefghijklmnopqrstu"

// BotUsername is the fake bot's @username (without the @).
const BotUsername = "ImagineTestBot"

// BotID is the fake bot's user id.
const BotID int64 = 123456789

// Call is one recorded Bot API request.
type Call struct {
	Method string
	// Fields are the form fields as sent: strings as they are, anything
	// else as JSON (reply_markup, reply_parameters, media, ...).
	Fields map[string]string
	Files  []File
	Time   time.Time
	// Status is the HTTP status answered; Result the "result" sent back
	// (nil for failures).
	Status int
	Result json.RawMessage
}

// File is an uploaded file.
type File struct {
	Field    string // form field name ("photo", "document", "img0", ...)
	Filename string
	Size     int
	Data     []byte
}

// Field returns a form field ("" when absent).
func (c Call) Field(name string) string { return c.Fields[name] }

// Has reports whether the field was sent.
func (c Call) Has(name string) bool {
	_, ok := c.Fields[name]
	return ok
}

// JSON decodes a JSON-valued field into v.
func (c Call) JSON(name string, v any) error {
	s, ok := c.Fields[name]
	if !ok {
		return fmt.Errorf("telegramtest: %s has no field %q", c.Method, name)
	}
	return json.Unmarshal([]byte(s), v)
}

// ChatID is the chat_id field as a number (0 when absent or not numeric).
func (c Call) ChatID() int64 {
	id, _ := strconv.ParseInt(c.Fields["chat_id"], 10, 64)
	return id
}

// Text is the text of a sendMessage/editMessageText call, or the caption of
// an upload.
func (c Call) Text() string {
	if t, ok := c.Fields["text"]; ok {
		return t
	}
	return c.Fields["caption"]
}

// ReplyTo is reply_parameters.message_id (0 when the call is no reply).
func (c Call) ReplyTo() int {
	var rp models.ReplyParameters
	if c.JSON("reply_parameters", &rp) != nil {
		return 0
	}
	return rp.MessageID
}

// CallbackData lists the callback_data of the inline keyboard sent, if any.
func (c Call) CallbackData() []string {
	var kb models.InlineKeyboardMarkup
	if c.JSON("reply_markup", &kb) != nil {
		return nil
	}
	var out []string
	for _, row := range kb.InlineKeyboard {
		for _, b := range row {
			if b.CallbackData != "" {
				out = append(out, b.CallbackData)
			}
		}
	}
	return out
}

// File returns the uploaded file of a field.
func (c Call) File(field string) (File, bool) {
	for _, f := range c.Files {
		if f.Field == field {
			return f, true
		}
	}
	return File{}, false
}

// Message decodes the single Message the fake answered with.
func (c Call) Message() *models.Message {
	var m models.Message
	if len(c.Result) == 0 || json.Unmarshal(c.Result, &m) != nil || m.ID == 0 {
		return nil
	}
	return &m
}

// Failure is a scripted error answer.
type Failure struct {
	Status      int    // error_code and HTTP status, e.g. 429
	Description string // "Too Many Requests: retry after 1"
	RetryAfter  int    // parameters.retry_after, sent when > 0
}

// Handler answers one method: a result to send back, or a failure. It runs
// with the server's lock released.
type Handler func(c Call) (result any, fail *Failure)

// Server is the fake Bot API. Its methods are safe for concurrent use.
type Server struct {
	// URL is the API base to configure the bot with (bot.WithServerURL).
	URL string
	// Token is the bot token the server accepts.
	Token string

	srv   *httptest.Server
	files map[string][]byte // AddFile
	done  chan struct{}

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change
	calls    []Call
	cursor   map[string]int // WaitCall position per method
	updates  []pending
	nextUpd  int64
	nextMsg  int
	failures map[string][]Failure
	handlers map[string]Handler
	members  map[[2]int64]models.ChatMemberType
	me       models.User
	limits   *Limits // nil: no rate limits
}

type pending struct {
	id  int64
	raw json.RawMessage
}

// Option configures a Server.
type Option func(*Server)

// WithToken sets the accepted token.
func WithToken(token string) Option { return func(s *Server) { s.Token = token } }

// WithRateLimits makes the server enforce Telegram's published send limits
// (see Limits) and answer 429 with retry_after beyond them, as Telegram
// does. Every send* and edit* call counts; 20 ms of network jitter are
// forgiven.
func WithRateLimits() Option {
	return func(s *Server) { s.limits = NewLimits(30, 20*time.Millisecond) }
}

// TooManyRequests is how many calls the rate limits refused.
func (s *Server) TooManyRequests() int {
	if s.limits == nil {
		return 0
	}
	return s.limits.Refused()
}

// New starts a fake Bot API that is closed when the test ends.
func New(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{
		Token:    DefaultToken,
		done:     make(chan struct{}),
		changed:  make(chan struct{}),
		cursor:   map[string]int{},
		nextUpd:  1000,
		nextMsg:  1,
		failures: map[string][]Failure{},
		handlers: map[string]Handler{},
		members:  map[[2]int64]models.ChatMemberType{},
		me:       models.User{ID: BotID, IsBot: true, FirstName: "Imagine Test Bot", Username: BotUsername, CanJoinGroups: true},
	}
	for _, o := range opts {
		o(s)
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	t.Cleanup(func() {
		close(s.done) // release long polls first: Close waits for them
		s.srv.Close()
	})
	return s
}

// FailNext makes the next call of method fail with status and description
// (and parameters.retry_after when retryAfter > 0). Failures queue up.
func (s *Server) FailNext(method string, status int, description string, retryAfter int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[method] = append(s.failures[method], Failure{Status: status, Description: description, RetryAfter: retryAfter})
}

// Handle replaces the answer of method (nil restores the default).
func (s *Server) Handle(method string, h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h == nil {
		delete(s.handlers, method)
		return
	}
	s.handlers[method] = h
}

// SetChatMember sets what getChatMember answers for user in chat:
// "creator", "administrator", "member" (the default), "restricted", "left"
// or "kicked".
func (s *Server) SetChatMember(chat, user int64, status models.ChatMemberType) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.members[[2]int64{chat, user}] = status
}

// Me is the bot user getMe answers.
func (s *Server) Me() models.User {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.me
}

// Calls returns the calls of method so far ("" = every call), oldest first.
func (s *Server) Calls(method string) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.callsLocked(method)
}

func (s *Server) callsLocked(method string) []Call {
	var out []Call
	for _, c := range s.calls {
		if method == "" || c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

// WaitCall waits for the next call of method not yet returned by WaitCall
// (the first call the first time, the second the next time, ...) and fails
// the test after timeout.
func (s *Server) WaitCall(t testing.TB, method string, timeout time.Duration) Call {
	t.Helper()
	s.mu.Lock()
	n := s.cursor[method]
	s.mu.Unlock()
	calls := s.WaitCalls(t, method, n+1, timeout)
	s.mu.Lock()
	if s.cursor[method] < n+1 {
		s.cursor[method] = n + 1
	}
	s.mu.Unlock()
	return calls[n]
}

// WaitCalls waits until there are at least n calls of method and returns
// them all; it fails the test after timeout.
func (s *Server) WaitCalls(t testing.TB, method string, n int, timeout time.Duration) []Call {
	t.Helper()
	var got []Call
	ok := s.waitFor(timeout, func() bool {
		got = s.callsLocked(method)
		return len(got) >= n
	})
	if !ok {
		t.Fatalf("telegramtest: waited %s for %d %s call(s), got %d; calls: %s", timeout, n, method, len(got), s.summary())
	}
	return got
}

// WaitText waits for a successful sendMessage or editMessageText to chat
// whose text contains every fragment, and fails the test after timeout
// listing the texts seen.
func (s *Server) WaitText(t testing.TB, chat int64, timeout time.Duration, fragments ...string) Call {
	t.Helper()
	var got Call
	ok := s.WaitFor(timeout, func() bool {
		for _, c := range s.Texts(chat) {
			if containsAll(c.Text(), fragments) {
				got = c
				return true
			}
		}
		return false
	})
	if !ok {
		var texts []string
		for _, c := range s.Texts(chat) {
			texts = append(texts, c.Text())
		}
		t.Fatalf("telegramtest: no message to %d containing %q within %s; got %q", chat, fragments, timeout, texts)
	}
	return got
}

// Texts returns the successful sendMessage and editMessageText calls to
// chat, oldest first.
func (s *Server) Texts(chat int64) []Call {
	var out []Call
	for _, c := range s.Calls("") {
		if (c.Method == "sendMessage" || c.Method == "editMessageText") && c.ChatID() == chat && c.Status == http.StatusOK {
			out = append(out, c)
		}
	}
	return out
}

func containsAll(s string, fragments []string) bool {
	for _, f := range fragments {
		if !strings.Contains(s, f) {
			return false
		}
	}
	return true
}

// WaitFor waits until cond holds, re-checking after every call and
// injection (and every few milliseconds, for state outside the server), and
// reports whether it did before timeout.
func (s *Server) WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		t := time.NewTimer(min(left, 10*time.Millisecond))
		select {
		case <-ch:
			t.Stop()
		case <-t.C:
		case <-s.done:
			t.Stop()
			return cond()
		}
	}
}

// waitFor is WaitFor with cond called under s.mu.
func (s *Server) waitFor(timeout time.Duration, cond func() bool) bool {
	return s.WaitFor(timeout, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return cond()
	})
}

func (s *Server) summary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for i, c := range s.calls {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.Method)
		if c.Status != http.StatusOK {
			fmt.Fprintf(&b, "(%d)", c.Status)
		}
	}
	return "[" + b.String() + "]"
}

// notifyLocked wakes every waiter.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Inject queues an update for getUpdates. An update_id of 0 gets a fresh
// one; the id is returned.
func (s *Server) Inject(u models.Update) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.ID == 0 {
		s.nextUpd++
		u.ID = s.nextUpd
	} else if u.ID > s.nextUpd {
		s.nextUpd = u.ID
	}
	raw, err := json.Marshal(&u)
	if err != nil {
		panic("telegramtest: marshal update: " + err.Error())
	}
	s.updates = append(s.updates, pending{id: u.ID, raw: raw})
	s.notifyLocked()
	return u.ID
}

// NewUpdateID reserves a fresh update id (for updates posted to a webhook).
func (s *Server) NewUpdateID() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextUpd++
	return s.nextUpd
}

// NewMessageID reserves a fresh message id.
func (s *Server) NewMessageID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextMsg++
	return s.nextMsg
}

// Pending is the number of injected updates not yet confirmed by an offset.
func (s *Server) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.updates)
}

// User builds a Telegram user.
func User(id int64, username, lang string) models.User {
	first := username
	if first == "" {
		first = "User" + strconv.FormatInt(id, 10)
	}
	return models.User{ID: id, FirstName: first, Username: username, LanguageCode: lang}
}

// PrivateChat is the private chat with u.
func PrivateChat(u models.User) models.Chat {
	return models.Chat{ID: u.ID, Type: models.ChatTypePrivate, FirstName: u.FirstName, Username: u.Username}
}

// GroupChat is a supergroup with id (negative, e.g. -1001234567890).
func GroupChat(id int64, title string) models.Chat {
	return models.Chat{ID: id, Type: models.ChatTypeSupergroup, Title: title}
}

// Message builds a text message from from in chat with a fresh id, with a
// bot_command entity when text starts with "/".
func (s *Server) Message(chat models.Chat, from models.User, text string) *models.Message {
	m := &models.Message{
		ID:   s.NewMessageID(),
		From: &from,
		Date: int(time.Now().Unix()),
		Chat: chat,
		Text: text,
	}
	if strings.HasPrefix(text, "/") {
		end := strings.IndexFunc(text, func(r rune) bool { return r == ' ' || r == '\n' || r == '\t' })
		if end < 0 {
			end = len(text)
		}
		m.Entities = []models.MessageEntity{{Type: models.MessageEntityTypeBotCommand, Offset: 0, Length: utf16Len(text[:end])}}
	}
	return m
}

// MessageUpdate wraps m in an update (id assigned by Inject).
func MessageUpdate(m *models.Message) models.Update { return models.Update{Message: m} }

// PrivateText is an update with a private message from from.
func (s *Server) PrivateText(from models.User, text string) models.Update {
	return MessageUpdate(s.Message(PrivateChat(from), from, text))
}

// GroupText is an update with a message from from in the group chat.
func (s *Server) GroupText(chat models.Chat, from models.User, text string) models.Update {
	return MessageUpdate(s.Message(chat, from, text))
}

// AddFile makes data downloadable as fileID (getFile, then /file/bot…).
func (s *Server) AddFile(fileID string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files == nil {
		s.files = map[string][]byte{}
	}
	s.files[fileID] = data
}

func (s *Server) serveFile(w http.ResponseWriter, path string) {
	id := strings.TrimSuffix(strings.TrimPrefix(path, "photos/"), ".jpg")
	s.mu.Lock()
	data, ok := s.files[id]
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, nil)
		return
	}
	_, _ = w.Write(data)
}

// Photo is an update with a photo (registered with AddFile as fileID) and
// caption from from in chat.
func (s *Server) Photo(chat models.Chat, from models.User, fileID string, size int, caption string) models.Update {
	m := s.Message(chat, from, "")
	m.Caption = caption
	m.Photo = []models.PhotoSize{{FileID: fileID + "-small", FileUniqueID: "s-" + fileID, Width: 90, Height: 90, FileSize: 1000},
		{FileID: fileID, FileUniqueID: "u-" + fileID, Width: 1024, Height: 1024, FileSize: size}}
	return MessageUpdate(m)
}

// Reply is an update with a message from from in chat replying to to.
func (s *Server) Reply(chat models.Chat, from models.User, to *models.Message, text string) models.Update {
	m := s.Message(chat, from, text)
	m.ReplyToMessage = to
	return MessageUpdate(m)
}

// Callback is an update with a callback query pressed by from on msg's
// button carrying data. A nil msg sends an inaccessible message (date 0)
// without a chat, as for very old messages.
func (s *Server) Callback(from models.User, msg *models.Message, data string) models.Update {
	s.mu.Lock()
	s.nextUpd++
	id := "cbq" + strconv.FormatInt(s.nextUpd, 10) + "7311"
	s.mu.Unlock()
	cq := &models.CallbackQuery{ID: id, From: from, Data: data, ChatInstance: "-42"}
	if msg != nil {
		m := *msg
		if m.Date == 0 {
			m.Date = int(time.Now().Unix())
		}
		cq.Message = models.MaybeInaccessibleMessage{Type: models.MaybeInaccessibleMessageTypeMessage, Message: &m}
	} else {
		cq.Message = models.MaybeInaccessibleMessage{Type: models.MaybeInaccessibleMessageTypeInaccessibleMessage, InaccessibleMessage: &models.InaccessibleMessage{}}
	}
	return models.Update{CallbackQuery: cq}
}

// apiReply is the envelope of every Bot API answer.
type apiReply struct {
	OK          bool            `json:"ok"`
	Result      json.RawMessage `json:"result,omitempty"`
	ErrorCode   int             `json:"error_code,omitempty"`
	Description string          `json:"description,omitempty"`
	Parameters  *struct {
		RetryAfter int `json:"retry_after,omitempty"`
	} `json:"parameters,omitempty"`
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if rest, ok := strings.CutPrefix(r.URL.Path, "/file/bot"+s.Token+"/"); ok {
		s.serveFile(w, rest)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/bot")
	token, method, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || method == "" {
		writeReply(w, http.StatusNotFound, apiReply{ErrorCode: 404, Description: "Not Found"})
		return
	}
	if token != s.Token {
		writeReply(w, http.StatusUnauthorized, apiReply{ErrorCode: 401, Description: "Unauthorized"})
		return
	}
	call := Call{Method: method, Fields: map[string]string{}, Time: time.Now()}
	if err := parseBody(r, &call); err != nil {
		writeReply(w, http.StatusBadRequest, apiReply{ErrorCode: 400, Description: "Bad Request: " + err.Error()})
		return
	}

	if method == "getUpdates" {
		s.getUpdates(w, r, call)
		return
	}

	s.mu.Lock()
	var fail *Failure
	if q := s.failures[method]; len(q) > 0 {
		f := q[0]
		fail = &f
		s.failures[method] = q[1:]
	}
	h := s.handlers[method]
	s.mu.Unlock()

	var result any
	if fail == nil {
		if f := validate(call); f != nil {
			fail = f
		}
	}
	if fail == nil && s.limits != nil && Counted(method) {
		if wait := s.limits.Take(call.ChatID(), Messages(method, call.Fields["media"]), time.Now()); wait > 0 {
			secs := RetryAfter(wait)
			fail = &Failure{Status: http.StatusTooManyRequests, Description: fmt.Sprintf("Too Many Requests: retry after %d", secs), RetryAfter: secs}
		}
	}
	if fail == nil {
		if h != nil {
			result, fail = h(call)
		} else {
			result, fail = s.answer(call)
		}
	}

	var rep apiReply
	status := http.StatusOK
	if fail != nil {
		status = fail.Status
		rep = apiReply{ErrorCode: fail.Status, Description: fail.Description}
		if fail.RetryAfter > 0 {
			rep.Parameters = &struct {
				RetryAfter int `json:"retry_after,omitempty"`
			}{fail.RetryAfter}
		}
	} else {
		raw, err := json.Marshal(result)
		if err != nil {
			panic("telegramtest: marshal result: " + err.Error())
		}
		rep = apiReply{OK: true, Result: raw}
		call.Result = raw
	}
	call.Status = status

	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.notifyLocked()
	s.mu.Unlock()
	writeReply(w, status, rep)
}

func (s *Server) getUpdates(w http.ResponseWriter, r *http.Request, call Call) {
	offset, _ := strconv.ParseInt(call.Fields["offset"], 10, 64)
	timeout, _ := strconv.Atoi(call.Fields["timeout"])
	limit, _ := strconv.Atoi(call.Fields["limit"])
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	deadline := time.Now().Add(time.Duration(timeout) * time.Second)

	s.mu.Lock()
	call.Status = http.StatusOK
	s.calls = append(s.calls, call)
	s.notifyLocked()
	s.mu.Unlock()

	for {
		s.mu.Lock()
		if offset != 0 {
			// Like Telegram: an offset confirms every update before it.
			kept := s.updates[:0]
			for _, u := range s.updates {
				if u.id >= offset {
					kept = append(kept, u)
				}
			}
			s.updates = kept
		}
		var batch []json.RawMessage
		for _, u := range s.updates {
			if len(batch) == limit {
				break
			}
			batch = append(batch, u.raw)
		}
		ch := s.changed
		s.mu.Unlock()

		left := time.Until(deadline)
		if len(batch) > 0 || left <= 0 {
			if batch == nil {
				batch = []json.RawMessage{}
			}
			raw, _ := json.Marshal(batch)
			writeReply(w, http.StatusOK, apiReply{OK: true, Result: raw})
			return
		}
		t := time.NewTimer(left)
		select {
		case <-ch:
			t.Stop()
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-s.done:
			t.Stop()
			return
		}
	}
}

// answer is the default result of each method.
func (s *Server) answer(c Call) (any, *Failure) {
	switch c.Method {
	case "getMe":
		return s.Me(), nil
	case "sendMessage":
		m := s.botMessage(c)
		m.Text = c.Fields["text"]
		return m, nil
	case "editMessageText":
		m := s.botMessage(c)
		m.ID, _ = strconv.Atoi(c.Fields["message_id"])
		m.Text = c.Fields["text"]
		m.EditDate = int(time.Now().Unix())
		return m, nil
	case "getFile":
		s.mu.Lock()
		data, ok := s.files[c.Fields["file_id"]]
		s.mu.Unlock()
		if !ok {
			return nil, &Failure{Status: http.StatusBadRequest, Description: "Bad Request: invalid file_id"}
		}
		return models.File{FileID: c.Fields["file_id"], FileUniqueID: "u-" + c.Fields["file_id"], FileSize: int64(len(data)), FilePath: "photos/" + c.Fields["file_id"] + ".jpg"}, nil
	case "sendPhoto":
		m := s.botMessage(c)
		m.Caption = c.Fields["caption"]
		f, _ := c.File("photo")
		m.Photo = []models.PhotoSize{{FileID: "photo-" + strconv.Itoa(m.ID), FileUniqueID: "u" + strconv.Itoa(m.ID), Width: 1024, Height: 1024, FileSize: f.Size}}
		return m, nil
	case "sendDocument":
		m := s.botMessage(c)
		m.Caption = c.Fields["caption"]
		f, _ := c.File("document")
		m.Document = &models.Document{FileID: "doc-" + strconv.Itoa(m.ID), FileUniqueID: "u" + strconv.Itoa(m.ID), FileName: f.Filename, FileSize: int64(f.Size)}
		return m, nil
	case "sendMediaGroup":
		var media []struct {
			Type    string `json:"type"`
			Media   string `json:"media"`
			Caption string `json:"caption"`
		}
		if err := c.JSON("media", &media); err != nil || len(media) < 2 || len(media) > 10 {
			return nil, &Failure{Status: 400, Description: "Bad Request: wrong number of media in the group"}
		}
		group := "mg" + strconv.Itoa(s.NewMessageID())
		var out []*models.Message
		for _, it := range media {
			m := s.botMessage(c)
			m.MediaGroupID = group
			m.Caption = it.Caption
			m.Photo = []models.PhotoSize{{FileID: "photo-" + strconv.Itoa(m.ID), FileUniqueID: "u" + strconv.Itoa(m.ID), Width: 1024, Height: 1024}}
			out = append(out, m)
		}
		return out, nil
	case "sendChatAction", "answerCallbackQuery", "deleteMessage", "setMyCommands",
		"deleteWebhook", "setWebhook", "deleteMyCommands", "editMessageReplyMarkup":
		return true, nil
	case "getWebhookInfo":
		return map[string]any{"url": "", "has_custom_certificate": false, "pending_update_count": 0}, nil
	case "getChatMember":
		chat, _ := strconv.ParseInt(c.Fields["chat_id"], 10, 64)
		user, _ := strconv.ParseInt(c.Fields["user_id"], 10, 64)
		s.mu.Lock()
		st, ok := s.members[[2]int64{chat, user}]
		s.mu.Unlock()
		if !ok {
			st = models.ChatMemberTypeMember
		}
		u := User(user, "", "")
		return map[string]any{"status": st, "user": u, "is_anonymous": false, "can_be_edited": false}, nil
	}
	return nil, &Failure{Status: 404, Description: "Not Found"}
}

// botMessage is a new message from the bot in the call's chat.
func (s *Server) botMessage(c Call) *models.Message {
	me := s.Me()
	id := c.ChatID()
	chat := models.Chat{ID: id, Type: models.ChatTypePrivate}
	if id < 0 {
		chat.Type = models.ChatTypeSupergroup
		chat.Title = "Group " + strconv.FormatInt(id, 10)
	}
	m := &models.Message{ID: s.NewMessageID(), From: &me, Date: int(time.Now().Unix()), Chat: chat}
	if rm := c.Fields["reply_markup"]; rm != "" {
		var kb models.InlineKeyboardMarkup
		if json.Unmarshal([]byte(rm), &kb) == nil && kb.InlineKeyboard != nil {
			m.ReplyMarkup = &kb
		}
	}
	if to := c.ReplyTo(); to != 0 {
		m.ReplyToMessage = &models.Message{ID: to, Date: m.Date, Chat: chat}
	}
	return m
}

// validate refuses what Telegram refuses.
func validate(c Call) *Failure {
	bad := func(desc string) *Failure { return &Failure{Status: 400, Description: "Bad Request: " + desc} }
	if text, ok := c.Fields["text"]; ok && (c.Method == "sendMessage" || c.Method == "editMessageText") {
		switch {
		case strings.TrimSpace(text) == "":
			return bad("message text is empty")
		case utf16Len(text) > 4096:
			return bad("message is too long")
		}
		if f := checkMarkup(c.Fields["parse_mode"], text, bad); f != nil {
			return f
		}
	}
	if caption, ok := c.Fields["caption"]; ok {
		if utf16Len(caption) > 1024 {
			return bad("message caption is too long")
		}
		if f := checkMarkup(c.Fields["parse_mode"], caption, bad); f != nil {
			return f
		}
	}
	if c.Method == "sendMediaGroup" {
		var media []struct {
			Caption   string `json:"caption"`
			ParseMode string `json:"parse_mode"`
		}
		if c.JSON("media", &media) == nil {
			for _, m := range media {
				if utf16Len(m.Caption) > 1024 {
					return bad("message caption is too long")
				}
				if f := checkMarkup(m.ParseMode, m.Caption, bad); f != nil {
					return f
				}
			}
		}
	}
	for _, d := range c.CallbackData() {
		if len(d) > 64 {
			return bad("BUTTON_DATA_INVALID")
		}
	}
	if c.Method == "answerCallbackQuery" && utf16Len(c.Fields["text"]) > 200 {
		return bad("MESSAGE_TOO_LONG")
	}
	for method, field := range map[string]string{"sendPhoto": "photo", "sendDocument": "document"} {
		if _, ok := c.File(field); c.Method == method && !ok && !c.Has(field) {
			return bad("there is no " + field + " in the request")
		}
	}
	return nil
}

// checkMarkup is a strict stand-in for Telegram's entity parser: with
// MarkdownV2 every reserved character must be escaped, with HTML every "<"
// must open a tag Telegram knows and "&" must start an entity.
func checkMarkup(mode, text string, bad func(string) *Failure) *Failure {
	switch mode {
	case "":
		return nil
	case string(models.ParseModeMarkdown), string(models.ParseModeMarkdownV1):
		escaped := false
		for i, r := range text {
			if escaped {
				escaped = false
				continue
			}
			if r == '\\' {
				escaped = true
				continue
			}
			if strings.ContainsRune("_*[]()~`>#+-=|{}.!", r) {
				return bad(fmt.Sprintf("can't parse entities: Character '%c' is reserved and must be escaped with the preceding '\\' (byte offset %d)", r, i))
			}
		}
	case string(models.ParseModeHTML):
		for i := 0; i < len(text); i++ {
			switch text[i] {
			case '<':
				end := strings.IndexByte(text[i:], '>')
				if end < 0 {
					return bad(fmt.Sprintf("can't parse entities: Unclosed start tag at byte offset %d", i))
				}
				tag := strings.TrimPrefix(text[i+1:i+end], "/")
				if j := strings.IndexAny(tag, " \t\n="); j >= 0 {
					tag = tag[:j]
				}
				switch strings.ToLower(tag) {
				case "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "tg-spoiler", "span", "blockquote", "tg-emoji":
				default:
					return bad(fmt.Sprintf("can't parse entities: Unsupported start tag \"%s\" at byte offset %d", tag, i))
				}
			case '&':
				if end := strings.IndexByte(text[i:], ';'); end < 0 || end > 10 {
					return bad(fmt.Sprintf("can't parse entities: Unknown entity at byte offset %d", i))
				}
			}
		}
	default:
		return bad("unsupported parse_mode")
	}
	return nil
}

// parseBody reads multipart/form-data (what go-telegram/bot sends), JSON or
// urlencoded parameters into c.
func parseBody(r *http.Request, c *Call) error {
	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "multipart/form-data":
		mr := multipart.NewReader(r.Body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if errors.Is(err, io.EOF) { // also an empty body: methods without parameters
				return nil
			}
			if err != nil {
				return fmt.Errorf("multipart: %v", err)
			}
			data, err := io.ReadAll(p)
			if err != nil {
				return fmt.Errorf("multipart: %v", err)
			}
			if p.FileName() != "" {
				c.Files = append(c.Files, File{Field: p.FormName(), Filename: p.FileName(), Size: len(data), Data: data})
				continue
			}
			c.Fields[p.FormName()] = string(data)
		}
	case "application/json":
		var m map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil && err != io.EOF {
			return fmt.Errorf("json: %v", err)
		}
		for k, v := range m {
			var s string
			if json.Unmarshal(v, &s) == nil {
				c.Fields[k] = s
			} else {
				c.Fields[k] = string(v)
			}
		}
	default:
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return err
		}
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return fmt.Errorf("form: %v", err)
		}
		for k, v := range r.URL.Query() {
			vals[k] = v
		}
		for k, v := range vals {
			if len(v) > 0 {
				c.Fields[k] = v[0]
			}
		}
	}
	return nil
}

func writeReply(w http.ResponseWriter, status int, rep apiReply) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(rep)
}

func utf16Len(s string) int { return len(utf16.Encode([]rune(s))) }

package bolt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/imaginebot/imaginebot/core"
)

// tx is core.Tx over one bbolt transaction. With group commit one tx serves
// every fn of the group in turn; wrote tells the group whether the fn that
// just ran changed anything (and so whether its failure needs a rollback).
type tx struct {
	btx      *bbolt.Tx
	writable bool
	wrote    bool
	// indexed holds the index fields of jobs this transaction has read or
	// written, so PutJob after Job (every commit and refund) decodes once.
	indexed map[string]jobIndexRecord

	meta, accounts, scopes, jobs, pending, notices, history, audit, auditScope, limits, events *bbolt.Bucket
}

func newTx(btx *bbolt.Tx) *tx {
	return &tx{
		btx:        btx,
		writable:   btx.Writable(),
		meta:       btx.Bucket(bucketMeta),
		accounts:   btx.Bucket(bucketAccounts),
		scopes:     btx.Bucket(bucketScopes),
		jobs:       btx.Bucket(bucketJobs),
		pending:    btx.Bucket(bucketPending),
		notices:    btx.Bucket(bucketNotices),
		history:    btx.Bucket(bucketHistory),
		audit:      btx.Bucket(bucketAudit),
		auditScope: btx.Bucket(bucketAuditScope),
		limits:     btx.Bucket(bucketLimits),
		events:     btx.Bucket(bucketEvents),
	}
}

// settingPrefix keeps the bot's settings apart from schema_version in meta.
const settingPrefix = "setting:"

func (t *tx) Setting(name string) (string, bool, error) {
	v := t.meta.Get([]byte(settingPrefix + name))
	return string(v), v != nil, nil
}

func (t *tx) PutSetting(name, value string) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	t.wrote = true
	if err := t.meta.Put([]byte(settingPrefix+name), []byte(value)); err != nil {
		return fmt.Errorf("bolt: setting %s: %w", name, err)
	}
	return nil
}

func (t *tx) Account(k core.AccountKey) (core.Account, error) {
	v := t.accounts.Get(accountKey(k))
	if v == nil {
		return core.Account{Key: k}, nil
	}
	var r accountRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return core.Account{}, fmt.Errorf("bolt: account %s: %w", k, err)
	}
	return r.account(k), nil
}

func (t *tx) PutAccount(a core.Account) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	if err := checkAccountKey(a.Key); err != nil {
		return err
	}
	v, err := json.Marshal(newAccountRecord(a))
	if err != nil {
		return fmt.Errorf("bolt: account %s: %w", a.Key, err)
	}
	t.wrote = true
	if err := t.accounts.Put(accountKey(a.Key), v); err != nil {
		return fmt.Errorf("bolt: account %s: %w", a.Key, err)
	}
	return nil
}

func (t *tx) Scope(scope string) (core.ScopeSettings, error) {
	v := t.scopes.Get([]byte(scope))
	if v == nil {
		return core.ScopeSettings{Scope: scope}, nil
	}
	var r scopeRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return core.ScopeSettings{}, fmt.Errorf("bolt: scope %s: %w", scope, err)
	}
	return core.ScopeSettings{Scope: scope, Daily: r.Daily}, nil
}

func (t *tx) PutScope(s core.ScopeSettings) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	if s.Scope == "" || strings.IndexByte(s.Scope, 0) >= 0 {
		return fmt.Errorf("bolt: scope %q: empty or contains NUL", s.Scope)
	}
	v, err := json.Marshal(scopeRecord{Scope: s.Scope, Daily: s.Daily})
	if err != nil {
		return fmt.Errorf("bolt: scope %s: %w", s.Scope, err)
	}
	t.wrote = true
	if err := t.scopes.Put([]byte(s.Scope), v); err != nil {
		return fmt.Errorf("bolt: scope %s: %w", s.Scope, err)
	}
	return nil
}

func (t *tx) Job(key string) (core.Job, bool, error) {
	v := t.jobs.Get([]byte(key))
	if v == nil {
		return core.Job{}, false, nil
	}
	j, err := decodeJob(v)
	if err != nil {
		return core.Job{}, false, fmt.Errorf("bolt: job %s: %w", key, err)
	}
	if t.writable {
		t.remember(j)
	}
	return j, true, nil
}

func (t *tx) PutJob(j core.Job) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	if j.Key == "" || strings.IndexByte(j.Key, 0) >= 0 {
		return fmt.Errorf("bolt: job %q: empty key or contains NUL", j.Key)
	}
	if err := checkAccountKey(j.Account); err != nil {
		return err
	}
	key := []byte(j.Key)
	hkey := historyKey(j.Account, j.Created, j.Key)
	wasPending, wasOwed, oldHistory := false, false, []byte(nil)
	o, ok := t.indexed[j.Key]
	if !ok {
		if old := t.jobs.Get(key); old != nil {
			if err := json.Unmarshal(old, &o); err != nil {
				return fmt.Errorf("bolt: job %s: %w", j.Key, err)
			}
			ok = true
		}
	}
	if ok {
		wasPending, wasOwed = o.State == core.JobPending, o.NoticeOwed
		oldHistory = historyKey(core.AccountKey{Scope: o.Scope, User: o.User}, o.Created, j.Key)
	}
	v, err := json.Marshal(newJobRecord(j))
	if err != nil {
		return fmt.Errorf("bolt: job %s: %w", j.Key, err)
	}
	// Index entries are only touched when they change: every Put or Delete
	// dirties a page that the commit must write.
	t.wrote = true
	if err := t.jobs.Put(key, v); err != nil {
		return fmt.Errorf("bolt: job %s: %w", j.Key, err)
	}
	switch isPending := j.State == core.JobPending; {
	case isPending && !wasPending:
		err = t.pending.Put(key, []byte{})
	case !isPending && wasPending:
		err = t.pending.Delete(key)
	}
	if err != nil {
		return fmt.Errorf("bolt: job %s: pending index: %w", j.Key, err)
	}
	switch {
	case j.NoticeOwed && !wasOwed:
		err = t.notices.Put(key, []byte{})
	case !j.NoticeOwed && wasOwed:
		err = t.notices.Delete(key)
	}
	if err != nil {
		return fmt.Errorf("bolt: job %s: notices index: %w", j.Key, err)
	}
	if !bytes.Equal(hkey, oldHistory) {
		if oldHistory != nil {
			err = t.history.Delete(oldHistory)
		}
		if err == nil {
			err = t.history.Put(hkey, key)
		}
		if err != nil {
			return fmt.Errorf("bolt: job %s: history: %w", j.Key, err)
		}
	}
	t.remember(j)
	return nil
}

func (t *tx) remember(j core.Job) {
	if t.indexed == nil {
		t.indexed = map[string]jobIndexRecord{}
	}
	t.indexed[j.Key] = jobIndexRecord{Scope: j.Account.Scope, User: j.Account.User, State: j.State, Created: j.Created, NoticeOwed: j.NoticeOwed}
}

func (t *tx) AppendAudit(e core.AuditEntry) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	if strings.IndexByte(e.Scope, 0) >= 0 {
		return fmt.Errorf("bolt: audit: scope %q contains NUL", e.Scope)
	}
	v, err := json.Marshal(newAuditRecord(e))
	if err != nil {
		return fmt.Errorf("bolt: audit: %w", err)
	}
	t.wrote = true
	n, err := t.audit.NextSequence()
	if err != nil {
		return fmt.Errorf("bolt: audit: %w", err)
	}
	seq := binary.BigEndian.AppendUint64(nil, n)
	if err := t.audit.Put(seq, v); err != nil {
		return fmt.Errorf("bolt: audit: %w", err)
	}
	if e.Scope != "" {
		if err := t.auditScope.Put(append([]byte(e.Scope+"\x00"), seq...), []byte{}); err != nil {
			return fmt.Errorf("bolt: audit: scope index: %w", err)
		}
	}
	return nil
}

func (t *tx) Limit(user string) (core.UserLimit, error) {
	v := t.limits.Get([]byte(user))
	if v == nil {
		return core.UserLimit{User: user}, nil
	}
	var r limitRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return core.UserLimit{}, fmt.Errorf("bolt: limit of %s: %w", user, err)
	}
	return core.UserLimit{User: user, Tokens: r.Tokens, At: r.At, InFlight: r.InFlight}, nil
}

func (t *tx) PutLimit(l core.UserLimit) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	if l.User == "" || strings.IndexByte(l.User, 0) >= 0 {
		return fmt.Errorf("bolt: limit of %q: empty user or contains NUL", l.User)
	}
	v, err := json.Marshal(limitRecord{User: l.User, Tokens: l.Tokens, At: l.At, InFlight: l.InFlight})
	if err != nil {
		return fmt.Errorf("bolt: limit of %s: %w", l.User, err)
	}
	t.wrote = true
	if err := t.limits.Put([]byte(l.User), v); err != nil {
		return fmt.Errorf("bolt: limit of %s: %w", l.User, err)
	}
	return nil
}

// Claim is fresh when the events bucket lacks key, and then puts it there,
// in this transaction: a rollback (of the group, when another fn fails)
// takes the claim back with everything else.
func (t *tx) Claim(key string, at time.Time) (bool, error) {
	if !t.writable {
		return false, core.ErrTxReadOnly
	}
	if key == "" || strings.IndexByte(key, 0) >= 0 {
		return false, fmt.Errorf("bolt: event %q: empty key or contains NUL", key)
	}
	if t.events.Get([]byte(key)) != nil {
		return false, nil
	}
	v, err := at.MarshalText()
	if err != nil {
		return false, fmt.Errorf("bolt: event %s: %w", key, err)
	}
	t.wrote = true
	if err := t.events.Put([]byte(key), v); err != nil {
		return false, fmt.Errorf("bolt: event %s: %w", key, err)
	}
	return true, nil
}

func checkAccountKey(k core.AccountKey) error {
	if k.Scope == "" || k.User == "" || strings.IndexByte(k.Scope, 0) >= 0 || strings.IndexByte(k.User, 0) >= 0 {
		return fmt.Errorf("bolt: account %q/%q: empty or contains NUL", k.Scope, k.User)
	}
	return nil
}

func accountKey(k core.AccountKey) []byte {
	b := make([]byte, 0, len(k.Scope)+1+len(k.User))
	b = append(b, k.Scope...)
	b = append(b, 0)
	return append(b, k.User...)
}

// historyPrefix is the part of the history keys shared by one account's jobs.
func historyPrefix(k core.AccountKey) []byte {
	b := make([]byte, 0, len(k.Scope)+len(k.User)+2+8+1+32)
	b = append(b, k.Scope...)
	b = append(b, 0)
	b = append(b, k.User...)
	return append(b, 0)
}

func historyKey(k core.AccountKey, created time.Time, job string) []byte {
	b := binary.BigEndian.AppendUint64(historyPrefix(k), sortableNanos(created))
	b = append(b, 0)
	return append(b, job...)
}

// sortableNanos maps t to a uint64 whose big-endian bytes sort like the
// times: Unix nanoseconds, clamped to int64, with the sign bit flipped.
func sortableNanos(t time.Time) uint64 {
	return uint64(core.UnixNano(t)) ^ (1 << 63)
}

// The records below are the stored JSON. They are separate from the core
// types so that renaming a Go field never changes the file format.

type accountRecord struct {
	Scope   string `json:"scope"`
	User    string `json:"user"`
	Daily   *int   `json:"daily,omitempty"` // absent = follow the scope; 0 = none
	Credits int    `json:"credits"`
	UsedDay string `json:"used_day,omitempty"`
	Used    int    `json:"used,omitempty"`
	Banned  bool   `json:"banned,omitempty"`
	Model   string `json:"model,omitempty"` // the user's /settings
	Aspect  string `json:"aspect,omitempty"`
	Lang    string `json:"lang,omitempty"`
}

func newAccountRecord(a core.Account) accountRecord {
	return accountRecord{Scope: a.Key.Scope, User: a.Key.User, Daily: a.Daily, Credits: a.Credits,
		UsedDay: a.UsedDay, Used: a.Used, Banned: a.Banned, Model: a.Prefs.Model, Aspect: a.Prefs.Aspect, Lang: string(a.Prefs.Lang)}
}

func (r accountRecord) account(k core.AccountKey) core.Account {
	return core.Account{Key: k, Daily: r.Daily, Credits: r.Credits, UsedDay: r.UsedDay, Used: r.Used, Banned: r.Banned,
		Prefs: core.Prefs{Model: r.Model, Aspect: r.Aspect, Lang: core.Lang(r.Lang)}}
}

type scopeRecord struct {
	Scope string `json:"scope"`
	Daily *int   `json:"daily,omitempty"`
}

type jobRecord struct {
	Key          string         `json:"key"`
	Scope        string         `json:"scope"`
	User         string         `json:"user"`
	UserPlatform string         `json:"user_platform,omitempty"`
	UserID       string         `json:"user_id,omitempty"`
	UserName     string         `json:"user_name,omitempty"`
	Model        string         `json:"model,omitempty"`
	Prompt       string         `json:"prompt,omitempty"`
	Negative     string         `json:"negative,omitempty"`
	Aspect       string         `json:"aspect,omitempty"`
	Units        int            `json:"units"`
	Day          string         `json:"day,omitempty"`
	FromDaily    int            `json:"from_daily,omitempty"`
	FromCredits  int            `json:"from_credits,omitempty"`
	State        string         `json:"state"`
	Outcome      string         `json:"outcome,omitempty"`
	ReplyTo      string         `json:"reply_to,omitempty"`
	Status       string         `json:"status,omitempty"`
	Delivering   bool           `json:"delivering,omitempty"`
	NoticeOwed   bool           `json:"notice_owed,omitempty"`
	Lang         string         `json:"lang,omitempty"`
	Task         string         `json:"task,omitempty"` // a Midjourney result's task and buttons
	Buttons      []buttonRecord `json:"buttons,omitempty"`
	Owner        string         `json:"owner,omitempty"` // the instance running the job
	Lease        time.Time      `json:"lease,omitzero"`  // until when the owner vouches for it
	CancelledBy  string         `json:"cancelled_by,omitempty"`
	Created      time.Time      `json:"created"`
	Finished     time.Time      `json:"finished,omitzero"`
}

// jobIndexRecord is the part of a stored job that its index entries depend on.
type jobIndexRecord struct {
	Scope      string        `json:"scope"`
	User       string        `json:"user"`
	State      core.JobState `json:"state"`
	Created    time.Time     `json:"created"`
	NoticeOwed bool          `json:"notice_owed,omitempty"`
}

func newJobRecord(j core.Job) jobRecord {
	return jobRecord{
		Key: j.Key, Scope: j.Account.Scope, User: j.Account.User,
		UserPlatform: string(j.User.Platform), UserID: j.User.ID, UserName: j.User.Name,
		Model: j.Model, Prompt: j.Prompt, Negative: j.Options.Negative, Aspect: j.Options.Aspect,
		Units: j.Units, Day: j.Day,
		FromDaily: j.FromDaily, FromCredits: j.FromCredits,
		State: string(j.State), Outcome: string(j.Outcome), ReplyTo: j.ReplyTo, Lang: string(j.Lang),
		Status: j.Status, Delivering: j.Delivering, NoticeOwed: j.NoticeOwed,
		Task: j.Task, Buttons: newButtonRecords(j.Buttons),
		Owner: j.Owner, Lease: j.Lease, CancelledBy: j.CancelledBy,
		Created: j.Created, Finished: j.Finished,
	}
}

type buttonRecord struct {
	CustomID string `json:"id"`
	Label    string `json:"label,omitempty"`
	Emoji    string `json:"emoji,omitempty"`
}

func newButtonRecords(bs []core.TaskButton) []buttonRecord {
	var out []buttonRecord
	for _, b := range bs {
		out = append(out, buttonRecord{CustomID: b.CustomID, Label: b.Label, Emoji: b.Emoji})
	}
	return out
}

func taskButtons(rs []buttonRecord) []core.TaskButton {
	var out []core.TaskButton
	for _, r := range rs {
		out = append(out, core.TaskButton{CustomID: r.CustomID, Label: r.Label, Emoji: r.Emoji})
	}
	return out
}

func decodeJob(v []byte) (core.Job, error) {
	var r jobRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return core.Job{}, err
	}
	return core.Job{
		Key:     r.Key,
		Account: core.AccountKey{Scope: r.Scope, User: r.User},
		User:    core.User{Platform: core.Platform(r.UserPlatform), ID: r.UserID, Name: r.UserName},
		Model:   r.Model, Prompt: r.Prompt, Options: core.Options{Negative: r.Negative, Aspect: r.Aspect},
		Units: r.Units, Day: r.Day,
		FromDaily: r.FromDaily, FromCredits: r.FromCredits,
		State: core.JobState(r.State), Outcome: core.Code(r.Outcome), ReplyTo: r.ReplyTo, Lang: core.Lang(r.Lang),
		Status: r.Status, Delivering: r.Delivering, NoticeOwed: r.NoticeOwed,
		Task: r.Task, Buttons: taskButtons(r.Buttons),
		Owner: r.Owner, Lease: r.Lease, CancelledBy: r.CancelledBy,
		Created: r.Created, Finished: r.Finished,
	}, nil
}

// limitRecord is a user's stored per-user limits (core.UserLimit).
type limitRecord struct {
	User     string    `json:"user"`
	Tokens   float64   `json:"tokens"`
	At       time.Time `json:"at,omitzero"` // zero = never limited (a full bucket)
	InFlight int       `json:"in_flight,omitempty"`
}

type auditRecord struct {
	Time      time.Time `json:"time"`
	Scope     string    `json:"scope,omitempty"`
	Actor     string    `json:"actor"`
	ActorName string    `json:"actor_name,omitempty"`
	Role      string    `json:"role"`
	Action    string    `json:"action"`
	Target    string    `json:"target,omitempty"`
	Before    string    `json:"before,omitempty"`
	After     string    `json:"after,omitempty"`
	Note      string    `json:"note,omitempty"`
}

func newAuditRecord(e core.AuditEntry) auditRecord {
	return auditRecord{Time: e.Time, Scope: e.Scope, Actor: e.Actor, ActorName: e.ActorName,
		Role: e.Role.String(), Action: e.Action, Target: e.Target, Before: e.Before, After: e.After, Note: e.Note}
}

func (r auditRecord) entry() core.AuditEntry {
	return core.AuditEntry{Time: r.Time, Scope: r.Scope, Actor: r.Actor, ActorName: r.ActorName,
		Role: parseRole(r.Role), Action: r.Action, Target: r.Target, Before: r.Before, After: r.After, Note: r.Note}
}

// parseRole reads the role by name, so the file does not depend on the
// order of core's Role constants.
func parseRole(s string) core.Role {
	for _, r := range []core.Role{core.RoleOwner, core.RoleModerator} {
		if s == r.String() {
			return r
		}
	}
	return core.RoleUser
}

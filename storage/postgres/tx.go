package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/imaginebot/imaginebot/core"
)

// tx is core.Tx over one PostgreSQL transaction. How each table is read and
// written in a read-write transaction is the concurrency design of the
// package documentation: accounts, jobs and user limits are locked when
// read, scopes and settings are compared when written, a row read as missing
// is inserted without ON CONFLICT, so that a concurrent insert makes this one
// retry, and an event is claimed by inserting its key.
type tx struct {
	ctx      context.Context
	ptx      pgx.Tx
	writable bool
	// err is the first statement that failed: PostgreSQL has aborted the
	// transaction, so every later call returns it without a round trip.
	err error
	// missing holds the rows (table + "\x00" + key) read as absent and not
	// inserted since.
	missing map[string]bool
	// scopes and settings hold the values read of rows that exist, for the
	// compare-and-set of their writes.
	scopes   map[string]*int64
	settings map[string]string
}

func newTx(ctx context.Context, ptx pgx.Tx, writable bool) *tx {
	return &tx{ctx: ctx, ptx: ptx, writable: writable, missing: map[string]bool{},
		scopes: map[string]*int64{}, settings: map[string]string{}}
}

// fail records a failed statement (the transaction is now aborted) and
// returns it, marked for a retry when it was a conflict.
func (t *tx) fail(err error, format string, args ...any) error {
	err = classify(fmt.Errorf("postgres: "+format+": %w", append(args, err)...))
	if t.err == nil {
		t.err = err
	}
	return err
}

// conflict records that a row changed under this transaction: fn runs again.
func (t *tx) conflict(format string, args ...any) error {
	err := fmt.Errorf("%w: "+format, append([]any{errRetry}, args...)...)
	if t.err == nil {
		t.err = err
	}
	return err
}

// insertFailed is fail for the INSERT of a row read as missing: a unique
// violation means a concurrent transaction inserted it first.
func (t *tx) insertFailed(err error, format string, args ...any) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == sqlUniqueViolation {
		return t.conflict(format+": inserted meanwhile by another transaction", args...)
	}
	return t.fail(err, format, args...)
}

// forUpdate locks the rows a read-write transaction reads.
func (t *tx) forUpdate() string {
	if t.writable {
		return " FOR UPDATE"
	}
	return ""
}

func rowKey(table, key string) string { return table + "\x00" + key }

func (t *tx) Setting(name string) (string, bool, error) {
	if t.err != nil {
		return "", false, t.err
	}
	var v string
	err := t.ptx.QueryRow(t.ctx, `SELECT value FROM settings WHERE name = $1`, name).Scan(&v)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if t.writable {
			t.missing[rowKey("settings", name)] = true
		}
		return "", false, nil
	case err != nil:
		return "", false, t.fail(err, "setting %s", name)
	}
	if t.writable {
		if t.missing[rowKey("settings", name)] {
			return "", false, t.conflict("setting %s", name)
		}
		t.settings[name] = v
	}
	return v, true, nil
}

func (t *tx) PutSetting(name, value string) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	if t.err != nil {
		return t.err
	}
	if strings.IndexByte(name, 0) >= 0 || strings.IndexByte(value, 0) >= 0 {
		return fmt.Errorf("postgres: setting %q: contains NUL", name)
	}
	k := rowKey("settings", name)
	if old, ok := t.settings[name]; ok {
		tag, err := t.ptx.Exec(t.ctx, `UPDATE settings SET value = $2 WHERE name = $1 AND value = $3`, name, value, old)
		if err != nil {
			return t.fail(err, "setting %s", name)
		}
		if tag.RowsAffected() == 0 {
			return t.conflict("setting %s changed meanwhile", name)
		}
	} else if t.missing[k] {
		if _, err := t.ptx.Exec(t.ctx, `INSERT INTO settings (name, value) VALUES ($1, $2)`, name, value); err != nil {
			return t.insertFailed(err, "setting %s", name)
		}
		delete(t.missing, k)
	} else {
		_, err := t.ptx.Exec(t.ctx, `INSERT INTO settings (name, value) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value`, name, value)
		if err != nil {
			return t.fail(err, "setting %s", name)
		}
	}
	t.settings[name] = value
	return nil
}

const accountColumns = `daily, credits, used_day, used, banned, model, aspect, lang`

func (t *tx) Account(k core.AccountKey) (core.Account, error) {
	if t.err != nil {
		return core.Account{}, t.err
	}
	var (
		a     = core.Account{Key: k}
		daily *int64
		lang  string
	)
	err := t.ptx.QueryRow(t.ctx, `SELECT `+accountColumns+` FROM accounts WHERE scope = $1 AND usr = $2`+t.forUpdate(),
		k.Scope, k.User).Scan(&daily, &a.Credits, &a.UsedDay, &a.Used, &a.Banned, &a.Prefs.Model, &a.Prefs.Aspect, &lang)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if t.writable {
			t.missing[rowKey("accounts", accountKey(k))] = true
		}
		return core.Account{Key: k}, nil
	case err != nil:
		return core.Account{}, t.fail(err, "account %s", k)
	}
	if t.writable && t.missing[rowKey("accounts", accountKey(k))] {
		return core.Account{}, t.conflict("account %s", k)
	}
	a.Daily, a.Prefs.Lang = intPtr(daily), core.Lang(lang)
	return a, nil
}

func (t *tx) PutAccount(a core.Account) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	if t.err != nil {
		return t.err
	}
	if err := checkAccountKey(a.Key); err != nil {
		return err
	}
	const insert = `INSERT INTO accounts (scope, usr, ` + accountColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`
	args := []any{a.Key.Scope, a.Key.User, a.Daily, a.Credits, a.UsedDay, a.Used, a.Banned, a.Prefs.Model, a.Prefs.Aspect, string(a.Prefs.Lang)}
	k := rowKey("accounts", accountKey(a.Key))
	if t.missing[k] {
		if _, err := t.ptx.Exec(t.ctx, insert, args...); err != nil {
			return t.insertFailed(err, "account %s", a.Key)
		}
		delete(t.missing, k)
		return nil
	}
	// Read first (and so locked by this transaction), or written blind.
	_, err := t.ptx.Exec(t.ctx, insert+` ON CONFLICT (scope, usr) DO UPDATE SET daily = EXCLUDED.daily,
		credits = EXCLUDED.credits, used_day = EXCLUDED.used_day, used = EXCLUDED.used, banned = EXCLUDED.banned,
		model = EXCLUDED.model, aspect = EXCLUDED.aspect, lang = EXCLUDED.lang`, args...)
	if err != nil {
		return t.fail(err, "account %s", a.Key)
	}
	return nil
}

func (t *tx) Scope(scope string) (core.ScopeSettings, error) {
	if t.err != nil {
		return core.ScopeSettings{}, t.err
	}
	var daily *int64
	err := t.ptx.QueryRow(t.ctx, `SELECT daily FROM scopes WHERE scope = $1`, scope).Scan(&daily)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if t.writable {
			t.missing[rowKey("scopes", scope)] = true
		}
		return core.ScopeSettings{Scope: scope}, nil
	case err != nil:
		return core.ScopeSettings{}, t.fail(err, "scope %s", scope)
	}
	if t.writable {
		if t.missing[rowKey("scopes", scope)] {
			return core.ScopeSettings{}, t.conflict("scope %s", scope)
		}
		t.scopes[scope] = daily
	}
	return core.ScopeSettings{Scope: scope, Daily: intPtr(daily)}, nil
}

func (t *tx) PutScope(s core.ScopeSettings) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	if t.err != nil {
		return t.err
	}
	if s.Scope == "" || strings.IndexByte(s.Scope, 0) >= 0 {
		return fmt.Errorf("postgres: scope %q: empty or contains NUL", s.Scope)
	}
	k := rowKey("scopes", s.Scope)
	if old, ok := t.scopes[s.Scope]; ok {
		tag, err := t.ptx.Exec(t.ctx, `UPDATE scopes SET daily = $2 WHERE scope = $1 AND daily IS NOT DISTINCT FROM $3`, s.Scope, s.Daily, old)
		if err != nil {
			return t.fail(err, "scope %s", s.Scope)
		}
		if tag.RowsAffected() == 0 {
			return t.conflict("scope %s changed meanwhile", s.Scope)
		}
	} else if t.missing[k] {
		if _, err := t.ptx.Exec(t.ctx, `INSERT INTO scopes (scope, daily) VALUES ($1, $2)`, s.Scope, s.Daily); err != nil {
			return t.insertFailed(err, "scope %s", s.Scope)
		}
		delete(t.missing, k)
	} else {
		_, err := t.ptx.Exec(t.ctx, `INSERT INTO scopes (scope, daily) VALUES ($1, $2)
			ON CONFLICT (scope) DO UPDATE SET daily = EXCLUDED.daily`, s.Scope, s.Daily)
		if err != nil {
			return t.fail(err, "scope %s", s.Scope)
		}
	}
	t.scopes[s.Scope] = int64Ptr(s.Daily)
	return nil
}

const jobColumns = `key, scope, usr, user_platform, user_id, user_name, model, prompt, negative, aspect,
	units, day, from_daily, from_credits, state, outcome, reply_to, status, delivering, notice_owed, lang,
	task, buttons, created_ns, finished_ns, owner, lease_ns, cancelled_by`

func (t *tx) Job(key string) (core.Job, bool, error) {
	if t.err != nil {
		return core.Job{}, false, t.err
	}
	j, err := scanJob(t.ptx.QueryRow(t.ctx, `SELECT `+jobColumns+` FROM jobs WHERE key = $1`+t.forUpdate(), key))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if t.writable {
			t.missing[rowKey("jobs", key)] = true
		}
		return core.Job{}, false, nil
	case err != nil:
		return core.Job{}, false, t.fail(err, "job %s", key)
	}
	if t.writable && t.missing[rowKey("jobs", key)] {
		return core.Job{}, false, t.conflict("job %s", key)
	}
	return j, true, nil
}

func (t *tx) PutJob(j core.Job) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	if t.err != nil {
		return t.err
	}
	if j.Key == "" || strings.IndexByte(j.Key, 0) >= 0 {
		return fmt.Errorf("postgres: job %q: empty key or contains NUL", j.Key)
	}
	if err := checkAccountKey(j.Account); err != nil {
		return err
	}
	const insert = `INSERT INTO jobs (` + jobColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
		$11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)`
	buttons, err := encodeButtons(j.Buttons)
	if err != nil {
		return fmt.Errorf("postgres: job %s: %w", j.Key, err)
	}
	args := []any{j.Key, j.Account.Scope, j.Account.User, string(j.User.Platform), j.User.ID, j.User.Name,
		j.Model, j.Prompt, j.Options.Negative, j.Options.Aspect,
		j.Units, j.Day, j.FromDaily, j.FromCredits, string(j.State), string(j.Outcome), j.ReplyTo, j.Status,
		j.Delivering, j.NoticeOwed, string(j.Lang), j.Task, buttons, nanos(j.Created), nanos(j.Finished),
		j.Owner, nanos(j.Lease), j.CancelledBy}
	k := rowKey("jobs", j.Key)
	if t.missing[k] {
		// The reservation of a new event: when another instance got the
		// same event first, the primary key refuses this insert and the
		// retry finds its job (core reports the duplicate).
		if _, err := t.ptx.Exec(t.ctx, insert, args...); err != nil {
			return t.insertFailed(err, "job %s", j.Key)
		}
		delete(t.missing, k)
		return nil
	}
	_, err = t.ptx.Exec(t.ctx, insert+` ON CONFLICT (key) DO UPDATE SET scope = EXCLUDED.scope, usr = EXCLUDED.usr,
		user_platform = EXCLUDED.user_platform, user_id = EXCLUDED.user_id, user_name = EXCLUDED.user_name,
		model = EXCLUDED.model, prompt = EXCLUDED.prompt, negative = EXCLUDED.negative, aspect = EXCLUDED.aspect,
		units = EXCLUDED.units, day = EXCLUDED.day, from_daily = EXCLUDED.from_daily, from_credits = EXCLUDED.from_credits,
		state = EXCLUDED.state, outcome = EXCLUDED.outcome, reply_to = EXCLUDED.reply_to, status = EXCLUDED.status,
		delivering = EXCLUDED.delivering, notice_owed = EXCLUDED.notice_owed, lang = EXCLUDED.lang,
		task = EXCLUDED.task, buttons = EXCLUDED.buttons, created_ns = EXCLUDED.created_ns, finished_ns = EXCLUDED.finished_ns,
		owner = EXCLUDED.owner, lease_ns = EXCLUDED.lease_ns, cancelled_by = EXCLUDED.cancelled_by`, args...)
	if err != nil {
		return t.fail(err, "job %s", j.Key)
	}
	return nil
}

func (t *tx) AppendAudit(e core.AuditEntry) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	if t.err != nil {
		return t.err
	}
	_, err := t.ptx.Exec(t.ctx, `INSERT INTO audit (time_ns, scope, actor, actor_name, role, action, target, before, after, note)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		nanos(e.Time), e.Scope, e.Actor, e.ActorName, e.Role.String(), e.Action, e.Target, e.Before, e.After, e.Note)
	if err != nil {
		return t.fail(err, "audit")
	}
	return nil
}

// Limit reads a user's limits like an account: locked in a read-write
// transaction (every reservation of the user reads and rewrites them), and
// a row read as missing is remembered, for PutLimit's plain INSERT.
func (t *tx) Limit(user string) (core.UserLimit, error) {
	if t.err != nil {
		return core.UserLimit{}, t.err
	}
	var (
		l  = core.UserLimit{User: user}
		at *int64
	)
	err := t.ptx.QueryRow(t.ctx, `SELECT tokens, at_ns, in_flight FROM user_limits WHERE usr = $1`+t.forUpdate(),
		user).Scan(&l.Tokens, &at, &l.InFlight)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if t.writable {
			t.missing[rowKey("user_limits", user)] = true
		}
		return core.UserLimit{User: user}, nil
	case err != nil:
		return core.UserLimit{}, t.fail(err, "limit of %s", user)
	}
	if t.writable && t.missing[rowKey("user_limits", user)] {
		return core.UserLimit{}, t.conflict("limit of %s", user)
	}
	l.At = fromNanos(at)
	return l, nil
}

func (t *tx) PutLimit(l core.UserLimit) error {
	if !t.writable {
		return core.ErrTxReadOnly
	}
	if t.err != nil {
		return t.err
	}
	if l.User == "" || strings.IndexByte(l.User, 0) >= 0 {
		return fmt.Errorf("postgres: limit of %q: empty user or contains NUL", l.User)
	}
	const insert = `INSERT INTO user_limits (usr, tokens, at_ns, in_flight) VALUES ($1, $2, $3, $4)`
	args := []any{l.User, l.Tokens, nanos(l.At), l.InFlight}
	k := rowKey("user_limits", l.User)
	if t.missing[k] {
		// Read as missing: when another transaction inserted the row
		// meanwhile, the primary key refuses this and fn runs again.
		if _, err := t.ptx.Exec(t.ctx, insert, args...); err != nil {
			return t.insertFailed(err, "limit of %s", l.User)
		}
		delete(t.missing, k)
		return nil
	}
	// Read first (and so locked by this transaction), or written blind.
	_, err := t.ptx.Exec(t.ctx, insert+` ON CONFLICT (usr) DO UPDATE SET tokens = EXCLUDED.tokens,
		at_ns = EXCLUDED.at_ns, in_flight = EXCLUDED.in_flight`, args...)
	if err != nil {
		return t.fail(err, "limit of %s", l.User)
	}
	return nil
}

// Claim inserts the event's key, doing nothing when it is there: fresh is
// whether this transaction inserted it. At READ COMMITTED, an insert of the
// same key by a transaction not yet committed makes this one wait for it,
// then do nothing when it committed (or insert, when it rolled back): the
// event acts once without a retry.
func (t *tx) Claim(key string, at time.Time) (bool, error) {
	if !t.writable {
		return false, core.ErrTxReadOnly
	}
	if t.err != nil {
		return false, t.err
	}
	if key == "" || strings.IndexByte(key, 0) >= 0 {
		return false, fmt.Errorf("postgres: event %q: empty key or contains NUL", key)
	}
	tag, err := t.ptx.Exec(t.ctx, `INSERT INTO events (key, at_ns) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`,
		key, core.UnixNano(at))
	if err != nil {
		return false, t.fail(err, "event %s", key)
	}
	return tag.RowsAffected() == 1, nil
}

func scanJob(row pgx.Row) (core.Job, error) {
	var (
		j                              core.Job
		platform, state, outcome, lang string
		created, finished, lease       *int64
		buttons                        []byte
	)
	err := row.Scan(&j.Key, &j.Account.Scope, &j.Account.User, &platform, &j.User.ID, &j.User.Name,
		&j.Model, &j.Prompt, &j.Options.Negative, &j.Options.Aspect,
		&j.Units, &j.Day, &j.FromDaily, &j.FromCredits, &state, &outcome, &j.ReplyTo, &j.Status,
		&j.Delivering, &j.NoticeOwed, &lang, &j.Task, &buttons, &created, &finished,
		&j.Owner, &lease, &j.CancelledBy)
	if err != nil {
		return core.Job{}, err
	}
	if j.Buttons, err = decodeButtons(buttons); err != nil {
		return core.Job{}, fmt.Errorf("job %s: buttons: %w", j.Key, err)
	}
	j.User.Platform, j.State, j.Outcome, j.Lang = core.Platform(platform), core.JobState(state), core.Code(outcome), core.Lang(lang)
	j.Created, j.Finished, j.Lease = fromNanos(created), fromNanos(finished), fromNanos(lease)
	return j, nil
}

// buttonRecord is a task button as stored in jobs.buttons, named like
// storage/bolt's so the two read alike.
type buttonRecord struct {
	CustomID string `json:"id"`
	Label    string `json:"label,omitempty"`
	Emoji    string `json:"emoji,omitempty"`
}

// encodeButtons is the JSON of bs, or NULL when there are none.
func encodeButtons(bs []core.TaskButton) ([]byte, error) {
	if len(bs) == 0 {
		return nil, nil
	}
	rs := make([]buttonRecord, len(bs))
	for i, b := range bs {
		rs[i] = buttonRecord{CustomID: b.CustomID, Label: b.Label, Emoji: b.Emoji}
	}
	return json.Marshal(rs)
}

func decodeButtons(v []byte) ([]core.TaskButton, error) {
	if v == nil {
		return nil, nil
	}
	var rs []buttonRecord
	if err := json.Unmarshal(v, &rs); err != nil {
		return nil, err
	}
	var out []core.TaskButton
	for _, r := range rs {
		out = append(out, core.TaskButton{CustomID: r.CustomID, Label: r.Label, Emoji: r.Emoji})
	}
	return out, nil
}

func checkAccountKey(k core.AccountKey) error {
	if k.Scope == "" || k.User == "" || strings.IndexByte(k.Scope, 0) >= 0 || strings.IndexByte(k.User, 0) >= 0 {
		return fmt.Errorf("postgres: account %q/%q: empty or contains NUL", k.Scope, k.User)
	}
	return nil
}

func accountKey(k core.AccountKey) string { return k.Scope + "\x00" + k.User }

// nanos stores t as Unix nanoseconds, clamped to what int64 holds (years
// 1678 to 2262); the zero time is NULL.
func nanos(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	n := core.UnixNano(t)
	return &n
}

func fromNanos(n *int64) time.Time {
	if n == nil {
		return time.Time{}
	}
	return time.Unix(0, *n).UTC()
}

func intPtr(p *int64) *int {
	if p == nil {
		return nil
	}
	v := int(*p)
	return &v
}

func int64Ptr(p *int) *int64 {
	if p == nil {
		return nil
	}
	v := int64(*p)
	return &v
}

// parseRole reads the role by name, so the table does not depend on the
// order of core's Role constants.
func parseRole(s string) core.Role {
	for _, r := range []core.Role{core.RoleOwner, core.RoleModerator} {
		if s == r.String() {
			return r
		}
	}
	return core.RoleUser
}

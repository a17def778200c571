-- The ledger: accounts, scope settings, jobs (with their pending, notice and
-- history indexes), the moderators' audit log and the bot's own settings.
-- Times are Unix nanoseconds (bigint; NULL = the zero time): timestamptz
-- keeps microseconds only, and the ledger round-trips nanoseconds.

CREATE TABLE accounts (
	scope    text    NOT NULL,
	usr      text    NOT NULL,
	daily    bigint,                       -- NULL = follow the scope; 0 = none
	credits  bigint  NOT NULL DEFAULT 0,
	used_day text    NOT NULL DEFAULT '',
	used     bigint  NOT NULL DEFAULT 0,
	banned   boolean NOT NULL DEFAULT false,
	model    text    NOT NULL DEFAULT '',  -- the user's /settings
	aspect   text    NOT NULL DEFAULT '',
	lang     text    NOT NULL DEFAULT '',
	PRIMARY KEY (scope, usr)
);

CREATE TABLE scopes (
	scope text PRIMARY KEY,
	daily bigint                           -- NULL = the configured default
);

-- key is the event's idempotency key (Telegram update id, Discord
-- interaction id): the primary key is what makes an event delivered to two
-- instances charge once.
CREATE TABLE jobs (
	key           text    PRIMARY KEY,
	scope         text    NOT NULL,
	usr           text    NOT NULL,
	user_platform text    NOT NULL DEFAULT '',
	user_id       text    NOT NULL DEFAULT '',
	user_name     text    NOT NULL DEFAULT '',
	model         text    NOT NULL DEFAULT '',
	prompt        text    NOT NULL DEFAULT '',
	negative      text    NOT NULL DEFAULT '',
	aspect        text    NOT NULL DEFAULT '',
	units         bigint  NOT NULL DEFAULT 0,
	day           text    NOT NULL DEFAULT '',
	from_daily    bigint  NOT NULL DEFAULT 0,
	from_credits  bigint  NOT NULL DEFAULT 0,
	state         text    NOT NULL,
	outcome       text    NOT NULL DEFAULT '',
	reply_to      text    NOT NULL DEFAULT '',
	status        text    NOT NULL DEFAULT '',
	delivering    boolean NOT NULL DEFAULT false,
	notice_owed   boolean NOT NULL DEFAULT false,
	lang          text    NOT NULL DEFAULT '',
	task          text    NOT NULL DEFAULT '', -- a Midjourney result's task
	buttons       jsonb,                       -- and its buttons: [{"id", "label", "emoji"}]
	created_ns    bigint,
	finished_ns   bigint
);
-- RecentJobs: an account's jobs, newest first.
CREATE INDEX jobs_history ON jobs (scope, usr, created_ns DESC NULLS LAST, key DESC);
-- PendingJobs and OwedNotices: small partial indexes, oldest first.
CREATE INDEX jobs_pending ON jobs (created_ns ASC NULLS FIRST, key) WHERE state = 'pending';
CREATE INDEX jobs_notices ON jobs (created_ns ASC NULLS FIRST, key) WHERE notice_owed;

CREATE TABLE audit (
	seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- append order
	time_ns    bigint,
	scope      text NOT NULL DEFAULT '',
	actor      text NOT NULL DEFAULT '',
	actor_name text NOT NULL DEFAULT '',
	role       text NOT NULL DEFAULT '',
	action     text NOT NULL DEFAULT '',
	target     text NOT NULL DEFAULT '',
	before     text NOT NULL DEFAULT '',
	after      text NOT NULL DEFAULT '',
	note       text NOT NULL DEFAULT ''
);
CREATE INDEX audit_scope ON audit (scope, seq) WHERE scope <> '';

-- Values the bot keeps for itself: the pseudonym secret, the users seen.
CREATE TABLE settings (
	name  text PRIMARY KEY,
	value text NOT NULL
);

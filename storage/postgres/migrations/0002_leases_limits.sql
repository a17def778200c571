-- Instances sharing the ledger: a job's owner (the instance running it),
-- lease (until when it vouches for it, Unix nanoseconds; NULL = none) and
-- cancel asked for on another instance (who pressed it; '' = none), the
-- per-user limits every reservation checks and updates, and the events acted
-- on once by key (Tx.Claim). PruneJobs deletes old events with old jobs.

ALTER TABLE jobs ADD COLUMN owner text NOT NULL DEFAULT '', ADD COLUMN lease_ns bigint,
	ADD COLUMN cancelled_by text NOT NULL DEFAULT '';

-- A user's rate bucket (tokens left at at_ns; NULL = never limited, a full
-- bucket) and jobs reserved and not yet settled. Locked like accounts.
CREATE TABLE user_limits (
	usr       text             PRIMARY KEY,
	tokens    double precision NOT NULL DEFAULT 0,
	at_ns     bigint,
	in_flight bigint           NOT NULL DEFAULT 0
);

-- key is a platform event's idempotency key: the primary key is what makes
-- an event delivered to two instances act once.
CREATE TABLE events (
	key   text   PRIMARY KEY,
	at_ns bigint NOT NULL
);
-- PruneJobs: the events claimed before its cutoff.
CREATE INDEX events_at ON events (at_ns);

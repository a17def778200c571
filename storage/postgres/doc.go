// Package postgres is the PostgreSQL implementation of core.Store: the same
// ledger as storage/bolt (quotas, reservations, jobs, the audit log), in a
// server that several imaginebot processes share. It uses pgx (pgxpool) and
// passes storage/ledgertest like the other stores. PostgreSQL 12 or newer;
// tested with 15.
//
// # Concurrency: row locks, not SERIALIZABLE
//
// Updates run at READ COMMITTED, and every Tx read in a read-write
// transaction takes the lock its write will need:
//
//   - accounts and jobs, the rows every reservation, commit and refund reads
//     and then rewrites, are read with SELECT … FOR UPDATE. A second
//     transaction on the same account (another process's reservation, a
//     moderator's grant) waits for the first to commit and then reads the
//     balance it left, so a read-modify-write never loses an update and
//     concurrent reservations queue on their account instead of failing.
//     user_limits, the per-user rate bucket and count of jobs in flight that
//     the same transactions read and rewrite, are locked the same way.
//   - scopes and settings, read by many and written rarely, are read without
//     a lock and written with a compare-and-set on the value read (UPDATE …
//     WHERE daily IS NOT DISTINCT FROM the value read): reservations in one
//     guild do not serialize on its scope row; a moderator's write that lost
//     a race is retried.
//   - a row read as missing is later written with a plain INSERT: when
//     another transaction inserted it meanwhile, the primary key refuses the
//     insert (23505), and the transaction is retried.
//   - events are claimed with INSERT … ON CONFLICT DO NOTHING, never read:
//     a second transaction claiming the same key waits for the first, and
//     then inserts nothing (or inserts, when the first rolled back).
//
// A retry rolls back and runs fn again on a new transaction, after a short
// random wait, as bbolt's group commit does after a failure: fn is
// idempotent over the Tx (core.Store says so). Deadlocks (40P01) and
// serialization failures (40001) are retried the same way.
//
// SERIALIZABLE would give the same guarantees with no rule per table, but
// PostgreSQL's predicate locks are taken on index pages, and every
// reservation reads a missing job key and then inserts it into the same
// rightmost page of the jobs index as its neighbours: concurrent reservations
// on different accounts abort each other. Measured (BenchmarkReserveCommit,
// 64 clients, 64 accounts): 4.0 to 4.7 retries per update and about a sixth
// of the pairs/s of row locks, which retried none.
//
// # Idempotency across instances
//
// jobs.key, the event's idempotency key (Telegram update id, Discord
// interaction id), is the primary key. core.Ledger.Reserve reads the key and
// inserts the job: when the same event reaches two instances, the second
// insert fails on the key, its transaction (and the units it took) is
// rolled back, and its retry finds the job and answers CodeDuplicate. The
// event is charged once.
//
// An event that starts no job (a button press, a moderator's command) acts
// once by its key in table events: Tx.Claim inserts the key in the
// transaction that acts on it and reports whether this insert made the row.
// The instance that claimed it first acts; another one claiming it finds the
// row (after waiting for the first to commit, when it has not yet) and
// leaves it alone; a transaction rolled back claims nothing. The per-user
// limits each reservation checks are rows of user_limits, locked like the
// account, so instances sharing the database enforce one limit between
// them. A job's owner and lease_ns say which instance runs it and until
// when it vouches for it: a pending job whose lease has passed is another
// instance's to refund.
//
// # Schema and migrations
//
// The schema is the SQL files in migrations/, embedded in the binary and
// applied by Open in order of the version their name starts with. Table
// schema_migrations records the versions applied. Open takes an advisory
// lock, so instances starting at once migrate one after the other, and
// applies what is missing in one transaction: a failed migration leaves the
// database as it was. A database with a version newer than this build knows
// is refused with ErrNewerSchema. Tables are created in the first schema of
// the search path: to keep them apart, give the connection string
// search_path=imaginebot (a schema you created).
//
//	table              key             what
//	accounts           (scope, usr)    balance, overrides, ban, /settings
//	scopes             scope           a scope's daily allowance override
//	jobs               key             every job, with its owner and lease; partial indexes list
//	                                   the pending ones and those owing a notice; (scope, usr,
//	                                   created) its history
//	audit              seq (identity)  the moderators' log, in append order; indexed by scope
//	settings           name            values the bot keeps (the pseudonym secret, users seen)
//	user_limits        usr             a user's rate bucket (tokens at at_ns) and jobs in flight
//	events             key             events acted on once, when claimed; indexed by at_ns,
//	                                   which PruneJobs deletes by with the old jobs
//	schema_migrations  version         the migrations applied (0002 added owner, lease_ns,
//	                                   user_limits and events)
//
// Times are Unix nanoseconds in bigint columns (NULL for the zero time):
// timestamptz keeps microseconds, and the ledger round-trips nanoseconds.
// In psql, to_timestamp(created_ns / 1e9) shows one.
//
// # Durability and connections
//
// A nil error from Update means PostgreSQL committed the transaction, which
// with synchronous_commit on (the default) is on disk. Every Update holds one
// pooled connection for its transaction; PostgreSQL writes the WAL of the
// commits waiting at once with one flush, so a pool larger than pgx's
// default (4 on two cores) lets more commits share it: the default here is
// 32, and pool_max_conns=N in the connection string or WithMaxConns sets it.
package postgres

// Package bolt is the bbolt implementation of core.Store: the durable ledger
// of quotas, reservations, jobs and the moderators' audit log, in one file.
//
// # Bucket layout (schema version 3)
//
// Values are JSON objects with snake_case field names, so the file can be
// read with the bbolt command-line tools and a newer build can add fields
// that an older one ignores. "\x00" separates the parts of composite keys;
// scopes, user keys and job keys may therefore not contain NUL.
//
//	bucket       key                                         value
//	meta         "schema_version"                            "3" (decimal text)
//	meta         "setting:" name                             a value the bot keeps (the pseudonym secret)
//	accounts     scope \x00 user                             account JSON
//	scopes       scope                                       scope settings JSON
//	jobs         job key                                     job JSON
//	pending      job key                                     empty; exactly the jobs in state "pending"
//	notices      job key                                     empty; exactly the jobs with notice_owed
//	history      scope \x00 user \x00 created \x00 job key   job key
//	audit        seq                                         audit entry JSON
//	audit_scope  scope \x00 seq                              empty; entries with a non-empty scope
//	limits       user                                        per-user limits JSON (rate tokens, jobs in flight)
//	events       event key                                   when it was claimed (RFC 3339 text, nanoseconds)
//
// created is the job's creation time as 8 big-endian bytes: Unix nanoseconds
// with the sign bit flipped, so byte order is time order. seq is the audit
// bucket's NextSequence as 8 big-endian bytes, so byte order is append order.
// RecentJobs and Audit walk history and audit_scope backwards from the end of
// a key prefix, which costs O(limit), not O(all entries). The pending and
// history entries are maintained by Tx.PutJob in the same transaction as the
// job itself, so they can never disagree with the jobs bucket.
//
// A job's owner and lease (the instance running it, and until when it
// vouches for it) are the job JSON's "owner" and "lease", absent when unset.
// An event key in events was acted on once (Tx.Claim); PruneJobs deletes the
// claims older than its cutoff with the old jobs.
//
// A file whose schema_version is newer than this build knows is refused at
// Open; older layouts are upgraded there, in one transaction (version 1
// had no notices bucket, version 2 no limits and events buckets: the
// upgrade creates them empty). A build of version 2 refuses a version 3
// file, which is right: it would not keep the limits.
//
// # Durability and group commit
//
// Every write goes through one bbolt read-write transaction whose commit
// fsyncs the file: a nil error from DB.Update means the change is on disk.
// Concurrent Updates are merged into one transaction (group commit), so many
// callers share one fsync; a lone caller starts its transaction at once. See
// DB.Update for how a failing fn is kept from affecting the others.
package bolt

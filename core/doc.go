// Package core holds imaginebot's domain: users, scopes, quotas, the job
// pipeline (validate → policy → reserve → queue → generate → deliver →
// commit or refund) and the moderator operations.
//
// Platform adapters (bots/...) translate chat events into Requests and
// Progress/Delivery back into chat messages; storage packages implement
// Store; core/upstream implements Generator. core itself imports none of
// them: dependencies point inward.
package core

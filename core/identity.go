package core

// Platform names a chat platform (or the CLI).
type Platform string

const (
	PlatformTelegram Platform = "telegram"
	PlatformDiscord  Platform = "discord"
	PlatformCLI      Platform = "cli"
)

// User identifies a person on one platform.
type User struct {
	Platform Platform
	ID       string // the platform's own user id
	Name     string // display name or @username; untrusted, for views and logs
}

// Key is the stable identifier used for limits and accounts ("telegram:42").
func (u User) Key() string { return string(u.Platform) + ":" + u.ID }

// AccountKey identifies a quota account: one user within one scope. A scope is
// a Discord guild, the Telegram private-chat scope, a Telegram group, …
type AccountKey struct {
	Scope string
	User  string // User.Key()
}

func (k AccountKey) String() string { return k.Scope + "/" + k.User }

// Lang is the language of a user's texts: a language tag of the message
// catalogue (bots/catalog), which matches platform locales to it. Core only
// keeps it with a job, so that a notice after a crash speaks the user's
// language; it holds no user text itself.
type Lang string

const (
	English            Lang = "en"
	SimplifiedChinese  Lang = "zh-Hans"
	TraditionalChinese Lang = "zh-Hant"

	// Chinese is what versions before the catalogue stored for every Chinese
	// user. Jobs in existing databases still carry it: the catalogue reads it
	// as Simplified Chinese, the only Chinese those versions wrote.
	Chinese Lang = "zh"
)

// Role is what an actor may do within the scope it acts on. Adapters resolve
// it (guild permissions, chat administrators, configured owners); core checks it.
type Role int

const (
	RoleUser Role = iota
	RoleModerator
	RoleOwner
)

func (r Role) String() string {
	switch r {
	case RoleOwner:
		return "owner"
	case RoleModerator:
		return "moderator"
	default:
		return "user"
	}
}

// Actor is who performs a moderator operation.
type Actor struct {
	User User
	Role Role
	// Event is the platform event carrying a moderator's change (a
	// Telegram message), when it may be delivered more than once: the
	// change is applied once per event across every instance sharing the
	// ledger, and a repeat returns CodeDuplicate. "" = no such check.
	Event string
}

// CLIActor is the identity of the offline admin CLI: the operator holds the
// database file, so it acts as an owner.
func CLIActor() Actor {
	return Actor{User: User{Platform: PlatformCLI, ID: "cli", Name: "cli"}, Role: RoleOwner}
}

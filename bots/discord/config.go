package discord

import (
	"time"

	"github.com/imaginebot/imaginebot/bots/chat"
)

// Modes of connection.
const (
	ModeGateway      = "gateway"      // a websocket to Discord's gateway, bot token only
	ModeInteractions = "interactions" // Discord POSTs interactions to our HTTP endpoint
)

// Defaults.
const (
	DefaultProgressInterval = 2 * time.Second
	// DefaultMaxUploadBytes is Discord's attachment limit outside boosted
	// servers.
	DefaultMaxUploadBytes = 10 << 20
	// DefaultRequestsPerSecond stays under Discord's 50 requests a second
	// per bot, with room for jitter.
	DefaultRequestsPerSecond = 45
	// DefaultInteractionsPath is where Discord posts interactions.
	DefaultInteractionsPath = "/discord/interactions"
)

// Config configures the adapter.
type Config struct {
	Token         string // bot token, without "Bot "
	ApplicationID string
	PublicKey     string // hex ed25519 key, for the interactions endpoint
	Mode          string // ModeGateway (default) or ModeInteractions
	// APIBaseURL replaces https://discord.com (a reverse proxy, or a test
	// server); "" = Discord itself.
	APIBaseURL string
	// Guilds, when set, get the commands (instantly); else they are global.
	Guilds         []string
	Owners         []string // user ids that moderate everywhere
	ModeratorRoles []string // role ids whose members moderate their guild
	AllowDMs       bool
	// Shards is how many gateway shards the bot runs in all (ShardsAuto:
	// as many as Discord says; 0: one), and ShardIDs the ones this process
	// opens (nil: all of them).
	Shards   int
	ShardIDs []int
	// ProgressInterval is the least time between two edits of one reply.
	ProgressInterval time.Duration
	// MaxUploadBytes is the largest attachment; bigger pictures are
	// re-encoded to fit.
	MaxUploadBytes int64
	// RequestsPerSecond paces every call the bot makes with its token.
	RequestsPerSecond float64
	// MaxInputBytes caps a picture users attach to start from (0: 8 MiB).
	MaxInputBytes int64
	// PrivateHosts are image hosts on the operator's own network
	// (images.allow_private_hosts): their links are never handed to users.
	PrivateHosts []string
	// Connections bounds HTTP connections to Discord.
	Connections int
	// HTTPTimeout bounds one REST call (uploads included).
	HTTPTimeout time.Duration
}

func (c *Config) defaults() {
	if c.Mode == "" {
		c.Mode = ModeGateway
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = DefaultProgressInterval
	}
	if c.MaxUploadBytes <= 0 {
		c.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if c.RequestsPerSecond <= 0 {
		c.RequestsPerSecond = DefaultRequestsPerSecond
	}
	if c.Connections <= 0 {
		c.Connections = 32
	}
	if c.MaxInputBytes <= 0 {
		c.MaxInputBytes = chat.DefaultMaxInputBytes
	}
	if c.HTTPTimeout <= 0 {
		c.HTTPTimeout = 2 * time.Minute
	}
}

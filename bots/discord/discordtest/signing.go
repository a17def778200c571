package discordtest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/bwmarrin/discordgo"
)

// Signer signs interaction requests as Discord does: ed25519 over the
// timestamp followed by the body, in X-Signature-Ed25519 and
// X-Signature-Timestamp.
type Signer struct {
	public  ed25519.PublicKey
	private ed25519.PrivateKey
}

// NewSigner makes a key pair.
func NewSigner() *Signer {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return &Signer{public: pub, private: priv}
}

// PublicKey is the hex public key, for discord.public_key.
func (s *Signer) PublicKey() string { return hex.EncodeToString(s.public) }

// Request is a POST of body to url signed at now.
func (s *Signer) Request(url string, body []byte, at time.Time) *http.Request {
	ts := strconv.FormatInt(at.Unix(), 10)
	sig := ed25519.Sign(s.private, append([]byte(ts), body...))
	r, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		panic(err)
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-Signature-Ed25519", hex.EncodeToString(sig))
	r.Header.Set("X-Signature-Timestamp", ts)
	return r
}

var ids atomic.Int64

func init() { ids.Store(1400000000000000000) }

// NewID is a fresh snowflake-looking id.
func NewID() string { return strconv.FormatInt(ids.Add(1), 10) }

// Member is a guild member with permissions (a decimal bit set) and roles.
func Member(userID, name string, permissions int64, roles ...string) *discordgo.Member {
	return &discordgo.Member{User: &discordgo.User{ID: userID, Username: name, GlobalName: name},
		Permissions: permissions, Roles: roles}
}

// Where an interaction happens: a guild (with its member) or a DM (with its user).
type Where struct {
	GuildID   string
	ChannelID string
	Member    *discordgo.Member // guilds
	User      *discordgo.User   // DMs
	Locale    string            // the user's client locale, e.g. "zh-TW"
}

// Guild is a guild channel where member acts.
func Guild(guildID string, member *discordgo.Member, locale string) Where {
	return Where{GuildID: guildID, ChannelID: "1200000000000000001", Member: member, Locale: locale}
}

// DM is a direct message with user.
func DM(userID, name, locale string) Where {
	return Where{ChannelID: "1200000000000000099", User: &discordgo.User{ID: userID, Username: name}, Locale: locale}
}

// Interaction is the JSON Discord posts: t is its type, data its data.
func Interaction(t discordgo.InteractionType, where Where, data any) []byte {
	m := map[string]any{
		"id":             NewID(),
		"application_id": AppID,
		"type":           t,
		"token":          "itoken-" + NewID() + "-aWnteractionTokenX",
		"version":        1,
		"channel_id":     where.ChannelID,
		"locale":         where.Locale,
		"data":           data,
	}
	if where.GuildID != "" {
		m["guild_id"] = where.GuildID
		m["guild_locale"] = "en-US"
		mem := map[string]any{"user": where.Member.User, "roles": where.Member.Roles,
			"permissions": strconv.FormatInt(where.Member.Permissions, 10), "joined_at": time.Now().UTC().Format(time.RFC3339)}
		m["member"] = mem
	} else {
		m["user"] = where.User
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// Ping is Discord's endpoint check.
func Ping() []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"application_id":%q,"type":1,"token":"ping-token","version":1}`, NewID(), AppID))
}

// Opt is one slash-command option value.
type Opt struct {
	Name  string
	Type  discordgo.ApplicationCommandOptionType
	Value any
	// Options are a subcommand's own options.
	Options []Opt
}

func (o Opt) json() map[string]any {
	m := map[string]any{"name": o.Name, "type": o.Type}
	if o.Value != nil {
		m["value"] = o.Value
	}
	if o.Options != nil {
		var sub []map[string]any
		for _, so := range o.Options {
			sub = append(sub, so.json())
		}
		m["options"] = sub
	}
	return m
}

// Command is a slash command's data.
func Command(name string, opts ...Opt) map[string]any {
	var os []map[string]any
	for _, o := range opts {
		os = append(os, o.json())
	}
	return map[string]any{"id": NewID(), "name": name, "type": 1, "options": os}
}

// String, Int and UserOpt are option values of those types.
func String(name, v string) Opt {
	return Opt{Name: name, Type: discordgo.ApplicationCommandOptionString, Value: v}
}
func Int(name string, v int) Opt {
	return Opt{Name: name, Type: discordgo.ApplicationCommandOptionInteger, Value: v}
}
func UserOpt(name, id string) Opt {
	return Opt{Name: name, Type: discordgo.ApplicationCommandOptionUser, Value: id}
}

// Sub is a subcommand with its options.
func Sub(name string, opts ...Opt) Opt {
	if opts == nil {
		opts = []Opt{}
	}
	return Opt{Name: name, Type: discordgo.ApplicationCommandOptionSubCommand, Options: opts}
}

// Button is a button press's data.
func Button(customID string) map[string]any {
	return map[string]any{"custom_id": customID, "component_type": 2}
}

// WithUsers adds resolved users to a command's data, as Discord sends for
// user options.
func WithUsers(cmd map[string]any, users ...*discordgo.User) map[string]any {
	m := map[string]any{}
	for _, u := range users {
		m[u.ID] = u
	}
	cmd["resolved"] = map[string]any{"users": m}
	return cmd
}

// Fields reads an interaction's id and token back from its JSON.
func Fields(body []byte) (id, token string) {
	var m struct{ ID, Token string }
	_ = json.Unmarshal(body, &m)
	return m.ID, m.Token
}

// WithAttachment adds an attachment option named option to a command's
// data, resolved as Discord sends it.
func WithAttachment(cmd map[string]any, option, url string, size int, contentType string) map[string]any {
	id := NewID()
	opts, _ := cmd["options"].([]map[string]any)
	cmd["options"] = append(opts, map[string]any{"name": option, "type": discordgo.ApplicationCommandOptionAttachment, "value": id})
	cmd["resolved"] = map[string]any{"attachments": map[string]any{id: map[string]any{
		"id": id, "url": url, "proxy_url": url, "filename": "input.png", "size": size, "content_type": contentType}}}
	return cmd
}

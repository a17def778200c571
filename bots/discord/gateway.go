package discord

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
)

// ShardsAuto asks Discord how many shards the bot should run (GET
// /gateway/bot).
const ShardsAuto = -1

// identifyEvery is how often a group of max_concurrency shards may
// identify: Discord allows one group per 5 seconds.
var identifyEvery = 5 * time.Second

// runGateway holds this process's shards' websockets until ctx ends: one
// discordgo Session per shard, opened max_concurrency at a time.
func (b *Bot) runGateway(ctx context.Context) error {
	count, concurrency := b.cfg.Shards, 1
	if count == ShardsAuto {
		var gb *discordgo.GatewayBotResponse
		err := b.botCall(ctx, func(ctx context.Context) (err error) {
			gb, err = b.session.GatewayBot(discordgo.WithContext(ctx))
			return err
		})
		if err != nil {
			return fmt.Errorf("discord: ask for the shard count: %w", err)
		}
		count, concurrency = gb.Shards, gb.SessionStartLimit.MaxConcurrency
	}
	count, concurrency = max(count, 1), max(concurrency, 1)
	ids := b.cfg.ShardIDs
	if len(ids) == 0 {
		for id := range count {
			ids = append(ids, id)
		}
	}
	for _, id := range ids {
		if id < 0 || id >= count {
			return fmt.Errorf("discord: shard %d is not one of the %d shards (discord.shard_ids)", id, count)
		}
	}
	up := &shards{want: len(ids), up: map[int]bool{}}
	var sessions []*discordgo.Session
	defer func() {
		b.ready.Store(false)
		for _, s := range sessions {
			_ = s.Close()
		}
	}()
	for i, id := range ids {
		if i > 0 && i%concurrency == 0 {
			select { // the next group may identify once this one's window passed
			case <-time.After(identifyEvery):
			case <-ctx.Done():
				return nil
			}
		}
		s := b.session
		if i > 0 {
			s = b.shardSession()
		}
		s.ShardID, s.ShardCount = id, count
		b.handleEvents(ctx, s, id, up)
		if err := s.Open(); err != nil {
			return fmt.Errorf("discord: open gateway shard %d of %d: %w", id, count, err)
		}
		sessions = append(sessions, s)
	}
	b.log.Info("discord: gateway shards open", "shards", ids, "of", count)
	<-ctx.Done()
	return nil
}

// shardSession is another websocket like the bot's first session.
func (b *Bot) shardSession() *discordgo.Session {
	s, _ := discordgo.New("Bot " + b.cfg.Token) // cannot fail: no login
	s.Client, s.Dialer = b.session.Client, b.session.Dialer
	s.StateEnabled, s.Identify.Intents = false, b.session.Identify.Intents
	s.ShouldReconnectOnError, s.ShouldRetryOnRateLimit, s.MaxRestRetries = true, true, 1
	return s
}

// shards tracks which shards are connected: the bot is ready when all are.
type shards struct {
	mu   sync.Mutex
	want int
	up   map[int]bool
}

func (x *shards) set(id int, on bool) (all bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.up[id] = on
	n := 0
	for _, ok := range x.up {
		if ok {
			n++
		}
	}
	return n == x.want
}

// handleEvents wires one shard's events. The raw event, not
// InteractionCreate: it also carries what discordgo does not decode (the
// attachment limit).
func (b *Bot) handleEvents(ctx context.Context, s *discordgo.Session, id int, up *shards) {
	s.AddHandler(func(_ *discordgo.Session, e *discordgo.Event) {
		if e.Type != "INTERACTION_CREATE" {
			return
		}
		var i discordgo.Interaction
		if err := json.Unmarshal(e.RawData, &i); err != nil {
			b.log.Warn("discord: undecodable interaction", "shard", id, "err", err)
			return
		}
		b.gatewayInteraction(ctx, &i, uploadLimit(e.RawData))
	})
	s.AddHandler(func(_ *discordgo.Session, _ *discordgo.Ready) {
		all := up.set(id, true)
		b.ready.Store(all)
		b.log.Info("discord: gateway connected", "shard", id)
	})
	s.AddHandler(func(_ *discordgo.Session, _ *discordgo.Disconnect) {
		up.set(id, false)
		b.ready.Store(false)
		b.readyErr.Store(fmt.Sprintf("gateway shard %d disconnected", id))
	})
}

package discordtest

import (
	"encoding/json"
	"net/http"
	"sync"

	"github.com/gorilla/websocket"
)

// gateway is a fake of Discord's websocket gateway: Hello, Identify, Ready,
// heartbeat acks, and dispatches the test sends.
type gateway struct {
	mu       sync.Mutex
	conns    map[*websocket.Conn]*sync.Mutex
	shardOf  map[*websocket.Conn]int
	seq      int
	identify chan json.RawMessage
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (g *gateway) serve(w http.ResponseWriter, r *http.Request) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	wmu := &sync.Mutex{}
	write := func(v any) error {
		wmu.Lock()
		defer wmu.Unlock()
		return c.WriteJSON(v)
	}
	if write(map[string]any{"op": 10, "d": map[string]any{"heartbeat_interval": 41250}}) != nil {
		return
	}
	var id struct {
		Op int             `json:"op"`
		D  json.RawMessage `json:"d"`
	}
	if c.ReadJSON(&id) != nil || id.Op != 2 {
		return
	}
	select {
	case g.identify <- id.D:
	default:
	}
	if write(map[string]any{"op": 0, "t": "READY", "s": g.next(), "d": map[string]any{
		"v": 10, "session_id": "fake-session", "user": map[string]any{"id": AppID, "username": "Imagine Test Bot", "bot": true},
		"guilds": []any{}, "application": map[string]any{"id": AppID}, "resume_gateway_url": "ws://" + r.Host + "/gateway",
	}}) != nil {
		return
	}
	var ident struct {
		Shard []int `json:"shard"`
	}
	_ = json.Unmarshal(id.D, &ident)
	g.mu.Lock()
	g.conns[c] = wmu
	if len(ident.Shard) == 2 {
		g.shardOf[c] = ident.Shard[0]
	}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.conns, c)
		delete(g.shardOf, c)
		g.mu.Unlock()
	}()
	for {
		var m struct {
			Op int `json:"op"`
		}
		if c.ReadJSON(&m) != nil {
			return
		}
		if m.Op == 1 { // heartbeat
			if write(map[string]any{"op": 11}) != nil {
				return
			}
		}
	}
}

func (g *gateway) next() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seq++
	return g.seq
}

// Dispatch sends event t with data d to every connected gateway client and
// reports how many got it.
func (s *Server) Dispatch(t string, d json.RawMessage) int {
	g := s.gw
	seq := g.next()
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for c, wmu := range g.conns {
		wmu.Lock()
		err := c.WriteJSON(map[string]any{"op": 0, "t": t, "s": seq, "d": d})
		wmu.Unlock()
		if err == nil {
			n++
		}
	}
	return n
}

// DispatchShard sends event t to the client that identified as shard, as
// Discord sends each guild's events to one shard; it reports whether one did.
func (s *Server) DispatchShard(shard int, t string, d json.RawMessage) bool {
	g := s.gw
	seq := g.next()
	g.mu.Lock()
	defer g.mu.Unlock()
	for c, wmu := range g.conns {
		if sh, ok := g.shardOf[c]; ok && sh == shard {
			wmu.Lock()
			err := c.WriteJSON(map[string]any{"op": 0, "t": t, "s": seq, "d": d})
			wmu.Unlock()
			return err == nil
		}
	}
	return false
}

// Connected is how many gateway clients are past Ready.
func (s *Server) Connected() int {
	s.gw.mu.Lock()
	defer s.gw.mu.Unlock()
	return len(s.gw.conns)
}

// Identified returns the next Identify payload received.
func (s *Server) Identified() <-chan json.RawMessage { return s.gw.identify }

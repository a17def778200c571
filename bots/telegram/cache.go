package telegram

import (
	"container/list"
	"strings"
	"sync"
	"time"
)

// lru is a bounded map with per-entry expiry: the least recently used entry
// goes when it is full, so a flood of chats or users cannot grow it.
type lru[K comparable, V any] struct {
	mu    sync.Mutex
	cap   int
	now   func() time.Time
	order *list.List // front = most recent
	items map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key     K
	val     V
	expires time.Time // zero = never
}

func newLRU[K comparable, V any](capacity int, now func() time.Time) *lru[K, V] {
	return &lru[K, V]{cap: max(capacity, 1), now: now, order: list.New(), items: map[K]*list.Element{}}
}

// Get returns the live value of k.
func (c *lru[K, V]) Get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.getLocked(k)
}

func (c *lru[K, V]) getLocked(k K) (V, bool) {
	var zero V
	el, ok := c.items[k]
	if !ok {
		return zero, false
	}
	e := el.Value.(*lruEntry[K, V])
	if !e.expires.IsZero() && !c.now().Before(e.expires) {
		c.order.Remove(el)
		delete(c.items, k)
		return zero, false
	}
	c.order.MoveToFront(el)
	return e.val, true
}

// Put stores v under k for ttl (0 = until evicted).
func (c *lru[K, V]) Put(k K, v V, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(k, v, ttl)
}

func (c *lru[K, V]) putLocked(k K, v V, ttl time.Duration) {
	var exp time.Time
	if ttl > 0 {
		exp = c.now().Add(ttl)
	}
	if el, ok := c.items[k]; ok {
		e := el.Value.(*lruEntry[K, V])
		e.val, e.expires = v, exp
		c.order.MoveToFront(el)
		return
	}
	c.items[k] = c.order.PushFront(&lruEntry[K, V]{key: k, val: v, expires: exp})
	for c.order.Len() > c.cap {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*lruEntry[K, V]).key)
	}
}

// Add stores v under k unless k holds a live value; it reports whether it
// stored.
func (c *lru[K, V]) Add(k K, v V, ttl time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.getLocked(k); ok {
		return false
	}
	c.putLocked(k, v, ttl)
	return true
}

// Len is the number of entries held (expired ones included until touched).
func (c *lru[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// seenUser is a user the bot has seen, for @username targets.
type seenUser struct {
	id   int64
	name string // "@username" or first name
}

// userIndex remembers the users the bot has seen, bounded: moderators can
// name a target by @username only if the bot has seen them (the Bot API has
// no lookup by username).
type userIndex struct {
	byName *lru[string, seenUser] // lower-case username → user
	byID   *lru[int64, string]    // id → display name
}

func newUserIndex(capacity int) *userIndex {
	now := time.Now // entries never expire: the clock is not consulted
	return &userIndex{byName: newLRU[string, seenUser](capacity, now), byID: newLRU[int64, string](capacity, now)}
}

// remember notes a user; it reports whether this is news (a user, name or
// handle not in the index), which is worth writing down.
func (x *userIndex) remember(id int64, username, name string) bool {
	if id == 0 {
		return false
	}
	old, had := x.byID.Get(id)
	news := !had || old != name
	x.byID.Put(id, name, 0)
	if username != "" {
		h := strings.ToLower(username)
		if u, ok := x.byName.Get(h); !ok || u.id != id || u.name != name {
			news = true
		}
		x.byName.Put(h, seenUser{id: id, name: name}, 0)
	}
	return news
}

func (x *userIndex) lookup(username string) (seenUser, bool) {
	return x.byName.Get(strings.ToLower(strings.TrimPrefix(username, "@")))
}

func (x *userIndex) name(id int64) string {
	n, _ := x.byID.Get(id)
	return n
}

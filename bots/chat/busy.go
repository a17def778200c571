package chat

import (
	"sync"

	"github.com/imaginebot/imaginebot/core"
)

// Busy remembers what is being made for whom, so that a second press of
// 🔄 while the first one's picture is still being made is answered
// "already making it" instead of being charged again (a double tap).
type Busy struct {
	mu sync.Mutex
	m  map[string]struct{}
}

// Start claims key; false when it is claimed already.
func (b *Busy) Start(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.m[key]; ok {
		return false
	}
	if b.m == nil {
		b.m = map[string]struct{}{}
	}
	b.m[key] = struct{}{}
	return true
}

// Done releases key.
func (b *Busy) Done(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, key)
}

// RerollKey names one person's reroll of one picture.
func RerollKey(presser core.User, job string) string { return presser.Key() + " " + job }

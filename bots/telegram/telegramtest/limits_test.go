package telegramtest_test

import (
	"testing"
	"time"

	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
)

func TestLimits(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	t.Run("private chat: one a second, bursts of two", func(t *testing.T) {
		l := telegramtest.NewLimits(30, 20*time.Millisecond)
		for i, at := range []time.Duration{0, 100 * time.Millisecond} {
			if w := l.Take(1, 1, t0.Add(at)); w != 0 {
				t.Fatalf("send %d of the burst: wait %s", i+1, w)
			}
		}
		if w := l.Take(1, 1, t0.Add(500*time.Millisecond)); w <= 0 || telegramtest.RetryAfter(w) != 1 {
			t.Fatalf("third after 0.5s: wait %s", w)
		}
		// Within the 20 ms tolerance.
		if w := l.Take(1, 1, t0.Add(990*time.Millisecond)); w != 0 {
			t.Fatalf("after 0.99s: wait %s", w)
		}
		if w := l.Take(2, 1, t0); w != 0 {
			t.Fatalf("another chat: wait %s", w)
		}
		if l.Refused() != 1 {
			t.Fatalf("refused %d, want 1", l.Refused())
		}
	})
	t.Run("global: 30 a second", func(t *testing.T) {
		l := telegramtest.NewLimits(30, 20*time.Millisecond)
		for i := range 30 {
			if w := l.Take(int64(100+i), 1, t0); w != 0 {
				t.Fatalf("send %d: wait %s", i, w)
			}
		}
		if w := l.Take(999, 1, t0); w == 0 {
			t.Fatal("31st send in the same instant was accepted")
		}
		// A refused call spends nothing: chat 999 is still free later.
		if w := l.Take(999, 1, t0.Add(40*time.Millisecond)); w != 0 {
			t.Fatalf("after a token came back: wait %s", w)
		}
	})
	t.Run("group: 20 a minute", func(t *testing.T) {
		l := telegramtest.NewLimits(1000, 20*time.Millisecond)
		// One attempt a second for a minute: the burst of 20, then one
		// every 3 s as the bucket refills.
		accepted := 0
		for i := range 60 {
			if l.Take(-100, 1, t0.Add(time.Duration(i)*time.Second)) == 0 {
				accepted++
			}
		}
		if accepted < 38 || accepted > 41 {
			t.Fatalf("accepted %d of 60 in a minute, want about 40", accepted)
		}
	})
	t.Run("what counts", func(t *testing.T) {
		for m, want := range map[string]bool{"sendPhoto": true, "editMessageText": true, "sendChatAction": true,
			"deleteMessage": false, "answerCallbackQuery": false, "getUpdates": false} {
			if telegramtest.Counted(m) != want {
				t.Errorf("Counted(%s) = %t", m, !want)
			}
		}
		if n := telegramtest.Messages("sendMediaGroup", `[{},{},{}]`); n != 3 {
			t.Errorf("an album of 3 counts %d", n)
		}
	})
}

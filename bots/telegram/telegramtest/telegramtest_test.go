package telegramtest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-telegram/bot"
	"github.com/go-telegram/bot/models"

	"github.com/imaginebot/imaginebot/bots/telegram/telegramtest"
)

func newClient(t *testing.T, tg *telegramtest.Server) *bot.Bot {
	t.Helper()
	b, err := bot.New(tg.Token, bot.WithServerURL(tg.URL), bot.WithSkipGetMe())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRecordsMultipartCalls(t *testing.T) {
	tg := telegramtest.New(t)
	b := newClient(t, tg)
	ctx := context.Background()

	me, err := b.GetMe(ctx)
	if err != nil || me.Username != telegramtest.BotUsername {
		t.Fatalf("getMe = %+v, %v", me, err)
	}
	msg, err := b.SendPhoto(ctx, &bot.SendPhotoParams{
		ChatID:          int64(42),
		Photo:           &models.InputFileUpload{Filename: "a.png", Data: bytes.NewReader([]byte("png bytes"))},
		Caption:         "a *fox*",
		ReplyParameters: &models.ReplyParameters{MessageID: 7},
		ReplyMarkup:     &models.InlineKeyboardMarkup{InlineKeyboard: [][]models.InlineKeyboardButton{{{Text: "x", CallbackData: "rr:1"}}}},
	})
	if err != nil || msg.ID == 0 || msg.Caption != "a *fox*" || len(msg.Photo) == 0 || msg.ReplyMarkup == nil {
		t.Fatalf("sendPhoto = %+v, %v", msg, err)
	}
	c := tg.WaitCall(t, "sendPhoto", time.Second)
	f, ok := c.File("photo")
	if !ok || f.Filename != "a.png" || string(f.Data) != "png bytes" || c.ChatID() != 42 || c.ReplyTo() != 7 {
		t.Errorf("recorded %+v / %+v", c.Fields, f)
	}
	if got := c.CallbackData(); len(got) != 1 || got[0] != "rr:1" {
		t.Errorf("callback data %q", got)
	}
	if m := c.Message(); m == nil || m.ID != msg.ID {
		t.Errorf("recorded result %+v", m)
	}
}

func TestRefusesWhatTelegramRefuses(t *testing.T) {
	tg := telegramtest.New(t)
	b := newClient(t, tg)
	ctx := context.Background()
	tests := []struct {
		name   string
		params *bot.SendMessageParams
		want   string
	}{
		{"markdown", &bot.SendMessageParams{ChatID: 1, Text: "a_b", ParseMode: models.ParseModeMarkdown}, "can't parse entities"},
		{"html", &bot.SendMessageParams{ChatID: 1, Text: "<x>", ParseMode: models.ParseModeHTML}, "can't parse entities"},
		{"too long", &bot.SendMessageParams{ChatID: 1, Text: strings.Repeat("😀", 2049)}, "message is too long"},
		{"empty", &bot.SendMessageParams{ChatID: 1, Text: " "}, "message text is empty"},
		{"callback data", &bot.SendMessageParams{ChatID: 1, Text: "x", ReplyMarkup: &models.InlineKeyboardMarkup{
			InlineKeyboard: [][]models.InlineKeyboardButton{{{Text: "x", CallbackData: strings.Repeat("d", 65)}}}}}, "BUTTON_DATA_INVALID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.SendMessage(ctx, tt.params)
			if !errors.Is(err, bot.ErrorBadRequest) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want a 400 about %q", err, tt.want)
			}
		})
	}
	if _, err := b.SendMessage(ctx, &bot.SendMessageParams{ChatID: 1, Text: "_*[]()~`>#+-=|{}.! <b>"}); err != nil {
		t.Errorf("plain text refused: %v", err)
	}
}

func TestFailNext(t *testing.T) {
	tg := telegramtest.New(t)
	b := newClient(t, tg)
	tg.FailNext("sendMessage", 429, "Too Many Requests: retry after 3", 3)
	_, err := b.SendMessage(context.Background(), &bot.SendMessageParams{ChatID: 1, Text: "x"})
	var tm *bot.TooManyRequestsError
	if !errors.As(err, &tm) || tm.RetryAfter != 3 {
		t.Fatalf("err = %v, want a 429 with retry_after 3", err)
	}
	if _, err := b.SendMessage(context.Background(), &bot.SendMessageParams{ChatID: 1, Text: "x"}); err != nil {
		t.Fatalf("second call: %v", err)
	}
	if calls := tg.Calls("sendMessage"); len(calls) != 2 || calls[0].Status != 429 || calls[1].Status != 200 {
		t.Errorf("calls %+v", calls)
	}
}

func TestLongPolling(t *testing.T) {
	tg := telegramtest.New(t)
	post := func(offset int64, timeout int) []models.Update {
		body, _ := json.Marshal(map[string]any{"offset": offset, "timeout": timeout})
		resp, err := http.Post(tg.URL+"/bot"+tg.Token+"/getUpdates", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct {
			OK     bool            `json:"ok"`
			Result []models.Update `json:"result"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || !r.OK {
			t.Fatalf("getUpdates: %v %+v", err, r)
		}
		return r.Result
	}
	if got := post(0, 0); len(got) != 0 {
		t.Fatalf("updates before any injection: %d", len(got))
	}
	got := make(chan []models.Update)
	go func() { got <- post(0, 10) }()
	tg.WaitCalls(t, "getUpdates", 2, time.Second)
	id := tg.Inject(tg.PrivateText(telegramtest.User(5, "eve", "en"), "hello"))
	select {
	case ups := <-got:
		if len(ups) != 1 || ups[0].ID != id || ups[0].Message.Text != "hello" || ups[0].Message.From.ID != 5 {
			t.Fatalf("updates %+v", ups)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the long poll did not return on injection")
	}
	if ups := post(id, 0); len(ups) != 1 {
		t.Fatalf("offset %d should still return update %d: %d updates", id, id, len(ups))
	}
	if ups := post(id+1, 0); len(ups) != 0 || tg.Pending() != 0 {
		t.Fatalf("offset %d did not confirm: %d updates, %d pending", id+1, len(ups), tg.Pending())
	}
}

func TestUnauthorized(t *testing.T) {
	tg := telegramtest.New(t)
	b, err := bot.New("1:wrong", bot.WithServerURL(tg.URL), bot.WithSkipGetMe())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetMe(context.Background()); !errors.Is(err, bot.ErrorUnauthorized) {
		t.Fatalf("err = %v, want unauthorized", err)
	}
}

package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/imaginebot/imaginebot/core"
)

// readAllData drains r, returning the payloads and the final error (nil at EOF).
func readAllData(r *sseReader) ([]string, error) {
	var out []string
	for {
		data, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, string(data))
	}
}

func TestSSEReader(t *testing.T) {
	long := strings.Repeat("A", 3<<20) // longer than the 64 KiB buffer and bufio.Scanner's cap
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr error
	}{
		{"empty", "", nil, nil},
		{"one event", "data: {\"a\":1}\n\n", []string{`{"a":1}`}, nil},
		{"no space after the colon", "data:{\"a\":1}\n\ndata:[DONE]\n\n", []string{`{"a":1}`, "[DONE]"}, nil},
		{"only one space is removed", "data:  x\n", []string{" x"}, nil},
		{"comments and other fields skipped", ": keep-alive\n\nevent: message\nid: 7\nretry: 3000\ndata: x\n\n: PING\n\n", []string{"x"}, nil},
		{"no blank line between events", "data: a\ndata: b\n", []string{"a", "b"}, nil},
		{"CRLF", "data: a\r\n\r\ndata: b\r\n\r\n", []string{"a", "b"}, nil},
		{"last line without newline", "data: a\n\ndata: b", []string{"a", "b"}, nil},
		{"byte order mark", "\xef\xbb\xbfdata: a\n", []string{"a"}, nil},
		{"empty data", "data:\ndata: \n", []string{"", ""}, nil},
		{"3 MB line", "data: " + long + "\n\ndata: [DONE]\n", []string{long, "[DONE]"}, nil},
		{"line over the cap", "data: " + strings.Repeat("B", 5<<20) + "\n", nil, errLineTooLong},
		{"not SSE at all", "<html>502</html>\n", nil, nil},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/one byte reads %v", tt.name, oneByte), func(t *testing.T) {
				var r io.Reader = strings.NewReader(tt.in)
				if oneByte {
					if len(tt.in) > 1<<20 {
						t.Skip("slow")
					}
					r = iotest.OneByteReader(r)
				}
				got, err := readAllData(newSSEReader(r, 4<<20))
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("got %d payloads, want %d", len(got), len(tt.want))
				}
				for i := range got {
					if got[i] != tt.want[i] {
						t.Errorf("payload %d = %.40q (%d bytes), want %.40q (%d bytes)", i, got[i], len(got[i]), tt.want[i], len(tt.want[i]))
					}
				}
			})
		}
	}
}

func TestSSEReaderReadError(t *testing.T) {
	boom := errors.New("connection reset")
	r := io.MultiReader(strings.NewReader("data: a\n\ndata: {\"cut"), iotest.ErrReader(boom))
	got, err := readAllData(newSSEReader(r, 1<<20))
	if !errors.Is(err, boom) || len(got) != 1 || got[0] != "a" {
		t.Errorf("got %q, %v; want [a] and the read error (a cut line is not a payload)", got, err)
	}
}

func TestProgressText(t *testing.T) {
	tests := []struct {
		line    string
		want    string
		percent int
	}{
		{"图像生成中，请稍候...", "图像生成中，请稍候...", -1},
		{"> 🎨 进度 45%", "> 🎨 进度 45%", 45},
		{"进度：12.5% → 30%", "进度：12.5% → 30%", 30},
		{"全角百分号 80％", "全角百分号 80％", 80},
		{"500% not a percentage", "500% not a percentage", -1},
		{"![image](https://img.example.com/a.png)", "", -1},
		{"![image](data:image/png;base64,iVBOR", "", -1},
		{"![ima", "", -1},
		{"[下载链接](https://img.example.com/a.png)", "", -1},
		{"https://img.example.com/a.png", "", -1},
		{"  ✅ ", "", -1},
		{"生成完成 ![x](https://a.example.com/x.png)", "生成完成", -1},
	}
	for _, tt := range tests {
		got := progressText(tt.line)
		if got != tt.want {
			t.Errorf("progressText(%q) = %q, want %q", tt.line, got, tt.want)
		}
		if p := lastPercent(got); p != tt.percent {
			t.Errorf("lastPercent(%q) = %d, want %d", got, p, tt.percent)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2024, 11, 24, 2, 30, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 1.5 ", 1500 * time.Millisecond},
		{"-3", 0},
		{"soon", 0},
		{"Sun, 24 Nov 2024 02:31:30 GMT", 90 * time.Second},
		{"Sun, 24 Nov 2024 02:00:00 GMT", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func FuzzSSE(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"![a](https://a.example.com/a.png)\"}}]}\n\ndata: [DONE]\n\n"))
	f.Add([]byte(": keep-alive\r\n\r\ndata:{\"choices\":[{\"index\":3,\"delta\":{\"reasoning_content\":\"50%\\n\"}}]}\r\n"))
	f.Add([]byte("data: {\"error\":{\"message\":\"x\",\"code\":503}}\n"))
	f.Add([]byte("data: {\"choices\":[{\"index\":-1,\"delta\":{\"content\":[{\"type\":\"image_url\",\"image_url\":\"data:image/png;base64,AA\"}]}}]}\n"))
	f.Add([]byte("\xef\xbb\xbfdata"))
	f.Add([]byte("data: ping\n\ndata:\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		// The reader ends, and every payload is a suffix of a line of the input.
		r := newSSEReader(bytes.NewReader(in), 1<<20)
		for n := 0; ; n++ {
			if n > len(in)+1 {
				t.Fatalf("Next returned %d payloads from %d bytes: it loops", n, len(in))
			}
			data, err := r.Next()
			if err != nil {
				break
			}
			if !bytes.Contains(in, data) {
				t.Fatalf("payload %q is not in the input", data)
			}
		}
		// Reading one byte at a time gives the same payloads.
		a, errA := readAllData(newSSEReader(bytes.NewReader(in), 1<<20))
		b, errB := readAllData(newSSEReader(iotest.OneByteReader(bytes.NewReader(in)), 1<<20))
		if fmt.Sprint(a) != fmt.Sprint(b) || (errA == nil) != (errB == nil) {
			t.Fatalf("chunked reads differ: %q/%v vs %q/%v", a, errA, b, errB)
		}
		// The whole stream consumer never panics, and its refs come from the text.
		res, _ := consumeStream(bytes.NewReader(in), 1<<20, func(core.GenProgress) {})
		for _, u := range res.refs {
			if u == "" {
				t.Fatal("empty ref")
			}
		}
	})
}

// sse5MB is a stream whose one chunk carries a ~5 MB data-URI image, as a
// gateway sends it without streaming the base64 in pieces.
func sse5MB(tb testing.TB) []byte {
	tb.Helper()
	payload := strings.Repeat("iVBORw0KGgoAAAANSUhEUgAA", 5<<20/24)
	var b bytes.Buffer
	b.WriteString("data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"图像生成中...\\n\"}}]}\n\n")
	b.WriteString(": keep-alive\n\n")
	b.WriteString("data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"![image](data:image/png;base64,")
	b.WriteString(payload)
	b.WriteString(")\"}}]}\n\ndata: [DONE]\n\n")
	return b.Bytes()
}

func BenchmarkSSE5MBDataURI(b *testing.B) {
	stream := sse5MB(b)
	b.Run("reader", func(b *testing.B) {
		b.SetBytes(int64(len(stream)))
		b.ReportAllocs()
		for b.Loop() {
			r := newSSEReader(bytes.NewReader(stream), 64<<20)
			n := 0
			for {
				data, err := r.Next()
				if err != nil {
					break
				}
				n += len(data)
			}
			if n < 5<<20 {
				b.Fatalf("read %d bytes of payload", n)
			}
		}
	})
	b.Run("decode and extract", func(b *testing.B) {
		b.SetBytes(int64(len(stream)))
		b.ReportAllocs()
		for b.Loop() {
			res, err := consumeStream(bytes.NewReader(stream), 64<<20, func(core.GenProgress) {})
			if err != nil || len(res.refs) != 1 || len(res.refs[0]) < 5<<20 {
				b.Fatalf("got %d refs, %v", len(res.refs), err)
			}
		}
	})
}

package upstream_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imaginebot/imaginebot/core/upstream"
)

func TestExtract(t *testing.T) {
	const (
		a      = "https://img.example.com/a.png"
		b      = "https://img.example.com/b.jpg"
		signed = "https://cdn.example.com/x.png?sig=ab%2Fcd%3D%3D&exp=1"
		data   = "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQ=="
	)
	tests := []struct {
		name    string
		content string
		want    []string
	}{
		{"empty", "", nil},
		{"no URL", "生成完成", nil},
		{"markdown image", "![image](" + a + ")", []string{a}},
		{"empty alt", "![](" + a + ")", []string{a}},
		{"chinese alt and text", "图像生成中，请稍候...\n\n![一只猫](" + a + ")\n\n生成完成", []string{a}},
		{"title", `![a](` + a + ` "a title")`, []string{a}},
		{"single-quoted title", `![a](` + a + ` 'a title')`, []string{a}},
		{"angle brackets", "![a](<" + a + ">)", []string{a}},
		{"several on one line", "![1](" + a + ")![2](" + b + ")", []string{a, b}},
		{"several lines, order kept", "![2](" + b + ")\n![1](" + a + ")", []string{b, a}},
		{"duplicate images", "![1](" + a + ") ![1 again](" + a + ")", []string{a}},
		{"download link duplicating the image", "![img](" + a + ")\n[下载链接](" + a + ")", []string{a}},
		{"signed URL kept byte for byte", "![x](" + signed + ")", []string{signed}},
		{"data URI image", "![x](" + data + ")", []string{data}},
		{"bare data URI", "here: " + data + " done", []string{data}},
		{"bare data URI ending a sentence", "here: " + data + ".", []string{data}},
		{"data URI that is not an image", "![x](data:text/html;base64,PGI+)", nil},
		{"bare URL", "图片地址 " + a, []string{a}},
		{"bare URL then chinese full stop", "图片地址：" + a + "。请查收", []string{a}},
		{"bare URL then chinese comma", a + "，" + b, []string{a, b}},
		{"bare URL then chinese text", "链接" + a + "请查收", []string{a}},
		{"bare URL then period", "See " + a + ".", []string{a}},
		{"bare URL then comma", a + ", " + b, []string{a, b}},
		{"bare URL in parentheses", "(" + a + ")", []string{a}},
		{"bare URL in quotes", `"` + a + `" '` + b + `'`, []string{a, b}},
		{"bare URL in angle brackets", "<" + a + ">", []string{a}},
		{"bare URL with balanced parentheses", "see https://example.com/wiki/Fox_(animal).png now", []string{"https://example.com/wiki/Fox_(animal).png"}},
		{"bare URL in bold", "**" + a + "**", []string{a}},
		{"image extension is case-insensitive and ignores the query", "https://x.example.com/A.PNG?token=1 and https://x.example.com/page", []string{"https://x.example.com/A.PNG?token=1"}},
		{"links without image extension dropped when there is an image", "![i](" + a + ") [home](https://example.com/) https://example.com/about", []string{a}},
		{"link with image extension kept", "[下载](" + b + ")", []string{b}},
		{"only plain links: all of them", "[查看](https://img.example.com/view?id=1) or https://img.example.com/v/2", []string{"https://img.example.com/view?id=1", "https://img.example.com/v/2"}},
		{"image inside a link", "[![thumb](" + a + ")](https://img.example.com/full)", []string{a}},
		{"alt with brackets", "![a [b] c](" + a + ")", []string{a}},
		{"URL in the alt text", "![" + b + "](" + a + ")", []string{b, a}},
		{"unfinished image at the end of a stream", "![x](" + a, []string{a}},
		{"uppercase scheme", "![x](HTTPS://IMG.EXAMPLE.COM/A.PNG)", []string{"HTTPS://IMG.EXAMPLE.COM/A.PNG"}},
		{"plain http", "![x](http://img.example.com/a.png)", []string{"http://img.example.com/a.png"}},
		{"scheme only", "https:// and https:/// and data:image/png", nil},
		{"word before the scheme", "xhttps://img.example.com/a.png metadata:image/png;base64,AAAA", nil},
		{"URL inside a query", "https://proxy.example.com/?u=https://img.example.com/a.png", []string{"https://proxy.example.com/?u=https://img.example.com/a.png"}},
		{"relative markdown image ignored", "![x](/img/a.png)", nil},
		{"markdown image with a space in a broken URL", "![x](https://img.example.com/a b.png)", []string{"https://img.example.com/a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := upstream.Extract(tt.content)
			if !equal(got, tt.want) {
				t.Errorf("Extract(%q)\n got %q\nwant %q", tt.content, got, tt.want)
			}
		})
	}
}

func TestExtractHugeDataURI(t *testing.T) {
	payload := strings.Repeat("QUJDRA", 1<<20) // 6 MB of base64
	uri := "data:image/png;base64," + payload
	for _, content := range []string{"![image](" + uri + ")", "生成完成\n" + uri + "\n"} {
		got := upstream.Extract(content)
		if len(got) != 1 || got[0] != uri {
			t.Fatalf("got %d refs (first %d bytes), want the 6 MB data URI", len(got), len(first(got)))
		}
	}
}

// Pathological inputs must stay linear: each would take minutes if the
// scanner backtracked.
func TestExtractLinearOnPathologicalInput(t *testing.T) {
	inputs := map[string]string{
		"open brackets":      strings.Repeat("![", 200_000) + "](https://a.example.com/x.png)",
		"unclosed targets":   strings.Repeat("![a](https://a.example.com/x", 50_000),
		"many schemes":       strings.Repeat("https://", 200_000),
		"brackets then link": strings.Repeat("[]", 200_000) + strings.Repeat("](https://a.example.com/1.png)", 10_000),
		"h and d":            strings.Repeat("hd", 500_000),
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			for _, u := range upstream.Extract(in) {
				if !strings.Contains(in, u) {
					t.Fatalf("ref %q not in the input", u)
				}
			}
		})
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func FuzzExtract(f *testing.F) {
	seeds := []string{
		"![image](https://img.example.com/a.png)",
		"![](data:image/png;base64,iVBORw0KGgo=) [下载链接](https://x.example.com/a.png)",
		"图片：https://x.example.com/a.png。 (https://y.example.com/b.jpg)",
		"[![t](https://a.example.com/t.png)](https://a.example.com/full)",
		"![a](<https://a.example.com/x.png>) ![b](https://a.example.com/(1).png \"t\")",
		"![x](https://a.example.com/x",
		"data:image/",
		"](https://",
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "responses", "*.json"))
	for _, path := range files {
		if b, err := os.ReadFile(path); err == nil {
			seeds = append(seeds, string(b))
		}
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, content string) {
		got := upstream.Extract(content)
		seen := map[string]bool{}
		for _, u := range got {
			if u == "" {
				t.Fatalf("empty ref from %q", content)
			}
			if !strings.Contains(content, u) {
				t.Fatalf("ref %q does not appear verbatim in %q", u, content)
			}
			if seen[u] {
				t.Fatalf("ref %q returned twice from %q", u, content)
			}
			seen[u] = true
		}
	})
}

func BenchmarkExtract(b *testing.B) {
	inputs := map[string]string{
		"5MB data URI": "图像生成中，请稍候...\n\n![image](data:image/png;base64," + strings.Repeat("iVBORw0KGgoAAAANSUhEUgAA", 5<<20/24) + ")\n\n生成完成",
		"chatty text":  strings.Repeat("图像生成中，请稍候... 进度 42% ![图片](https://img.example.com/flux/7f3e/1.png?X-Amz-Signature=9f86%3D%3D)\n[下载链接](https://img.example.com/flux/7f3e/1.png?X-Amz-Signature=9f86%3D%3D) https://example.com/about。\n", 2000),
	}
	for name, in := range inputs {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				if len(upstream.Extract(in)) == 0 {
					b.Fatal("no refs")
				}
			}
		})
	}
}

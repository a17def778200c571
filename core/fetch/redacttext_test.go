package fetch_test

import (
	"testing"

	"github.com/imaginebot/imaginebot/core/fetch"
)

func TestRedactText(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"no URL", "生成完成 no link here", "生成完成 no link here"},
		{"bare signed URL", "生成完成 https://cdn.example/a.png?X-Amz-Signature=SECRET&X-Amz-Date=1 done",
			"生成完成 https://cdn.example/a.png done"},
		{"markdown image", "![x](https://cdn.example/a.png?sig=SECRET) and [下载链接](https://cdn.example/a.png?sig=SECRET)",
			"![x](https://cdn.example/a.png) and [下载链接](https://cdn.example/a.png)"},
		{"credentials", "see http://user:SECRET@10.0.0.1/a.png", "see http://10.0.0.1/a.png"},
		{"fragment", "HTTPS://cdn.example/a.png#token=SECRET", "https://cdn.example/a.png"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fetch.RedactText(tt.in); got != tt.want {
				t.Errorf("RedactText(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

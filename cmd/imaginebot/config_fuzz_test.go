package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoadConfig: whatever a configuration file holds, loading it either
// succeeds or fails with a ConfigError whose every problem names a key (or
// the YAML syntax) — never a panic, never an unlabelled error.
func FuzzLoadConfig(f *testing.F) {
	example, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(example),
		"",
		"upstream:\n  timeout: 30\nlimits:\n  burst: 1.5\n",
		"limits: [1, 2]\n",
		"models:\n  - name: \"\"\n  - 7\n",
		"quotas:\n  scopes:\n    \"telegram:privat\": x\n",
		"telegram:\n  owners: [\"bob\", -1]\n  webhook: yes\n",
		"upstream: {base_url: \"http://[::1\", api_key: ${NOPE}}\n",
		"\t\x00: [",
		"a: &a [*a]\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		path := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(path, func(string) string { return "" }, func(string) {})
		if err == nil {
			if cfg == nil || len(cfg.Models) == 0 {
				t.Fatalf("loaded a config without models: %+v", cfg)
			}
			return
		}
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Fatalf("not a ConfigError: %v", err)
		}
		for _, p := range ce.Problems {
			key, _, ok := strings.Cut(p, ": ")
			if !ok || key == "" {
				t.Fatalf("problem without a key: %q", p)
			}
		}
	})
}

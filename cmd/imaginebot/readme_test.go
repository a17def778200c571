package main

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readmeRowRe is a row of the README's configuration reference:
// | `key` | default | environment | what it does |
var readmeRowRe = regexp.MustCompile("(?m)^\\| `([a-z_.\\[\\]]+)` \\| (.*?) \\| (.*?) \\| .* \\|$")

// TestReadmeReferencesEveryKey keeps the README's configuration reference
// in step with the code: every key of Config has a row, every row is a
// key, the default shown is the one applyDefaults applies (a key without
// one says "—"), and the environment column names exactly the variables
// that set the key.
func TestReadmeReferencesEveryKey(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "### Configuration reference")
	if start < 0 {
		t.Fatal("README.md has no \"### Configuration reference\" section")
	}
	section := text[start:]
	if end := strings.Index(section[1:], "\n## "); end >= 0 {
		section = section[:end+1]
	}
	type row struct{ def, env string }
	rows := map[string]row{}
	for _, m := range readmeRowRe.FindAllStringSubmatch(section, -1) {
		if _, dup := rows[m[1]]; dup {
			t.Errorf("README: %s has two rows", m[1])
		}
		rows[m[1]] = row{m[2], m[3]}
	}

	// The defaults, as a configuration with nothing set gets them; a model
	// entry's from an empty entry.
	var defaults Config
	defaults.applyDefaults()
	model := Config{Models: []ModelConfig{{}}}
	model.applyDefaults()
	// The variables that set each key: envSecrets by address, and the one
	// LoadConfig reads itself.
	var probe Config
	envOf := map[uintptr][]string{}
	for name, p := range envSecrets(&probe) {
		envOf[reflect.ValueOf(p).Pointer()] = append(envOf[reflect.ValueOf(p).Pointer()], name)
	}
	extraEnv := map[string]string{
		"telegram.owners": "IMAGINEBOT_TELEGRAM_OWNERS",
		// The password of the user proxy names: no key of its own.
		"proxy": "IMAGINEBOT_PROXY_PASSWORD",
	}
	if cfg, err := LoadConfig("", envMap(map[string]string{"IMAGINEBOT_TELEGRAM_OWNERS": "7"}), func(string) {}); err != nil || !slices.Equal(cfg.Telegram.Owners, []int64{7}) {
		t.Fatalf("IMAGINEBOT_TELEGRAM_OWNERS does not set telegram.owners: %v", err)
	}

	keys := map[string]bool{}
	var walk func(typ reflect.Type, def, addr reflect.Value, path string)
	walk = func(typ reflect.Type, def, addr reflect.Value, path string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			key := join(path, name)
			fv, fa := def.Field(i), addr.Field(i)
			ft := f.Type
			if ft.Kind() == reflect.Struct {
				walk(ft, fv, fa, key) // a section: its keys have the rows
				continue
			}
			keys[key] = true
			r, ok := rows[key]
			if !ok {
				t.Errorf("README: the configuration reference has no row for %s", key)
			} else {
				checkDefault(t, key, r.def, fv)
				want := envOf[fa.Addr().Pointer()]
				if e, ok := extraEnv[key]; ok {
					want = append(want, e)
				}
				checkEnv(t, key, r.env, want)
			}
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				// Each entry's keys, with an empty entry's defaults.
				walk(ft.Elem(), reflect.ValueOf(model.Models[0]), reflect.New(ft.Elem()).Elem(), key+"[]")
			}
		}
	}
	walk(reflect.TypeOf(defaults), reflect.ValueOf(defaults), reflect.ValueOf(&probe).Elem(), "")
	for key := range rows {
		if !keys[key] {
			t.Errorf("README: the configuration reference lists %s, which is no key", key)
		}
	}
	for name := range envSecrets(&probe) {
		if !strings.Contains(section, "`"+name+"`") {
			t.Errorf("README: the configuration reference does not mention %s", name)
		}
	}
}

// checkDefault: a key with a default shows it in backticks; one without
// says "—" (or shows its zero value, `false` or `0`).
func checkDefault(t *testing.T, key, cell string, v reflect.Value) {
	t.Helper()
	shown, zero := render(v)
	if zero && strings.HasPrefix(cell, "—") {
		return
	}
	for _, s := range shown {
		if !strings.Contains(cell, "`"+s+"`") {
			if zero {
				t.Errorf("README: %s has no default: write — (or `%s`), not %q", key, s, cell)
			} else {
				t.Errorf("README: %s defaults to `%s`, the reference says %q", key, s, cell)
			}
		}
	}
}

// checkEnv: the environment column names the variables that set the key
// and no other, or is "—".
func checkEnv(t *testing.T, key, cell string, want []string) {
	t.Helper()
	got := regexp.MustCompile(`IMAGINEBOT_[A-Z_]+`).FindAllString(cell, -1)
	got = slices.DeleteFunc(got, func(s string) bool { return strings.HasSuffix(s, "_FILE") })
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(slices.Compact(got), want) {
		t.Errorf("README: %s is set by %v, the reference says %v", key, want, got)
	}
	if len(want) == 0 && cell != "—" {
		t.Errorf("README: %s has no variable: write —, not %q", key, cell)
	}
}

// render is how the reference writes a default, and whether it is the
// zero value (no default).
func render(v reflect.Value) (shown []string, zero bool) {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return []string{"—"}, true
		}
		v = v.Elem()
	}
	switch {
	case v.Type() == durationType:
		d := time.Duration(v.Int())
		return []string{compactDuration(d)}, d == 0
	case v.Type() == reflect.TypeOf(ByteSize(0)):
		return []string{byteSize(v.Int())}, v.Int() == 0
	}
	switch v.Kind() {
	case reflect.String:
		return []string{v.String()}, v.String() == ""
	case reflect.Bool:
		return []string{strconv.FormatBool(v.Bool())}, !v.Bool()
	case reflect.Int, reflect.Int64:
		return []string{strconv.FormatInt(v.Int(), 10)}, v.Int() == 0
	case reflect.Float64:
		return []string{strconv.FormatFloat(v.Float(), 'g', -1, 64)}, v.Float() == 0
	case reflect.Slice, reflect.Map:
		if v.Len() == 0 {
			return []string{"—"}, true
		}
		if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct {
			for i := range v.Len() {
				shown = append(shown, v.Index(i).FieldByName("Name").String())
			}
			return shown, false
		}
	}
	return []string{fmt.Sprint(v.Interface())}, v.IsZero()
}

// compactDuration writes d as config.example.yaml does: 5m, 90s, 2160h.
func compactDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}

// byteSize writes n with the largest unit that divides it: 20MiB, 10MB.
func byteSize(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"GB", 1e9}, {"MB", 1e6}, {"KiB", 1 << 10}, {"KB", 1e3}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

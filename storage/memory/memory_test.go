package memory_test

import (
	"testing"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/ledgertest"
	"github.com/imaginebot/imaginebot/storage/memory"
)

func TestStore(t *testing.T) {
	tests := []struct {
		name string
		opts []memory.Option
	}{
		{"exclusive", nil},
		{"shared", []memory.Option{memory.Shared()}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ledgertest.Run(t, func(t *testing.T) core.Store { return memory.New(tc.opts...) })
		})
	}
}

// TestExclusive: a store is one process's unless made Shared, which core
// tests use to play two instances on one ledger.
func TestExclusive(t *testing.T) {
	tests := []struct {
		name string
		s    core.Store
		want bool
	}{
		{"New()", memory.New(), true},
		{"New(Shared())", memory.New(memory.Shared()), false},
	}
	for _, tc := range tests {
		e, ok := tc.s.(core.Exclusive)
		if !ok {
			t.Fatalf("%s does not implement core.Exclusive", tc.name)
		}
		if got := e.Exclusive(); got != tc.want {
			t.Errorf("%s.Exclusive() = %t, want %t", tc.name, got, tc.want)
		}
	}
}

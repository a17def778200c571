package memory_test

import (
	"testing"

	"github.com/imaginebot/imaginebot/core"
	"github.com/imaginebot/imaginebot/storage/ledgertest"
	"github.com/imaginebot/imaginebot/storage/memory"
)

func TestStore(t *testing.T) {
	ledgertest.Run(t, func(t *testing.T) core.Store { return memory.New() })
}

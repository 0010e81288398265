package pebble

import (
	"testing"

	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/store/storetest"
)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) verifier.Store { return open(t) })
}

package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier/inventory"
)

// The generated file parses without a bad line, every card distinct and
// bound, with valid check digits.
func TestGeneratedFileParses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.csv")
	const n = 3000
	if _, err := writeCSV(path, n); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[protocol.ICCID]bool{}
	imeis := map[protocol.IMEI]bool{}
	err = inventory.Read(f, inventory.CSV, "", func(it inventory.Item, err error) error {
		if err != nil {
			return err
		}
		if it.Card.ICCID.Warning() != nil || it.Binding == nil || len(it.Binding.IMEIs) != 1 {
			t.Errorf("line %d: %+v, binding %+v", it.Line, it.Card, it.Binding)
		}
		seen[it.Card.ICCID] = true
		imeis[it.Binding.IMEIs[0]] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != n || len(imeis) != n {
		t.Errorf("%d distinct ICCIDs and %d IMEIs, want %d", len(seen), len(imeis), n)
	}
}

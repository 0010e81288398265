package main

import (
	"context"
	"fmt"
	"os"
	"time"

	pdb "github.com/cockroachdb/pebble/v2"

	"github.com/cardbind/cardbind/verifier/inventory"
	"github.com/cardbind/cardbind/verifier/store/pebble"
)

// baselineBatch matches the import's batch of cards per synced write.
const baselineBatch = 1000

// parseOnly reads and parses the file with the verifier's inventory
// parser and returns how long it took and how many items it yielded.
func parseOnly(ctx context.Context, path string) (time.Duration, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("parse baseline: %w", err)
	}
	defer f.Close()
	start := time.Now()
	n := 0
	err = inventory.Read(f, inventory.CSV, "", func(it inventory.Item, err error) error {
		if err != nil {
			return err
		}
		n++
		if n%baselineBatch == 0 {
			return ctx.Err()
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("parse baseline: %w", err)
	}
	return time.Since(start), n, nil
}

// rawPebble parses the file and writes every card to a fresh Pebble
// database in dir (the store's own options): key 'c' + ICCID, value the
// line's fields, in synced batches of baselineBatch.
func rawPebble(ctx context.Context, path, dir string) (time.Duration, error) {
	cache := pdb.NewCache(64 << 20)
	defer cache.Unref()
	po, err := pebble.PebbleOptions(pebble.Options{}, cache)
	if err != nil {
		return 0, err
	}
	db, err := pdb.Open(dir, po)
	if err != nil {
		return 0, fmt.Errorf("pebble baseline: %w", err)
	}
	defer db.Close()
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("pebble baseline: %w", err)
	}
	defer f.Close()
	start := time.Now()
	b := db.NewBatch()
	n := 0
	commit := func() error {
		if err := b.Commit(pdb.Sync); err != nil {
			return err
		}
		b.Close()
		b = db.NewBatch()
		n = 0
		return ctx.Err()
	}
	err = inventory.Read(f, inventory.CSV, "", func(it inventory.Item, err error) error {
		if err != nil {
			return err
		}
		c := it.Card
		v := make([]byte, 0, 96)
		v = append(v, c.Tenant...)
		v = append(v, c.IMSI...)
		v = append(v, c.MSISDN...)
		if it.Binding != nil && len(it.Binding.IMEIs) > 0 {
			v = append(v, it.Binding.IMEIs[0]...)
		}
		if err := b.Set(append([]byte{'c'}, c.ICCID...), v, nil); err != nil {
			return err
		}
		if n++; n == baselineBatch {
			return commit()
		}
		return nil
	})
	if err == nil && n > 0 {
		err = commit()
	}
	b.Close()
	if err != nil {
		return 0, fmt.Errorf("pebble baseline: %w", err)
	}
	return time.Since(start), nil
}

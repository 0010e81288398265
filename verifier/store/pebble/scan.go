package pebble

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	pdb "github.com/cockroachdb/pebble/v2"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// scan calls f for each key in [lower, upper) until f returns false or
// an error.
func (s *Store) scan(ctx context.Context, lower, upper []byte, f func(k, v []byte) (bool, error)) error {
	it, err := s.db.NewIterWithContext(ctx, &pdb.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("pebble: iterator: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		more, err := f(it.Key(), it.Value())
		if err != nil {
			_ = it.Close()
			return err
		}
		if !more {
			break
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("pebble: iterator: %w", err)
	}
	return ctx.Err()
}

// History returns up to limit history entries of a card with Seq greater
// than after, oldest first.
func (s *Store) History(ctx context.Context, iccid protocol.ICCID, after uint64, limit int) ([]verifier.HistoryEntry, error) {
	if limit <= 0 || after == ^uint64(0) {
		return nil, ctx.Err()
	}
	var out []verifier.HistoryEntry
	err := s.scan(ctx, historyKey(iccid, after+1), prefixEnd(historyPrefix(iccid)), func(_, v []byte) (bool, error) {
		var h verifier.HistoryEntry
		if err := decodeJSON(v, &h); err != nil {
			return false, fmt.Errorf("pebble: history of %s: %w", iccid, err)
		}
		out = append(out, h)
		return len(out) < limit, nil
	})
	return out, err
}

// GraceDue returns up to limit cards in grace whose GraceUntil is at or
// before now, earliest deadline first.
func (s *Store) GraceDue(ctx context.Context, now time.Time, limit int) ([]protocol.ICCID, error) {
	if limit <= 0 {
		return nil, ctx.Err()
	}
	upper := be64([]byte{'g'}, nanos(now)+1)
	var out []protocol.ICCID
	err := s.scan(ctx, []byte{'g'}, upper, func(k, _ []byte) (bool, error) {
		out = append(out, protocol.ICCID(k[9:]))
		return len(out) < limit, nil
	})
	return out, err
}

// PendingOutbox returns up to limit outbox entries of a kind whose
// NotBefore is at or before now, oldest (by Created) first. Entries that
// are not due are passed over without being decoded.
func (s *Store) PendingOutbox(ctx context.Context, kind verifier.OutboxKind, now time.Time, limit int) ([]verifier.OutboxEntry, error) {
	if limit <= 0 {
		return nil, ctx.Err()
	}
	p := outboxPrefix(kind)
	due := nanos(now)
	var out []verifier.OutboxEntry
	err := s.scan(ctx, p, prefixEnd(p), func(_, v []byte) (bool, error) {
		nb, err := outboxNotBefore(v)
		if err != nil {
			return false, fmt.Errorf("pebble: outbox: %w", err)
		}
		if nb > due {
			return true, nil
		}
		e, err := decodeOutbox(v)
		if err != nil {
			return false, fmt.Errorf("pebble: outbox: %w", err)
		}
		out = append(out, e)
		return len(out) < limit, nil
	})
	return out, err
}

// RescheduleOutbox stores an entry's new Attempts and NotBefore; the rest
// of the stored entry (kind, created, payload) stays as it is.
func (s *Store) RescheduleOutbox(ctx context.Context, e verifier.OutboxEntry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.flushPending(); err != nil { // keeps writes in order (pending.go)
		return err
	}
	idKey := outboxIDKey(e.ID)
	defer s.lock(&s.rows, [][]byte{idKey})()
	k, err := getCopy(s.db, idKey)
	if err != nil {
		return err
	}
	v, err := getCopy(s.db, k)
	if errors.Is(err, verifier.ErrNotFound) {
		return fmt.Errorf("pebble: outbox %s: id without entry: %w", e.ID, errCorrupt)
	}
	if err != nil {
		return err
	}
	stored, err := decodeOutbox(v)
	if err != nil {
		return fmt.Errorf("pebble: outbox %s: %w", e.ID, err)
	}
	stored.Attempts, stored.NotBefore = e.Attempts, e.NotBefore
	if v, err = encodeOutbox(&stored); err != nil {
		return fmt.Errorf("pebble: outbox %s: %w", e.ID, err)
	}
	if err := s.db.Set(k, v, pdb.Sync); err != nil {
		return fmt.Errorf("pebble: reschedule %s: %w", e.ID, err)
	}
	return nil
}

// CompleteOutbox removes a done entry; an absent one is not an error.
func (s *Store) CompleteOutbox(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.flushPending(); err != nil { // keeps writes in order (pending.go)
		return err
	}
	idKey := outboxIDKey(id)
	defer s.lock(&s.rows, [][]byte{idKey})()
	k, err := getCopy(s.db, idKey)
	if errors.Is(err, verifier.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Delete(k, nil)
	_ = b.Delete(idKey, nil)
	if err := b.Commit(pdb.Sync); err != nil {
		return fmt.Errorf("pebble: complete %s: %w", id, err)
	}
	return nil
}

// PutRecord stores value under (ns, key), replacing what was there.
func (s *Store) PutRecord(ctx context.Context, ns, key string, value []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.flushPending(); err != nil { // keeps writes in order (pending.go)
		return err
	}
	k := recordKey(ns, key)
	defer s.lock(&s.rows, [][]byte{k})()
	if err := s.db.Set(k, value, pdb.Sync); err != nil {
		return fmt.Errorf("pebble: put record %s/%s: %w", ns, key, err)
	}
	return nil
}

// PutRecords stores many records of one namespace in one synced batch:
// all of them or, on error, none.
func (s *Store) PutRecords(ctx context.Context, ns string, recs []verifier.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.flushPending(); err != nil { // keeps writes in order (pending.go)
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	keys := make([][]byte, len(recs))
	for i, r := range recs {
		keys[i] = recordKey(ns, r.Key)
	}
	defer s.lock(&s.rows, keys)()
	b := s.db.NewBatch()
	defer b.Close()
	for i, r := range recs {
		if err := b.Set(keys[i], r.Value, nil); err != nil {
			return fmt.Errorf("pebble: put record %s/%s: %w", ns, r.Key, err)
		}
	}
	if err := b.Commit(pdb.Sync); err != nil {
		return fmt.Errorf("pebble: put %d records in %s: %w", len(recs), ns, err)
	}
	return nil
}

// GetRecord returns the value under (ns, key).
func (s *Store) GetRecord(ctx context.Context, ns, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return getCopy(s.db, recordKey(ns, key))
}

// TakeRecord returns the value under (ns, key) and deletes it, atomically
// against every other writer of the record.
func (s *Store) TakeRecord(ctx context.Context, ns, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.flushPending(); err != nil { // keeps writes in order (pending.go)
		return nil, err
	}
	k := recordKey(ns, key)
	defer s.lock(&s.rows, [][]byte{k})()
	v, err := getCopy(s.db, k)
	if err != nil {
		return nil, err
	}
	if err := s.db.Delete(k, pdb.Sync); err != nil {
		return nil, fmt.Errorf("pebble: take record %s/%s: %w", ns, key, err)
	}
	return v, nil
}

// DeleteRecord deletes (ns, key); an absent record is not an error.
func (s *Store) DeleteRecord(ctx context.Context, ns, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.flushPending(); err != nil { // keeps writes in order (pending.go)
		return err
	}
	k := recordKey(ns, key)
	defer s.lock(&s.rows, [][]byte{k})()
	if err := s.db.Delete(k, pdb.Sync); err != nil {
		return fmt.Errorf("pebble: delete record %s/%s: %w", ns, key, err)
	}
	return nil
}

// ListRecords returns up to limit records of ns with keys greater than
// after, in key order.
func (s *Store) ListRecords(ctx context.Context, ns, after string, limit int) ([]verifier.Record, error) {
	if limit <= 0 {
		return nil, ctx.Err()
	}
	p := recordPrefix(ns)
	lower := p
	if after != "" {
		lower = append(recordKey(ns, after), 0)
	}
	var out []verifier.Record
	err := s.scan(ctx, lower, prefixEnd(p), func(k, v []byte) (bool, error) {
		out = append(out, verifier.Record{Key: string(k[len(p):]), Value: bytes.Clone(v)})
		return len(out) < limit, nil
	})
	return out, err
}

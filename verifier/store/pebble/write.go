package pebble

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	pdb "github.com/cockroachdb/pebble/v2"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// cardWrite is one card a batch replaces: old (nil when new) by next.
type cardWrite struct {
	old, next *verifier.Card
}

// indexKeys returns the index keys the writes remove or set, for the
// value stripes.
func indexKeys(ws []cardWrite) [][]byte {
	var keys [][]byte
	for _, w := range ws {
		for _, kind := range indexKinds {
			ov, nv := indexValue(w.old, kind), indexValue(w.next, kind)
			if ov == nv {
				continue
			}
			if ov != "" {
				keys = append(keys, indexKey(kind, ov))
			}
			if nv != "" {
				keys = append(keys, indexKey(kind, nv))
			}
		}
	}
	return keys
}

// putCard adds to b (an indexed batch) the writes that replace w.old by
// w.next: the value, index changes and grace index changes. The value
// stripes of the changed index values must be held.
func putCard(b *pdb.Batch, w cardWrite) error {
	iccid := w.next.ICCID
	for _, kind := range indexKinds {
		ov, nv := indexValue(w.old, kind), indexValue(w.next, kind)
		if ov == nv {
			continue
		}
		if ov != "" {
			// Remove the old value only if it still points here: it may
			// have moved to another card since.
			k := indexKey(kind, ov)
			cur, err := getCopy(b, k)
			switch {
			case errors.Is(err, verifier.ErrNotFound):
			case err != nil:
				return err
			case string(cur) == string(iccid):
				if err := b.Delete(k, nil); err != nil {
					return err
				}
			}
		}
		if nv != "" {
			if err := b.Set(indexKey(kind, nv), []byte(iccid), nil); err != nil {
				return err
			}
		}
	}
	if og, ng := graceUntil(w.old), graceUntil(w.next); og != ng {
		if og != 0 {
			if err := b.Delete(graceKey(og, iccid), nil); err != nil {
				return err
			}
		}
		if ng != 0 {
			if err := b.Set(graceKey(ng, iccid), nil, nil); err != nil {
				return err
			}
		}
	}
	return b.Set(cardKey(iccid), encodeCard(w.next), nil)
}

// Commit writes a decision atomically: card, history entry, outbox
// entries and device, in one synced batch, or nothing.
func (s *Store) Commit(ctx context.Context, c *verifier.Commit) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkCommit(c); err != nil {
		return err
	}
	rows := make([][]byte, 0, 2+len(c.Outbox))
	if c.Card != nil {
		rows = append(rows, cardKey(c.Card.ICCID))
	}
	if c.Device != nil {
		rows = append(rows, deviceKey(c.Device.ID))
	}
	for i := range c.Outbox {
		rows = append(rows, outboxIDKey(c.Outbox[i].ID))
	}
	unlock := s.lock(&s.rows, rows)
	defer unlock()

	b := s.db.NewIndexedBatch()
	defer b.Close()

	var ws []cardWrite
	if c.Card != nil {
		old, err := readCard(s.db, c.Card.ICCID)
		switch {
		case errors.Is(err, verifier.ErrNotFound):
			if c.Card.Version != 0 {
				return fmt.Errorf("card %s: version %d read, now gone: %w", c.Card.ICCID, c.Card.Version, verifier.ErrConflict)
			}
			old = nil
		case err != nil:
			return err
		case c.Card.Version == 0:
			return fmt.Errorf("card %s: created, but it exists: %w", c.Card.ICCID, verifier.ErrConflict)
		case old.Version != c.Card.Version:
			return fmt.Errorf("card %s: version %d read, now %d: %w", c.Card.ICCID, c.Card.Version, old.Version, verifier.ErrConflict)
		}
		next := *c.Card
		next.Version++
		ws = append(ws, cardWrite{old: old, next: &next})
	}
	if d := c.Device; d != nil {
		old, err := readDevice(s.db, d.ID)
		switch {
		case errors.Is(err, verifier.ErrNotFound):
			if d.Version != 0 {
				return fmt.Errorf("device %s: version %d read, now gone: %w", d.ID, d.Version, verifier.ErrConflict)
			}
		case err != nil:
			return err
		case d.Version == 0:
			return fmt.Errorf("device %s: created, but it exists: %w", d.ID, verifier.ErrConflict)
		case old.Version != d.Version:
			return fmt.Errorf("device %s: version %d read, now %d: %w", d.ID, d.Version, old.Version, verifier.ErrConflict)
		}
		next := *d
		next.Version++
		if err := b.Set(deviceKey(d.ID), encodeDevice(&next), nil); err != nil {
			return fmt.Errorf("pebble: device %s: %w", d.ID, err)
		}
	}

	unlockValues := s.lock(&s.values, indexKeys(ws))
	defer unlockValues()
	for _, w := range ws {
		if err := putCard(b, w); err != nil {
			return fmt.Errorf("pebble: card %s: %w", w.next.ICCID, err)
		}
	}
	if h := c.History; h != nil {
		v, err := encodeJSON(h)
		if err != nil {
			return fmt.Errorf("pebble: history of %s: %w", h.ICCID, err)
		}
		if err := b.Set(historyKey(h.ICCID, h.Seq), v, nil); err != nil {
			return fmt.Errorf("pebble: history of %s: %w", h.ICCID, err)
		}
	}
	for i := range c.Outbox {
		if err := putOutbox(b, &c.Outbox[i]); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.Commit(pdb.Sync); err != nil {
		return fmt.Errorf("pebble: commit: %w", err)
	}
	if c.Card != nil {
		c.Card.Version++
	}
	if c.Device != nil {
		c.Device.Version++
	}
	return nil
}

// checkCommit refuses a commit whose records have no key.
func checkCommit(c *verifier.Commit) error {
	if c.Card != nil && c.Card.ICCID == "" {
		return errors.New("pebble: commit: card without ICCID")
	}
	if c.Device != nil && c.Device.ID == "" {
		return errors.New("pebble: commit: device without id")
	}
	if c.History != nil && c.History.ICCID == "" {
		return errors.New("pebble: commit: history entry without ICCID")
	}
	for _, e := range c.Outbox {
		if e.ID == "" || e.Kind == "" {
			return errors.New("pebble: commit: outbox entry without id or kind")
		}
	}
	return nil
}

// putOutbox adds an outbox entry to b. An id already stored keeps its
// place in the queue (a decision committed again after a crash).
func putOutbox(b *pdb.Batch, e *verifier.OutboxEntry) error {
	v, err := encodeOutbox(e)
	if err != nil {
		return fmt.Errorf("pebble: outbox %s: %w", e.ID, err)
	}
	k := outboxKey(e)
	prev, err := getCopy(b, outboxIDKey(e.ID))
	switch {
	case err == nil:
		if err := b.Delete(prev, nil); err != nil {
			return err
		}
		if bytes.HasPrefix(prev, outboxPrefix(e.Kind)) {
			k = prev
		}
	case !errors.Is(err, verifier.ErrNotFound):
		return err
	}
	if err := b.Set(k, v, nil); err != nil {
		return err
	}
	return b.Set(outboxIDKey(e.ID), k, nil)
}

// UpsertInventory creates cards or updates their inventory fields
// (Tenant, IMSI, MSISDN, NAI) in one synced batch, leaving binding and
// status alone. A created card is unbound. A changed card's Version
// increases, so an engine write that read it before retries. An ICCID
// repeated within one call is written once, with its last item's fields.
func (s *Store) UpsertInventory(ctx context.Context, items []verifier.Card) (created, changed int, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	rows := make([][]byte, len(items))
	for i := range items {
		if items[i].ICCID == "" {
			return 0, 0, fmt.Errorf("pebble: upsert: item %d without ICCID", i)
		}
		rows[i] = cardKey(items[i].ICCID)
	}
	unlock := s.lock(&s.rows, rows)
	defer unlock()

	// Read the current cards and decide what changes. A card repeated in
	// items is written once, with the last item's fields.
	type plan struct{ old, next *verifier.Card }
	plans := make(map[protocol.ICCID]*plan, len(items))
	order := make([]protocol.ICCID, 0, len(items))
	for i := range items {
		it := &items[i]
		p, ok := plans[it.ICCID]
		if !ok {
			old, err := readCard(s.db, it.ICCID)
			if errors.Is(err, verifier.ErrNotFound) {
				old, err = nil, nil
			}
			if err != nil {
				return 0, 0, err
			}
			p = &plan{old: old}
			plans[it.ICCID] = p
			order = append(order, it.ICCID)
		}
		if p.next == nil {
			if p.old != nil {
				cp := *p.old
				p.next = &cp
			} else {
				p.next = &verifier.Card{ICCID: it.ICCID, Status: verifier.CardStatus{State: protocol.CardUnbound}}
			}
		}
		p.next.Tenant, p.next.IMSI, p.next.MSISDN, p.next.NAI = it.Tenant, it.IMSI, it.MSISDN, it.NAI
	}
	ws := make([]cardWrite, 0, len(order))
	for _, iccid := range order {
		p := plans[iccid]
		if o := p.old; o != nil {
			n := p.next
			if o.Tenant == n.Tenant && o.IMSI == n.IMSI && o.MSISDN == n.MSISDN && o.NAI == n.NAI {
				continue
			}
			changed++
		} else {
			created++
		}
		p.next.Version++
		ws = append(ws, cardWrite{old: p.old, next: p.next})
	}
	if len(ws) == 0 {
		return created, changed, nil
	}

	unlockValues := s.lock(&s.values, indexKeys(ws))
	defer unlockValues()
	b := s.db.NewIndexedBatch()
	defer b.Close()
	for _, w := range ws {
		if err := putCard(b, w); err != nil {
			return 0, 0, fmt.Errorf("pebble: upsert %s: %w", w.next.ICCID, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	if err := b.Commit(pdb.Sync); err != nil {
		return 0, 0, fmt.Errorf("pebble: upsert: %w", err)
	}
	return created, changed, nil
}

package pebble

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

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

// effects are what a batch changes in the store's memory once it has
// committed: entries of the IMSI index in memory, values in the row
// cache.
type effects struct {
	mirror []mirrorOp
	rows   []rowValue
}

// putCard adds to b (an indexed batch) the writes that replace w.old by
// w.next: the value, index changes and grace index changes. The value
// stripes of the changed index values must be held. It appends to fx
// the value and the changes of the IMSI index.
func putCard(b *pdb.Batch, w cardWrite, fx *effects) error {
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
			default:
				holder, err := indexTarget(k, cur)
				if err != nil {
					return fmt.Errorf("%s %s: %w", kind, ov, err)
				}
				if holder == iccid {
					if err := b.Delete(k, nil); err != nil {
						return err
					}
					addMirrorOp(&fx.mirror, kind, ov, "")
				}
			}
		}
		if nv != "" {
			k := indexKey(kind, nv)
			if err := b.Set(k, indexValueOf(k, iccid), nil); err != nil {
				return err
			}
			addMirrorOp(&fx.mirror, kind, nv, iccid)
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
	return putRow(b, fx, cardKey(iccid), encodeCard(w.next))
}

// putRow adds a card or device value to b and to fx.
func putRow(b *pdb.Batch, fx *effects, key, value []byte) error {
	fx.rows = append(fx.rows, rowValue{key: string(key), value: value})
	return b.Set(key, value, nil)
}

// addMirrorOp appends the mirror's change for an index entry of kind
// set to iccid (removed: ""), if it is one the mirror holds.
func addMirrorOp(ops *[]mirrorOp, kind verifier.IndexKind, value string, iccid protocol.ICCID) {
	if kind != verifier.ByIMSI {
		return
	}
	if op, ok := mirrorOpOf(value, iccid); ok {
		*ops = append(*ops, op)
	}
}

// Commit writes a decision atomically: card, history entry, outbox
// entries and device, in one synced batch, or nothing.
func (s *Store) Commit(ctx context.Context, c *verifier.Commit) error {
	return s.commitAll(ctx, []*verifier.Commit{c}, pdb.Sync)
}

// CommitLazy writes like Commit but returns without waiting for the
// write-ahead log to reach the disk; see verifier.Store. A quiet commit
// (no history or outbox entry, an existing card whose indexes and grace
// deadline stay as they are) is not written to Pebble at once: its rows
// wait in memory for the next sync or other write (pending.go).
func (s *Store) CommitLazy(ctx context.Context, c *verifier.Commit) error {
	if c.History == nil && len(c.Outbox) == 0 {
		done, err := s.commitQuiet(ctx, c)
		if done || err != nil {
			return err
		}
	}
	return s.commitAll(ctx, []*verifier.Commit{c}, pdb.NoSync)
}

// commitQuiet checks c's versions as Commit does and, if c changes no
// index entry and no grace deadline, puts its rows among the pending
// ones. It returns false, having written nothing, when c does not
// qualify.
func (s *Store) commitQuiet(ctx context.Context, c *verifier.Commit) (bool, error) {
	if err := ctx.Err(); err != nil {
		return true, err
	}
	cs := []*verifier.Commit{c}
	keys, err := commitRows(cs)
	if err != nil {
		return true, err
	}
	unlock := s.lock(&s.rows, keys)
	defer unlock()

	ws, err := s.checkCards(ctx, cs)
	if err != nil {
		return true, err
	}
	if len(indexKeys(ws)) > 0 {
		return false, nil
	}
	rows := make([]rowValue, 0, 2)
	for _, w := range ws {
		if w.old == nil || graceUntil(w.old) != graceUntil(w.next) {
			return false, nil
		}
		rows = append(rows, rowValue{key: string(cardKey(w.next.ICCID)), value: encodeCard(w.next), rec: w.next.Clone()})
	}
	if c.Device != nil {
		next, err := s.checkDevice(c.Device)
		if err != nil {
			return true, err
		}
		rows = append(rows, rowValue{key: string(deviceKey(next.ID)), value: encodeDevice(next), rec: next.Clone()})
	}
	// Mark the rows in the cache before they show in pending: once a
	// reader has seen them there, a flush may take them out of pending,
	// and no reader may then find the older values in the cache.
	s.rowCache.begin(rows)
	full := s.pending.put(rows)
	if s.hookQuietPut != nil {
		s.hookQuietPut()
	}
	s.rowCache.written(rows)
	if c.Card != nil {
		c.Card.Version++
	}
	if c.Device != nil {
		c.Device.Version++
	}
	if full {
		// The commit stands whatever the flush does: a failed flush
		// keeps the rows, for the next write or sync to retry.
		_ = s.flushPending()
	}
	return true, nil
}

// Sync makes every write made before it durable: the pending rows, then
// an empty synced write, which syncs the write-ahead log up to it.
func (s *Store) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.flushPending(); err != nil {
		return err
	}
	if err := s.db.LogData(nil, pdb.Sync); err != nil {
		return fmt.Errorf("pebble: sync: %w", err)
	}
	return nil
}

// CommitAll writes many commits in one synced batch, or nothing: a
// version conflict in any of them is ErrConflict for all. The row stripes
// of every card, device and outbox id the commits name are held for the
// whole write, so a large call (an import batch) briefly holds most
// stripes.
func (s *Store) CommitAll(ctx context.Context, cs []*verifier.Commit) error {
	if len(cs) == 0 {
		return ctx.Err()
	}
	return s.commitAll(ctx, cs, pdb.Sync)
}

func (s *Store) commitAll(ctx context.Context, cs []*verifier.Commit, sync *pdb.WriteOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rows, err := commitRows(cs)
	if err != nil {
		return err
	}
	// Encode the history entries before locking: the locks of a large
	// call block verifications of its cards while they are held.
	history, err := encodeHistory(cs)
	if err != nil {
		return err
	}
	unlock := s.lock(&s.rows, rows)
	defer unlock()

	b := s.db.NewIndexedBatch()
	defer b.Close()

	ws, err := s.checkCards(ctx, cs)
	if err != nil {
		return err
	}
	fx := effects{rows: make([]rowValue, 0, 2*len(cs))}
	for _, c := range cs {
		if c.Device != nil {
			if err := s.putDevice(b, c.Device, &fx); err != nil {
				return err
			}
		}
	}

	unlockValues := s.lock(&s.values, indexKeys(ws))
	defer unlockValues()
	for _, w := range ws {
		if err := putCard(b, w, &fx); err != nil {
			return fmt.Errorf("pebble: card %s: %w", w.next.ICCID, err)
		}
	}
	for i, c := range cs {
		var h []byte
		if history != nil {
			h = history[i]
		}
		if err := putHistoryOutbox(b, c, h); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.commitBatch(b, sync, &fx); err != nil {
		return fmt.Errorf("pebble: commit: %w", err)
	}
	for _, c := range cs {
		if c.Card != nil {
			c.Card.Version++
		}
		if c.Device != nil {
			c.Device.Version++
		}
	}
	return nil
}

// commitBatch commits b, whose rows and changes in memory fx holds, and
// makes those changes once it has committed, while the caller still
// holds the batch's row and value stripes: in the row cache (whose rows
// are marked as being written meanwhile, so that the batch stays atomic
// to readers), and the IMSI index changes in the mirror, so that two
// writes of one IMSI reach the mirror in the order they reached Pebble.
func (s *Store) commitBatch(b *pdb.Batch, opts *pdb.WriteOptions, fx *effects) error {
	if err := s.flushPending(); err != nil {
		return err
	}
	s.rowCache.begin(fx.rows)
	committed := false
	defer func() {
		if !committed { // an error, or a panic in Pebble
			s.rowCache.forget(fx.rows)
		}
	}()
	if err := b.Commit(opts); err != nil {
		return err
	}
	committed = true
	s.rowCache.written(fx.rows)
	if s.imsi != nil && len(fx.mirror) > 0 {
		s.imsi.apply(fx.mirror)
	}
	return nil
}

// commitRows checks the commits and returns the row keys they lock: every
// card, device and outbox id, each named by at most one commit.
func commitRows(cs []*verifier.Commit) ([][]byte, error) {
	n := 0
	for _, c := range cs {
		if c != nil {
			n += 2 + len(c.Outbox)
		}
	}
	rows := make([][]byte, 0, n)
	var seen map[string]bool // for many rows; a few are compared in turn
	if n > 8 {
		seen = make(map[string]bool, n)
	}
	add := func(k []byte) error {
		dup := seen[string(k)]
		if seen == nil {
			dup = slices.ContainsFunc(rows, func(r []byte) bool { return bytes.Equal(r, k) })
		}
		if dup {
			return fmt.Errorf("pebble: commit: %q appears in two commits of one call", k)
		}
		if seen != nil {
			seen[string(k)] = true
		}
		rows = append(rows, k)
		return nil
	}
	for _, c := range cs {
		if c == nil {
			return nil, errors.New("pebble: commit: nil commit")
		}
		if err := checkCommit(c); err != nil {
			return nil, err
		}
		var err error
		if c.Card != nil {
			err = errors.Join(err, add(cardKey(c.Card.ICCID)))
		}
		if c.Device != nil {
			err = errors.Join(err, add(deviceKey(c.Device.ID)))
		}
		for i := range c.Outbox {
			err = errors.Join(err, add(outboxIDKey(c.Outbox[i].ID)))
		}
		if err != nil {
			return nil, err
		}
	}
	return rows, nil
}

// checkCards reads the stored cards of the commits (one Get for one
// card, one iterator for more) and checks each commit's version against
// them; it returns the writes that replace them. The cards' row stripes
// must be held.
func (s *Store) checkCards(ctx context.Context, cs []*verifier.Commit) ([]cardWrite, error) {
	cards := make([]*verifier.Card, 0, len(cs))
	for _, c := range cs {
		if c.Card != nil {
			cards = append(cards, c.Card)
		}
	}
	var olds []*verifier.Card
	switch len(cards) {
	case 0:
		return nil, nil
	case 1:
		old, _, err := s.card(cards[0].ICCID, true) // read only
		if err != nil && !errors.Is(err, verifier.ErrNotFound) {
			return nil, err
		}
		olds = []*verifier.Card{old}
	default:
		iccids := make([]protocol.ICCID, len(cards))
		for i, c := range cards {
			iccids[i] = c.ICCID
		}
		if err := s.flushPending(); err != nil { // the iterator reads Pebble alone
			return nil, err
		}
		var err error
		if olds, err = readCards(ctx, s.db, iccids); err != nil {
			return nil, err
		}
	}
	ws := make([]cardWrite, len(cards))
	for i, c := range cards {
		w, err := checkCard(c, olds[i])
		if err != nil {
			return nil, err
		}
		ws[i] = w
	}
	return ws, nil
}

// checkCard checks a commit's card against the stored one (nil: none)
// and returns the write that replaces it.
func checkCard(c, old *verifier.Card) (cardWrite, error) {
	switch {
	case old == nil:
		if c.Version != 0 {
			return cardWrite{}, fmt.Errorf("card %s: version %d read, now gone: %w", c.ICCID, c.Version, verifier.ErrConflict)
		}
	case c.Version == 0:
		return cardWrite{}, fmt.Errorf("card %s: created, but it exists: %w", c.ICCID, verifier.ErrConflict)
	case old.Version != c.Version:
		return cardWrite{}, fmt.Errorf("card %s: version %d read, now %d: %w", c.ICCID, c.Version, old.Version, verifier.ErrConflict)
	}
	next := *c
	next.Version++
	return cardWrite{old: old, next: &next}, nil
}

// putDevice checks a device's version against the stored one and adds
// its write to b and fx. The device's row stripe must be held.
func (s *Store) putDevice(b *pdb.Batch, d *verifier.Device, fx *effects) error {
	next, err := s.checkDevice(d)
	if err != nil {
		return err
	}
	if err := putRow(b, fx, deviceKey(d.ID), encodeDevice(next)); err != nil {
		return fmt.Errorf("pebble: device %s: %w", d.ID, err)
	}
	return nil
}

// checkDevice checks a commit's device against the stored one and
// returns the device to store, its version moved on.
func (s *Store) checkDevice(d *verifier.Device) (*verifier.Device, error) {
	old, _, err := s.device(d.ID) // read only
	switch {
	case errors.Is(err, verifier.ErrNotFound):
		if d.Version != 0 {
			return nil, fmt.Errorf("device %s: version %d read, now gone: %w", d.ID, d.Version, verifier.ErrConflict)
		}
	case err != nil:
		return nil, err
	case d.Version == 0:
		return nil, fmt.Errorf("device %s: created, but it exists: %w", d.ID, verifier.ErrConflict)
	case old.Version != d.Version:
		return nil, fmt.Errorf("device %s: version %d read, now %d: %w", d.ID, d.Version, old.Version, verifier.ErrConflict)
	}
	next := *d
	next.Version++
	return &next, nil
}

// encodeHistory returns the encoded history entry of each commit (nil
// for none), or nil when none has one.
func encodeHistory(cs []*verifier.Commit) ([][]byte, error) {
	var out [][]byte
	for i, c := range cs {
		if h := c.History; h != nil {
			if out == nil {
				out = make([][]byte, len(cs))
			}
			v, err := encodeJSON(h)
			if err != nil {
				return nil, fmt.Errorf("pebble: history of %s: %w", h.ICCID, err)
			}
			out[i] = v
		}
	}
	return out, nil
}

// putHistoryOutbox adds a commit's history entry, encoded as history,
// and its outbox entries to b.
func putHistoryOutbox(b *pdb.Batch, c *verifier.Commit, history []byte) error {
	if h := c.History; h != nil {
		if err := b.Set(historyKey(h.ICCID, h.Seq), history, nil); err != nil {
			return fmt.Errorf("pebble: history of %s: %w", h.ICCID, err)
		}
	}
	for i := range c.Outbox {
		if err := putOutbox(b, &c.Outbox[i]); err != nil {
			return err
		}
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
	// items is written once, with the last item's fields. A bulk call
	// (an import) reads Pebble alone: its cards would only push the rows
	// live reports use out of the row cache, and its write does not keep
	// them either (rowCache.written).
	read := s.readCard
	if len(items) > maxPutRows {
		read = s.readCardUncached
	}
	type plan struct{ old, next *verifier.Card }
	plans := make(map[protocol.ICCID]*plan, len(items))
	order := make([]protocol.ICCID, 0, len(items))
	for i := range items {
		it := &items[i]
		p, ok := plans[it.ICCID]
		if !ok {
			old, err := read(it.ICCID)
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
	fx := effects{rows: make([]rowValue, 0, len(ws))}
	for _, w := range ws {
		if err := putCard(b, w, &fx); err != nil {
			return 0, 0, fmt.Errorf("pebble: upsert %s: %w", w.next.ICCID, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	if err := s.commitBatch(b, pdb.Sync, &fx); err != nil {
		return 0, 0, fmt.Errorf("pebble: upsert: %w", err)
	}
	return created, changed, nil
}

package pebble

import (
	"bytes"
	"fmt"
	"sync"

	pdb "github.com/cockroachdb/pebble/v2"
)

// pendingRows holds the card and device rows that quiet lazy commits
// wrote (CommitLazy of a card's last-seen state and a device's sequence
// number: no history, no outbox, no index change) and that are not yet
// in Pebble. Reads look here before Pebble (after the row cache, which
// such a commit marks before it puts its rows here, so that the cache
// never holds an older value than this). The rows go to Pebble in one
// batch when the store syncs, and before any other write, so that
// writes still reach the disk in the order they were made: a crash
// loses a lazy write only with every write made after it
// (verifier.Store).
//
// A quiet report then costs a map insert instead of a Pebble batch of
// its own (its commit pipeline, its memtable inserts, its write-ahead log
// record); a device that reports more than once between two syncs is
// written once. A crash of the process loses the rows not yet flushed,
// as a crash of the machine loses unsynced writes: callers sync before
// they acknowledge what the rows record.
type pendingRows struct {
	mu   sync.Mutex
	rows map[string][]byte // key → encoded value; never modified once put

	// flushing serializes flushes, so that a flush that read an older
	// value cannot write it after a newer one reached Pebble.
	flushing sync.Mutex
}

// maxPendingRows bounds the rows waiting for a flush: the lazy commit
// that reaches it flushes them. Reports are synced long before (every
// sync round of the verifier's workers); it bounds callers that do not
// sync.
const maxPendingRows = 4096

func newPendingRows() *pendingRows { return &pendingRows{rows: make(map[string][]byte)} }

// get returns the pending value of key, if there is one.
func (p *pendingRows) get(key []byte) ([]byte, bool) {
	p.mu.Lock()
	v, ok := p.rows[string(key)]
	p.mu.Unlock()
	return v, ok
}

// put records rows, replacing earlier values of the same keys, and says
// whether the rows waiting have reached maxPendingRows.
func (p *pendingRows) put(rows []rowValue) (full bool) {
	p.mu.Lock()
	for _, r := range rows {
		p.rows[r.key] = r.value
	}
	full = len(p.rows) >= maxPendingRows
	p.mu.Unlock()
	return full
}

// flushPending writes the pending rows to Pebble in one batch, without
// waiting for the disk, and then stops holding those that no lazy commit
// replaced meanwhile. Reads see the rows throughout: from here until
// the batch is applied, from Pebble after. Every write to Pebble but the
// flush itself calls it first; a write of cards or devices calls it
// while it holds their row stripes, so that no lazy commit of them can
// come between the flush and the write.
func (s *Store) flushPending() error {
	p := s.pending
	p.flushing.Lock()
	defer p.flushing.Unlock()
	p.mu.Lock()
	if len(p.rows) == 0 {
		p.mu.Unlock()
		return nil
	}
	taken := make([]rowValue, 0, len(p.rows))
	for k, v := range p.rows {
		taken = append(taken, rowValue{key: k, value: v})
	}
	p.mu.Unlock()

	b := s.db.NewBatch()
	defer b.Close()
	for _, r := range taken {
		if err := b.Set([]byte(r.key), r.value, nil); err != nil {
			return fmt.Errorf("pebble: flush lazy writes: %w", err)
		}
	}
	if err := b.Commit(pdb.NoSync); err != nil {
		return fmt.Errorf("pebble: flush lazy writes: %w", err)
	}

	p.mu.Lock() // a value replaced meanwhile stays for the next flush
	for _, r := range taken {
		if v, ok := p.rows[r.key]; ok && bytes.Equal(v, r.value) {
			delete(p.rows, r.key)
		}
	}
	p.mu.Unlock()
	return nil
}

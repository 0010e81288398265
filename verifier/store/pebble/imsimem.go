package pebble

// The IMSI index in memory.
//
// A RADIUS accounting record names its card by IMSI only, so finding the
// card takes two Pebble Gets, the index entry and then the card. With
// tens of millions of cards each Get costs 8-12 µs of CPU even with every
// block in Pebble's cache (block cache lookups for the index and data
// blocks, key comparisons). With Options.IMSIInMemory the store also
// keeps the packed IMSI index in memory, in fixed 16-byte slots (outside
// the Go heap on unix systems, slots_unix.go; about 27 bytes a card, 0.8
// GiB for 30 million), so FindCard by IMSI costs one Get.
//
// Pebble stays the only record. The mirror is filled by a scan of the
// index when the store opens, in the background (until it is done, an
// IMSI not yet in it is looked up in Pebble), and every write that sets
// or removes an IMSI entry applies the same change to it after its batch
// is committed, while it still holds the entry's value stripe. A scanned
// entry only fills a slot no write has touched, so the scan, which reads
// a snapshot, never undoes a newer write. A removed IMSI keeps its slot
// (marked absent) until the next start.

import (
	"context"
	"errors"
	"log/slog"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	pdb "github.com/cockroachdb/pebble/v2"

	"github.com/cardbind/cardbind/protocol"
)

// Slot values besides an encoded ICCID (which has the top bit set).
const (
	// mirrorAbsent: the IMSI has no entry (it was removed).
	mirrorAbsent uint64 = 0
	// mirrorInStore: the IMSI has an entry whose ICCID does not fit a
	// slot; look it up in Pebble.
	mirrorInStore uint64 = 1
)

// mirrorShards spreads the slots and their locks; a power of two.
const mirrorShards = 256

// imsiMirror is the in-memory copy of the packed IMSI index.
type imsiMirror struct {
	shards [mirrorShards]mirrorShard
	// loaded is set once the scan has put every entry of the index in
	// the mirror: from then on an IMSI missing from it has no entry.
	loaded atomic.Bool
	// stopped is set by stop: from then on the mirror answers nothing
	// and takes no writes (a write may still commit while the store
	// closes).
	stopped atomic.Bool
	cancel  context.CancelFunc
	done    chan struct{} // closed when the scan ends
	scanned func(n int)
}

// mirrorShard is an open-addressing table with linear probing: pairs of
// key and value in slots, key 0 for an empty slot. Slots are never
// emptied (a removed IMSI keeps its slot with mirrorAbsent), so probing
// needs no deletion markers.
type mirrorShard struct {
	mu    sync.RWMutex
	slots []uint64 // 2 words a slot: key, value
	used  int
	_     [72]byte // 128 bytes a shard: two shards' locks never share a cache line
}

// mirrorOp is one change a committed write makes to the mirror.
type mirrorOp struct{ imsi, iccid uint64 }

// newIMSIMirror starts filling a mirror of db's IMSI index in the
// background. scanned, when not nil, is called after each entry the scan
// puts in the mirror (tests pause the scan with it).
func newIMSIMirror(db *pdb.DB, log *slog.Logger, scanned func(n int)) *imsiMirror {
	ctx, cancel := context.WithCancel(context.Background())
	m := &imsiMirror{cancel: cancel, done: make(chan struct{}), scanned: scanned}
	go m.load(ctx, db, log)
	return m
}

// load scans the packed IMSI index into the mirror.
func (m *imsiMirror) load(ctx context.Context, db *pdb.DB, log *slog.Logger) {
	defer close(m.done)
	start := time.Now()
	n, err := m.scan(ctx, db)
	switch {
	case ctx.Err() != nil:
	case err != nil:
		// The mirror stays partial: lookups it cannot answer go to Pebble.
		log.Error("pebble: IMSI index in memory: load failed; IMSIs it lacks are looked up on disk", "err", err)
	default:
		m.loaded.Store(true)
		slots, bytes := m.size()
		log.Info("pebble: IMSI index in memory loaded", "imsis", n, "slots", slots,
			"bytes", bytes, "took", time.Since(start).Round(time.Millisecond))
	}
}

func (m *imsiMirror) scan(ctx context.Context, db *pdb.DB) (n int, err error) {
	lower := []byte{'I', packedIMSI}
	it, err := db.NewIterWithContext(ctx, &pdb.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	for ok := it.First(); ok; ok = it.Next() {
		if n%4096 == 0 && ctx.Err() != nil {
			return n, ctx.Err()
		}
		k, ok := imsiCodeOfBCD(it.Key()[len(lower):])
		if !ok {
			continue // never looked up in the mirror
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return n, err
		}
		m.fill(k, iccidCodeOfPacked(v))
		if n++; m.scanned != nil {
			m.scanned(n)
		}
	}
	return n, it.Error()
}

// stop ends the scan, waits for it and releases the slots. Lookups after
// it find nothing and go to Pebble.
func (m *imsiMirror) stop() {
	m.cancel()
	<-m.done
	m.stopped.Store(true)
	m.loaded.Store(false)
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		freeSlots(sh.slots)
		sh.slots, sh.used = nil, 0
		sh.mu.Unlock()
	}
}

// waitLoaded waits until the scan has ended, for tests.
func (m *imsiMirror) waitLoaded() { <-m.done }

// lookup returns the ICCID the IMSI's entry points at. ok false: the
// mirror cannot say, look in Pebble. found false with ok: no entry.
func (m *imsiMirror) lookup(imsi string) (iccid protocol.ICCID, found, ok bool) {
	k, ok := imsiCode(imsi)
	if !ok {
		return "", false, false
	}
	// Read loaded first: if the scan ends between a miss and the read,
	// the miss may predate an entry the scan put in after it.
	loaded := m.loaded.Load()
	v, present := m.get(k)
	switch {
	case m.stopped.Load():
		return "", false, false
	case !present:
		return "", false, loaded
	case v == mirrorAbsent:
		return "", false, true
	case v == mirrorInStore:
		return "", false, false
	}
	return decodeICCIDCode(v), true, true
}

// apply makes the changes of a committed write.
func (m *imsiMirror) apply(ops []mirrorOp) {
	for _, op := range ops {
		m.put(op.imsi, op.iccid, true)
	}
}

// fill puts a scanned entry unless a write got there first.
func (m *imsiMirror) fill(imsi, iccid uint64) { m.put(imsi, iccid, false) }

// size returns the slots and bytes the mirror holds.
func (m *imsiMirror) size() (slots int, bytes int64) {
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.RLock()
		slots += sh.used
		bytes += int64(len(sh.slots)) * 8
		sh.mu.RUnlock()
	}
	return slots, bytes
}

// mix scatters a key code over the shards and slots.
func mix(k uint64) uint64 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	return k ^ k>>33
}

func (m *imsiMirror) get(k uint64) (v uint64, present bool) {
	h := mix(k)
	sh := &m.shards[h&(mirrorShards-1)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	n := uint64(len(sh.slots) / 2)
	if n == 0 {
		return 0, false
	}
	i, _ := bits.Mul64(h, n)
	for {
		switch sh.slots[2*i] {
		case k:
			return sh.slots[2*i+1], true
		case 0:
			return 0, false
		}
		if i++; i == n {
			i = 0
		}
	}
}

// put sets k's value, or with overwrite false only fills an empty slot.
func (m *imsiMirror) put(k, v uint64, overwrite bool) {
	h := mix(k)
	sh := &m.shards[h&(mirrorShards-1)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if m.stopped.Load() {
		return
	}
	if n := len(sh.slots) / 2; 5*(sh.used+1) > 4*n { // at most 80 % full
		sh.grow(max(1024, n*3/2))
	}
	n := uint64(len(sh.slots) / 2)
	i, _ := bits.Mul64(h, n)
	for {
		switch sh.slots[2*i] {
		case k:
			if overwrite {
				sh.slots[2*i+1] = v
			}
			return
		case 0:
			sh.slots[2*i], sh.slots[2*i+1] = k, v
			sh.used++
			return
		}
		if i++; i == n {
			i = 0
		}
	}
}

// grow moves the shard's slots into a table of n slots.
func (sh *mirrorShard) grow(n int) {
	old := sh.slots
	sh.slots = allocSlots(2 * n)
	for j := 0; j < len(old); j += 2 {
		k := old[j]
		if k == 0 {
			continue
		}
		i, _ := bits.Mul64(mix(k), uint64(n))
		for sh.slots[2*i] != 0 {
			if i++; i == uint64(n) {
				i = 0
			}
		}
		sh.slots[2*i], sh.slots[2*i+1] = k, old[j+1]
	}
	freeSlots(old)
}

// Codes. An IMSI of up to 15 digits is its number with its length above
// it (leading zeros count) and the top bit set, so no code is 0. An
// ICCID of 18 to 20 digits that starts with 89, as E.118 has every
// telecom ICCID start, is the number after the 89 (16 to 18 digits, under
// 2^60) with its length less 16 in bits 60-61 and the top bit set. Other
// ICCIDs are mirrorInStore.

const maxIMSICodeDigits = 15

// imsiCode returns the code of an IMSI, or ok false for one the mirror
// does not hold (not digits, or too long).
func imsiCode(imsi string) (uint64, bool) {
	if len(imsi) == 0 || len(imsi) > maxIMSICodeDigits {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(imsi); i++ {
		c := imsi[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return 1<<63 | uint64(len(imsi))<<55 | v, true
}

// imsiCodeOfBCD is imsiCode of the digits of a packed index key.
func imsiCodeOfBCD(bcd []byte) (uint64, bool) {
	var buf [2 * maxPackedDigits]byte
	n := 0
	for _, b := range bcd {
		hi, lo := b>>4, b&0xF
		if hi > 9 || n+2 > len(buf) {
			return 0, false
		}
		buf[n] = '0' + hi
		n++
		if lo == 0xF {
			break
		}
		if lo > 9 {
			return 0, false
		}
		buf[n] = '0' + lo
		n++
	}
	return imsiCode(string(buf[:n]))
}

// iccidCode returns the slot value for an entry pointing at iccid.
func iccidCode(iccid protocol.ICCID) uint64 {
	if len(iccid) < 18 || len(iccid) > 20 || iccid[0] != '8' || iccid[1] != '9' {
		return mirrorInStore
	}
	var v uint64
	for i := 2; i < len(iccid); i++ {
		c := iccid[i]
		if c < '0' || c > '9' {
			return mirrorInStore
		}
		v = v*10 + uint64(c-'0')
	}
	return 1<<63 | uint64(len(iccid)-18)<<60 | v
}

// iccidCodeOfPacked is iccidCode of a packed index value.
func iccidCodeOfPacked(v []byte) uint64 {
	iccid, err := decodePackedIndexValue(v)
	if err != nil {
		return mirrorInStore // FindCard in Pebble reports the damage
	}
	return iccidCode(iccid)
}

// decodeICCIDCode returns the ICCID of an encoded slot value.
func decodeICCIDCode(v uint64) protocol.ICCID {
	n := 18 + int(v>>60&3)
	var buf [20]byte
	buf[0], buf[1] = '8', '9'
	num := v & (1<<60 - 1)
	for i := n - 1; i >= 2; i-- {
		buf[i] = '0' + byte(num%10)
		num /= 10
	}
	return protocol.ICCID(buf[:n])
}

// mirrorOpOf returns the mirror change for an IMSI index entry set to
// iccid (or removed, iccid ""), and ok false for an entry the mirror
// does not hold.
func mirrorOpOf(imsi string, iccid protocol.ICCID) (mirrorOp, bool) {
	k, ok := imsiCode(imsi)
	if !ok {
		return mirrorOp{}, false
	}
	if iccid == "" {
		return mirrorOp{imsi: k, iccid: mirrorAbsent}, true
	}
	return mirrorOp{imsi: k, iccid: iccidCode(iccid)}, true
}

// IMSIIndexInMemory tells whether the IMSI index in memory
// (Options.IMSIInMemory) has been loaded, and the slots and bytes it
// holds (a slot per IMSI it has seen, removed ones included); all zero
// when the option is off.
func (s *Store) IMSIIndexInMemory() (loaded bool, slots int, bytes int64) {
	if s.imsi == nil {
		return false, 0, 0
	}
	slots, bytes = s.imsi.size()
	return s.imsi.loaded.Load(), slots, bytes
}

// WaitIMSIIndex waits until the IMSI index in memory has finished
// loading, or ctx ends. It reports whether the index is loaded: false
// without an index in memory, after a failed load (IMSIs it lacks are
// looked up on disk) or when ctx ended first.
func (s *Store) WaitIMSIIndex(ctx context.Context) bool {
	if s.imsi == nil {
		return false
	}
	select {
	case <-s.imsi.done:
	case <-ctx.Done():
		return false
	}
	return s.imsi.loaded.Load()
}

// Package pebble implements verifier.Store on Pebble, an embedded
// key-value store (LSM tree) that keeps tens of millions of cards on one
// machine's disk with fast point reads.
//
// # Key layout
//
// One byte of prefix, then the parts; "0" is a 0x00 separator byte and
// "BE" a big-endian uint64, so keys sort the way the scans need them:
//
//	c <iccid>                          card (inventory, binding, status)
//	I <kind byte> <BCD digits>         IMSI or MSISDN index -> packed ICCID (see index.go)
//	i <kind> 0 <value>                 other index -> ICCID (kind ipv4, ipv6, nai; imsi, msisdn that do not pack)
//	h <iccid> 0 <seq BE>               history entry
//	g <grace until, unix ns BE> <iccid> card in grace, by deadline (empty value)
//	o <kind> 0 <created, unix ns BE> <id>  outbox entry, oldest first per kind
//	O <id>                             outbox id -> its o key
//	d <device id>                      enrolled device
//	r <ns> 0 <key>                     record
//
// # Values
//
// Every value starts with a format byte. Cards, the one record there are
// tens of millions of, use a compact binary encoding (a field presence
// mask, then only the fields present: 124 bytes for a typical bound card
// against 397 as JSON, and about 40 bytes on disk after Pebble's block
// compression); see codec.go. Field names are never stored, and a new
// field is a new mask bit, so old values stay readable. History entries and devices
// are JSON. Outbox entries are JSON after an 8-byte NotBefore, so
// PendingOutbox passes over backed-off entries without decoding them.
// Index values are the ICCID, packed to nibbles in the IMSI and MSISDN
// indexes, bare in the others (index.go).
//
// # Writes and concurrency
//
// Commit, CommitAll and UpsertInventory each write one Pebble batch,
// committed with Sync; concurrent batches share fsyncs through Pebble's group commit.
// CommitLazy writes the same batch without Sync; it reaches the disk with
// the next synced write of any caller (Sync writes an empty one), since
// the write-ahead log is synced in order and the previous log is synced
// before Pebble switches to a new one.
// The read-check-write of a version is made atomic by striped locks:
// first the row stripes of everything the write names (cards, device,
// outbox ids), all at once in stripe order; then, once the old cards are
// read, the stripes of every index value the write removes or sets. No
// one waits for a row stripe while holding a value stripe, so the two
// phases cannot deadlock. Writes to different cards run in parallel.
//
// After a successful Commit the caller's Card.Version and Device.Version
// are the stored versions (the version read plus one); after a failed one
// they are unchanged.
//
// An index value (an IP address a new session hands to another card, an
// IMSI re-assigned in the inventory) that a write gives to a card moves to
// it; the previous holder keeps the value in its record until its own
// next write changes it, and FindCard only answers with a card that still
// holds the value.
package pebble

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	pdb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/config"
)

// Options tunes the store. The zero value is a good default for a small
// (2-core) machine.
type Options struct {
	// CacheSize is Pebble's block cache in bytes (default 64 MiB). Data
	// beyond it is read through the operating system's page cache.
	CacheSize int64
	// Compression is "balanced" (default: fast MinLZ/Snappy in the upper
	// levels, zstd level 1 in the last level, where most data lives),
	// "fastest" (MinLZ/Snappy everywhere), "good" (zstd in the two lowest
	// levels) or "none".
	Compression string
	// Logger receives Pebble's own log lines (nil: discarded, except
	// errors, which go to slog.Default()) and the store's own: the
	// migration of index entries written by earlier versions and the
	// IMSI index in memory (nil: slog.Default()).
	Logger *slog.Logger
	// WALMinSyncInterval is the least time between two syncs of the
	// write-ahead log (default DefaultWALMinSyncInterval; negative: none).
	// Synced commits that arrive meanwhile wait and share the next sync,
	// so concurrent writers pay for fewer fdatasync calls; a commit still
	// returns only once it is synced.
	WALMinSyncInterval time.Duration
	// FS is the file system the store lives on (nil: the operating
	// system's). Tests use Pebble's in-memory one to simulate a crash
	// that loses what was not synced.
	FS vfs.FS
	// IMSIInMemory also keeps the IMSI index in memory, outside the Go
	// heap on unix systems (about 27 bytes a card), filled in the background after
	// Open, so that FindCard by IMSI costs one Pebble Get instead of
	// two (imsimem.go).
	IMSIInMemory bool
	// RowCache is how many values of cards and devices the store keeps
	// in memory, of those recently read or written (0 or less:
	// DefaultRowCache): enough for the few reads each report makes of
	// its own.
	RowCache int
}

// DefaultWALMinSyncInterval is the default Options.WALMinSyncInterval.
const DefaultWALMinSyncInterval = 500 * time.Microsecond

// Store is the Pebble implementation of verifier.Store.
type Store struct {
	db     *pdb.DB
	cache  *pdb.Cache
	seed   maphash.Seed
	rows   stripes     // cards, devices, outbox ids, records
	values stripes     // index values
	imsi   *imsiMirror // nil unless Options.IMSIInMemory
	// rowCache holds values of cards and devices recently read or
	// written (rowcache.go).
	rowCache *rowCache
	// pending holds rows of quiet lazy commits until they go to Pebble
	// (pending.go).
	pending *pendingRows

	// Test hooks, nil outside tests: between row's lookups in the cache
	// and in the pending rows, and in commitQuiet once its rows are in
	// pending, before the cache has their values.
	hookRowLookups func(key []byte)
	hookQuietPut   func()

	closeOnce sync.Once
	closeErr  error
}

var _ verifier.Store = (*Store)(nil)

// Open opens the store in dir, creating it if needed.
func Open(dir string, opts Options) (*Store, error) {
	if opts.CacheSize <= 0 {
		opts.CacheSize = 64 << 20
	}
	cache := pdb.NewCache(opts.CacheSize)
	po, err := PebbleOptions(opts, cache)
	if err != nil {
		cache.Unref()
		return nil, err
	}
	db, err := pdb.Open(dir, po)
	if err != nil {
		cache.Unref()
		return nil, fmt.Errorf("pebble: open %s: %w", dir, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := migrateIndexes(db, log); err != nil {
		err = errors.Join(err, db.Close())
		cache.Unref()
		return nil, fmt.Errorf("pebble: open %s: %w", dir, err)
	}
	rows := opts.RowCache
	if rows <= 0 {
		rows = DefaultRowCache
	}
	s := &Store{db: db, cache: cache, seed: maphash.MakeSeed(), rowCache: newRowCache(rows), pending: newPendingRows()}
	if opts.IMSIInMemory {
		s.imsi = newIMSIMirror(db, log, nil)
	}
	return s, nil
}

// OpenConfigured opens the store in dir as the verifier's configuration
// says (the store.* keys), logging to log; it is the verifier's
// app.OpenStore.
func OpenConfigured(dir string, c config.StoreConf, log *slog.Logger) (verifier.Store, error) {
	return Open(dir, Options{CacheSize: int64(c.CacheMB) << 20, IMSIInMemory: c.IMSIInMemory, Logger: log})
}

// PebbleOptions returns the Pebble options Open uses, with cache as the
// block cache. It is exported so benchmarks and tools can run raw Pebble
// with the same tuning.
func PebbleOptions(opts Options, cache *pdb.Cache) (*pdb.Options, error) {
	po := &pdb.Options{
		Cache:              cache,
		FormatMajorVersion: pdb.FormatNewest,
		// Larger memtables absorb bulk imports with fewer, larger L0
		// files; two of them bound the memory at 128 MiB.
		MemTableSize:                64 << 20,
		MemTableStopWritesThreshold: 2,
		// Two cores: one compaction normally, a second one when behind.
		CompactionConcurrencyRange: func() (int, int) { return 1, 2 },
		Logger:                     pebbleLogger{opts.Logger},
		FS:                         opts.FS,
	}
	switch wi := opts.WALMinSyncInterval; {
	case wi == 0:
		po.WALMinSyncInterval = func() time.Duration { return DefaultWALMinSyncInterval }
	case wi > 0:
		po.WALMinSyncInterval = func() time.Duration { return wi }
	}
	for i := range po.Levels {
		// Point reads (Card, FindCard) skip tables without the key.
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	// Except in the last level: it holds nearly every key, so a lookup
	// that gets there almost always finds its key, and the filter would
	// cost a block cache lookup and a probe for nothing (measured: no
	// harm, a gain within the machine's drift; docs/benchmarks.md).
	// NoFilterPolicy, not nil: nil inherits the level above's.
	po.Levels[len(po.Levels)-1].FilterPolicy = pdb.NoFilterPolicy
	var cs pdb.DBCompressionSettings
	switch opts.Compression {
	case "", "balanced":
		cs = pdb.DBCompressionBalanced
	case "fastest":
		cs = pdb.DBCompressionFastest
	case "good":
		cs = pdb.DBCompressionGood
	case "none":
		cs = pdb.DBCompressionNone
	default:
		return nil, fmt.Errorf("pebble: unknown compression %q (balanced, fastest, good, none)", opts.Compression)
	}
	po.ApplyCompressionSettings(func() pdb.DBCompressionSettings { return cs })
	return po, nil
}

// pebbleLogger sends Pebble's log lines to slog.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	if l.log != nil {
		l.log.Info("pebble: " + fmt.Sprintf(format, args...))
	}
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	log := l.log
	if log == nil {
		log = slog.Default()
	}
	log.Error("pebble: " + fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	// Pebble calls Fatalf on unrecoverable corruption; it must not return.
	l.Errorf(format, args...)
	panic(fmt.Sprintf("pebble: "+format, args...))
}

// Metrics returns Pebble's metrics (levels, read amplification,
// compaction debt, cache hits), for monitoring and benchmarks.
func (s *Store) Metrics() *pdb.Metrics { return s.db.Metrics() }

// Close writes the rows of lazy commits still pending, flushes the
// memtable to tables (so the next Open has no log to replay) and closes
// the store. Closing twice is not an error.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.imsi != nil {
			s.imsi.stop()
		}
		err := s.flushPending()
		s.rowCache.clear()
		err = errors.Join(err, s.db.Flush())
		err = errors.Join(err, s.db.Close())
		s.cache.Unref()
		if err != nil {
			s.closeErr = fmt.Errorf("pebble: close: %w", err)
		}
	})
	return s.closeErr
}

// Keys.

func cardKey(iccid protocol.ICCID) []byte { return append([]byte{'c'}, iccid...) }

func historyPrefix(iccid protocol.ICCID) []byte {
	return append(append([]byte{'h'}, iccid...), 0)
}

func historyKey(iccid protocol.ICCID, seq uint64) []byte {
	return be64(historyPrefix(iccid), seq)
}

func graceKey(until uint64, iccid protocol.ICCID) []byte {
	return append(be64([]byte{'g'}, until), iccid...)
}

func outboxPrefix(kind verifier.OutboxKind) []byte {
	return append(append([]byte{'o'}, kind...), 0)
}

func outboxKey(e *verifier.OutboxEntry) []byte {
	return append(be64(outboxPrefix(e.Kind), nanos(e.Created)), e.ID...)
}

func outboxIDKey(id string) []byte { return append([]byte{'O'}, id...) }

func deviceKey(id string) []byte { return append([]byte{'d'}, id...) }

func recordPrefix(ns string) []byte { return append(append([]byte{'r'}, ns...), 0) }

func recordKey(ns, key string) []byte { return append(recordPrefix(ns), key...) }

func be64(b []byte, v uint64) []byte {
	return append(b, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := slices.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// Locks.

// stripes is a fixed set of mutexes a key hashes onto.
type stripes [1024]sync.Mutex

// lock locks the stripes of keys in stripe order and returns the unlock.
func (s *Store) lock(st *stripes, keys [][]byte) func() {
	idx := make([]int, 0, len(keys))
	for _, k := range keys {
		idx = append(idx, int(maphash.Bytes(s.seed, k)%uint64(len(st))))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		st[i].Lock()
	}
	return func() {
		for j := len(idx) - 1; j >= 0; j-- {
			st[idx[j]].Unlock()
		}
	}
}

// Reads.

// getter is a *pdb.DB or an indexed *pdb.Batch (which reads through
// its own writes).
type getter interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

// getCopy returns a copy of the value under key, or nil and
// verifier.ErrNotFound.
func getCopy(g getter, key []byte) ([]byte, error) {
	v, closer, err := g.Get(key)
	if errors.Is(err, pdb.ErrNotFound) {
		return nil, verifier.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("pebble: get: %w", err)
	}
	v = bytes.Clone(v)
	_ = closer.Close()
	return v, nil
}

// row returns the stored value of a card ('c') or device ('d'): from the
// row cache when cached and it has it (hit), with its record if one was
// kept (rowCache.keep), else the pending one if a lazy commit left one,
// else from Pebble. Neither value nor record may be modified.
func (s *Store) row(prefix byte, id string, cached bool) (v []byte, rec any, hit bool, err error) {
	// The key is built on the stack for the cache, and copied for
	// Pebble only when the cache misses.
	var buf [48]byte
	var gen uint64
	stackKey := append(append(buf[:0], prefix), id...)
	// The cache before the pending rows: the generation it gives, taken
	// before pending is looked at, keeps fill from caching a value that
	// a lazy commit replaced meanwhile (it marks its rows in the cache
	// before it puts them in pending).
	if cached {
		e, g, ok := s.rowCache.get(stackKey)
		if ok {
			return e.v, e.rec, true, nil
		}
		gen = g
	}
	if s.hookRowLookups != nil {
		s.hookRowLookups(stackKey)
	}
	if v, ok := s.pending.get(stackKey); ok {
		return v, nil, false, nil
	}
	key := append([]byte{prefix}, id...)
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pdb.ErrNotFound) {
		return nil, nil, false, verifier.ErrNotFound
	}
	if err != nil {
		return nil, nil, false, err
	}
	v = bytes.Clone(v)
	_ = closer.Close()
	if cached {
		s.rowCache.fill(key, v, gen)
	}
	return v, nil, false, nil
}

// keepRecord hands the row cache the record decoded from v, the value
// row returned for the key, to keep with it while it is cached.
func (s *Store) keepRecord(prefix byte, id string, v []byte, rec any) {
	var buf [48]byte
	s.rowCache.keep(append(append(buf[:0], prefix), id...), v, rec)
}

// card returns the stored card, read through the row cache when cached.
// When shared, it is the cache's record, which the caller must not
// modify (readCard hands out a copy). A value found in the cache keeps
// the record decoded from it; one read from Pebble does not, so that
// reads of cards read once (at random among millions) pay for no copy.
func (s *Store) card(iccid protocol.ICCID, cached bool) (c *verifier.Card, shared bool, err error) {
	v, rec, hit, err := s.row('c', string(iccid), cached)
	if err != nil {
		if !errors.Is(err, verifier.ErrNotFound) {
			err = fmt.Errorf("pebble: get card %s: %w", iccid, err)
		}
		return nil, false, err
	}
	if c, ok := rec.(*verifier.Card); ok {
		return c, true, nil
	}
	if c, err = decodeCard(iccid, v); err != nil {
		return nil, false, fmt.Errorf("pebble: %w", err)
	}
	if hit {
		s.keepRecord('c', string(iccid), v, c)
	}
	return c, hit, nil
}

// readCard reads a card through the row cache.
func (s *Store) readCard(iccid protocol.ICCID) (*verifier.Card, error) {
	c, shared, err := s.card(iccid, true)
	if shared {
		c = c.Clone()
	}
	return c, err
}

// readCardUncached reads a card from Pebble, neither looking in the row
// cache nor filling it (which holds nothing newer than Pebble): for
// reads of many cards once each (an import, FindCard's lookups of a
// RADIUS stream), which would only push the rows reports use out of
// the cache and pay for filling it.
func (s *Store) readCardUncached(iccid protocol.ICCID) (*verifier.Card, error) {
	c, _, err := s.card(iccid, false) // never shared
	return c, err
}

// Card returns the card with this ICCID.
func (s *Store) Card(ctx context.Context, iccid protocol.ICCID) (*verifier.Card, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.readCard(iccid)
}

// Cards returns the cards with these ICCIDs, in the same order, nil for
// one that does not exist. It reads them with one iterator in key order,
// much cheaper per card than as many Gets while a bulk write keeps the
// LSM tree busy.
func (s *Store) Cards(ctx context.Context, iccids []protocol.ICCID) ([]*verifier.Card, error) {
	if err := s.flushPending(); err != nil { // the iterator reads Pebble alone
		return nil, err
	}
	return readCards(ctx, s.db, iccids)
}

// readCards is Cards on a reader: the database or an indexed batch.
func readCards(ctx context.Context, r pdb.Reader, iccids []protocol.ICCID) ([]*verifier.Card, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]*verifier.Card, len(iccids))
	if len(iccids) == 0 {
		return out, nil
	}
	order := make([]int, len(iccids))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(string(iccids[a]), string(iccids[b])) })
	it, err := r.NewIterWithContext(ctx, &pdb.IterOptions{LowerBound: []byte{'c'}, UpperBound: []byte{'c' + 1}})
	if err != nil {
		return nil, fmt.Errorf("pebble: cards: %w", err)
	}
	for _, i := range order {
		k := cardKey(iccids[i])
		if !it.SeekGE(k) || !bytes.Equal(it.Key(), k) {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("pebble: card %s: %w", iccids[i], err)
		}
		if out[i], err = decodeCard(iccids[i], v); err != nil {
			_ = it.Close()
			return nil, fmt.Errorf("pebble: %w", err)
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("pebble: cards: %w", err)
	}
	return out, nil
}

// FindCard returns the card an index points at. IPv4 addresses and IPv6
// prefixes are compared in canonical form (netip's String; a prefix
// masked), so "2001:DB8::1/32" finds the card holding 2001:db8::/32.
func (s *Store) FindCard(ctx context.Context, by verifier.IndexKind, value string) (*verifier.Card, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	value, err := canonical(by, value)
	if err != nil {
		return nil, err
	}
	if value == "" {
		return nil, verifier.ErrNotFound
	}
	if by == verifier.ByIMSI && s.imsi != nil {
		if iccid, found, ok := s.imsi.lookup(value); ok {
			if !found {
				return nil, verifier.ErrNotFound
			}
			c, err := s.readCardUncached(iccid)
			if err == nil && indexValue(c, by) == value {
				return c, nil
			}
			if err != nil && !errors.Is(err, verifier.ErrNotFound) {
				return nil, err
			}
			// The entry moved between the two reads: ask Pebble.
		}
	}
	return s.findCardOnDisk(by, value)
}

// findCardOnDisk is FindCard through Pebble's index entry, for a
// canonical value.
func (s *Store) findCardOnDisk(by verifier.IndexKind, value string) (*verifier.Card, error) {
	key := indexKey(by, value)
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pdb.ErrNotFound) {
		return nil, verifier.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("pebble: get index %s: %w", by, err)
	}
	iccid, err := indexTarget(key, v)
	_ = closer.Close()
	if err != nil {
		return nil, fmt.Errorf("pebble: %s %s: %w", by, value, err)
	}
	c, err := s.readCardUncached(iccid)
	if err != nil {
		return nil, err
	}
	if indexValue(c, by) != value {
		// Cannot happen while writes keep the index; a safety net.
		return nil, verifier.ErrNotFound
	}
	return c, nil
}

// indexKinds lists every index a card has.
var indexKinds = [...]verifier.IndexKind{verifier.ByIMSI, verifier.ByMSISDN, verifier.ByIPv4, verifier.ByIPv6, verifier.ByNAI}

// canonical returns the form an index stores value in.
func canonical(by verifier.IndexKind, value string) (string, error) {
	switch by {
	case verifier.ByIMSI, verifier.ByMSISDN, verifier.ByNAI:
		return value, nil
	case verifier.ByIPv4:
		if a, err := netip.ParseAddr(value); err == nil {
			return a.String(), nil
		}
		return value, nil
	case verifier.ByIPv6:
		if p, err := netip.ParsePrefix(value); err == nil {
			return p.Masked().String(), nil
		}
		return value, nil
	}
	return "", fmt.Errorf("pebble: unknown index %q", by)
}

// indexValue is the canonical value of one index a card has, or "".
func indexValue(c *verifier.Card, by verifier.IndexKind) string {
	if c == nil {
		return ""
	}
	switch by {
	case verifier.ByIMSI:
		return string(c.IMSI)
	case verifier.ByMSISDN:
		return string(c.MSISDN)
	case verifier.ByIPv4:
		if c.IPv4.IsValid() {
			return c.IPv4.String()
		}
	case verifier.ByIPv6:
		if c.IPv6.IsValid() {
			return c.IPv6.Masked().String()
		}
	case verifier.ByNAI:
		return c.NAI
	}
	return ""
}

// graceUntil returns the card's grace deadline key part, or 0 when the
// card is not in grace (or in grace without a deadline).
func graceUntil(c *verifier.Card) uint64 {
	if c == nil || c.Status.State != protocol.CardGrace {
		return 0
	}
	return nanos(c.Status.GraceUntil)
}

// Device returns an enrolled device.
func (s *Store) Device(ctx context.Context, id string) (*verifier.Device, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.readDevice(id)
}

func (s *Store) readDevice(id string) (*verifier.Device, error) {
	d, shared, err := s.device(id)
	if shared {
		d = d.Clone()
	}
	return d, err
}

// device returns the stored device, read through the row cache; when
// shared, it is the cache's record, which the caller must not modify
// (readDevice hands out a copy). See card.
func (s *Store) device(id string) (d *verifier.Device, shared bool, err error) {
	v, rec, hit, err := s.row('d', id, true)
	if err != nil {
		if !errors.Is(err, verifier.ErrNotFound) {
			err = fmt.Errorf("pebble: get device %s: %w", id, err)
		}
		return nil, false, err
	}
	if d, ok := rec.(*verifier.Device); ok {
		return d, true, nil
	}
	if d, err = decodeDevice(id, v); err != nil {
		return nil, false, fmt.Errorf("pebble: %w", err)
	}
	if hit {
		s.keepRecord('d', id, v, d)
	}
	return d, hit, nil
}

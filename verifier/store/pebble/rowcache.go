package pebble

// The row cache: the stored values of cards and devices recently read
// or written, so that the five reads one report makes of its device and
// its card (to check the signature, to decide, then the version checks
// of the write) cost one Pebble Get of each, not five, unless a write to
// another row of the same shard or an eviction comes in between. Each
// value also keeps its record once decoded, so that those reads decode
// it once, or not at all when the write that stored it left its record.

import (
	"hash/maphash"
	"sync"
)

// DefaultRowCache is the number of card and device values the row cache
// holds when Options.RowCache is 0 or less: about 250-310 bytes each
// with the maps' overhead, and some 360 more once its record is kept
// (about 40 MiB in all).
const DefaultRowCache = 1 << 16

// rowCacheShards is how many independently locked parts the cache has.
const rowCacheShards = 64

// rowCache holds stored values of cards and devices by key, exactly as
// Pebble holds them. A write of cards and devices, holding their rows'
// stripes, marks them as being written before its batch commits (begin)
// and puts their new values once it has (written); in between, reads of
// those rows miss and go to Pebble. So a batch stays atomic to readers:
// one who read the batch's outbox entry, or its device, from Pebble never
// gets the card's value from before the batch out of the cache. A
// reader that missed fills the cache with what it read from Pebble only
// if no write came to its shard in between (the shard's generation), so
// a value read before a write never hides the write.
//
// Values and records are never modified once in the cache: callers
// never keep or change the bytes, and copy a record (Clone) before they
// hand it out of the store.
type rowCache struct {
	seed   maphash.Seed
	max    int // entries per shard
	shards [rowCacheShards]rowShard
}

type rowShard struct {
	mu      sync.Mutex
	gen     uint64 // counts the writes that reached the shard
	m       map[string]rowEntry
	writing map[string]int // rows between begin and written or forget
}

// rowEntry is a cached value and, once a read decoded it (keep) or the
// write that stored it gave it, its record: a *verifier.Card or a
// *verifier.Device, shared by every reader.
type rowEntry struct {
	v   []byte
	rec any
}

// newRowCache returns a cache of about n entries (n > 0), at least one
// per shard.
func newRowCache(n int) *rowCache {
	c := &rowCache{seed: maphash.MakeSeed(), max: max(1, n/rowCacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[string]rowEntry)
		c.shards[i].writing = make(map[string]int)
	}
	return c
}

func (c *rowCache) shard(key []byte) *rowShard {
	return &c.shards[maphash.Bytes(c.seed, key)%rowCacheShards]
}

func (c *rowCache) shardOf(key string) *rowShard {
	return &c.shards[maphash.String(c.seed, key)%rowCacheShards]
}

// get returns the cached value under key, or ok false and the shard's
// generation, to hand to fill with what Pebble holds.
func (c *rowCache) get(key []byte) (e rowEntry, gen uint64, ok bool) {
	sh := c.shard(key)
	sh.mu.Lock()
	e, ok = sh.m[string(key)]
	gen = sh.gen
	sh.mu.Unlock()
	return e, gen, ok // a row being written is not in m
}

// keep attaches rec, decoded from v, to the entry under key if that
// entry still holds v itself (the same bytes, not an equal copy: a
// value replaced since, even by an equal one, has its own record).
func (c *rowCache) keep(key, v []byte, rec any) {
	sh := c.shard(key)
	sh.mu.Lock()
	if e, ok := sh.m[string(key)]; ok && e.rec == nil && len(e.v) == len(v) && len(v) > 0 && &e.v[0] == &v[0] {
		e.rec = rec
		sh.m[string(key)] = e
	}
	sh.mu.Unlock()
}

// fill caches v, read from Pebble after a get that returned gen, unless
// a write reached the shard since or the row is being written.
func (c *rowCache) fill(key, v []byte, gen uint64) {
	sh := c.shard(key)
	sh.mu.Lock()
	if sh.gen == gen && sh.writing[string(key)] == 0 {
		sh.put(string(key), rowEntry{v: v}, c.max)
	}
	sh.mu.Unlock()
}

// begin marks the rows a batch is about to commit: until written or
// forget, get misses them and fill leaves them alone. The caller holds
// the rows' stripes.
func (c *rowCache) begin(rows []rowValue) {
	for _, r := range rows {
		sh := c.shardOf(r.key)
		sh.mu.Lock()
		sh.gen++
		sh.writing[r.key]++
		delete(sh.m, r.key)
		sh.mu.Unlock()
	}
}

// written ends begin's mark for a batch that has committed and puts the
// values it stored, unless it wrote more than maxPutRows rows (an
// import): those are dropped instead, so that a bulk write does not push
// the rows live reports use out of the cache.
func (c *rowCache) written(rows []rowValue) { c.end(rows, len(rows) <= maxPutRows) }

// maxPutRows is the most rows of one batch written puts in the cache.
const maxPutRows = 64

// forget ends begin's mark for a batch whose commit failed, leaving the
// rows out of the cache: Pebble may or may not hold their values.
func (c *rowCache) forget(rows []rowValue) { c.end(rows, false) }

// end ends begin's mark of rows, putting their values in the cache or
// dropping them.
func (c *rowCache) end(rows []rowValue, put bool) {
	for _, r := range rows {
		sh := c.shardOf(r.key)
		sh.mu.Lock()
		sh.gen++
		sh.done(r.key)
		if put {
			sh.put(r.key, rowEntry{v: r.value, rec: r.rec}, c.max)
		} else {
			delete(sh.m, r.key)
		}
		sh.mu.Unlock()
	}
}

// clear drops every value (a closed store reads nothing from memory).
func (c *rowCache) clear() {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.gen++
		clear(sh.m)
		sh.mu.Unlock()
	}
}

// done ends one begin mark of key.
func (sh *rowShard) done(key string) {
	if n := sh.writing[key]; n > 1 {
		sh.writing[key] = n - 1
	} else {
		delete(sh.writing, key)
	}
}

// put stores e under key, first dropping an entry when the shard is
// full: whichever the map's iteration gives first, which is random (a
// hit does not keep an entry in).
func (sh *rowShard) put(key string, e rowEntry, max int) {
	if _, ok := sh.m[key]; !ok && len(sh.m) >= max {
		for k := range sh.m {
			delete(sh.m, k)
			break
		}
	}
	sh.m[key] = e
}

// rowValue is a card or device value a batch stores, under its key (as
// a string: the form the cache's maps keep), and its record when the
// writer has it (nil: decoded by the first read that wants it). The
// record is the cache's: the writer neither keeps nor changes it.
type rowValue struct {
	key   string
	value []byte
	rec   any
}

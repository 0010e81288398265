package pebble

// The row cache: the stored values of cards and devices recently read
// or written, so that the five reads one report makes of its device and
// its card (to check the signature, to decide, then the version checks
// of the write) cost one Pebble Get of each, not five, unless a write to
// another row of the same shard or an eviction comes in between.

import (
	"hash/maphash"
	"sync"
)

// DefaultRowCache is the number of card and device values the row cache
// holds when Options.RowCache is 0 or less: about 250-310 bytes each
// with the maps' overhead (some 20 MiB).
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
// Values are never modified once in the cache: callers decode them into
// new records and never keep or change the bytes.
type rowCache struct {
	seed   maphash.Seed
	max    int // entries per shard
	shards [rowCacheShards]rowShard
}

type rowShard struct {
	mu      sync.Mutex
	gen     uint64 // counts the writes that reached the shard
	m       map[string][]byte
	writing map[string]int // rows between begin and written or forget
}

// newRowCache returns a cache of about n entries (n > 0), at least one
// per shard.
func newRowCache(n int) *rowCache {
	c := &rowCache{seed: maphash.MakeSeed(), max: max(1, n/rowCacheShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[string][]byte)
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
func (c *rowCache) get(key []byte) (v []byte, gen uint64, ok bool) {
	sh := c.shard(key)
	sh.mu.Lock()
	v, ok = sh.m[string(key)]
	gen = sh.gen
	sh.mu.Unlock()
	return v, gen, ok // a row being written is not in m
}

// fill caches v, read from Pebble after a get that returned gen, unless
// a write reached the shard since or the row is being written.
func (c *rowCache) fill(key, v []byte, gen uint64) {
	sh := c.shard(key)
	sh.mu.Lock()
	if sh.gen == gen && sh.writing[string(key)] == 0 {
		sh.put(string(key), v, c.max)
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
			sh.put(r.key, r.value, c.max)
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

// put stores v under key, first dropping an entry when the shard is
// full: whichever the map's iteration gives first, which is random (a
// hit does not keep an entry in).
func (sh *rowShard) put(key string, v []byte, max int) {
	if _, ok := sh.m[key]; !ok && len(sh.m) >= max {
		for k := range sh.m {
			delete(sh.m, k)
			break
		}
	}
	sh.m[key] = v
}

// rowValue is a card or device value a batch stores, under its key (as
// a string: the form the cache's maps keep).
type rowValue struct {
	key   string
	value []byte
}

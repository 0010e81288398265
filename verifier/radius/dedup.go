package radius

import (
	"net/netip"
	"sync"
	"time"
)

// requestKey identifies a request and its retransmissions: same client
// address, identifier and Request Authenticator. The source port is left
// out, as some NASes send from a pool of sockets; the authenticator, a
// hash over the whole request, tells different requests apart.
type requestKey struct {
	from netip.Addr
	id   byte
	auth [16]byte
}

// dedupState says what the cache knows of a request.
type dedupState int

const (
	dedupNew      dedupState = iota // first seen: process it
	dedupInFlight                   // being processed: drop the copy
	dedupDone                       // answered: send the answer again
)

type dedupEntry struct {
	at   time.Time
	resp []byte // nil while in flight
}

type queued struct {
	key requestKey
	at  time.Time
}

// dedup remembers recent requests and their answers, bounded in size and
// age: the oldest entries go first. It is safe for concurrent use.
type dedup struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	m     map[requestKey]*dedupEntry
	queue []queued // insertion order; may hold keys already removed
	head  int
}

func newDedup(max int, ttl time.Duration) *dedup {
	return &dedup{max: max, ttl: ttl, m: make(map[requestKey]*dedupEntry, max)}
}

// begin looks a request up. For a new request it records it as in flight;
// for an answered one it returns the answer.
func (d *dedup) begin(k requestKey, now time.Time) (dedupState, []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.expire(now)
	if e, ok := d.m[k]; ok {
		if e.resp == nil {
			return dedupInFlight, nil
		}
		return dedupDone, e.resp
	}
	for len(d.m) >= d.max && d.head < len(d.queue) {
		d.pop()
	}
	d.m[k] = &dedupEntry{at: now}
	d.queue = append(d.queue, queued{key: k, at: now})
	return dedupNew, nil
}

// finish stores the answer to a request begun earlier.
func (d *dedup) finish(k requestKey, resp []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.m[k]; ok {
		e.resp = resp
	}
}

// abort forgets a request that failed, so that its retransmission is
// processed again.
func (d *dedup) abort(k requestKey) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.m[k]; ok && e.resp == nil {
		delete(d.m, k)
	}
}

// expire drops entries older than the ttl.
func (d *dedup) expire(now time.Time) {
	for d.head < len(d.queue) && now.Sub(d.queue[d.head].at) >= d.ttl {
		d.pop()
	}
}

// pop removes the oldest queued entry (and its map entry, unless the key
// was added again since) and compacts the queue now and then.
func (d *dedup) pop() {
	q := d.queue[d.head]
	d.queue[d.head] = queued{}
	d.head++
	if e, ok := d.m[q.key]; ok && e.at.Equal(q.at) {
		delete(d.m, q.key)
	}
	if d.head > 1024 && d.head*2 > len(d.queue) {
		d.queue = append(d.queue[:0], d.queue[d.head:]...)
		d.head = 0
	}
}

// len returns the number of remembered requests.
func (d *dedup) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.m)
}

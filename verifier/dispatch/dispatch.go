// Package dispatch drains the verifier's outbox: it hands every entry of
// one kind to a handler, removes it when the handler succeeds, and retries
// it with exponential backoff and jitter when the handler fails. Entries
// are written in the same atomic batch as the decision that caused them,
// so a crash at any point loses nothing; handlers get the entry's stable
// id as an idempotency key, so a repeat after a crash does no harm.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cardbind/cardbind/verifier"
)

// Store is what a dispatcher needs of the verifier's store.
type Store interface {
	PendingOutbox(ctx context.Context, kind verifier.OutboxKind, now time.Time, limit int) ([]verifier.OutboxEntry, error)
	RescheduleOutbox(ctx context.Context, e verifier.OutboxEntry) error
	CompleteOutbox(ctx context.Context, id string) error
}

// Handler carries out one outbox entry. An error wrapping ErrPermanent
// means retrying cannot help: the entry is dropped and counted.
type Handler func(ctx context.Context, e verifier.OutboxEntry) error

// ErrPermanent marks a handler error that retrying cannot cure (a payload
// that does not decode, a sink that is gone for good).
var ErrPermanent = errors.New("permanent failure")

// Config tunes a dispatcher. Zero values take the defaults.
type Config struct {
	// Workers is how many entries are handled at once (default 8).
	Workers int
	// Batch is how many due entries are fetched at a time (default 256).
	Batch int
	// Poll is how often the outbox is read when nobody calls Wake
	// (default 250ms).
	Poll time.Duration
	// MinBackoff and MaxBackoff bound the delay between attempts
	// (defaults 200ms and 5 minutes).
	MinBackoff, MaxBackoff time.Duration
	// MaxAge gives up on an entry this long after it was created
	// (default 24 hours); 0 keeps the default, negative never gives up.
	MaxAge time.Duration
	// OrderKey, when set, names the queue an entry belongs to (the card,
	// for alerts): entries with the same key are handled one at a time, in
	// the outbox's order, and a failed one holds back the entries behind
	// it until its retry. Entries of different keys run in parallel. Nil:
	// every entry is independent.
	OrderKey func(e verifier.OutboxEntry) string
}

func (c *Config) defaults() {
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.Batch <= 0 {
		c.Batch = 256
	}
	if c.Poll <= 0 {
		c.Poll = 250 * time.Millisecond
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 200 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Minute
	}
	if c.MaxAge == 0 {
		c.MaxAge = 24 * time.Hour
	}
}

// Stats counts what a dispatcher did.
type Stats struct {
	Done, Retried, Dropped atomic.Uint64
	// Due is how many entries were due at the last read of the outbox (at
	// most the batch size): a backlog shows as Due staying at the batch
	// size.
	Due atomic.Int64
	// InFlight is how many entries are being handled now.
	InFlight atomic.Int64
}

// Dispatcher drains the outbox entries of one kind.
type Dispatcher struct {
	store   Store
	kind    verifier.OutboxKind
	handle  Handler
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	wake    chan struct{}
	stats   Stats
	running sync.Map // entry key -> struct{}: handled right now, or finished since the last read
	// finished holds the keys whose worker ended; the next round clears
	// their running mark before it reads the outbox, so an entry it read
	// before the worker completed it is never started again.
	finished sync.Map
	held     sync.Map // entry key -> time.Time: an ordered queue waiting for a retry
}

// New returns a dispatcher for entries of kind.
func New(store Store, kind verifier.OutboxKind, handle Handler, cfg Config, log *slog.Logger, now func() time.Time) *Dispatcher {
	cfg.defaults()
	return &Dispatcher{store: store, kind: kind, handle: handle, cfg: cfg, log: log.With("outbox", string(kind)),
		now: now, wake: make(chan struct{}, 1)}
}

// Stats returns the live counters.
func (d *Dispatcher) Stats() *Stats { return &d.stats }

// Kind returns the kind of outbox entries the dispatcher drains.
func (d *Dispatcher) Kind() verifier.OutboxKind { return d.kind }

// Wake makes the dispatcher read the outbox now rather than at its next
// poll. It never blocks.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run drains the outbox until ctx ends. Entries being handled when ctx
// ends are finished or left for the next run.
func (d *Dispatcher) Run(ctx context.Context) error {
	sem := make(chan struct{}, d.cfg.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-d.wake:
		}
		full, err := d.round(ctx, sem, &wg)
		if err != nil && ctx.Err() == nil {
			d.log.Error("read outbox", "err", err)
		}
		next := d.cfg.Poll
		if full {
			next = 0 // more may be due right away
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// round fetches due entries and starts a worker for each queue that is
// not already being handled: with an OrderKey, the worker carries out its
// queue's due entries one after the other, in order, and stops at one that
// fails; without, every entry is a queue of its own. It reports whether
// the batch was full.
func (d *Dispatcher) round(ctx context.Context, sem chan struct{}, wg *sync.WaitGroup) (bool, error) {
	d.finished.Range(func(key, _ any) bool {
		d.finished.Delete(key)
		d.running.Delete(key)
		return true
	})
	entries, err := d.store.PendingOutbox(ctx, d.kind, d.now(), d.cfg.Batch)
	if err != nil {
		return false, fmt.Errorf("dispatch: pending %s: %w", d.kind, err)
	}
	d.stats.Due.Store(int64(len(entries)))
	now := d.now()
	var keys []string
	queues := make(map[string][]verifier.OutboxEntry)
	for _, e := range entries {
		key := d.key(e)
		if _, ok := queues[key]; !ok {
			keys = append(keys, key)
		}
		queues[key] = append(queues[key], e)
	}
	started := 0
	for _, key := range keys {
		if until, ok := d.held.Load(key); ok {
			if now.Before(until.(time.Time)) {
				continue // a failed entry of this queue waits for its retry
			}
			d.held.Delete(key)
		}
		if _, busy := d.running.LoadOrStore(key, struct{}{}); busy {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			d.running.Delete(key)
			return false, nil
		}
		started++
		wg.Add(1)
		go func(queue []verifier.OutboxEntry) {
			defer wg.Done()
			for _, e := range queue {
				d.stats.InFlight.Add(1)
				finished := d.one(ctx, e, key)
				d.stats.InFlight.Add(-1)
				if !finished {
					break
				}
			}
			d.finished.Store(key, struct{}{})
			<-sem
			d.Wake() // a finished queue may unblock more
		}(queues[key])
	}
	d.held.Range(func(k, until any) bool {
		if !now.Before(until.(time.Time)) {
			d.held.Delete(k) // its entry is due again, done, or gone
		}
		return true
	})
	return len(entries) == d.cfg.Batch && started > 0, nil
}

// key is the entry's queue: its OrderKey, or its own id.
func (d *Dispatcher) key(e verifier.OutboxEntry) string {
	if d.cfg.OrderKey != nil {
		return d.cfg.OrderKey(e)
	}
	return e.ID
}

// one carries out an entry; it reports whether the entry is finished
// (done, or dropped for good), so that the entries behind it may go.
func (d *Dispatcher) one(ctx context.Context, e verifier.OutboxEntry, key string) bool {
	err := d.handle(ctx, e)
	switch {
	case err == nil:
		if cerr := d.store.CompleteOutbox(ctx, e.ID); cerr != nil {
			d.log.Error("complete outbox entry", "id", e.ID, "err", cerr)
			return false
		}
		d.stats.Done.Add(1)
		return true
	case ctx.Err() != nil:
		// Shutting down: the entry stays for the next run.
		return false
	case errors.Is(err, ErrPermanent) || (d.cfg.MaxAge > 0 && d.now().Sub(e.Created) > d.cfg.MaxAge):
		d.log.Error("outbox entry dropped", "id", e.ID, "attempts", e.Attempts+1, "err", err)
		if cerr := d.store.CompleteOutbox(ctx, e.ID); cerr != nil {
			d.log.Error("drop outbox entry", "id", e.ID, "err", cerr)
			return false
		}
		d.stats.Dropped.Add(1)
		return true
	default:
		e.Attempts++
		delay := Backoff(e.Attempts, d.cfg.MinBackoff, d.cfg.MaxBackoff)
		e.NotBefore = d.now().Add(delay)
		d.log.Warn("outbox entry failed; will retry", "id", e.ID, "attempts", e.Attempts, "retry_in", delay, "err", err)
		if d.cfg.OrderKey != nil {
			d.held.Store(key, e.NotBefore)
		}
		if rerr := d.store.RescheduleOutbox(ctx, e); rerr != nil {
			d.log.Error("reschedule outbox entry", "id", e.ID, "err", rerr)
			return false
		}
		d.stats.Retried.Add(1)
	}
	return false
}

// Backoff returns the delay before attempt n+1 after n failures:
// exponential from min, capped at max, with up to 25% jitter below.
func Backoff(n int, min, max time.Duration) time.Duration {
	d := min
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d - time.Duration(rand.Int64N(int64(d)/4+1))
}

package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/dispatch"
)

// scanAll is a "now" after every NotBefore: the deliverer reads entries
// that are not due yet too, because a subscription's later events must
// wait behind an earlier one being retried.
var scanAll = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)

// batch is how many entries of one subscription's queue a round reads.
const batch = 512

// errGone is a sink's 410 answer: the subscription ends.
var errGone = errors.New("sink answered 410 Gone")

// queues is the deliverer's view of the subscription queues.
type queues struct {
	mu   sync.Mutex
	busy map[string]bool      // a worker delivers to it now
	hint map[string]time.Time // its first entry is not due before
}

func (q *queues) state(id string) (busy bool, hint time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.busy[id], q.hint[id]
}

func (q *queues) setBusy(id string, b bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if b {
		q.busy[id] = true
	} else {
		delete(q.busy, id)
	}
}

func (q *queues) setHint(id string, t time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.IsZero() {
		delete(q.hint, id)
	} else {
		q.hint[id] = t
	}
}

// Run delivers queued events and ends expired subscriptions until ctx
// ends. Each subscription's events are delivered one at a time in the
// order they were queued; a failed event is retried with exponential
// backoff and holds back the events behind it, and only them.
func (n *Notifier) Run(ctx context.Context) error {
	sem := make(chan struct{}, n.cfg.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	nextSweep := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-n.wake:
		}
		if now := n.now(); !now.Before(nextSweep) {
			if err := n.sweep(ctx); err != nil && ctx.Err() == nil {
				n.log.Error("webhook: sweep expired subscriptions", "err", err)
			}
			nextSweep = now.Add(n.cfg.Sweep)
		}
		next, err := n.round(ctx, sem, &wg)
		if err != nil && ctx.Err() == nil {
			n.log.Error("webhook: read outbox", "err", err)
		}
		wait := min(n.cfg.Poll, n.cfg.Sweep)
		if !next.IsZero() {
			wait = min(wait, max(0, next.Sub(n.now())))
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// round walks the registered queues and starts a worker for each one
// that no worker serves now and whose first entry is due; it retires
// empty queues. It returns the earliest time a queue it passed over
// becomes due.
func (n *Notifier) round(ctx context.Context, sem chan struct{}, wg *sync.WaitGroup) (time.Time, error) {
	purges := n.purges.Load() // before the reads: a purge after it makes them stale
	now := n.now()
	var next time.Time
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	after := ""
	for {
		recs, err := n.store.ListRecords(ctx, nsQueue, after, 1024)
		if err != nil {
			return next, fmt.Errorf("webhook: queues: %w", err)
		}
		for _, r := range recs {
			id := r.Key
			after = id
			busy, hint := n.queues.state(id)
			if busy {
				continue
			}
			if hint.After(now) {
				later(hint)
				continue
			}
			entries, err := n.store.PendingOutbox(ctx, queueKind(id), scanAll, batch)
			if err != nil {
				return next, fmt.Errorf("webhook: queue %s: %w", id, err)
			}
			if len(entries) == 0 {
				if err := n.retire(ctx, id); err != nil {
					return next, err
				}
				continue
			}
			if nb := entries[0].NotBefore; nb.After(now) {
				n.queues.setHint(id, nb)
				later(nb)
				continue
			}
			n.queues.setBusy(id, true)
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				n.queues.setBusy(id, false)
				return next, nil
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				n.queues.setHint(id, n.deliverAll(ctx, entries, purges))
				n.queues.setBusy(id, false)
				n.Wake()
			}()
		}
		if len(recs) < 1024 {
			return next, nil
		}
	}
}

// retire unregisters subscription id's queue if it is still empty,
// under the lock that enqueue holds.
func (n *Notifier) retire(ctx context.Context, id string) error {
	defer n.lock(id)()
	left, err := n.store.PendingOutbox(ctx, queueKind(id), scanAll, 1)
	if err != nil || len(left) > 0 {
		return err
	}
	n.queues.setHint(id, time.Time{})
	if err := n.store.DeleteRecord(ctx, nsQueue, id); err != nil {
		return fmt.Errorf("webhook: retire queue %s: %w", id, err)
	}
	return nil
}

// Pending returns how many events wait in the subscriptions' queues.
func (n *Notifier) Pending(ctx context.Context) (int, error) {
	total, after := 0, ""
	for {
		recs, err := n.store.ListRecords(ctx, nsQueue, after, 1024)
		if err != nil {
			return total, fmt.Errorf("webhook: queues: %w", err)
		}
		for _, r := range recs {
			after = r.Key
			es, err := n.store.PendingOutbox(ctx, queueKind(r.Key), scanAll, 1<<20)
			if err != nil {
				return total, fmt.Errorf("webhook: queue %s: %w", r.Key, err)
			}
			total += len(es)
		}
		if len(recs) < 1024 {
			return total, nil
		}
	}
}

type queued struct {
	e verifier.OutboxEntry
	d delivery
}

// deliverAll delivers one subscription's entries in order, stopping at
// the first that fails, or when events were purged since the entries were
// read (they may be among them). The removals of delivered entries from
// the outbox (synced writes) run behind the sends, up to maxCompleting at
// once, so that the store's sync latency does not pace the sink; a crash
// before a removal is durable sends that event again, which at-least-once
// allows.
// It returns when the first entry left is due again after a failure (zero
// when none failed).
func (n *Notifier) deliverAll(ctx context.Context, g []verifier.OutboxEntry, purges uint64) time.Time {
	const maxCompleting = 32
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxCompleting)
	var failed atomic.Bool
	for _, e := range g {
		if ctx.Err() != nil || e.NotBefore.After(n.now()) || n.purges.Load() != purges || failed.Load() {
			return time.Time{}
		}
		q := queued{e: e}
		if err := json.Unmarshal(e.Payload, &q.d); err != nil || q.d.Sink == "" {
			n.log.Error("webhook: undecodable entry dropped", "id", e.ID, "err", err)
			if cerr := n.store.CompleteOutbox(ctx, e.ID); cerr != nil {
				return time.Time{}
			}
			n.stats.Dropped.Add(1)
			continue
		}
		err := n.send(ctx, q.d)
		if err == nil {
			n.stats.Delivered.Add(1)
			sem <- struct{}{}
			wg.Add(1)
			go func(id string) {
				defer wg.Done()
				defer func() { <-sem }()
				if cerr := n.store.CompleteOutbox(ctx, id); cerr != nil {
					n.log.Error("webhook: complete entry", "id", id, "err", cerr)
					failed.Store(true)
				}
			}(e.ID)
			continue
		}
		wg.Wait() // the delivered entries before this one are removed first
		switch {
		case ctx.Err() != nil:
			return time.Time{}
		case errors.Is(err, errGone):
			n.gone(ctx, q)
			return time.Time{}
		case n.now().Sub(q.e.Created) > n.cfg.MaxAge:
			n.log.Error("webhook: event dropped after retrying too long", "id", q.e.ID,
				"subscription", q.d.Subscription, "attempts", q.e.Attempts+1, "err", err)
			if cerr := n.store.CompleteOutbox(ctx, q.e.ID); cerr != nil {
				n.log.Error("webhook: drop entry", "id", q.e.ID, "err", cerr)
				return time.Time{}
			}
			n.stats.Dropped.Add(1)
		default:
			q.e.Attempts++
			delay := dispatch.Backoff(q.e.Attempts, n.cfg.MinBackoff, n.cfg.MaxBackoff)
			q.e.NotBefore = n.now().Add(delay)
			n.log.Warn("webhook: delivery failed; will retry", "id", q.e.ID, "subscription", q.d.Subscription,
				"attempts", q.e.Attempts, "retry_in", delay, "err", err)
			if rerr := n.store.RescheduleOutbox(ctx, q.e); rerr != nil {
				n.log.Error("webhook: reschedule entry", "id", q.e.ID, "err", rerr)
			}
			n.stats.Retried.Add(1)
			return q.e.NotBefore
		}
	}
	return time.Time{}
}

// send POSTs one event to its sink. Any 2xx answer is delivery; 410 is
// errGone; anything else is an error to retry.
func (n *Notifier) send(ctx context.Context, d delivery) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.Sink, bytes.NewReader(d.Event))
	if err != nil {
		return fmt.Errorf("webhook: request: %w", err)
	}
	req.Header.Set("Content-Type", "application/cloudevents+json")
	if d.Token != "" {
		req.Header.Set("Authorization", "Bearer "+d.Token)
	}
	var ev struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(d.Event, &ev)
	req.Header.Set("x-correlator", ev.ID)
	resp, err := n.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: post: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusGone:
		return errGone
	}
	return fmt.Errorf("webhook: sink answered %s", strconv.Itoa(resp.StatusCode))
}

// gone ends the subscription whose sink answered 410: nothing more is
// sent to it, not even subscription-ended.
func (n *Notifier) gone(ctx context.Context, q queued) {
	id := q.d.Subscription
	n.log.Info("webhook: sink is gone; subscription ends", "subscription", id, "sink", q.d.Sink)
	unlock := n.lock(id)
	defer unlock()
	if s, err := n.get(ctx, id); err == nil {
		if err := n.remove(ctx, s); err != nil {
			n.log.Error("webhook: remove subscription", "subscription", id, "err", err)
			return
		}
	} else if !errors.Is(err, verifier.ErrNotFound) {
		n.log.Error("webhook: read subscription", "subscription", id, "err", err)
		return
	}
	if err := n.purge(ctx, id, true); err != nil {
		n.log.Error("webhook: drop events", "subscription", id, "err", err)
		return
	}
	n.stats.Gone.Add(1)
}

// purge drops the queued events of subscription id; lifecycle events
// too when all is set.
func (n *Notifier) purge(ctx context.Context, id string, all bool) error {
	entries, err := n.store.PendingOutbox(ctx, queueKind(id), scanAll, 1<<20)
	if err != nil {
		return fmt.Errorf("webhook: pending: %w", err)
	}
	for _, e := range entries {
		var d delivery
		if json.Unmarshal(e.Payload, &d) != nil || d.Subscription != id || d.Lifecycle && !all {
			continue
		}
		if err := n.store.CompleteOutbox(ctx, e.ID); err != nil {
			return fmt.Errorf("webhook: drop %s: %w", e.ID, err)
		}
		n.stats.Dropped.Add(1)
	}
	n.queues.setHint(id, time.Time{}) // its first entry may be another now
	n.purges.Add(1)                   // after the removals: see round
	return nil
}

// sweep ends the subscriptions whose expiry time has come
// (SUBSCRIPTION_EXPIRED) or whose access token is about to expire
// (ACCESS_TOKEN_EXPIRED).
func (n *Notifier) sweep(ctx context.Context) error {
	now := n.now()
	recs, err := n.store.ListRecords(ctx, nsExpiry, "", 256)
	if err != nil {
		return fmt.Errorf("webhook: expiry index: %w", err)
	}
	for _, r := range recs {
		ts, id, ok := strings.Cut(r.Key, "/")
		ns, err := strconv.ParseInt(ts, 10, 64)
		if !ok || err != nil {
			_ = n.store.DeleteRecord(ctx, nsExpiry, r.Key)
			continue
		}
		if time.Unix(0, ns).After(now) {
			break
		}
		if err := n.expire(ctx, id, r.Key, now); err != nil {
			return err
		}
	}
	return nil
}

func (n *Notifier) expire(ctx context.Context, id, key string, now time.Time) error {
	defer n.lock(id)()
	s, err := n.get(ctx, id)
	if errors.Is(err, verifier.ErrNotFound) {
		return n.store.DeleteRecord(ctx, nsExpiry, key)
	}
	if err != nil {
		return err
	}
	reason := ReasonTokenExpiry
	if !s.ExpiresAt.IsZero() && !s.ExpiresAt.After(now) {
		reason = ReasonExpired
	}
	return n.end(ctx, s, reason, now)
}

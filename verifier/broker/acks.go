package broker

// The report consumer acknowledges with the AckAll policy: one ack of a
// report acknowledges every report the stream holds below it. The
// verifier handles reports out of delivery order (each device's on its
// own worker) and acknowledges them in rounds (one disk sync for many),
// so acks tracks what was delivered and what the handler has
// acknowledged, and acks the consumer up to the end of the handled
// prefix, once per wake-up however many reports that covers. Against a
// consumer with explicit acks (one ack message a report, which the server
// parses, routes and applies one at a time) this saved some 8 % of the
// verifier's CPU per report (docs/benchmarks.md, sixth rework).
//
// AckAll is only sound when every delivery reaches the handler: an ack
// past a delivery that was lost on the way would acknowledge a report
// nobody handled. Deliveries carry the consumer's sequence number, which
// counts up by one; a jump means one was lost. Then the tracker takes no
// more deliveries (those after the gap are dropped before the handler
// sees them), still acks the prefix delivered before the gap, and the
// subscription starts over from the consumer's ack floor, which brings
// the lost report back, in order, ahead of those after it.

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
)

// ackSlot is one delivery.
type ackSlot struct {
	msg  jetstream.Msg // nil once passed by the handled prefix
	sseq uint64        // stream sequence
	done bool          // the handler acknowledged it
}

// acks tracks the deliveries of one consume of the report consumer.
type acks struct {
	log   *slog.Logger
	acked *atomic.Uint64 // reports covered by acks sent (Stats.ReportsAcked)

	mu       sync.Mutex
	slots    []ackSlot // not yet passed by the handled prefix, oldest first, from head
	head     int
	base     uint64 // delivery index of slots[0]
	next     uint64 // delivery index of the next delivery
	lastDseq uint64 // consumer sequence of the last delivery, 0 before the first
	gap      bool   // a delivery was lost: no more are taken
	over     bool   // startOver has answered true
	maxSeq   uint64 // highest stream sequence in the handled prefix
	target   jetstream.Msg
	covers   uint64 // deliveries the target's ack covers that no sent ack did

	sending sync.Mutex // one ack in flight, in order
	wake    chan struct{}
}

func newAcks(log *slog.Logger, acked *atomic.Uint64) *acks {
	return &acks{log: log, acked: acked, wake: make(chan struct{}, 1)}
}

// add records a delivery with its stream and consumer sequences and
// returns its index for done. ok is false when it does not follow the
// previous delivery (a gap) or a gap was seen before: the delivery must
// not reach the handler.
func (a *acks) add(m jetstream.Msg, sseq, dseq uint64) (idx uint64, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gap || (a.lastDseq != 0 && dseq != a.lastDseq+1) {
		a.gap = true
		return 0, false
	}
	a.lastDseq = dseq
	a.slots = append(a.slots, ackSlot{msg: m, sseq: sseq})
	idx = a.next
	a.next++
	return idx, true
}

// startOver tells, once, that a gap was seen and the consume must start
// over.
func (a *acks) startOver() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.gap || a.over {
		return false
	}
	a.over = true
	return true
}

// done records that the handler acknowledged delivery idx, and wakes the
// sender when the handled prefix grew.
func (a *acks) done(idx uint64) {
	a.mu.Lock()
	a.slots[idx-a.base].done = true
	grew := false
	for a.head < len(a.slots) && a.slots[a.head].done {
		s := &a.slots[a.head]
		if s.sseq > a.maxSeq {
			a.maxSeq, a.target = s.sseq, s.msg
		}
		s.msg = nil
		a.covers++
		a.head++
		grew = true
	}
	if a.head == len(a.slots) || (a.head >= 1024 && 2*a.head >= len(a.slots)) {
		n := copy(a.slots, a.slots[a.head:])
		clear(a.slots[n:])
		a.slots = a.slots[:n]
		a.base += uint64(a.head)
		a.head = 0
	}
	a.mu.Unlock()
	if grew {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
}

// run sends acks as the handled prefix grows, until stop is closed.
func (a *acks) run(stop <-chan struct{}) {
	for {
		select {
		case <-a.wake:
			a.flush()
		case <-stop:
			return
		}
	}
}

// flush acks the end of the handled prefix, if no ack sent covers it.
// A failed ack is left for the next flush to cover.
func (a *acks) flush() {
	a.sending.Lock()
	defer a.sending.Unlock()
	a.mu.Lock()
	m, n := a.target, a.covers
	a.target, a.covers = nil, 0
	a.mu.Unlock()
	if m == nil {
		return
	}
	if err := m.Ack(); err != nil {
		a.log.Warn("broker: ack reports", "reports", n, "err", err)
		a.mu.Lock()
		if a.target == nil {
			a.target = m
		}
		a.covers += n
		a.mu.Unlock()
		return
	}
	a.acked.Add(n)
}

// newAcks starts the ack tracker of one consume of the report consumer.
// It sends acks until the broker stops, which flushes it last.
func (b *Broker) newAcks() *acks {
	a := newAcks(b.log, &b.stats.reportsAcked)
	b.mu.Lock()
	b.ackers = append(b.ackers, a)
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		a.run(b.baseCtx.Done())
	}()
	return a
}

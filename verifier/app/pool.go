package app

import (
	"bytes"
	"context"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier/dispatch"
	"github.com/cardbind/cardbind/verifier/ingest"
)

// How reports are batched for their signature checks: at most
// maxCheckBatch in one batch; a batch that has fewer than fullEnough once
// the waiting reports are taken waits up to linger for more. A signature
// costs about 41 µs alone, 23 µs in a batch of 16 and 17 µs in one of 64;
// the wait lets batches form at a steady few thousand reports a second
// too, for at most a millisecond on each report.
const (
	maxCheckBatch = 64
	fullEnough    = 16
	linger        = time.Millisecond
)

// checkersFor returns how many checkers to run on procs CPUs: one per four,
// at least one. A checker handles some 40,000 reports a second, and fewer
// checkers make fuller batches.
func checkersFor(procs int) int { return max(1, (procs+3)/4) }

// pool runs reports through ingest in two steps. Checkers take whatever
// reports are waiting, up to maxCheckBatch, decode them and check their
// signatures in one batch (ingest.CheckBatch); workers then handle them
// one at a time, each waiting for its synced commit. A device's reports
// always go to the same checker and the same worker, so they are handled
// in order. Under load the batches fill by themselves; below it a checker
// waits up to linger for company.
//
// Reports that say something changed are also taken early (handleEarly):
// as the broker receives them, straight to their device's worker, which
// takes them before the queued ones, so that a SIM swap is acted on at
// once however long the queue behind the consumer.
type pool struct {
	in       *ingest.Ingest
	log      *slog.Logger
	checkers []chan job
	workers  []chan job
	early    []chan job // one per worker, taken first
	checking sync.WaitGroup
	working  sync.WaitGroup
}

type job struct {
	device  string
	hash    uint32
	payload []byte
	ack     func() // nil for a report taken early
	checked ingest.Checked
}

// earlyQueue is how many reports taken early may wait for one worker;
// more are dropped, to come through the queue.
const earlyQueue = 16

// newPool starts nCheckers checkers and nWorkers workers.
func newPool(ctx context.Context, nCheckers, nWorkers int, in *ingest.Ingest, log *slog.Logger) *pool {
	p := &pool{in: in, log: log, checkers: make([]chan job, nCheckers), workers: make([]chan job, nWorkers),
		early: make([]chan job, nWorkers)}
	for i := range p.workers {
		q, e := make(chan job, 64), make(chan job, earlyQueue)
		p.workers[i], p.early[i] = q, e
		p.working.Add(1)
		go func() {
			defer p.working.Done()
			for {
				select {
				case j := <-e:
					p.workEarly(ctx, j)
					continue
				default:
				}
				select {
				case j := <-e:
					p.workEarly(ctx, j)
				case j, ok := <-q:
					if !ok {
						return
					}
					p.work(ctx, j)
				}
			}
		}()
	}
	for i := range p.checkers {
		q := make(chan job, 4*maxCheckBatch)
		p.checkers[i] = q
		p.checking.Add(1)
		go func() {
			defer p.checking.Done()
			p.check(ctx, q)
		}()
	}
	return p
}

// check batches the reports waiting in q and hands them to their workers.
func (p *pool) check(ctx context.Context, q chan job) {
	batch := make([]job, 0, maxCheckBatch)
	devices := make([]string, 0, maxCheckBatch)
	payloads := make([][]byte, 0, maxCheckBatch)
	wait := time.NewTimer(linger)
	wait.Stop()
	for j := range q {
		batch = gather(q, append(batch[:0], j), wait)
		devices, payloads = devices[:0], payloads[:0]
		for _, j := range batch {
			devices = append(devices, j.device)
			payloads = append(payloads, j.payload)
		}
		for i, c := range p.in.CheckBatch(ctx, devices, payloads) {
			j := batch[i]
			j.checked = c
			p.workers[j.hash%uint32(len(p.workers))] <- j
		}
	}
}

// gather adds to batch what waits in q, up to maxCheckBatch; while it has
// fewer than fullEnough it waits for more, until linger has passed (wait is
// a stopped timer, left stopped) or q is closed.
func gather(q chan job, batch []job, wait *time.Timer) []job {
	waiting := false
	defer func() {
		if waiting {
			wait.Stop()
		}
	}()
	for len(batch) < maxCheckBatch {
		select {
		case j, ok := <-q:
			if !ok {
				return batch
			}
			batch = append(batch, j)
			continue
		default:
		}
		if len(batch) >= fullEnough {
			return batch
		}
		if !waiting {
			wait.Reset(linger)
			waiting = true
		}
		select {
		case j, ok := <-q:
			if !ok {
				return batch
			}
			batch = append(batch, j)
		case <-wait.C:
			waiting = false
			return batch
		}
	}
	return batch
}

// work handles one report, retrying transient failures (the store) in
// place so that the device's later reports do not overtake it.
func (p *pool) work(ctx context.Context, j job) {
	for attempt := 1; ; attempt++ {
		err := p.in.HandleChecked(ctx, j.device, j.checked)
		if err == nil {
			j.ack()
			return
		}
		p.log.Error("report failed; retrying", "device", j.device, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return // not acked: the broker delivers it again after a restart
		case <-time.After(dispatch.Backoff(attempt, 100*time.Millisecond, 10*time.Second)):
		}
	}
}

// workEarly handles a report taken early; on a failure it leaves the
// report to its queued copy.
func (p *pool) workEarly(ctx context.Context, j job) {
	if err := p.in.HandleEarly(ctx, j.device, j.payload); err != nil {
		p.log.Warn("report taken early failed; its queued copy will be handled", "device", j.device, "err", err)
	}
}

// handleEarly takes a report as the broker receives it (a
// broker.ReportWatcher). Heartbeats wait their turn in the queue; any
// other report goes to its device's worker at once, unless that worker
// already has earlyQueue of them waiting (ingest.DropEarly). It never
// blocks.
func (p *pool) handleEarly(device string, payload []byte) {
	if bytes.Contains(payload, []byte(heartbeatReason)) {
		return
	}
	sum := deviceHash(device)
	select {
	case p.early[sum%uint32(len(p.early))] <- job{device: device, hash: sum, payload: payload}:
	default:
		// It comes through the queue; until it has, none of the device's
		// later reports may go ahead of it.
		if r, err := protocol.DecodeReport(payload); err == nil && r.DeviceID == device {
			p.in.DropEarly(device, r.Seq)
		}
	}
}

// heartbeatReason is how an encoded heartbeat says what it is (one
// encoded otherwise is merely taken early too).
const heartbeatReason = `"reason":"` + string(protocol.ReasonHeartbeat) + `"`

func deviceHash(device string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(device))
	return h.Sum32()
}

// handle takes one report from the broker.
func (p *pool) handle(device string, payload []byte, ack func()) {
	sum := deviceHash(device)
	p.checkers[sum%uint32(len(p.checkers))] <- job{device: device, hash: sum, payload: payload, ack: ack}
}

// close stops the pool once every report handed to it is handled.
func (p *pool) close() {
	for _, q := range p.checkers {
		close(q)
	}
	p.checking.Wait()
	for _, q := range p.workers {
		close(q)
	}
	p.working.Wait()
}

package app

import (
	"context"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/cardbind/cardbind/verifier/dispatch"
	"github.com/cardbind/cardbind/verifier/ingest"
)

// How reports are batched for their signature checks: at most
// maxCheckBatch in one batch; a batch that has fewer than fullEnough once
// the waiting reports are taken waits up to linger for more. A signature
// costs about 41 µs alone, 23 µs in a batch of 16 and 17 µs in one of 64,
// so at a steady few thousand reports a second the wait saves a fifth of
// the verifier's CPU for at most a millisecond on each report.
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
type pool struct {
	in       *ingest.Ingest
	log      *slog.Logger
	checkers []chan job
	workers  []chan job
	checking sync.WaitGroup
	working  sync.WaitGroup
}

type job struct {
	device  string
	hash    uint32
	payload []byte
	ack     func()
	checked ingest.Checked
}

// newPool starts nCheckers checkers and nWorkers workers.
func newPool(ctx context.Context, nCheckers, nWorkers int, in *ingest.Ingest, log *slog.Logger) *pool {
	p := &pool{in: in, log: log, checkers: make([]chan job, nCheckers), workers: make([]chan job, nWorkers)}
	for i := range p.workers {
		q := make(chan job, 64)
		p.workers[i] = q
		p.working.Add(1)
		go func() {
			defer p.working.Done()
			for j := range q {
				p.work(ctx, j)
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

// handle takes one report from the broker.
func (p *pool) handle(device string, payload []byte, ack func()) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(device))
	sum := h.Sum32()
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

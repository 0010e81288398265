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
// the waiting reports are taken waits up to linger for more. With the
// device keys kept expanded, a signature costs about 41 µs alone, 23 µs
// in a batch of 16, 17-24 µs in one of 64 and 15-20 µs in one of 256; with
// more devices than keys kept (sigcheck checks them unexpanded), 29 µs in
// a batch of 64 and 24-30 µs in one of 256. The wait lets batches form at
// a steady few thousand reports a second too, for at most a millisecond
// on each report; under load a checker takes up to 256 at once.
//
// While the workers already hold a full batch of checked reports, a
// checker waits up to lingerBusy for a full batch itself: the workers
// have enough to do meanwhile, so the wait costs no throughput, and a
// full batch costs less a signature than the smaller ones a checker
// that keeps up would take.
const (
	maxCheckBatch = 256
	fullEnough    = 16
	linger        = time.Millisecond
	lingerBusy    = 5 * time.Millisecond
)

// checkersFor returns how many checkers to run on procs CPUs: one per four,
// at least one. A checker handles some 40,000 reports a second, and fewer
// checkers make fuller batches.
func checkersFor(procs int) int { return max(1, (procs+3)/4) }

// pool runs reports through ingest in two steps. Checkers take whatever
// reports are waiting, up to maxCheckBatch, decode them and check their
// signatures in one batch (ingest.CheckBatch); workers then handle them
// one at a time, and the syncer acknowledges them once their effects are
// durable, one sync for all that were handled meanwhile. A device's reports
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
	sync     *syncer
	stopSync chan struct{}
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

// newPool starts nCheckers checkers and nWorkers workers. onSync, when not
// nil, is told of every sync round: how many reports it acknowledged and
// how long the sync took.
func newPool(ctx context.Context, nCheckers, nWorkers int, in *ingest.Ingest, log *slog.Logger, onSync func(reports int, took time.Duration)) *pool {
	p := &pool{in: in, log: log, checkers: make([]chan job, nCheckers), workers: make([]chan job, nWorkers),
		early: make([]chan job, nWorkers), sync: newSyncer(in, log, onSync), stopSync: make(chan struct{})}
	go p.sync.run(ctx, p.stopSync)
	for i := range p.workers {
		q, e := make(chan job, 64), make(chan job, earlyQueue)
		p.workers[i], p.early[i] = q, e
		p.working.Add(1)
		go func() {
			defer p.working.Done()
			p.runWorker(ctx, q, e)
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
		enough, wait4 := fullEnough, linger
		if p.checkedWaiting() >= maxCheckBatch {
			enough, wait4 = maxCheckBatch, lingerBusy
		}
		batch = gather(q, append(batch[:0], j), wait, enough, wait4)
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

// checkedWaiting returns how many checked reports wait for the workers.
func (p *pool) checkedWaiting() int {
	n := 0
	for _, w := range p.workers {
		n += len(w)
	}
	return n
}

// gather adds to batch what waits in q, up to maxCheckBatch; while it has
// fewer than enough it waits for more, until linger has passed (wait is
// a stopped timer, left stopped) or q is closed.
func gather(q chan job, batch []job, wait *time.Timer, enough int, linger time.Duration) []job {
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
		if len(batch) >= enough {
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

// runWorker handles the reports of its devices: those taken early first,
// then the queued ones in order. It hands the acknowledgement of a queued
// report to the syncer (ingest.HandleChecked does not wait for the disk
// for a quiet report), so a device's next report does not wait for the
// disk either.
func (p *pool) runWorker(ctx context.Context, q, e chan job) {
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
			if p.work(ctx, j) {
				p.sync.add(j.ack)
			}
		}
	}
}

// syncer acknowledges handled reports once their effects are durable: it
// takes every acknowledgement handed to it since its last round, syncs
// the store once (ingest.Sync) and acknowledges them all. One sync covers
// the reports of all workers, however many there are.
type syncer struct {
	in     *ingest.Ingest
	log    *slog.Logger
	onSync func(reports int, took time.Duration) // nil: none
	mu     sync.Mutex
	acks   []func()
	wake   chan struct{} // a round is due
	done   chan struct{} // closed when run returns
}

func newSyncer(in *ingest.Ingest, log *slog.Logger, onSync func(int, time.Duration)) *syncer {
	return &syncer{in: in, log: log, onSync: onSync, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// add hands over the acknowledgement of a handled report.
func (s *syncer) add(ack func()) {
	s.mu.Lock()
	s.acks = append(s.acks, ack)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run makes rounds until stop is closed, then a last one, which retries
// a failing sync for at most lastRoundWait. When ctx ends first, what is
// not yet synced stays unacknowledged, to be delivered again. Rounds
// start at most every syncEvery.
func (s *syncer) run(ctx context.Context, stop <-chan struct{}) {
	defer close(s.done)
	var acks []func()
	pause := time.NewTimer(syncEvery)
	pause.Stop()
	for {
		select {
		case <-s.wake:
		case <-stop:
			last, cancel := context.WithTimeout(ctx, lastRoundWait)
			defer cancel()
			s.round(last, acks)
			return
		}
		start := time.Now()
		acks = s.round(ctx, acks)
		if d := syncEvery - time.Since(start); d > 0 {
			pause.Reset(d)
			select {
			case <-pause.C:
			case <-stop:
				pause.Stop()
			}
		}
	}
}

// syncEvery paces the sync rounds. Back to back, under load, a round
// covered what came during the previous one's fdatasync (about 2.6 ms
// on the bench machine, some 40 reports), and the fdatasyncs took 3 to
// 4 µs of CPU a report; paced, a round covers more reports for the same
// sync. It delays acks to the broker (which only free its stream), not
// decisions: a report that blocks, resumes, alerts or writes history is
// synced by its worker at once.
const syncEvery = 10 * time.Millisecond

// lastRoundWait bounds the retries of the syncer's last round, so that a
// store that cannot sync does not hold the verifier's stop for ever.
const lastRoundWait = 10 * time.Second

// round syncs and acknowledges what was handed over; it returns the
// emptied slice for reuse. A failed sync is retried in place.
func (s *syncer) round(ctx context.Context, spare []func()) []func() {
	s.mu.Lock()
	acks := s.acks
	s.acks = spare[:0]
	s.mu.Unlock()
	if len(acks) == 0 {
		return acks
	}
	for attempt := 1; ; attempt++ {
		// A stopping verifier still syncs what it handled (the store
		// stays open until the pool is closed), so that a clean stop
		// sends nothing round again.
		start := time.Now()
		err := s.in.Sync(context.WithoutCancel(ctx))
		if err == nil {
			if s.onSync != nil {
				s.onSync(len(acks), time.Since(start))
			}
			break
		}
		s.log.Error("sync failed; retrying", "reports", len(acks), "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return acks[:0] // not acked: the broker delivers them again after a restart
		case <-time.After(dispatch.Backoff(attempt, 100*time.Millisecond, 10*time.Second)):
		}
	}
	for _, ack := range acks {
		ack()
	}
	return acks[:0]
}

// work handles one report, retrying transient failures (the store) in
// place so that the device's later reports do not overtake it. It reports
// whether the report was handled, to be acknowledged after the next sync.
func (p *pool) work(ctx context.Context, j job) bool {
	for attempt := 1; ; attempt++ {
		err := p.in.HandleChecked(ctx, j.device, j.checked)
		if err == nil {
			return true
		}
		p.log.Error("report failed; retrying", "device", j.device, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return false // not acked: the broker delivers it again after a restart
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
	close(p.stopSync)
	<-p.sync.done
}

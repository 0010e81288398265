package ingest

// The early lane: reports that say something changed, taken as the broker
// receives them, ahead of the reports queued before them (HandleEarly),
// and what ingest remembers so that their queued copies, and the reports
// they went ahead of, are told apart from replays.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// lane is the way a report reached ingest.
type lane int

const (
	// queued: through the broker's durable consumer, every report, in
	// the order the device sent them, at least once.
	queued lane = iota
	// early: a copy taken as the broker received it, ahead of the
	// reports queued before it; its queued copy comes later.
	early
)

// errOvertaken refuses a queued report that a later report of its device,
// taken early, went ahead of.
var errOvertaken = errors.New("a later report of the device was taken early")

// overtakenSeqs are the sequence numbers of a device's reports that its
// reports taken early went ahead of: above after (the device's last one
// handled before them), up to upTo (the last one taken early).
type overtakenSeqs struct{ after, upTo uint64 }

// maxEarly bounds the devices whose last early report is remembered until
// its queued copy comes.
const maxEarly = 1 << 16

// Backlog gives the reports of a device that the broker holds in its
// durable queue (published and not yet acknowledged by the verifier),
// oldest first (broker.PendingReports).
type Backlog interface {
	PendingReports(ctx context.Context, deviceID string, max int) ([][]byte, error)
}

// SetBacklog lets HandleEarly apply a device's queued reports before the
// one it takes early, so that none is overtaken. Call it before handling
// anything.
func (in *Ingest) SetBacklog(b Backlog) { in.queue = b }

// Bounds of the look into the queue before a report is taken early.
const (
	// maxBacklog is the most queued reports of one device applied ahead
	// of a report taken early; a device with more waits its turn.
	maxBacklog = 256
	// backlogTries and backlogRetry: the broker stores a report in its
	// queue shortly after handing it to the watch, so the look is
	// repeated until the report itself is there.
	backlogTries = 5
	backlogRetry = 2 * time.Millisecond
)

// errNotInQueue: the report to take early was not yet in the queue.
var errNotInQueue = errors.New("report not yet in the broker's queue")

// HandleEarly takes a report as the broker received it, ahead of the
// reports of other devices queued before it (broker.WatchReports), so
// that a SIM change is acted on at once even when the queue is long.
//
// With a Backlog (SetBacklog), it first applies the device's own reports
// still waiting in the queue, in order, so none is skipped: each is
// checked, decided and written as if it had come through the queue. If
// the device has more than maxBacklog waiting, or the report is not yet
// in the queue, the report is not taken early (and holds the device's
// later ones, as after DropEarly). Without a Backlog, the device's older
// queued reports are overtaken: refused when they come, never applied.
//
// The reports applied here come again through the queue (HandleReport or
// HandleChecked), which refuses those copies as overtaken. A report
// refused here is neither counted nor logged, since its queued copy will
// be. It returns an error only for a failure of the store or the queue;
// the caller may drop the report then, as the queued copy will be
// retried. Reports of one device must not be handled concurrently, early
// or queued.
func (in *Ingest) HandleEarly(ctx context.Context, topicDevice string, payload []byte) error {
	r, err := protocol.DecodeReport(payload)
	if err != nil || r.DeviceID != topicDevice || in.earlyHeld(topicDevice) {
		return nil
	}
	if in.queue != nil {
		if err := in.applyBacklog(ctx, r); err != nil {
			in.DropEarly(topicDevice, r.Seq)
			if errors.Is(err, errNotInQueue) {
				return nil
			}
			return err
		}
	}
	err = in.applyReport(ctx, r, nil, early, false)
	if errors.Is(err, verifier.ErrRefused) {
		return nil
	}
	return err
}

// applyBacklog applies, in order, the device's reports waiting in the
// queue before r. It returns errNotInQueue when r itself is not in the
// queue (yet), or is behind more than maxBacklog others.
func (in *Ingest) applyBacklog(ctx context.Context, r *protocol.Report) error {
	// Reports handled already and waiting for their ack are passed over
	// without checking their signatures; when r follows the last one
	// handled, none of the device's can be waiting before it.
	var handled uint64
	switch dev, err := in.store.Device(ctx, r.DeviceID); {
	case err == nil:
		handled = dev.LastSeq
	case !errors.Is(err, verifier.ErrNotFound):
		return fmt.Errorf("ingest: read device %s: %w", r.DeviceID, err)
	}
	if r.Seq == handled+1 {
		return nil
	}
	for try := 1; ; try++ {
		pending, err := in.queue.PendingReports(ctx, r.DeviceID, maxBacklog+1)
		if err != nil {
			return fmt.Errorf("ingest: queued reports of %s: %w", r.DeviceID, err)
		}
		var before []*protocol.Report
		found := false
		for _, p := range pending {
			q, err := protocol.DecodeReport(p)
			if err != nil || q.DeviceID != r.DeviceID {
				continue // refused when it comes through the queue
			}
			if q.Seq >= r.Seq {
				found = true
				break
			}
			if q.Seq > handled {
				before = append(before, q)
			}
		}
		if !found {
			if try == backlogTries || len(pending) > maxBacklog {
				return errNotInQueue
			}
			select {
			case <-time.After(backlogRetry):
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		for _, q := range before {
			err := in.applyReport(ctx, q, nil, early, false)
			if err != nil && !errors.Is(err, verifier.ErrRefused) {
				return err
			}
		}
		return nil
	}
}

// DropEarly tells ingest that the device's report seq was to be taken
// early but was dropped (its worker had too many waiting). Until the
// queued copy of seq has been handled, none of the device's later reports
// is taken early, so that none goes ahead of it: a change that was
// dropped is still applied, and in order.
func (in *Ingest) DropEarly(device string, seq uint64) {
	in.earlyMu.Lock()
	defer in.earlyMu.Unlock()
	if _, ok := in.dropped[device]; !ok && len(in.dropped) >= maxEarly {
		return // too many held already: this one stays in the queue only
	}
	in.dropped[device] = max(in.dropped[device], seq)
}

// earlyHeld tells whether the device's reports are kept from the early
// lane (DropEarly).
func (in *Ingest) earlyHeld(device string) bool {
	in.earlyMu.Lock()
	defer in.earlyMu.Unlock()
	_, held := in.dropped[device]
	return held
}

// handledQueued lets the device's reports be taken early again once the
// queued report seq is the one dropped from the early lane, or later.
func (in *Ingest) handledQueued(device string, seq uint64) {
	in.earlyMu.Lock()
	defer in.earlyMu.Unlock()
	if d, ok := in.dropped[device]; ok && seq >= d {
		delete(in.dropped, device)
	}
}

// overtaken tells whether a queued report of device with sequence number
// seq was gone ahead of by a report taken early, forgetting that once the
// copy of the last report taken early has come.
func (in *Ingest) overtaken(device string, seq uint64) bool {
	in.earlyMu.Lock()
	defer in.earlyMu.Unlock()
	o, ok := in.overtakenBy[device]
	if !ok || seq <= o.after || seq > o.upTo {
		return false
	}
	if seq == o.upTo {
		delete(in.overtakenBy, device)
	}
	return true
}

// tookEarly remembers that device's report seq was taken early when the
// last one handled was after.
func (in *Ingest) tookEarly(device string, after, seq uint64) {
	in.earlyMu.Lock()
	defer in.earlyMu.Unlock()
	o, ok := in.overtakenBy[device]
	if !ok {
		if len(in.overtakenBy) >= maxEarly {
			for d := range in.overtakenBy { // forget any one: its copies may show as replays
				delete(in.overtakenBy, d)
				break
			}
		}
		o.after = after
	}
	o.upTo = seq
	in.overtakenBy[device] = o
}

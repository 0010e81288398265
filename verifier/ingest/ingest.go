// Package ingest turns what the verifier hears — signed agent reports,
// network records, operators' actions — into observations, runs them
// through the engine, and commits each outcome atomically with its history
// entry and its outbox entries (enforcement and alerts).
//
// Reports are refused, counted and logged, never acted on, when they are
// malformed, come from an unknown device, are published on another
// device's topic, carry a bad signature, or repeat a sequence number.
package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/engine"
	"github.com/cardbind/cardbind/verifier/sigcheck"
)

// Store is what ingest needs of the verifier's store.
type Store interface {
	Card(ctx context.Context, iccid protocol.ICCID) (*verifier.Card, error)
	Device(ctx context.Context, id string) (*verifier.Device, error)
	Commit(ctx context.Context, c *verifier.Commit) error
	CommitLazy(ctx context.Context, c *verifier.Commit) error
	Sync(ctx context.Context) error
}

// Locator places a serving cell on the map: nil and no error when the cell
// is not known. *geo.Table satisfies it.
type Locator interface {
	Locate(ctx context.Context, c *protocol.Cell) (*protocol.Location, error)
}

// Stats counts reports and observations by outcome. A report taken early
// (HandleEarly) and refused is not counted: its queued copy is, when it
// comes. Overtaken counts queued reports that a report taken early went
// ahead of: its own copy, and the device's reports sent before it but
// not yet handled then.
type Stats struct {
	Accepted, Malformed, UnknownDevice, TopicMismatch atomic.Uint64
	Forged, Replayed, CrossTenant, UnknownCard        atomic.Uint64
	Flagged, Overtaken                                atomic.Uint64
}

// maxAttempts bounds retries of a commit that lost a race.
const maxAttempts = 8

// Ingest applies observations to cards. It is safe for concurrent use, but
// reports of one device must be handled one at a time, in order (the
// sequence check refuses an older report that arrives after a newer one).
type Ingest struct {
	store Store
	log   *slog.Logger
	now   func() time.Time
	stats Stats
	hooks Hooks
	geo   Locator
	sigs  *sigcheck.Verifier // device keys, expanded once
	queue Backlog            // nil: reports taken early may overtake queued ones

	earlyMu     sync.Mutex
	overtakenBy map[string]overtakenSeqs // by device, until the queued copy of its last report taken early comes
	dropped     map[string]uint64        // device → its latest report dropped from the early lane, until its queued copy is handled
}

// Hooks are told what ingest did. Set them with SetHooks before the first
// report; they must be quick and safe for concurrent use.
type Hooks struct {
	// Outbox is called after a commit that added outbox entries, so that
	// dispatchers can start at once.
	Outbox func()
	// Decision is called for every decision made.
	Decision func(d protocol.Decision)
}

// SetHooks installs hooks. Call it before handling anything.
func (in *Ingest) SetHooks(h Hooks) { in.hooks = h }

// SetLocator makes observations that name a serving cell but carry no
// position get the cell's position from l. Call it before handling
// anything; without it such observations have no location.
func (in *Ingest) SetLocator(l Locator) { in.geo = l }

// New returns an Ingest over store. now is the clock (time.Now in
// production).
func New(store Store, log *slog.Logger, now func() time.Time) *Ingest {
	return &Ingest{store: store, log: log, now: now, sigs: sigcheck.New(0), overtakenBy: make(map[string]overtakenSeqs), dropped: make(map[string]uint64)}
}

// Stats returns the live counters.
func (in *Ingest) Stats() *Stats { return &in.stats }

// HandleReport processes one report published on deviceID's report topic.
// It returns nil when the report was applied or refused for good (and
// counted); an error means a transient failure (the store), and the caller
// must not acknowledge the message, so that it is delivered again.
func (in *Ingest) HandleReport(ctx context.Context, topicDevice string, payload []byte) error {
	return in.refusedIsDone(topicDevice, in.handleReport(ctx, topicDevice, payload))
}

// refusedIsDone logs a refused report and returns nil for it: it is done
// with.
func (in *Ingest) refusedIsDone(topicDevice string, err error) error {
	switch {
	case errors.Is(err, errOvertaken):
		in.log.Debug("report already taken early", "device", topicDevice, "err", err)
		return nil
	case errors.Is(err, verifier.ErrRefused):
		in.log.Warn("report refused", "device", topicDevice, "err", err)
		return nil
	}
	return err
}

func (in *Ingest) handleReport(ctx context.Context, topicDevice string, payload []byte) error {
	r, err := protocol.DecodeReport(payload)
	return in.handleDecoded(ctx, topicDevice, Checked{report: r, decodeErr: err}, false)
}

// Checked is a report decoded and its signature checked ahead of its turn
// by CheckBatch, for HandleChecked.
type Checked struct {
	report    *protocol.Report
	decodeErr error
	key       []byte // the device key the signature verified against; nil: not verified
}

// CheckBatch decodes reports and checks their signatures in one batch
// (sigcheck.VerifyBatch), ahead of handling them one device at a time with
// HandleChecked. devices[i] is the device whose topic payloads[i] came on.
// It changes nothing and refuses nothing: a report it could not decode,
// whose device it could not read, or whose signature did not verify is
// handled by HandleChecked as HandleReport would, and a device key that
// changed in between (re-enrolment) is checked again there.
func (in *Ingest) CheckBatch(ctx context.Context, devices []string, payloads [][]byte) []Checked {
	out := make([]Checked, len(payloads))
	items := make([]sigcheck.Item, 0, len(payloads))
	at := make([]int, 0, len(payloads))
	for i, p := range payloads {
		r, err := protocol.DecodeReport(p)
		out[i] = Checked{report: r, decodeErr: err}
		if err != nil || r.DeviceID != devices[i] || len(r.Sig) != protocol.SignatureSize {
			continue
		}
		dev, err := in.store.Device(ctx, r.DeviceID)
		if err != nil {
			continue
		}
		items = append(items, sigcheck.Item{Pub: dev.PublicKey, Msg: protocol.CanonicalReport(r), Sig: r.Sig})
		at = append(at, i)
	}
	for j, ok := range in.sigs.VerifyBatch(items) {
		if ok {
			out[at[j]].key = items[j].Pub
		}
	}
	return out
}

// HandleChecked is HandleReport for a report that went through
// CheckBatch; it skips the signature check when the device's key is still
// the one the batch verified. Unlike HandleReport, it does not wait for
// the disk when the report changes nothing anyone is told of (a heartbeat
// from where the card belongs: no history entry, no outbox entry); see
// Store.CommitLazy. Call Sync before acknowledging the reports it handled,
// refused ones too: a refusal may rest on a write not yet durable.
func (in *Ingest) HandleChecked(ctx context.Context, topicDevice string, c Checked) error {
	return in.refusedIsDone(topicDevice, in.handleDecoded(ctx, topicDevice, c, true))
}

// Sync makes the effects of every report handled so far durable
// (Store.Sync): after it, reports handled by HandleChecked may be
// acknowledged.
func (in *Ingest) Sync(ctx context.Context) error {
	if err := in.store.Sync(ctx); err != nil {
		return fmt.Errorf("ingest: sync: %w", err)
	}
	return nil
}

// handleDecoded applies a decoded report; lazy lets its quiet commits
// return before they are durable (see commit).
func (in *Ingest) handleDecoded(ctx context.Context, topicDevice string, c Checked, lazy bool) error {
	if c.decodeErr != nil {
		in.stats.Malformed.Add(1)
		return fmt.Errorf("%w: %w", verifier.ErrRefused, c.decodeErr)
	}
	r := c.report
	if r.DeviceID != topicDevice {
		in.stats.TopicMismatch.Add(1)
		return fmt.Errorf("%w: report of %s published on %s's topic", verifier.ErrRefused, r.DeviceID, topicDevice)
	}
	for attempt := 1; ; attempt++ {
		err := in.applyReport(ctx, r, c.key, queued, lazy)
		if !errors.Is(err, verifier.ErrConflict) || attempt == maxAttempts {
			if err == nil || errors.Is(err, verifier.ErrRefused) {
				in.handledQueued(r.DeviceID, r.Seq)
			}
			return err
		}
	}
}

// applyReport checks the report against its device and applies what it
// says. verifiedKey, when it is still the device's key, is one the
// report's signature was already verified against; ln is how it came.
// Every commit but the last carries no device update; the last one
// records the sequence number, so a crash in between repeats only
// observations whose effect is already in place. lazy is commit's.
func (in *Ingest) applyReport(ctx context.Context, r *protocol.Report, verifiedKey []byte, ln lane, lazy bool) error {
	count := func(c *atomic.Uint64) {
		if ln == queued {
			c.Add(1)
		}
	}
	dev, err := in.store.Device(ctx, r.DeviceID)
	if errors.Is(err, verifier.ErrNotFound) {
		count(&in.stats.UnknownDevice)
		return fmt.Errorf("%w: device %s is not enrolled", verifier.ErrRefused, r.DeviceID)
	}
	if err != nil {
		return fmt.Errorf("ingest: read device %s: %w", r.DeviceID, err)
	}
	if verifiedKey == nil || !bytes.Equal(verifiedKey, dev.PublicKey) {
		if err := in.sigs.VerifyReport(dev.PublicKey, r); err != nil {
			count(&in.stats.Forged)
			return fmt.Errorf("%w: %w", verifier.ErrRefused, err)
		}
	}
	if err := protocol.CheckSequence(dev.LastSeq, r.Seq); err != nil {
		if ln == queued && in.overtaken(r.DeviceID, r.Seq) {
			in.stats.Overtaken.Add(1)
			return fmt.Errorf("%w: device %s seq %d: %w", verifier.ErrRefused, r.DeviceID, r.Seq, errOvertaken)
		}
		count(&in.stats.Replayed)
		return fmt.Errorf("%w: device %s: %w", verifier.ErrRefused, r.DeviceID, err)
	}

	newDev := *dev
	newDev.LastSeq = r.Seq
	newDev.LastIMEI = r.IMEI
	switch r.SIM {
	case protocol.SIMAbsent:
		newDev.LastICCID = ""
	case protocol.SIMPresent, protocol.SIMPINRequired:
		if r.ICCID != "" {
			newDev.LastICCID = r.ICCID
		}
	}

	var steps []verifier.Observation
	if sep, ok := in.separation(ctx, dev, r); ok {
		steps = append(steps, sep)
	}
	if r.ICCID != "" && r.SIM != protocol.SIMAbsent {
		steps = append(steps, verifier.Observation{
			Kind: verifier.ObservedIn, ICCID: r.ICCID, IMEI: r.IMEI, Source: protocol.SourceAgent,
			Time: r.Time, DeviceID: r.DeviceID, Location: r.Location, Cell: r.Registration.Cell,
			Ref: reportRef(r),
		})
	}
	flag := dev.IMEI != "" && r.IMEI != dev.IMEI && r.IMEI != dev.LastIMEI

	for i, obs := range steps {
		var d *verifier.Device
		if i == len(steps)-1 {
			d = &newDev
		}
		var extra []protocol.AlertType
		if flag && obs.Kind == verifier.ObservedIn {
			extra = append(extra, protocol.AlertDeviceFlagged)
		}
		if err := in.apply(ctx, obs, dev.Tenant, d, extra, lazy); err != nil {
			return err
		}
	}
	if len(steps) == 0 {
		if err := in.commit(ctx, &verifier.Commit{Device: &newDev}, lazy); err != nil {
			return fmt.Errorf("ingest: record report of %s: %w", r.DeviceID, err)
		}
	}
	if flag {
		in.stats.Flagged.Add(1)
		in.log.Warn("device reports an IMEI other than the one it enrolled with",
			"device", r.DeviceID, "enrolled_imei", dev.IMEI, "reported_imei", r.IMEI)
	}
	if ln == early {
		in.tookEarly(r.DeviceID, dev.LastSeq, r.Seq)
	}
	in.stats.Accepted.Add(1)
	return nil
}

// reportRef names a report in its observations: "device/seq".
func reportRef(r *protocol.Report) string {
	return r.DeviceID + "/" + strconv.FormatUint(r.Seq, 10)
}

// separation returns the observation that the card the device last held
// has left it, when the report shows the slot empty or another card, and
// that card is bound to this device.
func (in *Ingest) separation(ctx context.Context, dev *verifier.Device, r *protocol.Report) (verifier.Observation, bool) {
	prev := dev.LastICCID
	if prev == "" || r.SIM == protocol.SIMNotReady || (r.SIM != protocol.SIMAbsent && (r.ICCID == "" || r.ICCID == prev)) {
		return verifier.Observation{}, false
	}
	card, err := in.store.Card(ctx, prev)
	if err != nil || card.Binding == nil || card.Tenant != dev.Tenant {
		return verifier.Observation{}, false
	}
	imei := dev.LastIMEI
	if imei == "" {
		imei = r.IMEI
	}
	if !card.Binding.Allows(imei) {
		return verifier.Observation{}, false
	}
	return verifier.Observation{
		Kind: verifier.ObservedSeparated, ICCID: prev, IMEI: imei, Source: protocol.SourceAgent,
		Time: r.Time, DeviceID: r.DeviceID, Ref: reportRef(r),
	}, true
}

// Observe applies one observation from the network or an operator, with
// retries when the card changed under it. tenant, when not empty, limits
// the observation to that tenant's cards.
func (in *Ingest) Observe(ctx context.Context, obs verifier.Observation, tenant string) (engine.Outcome, error) {
	return in.observeRetrying(ctx, obs, tenant, false)
}

// ObserveLazy is Observe that does not wait for the disk when the
// outcome is quiet (nothing enforced, no alert, no history entry; see
// Store.CommitLazy). Call Sync before acknowledging the observation to
// its source.
func (in *Ingest) ObserveLazy(ctx context.Context, obs verifier.Observation, tenant string) (engine.Outcome, error) {
	return in.observeRetrying(ctx, obs, tenant, true)
}

func (in *Ingest) observeRetrying(ctx context.Context, obs verifier.Observation, tenant string, lazy bool) (engine.Outcome, error) {
	var out engine.Outcome
	for attempt := 1; ; attempt++ {
		var err error
		out, err = in.observe(ctx, obs, tenant, nil, nil, lazy)
		if !errors.Is(err, verifier.ErrConflict) || attempt == maxAttempts {
			return out, err
		}
	}
}

func (in *Ingest) apply(ctx context.Context, obs verifier.Observation, tenant string, dev *verifier.Device, extra []protocol.AlertType, lazy bool) error {
	_, err := in.observe(ctx, obs, tenant, dev, extra, lazy)
	if errors.Is(err, verifier.ErrRefused) {
		// The observation is refused but the report itself is genuine:
		// still record its sequence number.
		if dev != nil {
			if cerr := in.commit(ctx, &verifier.Commit{Device: dev}, lazy); cerr != nil {
				return fmt.Errorf("ingest: record report of %s: %w", dev.ID, cerr)
			}
		}
		in.log.Info("observation not applied", "iccid", obs.ICCID, "source", obs.Source, "err", err)
		return nil
	}
	return err
}

func (in *Ingest) observe(ctx context.Context, obs verifier.Observation, tenant string, dev *verifier.Device, extra []protocol.AlertType, lazy bool) (engine.Outcome, error) {
	card, err := in.store.Card(ctx, obs.ICCID)
	switch {
	case errors.Is(err, verifier.ErrNotFound):
		in.stats.UnknownCard.Add(1)
		return engine.Decide(nil, obs, in.now()), fmt.Errorf("%w: card %s is not in the inventory", verifier.ErrRefused, obs.ICCID)
	case err != nil:
		return engine.Outcome{}, fmt.Errorf("ingest: read card %s: %w", obs.ICCID, err)
	case tenant != "" && card.Tenant != tenant:
		in.stats.CrossTenant.Add(1)
		return engine.Outcome{}, fmt.Errorf("%w: card %s belongs to another tenant", verifier.ErrRefused, obs.ICCID)
	}
	if obs.Location == nil && obs.Cell != nil && in.geo != nil {
		loc, err := in.geo.Locate(ctx, obs.Cell)
		if err != nil {
			return engine.Outcome{}, fmt.Errorf("ingest: locate the serving cell of card %s: %w", obs.ICCID, err)
		}
		obs.Location = loc
	}
	now := in.now()
	out := engine.Decide(card, obs, now)
	if len(extra) > 0 {
		out.Alerts = append(out.Alerts, extra...)
		out.Changed = true
	}
	commit, err := in.plan(card, out, obs, now)
	if err != nil {
		return out, err
	}
	commit.Device = dev
	if err := in.commit(ctx, commit, lazy); err != nil {
		return out, fmt.Errorf("ingest: commit card %s: %w", obs.ICCID, err)
	}
	in.committed(commit, out.Decision)
	if out.Changed {
		in.log.Info("card decision", "iccid", obs.ICCID, "decision", out.Decision, "from", out.From,
			"to", out.Card.Status.State, "enforce", out.Enforce, "source", obs.Source, "imei", obs.IMEI)
	}
	return out, nil
}

// ExpireGrace blocks the given card if its grace period has run out.
func (in *Ingest) ExpireGrace(ctx context.Context, iccid protocol.ICCID) error {
	for attempt := 1; ; attempt++ {
		card, err := in.store.Card(ctx, iccid)
		if err != nil {
			return fmt.Errorf("ingest: read card %s: %w", iccid, err)
		}
		now := in.now()
		out := engine.Expire(card, now)
		if !out.Changed {
			return nil
		}
		obs := verifier.Observation{Kind: verifier.ObservedIn, ICCID: iccid, IMEI: card.Status.OffendingIMEI,
			Source: card.Status.LastSource, Time: now, Ref: "grace-expired"}
		commit, err := in.plan(card, out, obs, now)
		if err != nil {
			return err
		}
		err = in.store.Commit(ctx, commit)
		if err == nil {
			in.committed(commit, out.Decision)
		}
		if !errors.Is(err, verifier.ErrConflict) || attempt == maxAttempts {
			return err
		}
	}
}

// commit writes c. When lazy and c is quiet (no history entry, no outbox
// entry: nothing is enforced or told because of it) it does not wait for
// the disk; the caller makes it durable with Sync before acknowledging
// the report. Anything that is enforced or told is durable first, so a
// crash never leaves an action taken on a decision the store lost.
func (in *Ingest) commit(ctx context.Context, c *verifier.Commit, lazy bool) error {
	if lazy && c.History == nil && len(c.Outbox) == 0 {
		return in.store.CommitLazy(ctx, c)
	}
	return in.store.Commit(ctx, c)
}

func (in *Ingest) committed(c *verifier.Commit, d protocol.Decision) {
	if in.hooks.Decision != nil && d != "" {
		in.hooks.Decision(d)
	}
	if in.hooks.Outbox != nil && len(c.Outbox) > 0 {
		in.hooks.Outbox()
	}
}

// plan turns an outcome into the atomic write: the card, and when
// something changed, the history entry and the outbox entries whose ids are
// derived from the card and its history sequence (stable across retries
// and redeliveries). The entries' Created times are a nanosecond apart, in
// the order the engine gave them, so that the outbox (oldest first) hands
// them out in that order.
func (in *Ingest) plan(before *verifier.Card, out engine.Outcome, obs verifier.Observation, now time.Time) (*verifier.Commit, error) {
	c := out.Card
	commit := &verifier.Commit{Card: c}
	if !out.Changed {
		return commit, nil
	}
	c.Status.Seq = before.Status.Seq + 1
	seq := c.Status.Seq
	commit.History = &verifier.HistoryEntry{
		ICCID: c.ICCID, Seq: seq, Time: now, Decision: out.Decision, From: out.From, To: c.Status.State,
		Observed: obs, Enforce: out.Enforce, Alerts: out.Alerts, Detail: out.Detail,
	}
	if out.Enforce != verifier.EnforceNone {
		task := verifier.EnforceTask{ICCID: c.ICCID, IMSI: c.IMSI, MSISDN: c.MSISDN, Tenant: c.Tenant,
			Action: out.Enforce, Reason: out.Decision}
		payload, err := json.Marshal(task)
		if err != nil {
			return nil, fmt.Errorf("ingest: encode enforcement: %w", err)
		}
		commit.Outbox = append(commit.Outbox, verifier.OutboxEntry{
			ID: fmt.Sprintf("%s-%d-%s", c.ICCID, seq, out.Enforce), Kind: verifier.OutboxEnforce, Created: now, Payload: payload})
	}
	for i, t := range out.Alerts {
		a := protocol.Alert{Version: protocol.Version, ID: fmt.Sprintf("%s-%d-%s", c.ICCID, seq, t), Type: t,
			Tenant: c.Tenant, ICCID: c.ICCID, ObservedIMEI: obs.IMEI, Source: obs.Source, Decision: out.Decision,
			CardState: c.Status.State, Time: now, DeviceID: obs.DeviceID, Detail: out.Detail}
		if c.Binding != nil {
			a.BoundIMEIs = c.Binding.IMEIs
			a.BoundTAC = c.Binding.TAC
		}
		payload, err := protocol.EncodeAlert(&a)
		if err != nil {
			return nil, fmt.Errorf("ingest: encode alert: %w", err)
		}
		commit.Outbox = append(commit.Outbox, verifier.OutboxEntry{ID: a.ID, Kind: verifier.OutboxAlert,
			Created: now.Add(time.Duration(i)), Payload: payload})
	}
	return commit, nil
}

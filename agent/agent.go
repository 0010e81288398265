// Package agent is the cardbind agent's core: it watches the modem, turns
// what it reads into signed reports — at start, on every change within a
// second of the modem saying so, and as a heartbeat — queues them in the
// on-disk outbox for the MQTT link, and carries out the verifier's signed
// commands.
package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/cardbind/cardbind/agent/identity"
	"github.com/cardbind/cardbind/agent/outbox"
	"github.com/cardbind/cardbind/protocol"
)

// Modem is where the agent reads identity from: AT commands on a serial
// port, or ModemManager.
type Modem interface {
	// Identify reads the modem's and the SIM's identity.
	Identify(ctx context.Context) (identity.Identity, error)
	// Events receives a value whenever the modem signals that the
	// identity may have changed (a SIM URC, the port reopened).
	Events() <-chan struct{}
	// SetRadio takes the radio down (+CFUN=4) or brings it up.
	SetRadio(ctx context.Context, on bool) error
}

// Sequencer hands out report sequence numbers that grow across restarts.
type Sequencer interface {
	Next() (uint64, error)
}

// Config is the agent core's configuration.
type Config struct {
	DeviceID string
	Key      ed25519.PrivateKey
	// CommandKey verifies the verifier's commands.
	CommandKey ed25519.PublicKey
	// Heartbeat is how often an unchanged identity is reported (default 5m).
	Heartbeat time.Duration
	// Poll is how often the modem is read even without events, for modems
	// that send no hot-swap URCs (default 30s).
	Poll time.Duration
	// AllowRadio lets the verifier take the radio down and up.
	AllowRadio bool
	// CellChangeInterval is the least time between two reports sent
	// because the serving cell changed (with nothing else changed); a
	// change within it goes out when it has passed. 0 sends no report
	// for a cell change (the cell still rides in every other report).
	// SIM and IMEI changes are never held back. A GNSS fix that moved
	// more than MoveThreshold (or a fix after none) counts as a cell
	// change.
	CellChangeInterval time.Duration
}

// Agent is the agent core.
type Agent struct {
	cfg   Config
	modem Modem
	seq   Sequencer
	box   *outbox.Outbox
	kick  func()
	log   *slog.Logger
	now   func() time.Time

	commands chan *protocol.Command
	settings chan Settings
	mu       sync.Mutex
	acks     []string // command ids done, for the next report
	radioOff bool     // the verifier asked for the radio to stay down
	inFlight map[uint64]reportMeta
}

// maxInFlight bounds the reports remembered until their PUBACK.
const maxInFlight = 1024

type reportMeta struct {
	acks    []string
	dropped uint64
}

// New returns an agent. kick tells the MQTT link the outbox has news.
func New(cfg Config, modem Modem, seq Sequencer, box *outbox.Outbox, kick func(), log *slog.Logger, now func() time.Time) *Agent {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 5 * time.Minute
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 30 * time.Second
	}
	return &Agent{cfg: cfg, modem: modem, seq: seq, box: box, kick: kick, log: log, now: now,
		commands: make(chan *protocol.Command, 8), settings: make(chan Settings, 1), inFlight: map[uint64]reportMeta{}}
}

// Settings are the parts of Config that Reconfigure changes while the
// agent runs (on SIGHUP).
type Settings struct {
	Heartbeat  time.Duration
	Poll       time.Duration
	AllowRadio bool
	// CellChangeInterval is always applied: 0 turns cell change reports
	// off.
	CellChangeInterval time.Duration
}

// Reconfigure applies new settings to the running agent; Heartbeat and
// Poll of 0 keep the current ones. The latest call wins.
func (a *Agent) Reconfigure(s Settings) {
	a.mu.Lock()
	a.cfg.AllowRadio = s.AllowRadio
	a.mu.Unlock()
	for {
		select {
		case a.settings <- s:
			return
		default:
		}
		select {
		case <-a.settings: // replace a pending older one
		default:
		}
	}
}

// Run watches the modem and reports until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	var last *fingerprint
	reason := protocol.ReasonStart
	heartbeat := time.NewTicker(a.cfg.Heartbeat)
	defer heartbeat.Stop()
	poll := time.NewTicker(a.cfg.Poll)
	defer poll.Stop()
	retry := time.NewTimer(0)
	defer retry.Stop()
	cells := &cellThrottle{}
	held := time.NewTimer(time.Hour) // fires when a held-back cell change may go out
	held.Stop()                      // armed only while a change is held back
	defer held.Stop()

	// read reads the modem and reports when something changed, when
	// forced, or when nothing was reported yet. It returns false when the
	// modem could not be read.
	read := func(force bool) bool {
		id, err := a.modem.Identify(ctx)
		if err != nil {
			a.log.Warn("cannot read the modem", "err", err)
			return false
		}
		r, fp, err := a.build(id)
		if err != nil {
			a.log.Error("modem identity cannot be reported", "err", err)
			return false
		}
		if !a.radioWanted() && r.Registration.Stat != 0 {
			// A modem reboot brings the radio back up; the verifier's
			// instruction stays until it says otherwise.
			if rerr := a.modem.SetRadio(ctx, false); rerr != nil {
				a.log.Warn("keep radio down", "err", rerr)
			}
		}
		changed := last == nil || *fp != *last
		switch {
		case last == nil:
		case changed:
			reason = protocol.ReasonChange
			a.log.Info("identity changed", "from", last.String(), "to", fp.String())
		case force:
		case cells.moved(r.Registration.Cell) || cells.relocated(r.Location):
			wait, ok := cells.due(a.now(), a.cfg.CellChangeInterval)
			if !ok {
				if wait > 0 && !cells.holding {
					cells.holding = true
					held.Reset(wait)
					a.log.Debug("serving cell or position changed; report held back", "cell", cellString(r.Registration.Cell),
						"position", locationString(r.Location), "for", wait)
				}
				return true
			}
			reason = protocol.ReasonChange
			a.log.Info("serving cell or position changed", "from", cellString(cells.last), "to", cellString(r.Registration.Cell),
				"position_from", locationString(cells.lastLoc), "position_to", locationString(r.Location))
			cells.sent = a.now()
		default:
			return true
		}
		r.Reason = reason
		if err := a.enqueue(r, reason == protocol.ReasonHeartbeat); err != nil {
			a.log.Error("queue report", "err", err)
			return false
		}
		last = fp
		cells.reported(r.Registration.Cell, r.Location)
		return true
	}

	failures := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-retry.C:
			if last == nil && !read(true) {
				failures++
				retry.Reset(min(time.Duration(failures)*time.Second, 30*time.Second))
			}
		case <-a.modem.Events():
			reason = protocol.ReasonChange
			read(false)
		case <-poll.C:
			reason = protocol.ReasonChange
			read(false)
		case <-heartbeat.C:
			reason = protocol.ReasonHeartbeat
			read(true)
		case <-held.C:
			cells.holding = false
			reason = protocol.ReasonChange
			read(false)
		case s := <-a.settings:
			if s.Heartbeat > 0 && s.Heartbeat != a.cfg.Heartbeat {
				a.cfg.Heartbeat = s.Heartbeat
				heartbeat.Reset(s.Heartbeat)
			}
			if s.Poll > 0 && s.Poll != a.cfg.Poll {
				a.cfg.Poll = s.Poll
				poll.Reset(s.Poll)
			}
			a.cfg.CellChangeInterval = s.CellChangeInterval
			a.log.Info("settings applied", "heartbeat", a.cfg.Heartbeat, "poll", a.cfg.Poll, "allow_radio", s.AllowRadio,
				"cell_change_interval", a.cfg.CellChangeInterval)
		case cmd := <-a.commands:
			if a.execute(ctx, cmd) {
				reason = protocol.ReasonRequested
				read(true)
			}
		}
	}
}

// HandleCommand receives a payload from the command topic. Commands that
// do not decode, do not verify against the verifier's key, are for
// another device, or have expired are dropped and logged.
func (a *Agent) HandleCommand(payload []byte) {
	c, err := protocol.DecodeCommand(payload)
	if err != nil {
		a.log.Warn("command refused", "err", err)
		return
	}
	if err := protocol.VerifyCommand(a.cfg.CommandKey, c); err != nil {
		a.log.Warn("command refused", "id", c.ID, "err", err)
		return
	}
	if c.DeviceID != a.cfg.DeviceID {
		a.log.Warn("command for another device refused", "id", c.ID, "device", c.DeviceID)
		return
	}
	if a.now().After(c.Expires) {
		a.log.Warn("expired command ignored", "id", c.ID, "expired", c.Expires)
		return
	}
	select {
	case a.commands <- c:
	default:
		a.log.Warn("command queue full; command dropped", "id", c.ID)
	}
}

// execute carries out a command and reports whether a report should follow.
func (a *Agent) execute(ctx context.Context, c *protocol.Command) bool {
	switch c.Kind {
	case protocol.CommandRadioOff, protocol.CommandRadioOn:
		a.mu.Lock()
		allowed := a.cfg.AllowRadio
		a.mu.Unlock()
		if !allowed {
			a.log.Warn("radio command refused: not allowed by configuration", "id", c.ID, "kind", c.Kind)
			return false
		}
		on := c.Kind == protocol.CommandRadioOn
		if err := a.modem.SetRadio(ctx, on); err != nil {
			a.log.Error("radio command failed", "id", c.ID, "err", err)
			return false
		}
		a.mu.Lock()
		a.radioOff = !on
		a.mu.Unlock()
	}
	a.mu.Lock()
	a.acks = append(a.acks, c.ID)
	a.mu.Unlock()
	a.log.Info("command done", "id", c.ID, "kind", c.Kind)
	return true
}

func (a *Agent) radioWanted() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.radioOff
}

// Acked is told by the MQTT link that a report reached the broker: its
// command acks and dropped count are then delivered.
func (a *Agent) Acked(e outbox.Entry) {
	a.mu.Lock()
	m, ok := a.inFlight[e.Seq]
	delete(a.inFlight, e.Seq)
	a.mu.Unlock()
	if ok && m.dropped > 0 {
		if err := a.box.ResetDropped(m.dropped); err != nil {
			a.log.Warn("reset dropped count", "err", err)
		}
	}
}

// enqueue signs the report with the next sequence number and queues it.
func (a *Agent) enqueue(r *protocol.Report, heartbeat bool) error {
	seq, err := a.seq.Next()
	if err != nil {
		return err
	}
	a.mu.Lock()
	acks := slices.Clone(a.acks)
	a.acks = a.acks[:0]
	a.mu.Unlock()
	r.Seq = seq
	r.Acks = acks
	r.Dropped = a.box.Dropped()
	protocol.SignReport(a.cfg.Key, r)
	data, err := protocol.EncodeReport(r)
	if err != nil {
		return err
	}
	kind := outbox.Change
	if heartbeat {
		kind = outbox.Heartbeat
	}
	if err := a.box.Add(outbox.Entry{Seq: seq, Kind: kind, Payload: data}); err != nil {
		// Keep the acks for the next report.
		a.mu.Lock()
		a.acks = append(acks, a.acks...)
		a.mu.Unlock()
		return err
	}
	a.mu.Lock()
	a.inFlight[seq] = reportMeta{acks: acks, dropped: r.Dropped}
	if len(a.inFlight) > maxInFlight {
		// Reports the outbox dropped are never acked: forget the oldest.
		keys := slices.Sorted(maps.Keys(a.inFlight))
		for _, k := range keys[:len(keys)-maxInFlight] {
			delete(a.inFlight, k)
		}
	}
	a.mu.Unlock()
	a.log.Info("report queued", "seq", seq, "reason", r.Reason, "sim", r.SIM, "iccid", r.ICCID, "imei", r.IMEI)
	a.kick()
	return nil
}

// fingerprint is what makes a report a change report when it differs.
type fingerprint struct {
	imei   protocol.IMEI
	sim    protocol.SIMState
	iccid  protocol.ICCID
	imsi   protocol.IMSI
	denied bool
}

func (f fingerprint) String() string {
	return fmt.Sprintf("imei=%s sim=%s iccid=%s imsi=%s denied=%v", f.imei, f.sim, f.iccid, f.imsi, f.denied)
}

// errNoIMEI: without an IMEI there is nothing to report.
var errNoIMEI = errors.New("the modem gave no valid IMEI")

// build turns an identity into an unsigned report.
func (a *Agent) build(id identity.Identity) (*protocol.Report, *fingerprint, error) {
	imei, err := protocol.ParseIMEI(id.IMEI)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errNoIMEI, err)
	}
	r := &protocol.Report{Version: protocol.Version, DeviceID: a.cfg.DeviceID, Time: a.now().UTC(), IMEI: imei}
	r.SIM = simState(id.SIM.State)
	if r.SIM != protocol.SIMAbsent {
		if c, err := protocol.ParseICCID(id.ICCID); err == nil {
			r.ICCID = c
		}
		if i, err := protocol.ParseIMSI(id.IMSI); err == nil {
			r.IMSI = i
		}
	}
	if r.SIM == protocol.SIMPresent && r.ICCID == "" {
		// A ready SIM whose ICCID could not be read: not settled yet.
		r.SIM = protocol.SIMNotReady
	}
	r.Registration = registration(id.Registration, id.PLMN)
	if id.Signal != nil && id.Signal.DBm < 0 {
		r.Signal = &protocol.Signal{RSSIdBm: id.Signal.DBm}
	}
	r.Location = gnssLocation(id.GNSS)
	fp := &fingerprint{imei: r.IMEI, sim: r.SIM, iccid: r.ICCID, imsi: r.IMSI, denied: r.Registration.State == protocol.RegDenied}
	return r, fp, nil
}

func simState(s identity.SIMState) protocol.SIMState {
	switch s {
	case identity.SIMReady:
		return protocol.SIMPresent
	case identity.SIMLocked:
		return protocol.SIMPINRequired
	case identity.SIMAbsent:
		return protocol.SIMAbsent
	}
	return protocol.SIMNotReady
}

// registration turns the modem's registration into the report's; the
// serving network's MCC and MNC go into the cell when both are known.
func registration(g *identity.Registration, plmn *identity.PLMN) protocol.Registration {
	if g == nil {
		return protocol.Registration{State: protocol.RegUnknown, Stat: -1}
	}
	out := protocol.Registration{State: protocol.RegStateFromStat(int(g.Stat)), Stat: int(g.Stat), Tech: tech(g.AcT)}
	if out.Stat < -1 || out.Stat > 11 {
		out.Stat, out.State = -1, protocol.RegUnknown
	}
	var area uint32
	var cell uint64
	if _, err := fmt.Sscanf(g.Area, "%x", &area); err == nil {
		if _, err := fmt.Sscanf(g.Cell, "%x", &cell); err == nil {
			out.Cell = &protocol.Cell{Area: area, ID: cell}
			if plmn != nil {
				out.Cell.MCC, out.Cell.MNC = plmn.MCC, plmn.MNC
			}
		}
	}
	return out
}

// tech maps a 27.007 <AcT> to the report's technology name.
func tech(act int) string {
	switch act {
	case 0, 1, 3, 8:
		return "gsm"
	case 2, 4, 5, 6:
		return "utran"
	case 7, 10:
		return "eutran"
	case 9:
		return "nbiot"
	case 11, 12, 13:
		return "nr"
	}
	return ""
}

// UERE is the user equivalent range error assumed for the modems' GNSS
// receivers: single-frequency L1 receivers under open sky see about 5 m.
// A fix's accuracy is its HDOP times this (about the 1-sigma horizontal
// error; HDOP 1.1 gives 5.5 m).
const UERE = 5.0

// gnssLocation turns a GNSS fix into the report's location; a fix without
// HDOP (SIMCom's AT+CGPSINFO) gets no accuracy, which the verifier takes
// as 50 m.
func gnssLocation(f *identity.Fix) *protocol.Location {
	if f == nil {
		return nil
	}
	return &protocol.Location{Lat: f.Lat, Lon: f.Lon, AccuracyM: math.Round(f.HDOP*UERE*10) / 10, Source: "gnss"}
}

// MoveThreshold is how far a GNSS fix must move from the one in the last
// report (beyond both fixes' accuracies) for a report of its own, under
// the cell change throttle: far above the wander of a standing receiver,
// well below the radius of an area limit.
const MoveThreshold = 250.0 // metres

// cellThrottle keeps cell change reports (a serving cell, or a GNSS
// position, other than the last reported) to one per
// Config.CellChangeInterval. It is used by Run's goroutine only.
type cellThrottle struct {
	last    *protocol.Cell     // the cell in the last report sent
	lastLoc *protocol.Location // the position in the last report sent (nil: none)
	sent    time.Time          // when the last cell change report was sent
	holding bool               // a timer runs for a held-back change
}

// relocated reports whether l is a fix where the last report had none, or
// one more than MoveThreshold (plus both accuracies) from the last
// reported. Losing the fix is no move: the next report carries the cell.
func (t *cellThrottle) relocated(l *protocol.Location) bool {
	if l == nil {
		return false
	}
	if t.lastLoc == nil {
		return true
	}
	return distanceM(t.lastLoc.Lat, t.lastLoc.Lon, l.Lat, l.Lon) > MoveThreshold+t.lastLoc.AccuracyM+l.AccuracyM
}

// distanceM is the great-circle distance in metres (haversine, mean Earth
// radius).
func distanceM(lat1, lon1, lat2, lon2 float64) float64 {
	const r = 6371008.8
	rad := math.Pi / 180
	dlat, dlon := (lat2-lat1)*rad, (lon2-lon1)*rad
	h := math.Sin(dlat/2)*math.Sin(dlat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dlon/2)*math.Sin(dlon/2)
	return 2 * r * math.Asin(math.Sqrt(min(1, h)))
}

func locationString(l *protocol.Location) string {
	if l == nil {
		return "none"
	}
	return fmt.Sprintf("%.5f,%.5f±%.0fm", l.Lat, l.Lon, l.AccuracyM)
}

// moved reports whether c is a known cell other than the last reported.
func (t *cellThrottle) moved(c *protocol.Cell) bool {
	return c != nil && t.last != nil && *c != *t.last
}

// due reports whether a cell change report may go out at now; when not,
// wait is how long until it may (0: never, reports are off).
func (t *cellThrottle) due(now time.Time, interval time.Duration) (wait time.Duration, ok bool) {
	if interval <= 0 {
		return 0, false
	}
	if t.sent.IsZero() {
		return 0, true
	}
	if next := t.sent.Add(interval); now.Before(next) {
		return next.Sub(now), false
	}
	return 0, true
}

// reported records the cell and position of a report that was queued.
func (t *cellThrottle) reported(c *protocol.Cell, l *protocol.Location) {
	if c != nil {
		cc := *c
		t.last = &cc
	}
	t.lastLoc = nil
	if l != nil {
		ll := *l
		t.lastLoc = &ll
	}
}

func cellString(c *protocol.Cell) string {
	if c == nil {
		return "none"
	}
	return fmt.Sprintf("%s-%s-%X-%X", c.MCC, c.MNC, c.Area, c.ID)
}

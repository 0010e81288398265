// Package atmodem is the agent's modem over AT commands on a serial port:
// an agent.Modem built from an at.Supervisor (which reopens the port with
// backoff when the modem reboots or re-enumerates) and an identity.Reader.
//
// After every (re)open it runs the init commands, asks the modem who made
// it (+CGMI/+CGMM) and turns on that vendor's SIM hot-swap indications and
// the registration URCs (+CREG=2, +CGREG=2, +CEREG=2). SIM indications
// (identity.IsSIMEvent), a registration that becomes or stops being denied,
// a registration URC naming another serving cell (+CEREG: 1,"<tac>","<ci>"
// in mode 2: the module reselected or the gateway moved) and every
// reopening of the port produce an event: the agent then reads the
// identity again at once. Every reopening also makes the next read set the
// numeric operator format again (identity.Reader.ResetOperatorFormat).
//
// With Config.GNSS, modems whose vendor has a GNSS receiver the agent knows
// (identity.Vendor.GNSS: Quectel, SIMCom) get it turned on after every
// (re)open, and every Identify reads the fix into Identity.GNSS. A module
// that does not know the commands is not asked again until the port
// reopens.
package atmodem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cardbind/cardbind/agent/at"
	"github.com/cardbind/cardbind/agent/identity"
)

// DefaultRadioTimeout bounds AT+CFUN=4 and AT+CFUN=1: modules take several
// seconds to switch the radio (ModemManager gives Quectel 15 s).
const DefaultRadioTimeout = 30 * time.Second

// Config configures a Modem. Only Open is required.
type Config struct {
	// Open opens the port (see agent/serialport.Opener).
	Open at.Opener
	// Init runs after every open, before the vendor's URC enables; nil
	// means at.DefaultInit (ATE0, ATV1, AT+CMEE=1).
	Init []string
	// RadioTimeout bounds the +CFUN commands of SetRadio (default
	// DefaultRadioTimeout).
	RadioTimeout time.Duration
	// MinBackoff and MaxBackoff bound the delay between attempts to reopen
	// the port (at.Supervisor's defaults when zero).
	MinBackoff, MaxBackoff time.Duration
	// Options are passed to every at.Engine.
	Options []at.Option
	// GNSS turns the modem's GNSS receiver on after every (re)open and
	// reads the fix with every Identify. Off by default: the receiver
	// costs power (tens of mA on battery devices).
	GNSS bool
	// Logger receives connection and event logs (default: discard).
	Logger *slog.Logger
}

// Modem is an agent.Modem over AT commands. Run drives it; the other
// methods may be called from any goroutine.
type Modem struct {
	cfg    Config
	sup    *at.Supervisor
	reader *identity.Reader
	log    *slog.Logger
	events chan struct{}

	mu      sync.Mutex
	up      chan struct{} // closed while the port is up and initialised
	vendor  identity.Vendor
	regStat map[string]identity.RegStat // last URC stat per kind (CREG, CEREG, ...)
	regCell map[string]string           // last URC location per kind, "<area>/<cell>"
	openErr error                       // the last failure to open the port
	gnss    gnssState                   // the GNSS receiver since the last (re)open
}

// gnssState is what the agent knows of the modem's GNSS receiver since the
// port last opened. Guarded by Modem.mu.
type gnssState struct {
	gen      uint64 // counts the (re)opens
	cmds     identity.GNSSCommands
	active   bool // the vendor has GNSS commands and the module knows them
	enable   bool // send cmds.Enable before the next read
	refusals int  // consecutive "unknown command" answers
}

// gnssMaxRefusals is how many consecutive "unknown command" answers (ERROR,
// +CME ERROR: 3 or 4, COMMAND NOT SUPPORT) stop the GNSS reads until the
// port reopens: two, so that one answer lost to line noise does not.
const gnssMaxRefusals = 2

// New returns a Modem; call Run to open the port.
func New(cfg Config) (*Modem, error) {
	if cfg.Open == nil {
		return nil, errors.New("atmodem: Open is required")
	}
	if cfg.RadioTimeout <= 0 {
		cfg.RadioTimeout = DefaultRadioTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Modem{cfg: cfg, log: log, events: make(chan struct{}, 1), up: make(chan struct{}),
		regStat: map[string]identity.RegStat{}, regCell: map[string]string{}}
	opts := append([]at.Option{at.WithLogger(log), at.WithURCPrefixes(identity.URCPrefixes()...)}, cfg.Options...)
	sup, err := at.NewSupervisor(at.SupervisorConfig{
		Open:       m.open,
		Init:       cfg.Init,
		Options:    opts,
		MinBackoff: cfg.MinBackoff,
		MaxBackoff: cfg.MaxBackoff,
		OnUp:       m.onUp,
		OnDown:     m.onDown,
		Logger:     log,
	})
	if err != nil {
		return nil, fmt.Errorf("atmodem: %w", err)
	}
	sup.Handle("", m.onURC)
	m.sup = sup
	m.reader = identity.NewReader(sup, log)
	return m, nil
}

// Run opens the port and keeps it open, reopening it after failures, until
// ctx ends. It returns ctx's error.
func (m *Modem) Run(ctx context.Context) error { return m.sup.Run(ctx) }

// Identify reads the modem's and the SIM's identity. It fails with an
// error wrapping at.ErrNotConnected while the port is down.
func (m *Modem) Identify(ctx context.Context) (identity.Identity, error) {
	id, err := m.reader.Read(ctx)
	if err != nil {
		return id, fmt.Errorf("atmodem: %w", err)
	}
	if fix, ok := m.readGNSS(ctx); ok {
		id.GNSS = &fix
	}
	return id, nil
}

// readGNSS reads the GNSS fix when GNSS is on and the module has it. It
// turns the receiver on first after a (re)open or when the module said it
// is off (Quectel +CME ERROR: 505). No fix, an error or a timeout give no
// fix and are asked again next time; answers that say the module does not
// know the commands stop the reads until the port reopens.
func (m *Modem) readGNSS(ctx context.Context) (identity.Fix, bool) {
	if !m.cfg.GNSS {
		return identity.Fix{}, false
	}
	m.mu.Lock()
	g := m.gnss
	m.gnss.enable = false
	m.mu.Unlock()
	if !g.active {
		return identity.Fix{}, false
	}
	if g.enable {
		m.enableGNSS(ctx, m.sup, g.cmds)
	}
	resp, err := m.sup.Command(ctx, g.cmds.Read)
	var fix identity.Fix
	if err == nil {
		fix, err = g.cmds.Parse(resp.Lines)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gnss.gen != g.gen {
		return identity.Fix{}, false // the port reopened meanwhile
	}
	switch {
	case err == nil:
		m.gnss.refusals = 0
		m.log.Debug("GNSS fix", "lat", fix.Lat, "lon", fix.Lon, "hdop", fix.HDOP)
		return fix, true
	case gnssUnknown(err):
		m.gnss.refusals++
		if m.gnss.refusals >= gnssMaxRefusals {
			m.gnss.active = false
			m.log.Info("the modem does not know the GNSS commands; not asking again until the port reopens", "cmd", g.cmds.Read, "err", err)
		}
	case gnssOff(err):
		m.gnss.refusals = 0
		m.gnss.enable = true
		m.log.Debug("GNSS is off; turning it on again", "err", err)
	default:
		m.gnss.refusals = 0
		if errors.Is(err, identity.ErrNoFix) || gnssNotFixed(err) {
			m.log.Debug("no GNSS fix")
		} else {
			m.log.Debug("GNSS read failed", "cmd", g.cmds.Read, "err", err)
		}
	}
	return identity.Fix{}, false
}

// enableGNSS turns the receiver on. Already on (Quectel 504, or the plain
// ERROR of a SIMCom) is fine; whether the module knows GNSS at all is
// left to the read's answer.
func (m *Modem) enableGNSS(ctx context.Context, c identity.Commander, cmds identity.GNSSCommands) {
	_, err := c.Command(ctx, cmds.Enable)
	var ce *at.CMEError
	switch {
	case err == nil:
		m.log.Info("GNSS turned on", "cmd", cmds.Enable)
	case errors.As(err, &ce) && ce.Code == identity.CMEGNSSSessionOngoing:
		m.log.Info("GNSS already on", "cmd", cmds.Enable)
	default:
		m.log.Debug("GNSS enable not taken (already on, or no GNSS)", "cmd", cmds.Enable, "err", err)
	}
}

// gnssUnknown reports whether err says the module does not know the
// command: plain ERROR, +CME ERROR: 3 or 4 (operation not allowed / not
// supported), COMMAND NOT SUPPORT.
func gnssUnknown(err error) bool {
	var ce *at.CMEError
	if errors.As(err, &ce) {
		return ce.Code == at.CMEOperationNotAllowed || ce.Code == at.CMEOperationNotSupported
	}
	var re *at.ResultError
	return errors.Is(err, at.ErrError) || errors.As(err, &re)
}

// gnssOff reports whether err is Quectel's "Session not active" (505):
// GNSS is off.
func gnssOff(err error) bool {
	var ce *at.CMEError
	return errors.As(err, &ce) && (ce.Code == identity.CMEGNSSSessionNotActive ||
		ce.Code < 0 && strings.Contains(strings.ToLower(ce.Text), "not active"))
}

// gnssNotFixed reports whether err is Quectel's "Not fixed now" (516).
func gnssNotFixed(err error) bool {
	var ce *at.CMEError
	return errors.As(err, &ce) && (ce.Code == identity.CMEGNSSNotFixed ||
		ce.Code < 0 && strings.Contains(strings.ToLower(ce.Text), "not fixed"))
}

// Events receives a value whenever the identity may have changed: a SIM
// indication, a registration that became or stopped being denied, the port
// reopened. Events that arrive while one is pending are merged into it.
func (m *Modem) Events() <-chan struct{} { return m.events }

// SetRadio takes the radio down (AT+CFUN=4: RF off, the SIM stays
// readable) or brings it up (AT+CFUN=1), with the long radio timeout.
func (m *Modem) SetRadio(ctx context.Context, on bool) error {
	cmd := "AT+CFUN=4"
	if on {
		cmd = "AT+CFUN=1"
	}
	if _, err := m.sup.Command(ctx, cmd, at.CommandTimeout(m.cfg.RadioTimeout)); err != nil {
		return fmt.Errorf("atmodem: radio on=%v: %w", on, err)
	}
	return nil
}

// Up returns a channel that is closed once the port is open and
// initialised; a new one is returned after the port went down.
func (m *Modem) Up() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.up
}

// Vendor returns the vendor found at the last (re)open, or "" before the
// first.
func (m *Modem) Vendor() identity.Vendor {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.vendor
}

// LastOpenError returns why the port last failed to open, or nil.
func (m *Modem) LastOpenError() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.openErr
}

func (m *Modem) open(ctx context.Context) (io.ReadWriteCloser, error) {
	p, err := m.cfg.Open(ctx)
	m.mu.Lock()
	m.openErr = err
	m.mu.Unlock()
	return p, err
}

// onUp asks who made the modem and turns on that vendor's indications.
// Their failure is not fatal: the periodic poll still catches changes.
func (m *Modem) onUp(ctx context.Context, e *at.Engine) {
	var manufacturer, model string
	if r, err := e.Command(ctx, "AT+CGMI"); err == nil {
		manufacturer = identity.CleanInfo(r.Lines)
	}
	if r, err := e.Command(ctx, "AT+CGMM"); err == nil {
		model = identity.CleanInfo(r.Lines)
	}
	vendor := identity.VendorOf(manufacturer, model)
	for _, cmd := range vendor.URCEnables() {
		if _, err := e.Command(ctx, cmd); err != nil {
			m.log.Warn("modem refused an indication enable", "cmd", cmd, "err", err)
		}
	}
	m.reader.ResetOperatorFormat()
	var gnss gnssState
	if cmds, ok := vendor.GNSS(); ok && m.cfg.GNSS {
		m.enableGNSS(ctx, e, cmds)
		gnss = gnssState{cmds: cmds, active: true}
	}
	m.mu.Lock()
	gnss.gen = m.gnss.gen + 1
	m.gnss = gnss
	m.vendor = vendor
	clear(m.regStat)
	clear(m.regCell)
	select {
	case <-m.up:
	default:
		close(m.up)
	}
	m.mu.Unlock()
	m.log.Info("modem ready", "vendor", vendor, "manufacturer", manufacturer, "model", model)
	m.notify("port up")
}

func (m *Modem) onDown(err error) {
	m.mu.Lock()
	select {
	case <-m.up:
		m.up = make(chan struct{})
	default:
	}
	m.mu.Unlock()
	m.log.Warn("modem port lost", "err", err)
}

// onURC runs on the engine's dispatcher for every unsolicited line.
func (m *Modem) onURC(line string) {
	switch identity.ClassifyURC(line) {
	case identity.EventSIM, identity.EventBoot:
		m.notify(line)
	case identity.EventRegistration:
		if m.registrationChanged(line) {
			m.notify(line)
		}
	}
}

// registrationChanged records a registration URC and reports whether it
// turned "registration denied" on or off for its domain, or names a
// serving cell other than the last one of its domain.
func (m *Modem) registrationChanged(line string) bool {
	reg, err := identity.ParseRegistration(line)
	if err != nil {
		m.log.Debug("unparsable registration URC", "line", line, "err", err)
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	prev, seen := m.regStat[reg.Kind]
	m.regStat[reg.Kind] = reg.Stat
	was := seen && prev == identity.RegDenied
	denied := was != (reg.Stat == identity.RegDenied)
	moved := false
	if reg.Area != "" && reg.Cell != "" {
		loc := reg.Area + "/" + reg.Cell
		moved = m.regCell[reg.Kind] != loc
		m.regCell[reg.Kind] = loc
	}
	return denied || moved
}

func (m *Modem) notify(why string) {
	m.log.Debug("modem event", "why", strings.TrimSpace(why))
	select {
	case m.events <- struct{}{}:
	default:
	}
}

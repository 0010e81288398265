package modem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cardbind/cardbind/firmware-sim/network"
)

// Errors returned by the control methods of Modem.
var (
	// ErrSIMPresent means a SIM is already in the slot.
	ErrSIMPresent = errors.New("modem: a SIM is already inserted")
	// ErrNoSIM means the slot is empty.
	ErrNoSIM = errors.New("modem: no SIM inserted")
)

// Config describes a simulated modem.
type Config struct {
	// Personality is "generic", "quectel", "simcom" or "ublox"; "" means
	// generic.
	Personality string
	// IMEI is the 15-digit equipment identity. It must have 15 digits but
	// need not pass the Luhn check.
	IMEI string
	// SVN is the 2-digit software version number of the IMEISV; "" means "01".
	SVN string
	// SIM is the card in the slot at power-on; nil means an empty slot.
	SIM *SIM
	// RSSI is the AT+CSQ signal value (0..31); 0 means 20.
	RSSI int
	// RebootDownFor is how long the modem stays away after AT+CFUN=1,1.
	// 0 means 2 s.
	RebootDownFor time.Duration
	// Network, if set, is the operator network the SIM attaches to; nil
	// means every ready SIM registers at once.
	Network Network
	// Cell is the serving cell at power-on; nil means TAC DefaultTAC and
	// ECI DefaultECI in the home network of the SIM in the slot. SetCell
	// moves the modem.
	Cell *network.Cell
	// GNSS is where the GNSS receiver has a fix at power-on (quectel and
	// simcom only); nil means no fix. SetGNSS changes it.
	GNSS *GNSSFix
	// Seed seeds the randomness of the garbled-bytes fault.
	Seed uint64
	// Logger receives the modem's logs; nil discards them.
	Logger *slog.Logger
}

// Faults are misbehaviours injected into the modem's answers, to test how a
// client copes. Counters count command lines and go down as they fire.
type Faults struct {
	// Delay is waited before every answer.
	Delay time.Duration
	// NoResponse: the next N command lines are echoed but never answered.
	NoResponse int
	// Garble: the next N answers get some of their bytes replaced by noise.
	Garble int
	// SpuriousURCs: the next N answers are preceded by an unsolicited line,
	// sent between the echo and the answer.
	SpuriousURCs int
	// SpuriousURC is the line sent by SpuriousURCs; "" means a +CREG URC
	// with the current registration status.
	SpuriousURC string
	// Errors: the next N command lines fail.
	Errors int
	// ErrorCode is the CME error code of those failures (rendered per
	// AT+CMEE, e.g. 14 "SIM busy" or 515); 0 means a plain ERROR.
	ErrorCode int
}

// State is a snapshot of a modem, as the control API shows it.
type State struct {
	Personality  string            `json:"personality"`
	IMEI         string            `json:"imei"`
	SIM          *SIM              `json:"sim"`
	SIMStatus    string            `json:"simStatus"` // ready, pin, absent, off
	Online       bool              `json:"online"`    // a stream is being served
	Boots        int               `json:"boots"`
	Echo         bool              `json:"echo"`
	CMEE         int               `json:"cmee"`
	CFUN         int               `json:"cfun"`
	Registration RegistrationState `json:"registration"`
	// GNSS is the receiver (personalities with one: quectel, simcom).
	GNSS *GNSSState `json:"gnss,omitempty"`
}

// RegistrationState is the network registration part of State.
type RegistrationState struct {
	// Stat is the 27.007 <stat>: 0 not registered, 1 home, 2 searching,
	// 3 denied, 5 roaming.
	Stat int `json:"stat"`
	// Forced is true when the control API pins Stat.
	Forced bool `json:"forced"`
	// CREG, CGREG and CEREG are the URC modes <n> set by the client.
	CREG  int `json:"cregN"`
	CGREG int `json:"cgregN"`
	CEREG int `json:"ceregN"`
	// Operator is the numeric PLMN while registered.
	Operator string `json:"operator,omitempty"`
	// Cell is the serving cell (its MCC and MNC empty while it follows the
	// SIM's home network and there is no SIM).
	Cell network.Cell `json:"cell"`
	// IP is the data address while registered; "" means no data.
	IP string `json:"ip,omitempty"`
}

// state is the mutable part of a modem, guarded by Modem.mu.
type state struct {
	imei      string
	sim       *SIM
	simLocked bool // PIN not yet entered
	simOff    bool // powered down by AT+CFUN=0 (some vendors)

	echo, verbose, quiet bool
	cmee                 int
	sreg                 [16]int // S-registers; S3, S4, S5 are honoured

	cfun       int
	regN       [3]int // CREG, CGREG, CEREG <n>
	stat       int
	forcedStat int // -1: follow the network
	copsMode   int
	copsFormat int
	ip         string
	serving    servingCell // kept across reboots: it is where the modem is

	qsimstat bool // quectel +QSIMSTAT URC enabled
	usimstat int  // ublox +USIMSTAT mask

	gnssOn  bool     // the client turned the GNSS receiver on
	gnssFix *GNSSFix // where the receiver has a fix; kept across reboots

	faults Faults
	boots  int
}

// Modem is a simulated cellular modem. Its methods are safe for concurrent
// use; the control methods (InsertSIM, RemoveSIM, ...) may be called while
// Serve runs.
type Modem struct {
	pers     *personality
	handlers map[string]handler
	net      Network
	log      *slog.Logger
	svn      string
	rssi     int
	downFor  time.Duration
	now      func() time.Time // the GNSS answers' clock

	mu   sync.Mutex
	st   state
	rng  *rand.Rand
	sess *session

	outMu sync.Mutex // serialises writes to the stream
}

// New returns a powered-off modem; Serve powers it on.
func New(cfg Config) (*Modem, error) {
	pers, err := lookupPersonality(cfg.Personality)
	if err != nil {
		return nil, err
	}
	if err := ValidateIMEI(cfg.IMEI); err != nil {
		return nil, err
	}
	m := &Modem{
		pers:    pers,
		net:     cfg.Network,
		log:     cfg.Logger,
		svn:     cfg.SVN,
		rssi:    cfg.RSSI,
		downFor: cfg.RebootDownFor,
		rng:     rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		now:     time.Now,
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.svn == "" {
		m.svn = "01"
	}
	if m.rssi <= 0 || m.rssi > 31 {
		m.rssi = 20
	}
	if m.downFor <= 0 {
		m.downFor = 2 * time.Second
	}
	m.handlers = standardHandlers()
	for name, h := range pers.extra {
		m.handlers[name] = h
	}
	if pers.gnss {
		for name, h := range gnssHandlers(pers.name) {
			m.handlers[name] = h
		}
	}
	if cfg.GNSS != nil {
		if err := m.SetGNSS(cfg.GNSS); err != nil {
			return nil, err
		}
	}
	m.st.imei = cfg.IMEI
	m.st.forcedStat = -1
	m.st.serving = defaultCell()
	if cfg.Cell != nil {
		if err := cfg.Cell.Validate(); err != nil {
			return nil, fmt.Errorf("modem: %w", err)
		}
		m.st.serving = cellFrom(*cfg.Cell)
	}
	if cfg.SIM != nil {
		if err := cfg.SIM.Validate(); err != nil {
			return nil, err
		}
		sim := *cfg.SIM
		m.st.sim = &sim
	}
	m.st.powerOn(pers)
	return m, nil
}

// powerOn resets what a module forgets when it loses power.
func (s *state) powerOn(p *personality) {
	s.echo, s.verbose, s.quiet = true, true, false
	s.cmee = p.defaultCMEE
	s.sreg = [16]int{}
	s.sreg[3], s.sreg[4], s.sreg[5] = 13, 10, 8
	s.cfun = 1
	s.regN = [3]int{}
	s.stat = 0
	s.copsMode, s.copsFormat = 0, 0
	s.ip = ""
	s.simLocked = s.sim != nil && s.sim.PIN != ""
	s.simOff = false
	s.qsimstat = false
	s.usimstat = 0
	s.gnssOn = false
}

// resetProfile is ATZ / AT&F: back to the default user settings.
func (s *state) resetProfile(p *personality) {
	s.echo, s.verbose, s.quiet = true, true, false
	s.cmee = p.defaultCMEE
	s.sreg[3], s.sreg[4], s.sreg[5] = 13, 10, 8
	s.regN = [3]int{}
	s.copsFormat = 0
}

// simError returns the error SIM-dependent commands give, or nil if the
// card is ready. needPIN is false for data readable before the PIN (ICCID).
func (s *state) simError(needPIN bool) error {
	switch {
	case s.sim == nil || s.simOff:
		return cmeSIMNotInserted
	case needPIN && s.simLocked:
		return cmeSIMPINRequired
	}
	return nil
}

func (s *state) simStatus() string {
	switch {
	case s.sim == nil:
		return "absent"
	case s.simOff:
		return "off"
	case s.simLocked:
		return "pin"
	}
	return "ready"
}

// Personality returns the name of the modem's personality.
func (m *Modem) Personality() string { return m.pers.name }

// State returns a snapshot of the modem.
func (m *Modem) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &m.st
	out := State{
		Personality: m.pers.name,
		IMEI:        s.imei,
		SIMStatus:   s.simStatus(),
		Online:      m.sess != nil,
		Boots:       s.boots,
		Echo:        s.echo,
		CMEE:        s.cmee,
		CFUN:        s.cfun,
		Registration: RegistrationState{
			Stat:   s.stat,
			Forced: s.forcedStat >= 0,
			CREG:   s.regN[0],
			CGREG:  s.regN[1],
			CEREG:  s.regN[2],
			IP:     s.ip,
			Cell:   s.cell(),
		},
	}
	if m.pers.gnss {
		g := s.gnssState()
		out.GNSS = &g
	}
	if s.sim != nil {
		sim := *s.sim
		out.SIM = &sim
		if registered(s.stat) {
			out.Registration.Operator = s.plmn()
		}
	}
	return out
}

// Faults returns the faults still armed.
func (m *Modem) Faults() Faults {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.faults
}

// SetFaults replaces the injected faults; the zero Faults clears them.
// Faults survive reboots.
func (m *Modem) SetFaults(f Faults) {
	m.mu.Lock()
	m.st.faults = f
	m.mu.Unlock()
	m.log.Info("faults set", "faults", fmt.Sprintf("%+v", f))
}

// InsertSIM puts a card into the empty slot and sends the personality's
// insertion URCs; the modem then registers with it.
func (m *Modem) InsertSIM(sim SIM) error {
	if err := sim.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	if m.st.sim != nil {
		m.mu.Unlock()
		return ErrSIMPresent
	}
	m.st.sim = &sim
	m.st.simLocked = sim.PIN != ""
	var urcs []string
	if !m.st.simOff {
		urcs = m.pers.simInserted(&m.st)
	}
	m.mu.Unlock()
	m.log.Info("SIM inserted", "iccid", sim.ICCID, "imsi", sim.IMSI)
	m.emit(urcs...)
	m.kick()
	return nil
}

// RemoveSIM takes the card out and sends the personality's removal URCs.
func (m *Modem) RemoveSIM() error {
	m.mu.Lock()
	if m.st.sim == nil {
		m.mu.Unlock()
		return ErrNoSIM
	}
	old := m.st.sim
	var urcs []string
	if !m.st.simOff {
		urcs = m.pers.simRemoved(&m.st)
	}
	m.st.sim = nil
	m.st.simLocked = false
	m.mu.Unlock()
	m.log.Info("SIM removed", "iccid", old.ICCID)
	m.emit(urcs...)
	m.kick()
	return nil
}

// SwapSIM removes the current card (if any), waits gap as a person would,
// and inserts sim.
func (m *Modem) SwapSIM(ctx context.Context, sim SIM, gap time.Duration) error {
	if err := sim.Validate(); err != nil {
		return err
	}
	if err := m.RemoveSIM(); err != nil && !errors.Is(err, ErrNoSIM) {
		return err
	}
	if gap > 0 {
		t := time.NewTimer(gap)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return m.InsertSIM(sim)
}

// SetIMEI changes the equipment identity, as when the SIM moves to another
// module. The modem re-attaches with the new IMEI.
func (m *Modem) SetIMEI(imei string) error {
	if err := ValidateIMEI(imei); err != nil {
		return err
	}
	m.mu.Lock()
	m.st.imei = imei
	m.mu.Unlock()
	m.log.Info("IMEI changed", "imei", imei)
	m.kick()
	return nil
}

// ForceRegistration pins the registration status to stat (0..11) whatever
// the network says, sending URCs to clients that enabled them; a negative
// stat goes back to following the network.
func (m *Modem) ForceRegistration(stat int) error {
	if stat > 11 {
		return fmt.Errorf("modem: registration stat %d out of range 0..11", stat)
	}
	m.mu.Lock()
	m.st.forcedStat = max(stat, -1)
	m.mu.Unlock()
	m.kick()
	return nil
}

// Reboot makes the modem restart: the stream being served is dropped (Serve
// returns a *RebootError carrying downFor) and the modem boots again on the
// next Serve. downFor <= 0 means the configured default. It reports whether
// a stream was being served.
func (m *Modem) Reboot(downFor time.Duration) bool {
	if downFor <= 0 {
		downFor = m.downFor
	}
	m.mu.Lock()
	sess := m.sess
	m.mu.Unlock()
	if sess == nil {
		return false
	}
	m.log.Info("rebooting", "downFor", downFor)
	sess.cancel(&RebootError{DownFor: downFor})
	return true
}

// kick tells the registration loop that something it depends on changed.
func (m *Modem) kick() {
	m.mu.Lock()
	sess := m.sess
	m.mu.Unlock()
	if sess != nil {
		select {
		case sess.kick <- struct{}{}:
		default:
		}
	}
}

// Package modemmanager reads the modem's and the SIM's identity through
// ModemManager over D-Bus, for gateways where ModemManager owns the modem
// and its AT port is not free. Modem implements agent.Modem.
//
// The modem is found through the ObjectManager at
// /org/freedesktop/ModemManager1; Identify reads its
// Modem.EquipmentIdentifier (the IMEI), Modem.State, UnlockRequired and
// Modem3gpp.RegistrationState and OperatorCode (the serving network's
// MCC and MNC), then Sim.SimIdentifier (the ICCID) and
// Sim.Imsi of the object Modem.Sim names ("/" when there is no SIM).
//
// Events fires when ModemManager signals a change that may alter the
// identity: PropertiesChanged on a modem or SIM object (SIM, IMEI, state,
// lock, registration, serving network; not signal quality), InterfacesAdded and
// InterfacesRemoved (a modem disappearing and coming back: ModemManager
// re-probes a modem on a SIM hot swap), ModemManager itself starting or
// stopping, and the bus connection coming back after it was lost.
//
// SetRadio calls Modem.Enable(false/true). SetPowerState is not used: it
// is allowed only while the modem is already disabled, so taking the radio
// down through it needs Enable(false) first anyway, and Enable(false)
// alone leaves the modem in low-power mode (+CFUN=4 on AT modems) with the
// SIM still readable, which is all the verifier asks for. A disabled modem
// reports registration <stat> 0, as +CFUN=4 does on the AT path.
package modemmanager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/cardbind/cardbind/agent/identity"
)

var (
	// ErrNotConnected is returned while the bus connection is down.
	ErrNotConnected = errors.New("modemmanager: not connected to the bus")
	// ErrNoModem is returned when ModemManager lists no modem (or none
	// that Config.Modem selects).
	ErrNoModem = errors.New("modemmanager: no modem")
)

// Config configures a Modem. The zero value reads the first modem on the
// system bus.
type Config struct {
	// Address is the D-Bus address ("unix:path=/run/dbus/system_bus_socket");
	// empty means the system bus ($DBUS_SYSTEM_BUS_ADDRESS or its default).
	Address string
	// Modem selects one modem when there are several: its object path
	// ("/org/freedesktop/ModemManager1/Modem/0"), its EquipmentIdentifier,
	// its Device (sysfs path) or its PrimaryPort ("cdc-wdm0"). Empty means
	// the modem with the lowest object path.
	Modem string
	// CallTimeout bounds each property read (default 10 s); EnableTimeout
	// bounds Modem.Enable, which waits for the modem (default 60 s).
	CallTimeout, EnableTimeout time.Duration
	// MinBackoff and MaxBackoff bound the delay between attempts to
	// reconnect to the bus (defaults 500 ms and 30 s), jittered.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives connection events (default: discard).
	Logger *slog.Logger
}

// Modem reads identity through ModemManager. Run keeps its bus connection;
// Identify, Events and SetRadio may be used from any goroutine.
type Modem struct {
	cfg    Config
	log    *slog.Logger
	events chan struct{}

	mu   sync.Mutex
	conn *dbus.Conn // nil while disconnected
}

// New fills in cfg's defaults and returns a Modem; call Run to connect.
func New(cfg Config) (*Modem, error) {
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	if cfg.EnableTimeout <= 0 {
		cfg.EnableTimeout = time.Minute
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Modem{cfg: cfg, log: log, events: make(chan struct{}, 1)}, nil
}

// Events receives a value whenever ModemManager signals that the identity
// may have changed. Values coalesce: one pending value stands for many.
func (m *Modem) Events() <-chan struct{} { return m.events }

func (m *Modem) notify() {
	select {
	case m.events <- struct{}{}:
	default:
	}
}

// Run connects to the bus, watches ModemManager's signals and reconnects
// with backoff when the connection is lost, until ctx ends.
func (m *Modem) Run(ctx context.Context) error {
	for attempt := 0; ; {
		conn, signals, err := m.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.log.Warn("cannot connect to D-Bus", "err", err, "attempt", attempt+1)
			if !sleep(ctx, m.backoff(attempt)) {
				return nil
			}
			attempt++
			continue
		}
		attempt = 0
		m.setConn(conn)
		m.log.Info("connected to D-Bus", "name", conn.Names()[0])
		m.notify() // anything may have changed while we were away
		m.watch(ctx, signals)
		m.setConn(nil)
		_ = conn.Close()
		if ctx.Err() != nil {
			return nil
		}
		m.log.Warn("lost the D-Bus connection; reconnecting")
		m.notify()
		if !sleep(ctx, m.backoff(0)) {
			return nil
		}
	}
}

// connect dials the bus and subscribes to ModemManager's signals.
func (m *Modem) connect(ctx context.Context) (*dbus.Conn, chan *dbus.Signal, error) {
	var conn *dbus.Conn
	var err error
	if m.cfg.Address == "" {
		conn, err = dbus.ConnectSystemBus(dbus.WithContext(ctx))
	} else {
		conn, err = dbus.Connect(m.cfg.Address, dbus.WithContext(ctx))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("modemmanager: connect: %w", err)
	}
	signals := make(chan *dbus.Signal, 64)
	conn.Signal(signals)
	rules := [][]dbus.MatchOption{
		{dbus.WithMatchSender(busName), dbus.WithMatchInterface(ifProperties),
			dbus.WithMatchMember("PropertiesChanged"), dbus.WithMatchPathNamespace(rootPath)},
		{dbus.WithMatchSender(busName), dbus.WithMatchInterface(ifObjectManager), dbus.WithMatchObjectPath(rootPath)},
		{dbus.WithMatchSender("org.freedesktop.DBus"), dbus.WithMatchInterface("org.freedesktop.DBus"),
			dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, busName)},
	}
	cctx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
	defer cancel()
	for _, r := range rules {
		if err := conn.AddMatchSignalContext(cctx, r...); err != nil {
			_ = conn.Close()
			return nil, nil, fmt.Errorf("modemmanager: add match rule: %w", err)
		}
	}
	return conn, signals, nil
}

// watch turns signals into events until the connection closes (the
// channel is closed) or ctx ends.
func (m *Modem) watch(ctx context.Context, signals <-chan *dbus.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case s, ok := <-signals:
			if !ok {
				return
			}
			if relevant(s) {
				m.log.Debug("ModemManager signal", "name", s.Name, "path", s.Path)
				m.notify()
			}
		}
	}
}

// watched reports whether a change of the interface's property may change
// the identity. Others (SignalQuality, Bearers, ...) change often and are
// ignored.
func watched(iface, name string) bool {
	switch iface {
	case ifModem:
		switch name {
		case "Sim", "SimSlots", "PrimarySimSlot", "EquipmentIdentifier", "State",
			"StateFailedReason", "UnlockRequired", "PowerState":
			return true
		}
	case ifModem3gpp:
		return name == "Imei" || name == "RegistrationState" || name == "OperatorCode"
	case ifSim:
		return name == "SimIdentifier" || name == "Imsi" || name == "Active"
	}
	return false
}

// relevant reports whether a signal may mean the identity changed.
func relevant(s *dbus.Signal) bool {
	switch s.Name {
	case ifObjectManager + ".InterfacesAdded", ifObjectManager + ".InterfacesRemoved":
		return s.Path == rootPath
	case "org.freedesktop.DBus.NameOwnerChanged":
		name, _ := argAt[string](s.Body, 0)
		return name == busName
	case ifProperties + ".PropertiesChanged":
		iface, _ := argAt[string](s.Body, 0)
		changed, _ := argAt[map[string]dbus.Variant](s.Body, 1)
		for k := range changed {
			if watched(iface, k) {
				return true
			}
		}
		invalidated, _ := argAt[[]string](s.Body, 2)
		for _, k := range invalidated {
			if watched(iface, k) {
				return true
			}
		}
	}
	return false
}

func argAt[T any](body []any, i int) (T, bool) {
	var zero T
	if i >= len(body) {
		return zero, false
	}
	v, ok := body[i].(T)
	return v, ok
}

func (m *Modem) setConn(c *dbus.Conn) {
	m.mu.Lock()
	m.conn = c
	m.mu.Unlock()
}

func (m *Modem) current() (*dbus.Conn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn == nil {
		return nil, ErrNotConnected
	}
	return m.conn, nil
}

// find returns the selected modem's path and properties.
func (m *Modem) find(ctx context.Context, conn *dbus.Conn) (dbus.ObjectPath, modemObject, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
	defer cancel()
	var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	err := conn.Object(busName, rootPath).CallWithContext(ctx, ifObjectManager+".GetManagedObjects", 0).Store(&objs)
	if err != nil {
		return "", nil, fmt.Errorf("modemmanager: list modems: %w", err)
	}
	path, ok := pick(objs, m.cfg.Modem)
	if !ok {
		if m.cfg.Modem != "" {
			return "", nil, fmt.Errorf("%w matching %q", ErrNoModem, m.cfg.Modem)
		}
		return "", nil, ErrNoModem
	}
	return path, modemObject(objs[path]), nil
}

// pick chooses the modem: the one sel names (path, EquipmentIdentifier,
// Device or PrimaryPort), or with sel empty the lowest path.
func pick(objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant, sel string) (dbus.ObjectPath, bool) {
	var paths []dbus.ObjectPath
	for p, o := range objs {
		if _, ok := o[ifModem]; ok {
			paths = append(paths, p)
		}
	}
	slices.SortFunc(paths, func(a, b dbus.ObjectPath) int {
		// Modem/10 after Modem/9.
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		if a < b {
			return -1
		}
		if a > b {
			return 1
		}
		return 0
	})
	for _, p := range paths {
		mp := props(objs[p][ifModem])
		if sel == "" || sel == string(p) || sel == mp.str("EquipmentIdentifier") ||
			sel == mp.str("Device") || sel == mp.str("PrimaryPort") {
			return p, true
		}
	}
	return "", false
}

// Identify reads the modem's and its SIM's identity. It fails when the bus
// is down, ModemManager does not answer, or there is no modem; a SIM that
// cannot be read is listed in Problems.
func (m *Modem) Identify(ctx context.Context) (identity.Identity, error) {
	conn, err := m.current()
	if err != nil {
		return identity.Identity{}, err
	}
	_, modem, err := m.find(ctx, conn)
	if err != nil {
		return identity.Identity{}, err
	}
	var sim props
	var simErr error
	if sp := modem.simPath(); sp != "" {
		cctx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
		defer cancel()
		var all map[string]dbus.Variant
		simErr = conn.Object(busName, sp).CallWithContext(cctx, ifProperties+".GetAll", 0, ifSim).Store(&all)
		if simErr != nil {
			if ctx.Err() != nil {
				return identity.Identity{}, fmt.Errorf("modemmanager: read SIM %s: %w", sp, simErr)
			}
			simErr = fmt.Errorf("read %s: %w", sp, simErr)
		}
		sim = props(all)
	}
	return toIdentity(modem, sim, simErr), nil
}

// SetRadio enables the modem (on) or disables it, which leaves it in
// low-power mode with the radio off (see the package documentation).
func (m *Modem) SetRadio(ctx context.Context, on bool) error {
	conn, err := m.current()
	if err != nil {
		return err
	}
	path, _, err := m.find(ctx, conn)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.EnableTimeout)
	defer cancel()
	if err := conn.Object(busName, path).CallWithContext(ctx, ifModem+".Enable", 0, on).Err; err != nil {
		return fmt.Errorf("modemmanager: %s Enable(%v): %w", path, on, err)
	}
	m.log.Info("modem radio set", "modem", path, "on", on)
	return nil
}

// backoff returns the jittered delay before attempt n (0-based): the base
// doubles from MinBackoff up to MaxBackoff; the delay is drawn uniformly
// from [base/2, base).
func (m *Modem) backoff(n int) time.Duration {
	base := m.cfg.MinBackoff
	for i := 0; i < n && base < m.cfg.MaxBackoff; i++ {
		base *= 2
	}
	base = min(base, m.cfg.MaxBackoff)
	half := base / 2
	return half + time.Duration(rand.Float64()*float64(half))
}

// sleep waits d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

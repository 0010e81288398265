package modemmanager

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// testBus is a private dbus-daemon on a unix socket in a temporary
// directory.
type testBus struct {
	addr   string
	config string
	socket string
	cmd    *exec.Cmd
}

// busConfig is a minimal bus: anyone may own any name and send anything.
const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`

// startBus starts a private dbus-daemon, or skips the test when the
// daemon is not installed (Debian package dbus-daemon; see
// scripts/install-test-deps.sh).
func startBus(t *testing.T) *testBus {
	t.Helper()
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Skip("dbus-daemon not installed (Debian package dbus-daemon; scripts/install-test-deps.sh installs it): skipping the D-Bus tests")
	}
	dir, err := os.MkdirTemp("", "mmbus")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b := &testBus{config: filepath.Join(dir, "bus.conf"), socket: filepath.Join(dir, "bus")}
	if err := os.WriteFile(b.config, fmt.Appendf(nil, busConfig, b.socket), 0o600); err != nil {
		t.Fatal(err)
	}
	b.start(t)
	t.Cleanup(func() { b.stop() })
	return b
}

func (b *testBus) start(t *testing.T) {
	t.Helper()
	os.Remove(b.socket)
	cmd := exec.Command("dbus-daemon", "--nofork", "--print-address", "--config-file="+b.config)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = nil
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dbus-daemon: %v", err)
	}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case addr := <-line:
		if addr == "" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatal("dbus-daemon printed no address")
		}
		b.addr, b.cmd = addr, cmd
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("dbus-daemon did not start within 10 s")
	}
}

func (b *testBus) stop() {
	if b.cmd != nil {
		_ = b.cmd.Process.Kill()
		_ = b.cmd.Wait()
		b.cmd = nil
	}
}

// fakeMM is a small ModemManager: it owns org.freedesktop.ModemManager1,
// lists modem objects through the ObjectManager at
// /org/freedesktop/ModemManager1, serves org.freedesktop.DBus.Properties
// for modems and SIMs (SIM objects are not managed objects, as in
// ModemManager), implements Modem.Enable, and emits PropertiesChanged,
// InterfacesAdded and InterfacesRemoved as ModemManager does.
type fakeMM struct {
	t    *testing.T
	conn *dbus.Conn

	mu      sync.Mutex
	modems  map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	sims    map[dbus.ObjectPath]map[string]dbus.Variant
	enables []bool
}

// startFake connects to the bus and takes ModemManager's name.
func startFake(t *testing.T, b *testBus) *fakeMM {
	t.Helper()
	conn, err := dbus.Connect(b.addr)
	if err != nil {
		t.Fatalf("fake ModemManager: connect: %v", err)
	}
	f := &fakeMM{t: t, conn: conn,
		modems: map[dbus.ObjectPath]map[string]map[string]dbus.Variant{},
		sims:   map[dbus.ObjectPath]map[string]dbus.Variant{}}
	t.Cleanup(func() { f.conn.Close() })
	if err := conn.Export(objectManager{f}, rootPath, ifObjectManager); err != nil {
		t.Fatal(err)
	}
	if err := conn.ExportSubtree(properties{f}, rootPath, ifProperties); err != nil {
		t.Fatal(err)
	}
	if err := conn.ExportSubtree(modemMethods{f}, rootPath, ifModem); err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName(busName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("fake ModemManager: request name: %v %v", reply, err)
	}
	return f
}

type objectManager struct{ f *fakeMM }

// GetManagedObjects lists the modems.
func (o objectManager) GetManagedObjects() (map[dbus.ObjectPath]map[string]map[string]dbus.Variant, *dbus.Error) {
	o.f.mu.Lock()
	defer o.f.mu.Unlock()
	out := map[dbus.ObjectPath]map[string]map[string]dbus.Variant{}
	for p, ifaces := range o.f.modems {
		out[p] = map[string]map[string]dbus.Variant{}
		for name, props := range ifaces {
			out[p][name] = maps.Clone(props)
		}
	}
	return out, nil
}

type properties struct{ f *fakeMM }

// GetAll serves a modem's or a SIM's properties.
func (p properties) GetAll(msg dbus.Message, iface string) (map[string]dbus.Variant, *dbus.Error) {
	path := msg.Headers[dbus.FieldPath].Value().(dbus.ObjectPath)
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	if ifaces, ok := p.f.modems[path]; ok {
		if props, ok := ifaces[iface]; ok {
			return maps.Clone(props), nil
		}
		return nil, dbus.NewError("org.freedesktop.DBus.Error.UnknownInterface", []any{iface})
	}
	if props, ok := p.f.sims[path]; ok && iface == ifSim {
		return maps.Clone(props), nil
	}
	return nil, dbus.NewError("org.freedesktop.DBus.Error.UnknownObject", []any{string(path)})
}

// Get serves one property.
func (p properties) Get(msg dbus.Message, iface, name string) (dbus.Variant, *dbus.Error) {
	all, err := p.GetAll(msg, iface)
	if err != nil {
		return dbus.Variant{}, err
	}
	v, ok := all[name]
	if !ok {
		return dbus.Variant{}, dbus.NewError("org.freedesktop.DBus.Error.UnknownProperty", []any{name})
	}
	return v, nil
}

type modemMethods struct{ f *fakeMM }

// Enable disables or enables the modem as ModemManager does: State goes
// to DISABLED (3) or REGISTERED (8), PowerState to LOW (2) or ON (3).
func (m modemMethods) Enable(msg dbus.Message, on bool) *dbus.Error {
	path := msg.Headers[dbus.FieldPath].Value().(dbus.ObjectPath)
	m.f.mu.Lock()
	if _, ok := m.f.modems[path]; !ok {
		m.f.mu.Unlock()
		return dbus.NewError("org.freedesktop.DBus.Error.UnknownObject", []any{string(path)})
	}
	m.f.enables = append(m.f.enables, on)
	m.f.mu.Unlock()
	state, power := int32(3), uint32(2)
	if on {
		state, power = 8, 3
	}
	m.f.setModem(path, ifModem, map[string]any{"State": state, "PowerState": power})
	return nil
}

func (f *fakeMM) enableCalls() []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]bool(nil), f.enables...)
}

// modemProps returns a registered LTE modem with IMEI imei and SIM sim.
func modemProps(imei string, sim dbus.ObjectPath) map[string]map[string]dbus.Variant {
	return map[string]map[string]dbus.Variant{
		ifModem: {
			"Manufacturer":        dbus.MakeVariant("Quectel"),
			"Model":               dbus.MakeVariant("EC25"),
			"Revision":            dbus.MakeVariant("EC25EFAR06A06M4G"),
			"EquipmentIdentifier": dbus.MakeVariant(imei),
			"Device":              dbus.MakeVariant("/sys/devices/platform/usb/1-1"),
			"PrimaryPort":         dbus.MakeVariant("cdc-wdm0"),
			"Sim":                 dbus.MakeVariant(sim),
			"State":               dbus.MakeVariant(int32(8)),
			"StateFailedReason":   dbus.MakeVariant(uint32(0)),
			"UnlockRequired":      dbus.MakeVariant(uint32(1)),
			"PowerState":          dbus.MakeVariant(uint32(3)),
			"AccessTechnologies":  dbus.MakeVariant(uint32(1 << 14)),
			"SignalQuality":       dbus.MakeVariant([]any{uint32(70), true}),
		},
		ifModem3gpp: {
			"Imei":              dbus.MakeVariant(imei),
			"RegistrationState": dbus.MakeVariant(uint32(1)),
			"OperatorCode":      dbus.MakeVariant("310260"),
			"OperatorName":      dbus.MakeVariant("T-Mobile"),
		},
	}
}

func simProps(iccid, imsi string) map[string]dbus.Variant {
	return map[string]dbus.Variant{
		"SimIdentifier":      dbus.MakeVariant(iccid),
		"Imsi":               dbus.MakeVariant(imsi),
		"OperatorIdentifier": dbus.MakeVariant(imsi[:5]),
		"Active":             dbus.MakeVariant(true),
	}
}

// addModem adds a modem object and announces it (InterfacesAdded).
func (f *fakeMM) addModem(path dbus.ObjectPath, ifaces map[string]map[string]dbus.Variant) {
	f.t.Helper()
	f.mu.Lock()
	f.modems[path] = ifaces
	f.mu.Unlock()
	f.emit(rootPath, ifObjectManager+".InterfacesAdded", path, ifaces)
}

// removeModem removes a modem object and announces it.
func (f *fakeMM) removeModem(path dbus.ObjectPath) {
	f.t.Helper()
	f.mu.Lock()
	var names []string
	for name := range f.modems[path] {
		names = append(names, name)
	}
	delete(f.modems, path)
	f.mu.Unlock()
	f.emit(rootPath, ifObjectManager+".InterfacesRemoved", path, names)
}

// setSIM creates or replaces a SIM object, announcing changed properties.
func (f *fakeMM) setSIM(path dbus.ObjectPath, props map[string]dbus.Variant) {
	f.t.Helper()
	f.mu.Lock()
	_, existed := f.sims[path]
	f.sims[path] = props
	f.mu.Unlock()
	if existed {
		f.emit(path, ifProperties+".PropertiesChanged", ifSim, props, []string{})
	}
}

// setModem changes properties of one of a modem's interfaces and emits
// PropertiesChanged.
func (f *fakeMM) setModem(path dbus.ObjectPath, iface string, values map[string]any) {
	f.t.Helper()
	changed := map[string]dbus.Variant{}
	f.mu.Lock()
	for k, v := range values {
		changed[k] = dbus.MakeVariant(v)
		f.modems[path][iface][k] = changed[k]
	}
	f.mu.Unlock()
	f.emit(path, ifProperties+".PropertiesChanged", iface, changed, []string{})
}

func (f *fakeMM) emit(path dbus.ObjectPath, name string, body ...any) {
	f.t.Helper()
	if err := f.conn.Emit(path, name, body...); err != nil {
		f.t.Errorf("emit %s: %v", name, err)
	}
}

// runModem starts a Modem on the bus and waits until it is connected and
// its first event (the connection's) is consumed.
func runModem(t *testing.T, b *testBus, cfg Config) *Modem {
	t.Helper()
	cfg.Address = b.addr
	cfg.MinBackoff, cfg.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5 s of cancel")
		}
	})
	waitConnected(t, m)
	return m
}

func waitConnected(t *testing.T, m *Modem) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := m.current(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not connected to the bus within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitEvent(t, m, "connect")
}

// waitEvent fails unless an event arrives within a second.
func waitEvent(t *testing.T, m *Modem, what string) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-m.Events():
		return time.Since(start)
	case <-time.After(time.Second):
		t.Fatalf("%s: no event within 1 s", what)
		return 0
	}
}

// noEvent fails if an event arrives within d.
func noEvent(t *testing.T, m *Modem, d time.Duration, what string) {
	t.Helper()
	select {
	case <-m.Events():
		t.Fatalf("%s: unexpected event", what)
	case <-time.After(d):
	}
}

// identify reads the identity's key fields.
func identify(t *testing.T, m *Modem) (identityResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := m.Identify(ctx)
	return identityResult{got.IMEI, got.SIM.State.String(), got.ICCID, got.IMSI}, err
}

type identityResult struct{ imei, sim, iccid, imsi string }

func isNoModem(err error) bool { return errors.Is(err, ErrNoModem) }

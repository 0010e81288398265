package atmodem

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cardbind/cardbind/agent/at"
	"github.com/cardbind/cardbind/agent/identity"
)

// Transcripts of real modules, reply by reply as they came off the wire
// (after the echo, which the module adds itself). Identification strings
// are the modules' own; identities are test values.
var (
	// Quectel EC25: a +QIND URC in the middle of the +CSQ reply and a
	// +QSIMSTAT URC between the IMSI and OK (the SIM tray was touched
	// while the command ran); the ICCID keeps its F pad.
	quectelEC25 = map[string][]chunk{
		"AT+CGMI":   say("\r\nQuectel\r\n\r\nOK\r\n"),
		"AT+CGMM":   say("\r\nEC25\r\n\r\nOK\r\n"),
		"AT+CGMR":   say("\r\nRevision: EC25EFAR06A06M4G\r\n\r\nOK\r\n"),
		"AT+CGSN":   say("\r\n352656100367872\r\n\r\nOK\r\n"),
		"AT+CPIN?":  say("\r\n+CPIN: READY\r\n\r\nOK\r\n"),
		"AT+QCCID":  say("\r\n+QCCID: 8901260886258128535F\r\n\r\nOK\r\n"),
		"AT+CIMI":   say("\r\n460031234567890\r\n\r\n+QSIMSTAT: 1,1\r\n\r\nOK\r\n"),
		"AT+CEREG?": say("\r\n+CEREG: 2,1,\"31C5\",\"0083F7CD\",7\r\n\r\nOK\r\n"),
		"AT+CGREG?": say("\r\n+CGREG: 2,4\r\n\r\nOK\r\n"),
		"AT+CREG?":  say("\r\n+CREG: 2,4\r\n\r\nOK\r\n"),
		"AT+CSQ":    say("\r\n+QIND: \"csq\",20,99\r\n\r\n+CSQ: 17,99\r\n\r\nOK\r\n"),
		// Quectel answers the hot-swap enable; QSIMDET is left alone.
		"AT+QSIMSTAT=1": say("\r\nOK\r\n"),
	}
	// SIMCom SIM7600: "\r\r\n" line ends on some replies, +CGMR with its
	// tag, and a slow ICCID read split mid-line.
	simcomSIM7600 = map[string][]chunk{
		"AT+CGMI":  say("\r\nSIMCOM INCORPORATED\r\n\r\nOK\r\n"),
		"AT+CGMM":  say("\r\nSIMCOM_SIM7600E-H\r\n\r\nOK\r\n"),
		"AT+CGMR":  say("\r\n+CGMR: LE20B04SIM7600M22\r\n\r\nOK\r\n"),
		"AT+CGSN":  say("\r\n490154203237518\r\r\n\r\nOK\r\r\n"),
		"AT+CPIN?": say("\r\n+CPIN: READY\r\r\n\r\nOK\r\n"),
		"AT+CICCID": {
			{delay: 150 * time.Millisecond, data: "\r\n+ICCID: 898603186402"},
			{delay: 250 * time.Millisecond, data: "20133897\r\n\r\nOK\r\n"},
		},
		"AT+CIMI":   say("\r\n460031234567890\r\r\n\r\nOK\r\n"),
		"AT+CEREG?": say("\r\n+CEREG: 0,5\r\n\r\nOK\r\n"),
		"AT+CGREG?": say("\r\n+CGREG: 0,5\r\n\r\nOK\r\n"),
		"AT+CREG?":  say("\r\n+CREG: 0,5\r\n\r\nOK\r\n"),
		"AT+CSQ":    say("\r\n+CSQ: 23,99\r\n\r\nOK\r\n"),
	}
	// u-blox SARA-R410M: AT+CCID refused (CME 3, as on firmwares without
	// it), so the ICCID comes from EF_ICCID over +CRSM, slowly.
	ubloxSARA = map[string][]chunk{
		"AT+CGMI":  say("\r\nu-blox\r\n\r\nOK\r\n"),
		"AT+CGMM":  say("\r\nSARA-R410M-02B\r\n\r\nOK\r\n"),
		"AT+CGMR":  say("\r\nL0.0.00.00.05.08 [Apr 17 2019 19:34:02]\r\n\r\nOK\r\n"),
		"AT+CGSN":  say("\r\n352099001761481\r\n\r\nOK\r\n"),
		"AT+CPIN?": say("\r\n+CPIN: READY\r\n\r\nOK\r\n"),
		"AT+CCID":  say("\r\n+CME ERROR: 3\r\n"),
		identity.CRSMReadICCID: {
			{delay: 300 * time.Millisecond, data: "\r\n+CRSM: 144,0,\"98440200357601"},
			{delay: 100 * time.Millisecond, data: "2594F9\"\r\n\r\nOK\r\n"},
		},
		"AT+CIMI":       say("\r\n001010123456789\r\n\r\nOK\r\n"),
		"AT+CEREG?":     say("\r\n+CEREG: 0,3\r\n\r\nOK\r\n"),
		"AT+CGREG?":     say("\r\n+CGREG: 0,3\r\n\r\nOK\r\n"),
		"AT+CREG?":      say("\r\n+CREG: 0,3\r\n\r\nOK\r\n"),
		"AT+CSQ":        say("\r\n+CSQ: 99,99\r\n\r\nOK\r\n"),
		"AT+USIMSTAT=1": say("\r\nOK\r\n"),
	}
	// Wavecom-era generic module: the manufacturer with a leading space,
	// no SIM (CME 10), +CGSN refused so +GSN gives the IMEI.
	genericNoSIM = map[string][]chunk{
		"AT+CGMI":   say("\r\n WAVECOM MODEM\r\n\r\nOK\r\n"),
		"AT+CGMM":   say("\r\n MULTIBAND  900E  1800 \r\n\r\nOK\r\n"),
		"AT+CGMR":   say("\r\n641b09gg.Q2403A 1320676 061804 14:38\r\n\r\nOK\r\n"),
		"AT+CGSN":   say("\r\nERROR\r\n"),
		"AT+GSN":    say("\r\n356938035643809\r\n\r\nOK\r\n"),
		"AT+CPIN?":  say("\r\n+CME ERROR: 10\r\n"),
		"AT+CREG?":  say("\r\n+CREG: 0,0\r\n\r\nOK\r\n"),
		"AT+CEREG?": say("\r\nERROR\r\n"),
		"AT+CGREG?": say("\r\n+CGREG: 0,0\r\n\r\nOK\r\n"),
		"AT+CSQ":    say("\r\n+CSQ: 99,99\r\n\r\nOK\r\n"),
	}
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startModem runs a Modem over mod until the test ends and waits until it
// is up; the event of the first open is consumed.
func startModem(t *testing.T, mod *module, cfg Config) *Modem {
	t.Helper()
	cfg.Open = mod.open
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitUp(t, m)
	expectEvent(t, m, true, "first open")
	return m
}

func waitUp(t *testing.T, m *Modem) {
	t.Helper()
	select {
	case <-m.Up():
	case <-time.After(5 * time.Second):
		t.Fatalf("modem not up within 5s (last open error: %v)", m.LastOpenError())
	}
}

// expectEvent checks whether an event arrives soon.
func expectEvent(t *testing.T, m *Modem, want bool, what string) {
	t.Helper()
	wait := 150 * time.Millisecond
	if want {
		wait = 2 * time.Second
	}
	select {
	case <-m.Events():
		if !want {
			t.Errorf("%s: unexpected event", what)
		}
	case <-time.After(wait):
		if want {
			t.Errorf("%s: no event within %v", what, wait)
		}
	}
}

func TestIdentifyTranscripts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		replies   map[string][]chunk
		strayEcho bool
		vendor    identity.Vendor
		imei      string
		sim       identity.SIMState
		iccid     string
		iccidCmd  string
		imsi      string
		stat      identity.RegStat
		enables   []string // vendor hot-swap enables sent after the open
	}{
		{name: "quectel EC25", replies: quectelEC25, vendor: identity.VendorQuectel, imei: "352656100367872",
			sim: identity.SIMReady, iccid: "8901260886258128535", iccidCmd: "AT+QCCID", imsi: "460031234567890",
			stat: identity.RegHome, enables: []string{"AT+CEREG=2", "AT+QSIMSTAT=1"}},
		{name: "simcom SIM7600 stray echo", replies: simcomSIM7600, strayEcho: true, vendor: identity.VendorSIMCom,
			imei: "490154203237518", sim: identity.SIMReady, iccid: "89860318640220133897", iccidCmd: "AT+CICCID",
			imsi: "460031234567890", stat: identity.RegRoaming, enables: []string{"AT+CEREG=2"}},
		{name: "ublox SARA-R410M CRSM fallback", replies: ubloxSARA, vendor: identity.VendorUblox, imei: "352099001761481",
			sim: identity.SIMReady, iccid: "8944200053671052499", iccidCmd: identity.CRSMReadICCID, imsi: "001010123456789",
			stat: identity.RegDenied, enables: []string{"AT+CEREG=2", "AT+USIMSTAT=1"}},
		{name: "generic without SIM", replies: genericNoSIM, vendor: identity.VendorGeneric, imei: "356938035643809",
			sim: identity.SIMAbsent, stat: identity.RegNotRegistered, enables: []string{"AT+CREG=2", "AT+CEREG=2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mod := newModule(t, tc.replies)
			mod.strayEcho = tc.strayEcho
			m := startModem(t, mod, Config{})
			if got := m.Vendor(); got != tc.vendor {
				t.Errorf("vendor = %q, want %q", got, tc.vendor)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			id, err := m.Identify(ctx)
			if err != nil {
				t.Fatalf("Identify: %v", err)
			}
			if id.Vendor != tc.vendor || id.IMEI != tc.imei || id.SIM.State != tc.sim || id.ICCID != tc.iccid ||
				id.ICCIDSource != tc.iccidCmd || id.IMSI != tc.imsi {
				t.Errorf("identity = %+v\nwant vendor %s imei %s sim %s iccid %s (from %s) imsi %s",
					id, tc.vendor, tc.imei, tc.sim, tc.iccid, tc.iccidCmd, tc.imsi)
			}
			if id.Registration == nil || id.Registration.Stat != tc.stat {
				t.Errorf("registration = %+v, want stat %v", id.Registration, tc.stat)
			}
			sent := mod.commands()
			for _, want := range append([]string{"ATE0", "AT+CMEE=1"}, tc.enables...) {
				if !slices.Contains(sent, want) {
					t.Errorf("%s never sent; sent %q", want, sent)
				}
			}
			for _, c := range sent {
				if strings.EqualFold(c, "ATZ") || strings.HasPrefix(strings.ToUpper(c), "AT+QSIMDET") {
					t.Errorf("sent %s, which resets or reconfigures the module", c)
				}
			}
		})
	}
}

// TestURCEvents feeds unsolicited lines, in order, and checks which ones
// make the agent read the modem again.
func TestURCEvents(t *testing.T) {
	t.Parallel()
	mod := newModule(t, quectelEC25)
	m := startModem(t, mod, Config{})
	steps := []struct {
		out   string // what the module sends unsolicited
		event bool
	}{
		{"\r\n+QSIMSTAT: 1,0\r\n", true},                     // tray opened
		{"\r\n+CPIN: NOT READY\r\n", true},                   // generic removal
		{"\r\n+QIND: \"csq\",20,99\r\n", false},              // signal report: not identity
		{"\r\n+CEREG: 1,\"31C5\",\"0083F7CD\",7\r\n", true},  // the first cell since the open: may be news to the agent
		{"\r\n+CEREG: 1,\"31C5\",\"0083F7CD\",7\r\n", false}, // the same cell
		{"\r\n+CEREG: 1\r\n", false},                         // no location (mode 1)
		{"\r\n+CEREG: 1,\"31C5\",\"0083F7CE\",7\r\n", true},  // reselected another cell
		{"\r\n+CEREG: 1,\"1A2B\",\"0083F7CE\",7\r\n", true},  // another tracking area
		{"\r\n+CEREG: 3\r\n", true},                          // denied
		{"\r\n+CEREG: 3\r\n", false},                         // still denied
		{"\r\n+CREG: 3\r\n", true},                           // denied in another domain too
		{"\r\n+CEREG: 1,\"1A2B\",\"0083F7CE\",7\r\n", true},  // no longer denied
		{"\r\nRDY\r\n", true},                                // the module restarted
		{"\r\n+QUSIM: 1\r\n", true},                          // USIM (re)initialised
		{"\r\n+QIND: PB DONE\r\n", true},                     // phonebook ready after insertion
		{"\r\n+UUSIMSTAT: 0\r\n", true},                      // u-blox removal
		{"\r\n+SIMCARD: NOT AVAILABLE\r\n", true},            // SIMCom removal
		{"\r\n+CEREG: 9x\r\n", false},                        // unparsable
		{"\r\n\xff\xfe+CPI\x80\r\n", false},                  // line noise
		{"\r\nSMS DONE\r\r\n", true},                         // SIMCom SIM ready, doubled CR
	}
	for _, s := range steps {
		mod.emit(s.out)
		expectEvent(t, m, s.event, strings.TrimSpace(s.out))
	}
}

// A URC inside a reply is delivered as an event and kept out of the reply.
func TestURCInsideReply(t *testing.T) {
	t.Parallel()
	mod := newModule(t, quectelEC25)
	m := startModem(t, mod, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := m.Identify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id.IMSI != "460031234567890" {
		t.Errorf("IMSI = %q: the +QSIMSTAT URC inside the +CIMI reply leaked into it", id.IMSI)
	}
	if id.Signal == nil || id.Signal.RSSI != 17 {
		t.Errorf("signal = %+v: the +QIND URC inside the +CSQ reply leaked into it", id.Signal)
	}
	expectEvent(t, m, true, "+QSIMSTAT inside the +CIMI reply")
}

// The port vanishes (modem reboot, USB re-enumeration) and comes back:
// Identify fails meanwhile, and after the reopen the init and the URC
// enables run again and an event tells the agent to read the modem.
func TestReopen(t *testing.T) {
	t.Parallel()
	mod := newModule(t, quectelEC25)
	m := startModem(t, mod, Config{})
	up := m.Up()
	mod.unplug()
	for deadline := time.Now().Add(2 * time.Second); m.Up() == up; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Up channel still the old one after the port failed")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := m.Identify(ctx); !errors.Is(err, at.ErrNotConnected) {
		t.Errorf("Identify while unplugged: %v, want ErrNotConnected", err)
	}
	time.Sleep(100 * time.Millisecond) // a few failed reopen attempts
	if m.LastOpenError() == nil {
		t.Error("LastOpenError is nil while the port cannot be opened")
	}
	before := len(mod.commands())
	mod.plug()
	// The module boots again, talking before anyone asked.
	waitUp(t, m)
	expectEvent(t, m, true, "reopen")
	after := mod.commands()[before:]
	for _, want := range []string{"ATE0", "AT+CMEE=1", "AT+CGMI", "AT+CEREG=2", "AT+QSIMSTAT=1"} {
		if !slices.Contains(after, want) {
			t.Errorf("%s not sent after the reopen; sent %q", want, after)
		}
	}
	if mod.opens < 2 {
		t.Errorf("port opened %d times, want at least 2", mod.opens)
	}
	id, err := m.Identify(ctx)
	if err != nil || id.ICCID != "8901260886258128535" {
		t.Errorf("Identify after reopen = %+v, %v", id, err)
	}
}

// Boot chatter the modem sends before the first command is not taken as a
// reply.
func TestBootChatterBeforeSync(t *testing.T) {
	t.Parallel()
	mod := newModule(t, quectelEC25)
	mod.setReply("AT+CMEE?", []chunk{
		{data: "\r\nRDY\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n"},
		{delay: 50 * time.Millisecond, data: "\r\n+CMEE: 1\r\n\r\nOK\r\n\r\n+QIND: SMS DONE\r\n"},
	})
	m := startModem(t, mod, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := m.Identify(ctx)
	if err != nil || id.IMEI != "352656100367872" || id.SIM.State != identity.SIMReady {
		t.Fatalf("Identify = %+v, %v", id, err)
	}
}

func TestSetRadio(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		on      bool
		delay   time.Duration // before the module answers
		timeout time.Duration // Config.RadioTimeout
		wantCmd string
		wantErr error
	}{
		{name: "off, slower than a query may take", on: false, delay: 600 * time.Millisecond, timeout: 3 * time.Second, wantCmd: "AT+CFUN=4"},
		{name: "on", on: true, delay: 50 * time.Millisecond, timeout: 3 * time.Second, wantCmd: "AT+CFUN=1"},
		{name: "off, beyond the radio timeout", on: false, delay: time.Second, timeout: 200 * time.Millisecond, wantCmd: "AT+CFUN=4", wantErr: at.ErrTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mod := newModule(t, quectelEC25)
			mod.setReply(tc.wantCmd, []chunk{{delay: tc.delay, data: "\r\nOK\r\n"}})
			// Queries time out after 300 ms: only the radio timeout lets
			// the slow +CFUN finish.
			m := startModem(t, mod, Config{RadioTimeout: tc.timeout, Options: []at.Option{
				at.WithDefaultTimeout(300 * time.Millisecond), at.WithTimeoutFor("+CFUN", 300*time.Millisecond)}})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := m.SetRadio(ctx, tc.on)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Errorf("SetRadio(%v) = %v, want %v", tc.on, err, tc.wantErr)
			}
			if !slices.Contains(mod.commands(), tc.wantCmd) {
				t.Errorf("%s not sent: %q", tc.wantCmd, mod.commands())
			}
		})
	}
}

// A port that opens but where nothing answers never comes up; a port that
// cannot be opened says why.
func TestNothingAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		mute     bool
		unplug   bool
		wantOpen bool // LastOpenError set
	}{
		{name: "mute", mute: true},
		{name: "absent", unplug: true, wantOpen: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mod := newModule(t, nil)
			if tc.mute {
				mod.setReply("AT+CMEE?", []chunk{})
				mod.setReply("AT+CSCS?", []chunk{})
				mod.setReply("AT", []chunk{})
			}
			if tc.unplug {
				mod.unplug()
			}
			m, err := New(Config{Open: mod.open, Logger: testLogger(t), MinBackoff: 10 * time.Millisecond,
				MaxBackoff: 20 * time.Millisecond, Options: []at.Option{at.WithResyncTimeout(100 * time.Millisecond)}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
			defer cancel()
			done := make(chan struct{})
			go func() { defer close(done); _ = m.Run(ctx) }()
			defer func() { cancel(); <-done }()
			select {
			case <-m.Up():
				t.Fatal("modem came up although nothing answers")
			case <-ctx.Done():
			}
			if _, err := m.Identify(context.Background()); !errors.Is(err, at.ErrNotConnected) {
				t.Errorf("Identify = %v, want ErrNotConnected", err)
			}
			if got := m.LastOpenError() != nil; got != tc.wantOpen {
				t.Errorf("LastOpenError = %v, want set: %v", m.LastOpenError(), tc.wantOpen)
			}
		})
	}
}

func TestNewNeedsOpen(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New without Open succeeded")
	}
}

var _ io.ReadWriteCloser = (*port)(nil)

// The numeric operator format is asked for once per open: a module that
// refused it is not asked again until the port is reopened (it may have
// rebooted into a state where it takes it).
func TestOperatorFormatPerOpen(t *testing.T) {
	t.Parallel()
	replies := maps.Clone(quectelEC25)
	replies[identity.COPSNumeric] = say("\r\n+CME ERROR: 3\r\n")
	replies["AT+COPS?"] = say("\r\n+COPS: 0,0,\"CHN-CT\",7\r\n\r\nOK\r\n")
	mod := newModule(t, replies)
	m := startModem(t, mod, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 2 {
		id, err := m.Identify(ctx)
		if err != nil || id.PLMN != nil {
			t.Fatalf("Identify = PLMN %+v, %v; want no PLMN", id.PLMN, err)
		}
	}
	count := func(cmd string) int {
		n := 0
		for _, c := range mod.commands() {
			if c == cmd {
				n++
			}
		}
		return n
	}
	if n := count(identity.COPSNumeric); n != 1 {
		t.Errorf("%s sent %d times before the reopen, want 1", identity.COPSNumeric, n)
	}

	// Taken before the unplug: the port may fail before the next line.
	up := m.Up()
	mod.unplug()
	mod.setReply(identity.COPSNumeric, say("\r\nOK\r\n"))
	mod.setReply("AT+COPS?", say("\r\n+COPS: 0,2,\"46003\",7\r\n\r\nOK\r\n"))
	for deadline := time.Now().Add(2 * time.Second); m.Up() == up; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Up channel still the old one after the port failed")
		}
	}
	mod.plug()
	waitUp(t, m)
	id, err := m.Identify(ctx)
	if err != nil || id.PLMN == nil || *id.PLMN != (identity.PLMN{MCC: "460", MNC: "03"}) {
		t.Fatalf("Identify after the reopen = PLMN %+v, %v", id.PLMN, err)
	}
	if n := count(identity.COPSNumeric); n != 2 {
		t.Errorf("%s sent %d times in all, want 2", identity.COPSNumeric, n)
	}
	for _, c := range mod.commands() {
		if strings.HasPrefix(c, "AT+COPS=") && c != identity.COPSNumeric {
			t.Errorf("sent %s: the module would register again", c)
		}
	}
}

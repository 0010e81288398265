package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/agent/identity"
	"github.com/cardbind/cardbind/agent/outbox"
	"github.com/cardbind/cardbind/protocol"
)

// fakeModem is an in-memory modem whose identity a test changes.
type fakeModem struct {
	mu     sync.Mutex
	id     identity.Identity
	err    error
	events chan struct{}
	radio  []bool
	reads  int
}

func newFakeModem() *fakeModem {
	return &fakeModem{events: make(chan struct{}, 4), id: identity.Identity{
		IMEI: "356938035643809", SIM: identity.SIMStatus{State: identity.SIMReady},
		ICCID: "89860318640220133897", IMSI: "460031234567890",
		Registration: &identity.Registration{Kind: "CEREG", Stat: identity.RegHome, Area: "31C5", Cell: "0083F7CD", AcT: 7},
		PLMN:         &identity.PLMN{MCC: "460", MNC: "03"},
		Signal:       &identity.Signal{RSSI: 17, BER: 99, DBm: -79},
	}}
}

func (m *fakeModem) Identify(context.Context) (identity.Identity, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	return m.id, m.err
}

func (m *fakeModem) Events() <-chan struct{} { return m.events }

func (m *fakeModem) SetRadio(_ context.Context, on bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.radio = append(m.radio, on)
	return nil
}

func (m *fakeModem) set(f func(id *identity.Identity)) {
	m.mu.Lock()
	f(&m.id)
	m.mu.Unlock()
	m.events <- struct{}{}
}

type counter struct {
	mu sync.Mutex
	n  uint64
}

func (c *counter) Next() (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return c.n, nil
}

type harness struct {
	t     *testing.T
	modem *fakeModem
	box   *outbox.Outbox
	agent *Agent
	key   ed25519.PrivateKey
	cmdK  ed25519.PrivateKey
}

func start(t *testing.T, cfg Config) *harness { return startClock(t, cfg, time.Now) }

// startClock is start with the agent's clock.
func startClock(t *testing.T, cfg Config, now func() time.Time) *harness {
	h := &harness{t: t, modem: newFakeModem()}
	_, h.key, _ = ed25519.GenerateKey(nil)
	_, h.cmdK, _ = ed25519.GenerateKey(nil)
	cfg.DeviceID, cfg.Key, cfg.CommandKey = "gw-1", h.key, h.cmdK.Public().(ed25519.PublicKey)
	var err error
	if h.box, err = outbox.Open(t.TempDir(), 100); err != nil {
		t.Fatal(err)
	}
	h.agent = New(cfg, h.modem, &counter{}, h.box, func() {}, slog.New(slog.NewTextHandler(io.Discard, nil)), now)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.agent.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// reports returns the decoded, verified reports in the outbox.
func (h *harness) reports() []*protocol.Report {
	h.t.Helper()
	es, err := h.box.Peek(1000)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []*protocol.Report
	for _, e := range es {
		r, err := protocol.DecodeReport(e.Payload)
		if err != nil {
			h.t.Fatalf("queued report does not decode: %v", err)
		}
		if err := protocol.VerifyReport(h.key.Public().(ed25519.PublicKey), r); err != nil {
			h.t.Fatalf("queued report does not verify: %v", err)
		}
		out = append(out, r)
	}
	return out
}

func (h *harness) waitReports(n int) []*protocol.Report {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rs := h.reports()
		if len(rs) >= n {
			return rs
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%d reports, want %d", len(rs), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStartAndChangeReports(t *testing.T) {
	h := start(t, Config{Poll: time.Hour, Heartbeat: time.Hour})
	rs := h.waitReports(1)
	r := rs[0]
	if r.Reason != protocol.ReasonStart || r.SIM != protocol.SIMPresent || r.ICCID != "89860318640220133897" ||
		r.Registration.State != protocol.RegHome || r.Registration.Tech != "eutran" || r.Registration.Cell.ID != 0x0083F7CD ||
		r.Signal.RSSIdBm != -79 || r.Seq != 1 {
		t.Fatalf("start report: %+v", r)
	}

	// A URC says something happened, but nothing changed: no report.
	h.modem.events <- struct{}{}
	time.Sleep(50 * time.Millisecond)
	if n := len(h.reports()); n != 1 {
		t.Fatalf("unchanged identity produced %d reports", n)
	}

	start := time.Now()
	h.modem.set(func(id *identity.Identity) { id.SIM.State = identity.SIMAbsent; id.ICCID, id.IMSI = "", "" })
	rs = h.waitReports(2)
	if took := time.Since(start); took > time.Second {
		t.Errorf("change reported after %v", took)
	}
	if rs[1].Reason != protocol.ReasonChange || rs[1].SIM != protocol.SIMAbsent || rs[1].ICCID != "" {
		t.Errorf("removal report: %+v", rs[1])
	}
	h.modem.set(func(id *identity.Identity) {
		id.SIM.State = identity.SIMReady
		id.ICCID, id.IMSI = "8901260886258128535F", "460031234567891"
	})
	rs = h.waitReports(3)
	if rs[2].ICCID != "8901260886258128535" || rs[2].SIM != protocol.SIMPresent {
		t.Errorf("new SIM report: %+v", rs[2])
	}
	h.modem.set(func(id *identity.Identity) { id.Registration.Stat = identity.RegDenied })
	rs = h.waitReports(4)
	if rs[3].Registration.State != protocol.RegDenied {
		t.Errorf("denied report: %+v", rs[3].Registration)
	}
	h.modem.set(func(id *identity.Identity) { id.IMEI = "490154203237518" })
	if rs = h.waitReports(5); rs[4].IMEI != "490154203237518" {
		t.Errorf("IMEI change report: %+v", rs[4])
	}
	for i, r := range rs {
		if r.Seq != uint64(i+1) {
			t.Errorf("report %d has seq %d", i, r.Seq)
		}
	}
}

func TestPollCatchesSilentModems(t *testing.T) {
	h := start(t, Config{Poll: 20 * time.Millisecond, Heartbeat: time.Hour})
	h.waitReports(1)
	h.modem.mu.Lock()
	h.modem.id.ICCID = "8901260886258128535" // swapped without a URC
	h.modem.mu.Unlock()
	if rs := h.waitReports(2); rs[1].ICCID != "8901260886258128535" {
		t.Errorf("poll report: %+v", rs[1])
	}
}

// Reconfigure (SIGHUP) changes the heartbeat of a running agent.
func TestReconfigureHeartbeat(t *testing.T) {
	h := start(t, Config{Poll: time.Hour, Heartbeat: time.Hour})
	h.waitReports(1)
	time.Sleep(50 * time.Millisecond)
	if n := len(h.reports()); n != 1 {
		t.Fatalf("%d reports before the heartbeat was shortened", n)
	}
	h.agent.Reconfigure(Settings{Heartbeat: 30 * time.Millisecond})
	rs := h.waitReports(3)
	if rs[1].Reason != protocol.ReasonHeartbeat {
		t.Errorf("reason after reconfigure: %s", rs[1].Reason)
	}
}

func TestHeartbeat(t *testing.T) {
	h := start(t, Config{Poll: time.Hour, Heartbeat: 30 * time.Millisecond})
	rs := h.waitReports(3)
	if rs[1].Reason != protocol.ReasonHeartbeat || rs[2].Reason != protocol.ReasonHeartbeat {
		t.Errorf("reasons %s %s", rs[1].Reason, rs[2].Reason)
	}
}

// A modem that does not answer at start (still booting) is retried; the
// start report comes once it answers, and never with an invalid IMEI.
func TestModemSilentAtStart(t *testing.T) {
	h := &harness{t: t, modem: newFakeModem()}
	h.modem.err = errors.New("no answer")
	_, h.key, _ = ed25519.GenerateKey(nil)
	h.box, _ = outbox.Open(t.TempDir(), 100)
	h.agent = New(Config{DeviceID: "gw-1", Key: h.key, Poll: time.Hour, Heartbeat: time.Hour}, h.modem, &counter{}, h.box,
		func() {}, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.agent.Run(ctx) }()
	defer func() { cancel(); <-done }()

	time.Sleep(100 * time.Millisecond)
	h.modem.mu.Lock()
	h.modem.err = nil
	h.modem.id.IMEI = "356938035643808" // bad check digit: a garbled answer
	h.modem.mu.Unlock()
	time.Sleep(1200 * time.Millisecond)
	if n := len(h.reports()); n != 0 {
		t.Fatalf("%d reports from a modem without a valid IMEI", n)
	}
	h.modem.mu.Lock()
	h.modem.id.IMEI = "356938035643809"
	reads := h.modem.reads
	h.modem.mu.Unlock()
	if reads < 2 {
		t.Errorf("modem read %d times; want retries", reads)
	}
	if rs := h.waitReports(1); rs[0].Reason != protocol.ReasonStart {
		t.Errorf("first report reason %s", rs[0].Reason)
	}
}

func (h *harness) command(kind protocol.CommandKind, key ed25519.PrivateKey, device string, expires time.Time) []byte {
	c := &protocol.Command{Version: 1, ID: "cmd-" + string(kind), DeviceID: device, Kind: kind,
		Issued: time.Now().Add(-time.Second), Expires: expires}
	protocol.SignCommand(key, c)
	b, _ := protocol.EncodeCommand(c)
	return b
}

func TestCommands(t *testing.T) {
	h := start(t, Config{Poll: time.Hour, Heartbeat: time.Hour, AllowRadio: true})
	h.waitReports(1)
	later := time.Now().Add(time.Minute)
	_, stranger, _ := ed25519.GenerateKey(nil)

	h.agent.HandleCommand(h.command(protocol.CommandReportNow, stranger, "gw-1", later))    // forged
	h.agent.HandleCommand(h.command(protocol.CommandReportNow, h.cmdK, "gw-2", later))      // another device
	h.agent.HandleCommand(h.command(protocol.CommandReportNow, h.cmdK, "gw-1", time.Now())) // expired
	h.agent.HandleCommand([]byte(`{"v":1}`))                                                // garbage
	time.Sleep(50 * time.Millisecond)
	if n := len(h.reports()); n != 1 {
		t.Fatalf("refused commands produced %d reports", n)
	}
	h.agent.HandleCommand(h.command(protocol.CommandReportNow, h.cmdK, "gw-1", later))
	rs := h.waitReports(2)
	if rs[1].Reason != protocol.ReasonRequested || len(rs[1].Acks) != 1 || rs[1].Acks[0] != "cmd-report_now" {
		t.Errorf("requested report: %+v", rs[1])
	}
	h.agent.HandleCommand(h.command(protocol.CommandRadioOff, h.cmdK, "gw-1", later))
	rs = h.waitReports(3)
	h.modem.mu.Lock()
	radio := append([]bool(nil), h.modem.radio...)
	h.modem.mu.Unlock()
	if len(radio) == 0 || radio[0] != false || rs[2].Acks[0] != "cmd-radio_off" {
		t.Errorf("radio off: calls %v, acks %v", radio, rs[2].Acks)
	}
}

func TestRadioCommandRefusedByDefault(t *testing.T) {
	h := start(t, Config{Poll: time.Hour, Heartbeat: time.Hour})
	h.waitReports(1)
	h.agent.HandleCommand(h.command(protocol.CommandRadioOff, h.cmdK, "gw-1", time.Now().Add(time.Minute)))
	time.Sleep(50 * time.Millisecond)
	h.modem.mu.Lock()
	defer h.modem.mu.Unlock()
	if len(h.modem.radio) != 0 || len(h.reports()) != 1 {
		t.Errorf("radio calls %v", h.modem.radio)
	}
}

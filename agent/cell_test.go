package agent

import (
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/agent/identity"
	"github.com/cardbind/cardbind/protocol"
)

func TestRegistrationCell(t *testing.T) {
	reg := func(area, cell string) *identity.Registration {
		return &identity.Registration{Kind: "CEREG", N: 2, Stat: identity.RegHome, Area: area, Cell: cell, AcT: 7}
	}
	plmn := &identity.PLMN{MCC: "460", MNC: "03"}
	tests := []struct {
		name string
		reg  *identity.Registration
		plmn *identity.PLMN
		want *protocol.Cell
	}{
		{"cell and PLMN", reg("1A2B", "01A2B3C4"), plmn, &protocol.Cell{MCC: "460", MNC: "03", Area: 0x1a2b, ID: 0x01a2b3c4}},
		{"3-digit MNC", reg("1A2B", "01A2B3C4"), &identity.PLMN{MCC: "310", MNC: "410"},
			&protocol.Cell{MCC: "310", MNC: "410", Area: 0x1a2b, ID: 0x01a2b3c4}},
		{"cell without PLMN", reg("1A2B", "01A2B3C4"), nil, &protocol.Cell{Area: 0x1a2b, ID: 0x01a2b3c4}},
		{"PLMN without cell", reg("", ""), plmn, nil},
		{"no registration", nil, plmn, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := registration(tt.reg, tt.plmn).Cell
			if (got == nil) != (tt.want == nil) || (got != nil && *got != *tt.want) {
				t.Errorf("cell = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// moveTo puts the fake modem in another cell and signals it.
func (h *harness) moveTo(area, cell string) {
	h.modem.set(func(id *identity.Identity) {
		reg := *id.Registration // a copy: the agent may still read the old one
		reg.Area, reg.Cell = area, cell
		id.Registration = &reg
	})
}

// settle waits until the agent has read the modem after the last event
// and returns the reports.
func (h *harness) settle() []*protocol.Report {
	h.t.Helper()
	h.modem.mu.Lock()
	before := h.modem.reads
	h.modem.mu.Unlock()
	h.modem.events <- struct{}{}
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.modem.mu.Lock()
		reads := h.modem.reads
		h.modem.mu.Unlock()
		if reads > before {
			break
		}
		if time.Now().After(deadline) {
			h.t.Fatal("the agent did not read the modem")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return h.reports()
}

func TestCellChangeReportsThrottled(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC)}
	h := startClock(t, Config{Poll: time.Hour, Heartbeat: time.Hour, CellChangeInterval: time.Minute}, clock.now)
	rs := h.waitReports(1)
	if c := rs[0].Registration.Cell; c == nil || *c != (protocol.Cell{MCC: "460", MNC: "03", Area: 0x31c5, ID: 0x0083f7cd}) {
		t.Fatalf("start report cell %+v", c)
	}

	// The first move is reported at once.
	h.moveTo("1A2C", "0083F7CE")
	rs = h.waitReports(2)
	if r := rs[1]; r.Reason != protocol.ReasonChange || r.Registration.Cell.Area != 0x1a2c || r.Registration.Cell.ID != 0x0083f7ce {
		t.Fatalf("cell change report: %s %+v", r.Reason, r.Registration.Cell)
	}

	// A second move within the interval is held back.
	clock.add(10 * time.Second)
	h.moveTo("1A2D", "0083F7CF")
	if rs = h.settle(); len(rs) != 2 {
		t.Fatalf("%d reports after a second move within the interval, want 2", len(rs))
	}

	// A SIM change is never held back, and carries the current cell.
	h.modem.set(func(id *identity.Identity) { id.ICCID = "8901260886258128535" })
	rs = h.waitReports(3)
	if r := rs[2]; r.ICCID != "8901260886258128535" || r.Registration.Cell.ID != 0x0083f7cf {
		t.Fatalf("SIM change report: %s %+v", r.ICCID, r.Registration.Cell)
	}

	// Once the interval has passed the next move goes out.
	clock.add(time.Minute)
	h.moveTo("1A2E", "0083F7D0")
	rs = h.waitReports(4)
	if r := rs[3]; r.Reason != protocol.ReasonChange || r.Registration.Cell.ID != 0x0083f7d0 || r.Registration.Cell.MCC != "460" {
		t.Fatalf("cell change report after the interval: %s %+v", r.Reason, r.Registration.Cell)
	}
	// Back and forth within the interval: nothing.
	clock.add(time.Second)
	h.moveTo("1A2F", "0083F7D1")
	h.moveTo("1A2E", "0083F7D0")
	if rs = h.settle(); len(rs) != 4 {
		t.Fatalf("%d reports, want 4", len(rs))
	}
}

// A move held back goes out by itself once the interval has passed.
func TestCellChangeHeldBackGoesOut(t *testing.T) {
	const interval = 300 * time.Millisecond
	h := start(t, Config{Poll: time.Hour, Heartbeat: time.Hour, CellChangeInterval: interval})
	h.waitReports(1)
	h.moveTo("1A2C", "0083F7CE")
	h.waitReports(2)
	h.moveTo("1A2D", "0083F7CF")
	rs := h.waitReports(3)
	if r := rs[2]; r.Reason != protocol.ReasonChange || r.Registration.Cell.ID != 0x0083f7cf {
		t.Fatalf("held-back report: %s %+v", r.Reason, r.Registration.Cell)
	}
	if gap := rs[2].Time.Sub(rs[1].Time); gap < interval {
		t.Errorf("two cell change reports %v apart, interval %v", gap, interval)
	}
}

func TestCellChangeReportsOff(t *testing.T) {
	h := start(t, Config{Poll: time.Hour, Heartbeat: time.Hour})
	h.waitReports(1)
	h.moveTo("1A2C", "0083F7CE")
	if rs := h.settle(); len(rs) != 1 {
		t.Fatalf("%d reports with cell change reports off", len(rs))
	}
	// Turned on while running (SIGHUP).
	h.agent.Reconfigure(Settings{CellChangeInterval: time.Minute})
	h.moveTo("1A2D", "0083F7CF")
	deadline := time.Now().Add(5 * time.Second)
	for len(h.reports()) < 2 && time.Now().Before(deadline) {
		h.modem.events <- struct{}{} // the settings may land after the first event
		time.Sleep(20 * time.Millisecond)
	}
	if rs := h.waitReports(2); rs[1].Registration.Cell.ID != 0x0083f7cf {
		t.Errorf("report after reconfigure: %+v", rs[1].Registration.Cell)
	}
}

package agent

import (
	"math"
	"testing"
	"time"

	"github.com/cardbind/cardbind/agent/identity"
	"github.com/cardbind/cardbind/protocol"
)

func TestGNSSLocation(t *testing.T) {
	if l := gnssLocation(nil); l != nil {
		t.Errorf("no fix gave %+v", l)
	}
	l := gnssLocation(&identity.Fix{Lat: 31.231, Lon: 121.474, HDOP: 1.1})
	if *l != (protocol.Location{Lat: 31.231, Lon: 121.474, AccuracyM: 5.5, Source: "gnss"}) {
		t.Errorf("location %+v", *l)
	}
	if l := gnssLocation(&identity.Fix{Lat: 31.231, Lon: 121.474}); l.AccuracyM != 0 {
		t.Errorf("no HDOP gave accuracy %v", l.AccuracyM)
	}
	r := &protocol.Report{Version: protocol.Version, DeviceID: "d", Seq: 1, Time: time.Now(), Reason: protocol.ReasonStart,
		IMEI: "356938035643809", SIM: protocol.SIMAbsent, Registration: protocol.Registration{State: protocol.RegUnknown, Stat: -1},
		Location: gnssLocation(&identity.Fix{Lat: -89.9, Lon: 179.9, HDOP: 99.9}), Sig: make([]byte, 64)}
	if err := r.Validate(); err != nil {
		t.Errorf("report with a GNSS location: %v", err)
	}
}

func TestDistance(t *testing.T) {
	// 0.01° of latitude is 1.112 km.
	if d := distanceM(31.2, 121.4, 31.21, 121.4); math.Abs(d-1111.95) > 1 {
		t.Errorf("distance %v", d)
	}
	if d := distanceM(31.2, 121.4, 31.2, 121.4); d != 0 {
		t.Errorf("same point %v", d)
	}
}

// fixAt gives the fake modem a GNSS fix (nil: none) and signals it.
func (h *harness) fixAt(f *identity.Fix) {
	h.modem.set(func(id *identity.Identity) { id.GNSS = f })
}

// A GNSS fix rides in every report; a fix after none, or a move beyond
// MoveThreshold, is reported like a cell change (same throttle); jitter
// and losing the fix are not.
func TestGNSSMoveReports(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 27, 4, 0, 0, 0, time.UTC)}
	h := startClock(t, Config{Poll: time.Hour, Heartbeat: time.Hour, CellChangeInterval: time.Minute}, clock.now)
	if rs := h.waitReports(1); rs[0].Location != nil {
		t.Fatalf("start report without fix has location %+v", rs[0].Location)
	}

	// A fix where there was none.
	h.fixAt(&identity.Fix{Lat: 31.231, Lon: 121.474, HDOP: 1.1})
	rs := h.waitReports(2)
	if l := rs[1].Location; rs[1].Reason != protocol.ReasonChange || l == nil || l.Source != "gnss" || l.Lat != 31.231 || l.AccuracyM != 5.5 {
		t.Fatalf("first fix report: %s %+v", rs[1].Reason, l)
	}

	// Jitter of 50 m: nothing.
	clock.add(2 * time.Minute)
	h.fixAt(&identity.Fix{Lat: 31.2314, Lon: 121.474, HDOP: 1.1})
	if rs = h.settle(); len(rs) != 2 {
		t.Fatalf("%d reports after 50 m of jitter, want 2", len(rs))
	}

	// A move of 1.1 km: reported.
	h.fixAt(&identity.Fix{Lat: 31.241, Lon: 121.474, HDOP: 1.1})
	rs = h.waitReports(3)
	if l := rs[2].Location; l == nil || l.Lat != 31.241 {
		t.Fatalf("move report location %+v", l)
	}

	// Another move within the interval: held back.
	clock.add(10 * time.Second)
	h.fixAt(&identity.Fix{Lat: 31.251, Lon: 121.474, HDOP: 1.1})
	if rs = h.settle(); len(rs) != 3 {
		t.Fatalf("%d reports after a move within the interval, want 3", len(rs))
	}

	// Losing the fix: nothing; the heartbeat carries none.
	clock.add(2 * time.Minute)
	h.fixAt(nil)
	if rs = h.settle(); len(rs) != 3 {
		t.Fatalf("%d reports after losing the fix, want 3", len(rs))
	}
}

package atmodem

import (
	"context"
	"maps"
	"math"
	"testing"
	"time"

	"github.com/cardbind/cardbind/agent/identity"
)

func countCmd(mod *module, cmd string) int {
	n := 0
	for _, c := range mod.commands() {
		if c == cmd {
			n++
		}
	}
	return n
}

func identifyGNSS(t *testing.T, m *Modem) *identity.Fix {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := m.Identify(ctx)
	if err != nil {
		t.Fatalf("Identify: %v", err)
	}
	if id.IMEI == "" {
		t.Fatalf("Identify without IMEI: %+v", id)
	}
	return id.GNSS
}

// Quectel EC25: GNSS already on (504), no fix yet (516), then a fix with a
// URC inside the reply; the module turned GNSS off (505) is turned on
// again.
func TestGNSSQuectel(t *testing.T) {
	t.Parallel()
	replies := maps.Clone(quectelEC25)
	replies["AT+QGPS=1"] = say("\r\n+CME ERROR: 504\r\n")
	replies["AT+QGPSLOC=2"] = say("\r\n+CME ERROR: 516\r\n")
	mod := newModule(t, replies)
	m := startModem(t, mod, Config{GNSS: true})
	if f := identifyGNSS(t, m); f != nil {
		t.Errorf("no fix yet, got %+v", f)
	}
	mod.setReply("AT+QGPSLOC=2", []chunk{
		{data: "\r\n+QGPSLOC: 072809.0,31.23100,"},
		{delay: 50 * time.Millisecond, data: "121.47400,1.1,12.0,3,0.00,0.0,0.0,271126,08\r\r\n\r\n+QIND: \"csq\",20,99\r\n"},
		{data: "\r\nOK\r\n"},
	})
	f := identifyGNSS(t, m)
	if f == nil || math.Abs(f.Lat-31.231) > 1e-9 || math.Abs(f.Lon-121.474) > 1e-9 || f.HDOP != 1.1 {
		t.Fatalf("fix %+v", f)
	}
	mod.setReply("AT+QGPSLOC=2", say("\r\n+CME ERROR: 505\r\n"))
	if f := identifyGNSS(t, m); f != nil {
		t.Errorf("GNSS off, got %+v", f)
	}
	mod.setReply("AT+QGPS=1", say("\r\nOK\r\n"))
	mod.setReply("AT+QGPSLOC=2", say("\r\n+QGPSLOC: 072810.0,31.23200,121.47500,0.9,12.0,3,0.00,0.0,0.0,271126,08\r\n\r\nOK\r\n"))
	if f := identifyGNSS(t, m); f == nil || f.HDOP != 0.9 {
		t.Errorf("after turning GNSS on again: %+v", f)
	}
	if n := countCmd(mod, "AT+QGPS=1"); n != 2 {
		t.Errorf("AT+QGPS=1 sent %d times, want 2 (open, after 505)", n)
	}
}

// SIMCom SIM7600: AT+CGPS=1 answers ERROR when GNSS is on already; empty
// fields are no fix.
func TestGNSSSIMCom(t *testing.T) {
	t.Parallel()
	replies := maps.Clone(simcomSIM7600)
	replies["AT+CGPS=1"] = say("\r\nERROR\r\n")
	replies["AT+CGPSINFO"] = say("\r\n+CGPSINFO: ,,,,,,,,\r\r\n\r\nOK\r\n")
	mod := newModule(t, replies)
	m := startModem(t, mod, Config{GNSS: true})
	for range 3 {
		if f := identifyGNSS(t, m); f != nil {
			t.Errorf("no fix yet, got %+v", f)
		}
	}
	mod.setReply("AT+CGPSINFO", say("\r\n+CGPSINFO: 3113.860000,N,12128.440000,E,271126,072809.0,12.0,0.0,0.0\r\r\n\r\nOK\r\r\n"))
	f := identifyGNSS(t, m)
	if f == nil || math.Abs(f.Lat-31.231) > 1e-9 || math.Abs(f.Lon-121.474) > 1e-9 || f.HDOP != 0 {
		t.Fatalf("fix %+v", f)
	}
	if n := countCmd(mod, "AT+CGPSINFO"); n != 4 {
		t.Errorf("AT+CGPSINFO sent %d times, want 4", n)
	}
}

// A Quectel module without GNSS (BG95-M1 style: plain ERROR): asked twice,
// then not until the port reopens.
func TestGNSSUnknownCommand(t *testing.T) {
	t.Parallel()
	mod := newModule(t, quectelEC25) // AT+QGPS=1 and AT+QGPSLOC=2 answer ERROR
	m := startModem(t, mod, Config{GNSS: true})
	for range 4 {
		if f := identifyGNSS(t, m); f != nil {
			t.Errorf("fix from a module without GNSS: %+v", f)
		}
	}
	if n := countCmd(mod, "AT+QGPSLOC=2"); n != gnssMaxRefusals {
		t.Errorf("AT+QGPSLOC=2 sent %d times, want %d", n, gnssMaxRefusals)
	}
	up := m.Up()
	mod.unplug()
	for deadline := time.Now().Add(2 * time.Second); m.Up() == up; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Up channel still the old one after the port failed")
		}
	}
	mod.setReply("AT+QGPSLOC=2", say("\r\n+QGPSLOC: 072809.0,31.23100,121.47400,1.1,12.0,3,0.00,0.0,0.0,271126,08\r\n\r\nOK\r\n"))
	mod.plug()
	waitUp(t, m)
	if f := identifyGNSS(t, m); f == nil {
		t.Error("no fix after the reopen")
	}
	if n := countCmd(mod, "AT+QGPS=1"); n != 2 {
		t.Errorf("AT+QGPS=1 sent %d times, want one per open", n)
	}
}

// GNSS off in the configuration, or a vendor without GNSS: no GNSS command
// is ever sent.
func TestGNSSNotAsked(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		replies map[string][]chunk
		gnss    bool
	}{
		"quectel, gnss off": {quectelEC25, false},
		"ublox, gnss on":    {ubloxSARA, true},
		"generic, gnss on":  {genericNoSIM, true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			mod := newModule(t, tc.replies)
			m := startModem(t, mod, Config{GNSS: tc.gnss})
			if f := identifyGNSS(t, m); f != nil {
				t.Errorf("fix %+v", f)
			}
			for _, c := range mod.commands() {
				switch c {
				case "AT+QGPS=1", "AT+QGPSLOC=2", "AT+CGPS=1", "AT+CGPSINFO":
					t.Errorf("sent %s", c)
				}
			}
		})
	}
}

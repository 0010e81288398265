package modem

import (
	"errors"
	"testing"
	"time"
)

// gnssClock is the fixed clock of the GNSS answers: 27 Nov 2026 07:28:09 UTC.
func gnssClock() time.Time { return time.Date(2026, 11, 27, 7, 28, 9, 0, time.UTC) }

var shanghai = &GNSSFix{Lat: 31.231, Lon: 121.474, HDOP: 1.1}

// The GNSS receiver per personality: off, on without fix, with a fix, as
// the modules answer (Quectel GNSS AT manual; SIMCom SIM7600 AT manual).
func TestGNSSAnswers(t *testing.T) {
	south := &GNSSFix{Lat: -33.8688, Lon: -70.6693, HDOP: 2.5}
	tests := []struct {
		personality string
		fix         *GNSSFix
		setup       []string
		cmd         string
		want        string
	}{
		// Quectel: 505 while off, 504 when on already, 516 without fix.
		{"quectel", shanghai, nil, "AT+QGPSLOC=2", info("+CME ERROR: 505")},
		{"quectel", nil, nil, "AT+QGPS=1", ok},
		{"quectel", nil, []string{"AT+QGPS=1"}, "AT+QGPS=1", info("+CME ERROR: 504")},
		{"quectel", nil, []string{"AT+QGPS=1"}, "AT+QGPS?", info("+QGPS: 1") + ok},
		{"quectel", nil, []string{"AT+QGPS=1"}, "AT+QGPSLOC=2", info("+CME ERROR: 516")},
		{"quectel", nil, []string{"AT+QGPS=1", "AT+CMEE=2"}, "AT+QGPSLOC=2", info("+CME ERROR: Not fixed now")},
		{"quectel", shanghai, []string{"AT+QGPS=1"}, "AT+QGPSLOC=2",
			info("+QGPSLOC: 072809.0,31.23100,121.47400,1.1,12.0,3,0.00,0.0,0.0,271126,08") + ok},
		{"quectel", shanghai, []string{"AT+QGPS=1"}, "AT+QGPSLOC=0",
			info("+QGPSLOC: 072809.0,3113.8600N,12128.4400E,1.1,12.0,3,0.00,0.0,0.0,271126,08") + ok},
		{"quectel", shanghai, []string{"AT+QGPS=1"}, "AT+QGPSLOC",
			info("+QGPSLOC: 072809.0,3113.8600N,12128.4400E,1.1,12.0,3,0.00,0.0,0.0,271126,08") + ok},
		{"quectel", south, []string{"AT+QGPS=1"}, "AT+QGPSLOC=1",
			info("+QGPSLOC: 072809.0,3352.128000S,07040.158000W,2.5,12.0,3,0.00,0.0,0.0,271126,08") + ok},
		{"quectel", south, []string{"AT+QGPS=1"}, "AT+QGPSLOC=2",
			info("+QGPSLOC: 072809.0,-33.86880,-70.66930,2.5,12.0,3,0.00,0.0,0.0,271126,08") + ok},
		{"quectel", shanghai, []string{"AT+QGPS=1"}, "AT+QGPSLOC=3", info("+CME ERROR: 50")},
		{"quectel", shanghai, []string{"AT+QGPS=1", "AT+QGPSEND"}, "AT+QGPSLOC=2", info("+CME ERROR: 505")},
		{"quectel", nil, nil, "AT+QGPSEND", info("+CME ERROR: 505")},
		// SIMCom: empty fields while off or without a fix; ERROR when
		// switched to the state it is in.
		{"simcom", shanghai, nil, "AT+CGPSINFO", info("+CGPSINFO: ,,,,,,,,") + ok},
		{"simcom", nil, nil, "AT+CGPS=1", ok},
		{"simcom", nil, []string{"AT+CGPS=1"}, "AT+CGPS=1", "\r\nERROR\r\n"},
		{"simcom", nil, []string{"AT+CGPS=1"}, "AT+CGPS?", info("+CGPS: 1,1") + ok},
		{"simcom", nil, []string{"AT+CGPS=1"}, "AT+CGPSINFO", info("+CGPSINFO: ,,,,,,,,") + ok},
		{"simcom", shanghai, []string{"AT+CGPS=1"}, "AT+CGPSINFO",
			info("+CGPSINFO: 3113.860000,N,12128.440000,E,271126,072809.0,12.0,0.0,0.0") + ok},
		{"simcom", south, []string{"AT+CGPS=1,1"}, "AT+CGPSINFO",
			info("+CGPSINFO: 3352.128000,S,07040.158000,W,271126,072809.0,12.0,0.0,0.0") + ok},
		{"simcom", shanghai, []string{"AT+CGPS=1", "AT+CGPS=0"}, "AT+CGPSINFO", info("+CGPSINFO: ,,,,,,,,") + ok},
		// No GNSS: unknown commands.
		{"ublox", nil, nil, "AT+QGPS=1", "\r\nERROR\r\n"},
		{"ublox", nil, nil, "AT+CGPSINFO", "\r\nERROR\r\n"},
		{"generic", nil, nil, "AT+QGPSLOC=2", "\r\nERROR\r\n"},
		{"generic", nil, nil, "AT+CGPS=1", "\r\nERROR\r\n"},
		{"quectel", nil, nil, "AT+CGPSINFO", "\r\nERROR\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.personality+" "+tt.cmd, func(t *testing.T) {
			t.Parallel()
			m, err := New(Config{Personality: tt.personality, IMEI: testIMEI, SIM: testSIM()})
			if err != nil {
				t.Fatal(err)
			}
			m.now = gnssClock
			if tt.fix != nil {
				if err := m.SetGNSS(tt.fix); err != nil {
					t.Fatal(err)
				}
			}
			h := startHarness(t, m)
			h.settle()
			h.send("ATE0\r")
			for _, s := range tt.setup {
				h.send(s + "\r")
			}
			if got := h.send(tt.cmd + "\r"); got != tt.want {
				t.Errorf("%s: got %q, want %q", tt.cmd, got, tt.want)
			}
		})
	}
}

// A reboot turns the receiver off; the fix (where the modem is) stays.
func TestGNSSReboot(t *testing.T) {
	m, err := New(Config{Personality: "quectel", IMEI: testIMEI, GNSS: &GNSSFix{Lat: 31.231, Lon: 121.474}})
	if err != nil {
		t.Fatal(err)
	}
	if g := m.GNSS(); g.On || g.Fix == nil || g.Fix.HDOP != DefaultHDOP {
		t.Fatalf("initial GNSS %+v", g)
	}
	m.st.gnssOn = true
	m.st.powerOn(m.pers)
	if g := m.GNSS(); g.On || g.Fix == nil {
		t.Errorf("after power-on: %+v", g)
	}
	if st := m.State(); st.GNSS == nil || st.GNSS.Fix == nil {
		t.Errorf("state without GNSS: %+v", st.GNSS)
	}
}

func TestSetGNSS(t *testing.T) {
	m, err := New(Config{Personality: "simcom", IMEI: testIMEI})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []GNSSFix{{Lat: 91}, {Lon: -181}, {HDOP: -1}, {HDOP: 100}} {
		if err := m.SetGNSS(&bad); err == nil {
			t.Errorf("SetGNSS(%+v) accepted", bad)
		}
	}
	if err := m.SetGNSS(shanghai); err != nil {
		t.Fatal(err)
	}
	if err := m.SetGNSS(nil); err != nil || m.GNSS().Fix != nil {
		t.Errorf("lose fix: %v, %+v", err, m.GNSS())
	}
	u, err := New(Config{Personality: "ublox", IMEI: testIMEI})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.SetGNSS(shanghai); !errors.Is(err, ErrNoGNSS) {
		t.Errorf("ublox SetGNSS: %v, want ErrNoGNSS", err)
	}
	if u.State().GNSS != nil {
		t.Error("ublox state shows GNSS")
	}
	if _, err := New(Config{Personality: "generic", IMEI: testIMEI, GNSS: shanghai}); !errors.Is(err, ErrNoGNSS) {
		t.Errorf("generic with a fix: %v, want ErrNoGNSS", err)
	}
}

func TestParseGNSSFix(t *testing.T) {
	tests := []struct {
		in   string
		want GNSSFix
		ok   bool
	}{
		{"31.231,121.474", GNSSFix{Lat: 31.231, Lon: 121.474}, true},
		{" -33.5, -70.25 ,2.5", GNSSFix{Lat: -33.5, Lon: -70.25, HDOP: 2.5}, true},
		{"31.231", GNSSFix{}, false},
		{"91,0", GNSSFix{}, false},
		{"a,b", GNSSFix{}, false},
		{"1,2,3,4", GNSSFix{}, false},
		{"NaN,0", GNSSFix{}, false},
	}
	for _, tt := range tests {
		got, err := ParseGNSSFix(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseGNSSFix(%q) = %+v, %v", tt.in, got, err)
		}
	}
}

func TestNMEA(t *testing.T) {
	tests := []struct {
		v    float64
		lat  bool
		want string
	}{
		{31.231, true, "3113.860000,N"},
		{0, true, "0000.000000,N"},
		{-0.5, false, "00030.000000,W"},
		{179.99999999999, false, "18000.000000,E"},
		{8.1234567, true, "0807.407402,N"},
	}
	for _, tt := range tests {
		got := nmeaLon(tt.v, 6, false)
		if tt.lat {
			got = nmeaLat(tt.v, 6, false)
		}
		if got != tt.want {
			t.Errorf("%v: %q, want %q", tt.v, got, tt.want)
		}
	}
}

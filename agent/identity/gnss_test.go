package identity

import (
	"errors"
	"math"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

// Replies of real modules (Quectel GNSS AT manual and EC25/BG96 logs;
// SIMCom SIM7600 AT manual and logs), with the noise real ports add.
func TestParseQGPSLOC(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want Fix
		err  error // nil: want the fix; ErrNoFix; or ErrNotFound (any error)
	}{
		{"mode 2", []string{"+QGPSLOC: 061951.000,31.84536,117.19879,0.7,62.2,2,0.00,0.0,0.0,110513,09"},
			Fix{31.84536, 117.19879, 0.7}, nil},
		{"mode 2, firmware-sim", []string{"+QGPSLOC: 072809.0,31.23100,121.47400,1.1,12.0,3,0.00,0.0,0.0,271126,08"},
			Fix{31.231, 121.474, 1.1}, nil},
		{"mode 0", []string{"+QGPSLOC: 061951.000,3150.7223N,11711.9293E,0.7,62.2,2,0.00,0.0,0.0,110513,09"},
			Fix{31 + 50.7223/60, 117 + 11.9293/60, 0.7}, nil},
		{"mode 1, south west", []string{"+QGPSLOC: 152325.0,3352.128000S,07040.158000W,2.5,520.0,3,0.00,0.0,0.0,010226,05"},
			Fix{-(33 + 52.128/60), -(70 + 40.158/60), 2.5}, nil},
		{"mode 2, negative", []string{"+QGPSLOC: 152325.0,-33.86880,-70.66930,1.0,520.0,3,0.00,0.0,0.0,010226,05"},
			Fix{-33.8688, -70.6693, 1.0}, nil},
		{"echo and URC around it", []string{"AT+QGPSLOC=2", `+CEREG: 1,"1A2C","01A2B3C5",7`,
			"+QGPSLOC: 061951.000,31.84536,117.19879,0.7,62.2,2,0.00,0.0,0.0,110513,09", ""}, Fix{31.84536, 117.19879, 0.7}, nil},
		{"trailing CR and spaces", []string{"+QGPSLOC: 061951.000, 31.84536 , 117.19879,0.7,62.2,2,0.00,0.0,0.0,110513,09\r"},
			Fix{31.84536, 117.19879, 0.7}, nil},
		{"bad HDOP is no HDOP", []string{"+QGPSLOC: 061951.000,31.84536,117.19879,,62.2,2,0.00,0.0,0.0,110513,09"},
			Fix{31.84536, 117.19879, 0}, nil},
		{"short old firmware", []string{"+QGPSLOC: 061951.000,31.84536,117.19879,0.7"}, Fix{31.84536, 117.19879, 0.7}, nil},
		{"fix mode 1 is no fix", []string{"+QGPSLOC: 061951.000,31.84536,117.19879,0.7,62.2,1,0.00,0.0,0.0,110513,00"}, Fix{}, ErrNoFix},
		{"zeros before the first fix", []string{"+QGPSLOC: 000000.0,0.00000,0.00000,99.9,0.0,2,0.00,0.0,0.0,060180,00"}, Fix{}, ErrNoFix},
		{"empty position", []string{"+QGPSLOC: 000000.0,,,,,0,,,,,"}, Fix{}, ErrNoFix},
		{"nothing", []string{"OK"}, Fix{}, ErrNotFound},
		{"latitude out of range", []string{"+QGPSLOC: 061951.000,91.0,117.1,0.7"}, Fix{}, ErrNotFound},
		{"minutes out of range", []string{"+QGPSLOC: 061951.000,3160.7223N,11711.9293E,0.7"}, Fix{}, ErrNotFound},
		{"NaN", []string{"+QGPSLOC: 061951.000,NaN,117.1,0.7"}, Fix{}, ErrNotFound},
		{"exponent", []string{"+QGPSLOC: 061951.000,1e1,117.1,0.7"}, Fix{}, ErrNotFound},
		{"garbled", []string{"+QGPSLOC: 06\x0051.000,3#.84536"}, Fix{}, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseQGPSLOC(tt.in)
			checkFix(t, got, err, tt.want, tt.err)
		})
	}
}

func TestParseCGPSINFO(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want Fix
		err  error
	}{
		{"SIM7600 manual", []string{"+CGPSINFO: 3113.343286,N,12121.234064,E,250311,072809.3,44.1,0.0,0"},
			Fix{31 + 13.343286/60, 121 + 21.234064/60, 0}, nil},
		{"firmware-sim", []string{"+CGPSINFO: 3113.860000,N,12128.440000,E,271126,072809.0,12.0,0.0,0.0"},
			Fix{31.231, 121.474, 0}, nil},
		{"south west", []string{"+CGPSINFO: 3352.128000,S,07040.158000,W,271126,072809.0,12.0,0.0,0.0"},
			Fix{-(33 + 52.128/60), -(70 + 40.158/60), 0}, nil},
		{"no fix", []string{"+CGPSINFO: ,,,,,,,,"}, Fix{}, ErrNoFix},
		{"no fix, shorter", []string{"+CGPSINFO:,,,,,,,"}, Fix{}, ErrNoFix},
		{"echo, URC, no fix", []string{"AT+CGPSINFO", "+CPIN: READY", "+CGPSINFO: ,,,,,,,,"}, Fix{}, ErrNoFix},
		{"URC first", []string{"SMS DONE", "+CGPSINFO: 3113.343286,N,12121.234064,E,250311,072809.3,44.1,0.0,0"},
			Fix{31 + 13.343286/60, 121 + 21.234064/60, 0}, nil},
		{"lower-case hemisphere", []string{"+CGPSINFO: 3113.343286,n,12121.234064,e,250311,072809.3,44.1,0.0,0"},
			Fix{31 + 13.343286/60, 121 + 21.234064/60, 0}, nil},
		{"no hemisphere", []string{"+CGPSINFO: 3113.343286,,12121.234064,,250311,072809.3,44.1,0.0,0"}, Fix{}, ErrNotFound},
		{"wrong hemisphere", []string{"+CGPSINFO: 3113.343286,E,12121.234064,N,250311,072809.3,44.1,0.0,0"}, Fix{}, ErrNotFound},
		{"longitude too far", []string{"+CGPSINFO: 3113.343286,N,18121.234064,E,250311,072809.3,44.1,0.0,0"}, Fix{}, ErrNotFound},
		{"truncated", []string{"+CGPSINFO: 3113.343286,N"}, Fix{}, ErrNotFound},
		{"nothing", nil, Fix{}, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCGPSINFO(tt.in)
			checkFix(t, got, err, tt.want, tt.err)
		})
	}
}

func checkFix(t *testing.T, got Fix, err error, want Fix, wantErr error) {
	t.Helper()
	switch {
	case wantErr == nil:
		if err != nil || !near(got.Lat, want.Lat) || !near(got.Lon, want.Lon) || got.HDOP != want.HDOP {
			t.Errorf("got %+v, %v; want %+v", got, err, want)
		}
	case errors.Is(wantErr, ErrNoFix):
		if !errors.Is(err, ErrNoFix) || got != (Fix{}) {
			t.Errorf("got %+v, %v; want ErrNoFix", got, err)
		}
	default:
		if err == nil || errors.Is(err, ErrNoFix) || got != (Fix{}) {
			t.Errorf("got %+v, %v; want a parse error", got, err)
		}
	}
}

func TestVendorGNSS(t *testing.T) {
	for v, want := range map[Vendor]string{VendorQuectel: "AT+QGPSLOC=2", VendorSIMCom: "AT+CGPSINFO", VendorUblox: "", VendorGeneric: "", VendorTelit: ""} {
		g, ok := v.GNSS()
		if g.Read != want || ok != (want != "") || ok && (g.Enable == "" || g.Parse == nil) {
			t.Errorf("%s: %+v %v", v, g, ok)
		}
	}
}

package modem

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// GNSSFix is a position the modem's GNSS receiver has a fix at.
type GNSSFix struct {
	Lat float64 `json:"lat"`
	Lon float64 `json:"lon"`
	// HDOP is the horizontal dilution of precision; 0 means DefaultHDOP.
	HDOP float64 `json:"hdop"`
}

// DefaultHDOP is the HDOP of a fix set without one: a good open-sky fix.
const DefaultHDOP = 1.1

// gnssAltitude is the altitude (m) the answers show; the simulator keeps
// none of its own.
const gnssAltitude = 12.0

// Validate checks the coordinates and the HDOP.
func (f GNSSFix) Validate() error {
	switch {
	case math.IsNaN(f.Lat) || f.Lat < -90 || f.Lat > 90:
		return fmt.Errorf("gnss: lat %v out of range -90..90", f.Lat)
	case math.IsNaN(f.Lon) || f.Lon < -180 || f.Lon > 180:
		return fmt.Errorf("gnss: lon %v out of range -180..180", f.Lon)
	case math.IsNaN(f.HDOP) || f.HDOP < 0 || f.HDOP > 99.9:
		return fmt.Errorf("gnss: hdop %v out of range 0..99.9", f.HDOP)
	}
	return nil
}

// ParseGNSSFix reads "LAT,LON" or "LAT,LON,HDOP" in decimal degrees, as the
// --gnss flag gives it.
func ParseGNSSFix(s string) (GNSSFix, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 2 && len(parts) != 3 {
		return GNSSFix{}, fmt.Errorf("gnss %q: want LAT,LON or LAT,LON,HDOP", s)
	}
	var v [3]float64
	for i, p := range parts {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil {
			return GNSSFix{}, fmt.Errorf("gnss %q: %w", s, err)
		}
		v[i] = f
	}
	fix := GNSSFix{Lat: v[0], Lon: v[1], HDOP: v[2]}
	if err := fix.Validate(); err != nil {
		return GNSSFix{}, err
	}
	return fix, nil
}

// GNSSState is the GNSS part of State.
type GNSSState struct {
	// On is true while the client has the receiver on (AT+QGPS=1,
	// AT+CGPS=1); a reboot turns it off.
	On bool `json:"on"`
	// Fix is where the receiver has a fix, whether on or not; nil: no fix.
	Fix *GNSSFix `json:"fix,omitempty"`
}

// Quectel GNSS error codes (Quectel GNSS AT commands manual, "Summary of
// error codes").
const (
	cmeGNSSSessionOngoing   cmeError = 504
	cmeGNSSSessionNotActive cmeError = 505
	cmeGNSSNotFixed         cmeError = 516
)

// ErrNoGNSS means the personality has no GNSS receiver.
var ErrNoGNSS = errors.New("modem: this personality has no GNSS")

// HasGNSS reports whether the modem's personality answers GNSS commands
// (quectel and simcom).
func (m *Modem) HasGNSS() bool { return m.pers.gnss }

// GNSS returns the receiver's state.
func (m *Modem) GNSS() GNSSState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.gnssState()
}

func (s *state) gnssState() GNSSState {
	out := GNSSState{On: s.gnssOn}
	if s.gnssFix != nil {
		f := *s.gnssFix
		out.Fix = &f
	}
	return out
}

// SetGNSS gives the receiver a fix at f (HDOP 0 means DefaultHDOP), or
// takes the fix away when f is nil. The fix is where the modem is: it stays
// across reboots, and answers show it while the client has the receiver
// on. Personalities without GNSS refuse with ErrNoGNSS.
func (m *Modem) SetGNSS(f *GNSSFix) error {
	if !m.pers.gnss {
		return ErrNoGNSS
	}
	var fix *GNSSFix
	if f != nil {
		if err := f.Validate(); err != nil {
			return fmt.Errorf("modem: %w", err)
		}
		c := *f
		if c.HDOP == 0 {
			c.HDOP = DefaultHDOP
		}
		fix = &c
	}
	m.mu.Lock()
	m.st.gnssFix = fix
	m.mu.Unlock()
	if fix != nil {
		m.log.Info("GNSS fix set", "lat", fix.Lat, "lon", fix.Lon, "hdop", fix.HDOP)
	} else {
		m.log.Info("GNSS fix lost")
	}
	return nil
}

// gnssHandlers are the AT commands of a personality's GNSS receiver.
func gnssHandlers(personality string) map[string]handler {
	switch personality {
	case "quectel":
		return map[string]handler{"+QGPS": atQGPS, "+QGPSEND": atQGPSEND, "+QGPSLOC": atQGPSLOC}
	case "simcom":
		return map[string]handler{"+CGPS": atCGPS, "+CGPSINFO": atCGPSINFO}
	}
	return nil
}

// atQGPS is Quectel's AT+QGPS=<gnssmode>[,...]: turn GNSS on; 504 if it
// is on already.
func atQGPS(x *execCtx, c command) ([]string, error) {
	switch c.Form {
	case formRead:
		return []string{fmt.Sprintf("+QGPS: %d", b2i(x.s.gnssOn))}, nil
	case formTest:
		return []string{"+QGPS: (1),(1-255),(1-1000),(0-1000),(1-65535)"}, nil
	case formSet:
		if args := splitArgs(c.Arg); args[0] != "1" {
			return nil, cmeIncorrectParameters
		}
		if x.s.gnssOn {
			return nil, cmeGNSSSessionOngoing
		}
		x.s.gnssOn = true
		return nil, nil
	}
	return nil, errPlain
}

// atQGPSEND turns GNSS off; 505 if it is off.
func atQGPSEND(x *execCtx, c command) ([]string, error) {
	switch c.Form {
	case formExec:
		if !x.s.gnssOn {
			return nil, cmeGNSSSessionNotActive
		}
		x.s.gnssOn = false
		return nil, nil
	case formTest:
		return nil, nil
	}
	return nil, errPlain
}

// atQGPSLOC is AT+QGPSLOC[=<mode>]:
//
//	+QGPSLOC: <UTC>,<lat>,<lon>,<HDOP>,<alt>,<fix>,<COG>,<spkm>,<spkn>,<date>,<nsat>
//
// with the latitude and longitude as ddmm.mmmmN / dddmm.mmmmE (mode 0),
// ddmm.mmmmmmN (mode 1) or signed decimal degrees (mode 2). 505 while GNSS
// is off, 516 without a fix.
func atQGPSLOC(x *execCtx, c command) ([]string, error) {
	mode := 0
	switch c.Form {
	case formTest:
		return []string{"+QGPSLOC: (0-2)"}, nil
	case formExec:
	case formSet:
		v, err := strconv.Atoi(c.Arg)
		if err != nil || v < 0 || v > 2 {
			return nil, cmeIncorrectParameters
		}
		mode = v
	default:
		return nil, errPlain
	}
	if !x.s.gnssOn {
		return nil, cmeGNSSSessionNotActive
	}
	f := x.s.gnssFix
	if f == nil {
		return nil, cmeGNSSNotFixed
	}
	now := x.m.now().UTC()
	var lat, lon string
	switch mode {
	case 0:
		lat, lon = nmeaLat(f.Lat, 4, true), nmeaLon(f.Lon, 4, true)
	case 1:
		lat, lon = nmeaLat(f.Lat, 6, true), nmeaLon(f.Lon, 6, true)
	case 2:
		lat, lon = strconv.FormatFloat(f.Lat, 'f', 5, 64), strconv.FormatFloat(f.Lon, 'f', 5, 64)
	}
	return []string{fmt.Sprintf("+QGPSLOC: %s,%s,%s,%.1f,%.1f,3,0.00,0.0,0.0,%s,08",
		now.Format("150405.0"), lat, lon, f.HDOP, gnssAltitude, now.Format("020106"))}, nil
}

// atCGPS is SIMCom's AT+CGPS=<on/off>[,<mode>]. Turning on what is on (or
// off what is off) is a plain ERROR, as on the SIM7600.
func atCGPS(x *execCtx, c command) ([]string, error) {
	switch c.Form {
	case formRead:
		return []string{fmt.Sprintf("+CGPS: %d,1", b2i(x.s.gnssOn))}, nil
	case formTest:
		return []string{"+CGPS: (0,1),(1,2)"}, nil
	case formSet:
		args := splitArgs(c.Arg)
		on := args[0] == "1"
		if !on && args[0] != "0" {
			return nil, errPlain
		}
		if on == x.s.gnssOn {
			return nil, errPlain
		}
		x.s.gnssOn = on
		return nil, nil
	}
	return nil, errPlain
}

// atCGPSINFO is SIMCom's AT+CGPSINFO:
//
//	+CGPSINFO: <lat>,<N/S>,<lon>,<E/W>,<date>,<UTC time>,<alt>,<speed>,<course>
//
// with ddmm.mmmmmm and dddmm.mmmmmm, and all fields empty without a fix (or
// with GNSS off).
func atCGPSINFO(x *execCtx, c command) ([]string, error) {
	switch c.Form {
	case formTest:
		return []string{"+CGPSINFO: (0-255)"}, nil
	case formExec:
	default:
		return nil, errPlain
	}
	f := x.s.gnssFix
	if !x.s.gnssOn || f == nil {
		return []string{"+CGPSINFO: ,,,,,,,,"}, nil
	}
	now := x.m.now().UTC()
	return []string{fmt.Sprintf("+CGPSINFO: %s,%s,%s,%s,%.1f,0.0,0.0",
		nmeaLat(f.Lat, 6, false), nmeaLon(f.Lon, 6, false), now.Format("020106"), now.Format("150405.0"), gnssAltitude)}, nil
}

// nmeaLat renders a latitude as ddmm.mmm… with the hemisphere appended
// ("3113.8600N") or after a comma ("3113.860000,N").
func nmeaLat(v float64, decimals int, glued bool) string {
	h := "N"
	if v < 0 {
		h = "S"
	}
	return nmea(math.Abs(v), 2, decimals, h, glued)
}

// nmeaLon renders a longitude as dddmm.mmm… and its hemisphere.
func nmeaLon(v float64, decimals int, glued bool) string {
	h := "E"
	if v < 0 {
		h = "W"
	}
	return nmea(math.Abs(v), 3, decimals, h, glued)
}

func nmea(v float64, degDigits, decimals int, hemi string, glued bool) string {
	deg := math.Floor(v)
	minutes := (v - deg) * 60
	// Rounding may carry the minutes to 60.
	scale := math.Pow(10, float64(decimals))
	if math.Round(minutes*scale)/scale >= 60 {
		deg++
		minutes = 0
	}
	s := fmt.Sprintf("%0*d%0*.*f", degDigits, int(deg), decimals+3, decimals, minutes)
	if glued {
		return s + hemi
	}
	return s + "," + hemi
}

package identity

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Fix is a GNSS position read from the modem.
type Fix struct {
	Lat float64 `json:"lat"`
	Lon float64 `json:"lon"`
	// HDOP is the horizontal dilution of precision; 0 when the answer
	// carries none (SIMCom's AT+CGPSINFO).
	HDOP float64 `json:"hdop,omitempty"`
}

// ErrNoFix means the GNSS receiver answered but has no position (yet).
var ErrNoFix = errors.New("identity: no GNSS fix")

// GNSSCommands are a vendor's commands for its GNSS receiver.
type GNSSCommands struct {
	// Enable turns the receiver on. Quectel answers +CME ERROR: 504 when
	// it is on already, SIMCom a plain ERROR.
	Enable string
	// Read asks for the current fix.
	Read string
	// Parse reads the fix in Read's answer (ErrNoFix: none).
	Parse func(lines []string) (Fix, error)
}

// GNSS returns the commands of the vendor's GNSS receiver, or false for
// vendors whose GNSS the agent does not read (u-blox SARA modules mostly
// have none; Telit, Huawei, Sierra and plain 27.007 modules are not
// supported).
func (v Vendor) GNSS() (GNSSCommands, bool) {
	switch v {
	case VendorQuectel:
		return GNSSCommands{Enable: "AT+QGPS=1", Read: "AT+QGPSLOC=2", Parse: ParseQGPSLOC}, true
	case VendorSIMCom:
		return GNSSCommands{Enable: "AT+CGPS=1", Read: "AT+CGPSINFO", Parse: ParseCGPSINFO}, true
	}
	return GNSSCommands{}, false
}

// Quectel's GNSS error codes (Quectel GNSS AT Commands Manual).
const (
	// CMEGNSSSessionOngoing answers AT+QGPS=1 while GNSS is on already.
	CMEGNSSSessionOngoing = 504
	// CMEGNSSSessionNotActive answers AT+QGPSLOC while GNSS is off.
	CMEGNSSSessionNotActive = 505
	// CMEGNSSNotFixed answers AT+QGPSLOC without a fix.
	CMEGNSSNotFixed = 516
)

// ParseQGPSLOC returns the fix in a reply to Quectel's AT+QGPSLOC[=<mode>]:
//
//	+QGPSLOC: <UTC>,<lat>,<lon>,<HDOP>,<alt>,<fix>,<COG>,<spkm>,<spkn>,<date>,<nsat>
//
// with the coordinates in signed decimal degrees (mode 2: "31.23100") or
// as ddmm.mmmm[mm] with the hemisphere appended (modes 0 and 1:
// "3113.8600N"). A <fix> below 2 (no 2D or 3D fix) or the position 0,0 is
// ErrNoFix. Other lines (echo, URCs) are skipped.
func ParseQGPSLOC(lines []string) (Fix, error) {
	var firstErr error
	for _, line := range lines {
		label, value, ok := splitLabel(line)
		if !ok || !labelIs(label, "QGPSLOC") {
			continue
		}
		fix, err := parseQGPSLOC(value)
		if err == nil {
			return fix, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return Fix{}, fmt.Errorf("QGPSLOC: %w", firstErr)
	}
	return Fix{}, fmt.Errorf("QGPSLOC: %w", ErrNotFound)
}

func parseQGPSLOC(value string) (Fix, error) {
	f := strings.Split(value, ",")
	if len(f) < 4 {
		return Fix{}, fmt.Errorf("%q: want at least UTC, latitude, longitude and HDOP", value)
	}
	for i := range f {
		f[i] = unquote(f[i])
	}
	if f[1] == "" && f[2] == "" {
		return Fix{}, ErrNoFix
	}
	lat, err := parseCoord(f[1], "", true)
	if err != nil {
		return Fix{}, err
	}
	lon, err := parseCoord(f[2], "", false)
	if err != nil {
		return Fix{}, err
	}
	if len(f) > 5 {
		if mode, err := strconv.Atoi(f[5]); err == nil && mode < 2 {
			return Fix{}, ErrNoFix
		}
	}
	return newFix(lat, lon, f[3])
}

// ParseCGPSINFO returns the fix in a reply to SIMCom's AT+CGPSINFO:
//
//	+CGPSINFO: <lat>,<N/S>,<lon>,<E/W>,<date>,<UTC time>,<alt>,<speed>,<course>
//
// with the coordinates as ddmm.mmmmmm and dddmm.mmmmmm. Empty fields
// ("+CGPSINFO: ,,,,,,,,") mean no fix (ErrNoFix), as does 0,0. The answer
// has no HDOP.
func ParseCGPSINFO(lines []string) (Fix, error) {
	var firstErr error
	for _, line := range lines {
		label, value, ok := splitLabel(line)
		if !ok || !labelIs(label, "CGPSINFO") {
			continue
		}
		fix, err := parseCGPSINFO(value)
		if err == nil {
			return fix, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return Fix{}, fmt.Errorf("CGPSINFO: %w", firstErr)
	}
	return Fix{}, fmt.Errorf("CGPSINFO: %w", ErrNotFound)
}

func parseCGPSINFO(value string) (Fix, error) {
	f := strings.Split(value, ",")
	if strings.Trim(value, " ,") == "" {
		return Fix{}, ErrNoFix
	}
	if len(f) < 4 {
		return Fix{}, fmt.Errorf("%q: want latitude, N/S, longitude, E/W", value)
	}
	for i := range f {
		f[i] = strings.TrimSpace(f[i])
	}
	if f[0] == "" && f[2] == "" {
		return Fix{}, ErrNoFix
	}
	lat, err := parseCoord(f[0], f[1], true)
	if err != nil {
		return Fix{}, err
	}
	lon, err := parseCoord(f[2], f[3], false)
	if err != nil {
		return Fix{}, err
	}
	return newFix(lat, lon, "")
}

// newFix checks the position and reads the HDOP ("" or nonsense: 0).
func newFix(lat, lon float64, hdop string) (Fix, error) {
	if lat == 0 && lon == 0 {
		return Fix{}, ErrNoFix // what some firmwares show before the first fix
	}
	fix := Fix{Lat: lat, Lon: lon}
	if h, err := strconv.ParseFloat(hdop, 64); err == nil && h > 0 && h < 100 {
		fix.HDOP = h
	}
	return fix, nil
}

// parseCoord reads a latitude (lat) or longitude in signed decimal degrees
// ("-33.86880") or NMEA form ddmm.mmmm / dddmm.mmmm with the hemisphere
// either appended ("3113.8600N") or given apart in hemi. A hemisphere marks
// the NMEA form.
func parseCoord(s, hemi string, lat bool) (float64, error) {
	limit, pos, neg := 180.0, byte('E'), byte('W')
	if lat {
		limit, pos, neg = 90, 'N', 'S'
	}
	if hemi == "" && s != "" {
		switch c := s[len(s)-1] &^ 0x20; c { // upper case
		case pos, neg:
			hemi, s = string(c), strings.TrimSpace(s[:len(s)-1])
		}
	}
	var v float64
	if hemi == "" {
		d, err := strconv.ParseFloat(s, 64)
		if err != nil || !plainDecimal(s, true) {
			return 0, fmt.Errorf("coordinate %q: not decimal degrees", s)
		}
		v = d
	} else {
		if len(hemi) != 1 || (hemi[0]&^0x20 != pos && hemi[0]&^0x20 != neg) {
			return 0, fmt.Errorf("coordinate %q: hemisphere %q", s, hemi)
		}
		d, err := parseNMEA(s)
		if err != nil {
			return 0, err
		}
		v = d
		if hemi[0]&^0x20 == neg {
			v = -v
		}
	}
	if math.IsNaN(v) || math.Abs(v) > limit {
		return 0, fmt.Errorf("coordinate %q out of range ±%v", s, limit)
	}
	return v, nil
}

// parseNMEA reads [d]ddmm.mmmm: the last two digits before the point are
// the whole minutes, those before them the degrees.
func parseNMEA(s string) (float64, error) {
	if !plainDecimal(s, false) {
		return 0, fmt.Errorf("coordinate %q: want ddmm.mmmm", s)
	}
	intPart := s
	if i := strings.IndexByte(s, '.'); i >= 0 {
		intPart = s[:i]
	}
	if len(intPart) < 2 || len(intPart) > 5 {
		return 0, fmt.Errorf("coordinate %q: want ddmm.mmmm", s)
	}
	deg := 0.0
	if n := len(intPart) - 2; n > 0 {
		d, err := strconv.Atoi(intPart[:n])
		if err != nil {
			return 0, fmt.Errorf("coordinate %q: %w", s, err)
		}
		deg = float64(d)
	}
	minutes, err := strconv.ParseFloat(s[len(intPart)-2:], 64)
	if err != nil || minutes >= 60 {
		return 0, fmt.Errorf("coordinate %q: minutes out of range", s)
	}
	return deg + minutes/60, nil
}

// plainDecimal reports whether s is digits with at most one point (and a
// leading minus sign when signed): no exponents, no "Inf" or "NaN".
func plainDecimal(s string, signed bool) bool {
	if signed && strings.HasPrefix(s, "-") {
		s = s[1:]
	}
	digits, points := 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			points++
		default:
			return false
		}
	}
	return digits > 0 && points <= 1
}

package identity

import (
	"fmt"
	"strconv"
	"strings"
)

// RegStat is the 27.007 <stat> of +CREG/+CGREG/+CEREG.
type RegStat int

// Registration states (3GPP TS 27.007 §7.2).
const (
	RegNotRegistered RegStat = 0  // not registered, not searching
	RegHome          RegStat = 1  // registered, home network
	RegSearching     RegStat = 2  // not registered, searching
	RegDenied        RegStat = 3  // registration denied
	RegUnknown       RegStat = 4  // unknown (e.g. out of coverage)
	RegRoaming       RegStat = 5  // registered, roaming
	RegSMSOnlyHome   RegStat = 6  // registered for SMS only, home
	RegSMSOnlyRoam   RegStat = 7  // registered for SMS only, roaming
	RegEmergency     RegStat = 8  // attached for emergency bearer services only
	RegCSFBHome      RegStat = 9  // CSFB not preferred, home
	RegCSFBRoam      RegStat = 10 // CSFB not preferred, roaming
	RegRLOS          RegStat = 11 // attached for access to RLOS
)

var regStatNames = [...]string{"not_registered", "home", "searching", "denied", "unknown",
	"roaming", "sms_only_home", "sms_only_roaming", "emergency_only", "csfb_not_preferred_home",
	"csfb_not_preferred_roaming", "rlos"}

// String returns a lower-case name such as "home" or "denied".
func (s RegStat) String() string {
	if s >= 0 && int(s) < len(regStatNames) {
		return regStatNames[s]
	}
	return "stat_" + strconv.Itoa(int(s))
}

// Registered reports whether the state is a full registration (home or
// roaming).
func (s RegStat) Registered() bool { return s == RegHome || s == RegRoaming }

// rank orders states from least to most registered for BestRegistration.
// Denied ranks above searching: it is a decisive answer from the network.
func (s RegStat) rank() int {
	switch s {
	case RegHome, RegRoaming:
		return 10
	case RegSMSOnlyHome, RegSMSOnlyRoam, RegCSFBHome, RegCSFBRoam:
		return 9
	case RegRLOS:
		return 8
	case RegEmergency:
		return 7
	case RegDenied:
		return 6
	case RegSearching:
		return 5
	case RegUnknown:
		return 3
	case RegNotRegistered:
		return 2
	}
	return 1
}

// Registration is one +CREG/+CGREG/+CEREG/+C5GREG line.
type Registration struct {
	Kind string  `json:"kind"`           // "CREG", "CGREG", "CEREG", "C5GREG", or "MM" (ModemManager's merged state)
	N    int     `json:"n"`              // the <n> setting; -1 in the unsolicited form
	Stat RegStat `json:"stat"`           // registration state
	Area string  `json:"area,omitempty"` // LAC or TAC, hex, upper case
	Cell string  `json:"cell,omitempty"` // cell id, hex, upper case
	AcT  int     `json:"act"`            // access technology; -1 when absent
}

// ParseRegistration parses a registration line in either form: the reply
// to AT+CxREG? ("+CREG: <n>,<stat>[,<lac>,<ci>[,<AcT>...]]") or the URC
// ("+CREG: <stat>[,<lac>,<ci>[,<AcT>...]]"). The two differ only by field
// count: one field is a URC, two are <n>,<stat>, three are a URC with
// location, and with four or more the second field decides: quoted, longer
// than two characters or empty, it is a location (URC form), else it is
// <stat> (reply form), as ModemManager does.
func ParseRegistration(line string) (Registration, error) {
	label, value, ok := splitLabel(line)
	if !ok || !labelIs(label, "CREG", "CGREG", "CEREG", "C5GREG") {
		return Registration{}, fmt.Errorf("registration: %w", ErrNotFound)
	}
	raw := strings.Split(value, ",")
	f := make([]string, len(raw))
	quoted := make([]bool, len(raw))
	for i, r := range raw {
		r = strings.TrimSpace(r)
		quoted[i] = strings.HasPrefix(r, `"`)
		f[i] = strings.ToUpper(strings.Trim(r, `"`))
	}
	isLoc := func(i int) bool { return quoted[i] || len(f[i]) > 2 || f[i] == "" }
	reply := len(f) == 2 || (len(f) >= 4 && !isLoc(1))
	r := Registration{Kind: strings.ToUpper(strings.TrimLeft(label, "+")), N: -1, AcT: -1}
	rest := f
	if reply {
		n, err := strconv.Atoi(f[0])
		if err != nil || n < 0 {
			return Registration{}, fmt.Errorf("registration %q: bad <n>", line)
		}
		r.N, rest = n, f[1:]
	}
	stat, err := strconv.Atoi(rest[0])
	if err != nil || stat < 0 || stat > 255 {
		return Registration{}, fmt.Errorf("registration %q: bad <stat>", line)
	}
	r.Stat = RegStat(stat)
	if len(rest) >= 3 {
		if !isHex(rest[1]) || !isHex(rest[2]) {
			return Registration{}, fmt.Errorf("registration %q: bad location", line)
		}
		r.Area, r.Cell = rest[1], rest[2]
	}
	if len(rest) >= 4 && rest[3] != "" {
		act, err := strconv.Atoi(rest[3])
		if err != nil || act < 0 {
			return Registration{}, fmt.Errorf("registration %q: bad <AcT>", line)
		}
		r.AcT = act
	}
	return r, nil
}

// BestRegistration returns the most registered of rs (LTE-only modems leave
// +CREG at 0 or 4 while +CEREG is 1); ties go to the earlier one. ok is false
// when rs is empty.
func BestRegistration(rs ...Registration) (best Registration, ok bool) {
	for _, r := range rs {
		if !ok || r.Stat.rank() > best.Stat.rank() {
			best, ok = r, true
		}
	}
	return best, ok
}

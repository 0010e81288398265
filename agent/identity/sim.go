package identity

import (
	"errors"
	"strings"

	"github.com/cardbind/cardbind/agent/at"
)

// SIMState is what +CPIN? says about the SIM.
type SIMState int

// SIM states. NotReady and Failure are transient as far as the agent knows:
// read again later before concluding anything.
const (
	SIMUnknown  SIMState = iota // no usable answer (plain ERROR with CMEE=0, timeout)
	SIMReady                    // present and usable
	SIMLocked                   // present, waiting for a PIN/PUK (SIMStatus.Lock says which)
	SIMAbsent                   // no SIM in the slot (CME 10, NOT INSERTED)
	SIMNotReady                 // initialising or busy (CME 14, 515, NOT READY)
	SIMFailure                  // present but failing (CME 13, 15)
)

var simStateNames = [...]string{"unknown", "ready", "locked", "absent", "not_ready", "failure"}

// String returns a lower-case name such as "ready" or "not_ready".
func (s SIMState) String() string {
	if s >= 0 && int(s) < len(simStateNames) {
		return simStateNames[s]
	}
	return "unknown"
}

// MarshalText encodes the state as its name.
func (s SIMState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Present reports whether a SIM is known to be in the slot.
func (s SIMState) Present() bool { return s == SIMReady || s == SIMLocked || s == SIMFailure }

// SIMStatus is a SIM state with the lock that is pending, if any ("SIM PIN",
// "SIM PUK", "PH-SIM PIN", ...).
type SIMStatus struct {
	State SIMState `json:"state"`
	Lock  string   `json:"lock,omitempty"`
}

// ParseCPIN interprets the reply to AT+CPIN?: its lines and the command's
// error. A "+CPIN:" line wins even when the command failed, because old
// modems send "+CPIN: READY" without a final OK (the engine then reports a
// timeout with the line). Otherwise the error decides: CME 10 absent; 11, 12,
// 5-7, 17, 18, 40-47 locked; 13, 15 failure; 14, 515 not ready; the same in
// verbose (AT+CMEE=2) form. A plain ERROR (AT+CMEE=0) says nothing: unknown.
func ParseCPIN(lines []string, err error) SIMStatus {
	for _, line := range lines {
		label, value, ok := splitLabel(line)
		if !ok || !labelIs(label, "CPIN") {
			continue
		}
		return cpinValue(strings.ToUpper(unquote(value)))
	}
	var ce *at.CMEError
	if err == nil || !errors.As(err, &ce) {
		return SIMStatus{State: SIMUnknown}
	}
	switch c := ce.Code; {
	case c == at.CMESIMNotInserted:
		return SIMStatus{State: SIMAbsent}
	case c == at.CMESIMPINRequired || c == at.CMESIMPUKRequired || c == 17 || c == 18 ||
		(c >= 5 && c <= 7) || (c >= 40 && c <= 47):
		return SIMStatus{State: SIMLocked, Lock: lockFromText(ce.Text)}
	case c == at.CMESIMFailure || c == at.CMESIMWrong:
		return SIMStatus{State: SIMFailure}
	case c == at.CMESIMBusy || c == at.CMEInitInProgress:
		return SIMStatus{State: SIMNotReady}
	case c == -1:
		return cmeTextState(strings.ToLower(ce.Text))
	}
	return SIMStatus{State: SIMUnknown}
}

func cpinValue(v string) SIMStatus {
	switch {
	case v == "READY":
		return SIMStatus{State: SIMReady}
	case v == "NOT INSERTED" || v == "NO SIM" || v == "SIM NOT INSERTED" || v == "ABSENT":
		return SIMStatus{State: SIMAbsent}
	case v == "NOT READY":
		return SIMStatus{State: SIMNotReady}
	case strings.Contains(v, "PIN") || strings.Contains(v, "PUK"):
		return SIMStatus{State: SIMLocked, Lock: v}
	}
	return SIMStatus{State: SIMUnknown}
}

// cmeTextState handles verbose CME texts outside the 27.007 table.
func cmeTextState(t string) SIMStatus {
	switch {
	case strings.Contains(t, "not inserted") || strings.Contains(t, "not present") || strings.Contains(t, "no sim"):
		return SIMStatus{State: SIMAbsent}
	case strings.Contains(t, "busy") || strings.Contains(t, "not ready") || strings.Contains(t, "wait"):
		return SIMStatus{State: SIMNotReady}
	case strings.Contains(t, "pin") || strings.Contains(t, "puk"):
		return SIMStatus{State: SIMLocked, Lock: lockFromText(t)}
	case strings.Contains(t, "failure") || strings.Contains(t, "wrong"):
		return SIMStatus{State: SIMFailure}
	}
	return SIMStatus{State: SIMUnknown}
}

// lockFromText turns "SIM PIN required" into "SIM PIN".
func lockFromText(t string) string {
	t = strings.TrimSpace(t)
	t = strings.TrimSuffix(strings.TrimSuffix(t, " required"), " Required")
	return strings.ToUpper(t)
}

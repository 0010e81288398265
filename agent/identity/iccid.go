package identity

import (
	"fmt"
	"strconv"
	"strings"
)

// ICCIDError says why a value is not an ICCID.
type ICCIDError struct {
	Value  string
	Reason string
}

// Error implements error.
func (e *ICCIDError) Error() string { return fmt.Sprintf("ICCID %q: %s", e.Value, e.Reason) }

// NormalizeICCID applies ModemManager's rule to a value whose tag is already
// stripped: spaces and quotes are removed; digits are allowed anywhere and
// hex A-F from index 6 on (operators put hex in the account part); the length
// must be 19 or 20; a value starting with 98 and 20 long is nibble-swapped
// (raw EF_ICCID order, as Huawei's ^ICCID gives it); the result must start
// with 89; one trailing F (padding) is dropped. Letters come out upper case.
func NormalizeICCID(v string) (string, error) {
	s := strings.ToUpper(strings.ReplaceAll(strings.ReplaceAll(v, `"`, ""), " ", ""))
	s = strings.TrimSpace(s)
	if len(s) != 19 && len(s) != 20 {
		return "", &ICCIDError{v, "length not 19 or 20"}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '0' && c <= '9' || (i >= 6 && c >= 'A' && c <= 'F') {
			continue
		}
		return "", &ICCIDError{v, fmt.Sprintf("bad character at %d", i)}
	}
	switch {
	case strings.HasPrefix(s, "89"):
	case strings.HasPrefix(s, "98") && len(s) == 20:
		s = swapNibbles(s)
	default:
		return "", &ICCIDError{v, "does not start with 89"}
	}
	return strings.TrimSuffix(s, "F"), nil
}

func swapNibbles(s string) string {
	b := []byte(s)
	for i := 0; i+1 < len(b); i += 2 {
		b[i], b[i+1] = b[i+1], b[i]
	}
	return string(b)
}

// iccidLabels are the vendor tags in front of an ICCID: +QCCID (Quectel),
// +ICCID and +CICCID (SIMCom), +CCID (generic, u-blox), ^ICCID (Huawei),
// #CCID (Telit), !ICCID (Sierra).
var iccidLabels = []string{"QCCID", "ICCID", "CICCID", "CCID"}

// ParseICCID returns the ICCID in a reply to a vendor ICCID command:
// "+QCCID: 8901...535F", "+ICCID: 898600700907A6019125", "+CCID: \"89...\"",
// a bare "89...", "^ICCID: 98...", "#CCID: 89...", "!ICCID: 89...". The value
// goes through NormalizeICCID; the first valid one wins.
func ParseICCID(lines []string) (string, error) {
	var firstErr error
	for _, line := range lines {
		if label, value, ok := splitLabel(line); ok {
			if !labelIs(label, iccidLabels...) {
				continue
			}
			line = value
		}
		id, err := NormalizeICCID(line)
		if err == nil {
			return id, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return "", firstErr
	}
	return "", fmt.Errorf("ICCID: %w", ErrNotFound)
}

// StatusError is a SIM status word other than success in a +CRSM reply
// (e.g. 106,130 = 0x6A82 file not found; 105,130 = 0x6982 security status).
type StatusError struct {
	SW1, SW2 int
}

// Error implements error.
func (e *StatusError) Error() string {
	return fmt.Sprintf("SIM status %02X%02X", e.SW1, e.SW2)
}

// CRSM is a parsed "+CRSM: <sw1>,<sw2>[,<response>]" line.
type CRSM struct {
	SW1, SW2 int
	Data     string // hex, upper case, without quotes
}

// OK reports whether the status words mean success: 90 00, or 91, 92, 9F
// with any SW2 (as ModemManager accepts).
func (c CRSM) OK() bool {
	return c.SW1 == 0x90 && c.SW2 == 0 || c.SW1 == 0x91 || c.SW1 == 0x92 || c.SW1 == 0x9F
}

// ParseCRSM parses the +CRSM line of a reply.
func ParseCRSM(lines []string) (CRSM, error) {
	for _, line := range lines {
		label, value, ok := splitLabel(line)
		if !ok || !labelIs(label, "CRSM") {
			continue
		}
		f := strings.SplitN(value, ",", 3)
		if len(f) < 2 {
			continue
		}
		sw1, err1 := strconv.Atoi(strings.TrimSpace(f[0]))
		sw2, err2 := strconv.Atoi(strings.TrimSpace(f[1]))
		if err1 != nil || err2 != nil || sw1 < 0 || sw1 > 255 || sw2 < 0 || sw2 > 255 {
			continue
		}
		c := CRSM{SW1: sw1, SW2: sw2}
		if len(f) == 3 {
			c.Data = strings.ToUpper(unquote(f[2]))
			if !isHex(c.Data) {
				continue
			}
		}
		return c, nil
	}
	return CRSM{}, fmt.Errorf("CRSM: %w", ErrNotFound)
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ParseCRSMICCID returns the ICCID from the reply to AT+CRSM=176,12258,0,0,10
// (READ BINARY of EF_ICCID): the status words must mean success and the 10
// data bytes are BCD with swapped nibbles and F padding.
func ParseCRSMICCID(lines []string) (string, error) {
	c, err := ParseCRSM(lines)
	if err != nil {
		return "", err
	}
	if !c.OK() {
		return "", &StatusError{c.SW1, c.SW2}
	}
	return DecodeEFICCID(c.Data)
}

// DecodeEFICCID decodes the raw content of EF_ICCID (at least 10 bytes as
// hex): it swaps each nibble pair, drops the F padding and checks the result
// as NormalizeICCID does.
func DecodeEFICCID(data string) (string, error) {
	if len(data) < 20 || !isHex(data) {
		return "", &ICCIDError{data, "EF_ICCID data is not 10 hex bytes"}
	}
	s := strings.ToUpper(swapNibbles(data[:20]))
	if !strings.HasPrefix(s, "89") {
		return "", &ICCIDError{data, "decoded value does not start with 89"}
	}
	return NormalizeICCID(s) // drops the one trailing F of a 19-digit ICCID
}

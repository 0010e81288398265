package modem

import (
	"fmt"
	"strings"
)

// SIM is a SIM card that can sit in the modem.
type SIM struct {
	// ICCID is the card number, 19 or 20 characters (digits; hex letters
	// are allowed, as some operators use them).
	ICCID string `json:"iccid"`
	// IMSI is the subscriber identity, 6 to 15 digits.
	IMSI string `json:"imsi"`
	// MSISDN is the phone number, optional.
	MSISDN string `json:"msisdn,omitempty"`
	// PIN, when set, locks the card until AT+CPIN="<PIN>" is sent.
	PIN string `json:"pin,omitempty"`
}

// Validate checks the shape of the identifiers. It does not check Luhn
// digits: real cards fail them often enough.
func (s SIM) Validate() error {
	if n := len(s.ICCID); n < 18 || n > 20 || !isHexDigits(s.ICCID) {
		return fmt.Errorf("modem: ICCID %q: want 18 to 20 hex digits", s.ICCID)
	}
	if n := len(s.IMSI); n < 6 || n > 15 || !isDigits(s.IMSI) {
		return fmt.Errorf("modem: IMSI %q: want 6 to 15 digits", s.IMSI)
	}
	if s.MSISDN != "" && !isDigits(strings.TrimPrefix(s.MSISDN, "+")) {
		return fmt.Errorf("modem: MSISDN %q: want digits", s.MSISDN)
	}
	return nil
}

// ValidateIMEI checks that imei has 15 digits. It does not check the Luhn
// digit, so that tests can use deliberately bad values; see LuhnValid.
func ValidateIMEI(imei string) error {
	if len(imei) != 15 || !isDigits(imei) {
		return fmt.Errorf("modem: IMEI %q: want 15 digits", imei)
	}
	return nil
}

// LuhnValid reports whether the last digit of s is the Luhn check digit of
// the others.
func LuhnValid(s string) bool {
	if len(s) < 2 || !isDigits(s) {
		return false
	}
	sum := 0
	double := false
	for i := len(s) - 1; i >= 0; i-- {
		d := int(s[i] - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return sum%10 == 0
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return s != ""
}

func isHexDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		c := upper(s[i])
		if !isDigit(c) && (c < 'A' || c > 'F') {
			return false
		}
	}
	return s != ""
}

// efICCID returns the contents of EF_ICCID (10 bytes) as upper-case hex, the
// way AT+CRSM=176,12258,0,0,10 shows it: the ICCID padded with F to 20
// nibbles, each pair of nibbles swapped.
func efICCID(iccid string) string {
	s := strings.ToUpper(iccid)
	for len(s) < 20 {
		s += "F"
	}
	b := []byte(s[:20])
	for i := 0; i+1 < len(b); i += 2 {
		b[i], b[i+1] = b[i+1], b[i]
	}
	return string(b)
}

// efIMSI returns the contents of EF_IMSI (9 bytes) as upper-case hex: a
// length byte, then the parity nibble and the digits, nibble-swapped, padded
// with F.
func efIMSI(imsi string) string {
	parity := byte('1')
	if len(imsi)%2 == 1 {
		parity = '9'
	}
	nibbles := append([]byte{parity}, imsi...)
	if len(nibbles)%2 == 1 {
		nibbles = append(nibbles, 'F')
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%02X", len(nibbles)/2)
	for i := 0; i < len(nibbles); i += 2 {
		sb.WriteByte(nibbles[i+1])
		sb.WriteByte(nibbles[i])
	}
	for sb.Len() < 18 {
		sb.WriteString("FF")
	}
	return sb.String()
}

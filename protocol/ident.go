package protocol

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidIdentifier is wrapped by every identifier parsing error, so
// callers can tell malformed input from other failures with errors.Is.
var ErrInvalidIdentifier = errors.New("invalid identifier")

// ErrICCIDCheckDigit is the warning returned by ICCID.Warning when the
// ICCID's last digit is not its Luhn check digit. Real cards fail this check,
// so it is never a reason to reject an ICCID.
var ErrICCIDCheckDigit = errors.New("iccid: last digit is not the Luhn check digit")

// IdentifierError says which identifier was malformed, what was given and
// why it was refused.
type IdentifierError struct {
	Kind   string // "imei", "imeisv", "iccid", "imsi", "msisdn"
	Input  string // the input as given, truncated to 40 bytes
	Reason string // what is wrong, in plain words
}

func (e *IdentifierError) Error() string {
	return fmt.Sprintf("%s %q: %s", e.Kind, e.Input, e.Reason)
}

// Unwrap makes every IdentifierError match ErrInvalidIdentifier.
func (e *IdentifierError) Unwrap() error { return ErrInvalidIdentifier }

func identErr(kind, input, format string, args ...any) error {
	if len(input) > 40 {
		input = input[:40] + "..."
	}
	return &IdentifierError{Kind: kind, Input: input, Reason: fmt.Sprintf(format, args...)}
}

// IMEI is a normalised International Mobile Equipment Identity: 15 decimal
// digits, TAC (8) + serial number (6) + Luhn check digit (1).
type IMEI string

// ParseIMEI parses an IMEI. It accepts the plain 15-digit form and the dashed
// form used in CAMARA examples ("35-209900-176148-1"), with surrounding
// spaces, and rejects anything whose check digit is wrong.
func ParseIMEI(s string) (IMEI, error) {
	const kind = "imei"
	d := stripSeparators(s)
	if d == "" {
		return "", identErr(kind, s, "empty")
	}
	if i := firstNonDigit(d); i >= 0 {
		return "", identErr(kind, s, "character %q is not a digit", d[i])
	}
	switch {
	case len(d) == 16:
		return "", identErr(kind, s, "16 digits is an IMEISV, not an IMEI")
	case len(d) != 15:
		return "", identErr(kind, s, "has %d digits, want 15", len(d))
	}
	if want := luhnDigit(d[:14]); d[14] != want {
		return "", identErr(kind, s, "check digit is %c, want %c", d[14], want)
	}
	return IMEI(d), nil
}

// TAC returns the Type Allocation Code: the first 8 digits, which name the
// device model.
func (m IMEI) TAC() string {
	if len(m) < 8 {
		return string(m)
	}
	return string(m[:8])
}

// Dashed returns the IMEI in the dashed form "AA-BBBBBB-CCCCCC-D".
func (m IMEI) Dashed() string {
	if len(m) != 15 {
		return string(m)
	}
	return string(m[:2]) + "-" + string(m[2:8]) + "-" + string(m[8:14]) + "-" + string(m[14:])
}

// String returns the 15-digit form.
func (m IMEI) String() string { return string(m) }

// IMEISV is a normalised IMEI software version: TAC (8) + serial number (6)
// + software version number (2), 16 digits, with no check digit.
type IMEISV string

// ParseIMEISV parses a 16-digit IMEISV, accepting dashes and spaces.
func ParseIMEISV(s string) (IMEISV, error) {
	const kind = "imeisv"
	d := stripSeparators(s)
	if d == "" {
		return "", identErr(kind, s, "empty")
	}
	if i := firstNonDigit(d); i >= 0 {
		return "", identErr(kind, s, "character %q is not a digit", d[i])
	}
	if len(d) != 16 {
		return "", identErr(kind, s, "has %d digits, want 16", len(d))
	}
	return IMEISV(d), nil
}

// IMEI derives the IMEI of the equipment: the first 14 digits and their
// computed check digit.
func (v IMEISV) IMEI() IMEI {
	if len(v) != 16 {
		return ""
	}
	return IMEI(string(v[:14]) + string(luhnDigit(string(v[:14]))))
}

// SVN returns the two-digit software version number.
func (v IMEISV) SVN() string {
	if len(v) != 16 {
		return ""
	}
	return string(v[14:])
}

// String returns the 16-digit form.
func (v IMEISV) String() string { return string(v) }

// ParseEquipment parses either an IMEI (15 digits) or an IMEISV (16 digits)
// and returns the IMEI, with the IMEISV when one was given. Network records
// carry IMEISVs where agents report IMEIs; both meet here.
func ParseEquipment(s string) (IMEI, IMEISV, error) {
	d := stripSeparators(s)
	if len(d) == 16 {
		sv, err := ParseIMEISV(s)
		if err != nil {
			return "", "", err
		}
		return sv.IMEI(), sv, nil
	}
	m, err := ParseIMEI(s)
	return m, "", err
}

// ICCID is a normalised Integrated Circuit Card Identifier: 19 or 20
// characters starting with "89", digits with upper-case hex digits allowed
// after the issuer prefix (some operators use them), and no trailing 'F'
// padding.
type ICCID string

// ParseICCID parses an ICCID. It strips spaces, dashes and one trailing 'F'
// (the padding of a 19-digit ICCID), upper-cases hex digits, and requires
// the "89" prefix and 19 or 20 characters. A failed Luhn check is not an
// error here; see ICCID.Warning.
func ParseICCID(s string) (ICCID, error) {
	const kind = "iccid"
	d := strings.ToUpper(stripSeparators(s))
	if d == "" {
		return "", identErr(kind, s, "empty")
	}
	if len(d) == 20 && d[19] == 'F' {
		d = d[:19]
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		switch {
		case c >= '0' && c <= '9':
		case c >= 'A' && c <= 'F' && i >= 6:
			// Hex digits appear in the account part of some operators' ICCIDs.
		default:
			return "", identErr(kind, s, "character %q at position %d is not allowed", c, i+1)
		}
	}
	if len(d) != 19 && len(d) != 20 {
		return "", identErr(kind, s, "has %d characters, want 19 or 20", len(d))
	}
	if !strings.HasPrefix(d, "89") {
		return "", identErr(kind, s, "does not start with 89 (the telecom prefix)")
	}
	return ICCID(d), nil
}

// Warning returns ErrICCIDCheckDigit when the ICCID is all digits and its
// last digit is not the Luhn check digit, and nil otherwise (including for
// ICCIDs with hex digits, which cannot be checked). Callers log or count the
// warning; they never reject the card for it.
func (c ICCID) Warning() error {
	if len(c) < 2 || !isDigits(string(c)) {
		return nil
	}
	if !luhnValid(string(c)) {
		return fmt.Errorf("%w: %s", ErrICCIDCheckDigit, string(c))
	}
	return nil
}

// String returns the normalised form.
func (c ICCID) String() string { return string(c) }

// IMSI is a normalised International Mobile Subscriber Identity: 14 or 15
// decimal digits, MCC (3) + MNC (2 or 3) + MSIN.
type IMSI string

// ParseIMSI parses an IMSI of 14 or 15 digits, accepting an "imsi-" prefix
// (the 3GPP SUPI form) and surrounding spaces.
func ParseIMSI(s string) (IMSI, error) {
	const kind = "imsi"
	d := strings.TrimSpace(s)
	d = strings.TrimPrefix(strings.TrimPrefix(d, "imsi-"), "IMSI-")
	if d == "" {
		return "", identErr(kind, s, "empty")
	}
	if i := firstNonDigit(d); i >= 0 {
		return "", identErr(kind, s, "character %q is not a digit", d[i])
	}
	if len(d) != 14 && len(d) != 15 {
		return "", identErr(kind, s, "has %d digits, want 14 or 15", len(d))
	}
	if d[0] == '0' && d[1] == '0' && d[2] != '1' {
		// MCC 000-009 is unassigned; 001 is the test network.
		return "", identErr(kind, s, "mobile country code %s is not assigned", d[:3])
	}
	return IMSI(d), nil
}

// MCC returns the three-digit mobile country code.
func (i IMSI) MCC() string {
	if len(i) < 3 {
		return ""
	}
	return string(i[:3])
}

// MNC returns the mobile network code given its length (2 or 3 digits). The
// length is not encoded in the IMSI itself; the SIM's EF_AD or the operator
// configuration says which it is.
func (i IMSI) MNC(digits int) string {
	if (digits != 2 && digits != 3) || len(i) < 3+digits {
		return ""
	}
	return string(i[3 : 3+digits])
}

// String returns the normalised form.
func (i IMSI) String() string { return string(i) }

// MSISDN is a phone number in E.164 form with a leading '+': a country code
// that does not start with 0, and 5 to 15 digits in all (the CAMARA
// phoneNumber pattern ^\+[1-9][0-9]{4,14}$).
type MSISDN string

// ParseMSISDN parses a phone number in strict E.164 form ("+8613912345678"),
// as the CAMARA API requires. Spaces, dashes and a missing '+' are refused.
func ParseMSISDN(s string) (MSISDN, error) {
	const kind = "msisdn"
	if s == "" {
		return "", identErr(kind, s, "empty")
	}
	if s[0] != '+' {
		return "", identErr(kind, s, "must start with + and the country code")
	}
	d := s[1:]
	if i := firstNonDigit(d); i >= 0 || d == "" {
		if d == "" {
			return "", identErr(kind, s, "no digits after +")
		}
		return "", identErr(kind, s, "character %q is not a digit", d[i])
	}
	if d[0] == '0' {
		return "", identErr(kind, s, "country code cannot start with 0")
	}
	if len(d) < 5 || len(d) > 15 {
		return "", identErr(kind, s, "has %d digits, want 5 to 15", len(d))
	}
	return MSISDN(s), nil
}

// NormalizeMSISDN parses a phone number as network equipment writes it:
// with or without '+', with spaces or dashes, or as a "msisdn-" GPSI. It
// returns the strict E.164 form.
func NormalizeMSISDN(s string) (MSISDN, error) {
	d := strings.TrimSpace(s)
	d = strings.TrimPrefix(d, "msisdn-")
	d = stripSeparators(d)
	d = strings.TrimPrefix(d, "+")
	m, err := ParseMSISDN("+" + d)
	if err != nil {
		return "", identErr("msisdn", s, "%s", err.(*IdentifierError).Reason)
	}
	return m, nil
}

// Digits returns the number without the leading '+'.
func (m MSISDN) Digits() string { return strings.TrimPrefix(string(m), "+") }

// String returns the E.164 form.
func (m MSISDN) String() string { return string(m) }

// stripSeparators removes surrounding spaces and the dashes and inner
// spaces people and APIs put into long numbers.
func stripSeparators(s string) string {
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, "- ") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '-' && s[i] != ' ' {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

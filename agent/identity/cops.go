package identity

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// PLMN identifies a mobile network: its mobile country code (3 digits) and
// mobile network code (2 or 3 digits).
type PLMN struct {
	MCC string `json:"mcc"`
	MNC string `json:"mnc"`
}

// String returns the PLMN as modems write it in numeric form, "46003".
func (p PLMN) String() string { return p.MCC + p.MNC }

// ErrOperatorFormat means AT+COPS? named the operator in a long or short
// alphanumeric form ("CHN-CT"), not as digits: the modem did not take (or
// forgot) AT+COPS=3,2.
var ErrOperatorFormat = errors.New("identity: operator not in numeric format")

// COPSNumeric sets the operator format of AT+COPS? to numeric. It only
// sets the format (<mode> 3): the modem does not register again.
const COPSNumeric = "AT+COPS=3,2"

// ParsePLMN splits a numeric operator of 5 or 6 digits ("46003",
// "310410") into MCC and MNC.
func ParsePLMN(s string) (PLMN, error) {
	if (len(s) != 5 && len(s) != 6) || !allDigits(s) {
		return PLMN{}, fmt.Errorf("PLMN %q: want 5 or 6 digits", s)
	}
	return PLMN{MCC: s[:3], MNC: s[3:]}, nil
}

// ParseCOPS returns the serving network in a reply to AT+COPS?:
// "+COPS: <mode>[,<format>,<oper>[,<AcT>]]". A modem that is not
// registered answers "+COPS: <mode>" alone (ErrNotFound); an operator in
// alphanumeric format gives ErrOperatorFormat. The operator may be quoted
// or not; the AcT may be missing.
func ParseCOPS(lines []string) (PLMN, error) {
	alpha := false
	for _, line := range lines {
		label, value, ok := splitLabel(line)
		if !ok || !labelIs(label, "COPS") {
			continue
		}
		f := splitQuoted(value)
		if mode, err := strconv.Atoi(f[0]); err != nil || mode < 0 || mode > 4 {
			continue // the test form "+COPS: (2,...)" or garbage
		}
		if len(f) < 3 || unquote(f[2]) == "" {
			continue // not registered
		}
		format, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		if format != 2 {
			alpha = true
			continue
		}
		p, err := ParsePLMN(unquote(f[2]))
		if err != nil {
			return PLMN{}, fmt.Errorf("COPS: %w", err)
		}
		return p, nil
	}
	if alpha {
		return PLMN{}, ErrOperatorFormat
	}
	return PLMN{}, fmt.Errorf("COPS: %w", ErrNotFound)
}

// splitQuoted splits s at the commas outside double quotes and trims the
// spaces around each field (quotes are kept).
func splitQuoted(s string) []string {
	var out []string
	quoted := false
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	return append(out, strings.TrimSpace(s[start:]))
}

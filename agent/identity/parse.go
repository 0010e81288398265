// Package identity reads who a modem and its SIM are: IMEI, ICCID, IMSI, SIM
// state, registration, manufacturer/model/revision and signal.
//
// The parsers are pure functions over the information lines of an AT reply
// (as returned by agent/at); Reader drives the commands through a small
// Commander interface and assembles an Identity. Values are normalised strings:
// this package does not judge check digits (an ICCID failing Luhn is common
// and never a reason to reject it).
package identity

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrNotFound means the reply held no value of the expected shape.
var ErrNotFound = errors.New("identity: no value in reply")

// ErrUnprovisioned means the modem reported an all-zero IMEI.
var ErrUnprovisioned = errors.New("identity: IMEI not provisioned")

// splitLabel splits "Label: value" into the label and the value. A line whose
// text before the first colon does not look like a label (letters, digits,
// '+', '^', '#', '!', '_', '-', space) has no label.
func splitLabel(line string) (label, value string, ok bool) {
	i := strings.IndexByte(line, ':')
	if i <= 0 {
		return "", line, false
	}
	l := strings.TrimSpace(line[:i])
	if l == "" {
		return "", line, false
	}
	for _, r := range l {
		ok := r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' ||
			strings.ContainsRune("+^#!_- ", r)
		if !ok {
			return "", line, false
		}
	}
	return l, line[i+1:], true
}

// labelIs reports whether label equals one of names, ignoring case and a
// leading '+', '^', '#' or '!'.
func labelIs(label string, names ...string) bool {
	l := strings.TrimLeft(label, "+^#!")
	for _, n := range names {
		if strings.EqualFold(l, n) {
			return true
		}
	}
	return false
}

// unquote trims spaces and one level of double quotes.
func unquote(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = strings.TrimSpace(s[1 : len(s)-1])
	}
	return s
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ParseIMEI returns the IMEI in a reply to AT+CGSN, AT+CGSN=1, AT+GSN or ATI:
// the first token of exactly 15 decimal digits, on a line that is bare or
// labelled +CGSN, +GSN, GSN, IMEI or SN. Quotes are stripped. The check digit
// is not verified. An all-zero IMEI gives ErrUnprovisioned.
func ParseIMEI(lines []string) (string, error) {
	zero := false
	for _, line := range lines {
		if label, value, ok := splitLabel(line); ok {
			if !labelIs(label, "CGSN", "GSN", "IMEI", "SN") {
				continue
			}
			line = value
		}
		for tok := range strings.FieldsFuncSeq(line, func(r rune) bool {
			return strings.ContainsRune(" \t:,\"", r)
		}) {
			if len(tok) != 15 || !allDigits(tok) {
				continue
			}
			if strings.Trim(tok, "0") == "" {
				zero = true
				continue
			}
			return tok, nil
		}
	}
	if zero {
		return "", ErrUnprovisioned
	}
	return "", fmt.Errorf("IMEI: %w", ErrNotFound)
}

// ParseIMSI returns the IMSI in a reply to AT+CIMI: 6 to 15 digits, with an
// optional +CIMI: tag and quotes.
func ParseIMSI(lines []string) (string, error) {
	for _, line := range lines {
		if label, value, ok := splitLabel(line); ok {
			if !labelIs(label, "CIMI") {
				continue
			}
			line = value
		}
		v := unquote(line)
		if len(v) >= 6 && len(v) <= 15 && allDigits(v) {
			return v, nil
		}
	}
	return "", fmt.Errorf("IMSI: %w", ErrNotFound)
}

// Signal is a +CSQ reading.
type Signal struct {
	RSSI int `json:"rssi"`          // 0..31, 99 unknown
	BER  int `json:"ber"`           // 0..7, 99 unknown
	DBm  int `json:"dbm,omitempty"` // -113..-51; 0 when unknown
}

// ParseCSQ parses "+CSQ: <rssi>,<ber>".
func ParseCSQ(lines []string) (Signal, error) {
	for _, line := range lines {
		label, value, ok := splitLabel(line)
		if !ok || !labelIs(label, "CSQ") {
			continue
		}
		f := strings.Split(value, ",")
		if len(f) < 2 {
			continue
		}
		rssi, err1 := strconv.Atoi(strings.TrimSpace(f[0]))
		ber, err2 := strconv.Atoi(strings.TrimSpace(f[1]))
		if err1 != nil || err2 != nil || rssi < 0 || ber < 0 || (rssi > 31 && rssi != 99) || (ber > 7 && ber != 99) {
			continue
		}
		s := Signal{RSSI: rssi, BER: ber}
		if rssi != 99 {
			s.DBm = -113 + 2*rssi
		}
		return s, nil
	}
	return Signal{}, fmt.Errorf("CSQ: %w", ErrNotFound)
}

// infoLabels are the tags modems put before identification values.
var infoLabels = []string{"CGMI", "GMI", "CGMM", "GMM", "CGMR", "GMR", "Manufacturer", "Model", "Revision"}

// CleanInfo returns the first non-empty value of an identification reply
// (AT+CGMI, AT+CGMM, AT+CGMR and their +GMx forms) with its tag ("+CGMI:",
// "GMR:", "Revision:"), surrounding spaces and quotes removed, and control
// characters dropped.
func CleanInfo(lines []string) string {
	for _, line := range lines {
		if label, value, ok := splitLabel(line); ok && labelIs(label, infoLabels...) {
			line = value
		}
		v := strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return -1
			}
			return r
		}, unquote(line))
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}

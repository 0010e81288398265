package at

import (
	"strings"
	"unicode/utf8"
)

// kind is what a received line is, relative to the command in flight.
type kind int

const (
	kindEmpty   kind = iota // blank after trimming: ignored
	kindGarbage             // control bytes or invalid UTF-8: dropped, forces a resync
	kindEcho                // the command line echoed back: dropped
	kindFinal               // final result code: ends the command in flight
	kindInfo                // information line of the command in flight
	kindURC                 // unsolicited result code: dispatched, never info
	kindStray               // idle, not a known URC (late reply, unknown vendor URC)
)

func (k kind) String() string {
	switch k {
	case kindEmpty:
		return "empty"
	case kindGarbage:
		return "garbage"
	case kindEcho:
		return "echo"
	case kindFinal:
		return "final"
	case kindInfo:
		return "info"
	case kindURC:
		return "urc"
	case kindStray:
		return "stray"
	}
	return "unknown"
}

// knownURCPrefixes are line prefixes that are unsolicited unless the command
// in flight has the same command name (the ambiguity rule: +CPIN: READY is the
// reply to AT+CPIN? and also a URC).
var knownURCPrefixes = []string{
	"+CREG:", "+CGREG:", "+CEREG:", "+C5GREG:",
	"+CPIN:", "+CIEV:", "+CMTI:", "+CMT:", "+CDS:", "+CBM:", "+CDSI:",
	"+CLIP:", "+CRING:", "+CUSD:", "+CGEV:",
	"+QSIMSTAT:", "+QUSIM:", "+QIND:", "+QSTAT:",
	"+SIMCARD:", "+UUSIMSTAT:", "+KSUP:", "+SIM:",
	"#QSS:", "#USS:",
	"^SIMST:", "^SCKS:", "^BOOT:", "^RSSI:", "^MODE:", "^SYSSTART",
}

// knownURCWords are whole-line URCs.
var knownURCWords = []string{
	"RDY", "RING", "SMS DONE", "PB DONE", "SMS READY", "CALL READY",
}

// isKnownURC reports whether line is in the built-in URC table.
func isKnownURC(line string) bool {
	for _, p := range knownURCPrefixes {
		if hasPrefixFold(line, p) {
			return true
		}
	}
	for _, w := range knownURCWords {
		if strings.EqualFold(line, w) {
			return true
		}
	}
	return false
}

// parseFinal reports whether line is a final result code and, if so, the
// error it stands for (nil for success).
func parseFinal(line string) (bool, error) {
	switch {
	case strings.EqualFold(line, "OK"):
		return true, nil
	case strings.EqualFold(line, "ERROR"):
		return true, ErrError
	case hasPrefixFold(line, "+CME ERROR"):
		code, text := codeAndText(cmeTexts, strings.TrimPrefix(line[len("+CME ERROR"):], ":"))
		return true, &CMEError{Code: code, Text: text}
	case hasPrefixFold(line, "+CMS ERROR"):
		code, text := codeAndText(cmsTexts, strings.TrimPrefix(line[len("+CMS ERROR"):], ":"))
		return true, &CMSError{Code: code, Text: text}
	case hasPrefixFold(line, "MODEM ERROR:"),
		strings.EqualFold(line, "COMMAND NOT SUPPORT"),
		strings.EqualFold(line, "NO CARRIER"),
		strings.EqualFold(line, "BUSY"),
		strings.EqualFold(line, "NO ANSWER"),
		strings.EqualFold(line, "NO DIALTONE"):
		return true, &ResultError{Result: line}
	case strings.EqualFold(line, "CONNECT"), hasPrefixFold(line, "CONNECT "):
		return true, nil
	}
	return false, nil
}

// inflight describes the command whose reply is being collected.
type inflight struct {
	line string   // the command line as written, without CR
	ids  []string // command names ("+CPIN", "^ICCID"), one per ';' segment
}

// commandIDs returns the extended command names of a command line:
// "AT+COPS=3,2;+COPS?" gives ["+COPS", "+COPS"], "ATI" gives none.
func commandIDs(line string) []string {
	if len(line) < 2 {
		return nil
	}
	var ids []string
	for seg := range strings.SplitSeq(line[2:], ";") {
		seg = strings.TrimSpace(seg)
		if seg == "" || !strings.ContainsRune("+^#!$%*", rune(seg[0])) {
			continue
		}
		end := strings.IndexAny(seg, "=?")
		if end < 0 {
			end = len(seg)
		}
		if end > 1 {
			ids = append(ids, strings.ToUpper(seg[:end]))
		}
	}
	return ids
}

// classify decides what line is. cur is the command in flight or nil when
// idle; isURC reports prefixes registered by handlers (it may be nil).
// classify is pure; the engine's behaviour hangs on it, so it is fuzzed.
func classify(raw string, cur *inflight, isURC func(string) bool) kind {
	if !printable(raw) {
		return kindGarbage
	}
	line := strings.TrimSpace(raw)
	if line == "" {
		return kindEmpty
	}
	if cur != nil && strings.EqualFold(line, cur.line) {
		return kindEcho
	}
	if final, _ := parseFinal(line); final {
		if cur != nil {
			return kindFinal
		}
		return kindStray
	}
	if cur != nil {
		for _, id := range cur.ids {
			if hasPrefixFold(line, id+":") {
				return kindInfo
			}
		}
	}
	if isKnownURC(line) || (isURC != nil && isURC(line)) {
		return kindURC
	}
	if cur != nil {
		return kindInfo
	}
	return kindStray
}

// printable reports whether s is valid UTF-8 without control characters
// other than tab, CR and LF.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if (r < 0x20 && r != '\t' && r != '\r' && r != '\n') || r == 0x7f {
			return false
		}
	}
	return true
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// maxLine bounds one received line; longer input is cut into pieces.
const maxLine = 8 << 10

// splitter cuts the byte stream into lines at CR or LF. Doubled CRs and blank
// lines give empty lines, which the classifier ignores.
type splitter struct {
	buf []byte
}

// feed appends p and calls emit for every complete line.
func (s *splitter) feed(p []byte, emit func(string)) {
	for _, b := range p {
		if b == '\r' || b == '\n' {
			if len(s.buf) > 0 {
				emit(string(s.buf))
				s.buf = s.buf[:0]
			}
			continue
		}
		s.buf = append(s.buf, b)
		if len(s.buf) >= maxLine {
			emit(string(s.buf))
			s.buf = s.buf[:0]
		}
	}
}

package at

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Errors returned by Engine.Command and Supervisor.Command. Modem-reported
// errors are typed (*CMEError, *CMSError, *ResultError) or ErrError; use
// errors.Is and errors.As.
var (
	// ErrClosed means the engine has stopped: Close was called or reading the
	// port failed. Engine.Err gives the cause.
	ErrClosed = errors.New("at: engine closed")
	// ErrTimeout means the modem gave no final result code within the
	// command's timeout. The information lines received so far are returned
	// with it.
	ErrTimeout = errors.New("at: command timed out")
	// ErrError is the plain final result code ERROR.
	ErrError = errors.New("at: ERROR")
	// ErrBadCommand means the command line is not sendable: it must start
	// with "AT" and hold no CR or LF.
	ErrBadCommand = errors.New("at: malformed command")
	// ErrNotConnected is returned by Supervisor.Command while no port is open.
	ErrNotConnected = errors.New("at: modem not connected")
	// ErrNoResponse means the modem did not answer the resynchronisation
	// probe.
	ErrNoResponse = errors.New("at: modem does not respond")
)

// CMEError is a "+CME ERROR: <n>" or "+CME ERROR: <text>" final result code
// (3GPP TS 27.007 §9.2). Code is -1 when the modem sent a text that is not in
// the 27.007 table; Text is the table wording when Code is known, or what the
// modem sent.
type CMEError struct {
	Code int
	Text string
}

// Error implements error.
func (e *CMEError) Error() string {
	return fmt.Sprintf("+CME ERROR: %d (%s)", e.Code, e.Text)
}

// CMSError is a "+CMS ERROR: <n|text>" final result code (3GPP TS 27.005
// §3.2.5). Code is -1 when only a text was sent.
type CMSError struct {
	Code int
	Text string
}

// Error implements error.
func (e *CMSError) Error() string {
	return fmt.Sprintf("+CMS ERROR: %d (%s)", e.Code, e.Text)
}

// ResultError is a final result code other than OK, ERROR, +CME ERROR and
// +CMS ERROR that ends a command unsuccessfully: COMMAND NOT SUPPORT, NO
// CARRIER, BUSY, NO ANSWER, NO DIALTONE, MODEM ERROR: <n>.
type ResultError struct {
	Result string
}

// Error implements error.
func (e *ResultError) Error() string { return "at: " + e.Result }

// Common 27.007 CME error codes that callers branch on.
const (
	CMEOperationNotAllowed   = 3
	CMEOperationNotSupported = 4
	CMESIMNotInserted        = 10
	CMESIMPINRequired        = 11
	CMESIMPUKRequired        = 12
	CMESIMFailure            = 13
	CMESIMBusy               = 14
	CMESIMWrong              = 15
	CMEInitInProgress        = 515 // Wavecom/Sierra vendor code: "please wait, init in progress"
)

// cmeTexts is the 3GPP TS 27.007 §9.2 table (plus the widespread vendor code
// 515). It is read-only.
var cmeTexts = map[int]string{
	0:   "phone failure",
	1:   "no connection to phone",
	2:   "phone-adaptor link reserved",
	3:   "operation not allowed",
	4:   "operation not supported",
	5:   "PH-SIM PIN required",
	6:   "PH-FSIM PIN required",
	7:   "PH-FSIM PUK required",
	10:  "SIM not inserted",
	11:  "SIM PIN required",
	12:  "SIM PUK required",
	13:  "SIM failure",
	14:  "SIM busy",
	15:  "SIM wrong",
	16:  "incorrect password",
	17:  "SIM PIN2 required",
	18:  "SIM PUK2 required",
	20:  "memory full",
	21:  "invalid index",
	22:  "not found",
	23:  "memory failure",
	24:  "text string too long",
	25:  "invalid characters in text string",
	26:  "dial string too long",
	27:  "invalid characters in dial string",
	30:  "no network service",
	31:  "network timeout",
	32:  "network not allowed - emergency calls only",
	40:  "network personalization PIN required",
	41:  "network personalization PUK required",
	42:  "network subset personalization PIN required",
	43:  "network subset personalization PUK required",
	44:  "service provider personalization PIN required",
	45:  "service provider personalization PUK required",
	46:  "corporate personalization PIN required",
	47:  "corporate personalization PUK required",
	48:  "hidden key required",
	50:  "incorrect parameters",
	100: "unknown",
	103: "illegal MS",
	106: "illegal ME",
	107: "GPRS services not allowed",
	111: "PLMN not allowed",
	112: "location area not allowed",
	113: "roaming not allowed in this location area",
	132: "service option not supported",
	133: "requested service option not subscribed",
	134: "service option temporarily out of order",
	148: "unspecified GPRS error",
	149: "PDP authentication failure",
	515: "please wait, init in progress",
}

// cmsTexts is the 3GPP TS 27.005 §3.2.5 subset modems commonly send.
var cmsTexts = map[int]string{
	300: "ME failure",
	301: "SMS service of ME reserved",
	302: "operation not allowed",
	303: "operation not supported",
	304: "invalid PDU mode parameter",
	305: "invalid text mode parameter",
	310: "SIM not inserted",
	311: "SIM PIN required",
	312: "PH-SIM PIN required",
	313: "SIM failure",
	314: "SIM busy",
	315: "SIM wrong",
	316: "SIM PUK required",
	320: "memory failure",
	321: "invalid memory index",
	322: "memory full",
	330: "SMSC address unknown",
	331: "no network service",
	332: "network timeout",
	500: "unknown error",
}

// CMEText returns the 27.007 wording of a CME error code, or "" if unknown.
func CMEText(code int) string { return cmeTexts[code] }

// CMECode returns the CME error code for a verbose text (as sent with
// AT+CMEE=2), compared case-insensitively, and whether it is known.
func CMECode(text string) (int, bool) { return lookupText(cmeTexts, text) }

func lookupText(table map[int]string, text string) (int, bool) {
	text = strings.TrimSpace(text)
	for code, t := range table {
		if strings.EqualFold(t, text) {
			return code, true
		}
	}
	return -1, false
}

// codeAndText interprets the value after "+CME ERROR:" / "+CMS ERROR:",
// numeric or verbose.
func codeAndText(table map[int]string, v string) (int, string) {
	v = strings.Trim(strings.TrimSpace(v), `"`)
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		if t, ok := table[n]; ok {
			return n, t
		}
		return n, v
	}
	if code, ok := lookupText(table, v); ok {
		return code, table[code]
	}
	return -1, v
}

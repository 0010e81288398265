package modem

import (
	"errors"
	"fmt"
	"time"
)

// cmeError is a 3GPP TS 27.007 mobile equipment error. How it reaches the
// terminal depends on AT+CMEE: "ERROR", "+CME ERROR: <code>" or
// "+CME ERROR: <text>".
type cmeError int

// CME error codes the simulator uses.
const (
	cmeOperationNotAllowed   cmeError = 3
	cmeOperationNotSupported cmeError = 4
	cmeSIMNotInserted        cmeError = 10
	cmeSIMPINRequired        cmeError = 11
	cmeSIMFailure            cmeError = 13
	cmeSIMBusy               cmeError = 14
	cmeIncorrectPassword     cmeError = 16
	cmeNoNetworkService      cmeError = 30
	cmeIncorrectParameters   cmeError = 50
)

// Error returns the verbose 27.007 text of the code.
func (e cmeError) Error() string {
	if t := cmeText(int(e)); t != "" {
		return t
	}
	return fmt.Sprintf("CME error %d", int(e))
}

// cmeText returns the 27.007 wording of a CME error code, or "" if the code
// has no text the simulator knows.
func cmeText(code int) string {
	switch code {
	case 0:
		return "phone failure"
	case 3:
		return "operation not allowed"
	case 4:
		return "operation not supported"
	case 10:
		return "SIM not inserted"
	case 11:
		return "SIM PIN required"
	case 12:
		return "SIM PUK required"
	case 13:
		return "SIM failure"
	case 14:
		return "SIM busy"
	case 15:
		return "SIM wrong"
	case 16:
		return "incorrect password"
	case 30:
		return "no network service"
	case 50:
		return "incorrect parameters"
	case 100:
		return "unknown"
	case 515:
		return "please wait, init or command processing in progress"
	case 504:
		return "Session is ongoing" // Quectel GNSS
	case 505:
		return "Session not active"
	case 516:
		return "Not fixed now"
	}
	return ""
}

// errPlain is a final result of plain "ERROR" whatever AT+CMEE says, as for
// unknown commands and syntax errors.
var errPlain = errors.New("ERROR")

// RebootError is the cause with which Modem.Serve returns when the modem
// reboots (AT+CFUN=1,1 or Modem.Reboot). A host should drop the stream, keep
// the device away for DownFor (like a USB modem that re-enumerates) and then
// call Serve again on a fresh stream.
type RebootError struct {
	DownFor time.Duration
}

// Error describes the reboot.
func (e *RebootError) Error() string {
	return fmt.Sprintf("modem rebooting (down for %s)", e.DownFor)
}

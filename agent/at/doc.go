// Package at is cardbind's AT command engine: it talks to a cellular modem over
// any byte stream (a serial port, a pseudo-terminal, an in-memory fake).
//
// One owner goroutine writes one command at a time and collects its reply up to
// the final result code (OK, ERROR, +CME ERROR, +CMS ERROR and the vendor
// finals). Unsolicited result codes (URCs) are recognised by a table of known
// prefixes and by the prefixes of registered handlers; they are consumed and
// delivered, in arrival order, by a single dispatcher goroutine, and never
// appear in a command's reply. A line whose prefix matches the command in flight
// (+CPIN: READY during AT+CPIN?) is that command's information, otherwise it is
// a URC.
//
// After a timeout, a cancelled command or garbage on the line the engine
// resynchronises before the next command: it sends a probe whose reply is
// recognisable (AT+CMEE?) and discards everything before that reply, so a late
// final result code of an abandoned command can never complete a later one.
//
// Supervisor keeps an engine running over a port that may disappear (modem
// reboot, USB re-enumeration): it reopens with backoff and jitter, re-runs the
// init commands and tells the caller, which should then re-read the modem's
// identity.
package at

package broker

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
)

// levelTrace is below slog.LevelDebug; nats-server's protocol traces go
// there.
const levelTrace = slog.LevelDebug - 4

// violationKind tells a refused publish from a refused subscription.
type violationKind int

const (
	violationPublish violationKind = iota + 1
	violationSubscribe
)

// violation is one permission violation as nats-server logged it.
type violation struct {
	kind    violationKind
	cid     uint64 // server connection id, 0 if not found in the line
	subject string
}

// The texts nats-server logs for permission violations (server/client.go
// pubPermissionViolation, subPermissionViolation), after the connection's
// label: "<addr> - mid:<cid>", then ` - "<mqtt client id>"` once the MQTT
// CONNECT was read.
const (
	pubViolationText = " - Publish Violation - Subject "
	subViolationText = " - Subscription Violation - Subject "
)

// parseViolation recognises a permission violation in a formatted
// nats-server log line. It parses the label first, so a client id that
// contains the violation text cannot fake one.
func parseViolation(line string) (violation, bool) {
	i := strings.Index(line, "id:") // cid:, mid:, wid:, ...
	if i < 0 {
		return violation{}, false
	}
	rest := line[i+3:]
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	cid, err := strconv.ParseUint(rest[:n], 10, 64)
	if err != nil {
		return violation{}, false
	}
	rest = rest[n:]
	if q, ok := strings.CutPrefix(rest, ` - `); ok && strings.HasPrefix(q, `"`) {
		id, err := strconv.QuotedPrefix(q)
		if err != nil {
			return violation{}, false
		}
		rest = q[len(id):]
	}
	v := violation{cid: cid}
	switch {
	case strings.HasPrefix(rest, pubViolationText):
		v.kind, rest = violationPublish, rest[len(pubViolationText):]
	case strings.HasPrefix(rest, subViolationText):
		v.kind, rest = violationSubscribe, rest[len(subViolationText):]
	default:
		return violation{}, false
	}
	if q, err := strconv.QuotedPrefix(rest); err == nil {
		v.subject, _ = strconv.Unquote(q)
	}
	return v, true
}

// serverLog bridges nats-server's Logger to slog. It also spots the
// permission violations the server logs and hands them to onViolation,
// because that log line is the only trace the server leaves of a refused
// MQTT publish (the client still gets its PUBACK).
type serverLog struct {
	log         *slog.Logger
	onViolation func(violation)

	mu    sync.Mutex
	fatal error // first Fatalf, reported by Start
}

func (l *serverLog) emit(level slog.Level, format string, v []any) {
	if !l.log.Enabled(context.Background(), level) && level < slog.LevelError {
		return
	}
	l.log.Log(context.Background(), level, fmt.Sprintf(format, v...))
}

// Noticef implements server.Logger.
func (l *serverLog) Noticef(format string, v ...any) { l.emit(slog.LevelInfo, format, v) }

// Warnf implements server.Logger.
func (l *serverLog) Warnf(format string, v ...any) { l.emit(slog.LevelWarn, format, v) }

// Fatalf implements server.Logger. nats-server's own logger exits the
// process here; embedded, the error is kept and Start returns it.
func (l *serverLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.mu.Lock()
	if l.fatal == nil {
		l.fatal = fmt.Errorf("nats-server: %s", msg)
	}
	l.mu.Unlock()
	l.log.Error(msg)
}

// Errorf implements server.Logger. Permission violations and failed
// client authentications are client errors, not server errors: the broker
// counts and logs them itself, so they go out at debug level here.
func (l *serverLog) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if viol, ok := parseViolation(msg); ok {
		l.onViolation(viol)
		l.log.Debug(msg)
		return
	}
	if strings.Contains(msg, "authentication error") {
		l.log.Debug(msg)
		return
	}
	l.log.Error(msg)
}

// Debugf implements server.Logger.
func (l *serverLog) Debugf(format string, v ...any) { l.emit(slog.LevelDebug, format, v) }

// Tracef implements server.Logger.
func (l *serverLog) Tracef(format string, v ...any) { l.emit(levelTrace, format, v) }

func (l *serverLog) fatalErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal
}

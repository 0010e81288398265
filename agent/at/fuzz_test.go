package at

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// The seed corpora live in testdata/fuzz/<FuzzName>/.

// FuzzClassify checks the line classifier's invariants for any line and
// command.
func FuzzClassify(f *testing.F) {
	f.Fuzz(func(t *testing.T, line, cmd string) {
		idle := classify(line, nil, nil)
		switch idle {
		case kindInfo, kindEcho, kindFinal:
			t.Fatalf("idle classify(%q) = %v", line, idle)
		}
		if !hasPrefixFold(cmd, "AT") {
			cmd = "AT" + cmd
		}
		cur := &inflight{line: cmd, ids: commandIDs(cmd)}
		k := classify(line, cur, nil)
		trimmed := strings.TrimSpace(line)
		final, _ := parseFinal(trimmed)
		switch k {
		case kindEcho:
			if !strings.EqualFold(trimmed, cmd) {
				t.Fatalf("echo %q for command %q", line, cmd)
			}
		case kindFinal:
			if !final {
				t.Fatalf("final %q not a final result code", line)
			}
		case kindInfo:
			if final {
				t.Fatalf("final %q taken as info", line)
			}
			if isKnownURC(trimmed) && !matchesID(trimmed, cur.ids) {
				t.Fatalf("known URC %q taken as info of %q", line, cmd)
			}
		case kindURC:
			if final {
				t.Fatalf("final %q taken as URC", line)
			}
		case kindEmpty:
			if trimmed != "" {
				t.Fatalf("non-empty %q classified empty", line)
			}
		case kindStray:
			t.Fatalf("stray %q during %q", line, cmd)
		}
		// The classifier is deterministic and idle never beats busy for
		// garbage/empty.
		if (idle == kindGarbage) != (k == kindGarbage) {
			t.Fatalf("garbage depends on command: %v vs %v", idle, k)
		}
	})
}

func matchesID(line string, ids []string) bool {
	for _, id := range ids {
		if hasPrefixFold(line, id+":") {
			return true
		}
	}
	return false
}

// FuzzEngine feeds arbitrary modem output as the reply to AT+CSQ (followed
// by an OK, in case the input lacks a final) and checks that the command
// completes and that its information lines are never echo, finals, blanks,
// garbage or URCs.
func FuzzEngine(f *testing.F) {
	f.Fuzz(func(t *testing.T, reply []byte) {
		m := newFakeModem(t, false, func(cmd string) []chunk {
			if cmd == "AT+CSQ" {
				return []chunk{{data: string(reply)}, {data: "\r\nOK\r\n"}}
			}
			return nil
		})
		e := New(m, WithDefaultTimeout(2*time.Second), WithResyncTimeout(50*time.Millisecond))
		defer e.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := e.Command(ctx, "AT+CSQ")
		var ce *CMEError
		var cs *CMSError
		var re *ResultError
		switch {
		case err == nil, errors.Is(err, ErrError), errors.As(err, &ce), errors.As(err, &cs), errors.As(err, &re):
		default:
			t.Fatalf("unexpected error %v", err)
		}
		for _, l := range resp.Lines {
			if l == "" || l != strings.TrimSpace(l) || !printable(l) || strings.ContainsAny(l, "\r\n") {
				t.Fatalf("bad info line %q", l)
			}
			if final, _ := parseFinal(l); final {
				t.Fatalf("final %q in info", l)
			}
			if strings.EqualFold(l, "AT+CSQ") {
				t.Fatalf("echo in info")
			}
			if isKnownURC(l) {
				t.Fatalf("URC %q in info", l)
			}
		}
		// The engine is still in step afterwards.
		if _, err := e.Command(ctx, "AT+CGSN"); err != nil {
			t.Fatalf("next command: %v", err)
		}
	})
}

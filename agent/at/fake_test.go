package at

import (
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// chunk is a piece of modem output, sent after delay.
type chunk struct {
	delay time.Duration
	data  string
}

// say is a reply sent at once.
func say(s string) []chunk { return []chunk{{data: s}} }

// later is a reply sent after d.
func later(d time.Duration, s string) []chunk { return []chunk{{delay: d, data: s}} }

// script answers one command line (as received, without CR), or returns nil
// to fall through to the defaults.
type script func(cmd string) []chunk

// fakeModem is a hand-written transcript modem on an in-memory port. Output is
// written by one goroutine in order, like a real modem answers in order.
type fakeModem struct {
	t      testing.TB
	echo   bool
	script script

	pr *io.PipeReader
	pw *io.PipeWriter

	mu       sync.Mutex
	received []string
	partial  []byte

	out    chan chunk
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

func newFakeModem(t testing.TB, echo bool, s script) *fakeModem {
	pr, pw := io.Pipe()
	m := &fakeModem{
		t: t, echo: echo, script: s, pr: pr, pw: pw,
		out: make(chan chunk, 256), closed: make(chan struct{}),
	}
	m.wg.Add(1)
	go m.writer()
	t.Cleanup(func() {
		m.shutdown(io.ErrClosedPipe)
		m.wg.Wait()
	})
	return m
}

func (m *fakeModem) writer() {
	defer m.wg.Done()
	for {
		select {
		case <-m.closed:
			return
		case c := <-m.out:
			if c.delay > 0 {
				t := time.NewTimer(c.delay)
				select {
				case <-t.C:
				case <-m.closed:
					t.Stop()
					return
				}
			}
			if _, err := m.pw.Write([]byte(c.data)); err != nil {
				return
			}
		}
	}
}

// Read is the DTE side reading modem output.
func (m *fakeModem) Read(p []byte) (int, error) { return m.pr.Read(p) }

// Write is the DTE side sending commands; lines end at CR.
func (m *fakeModem) Write(p []byte) (int, error) {
	select {
	case <-m.closed:
		return 0, io.ErrClosedPipe
	default:
	}
	m.mu.Lock()
	var cmds []string
	for _, b := range p {
		if b == '\r' {
			cmds = append(cmds, string(m.partial))
			m.partial = m.partial[:0]
			continue
		}
		if b != '\n' {
			m.partial = append(m.partial, b)
		}
	}
	m.received = append(m.received, cmds...)
	m.mu.Unlock()
	for _, cmd := range cmds {
		if m.echo {
			m.send(chunk{data: cmd + "\r"})
		}
		for _, c := range m.answer(cmd) {
			m.send(c)
		}
	}
	return len(p), nil
}

func (m *fakeModem) answer(cmd string) []chunk {
	if m.script != nil {
		if r := m.script(cmd); r != nil {
			return r
		}
	}
	switch strings.ToUpper(cmd) {
	case "AT", "ATE0", "ATE1", "ATV1", "AT+CMEE=1", "AT+CMEE=2":
		return say("\r\nOK\r\n")
	case "AT+CMEE?":
		return say("\r\n+CMEE: 1\r\n\r\nOK\r\n")
	case "AT+CSCS?":
		return say("\r\n+CSCS: \"IRA\"\r\n\r\nOK\r\n")
	case "AT+CSQ":
		return say("\r\n+CSQ: 17,99\r\n\r\nOK\r\n")
	case "AT+CGSN":
		return say("\r\n490154203237518\r\n\r\nOK\r\n")
	}
	return say("\r\nERROR\r\n")
}

func (m *fakeModem) send(c chunk) {
	select {
	case m.out <- c:
	case <-m.closed:
	}
}

// emit sends unsolicited output (URCs, garbage).
func (m *fakeModem) emit(s string) { m.send(chunk{data: s}) }

// Close is the DTE closing the port.
func (m *fakeModem) Close() error {
	m.shutdown(io.ErrClosedPipe)
	return m.pr.Close()
}

// hangup makes the port fail, like a USB modem vanishing.
func (m *fakeModem) hangup() { m.shutdown(errors.New("input/output error")) }

func (m *fakeModem) shutdown(err error) {
	m.once.Do(func() {
		close(m.closed)
		m.pw.CloseWithError(err)
	})
}

// sent returns the command lines received so far.
func (m *fakeModem) sent() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.received...)
}

package modem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// maxLine is the longest command line the modem accepts; longer lines are
// answered with ERROR, as a module whose input buffer overflows does.
const maxLine = 1024

// writeTimeout bounds a write to a stream that supports deadlines.
const writeTimeout = 2 * time.Second

// session is one power-on period of the modem on one stream.
type session struct {
	m      *Modem
	rw     io.ReadWriter
	ctx    context.Context
	cancel context.CancelCauseFunc
	kick   chan struct{}

	line     []byte
	overflow bool
}

type readDeadliner interface {
	SetReadDeadline(t time.Time) error
}

type writeDeadliner interface {
	SetWriteDeadline(t time.Time) error
}

// Serve powers the modem on and answers AT commands read from rw until ctx
// is done, the modem reboots, or reading fails. It sends the personality's
// boot URCs first and, with a Network, attaches the SIM.
//
// On reboot Serve returns a *RebootError; call Serve again (after
// RebootError.DownFor, on a fresh stream if you are emulating USB
// re-enumeration) to boot the modem. When ctx is done Serve returns
// ctx.Err(); at the end of input it returns nil.
//
// Streams with a SetReadDeadline method (os.File from a pty, net.Conn) are
// interrupted promptly; with other streams Serve returns after the next Read.
// Only one Serve may run at a time.
func (m *Modem) Serve(ctx context.Context, rw io.ReadWriter) error {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s := &session{m: m, rw: rw, ctx: sctx, cancel: cancel, kick: make(chan struct{}, 1)}

	m.mu.Lock()
	if m.sess != nil {
		m.mu.Unlock()
		return errors.New("modem: already serving a stream")
	}
	m.sess = s
	m.st.powerOn(m.pers)
	m.st.boots++
	boot := m.pers.boot(&m.st)
	m.mu.Unlock()
	m.log.Info("modem powered on", "personality", m.pers.name)

	if d, ok := rw.(readDeadliner); ok {
		stop := context.AfterFunc(sctx, func() { _ = d.SetReadDeadline(time.Unix(1, 0)) })
		defer stop()
	}

	m.emit(boot...)
	var wg sync.WaitGroup
	wg.Go(func() { m.runRegistration(s) })
	defer func() {
		cancel(nil)
		wg.Wait()
		m.mu.Lock()
		m.sess = nil
		m.mu.Unlock()
	}()

	buf := make([]byte, 256)
	for {
		n, err := rw.Read(buf)
		if n > 0 {
			s.feed(buf[:n])
		}
		if cause := context.Cause(sctx); cause != nil {
			var rb *RebootError
			if errors.As(cause, &rb) {
				return rb
			}
			return ctx.Err()
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("modem: read: %w", err)
		}
	}
}

// feed consumes input bytes: echo, line editing, and execution at S3.
func (s *session) feed(p []byte) {
	var echo []byte
	st := s.settings()
	for _, c := range p {
		if s.ctx.Err() != nil {
			return
		}
		switch {
		case c == st.s3:
			if st.echo {
				echo = append(echo, c)
			}
			s.flushEcho(&echo)
			line := string(s.line)
			overflow := s.overflow
			s.line, s.overflow = s.line[:0], false
			s.execLine(line, overflow)
			st = s.settings()
		case c == '\n':
			// LF after CR (or a stray one) is ignored.
		case c == st.s5 || c == 0x7f:
			if len(s.line) > 0 {
				s.line = s.line[:len(s.line)-1]
			}
			if st.echo {
				echo = append(echo, c)
			}
		case c < 0x20:
			// Other control characters are dropped.
		default:
			if len(s.line) >= maxLine {
				s.overflow = true
			} else {
				s.line = append(s.line, c)
			}
			if st.echo {
				echo = append(echo, c)
			}
		}
	}
	s.flushEcho(&echo)
}

// lineSettings are the settings the input side needs.
type lineSettings struct {
	echo   bool
	s3, s5 byte
}

func (s *session) settings() lineSettings {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	st := &s.m.st
	return lineSettings{echo: st.echo, s3: byte(st.sreg[3]), s5: byte(st.sreg[5])}
}

func (s *session) flushEcho(echo *[]byte) {
	if len(*echo) > 0 {
		s.write(*echo)
		*echo = (*echo)[:0]
	}
}

// execLine runs one command line and writes its answer.
func (s *session) execLine(line string, overflow bool) {
	m := s.m
	at := findAT(line)
	if at < 0 && !overflow {
		if strings.TrimSpace(line) != "" {
			m.log.Debug("ignoring line without AT", "line", line)
		}
		return
	}

	m.mu.Lock()
	f := &m.st.faults
	if f.NoResponse > 0 {
		f.NoResponse--
		m.mu.Unlock()
		m.log.Debug("fault: no response", "line", line)
		return
	}
	delay := f.Delay
	m.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}

	m.mu.Lock()
	x := &execCtx{m: m, s: &m.st}
	var out bytes.Buffer
	var final error
	switch {
	case overflow:
		final = errPlain
	case f.Errors > 0:
		f.Errors--
		final = errPlain
		if f.ErrorCode > 0 {
			final = cmeError(f.ErrorCode)
		}
	default:
		cmds, err := parseCommandLine(line[at:])
		if err != nil {
			final = errPlain
			break
		}
		for _, c := range cmds {
			lines, err := m.exec(x, c)
			if len(lines) > 0 {
				out.Write(frameInfo(&m.st, lines))
			}
			if err != nil {
				final = err
				break
			}
		}
	}
	out.Write(frameFinal(&m.st, final))
	var spurious []byte
	if f.SpuriousURCs > 0 {
		f.SpuriousURCs--
		urc := f.SpuriousURC
		if urc == "" {
			urc = fmt.Sprintf("+CREG: %d", m.st.stat)
		}
		spurious = frameURC(&m.st, urc)
	}
	resp := out.Bytes()
	if f.Garble > 0 {
		f.Garble--
		for i := range resp {
			if m.rng.IntN(6) == 0 {
				resp[i] = byte(0x80 + m.rng.IntN(0x80))
			}
		}
	}
	m.mu.Unlock()

	if spurious != nil {
		s.write(spurious)
	}
	s.write(resp)
	for _, fn := range x.after {
		fn()
	}
}

// write sends p on the session's stream, in one piece.
func (s *session) write(p []byte) {
	if len(p) == 0 {
		return
	}
	m := s.m
	m.outMu.Lock()
	defer m.outMu.Unlock()
	if d, ok := s.rw.(writeDeadliner); ok {
		_ = d.SetWriteDeadline(time.Now().Add(writeTimeout))
	}
	if _, err := s.rw.Write(p); err != nil && s.ctx.Err() == nil {
		m.log.Debug("write failed; output dropped", "err", err)
	}
}

// emit sends unsolicited result codes to the stream being served, if any.
func (m *Modem) emit(urcs ...string) {
	if len(urcs) == 0 {
		return
	}
	m.mu.Lock()
	sess := m.sess
	var b []byte
	for _, u := range urcs {
		b = append(b, frameURC(&m.st, u)...)
	}
	m.mu.Unlock()
	if sess == nil {
		return
	}
	m.log.Debug("URC", "lines", urcs)
	sess.write(b)
}

// frameInfo frames the information lines of one command: in verbose mode
// "\r\n" before the first line and after each, otherwise after each only.
func frameInfo(s *state, lines []string) []byte {
	cr, lf := byte(s.sreg[3]), byte(s.sreg[4])
	var b []byte
	if s.verbose {
		b = append(b, cr, lf)
	}
	for _, l := range lines {
		b = append(b, l...)
		b = append(b, cr, lf)
	}
	return b
}

// frameURC frames an unsolicited line like an information line.
func frameURC(s *state, line string) []byte {
	return frameInfo(s, []string{line})
}

// frameFinal renders the final result code: OK, ERROR or +CME ERROR per
// AT+CMEE, verbose or numeric per ATV, nothing when ATQ1.
func frameFinal(s *state, err error) []byte {
	cr, lf := byte(s.sreg[3]), byte(s.sreg[4])
	var cme cmeError
	if errors.As(err, &cme) {
		switch s.cmee {
		case 1:
			return frameInfo(s, []string{fmt.Sprintf("+CME ERROR: %d", int(cme))})
		case 2:
			return frameInfo(s, []string{"+CME ERROR: " + cme.Error()})
		}
	}
	if s.quiet {
		return nil
	}
	if !s.verbose {
		if err != nil {
			return []byte{'4', cr}
		}
		return []byte{'0', cr}
	}
	text := "OK"
	if err != nil {
		text = "ERROR"
	}
	b := append([]byte{cr, lf}, text...)
	return append(b, cr, lf)
}

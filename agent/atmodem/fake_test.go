package atmodem

import (
	"context"
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

// module is a hand-written modem that answers from a transcript of a real
// module: the bytes as they came off the wire, with their quirks (echo that
// ATE0 does not silence, "\r\r\n" line ends, URCs in the middle of a reply,
// replies split across slow chunks). It can be unplugged and plugged back in
// (a reboot re-enumerating the USB port): each open gets a fresh port.
type module struct {
	t testing.TB
	// replies maps an upper-case command line to its reply chunks; commands
	// not in it fall back to defaults, then to ERROR.
	replies map[string][]chunk
	// strayEcho makes the module echo every command even after ATE0 (some
	// firmwares ignore E0 on their secondary port).
	strayEcho bool

	mu      sync.Mutex
	sent    []string
	cur     *port
	down    bool
	opens   int
	openErr error
}

func newModule(t testing.TB, replies map[string][]chunk) *module {
	m := &module{t: t, replies: map[string][]chunk{}}
	for k, v := range replies {
		m.replies[strings.ToUpper(k)] = v
	}
	t.Cleanup(func() {
		m.mu.Lock()
		p := m.cur
		m.mu.Unlock()
		if p != nil {
			p.shutdown(io.ErrClosedPipe)
			p.wg.Wait()
		}
	})
	return m
}

// open is the module's at.Opener.
func (m *module) open(ctx context.Context) (io.ReadWriteCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		m.openErr = errors.New("open /dev/ttyUSB2: no such file or directory")
		return nil, m.openErr
	}
	m.opens++
	p := newPort(m)
	m.cur = p
	return p, nil
}

// unplug makes the current port fail and refuses opens until plug.
func (m *module) unplug() {
	m.mu.Lock()
	m.down = true
	p := m.cur
	m.mu.Unlock()
	if p != nil {
		p.shutdown(errors.New("read /dev/ttyUSB2: input/output error"))
	}
}

// plug lets the port be opened again.
func (m *module) plug() {
	m.mu.Lock()
	m.down = false
	m.mu.Unlock()
}

// emit sends unsolicited output on the current port.
func (m *module) emit(s string) {
	m.mu.Lock()
	p := m.cur
	m.mu.Unlock()
	if p != nil {
		p.send(chunk{data: s})
	}
}

// setReply replaces the reply to cmd.
func (m *module) setReply(cmd string, c []chunk) {
	m.mu.Lock()
	m.replies[strings.ToUpper(cmd)] = c
	m.mu.Unlock()
}

// commands returns every command line received, across ports.
func (m *module) commands() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.sent...)
}

func (m *module) answer(cmd string) []chunk {
	m.mu.Lock()
	r, ok := m.replies[strings.ToUpper(cmd)]
	m.mu.Unlock()
	if ok {
		return r
	}
	switch u := strings.ToUpper(cmd); {
	case u == "AT", u == "ATE0", u == "ATV1", strings.HasPrefix(u, "AT+CMEE="),
		strings.HasSuffix(u, "REG=2"):
		return say("\r\nOK\r\n")
	case u == "AT+CMEE?":
		return say("\r\n+CMEE: 1\r\n\r\nOK\r\n")
	}
	return say("\r\nERROR\r\n")
}

func say(s string) []chunk { return []chunk{{data: s}} }

// port is one opening of the module's serial device.
type port struct {
	m    *module
	echo bool
	pr   *io.PipeReader
	pw   *io.PipeWriter

	mu      sync.Mutex
	partial []byte

	out    chan chunk
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

func newPort(m *module) *port {
	pr, pw := io.Pipe()
	p := &port{m: m, echo: true, pr: pr, pw: pw, out: make(chan chunk, 256), closed: make(chan struct{})}
	p.wg.Add(1)
	go p.writer()
	return p
}

func (p *port) writer() {
	defer p.wg.Done()
	for {
		select {
		case <-p.closed:
			return
		case c := <-p.out:
			if c.delay > 0 {
				t := time.NewTimer(c.delay)
				select {
				case <-t.C:
				case <-p.closed:
					t.Stop()
					return
				}
			}
			if _, err := p.pw.Write([]byte(c.data)); err != nil {
				return
			}
		}
	}
}

func (p *port) Read(b []byte) (int, error) { return p.pr.Read(b) }

// Write takes command lines ending at CR, as a modem does (LF ignored).
func (p *port) Write(b []byte) (int, error) {
	select {
	case <-p.closed:
		return 0, io.ErrClosedPipe
	default:
	}
	p.mu.Lock()
	var cmds []string
	for _, c := range b {
		switch c {
		case '\r':
			cmds = append(cmds, string(p.partial))
			p.partial = p.partial[:0]
		case '\n':
		default:
			p.partial = append(p.partial, c)
		}
	}
	p.mu.Unlock()
	for _, cmd := range cmds {
		p.m.mu.Lock()
		p.m.sent = append(p.m.sent, cmd)
		stray := p.m.strayEcho
		p.m.mu.Unlock()
		if p.echo || stray {
			p.send(chunk{data: cmd + "\r"})
		}
		if strings.EqualFold(cmd, "ATE0") {
			p.echo = false
		}
		for _, c := range p.m.answer(cmd) {
			p.send(c)
		}
	}
	return len(b), nil
}

func (p *port) send(c chunk) {
	select {
	case p.out <- c:
	case <-p.closed:
	}
}

func (p *port) Close() error {
	p.shutdown(io.ErrClosedPipe)
	return p.pr.Close()
}

func (p *port) shutdown(err error) {
	p.once.Do(func() {
		close(p.closed)
		p.pw.CloseWithError(err)
	})
}

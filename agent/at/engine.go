package at

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Default timeouts. Most queries answer in well under a second; radio and SIM
// file access can take much longer (SIMCom A760x needs over 10 s for +CRSM).
const (
	DefaultTimeout = 3 * time.Second
	LongTimeout    = 20 * time.Second
)

// defaultLongCommands get LongTimeout unless configured otherwise.
var defaultLongCommands = []string{"+CFUN", "+COPS", "+CRSM", "+CGATT", "+CGACT"}

// Response is the reply to one command: its information lines, trimmed, in
// order, without echo, blank lines or URCs, and the final result code.
type Response struct {
	Lines []string
	Final string
}

// Handler receives one unsolicited result code line. Handlers run one at a
// time, in arrival order, on the engine's dispatcher goroutine; they should
// return quickly. A handler may call Command but must not call Close.
type Handler func(line string)

// Option configures an Engine.
type Option func(*config)

type probe struct{ cmd, marker string }

type config struct {
	log            *slog.Logger
	defaultTimeout time.Duration
	timeouts       map[string]time.Duration
	resyncTimeout  time.Duration
	quiet          time.Duration
	probes         []probe
	prefixes       []string
	handlers       []handlerEntry
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// WithDefaultTimeout sets the timeout of commands without a specific one.
func WithDefaultTimeout(d time.Duration) Option {
	return func(c *config) { c.defaultTimeout = d }
}

// WithTimeoutFor sets the timeout of one command name, such as "+COPS".
func WithTimeoutFor(cmdID string, d time.Duration) Option {
	return func(c *config) { c.timeouts[strings.ToUpper(cmdID)] = d }
}

// WithResyncTimeout sets how long one resynchronisation probe may take
// (default 2 s).
func WithResyncTimeout(d time.Duration) Option {
	return func(c *config) { c.resyncTimeout = d }
}

// WithURCPrefixes adds line prefixes that are always unsolicited (unless the
// command in flight has that name), on top of the built-in table; for vendor
// URCs that no handler is registered for.
func WithURCPrefixes(prefixes ...string) Option {
	return func(c *config) { c.prefixes = append(c.prefixes, prefixes...) }
}

// WithHandler registers a URC handler at construction; see Engine.Handle.
func WithHandler(prefix string, h Handler) Option {
	return func(c *config) { c.handlers = append(c.handlers, handlerEntry{prefix, h}) }
}

// CommandOption configures one command.
type CommandOption func(*cmdConfig)

type cmdConfig struct{ timeout time.Duration }

// CommandTimeout overrides the timeout of one command.
func CommandTimeout(d time.Duration) CommandOption {
	return func(c *cmdConfig) { c.timeout = d }
}

// Engine runs AT commands over a port, one at a time. It is safe for
// concurrent use. Create it with New; it stops when Close is called or when
// reading the port fails, and cannot be restarted (Supervisor makes new ones).
type Engine struct {
	port io.ReadWriteCloser
	cfg  config
	log  *slog.Logger
	disp *dispatcher

	reqs  chan *request
	lines chan string
	quit  chan struct{} // closed by Close
	done  chan struct{} // closed when the owner goroutine has stopped

	dirty     bool     // owner only: the line may hold leftovers, resync first
	abandoned []string // owner only: command names of the last abandoned command

	mu  sync.Mutex
	err error

	closeOnce sync.Once
	portOnce  sync.Once
	wg        sync.WaitGroup
}

type request struct {
	ctx     context.Context
	line    string
	sync    bool
	timeout time.Duration
	result  chan result
}

type result struct {
	resp Response
	err  error
}

// New starts an engine on port. The engine owns the port and closes it.
func New(port io.ReadWriteCloser, opts ...Option) *Engine {
	cfg := config{
		log:            slog.New(slog.DiscardHandler),
		defaultTimeout: DefaultTimeout,
		timeouts:       map[string]time.Duration{},
		resyncTimeout:  2 * time.Second,
		quiet:          200 * time.Millisecond,
		probes: []probe{
			{"AT+CMEE?", "+CMEE:"},
			{"AT+CSCS?", "+CSCS:"},
			{"AT", ""},
		},
	}
	for _, id := range defaultLongCommands {
		cfg.timeouts[id] = LongTimeout
	}
	for _, o := range opts {
		o(&cfg)
	}
	e := &Engine{
		port:  port,
		cfg:   cfg,
		log:   cfg.log,
		reqs:  make(chan *request),
		lines: make(chan string, 64),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	e.disp = newDispatcher(cfg.log, cfg.prefixes, cfg.handlers)
	e.wg.Add(3)
	go func() { defer e.wg.Done(); e.readLoop() }()
	go func() { defer e.wg.Done(); e.run() }()
	go func() { defer e.wg.Done(); e.disp.run() }()
	return e
}

// Handle registers h for URC lines starting with prefix (case-insensitive),
// for example "+CREG:" or "RDY". Handlers matching a line are called in
// registration order. The empty prefix matches every URC, including unknown
// lines that arrive while no command is in flight, but does not make a line
// unsolicited on its own.
func (e *Engine) Handle(prefix string, h Handler) { e.disp.add(prefix, h) }

// Closed returns a channel that is closed when the engine has stopped.
func (e *Engine) Closed() <-chan struct{} { return e.done }

// Err returns why the engine stopped (the port's read error, or ErrClosed
// after Close), or nil while it runs.
func (e *Engine) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

func (e *Engine) setErr(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err == nil {
		e.err = err
	}
}

// closedErr is what commands get once the engine has stopped.
func (e *Engine) closedErr() error {
	if err := e.Err(); err != nil && !errors.Is(err, ErrClosed) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return ErrClosed
}

// Close stops the engine, closes the port and waits for its goroutines.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.setErr(ErrClosed)
		close(e.quit)
	})
	err := e.closePort()
	e.wg.Wait()
	return err
}

func (e *Engine) closePort() error {
	var err error
	e.portOnce.Do(func() { err = e.port.Close() })
	return err
}

// Command sends one command line, which must start with "AT" ("AT+CGSN",
// "AT+CPIN?", "AT+COPS=3,2;+COPS?"), and waits for its final result code.
// It returns the information lines with a nil error on OK; a *CMEError,
// *CMSError, *ResultError or ErrError for an error final; ErrTimeout (with the
// lines received so far) when no final arrived in time; ErrClosed when the
// engine stopped; or the context's error. The next command after a timeout or
// cancellation is preceded by a resynchronisation.
func (e *Engine) Command(ctx context.Context, cmd string, opts ...CommandOption) (Response, error) {
	if len(cmd) < 2 || !hasPrefixFold(cmd, "AT") || strings.ContainsAny(cmd, "\r\n") {
		return Response{}, fmt.Errorf("%q: %w", cmd, ErrBadCommand)
	}
	cc := cmdConfig{timeout: e.timeoutFor(commandIDs(cmd))}
	for _, o := range opts {
		o(&cc)
	}
	resp, err := e.submit(ctx, &request{ctx: ctx, line: cmd, timeout: cc.timeout})
	if err != nil {
		return resp, fmt.Errorf("%s: %w", cmd, err)
	}
	return resp, nil
}

// Sync resynchronises with the modem now: it sends a probe and discards
// everything that arrives before the probe's reply. Use it after opening a
// port whose modem may have been talking already.
func (e *Engine) Sync(ctx context.Context) error {
	_, err := e.submit(ctx, &request{ctx: ctx, sync: true})
	if err != nil {
		return fmt.Errorf("at: sync: %w", err)
	}
	return nil
}

func (e *Engine) submit(ctx context.Context, r *request) (Response, error) {
	r.result = make(chan result, 1)
	select {
	case e.reqs <- r:
	case <-ctx.Done():
		return Response{}, ctx.Err()
	case <-e.done:
		return Response{}, e.closedErr()
	}
	res := <-r.result // the owner answers every request it accepts
	return res.resp, res.err
}

func (e *Engine) timeoutFor(ids []string) time.Duration {
	d := e.cfg.defaultTimeout
	for _, id := range ids {
		if t, ok := e.cfg.timeouts[id]; ok && t > d {
			d = t
		}
	}
	return d
}

// readLoop turns port bytes into lines until the port fails.
func (e *Engine) readLoop() {
	defer close(e.lines)
	var sp splitter
	buf := make([]byte, 512)
	emit := func(l string) {
		select {
		case e.lines <- l:
		case <-e.quit:
		}
	}
	idle := 0
	for {
		n, err := e.port.Read(buf)
		sp.feed(buf[:n], emit)
		switch {
		case err != nil:
			e.setErr(fmt.Errorf("at: read port: %w", err))
			return
		case n == 0:
			if idle++; idle > 100 {
				e.setErr(fmt.Errorf("at: read port: %w", io.ErrNoProgress))
				return
			}
		default:
			idle = 0
		}
	}
}

// run is the owner goroutine: it alone writes to the port and consumes lines.
func (e *Engine) run() {
	defer func() {
		e.setErr(ErrClosed)
		close(e.done)
		_ = e.closePort()
		e.disp.stop()
	}()
	for {
		select {
		case <-e.quit:
			return
		case l, ok := <-e.lines:
			if !ok {
				return
			}
			e.idleLine(l)
		case r := <-e.reqs:
			if !e.exec(r) {
				return
			}
		}
	}
}

func (e *Engine) idleLine(raw string) {
	switch k := classify(raw, nil, e.disp.isURC); k {
	case kindURC:
		e.disp.push(strings.TrimSpace(raw))
	case kindGarbage:
		e.dirty = true
		e.log.Debug("at: garbage while idle", "line", raw)
	case kindStray:
		line := strings.TrimSpace(raw)
		if final, _ := parseFinal(line); e.dirty || final || hasPrefixFold(line, "AT") {
			e.log.Debug("at: discarded stray line", "line", line)
			return
		}
		// A line nobody asked for on a quiet line: an unknown vendor URC.
		e.disp.push(line)
	}
}

// exec runs one request; it returns false when the engine must stop.
func (e *Engine) exec(r *request) bool {
	if err := r.ctx.Err(); err != nil {
		r.result <- result{err: err}
		return true
	}
	if r.sync || e.dirty {
		if err := e.resync(r.ctx); err != nil {
			r.result <- result{err: err}
			return !errors.Is(err, ErrClosed)
		}
		if r.sync {
			r.result <- result{}
			return true
		}
	}
	cur := &inflight{line: r.line, ids: commandIDs(r.line)}
	if err := e.write(r.line); err != nil {
		e.abandon(cur)
		r.result <- result{err: err}
		return true
	}
	timer := time.NewTimer(r.timeout)
	defer timer.Stop()
	var lines []string
	for {
		select {
		case raw, ok := <-e.lines:
			if !ok {
				r.result <- result{resp: Response{Lines: lines}, err: e.closedErr()}
				return false
			}
			line := strings.TrimSpace(raw)
			switch classify(raw, cur, e.disp.isURC) {
			case kindGarbage:
				e.dirty = true
				e.log.Debug("at: garbage", "cmd", r.line, "line", raw)
			case kindFinal:
				_, err := parseFinal(line)
				r.result <- result{resp: Response{Lines: lines, Final: line}, err: err}
				return true
			case kindInfo:
				lines = append(lines, line)
			case kindURC:
				e.disp.push(line)
			}
		case <-timer.C:
			e.abandon(cur)
			r.result <- result{resp: Response{Lines: lines}, err: ErrTimeout}
			return true
		case <-r.ctx.Done():
			e.abandon(cur)
			r.result <- result{resp: Response{Lines: lines}, err: r.ctx.Err()}
			return true
		case <-e.quit:
			r.result <- result{resp: Response{Lines: lines}, err: ErrClosed}
			return false
		}
	}
}

// abandon records that cur's reply may still arrive.
func (e *Engine) abandon(cur *inflight) {
	e.dirty = true
	e.abandoned = cur.ids
}

func (e *Engine) write(line string) error {
	e.log.Debug("at: tx", "cmd", line)
	if _, err := io.WriteString(e.port, line+"\r"); err != nil {
		return fmt.Errorf("at: write port: %w", err)
	}
	return nil
}

// resync sends probes until one's reply is recognised. A probe with a marker
// ("+CMEE:") is synchronised when its marker line and then a final arrive:
// the modem answers in order, so whatever the abandoned command still owed
// came before. A probe without a marker (plain AT) is synchronised after a
// final followed by a quiet period.
func (e *Engine) resync(ctx context.Context) error {
	for range 2 {
		for _, p := range e.cfg.probes {
			if p.marker != "" && conflicts(p.cmd, e.abandoned) {
				continue
			}
			ok, err := e.probe(ctx, p)
			if err != nil {
				return err
			}
			if ok {
				e.dirty = false
				e.abandoned = nil
				return nil
			}
		}
	}
	return ErrNoResponse
}

func conflicts(cmd string, abandoned []string) bool {
	for _, id := range commandIDs(cmd) {
		for _, a := range abandoned {
			if id == a {
				return true
			}
		}
	}
	return false
}

// probe runs one resynchronisation probe; it reports whether it succeeded.
func (e *Engine) probe(ctx context.Context, p probe) (bool, error) {
	cur := &inflight{line: p.cmd, ids: commandIDs(p.cmd)}
	if err := e.write(p.cmd); err != nil {
		return false, err
	}
	deadline := time.NewTimer(e.cfg.resyncTimeout)
	quietFor := min(e.cfg.quiet, e.cfg.resyncTimeout/2)
	defer deadline.Stop()
	var quiet <-chan time.Time // armed after a final, for marker-less probes
	marked := false
	for {
		select {
		case raw, ok := <-e.lines:
			if !ok {
				return false, e.closedErr()
			}
			line := strings.TrimSpace(raw)
			k := classify(raw, cur, e.disp.isURC)
			switch k {
			case kindURC:
				e.disp.push(line)
			case kindInfo:
				if p.marker != "" && hasPrefixFold(line, p.marker) {
					marked = true
				}
			case kindFinal:
				if p.marker != "" && marked {
					return true, nil
				}
			}
			// Without a marker: done once nothing follows a final for a while.
			if p.marker == "" && k != kindEmpty && (k == kindFinal || quiet != nil) {
				quiet = time.After(quietFor)
			}
		case <-quiet:
			return true, nil
		case <-deadline.C:
			e.log.Debug("at: resync probe unanswered", "probe", p.cmd)
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		case <-e.quit:
			return false, ErrClosed
		}
	}
}

package at

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Opener opens the modem's port. Supervisor calls it at start and again after
// the port has failed.
type Opener func(ctx context.Context) (io.ReadWriteCloser, error)

// DefaultInit returns the init commands Supervisor runs after every open when
// SupervisorConfig.Init is nil: echo off, verbose result codes, numeric CME
// errors. (No ATZ: it resets URC enables on some modules.)
func DefaultInit() []string { return []string{"ATE0", "ATV1", "AT+CMEE=1"} }

// SupervisorConfig configures a Supervisor. Only Open is required.
type SupervisorConfig struct {
	// Open opens the port (see agent/serialport).
	Open Opener
	// Init is run after every open; nil means DefaultInit. Add URC enables
	// here (AT+CREG=2, AT+QSIMSTAT=1, ...). A modem error on one of them is
	// logged and the rest still run; a timeout or closed port fails the open.
	Init []string
	// Options are passed to every Engine.
	Options []Option
	// MinBackoff and MaxBackoff bound the delay between reopen attempts
	// (defaults 500 ms and 30 s); each delay is jittered.
	MinBackoff, MaxBackoff time.Duration
	// OnUp is called on Run's goroutine after each successful open and
	// init, with the new engine: the place to (re-)read the modem identity.
	// Commands issued from it may use the engine or the Supervisor.
	OnUp func(ctx context.Context, e *Engine)
	// OnDown is called when the engine stops, with the cause.
	OnDown func(err error)
	// Logger receives connection events (default: discard).
	Logger *slog.Logger
}

// Supervisor keeps an Engine running on a port that may disappear and come
// back (modem reboot, USB re-enumeration). Run drives it; Command and Handle
// may be used from any goroutine.
type Supervisor struct {
	cfg    SupervisorConfig
	log    *slog.Logger
	jitter func() float64

	mu       sync.Mutex
	cur      *Engine
	handlers []handlerEntry
}

// NewSupervisor checks cfg and returns a Supervisor; call Run to start it.
func NewSupervisor(cfg SupervisorConfig) (*Supervisor, error) {
	if cfg.Open == nil {
		return nil, errors.New("at: supervisor: Open is required")
	}
	if cfg.Init == nil {
		cfg.Init = DefaultInit()
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Supervisor{cfg: cfg, log: log, jitter: rand.Float64}, nil
}

// Handle registers a URC handler on the current engine and every later one.
func (s *Supervisor) Handle(prefix string, h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers = append(s.handlers, handlerEntry{prefix, h})
	if s.cur != nil {
		s.cur.Handle(prefix, h)
	}
}

// Command runs cmd on the current engine, or fails with ErrNotConnected while
// the port is down.
func (s *Supervisor) Command(ctx context.Context, cmd string, opts ...CommandOption) (Response, error) {
	s.mu.Lock()
	e := s.cur
	s.mu.Unlock()
	if e == nil {
		return Response{}, fmt.Errorf("%s: %w", cmd, ErrNotConnected)
	}
	return e.Command(ctx, cmd, opts...)
}

// Run opens the port, runs init, calls OnUp, and after the port fails does it
// all again with backoff, until ctx is done. It returns ctx's error.
func (s *Supervisor) Run(ctx context.Context) error {
	attempt := 0
	for {
		e, registered, err := s.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d := s.backoff(attempt)
			attempt++
			s.log.Warn("modem port unavailable", "err", err, "retry_in", d)
			if !sleep(ctx, d) {
				return ctx.Err()
			}
			continue
		}
		attempt = 0
		s.setCurrent(e, registered)
		s.log.Info("modem port up")
		if s.cfg.OnUp != nil {
			s.cfg.OnUp(ctx, e)
		}
		select {
		case <-ctx.Done():
			s.setCurrent(nil, 0)
			_ = e.Close()
			return ctx.Err()
		case <-e.Closed():
		}
		cause := e.Err()
		s.setCurrent(nil, 0)
		_ = e.Close()
		s.log.Warn("modem port down", "err", cause)
		if s.cfg.OnDown != nil {
			s.cfg.OnDown(cause)
		}
		if !sleep(ctx, s.backoff(0)) {
			return ctx.Err()
		}
		attempt = 1
	}
}

// connect opens the port, synchronises and runs init. It also returns how
// many of the supervisor's handlers the new engine already has.
func (s *Supervisor) connect(ctx context.Context) (*Engine, int, error) {
	port, err := s.cfg.Open(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("open: %w", err)
	}
	s.mu.Lock()
	opts := append([]Option(nil), s.cfg.Options...)
	for _, he := range s.handlers {
		opts = append(opts, WithHandler(he.prefix, he.h))
	}
	registered := len(s.handlers)
	s.mu.Unlock()
	e := New(port, opts...)
	if err := e.Sync(ctx); err != nil {
		_ = e.Close()
		return nil, 0, err
	}
	for _, cmd := range s.cfg.Init {
		_, err := e.Command(ctx, cmd)
		switch {
		case err == nil:
		case errors.Is(err, ErrTimeout), errors.Is(err, ErrClosed), ctx.Err() != nil:
			_ = e.Close()
			return nil, 0, fmt.Errorf("init: %w", err)
		default:
			s.log.Warn("modem init command failed", "cmd", cmd, "err", err)
		}
	}
	return e, registered, nil
}

// setCurrent makes e the engine Command uses, first giving it the handlers
// registered since connect took its snapshot.
func (s *Supervisor) setCurrent(e *Engine, registered int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e != nil {
		for _, he := range s.handlers[registered:] {
			e.Handle(he.prefix, he.h)
		}
	}
	s.cur = e
}

// backoff returns the jittered delay before attempt n (0-based): the base
// doubles from MinBackoff up to MaxBackoff, and the delay is drawn uniformly
// from [base/2, base).
func (s *Supervisor) backoff(n int) time.Duration {
	base := s.cfg.MinBackoff
	for i := 0; i < n && base < s.cfg.MaxBackoff; i++ {
		base *= 2
	}
	base = min(base, s.cfg.MaxBackoff)
	half := base / 2
	return half + time.Duration(s.jitter()*float64(half))
}

// sleep waits d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cardbind/cardbind/agent"
	"github.com/cardbind/cardbind/agent/at"
	"github.com/cardbind/cardbind/agent/atmodem"
	"github.com/cardbind/cardbind/agent/config"
	"github.com/cardbind/cardbind/agent/identity"
	"github.com/cardbind/cardbind/agent/modemmanager"
	"github.com/cardbind/cardbind/agent/serialport"
)

// source is where the agent reads the modem: an agent.Modem and the loop
// that keeps its connection (the serial port, or the D-Bus connection).
type source interface {
	agent.Modem
	Run(ctx context.Context) error
}

var (
	_ source = (*atmodem.Modem)(nil)
	_ source = (*modemmanager.Modem)(nil)
)

// newSource builds the source modem.source names; gnss turns on GNSS
// reading (AT source only).
func newSource(m config.Modem, gnss bool, log *slog.Logger) (source, error) {
	if m.Source == "modemmanager" {
		if gnss {
			log.Warn("gnss.enabled is ignored with modem.source \"modemmanager\": reports carry the serving cell only")
		}
		return modemmanager.New(modemmanager.Config{Address: m.DBusAddress, Modem: m.Select,
			EnableTimeout: m.RadioTimeout, MaxBackoff: m.ReopenMax, Logger: log})
	}
	return atmodem.New(atmodem.Config{
		Open:         serialport.Opener(m.Port, m.Baud),
		RadioTimeout: m.RadioTimeout,
		MaxBackoff:   m.ReopenMax,
		GNSS:         gnss,
		Logger:       log,
	})
}

// readIdentity connects to the modem, waits up to timeout for it to answer,
// and reads its identity once.
func readIdentity(ctx context.Context, m config.Modem, timeout time.Duration, log *slog.Logger) (identity.Identity, error) {
	if m.Source == "modemmanager" {
		return readThroughModemManager(ctx, m, timeout, log)
	}
	return readOverAT(ctx, m.Port, m.Baud, timeout, log)
}

// readOverAT opens the AT port at path and reads the identity.
func readOverAT(ctx context.Context, path string, baud int, timeout time.Duration, log *slog.Logger) (identity.Identity, error) {
	m, err := atmodem.New(atmodem.Config{
		Open:       serialport.Opener(path, baud),
		MinBackoff: 100 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond,
		Options:    []at.Option{at.WithResyncTimeout(min(time.Second, timeout/3))},
		Logger:     log,
	})
	if err != nil {
		return identity.Identity{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(runCtx) }()
	defer func() { stop(); <-done }()

	select {
	case <-m.Up():
	case <-ctx.Done():
		if err := m.LastOpenError(); err != nil {
			return identity.Identity{}, fmt.Errorf("cannot open the modem port within %v: %w", timeout, err)
		}
		return identity.Identity{}, fmt.Errorf("no answer from the modem on %s within %v: the port opens but nothing answers AT (wrong port, or the modem is busy or off)", path, timeout)
	}
	// The identity read gets its own budget: a slow SIM (CRSM) may need it.
	rctx, rcancel := context.WithTimeout(context.Background(), max(timeout, 10*time.Second))
	defer rcancel()
	id, err := m.Identify(rctx)
	if errors.Is(err, identity.ErrNoAnswer) {
		return id, fmt.Errorf("no answer from the modem on %s: it answered AT but none of the identification commands", path)
	}
	if err != nil {
		return id, fmt.Errorf("read the modem on %s: %w", path, err)
	}
	return id, nil
}

// readThroughModemManager asks ModemManager, retrying until timeout while
// the bus connection comes up.
func readThroughModemManager(ctx context.Context, cfg config.Modem, timeout time.Duration, log *slog.Logger) (identity.Identity, error) {
	m, err := modemmanager.New(modemmanager.Config{Address: cfg.DBusAddress, Modem: cfg.Select,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Logger: log})
	if err != nil {
		return identity.Identity{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(runCtx) }()
	defer func() { stop(); <-done }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		id, err := m.Identify(ctx)
		if err == nil {
			return id, nil
		}
		select {
		case <-ctx.Done():
			return id, fmt.Errorf("no answer from ModemManager within %v: %w", timeout, err)
		case <-tick.C:
		}
	}
}

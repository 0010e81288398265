package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/cardbind/cardbind/agent/at"
	"github.com/cardbind/cardbind/agent/atmodem"
	"github.com/cardbind/cardbind/agent/config"
	"github.com/cardbind/cardbind/agent/identity"
	"github.com/cardbind/cardbind/agent/serialport"
)

const identifyHelp = `usage: cardbind-agent identify --port PATH [--baud N] [--timeout D]

Opens the modem's AT port, reads the identity of the modem (manufacturer,
model, IMEI) and of the SIM in it (state, ICCID, IMSI), the registration
and the signal, and prints them as JSON. Installers use it to check that
the agent talks to the right port. Fails (exit 1) with a clear message
when nothing answers within --timeout. Nothing is written anywhere.

Flags:
`

func identify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("identify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, identifyHelp); fs.PrintDefaults() }
	def := config.Default()
	file := fs.String("config", "", "agent configuration `file` to take modem.port and modem.baud from")
	port := fs.String("port", "", "modem AT port `path`, e.g. /dev/ttyUSB2 (default: modem.port, "+def.Modem.Port+")")
	baud := fs.Int("baud", def.Modem.Baud, "serial speed (USB modems ignore it)")
	timeout := fs.Duration("timeout", 5*time.Second, "give up when the modem has not answered within this `duration`")
	level := fs.String("log-level", "error", "log `level` on stderr: debug, info, warn, error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(fs, *file, func(c *config.Config, name string) {
		switch name {
		case "port":
			c.Modem.Port = *port
		case "baud":
			c.Modem.Baud = *baud
		}
	})
	if err != nil {
		return err
	}
	lvl, err := parseLevel(*level)
	if err != nil {
		return err
	}
	var lv slog.LevelVar
	lv.Set(lvl)
	log := newLogger(stderr, "text", &lv)
	id, err := readIdentity(ctx, cfg.Modem.Port, cfg.Modem.Baud, *timeout, log)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(id)
}

// readIdentity opens the modem at path, waits up to timeout for it to
// answer, and reads its identity once.
func readIdentity(ctx context.Context, path string, baud int, timeout time.Duration, log *slog.Logger) (identity.Identity, error) {
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

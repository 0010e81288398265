package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/cardbind/cardbind/agent/config"
)

const identifyHelp = `usage: cardbind-agent identify --port PATH [--baud N] [--timeout D]
       cardbind-agent identify --source modemmanager [--select MODEM]

Opens the modem's AT port, reads the identity of the modem (manufacturer,
model, IMEI) and of the SIM in it (state, ICCID, IMSI), the registration
and the signal, and prints them as JSON (with --source modemmanager, the
same through ModemManager over D-Bus). Installers use it to check that
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
	src := fs.String("source", def.Modem.Source, "read the modem over `at` (the port) or through modemmanager (D-Bus) (modem.source)")
	dbusAddr := fs.String("dbus-address", "", "D-Bus `address` for --source modemmanager; empty: the system bus (modem.dbus_address)")
	sel := fs.String("select", "", "with --source modemmanager, which `modem`: object path, IMEI, device or primary port (modem.select)")
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
		case "source":
			c.Modem.Source = *src
		case "dbus-address":
			c.Modem.DBusAddress = *dbusAddr
		case "select":
			c.Modem.Select = *sel
		}
	})
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	lvl, err := parseLevel(*level)
	if err != nil {
		return err
	}
	var lv slog.LevelVar
	lv.Set(lvl)
	log := newLogger(stderr, "text", &lv)
	id, err := readIdentity(ctx, cfg.Modem, *timeout, log)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(id)
}

// Package config is cardbind-agent's configuration: defaults that run out
// of the box on a gateway, a TOML file (/etc/cardbind/agent.toml) that
// overrides them, flags that override the file, and validation that names
// the key at fault. Unknown keys are errors, so a typo never silently keeps
// a default.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the agent's whole configuration.
type Config struct {
	// StateDir holds the device key, the enrolment credentials, the
	// sequence counter and the outbox. Created mode 0700.
	StateDir string `toml:"state_dir"`
	Modem    Modem  `toml:"modem"`
	Report   Report `toml:"report"`
	Outbox   Outbox `toml:"outbox"`
	GNSS     GNSS   `toml:"gnss"`
	Log      Log    `toml:"log"`
}

// GNSS configures reading the modem's GNSS receiver (modem.source "at";
// Quectel and SIMCom modules).
type GNSS struct {
	// Enabled turns the receiver on after every (re)open of the port and
	// puts its fix in every report. Off by default: the receiver draws
	// power (tens of mA), which battery devices may not afford.
	Enabled bool `toml:"enabled"`
}

// Modem says where the modem is and how far the verifier may drive it.
type Modem struct {
	// Source is where the identity is read: "at" (AT commands on Port) or
	// "modemmanager" (ModemManager over D-Bus, for gateways where it owns
	// the modem and its AT port is not free).
	Source string `toml:"source"`
	// DBusAddress is the bus of the modemmanager source; empty means the
	// system bus.
	DBusAddress string `toml:"dbus_address"`
	// Select picks one modem of several for the modemmanager source: its
	// object path, IMEI, sysfs device or primary port; empty means the
	// first.
	Select string `toml:"select"`
	// Port is the modem's AT port, e.g. /dev/ttyUSB2 (a udev symlink is
	// better: USB numbering changes).
	Port string `toml:"port"`
	// Baud is the serial speed; USB modems ignore it.
	Baud int `toml:"baud"`
	// RadioTimeout bounds AT+CFUN=4/1.
	RadioTimeout time.Duration `toml:"radio_timeout"`
	// AllowRadio lets verified commands from the verifier take the radio
	// down (AT+CFUN=4) and up again.
	AllowRadio bool `toml:"allow_radio"`
	// ReopenMax caps the delay between attempts to reopen a vanished port.
	ReopenMax time.Duration `toml:"reopen_max"`
}

// Report configures reporting and the link to the broker.
type Report struct {
	// Heartbeat is how often an unchanged identity is reported.
	Heartbeat time.Duration `toml:"heartbeat"`
	// Poll is how often the modem is read without an indication, for
	// modems that send none.
	Poll time.Duration `toml:"poll"`
	// CellChangeInterval is the least time between two reports sent
	// because the serving cell changed; 0 sends none (SIM and IMEI
	// changes are reported at once whatever it says).
	CellChangeInterval time.Duration `toml:"cell_change_interval"`
	// BrokerURL overrides the broker address given at enrolment
	// (tcp://host:port or ssl://host:port).
	BrokerURL string `toml:"broker_url"`
	// CAFile is a PEM CA for the broker's certificate, overriding the one
	// given at enrolment.
	CAFile string `toml:"ca_file"`
	// KeepAlive is the MQTT keep-alive.
	KeepAlive time.Duration `toml:"keepalive"`
	// MinBackoff and MaxBackoff bound the delay between connection
	// attempts (jittered).
	MinBackoff time.Duration `toml:"min_backoff"`
	MaxBackoff time.Duration `toml:"max_backoff"`
	// FlushTimeout is how long SIGTERM waits for queued reports to reach
	// the broker before the agent exits (they stay in the outbox anyway).
	FlushTimeout time.Duration `toml:"flush_timeout"`
}

// Outbox bounds the on-disk queue of unsent reports.
type Outbox struct {
	// Limit is how many reports wait at most; beyond it the oldest
	// heartbeats are dropped (never a change report).
	Limit int `toml:"limit"`
}

// Log configures logging.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text or json
}

// Default returns the configuration that runs out of the box.
func Default() Config {
	return Config{
		StateDir: "/var/lib/cardbind",
		Modem: Modem{
			Source:       "at",
			Port:         "/dev/ttyUSB2",
			Baud:         115200,
			RadioTimeout: 30 * time.Second,
			ReopenMax:    30 * time.Second,
		},
		Report: Report{
			Heartbeat:          5 * time.Minute,
			Poll:               30 * time.Second,
			CellChangeInterval: time.Minute,
			KeepAlive:          60 * time.Second,
			MinBackoff:         time.Second,
			MaxBackoff:         2 * time.Minute,
			FlushTimeout:       3 * time.Second,
		},
		Outbox: Outbox{Limit: 1000},
		Log:    Log{Level: "info", Format: "text"},
	}
}

// Load reads a TOML file over the defaults.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Default(), fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes TOML over the defaults; name is used in errors. Unknown
// keys are errors.
func Parse(name string, data []byte) (Config, error) {
	cfg := Default()
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&cfg)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return Default(), fmt.Errorf("config %s: %s", name, perr.ErrorWithPosition())
		}
		return Default(), fmt.Errorf("config %s: %w", name, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return Default(), fmt.Errorf("config %s: unknown key %s", name, strings.Join(keys, ", "))
	}
	return cfg, nil
}

// Validate checks the configuration and names the first key at fault.
func (c *Config) Validate() error {
	if c.StateDir == "" {
		return errors.New("config: state_dir: required")
	}
	switch c.Modem.Source {
	case "at":
		if c.Modem.Port == "" {
			return errors.New("config: modem.port: required with modem.source \"at\"")
		}
	case "modemmanager":
	default:
		return fmt.Errorf("config: modem.source: %q: want at or modemmanager", c.Modem.Source)
	}
	if c.Modem.Baud < 300 || c.Modem.Baud > 4_000_000 {
		return fmt.Errorf("config: modem.baud: %d: want 300 to 4000000", c.Modem.Baud)
	}
	if err := between("modem.radio_timeout", c.Modem.RadioTimeout, time.Second, 5*time.Minute); err != nil {
		return err
	}
	if err := between("modem.reopen_max", c.Modem.ReopenMax, 100*time.Millisecond, time.Hour); err != nil {
		return err
	}
	if err := c.Report.validate(); err != nil {
		return err
	}
	if c.Outbox.Limit < 1 || c.Outbox.Limit > 1_000_000 {
		return fmt.Errorf("config: outbox.limit: %d: want 1 to 1000000", c.Outbox.Limit)
	}
	return c.Log.Validate()
}

func (r *Report) validate() error {
	if err := between("report.heartbeat", r.Heartbeat, time.Second, 7*24*time.Hour); err != nil {
		return err
	}
	if err := between("report.poll", r.Poll, 100*time.Millisecond, 24*time.Hour); err != nil {
		return err
	}
	if err := between("report.cell_change_interval", r.CellChangeInterval, 0, 24*time.Hour); err != nil {
		return err
	}
	if r.BrokerURL != "" {
		u, err := url.Parse(r.BrokerURL)
		if err != nil || (u.Scheme != "tcp" && u.Scheme != "ssl") || u.Host == "" {
			return fmt.Errorf("config: report.broker_url: %q: want tcp://host:port or ssl://host:port", r.BrokerURL)
		}
	}
	if err := between("report.keepalive", r.KeepAlive, 5*time.Second, time.Hour); err != nil {
		return err
	}
	if err := between("report.min_backoff", r.MinBackoff, 10*time.Millisecond, time.Hour); err != nil {
		return err
	}
	if r.MaxBackoff < r.MinBackoff || r.MaxBackoff > 24*time.Hour {
		return fmt.Errorf("config: report.max_backoff: %v: want report.min_backoff (%v) to 24h", r.MaxBackoff, r.MinBackoff)
	}
	return between("report.flush_timeout", r.FlushTimeout, 0, 5*time.Minute)
}

// Validate checks the log settings.
func (l *Log) Validate() error {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("config: log.level: %q: want debug, info, warn or error", l.Level)
	}
	if l.Format != "text" && l.Format != "json" {
		return fmt.Errorf("config: log.format: %q: want text or json", l.Format)
	}
	return nil
}

func between(key string, d, lo, hi time.Duration) error {
	if d < lo || d > hi {
		return fmt.Errorf("config: %s: %v: want %v to %v", key, d, lo, hi)
	}
	return nil
}

// CACert reads report.ca_file, or returns nil when it is not set.
func (c *Config) CACert() ([]byte, error) {
	if c.Report.CAFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(c.Report.CAFile)
	if err != nil {
		return nil, fmt.Errorf("config: report.ca_file: %w", err)
	}
	return b, nil
}

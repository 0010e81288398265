package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/cardbind/cardbind/agent"
	"github.com/cardbind/cardbind/agent/config"
	"github.com/cardbind/cardbind/agent/outbox"
	"github.com/cardbind/cardbind/agent/report"
	"github.com/cardbind/cardbind/agent/state"
)

const runHelp = `usage: cardbind-agent run [--config FILE] [flags]

Runs the agent: reads the modem on modem.port, reports its identity signed
to the verifier's MQTT broker at start, within a second of every change
(SIM removed, inserted or swapped, IMEI changed, registration denied), on
every poll that finds a change, and as a heartbeat. Reports wait in the
on-disk outbox (state_dir/outbox) while the broker is unreachable and are
delivered in order when it is back. Run "cardbind-agent enroll" first.

Every setting has a default; a TOML file (--config) overrides them and the
flags below override the file. The configuration is checked at start and
an error names the key. Keys (defaults in brackets):

  state_dir             key, credentials, sequence, outbox [/var/lib/cardbind]
  [modem]
  source                at (AT commands on port) or modemmanager (D-Bus) [at]
  dbus_address          bus of the modemmanager source [the system bus]
  select                modemmanager: which modem (path, IMEI, device, port)
  port                  AT port [/dev/ttyUSB2]
  baud                  serial speed [115200]
  radio_timeout         bound of AT+CFUN=4/1 [30s]
  allow_radio           let the verifier take the radio down/up [false]
  reopen_max            longest delay between reopen attempts [30s]
  [report]
  heartbeat             report an unchanged identity this often [5m]
  poll                  read the modem without indications this often [30s]
  broker_url            override the enrolled broker (tcp:// or ssl://)
  ca_file               PEM CA of the broker, overriding the enrolled one
  keepalive             MQTT keep-alive [60s]
  min_backoff           first reconnect delay [1s]
  max_backoff           longest reconnect delay [2m]
  flush_timeout         how long SIGTERM waits for queued reports [3s]
  [outbox]
  limit                 most reports kept; oldest heartbeats go first [1000]
  [log]
  level                 debug, info, warn, error [info]
  format                text or json [text]

Signals: SIGHUP reloads the file (log.level, report.heartbeat, report.poll
and modem.allow_radio take effect at once; other keys need a restart).
SIGTERM or SIGINT stop the agent: it stops reading the modem, gives the
link up to report.flush_timeout to deliver what is queued, and exits 0.

Flags:
`

// runFlags are the flags of "run"; set records which ones were given.
type runFlags struct {
	file, port, stateDir, level, broker, source string
	baud                                        int
	heartbeat, poll                             time.Duration
	allowRadio                                  bool
}

func (f *runFlags) apply(c *config.Config, name string) {
	switch name {
	case "port":
		c.Modem.Port = f.port
	case "source":
		c.Modem.Source = f.source
	case "baud":
		c.Modem.Baud = f.baud
	case "state-dir":
		c.StateDir = f.stateDir
	case "log-level":
		c.Log.Level = f.level
	case "broker":
		c.Report.BrokerURL = f.broker
	case "heartbeat":
		c.Report.Heartbeat = f.heartbeat
	case "poll":
		c.Report.Poll = f.poll
	case "allow-radio":
		c.Modem.AllowRadio = f.allowRadio
	}
}

func daemon(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, runHelp); fs.PrintDefaults() }
	def := config.Default()
	var f runFlags
	fs.StringVar(&f.file, "config", "", "TOML configuration `file`, e.g. /etc/cardbind/agent.toml")
	fs.StringVar(&f.port, "port", def.Modem.Port, "modem AT port `path` (modem.port)")
	fs.StringVar(&f.source, "source", def.Modem.Source, "read the modem over `at` (the port) or through modemmanager (modem.source)")
	fs.IntVar(&f.baud, "baud", def.Modem.Baud, "serial speed (modem.baud)")
	fs.StringVar(&f.stateDir, "state-dir", def.StateDir, "state `directory` (state_dir)")
	fs.StringVar(&f.level, "log-level", def.Log.Level, "debug, info, warn or error (log.level)")
	fs.StringVar(&f.broker, "broker", "", "broker `URL` overriding the enrolled one (report.broker_url)")
	fs.DurationVar(&f.heartbeat, "heartbeat", def.Report.Heartbeat, "heartbeat interval (report.heartbeat)")
	fs.DurationVar(&f.poll, "poll", def.Report.Poll, "modem poll interval (report.poll)")
	fs.BoolVar(&f.allowRadio, "allow-radio", false, "let the verifier take the radio down and up (modem.allow_radio)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	load := func() (config.Config, error) {
		cfg, err := loadConfig(fs, f.file, f.apply)
		if err != nil {
			return cfg, err
		}
		return cfg, cfg.Validate()
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	var level slog.LevelVar
	lvl, _ := parseLevel(cfg.Log.Level) // validated
	level.Set(lvl)
	log := newLogger(stderr, cfg.Log.Format, &level)

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	d, err := newDaemon(cfg, log)
	if err != nil {
		return err
	}
	modemAt := cfg.Modem.Port
	if cfg.Modem.Source == "modemmanager" {
		modemAt = "ModemManager"
	}
	log.Info("agent starting", "version", version(), "device", d.deviceID, "source", cfg.Modem.Source, "modem", modemAt,
		"broker", d.brokerURL, "queued", d.box.Len())
	reload := func() {
		next, err := load()
		if err != nil {
			log.Error("reload refused; keeping the running configuration", "err", err)
			return
		}
		l, _ := parseLevel(next.Log.Level)
		level.Set(l)
		d.agent.Reconfigure(agent.Settings{Heartbeat: next.Report.Heartbeat, Poll: next.Report.Poll,
			AllowRadio: next.Modem.AllowRadio, CellChangeInterval: next.Report.CellChangeInterval})
		rest := next // what only a restart applies
		rest.Log.Level, rest.Modem.AllowRadio = cfg.Log.Level, cfg.Modem.AllowRadio
		rest.Report.Heartbeat, rest.Report.Poll = cfg.Report.Heartbeat, cfg.Report.Poll
		rest.Report.CellChangeInterval = cfg.Report.CellChangeInterval
		if rest != cfg {
			log.Warn("some changed settings take effect only after a restart")
		}
		log.Info("configuration reloaded", "log_level", next.Log.Level, "heartbeat", next.Report.Heartbeat,
			"poll", next.Report.Poll, "cell_change_interval", next.Report.CellChangeInterval, "allow_radio", next.Modem.AllowRadio)
	}
	return d.run(ctx, hup, reload, cfg.Report.FlushTimeout)
}

// outboxDir is the outbox's directory inside the state directory.
const outboxDir = "outbox"

// daemonParts are the running agent's pieces.
type daemonParts struct {
	log       *slog.Logger
	deviceID  string
	brokerURL string
	box       *outbox.Outbox
	modem     source
	link      *report.Link
	agent     *agent.Agent
}

func newDaemon(cfg config.Config, log *slog.Logger) (*daemonParts, error) {
	dir, err := state.Open(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	key, err := dir.Key()
	if errors.Is(err, state.ErrNotEnrolled) {
		return nil, errNotEnrolled
	}
	if err != nil {
		return nil, err
	}
	creds, err := dir.Credentials()
	if errors.Is(err, state.ErrNotEnrolled) {
		return nil, errNotEnrolled
	}
	if err != nil {
		return nil, err
	}
	seq, err := dir.Sequence(64)
	if err != nil {
		return nil, err
	}
	box, err := outbox.Open(filepath.Join(dir.Path(), outboxDir), cfg.Outbox.Limit)
	if err != nil {
		return nil, err
	}
	ca, err := cfg.CACert()
	if err != nil {
		return nil, err
	}
	if ca == nil && creds.CACertPEM != "" {
		ca = []byte(creds.CACertPEM)
	}
	brokerURL := creds.BrokerURL
	if cfg.Report.BrokerURL != "" {
		brokerURL = cfg.Report.BrokerURL
	}
	m, err := newSource(cfg.Modem, cfg.GNSS.Enabled, log.With("part", "modem"))
	if err != nil {
		return nil, err
	}
	d := &daemonParts{log: log, deviceID: creds.DeviceID, brokerURL: brokerURL, box: box, modem: m}
	d.link, err = report.New(report.Config{
		BrokerURL: brokerURL, DeviceID: creds.DeviceID, Username: creds.Username, Password: creds.Password,
		CACertPEM: ca, KeepAlive: cfg.Report.KeepAlive, MinBackoff: cfg.Report.MinBackoff, MaxBackoff: cfg.Report.MaxBackoff,
	}, box, log.With("part", "link"), d.onCommand, d.onAcked)
	if err != nil {
		return nil, err
	}
	d.agent = agent.New(agent.Config{
		DeviceID: creds.DeviceID, Key: key, CommandKey: creds.CommandKey,
		Heartbeat: cfg.Report.Heartbeat, Poll: cfg.Report.Poll, AllowRadio: cfg.Modem.AllowRadio,
		CellChangeInterval: cfg.Report.CellChangeInterval,
	}, m, seq, box, d.link.Kick, log, time.Now)
	return d, nil
}

func (d *daemonParts) onCommand(p []byte)     { d.agent.HandleCommand(p) }
func (d *daemonParts) onAcked(e outbox.Entry) { d.agent.Acked(e) }

// run drives modem, agent and link until ctx ends, reloading on hup; then
// it lets the link deliver what is queued for up to flush.
func (d *daemonParts) run(ctx context.Context, hup <-chan os.Signal, reload func(), flush time.Duration) error {
	linkCtx, stopLink := context.WithCancel(context.Background())
	defer stopLink()
	var wg, linkWG sync.WaitGroup
	wg.Go(func() { _ = d.modem.Run(ctx) })
	wg.Go(func() { _ = d.agent.Run(ctx) })
	linkWG.Go(func() { _ = d.link.Run(linkCtx) })
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-hup:
			reload()
		}
	}
	d.log.Info("stopping")
	wg.Wait()
	deadline := time.Now().Add(flush)
	for d.box.Len() > 0 && d.link.Connected() && time.Now().Before(deadline) {
		d.link.Kick()
		time.Sleep(20 * time.Millisecond)
	}
	stopLink()
	linkWG.Wait()
	d.log.Info("stopped", "queued", d.box.Len())
	return nil
}

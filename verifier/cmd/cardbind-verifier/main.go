// Command cardbind-verifier is the cardbind service: it embeds the MQTT
// broker agents report to, keeps bindings and card state, decides on every
// observation, blocks and resumes cards at the network, and alerts
// subscribers. "serve" runs it; "admin" talks to a running one.
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
	"sync/atomic"
	"syscall"

	"github.com/cardbind/cardbind/verifier/app"
	"github.com/cardbind/cardbind/verifier/config"
	"github.com/cardbind/cardbind/verifier/store/pebble"
)

const usage = `usage: cardbind-verifier COMMAND [flags]

Commands:
  serve   run the verifier (with no flags: embedded defaults, data in ./data,
          HTTP on 127.0.0.1:8080, MQTT on 127.0.0.1:1883)
  admin   operator commands against a running verifier (admin --help)

Run "cardbind-verifier serve --help" for the serve flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "cardbind-verifier:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing command")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "admin":
		return runAdmin(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: cardbind-verifier serve [--config FILE] [flags]\n\n"+
			"Flags override the file; the file overrides the defaults. Every key is\n"+
			"documented in docs/configuration.md.\n\n")
		fs.PrintDefaults()
	}
	def := config.Default()
	file := fs.String("config", "", "TOML configuration file")
	dataDir := fs.String("data-dir", def.DataDir, "data directory (data_dir)")
	httpListen := fs.String("http", def.HTTP.Listen, "HTTP listen address (http.listen)")
	mqttListen := fs.String("mqtt", def.MQTT.Listen, "MQTT listen address (mqtt.listen)")
	enf := fs.String("enforce", def.Enforce.Adapter, "enforcement adapter: none, simnet or http (enforce.adapter)")
	simnet := fs.String("simnet-url", "", "firmware-sim network address for --enforce simnet (enforce.simnet_url)")
	level := fs.String("log-level", def.Log.Level, "debug, info, warn or error (log.level)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	cfg := def
	if *file != "" {
		var err error
		if cfg, err = config.Load(*file); err != nil {
			return err
		}
	}
	// Flags given explicitly override the file.
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "data-dir":
			cfg.DataDir = *dataDir
		case "http":
			cfg.HTTP.Listen = *httpListen
		case "mqtt":
			cfg.MQTT.Listen = *mqttListen
		case "enforce":
			cfg.Enforce.Adapter = *enf
		case "simnet-url":
			cfg.Enforce.SimnetURL = *simnet
		case "log-level":
			cfg.Log.Level = *level
		}
	})
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	raiseFileLimit(log, cfg.MQTT.MaxConnections)
	app.SetGCPercent(cfg, log)
	return app.Run(ctx, cfg, pebble.OpenConfigured, log, stdout, nil)
}

// raiseFileLimit lifts the soft limit on open files to the hard limit:
// every MQTT session is a socket, and the default soft limit (often 1024)
// would cap the broker far below mqtt.max_connections. It says so when the
// hard limit itself is too low.
func raiseFileLimit(log *slog.Logger, sessions int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("cannot read the open-file limit", "err", err)
		return
	}
	if lim.Cur < lim.Max {
		want := lim
		want.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			log.Warn("cannot raise the open-file limit", "soft", lim.Cur, "hard", lim.Max, "err", err)
		} else {
			lim = want
		}
	}
	// Sessions need one descriptor each; keep a margin for the store and
	// HTTP. A privileged process may raise the hard limit too.
	need := uint64(sessions) + 1024
	if lim.Cur < need {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: need, Max: need}); err == nil {
			lim.Cur, lim.Max = need, need
		}
	}
	if lim.Cur < need {
		log.Warn("the open-file limit caps MQTT sessions below mqtt.max_connections; raise it (ulimit -n, LimitNOFILE=)",
			"limit", lim.Cur, "max_connections", sessions)
	}
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// countingReader counts the bytes read through it, for the import
// progress bar.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

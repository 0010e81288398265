package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"

	"github.com/cardbind/cardbind/verifier/app"
	"github.com/cardbind/cardbind/verifier/config"
	"github.com/cardbind/cardbind/verifier/store/pebble"
)

// profiledVerifier is "cardbind-bench profiled-verifier": what
// "cardbind-verifier serve --config FILE" runs (app.Run over the Pebble
// store), with a CPU profile of the whole run written at the end. The
// bench starts it instead of the real binary when asked for a profile.
func profiledVerifier(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("profiled-verifier", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "TOML configuration file (required)")
	profile := fs.String("cpuprofile", "", "CPU profile to write (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" || *profile == "" {
		return errors.New("profiled-verifier: -config and -cpuprofile are required")
	}
	cfg, err := config.Load(*file)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.Log.Level))
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	stop, err := startCPUProfile(*profile)
	if err != nil {
		return fmt.Errorf("profiled-verifier: %w", err)
	}
	defer stop()
	app.SetGCPercent(cfg, log)
	return app.Run(ctx, cfg, pebble.OpenConfigured, log, stdout, nil)
}

// startCPUProfile profiles the process's CPU into the file at path until
// stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// Command firmware-sim runs simulated cellular modems and a simulated
// operator network for testing and demonstrating cardbind.
//
//	firmware-sim modem   --personality quectel --imei ... --link ./ttyQ [--control ADDR] [--network URL]
//	firmware-sim network --listen 127.0.0.1:7000
//	firmware-sim sink    --listen 127.0.0.1:8443 --cert sink-cert.pem --token T
//
// Each subcommand's --help explains it.
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
	"syscall"
)

const usage = `firmware-sim: simulated cellular modems and operator network for cardbind.

Usage:
  firmware-sim modem   [flags]   a modem on a pseudo-terminal, answering AT commands
  firmware-sim network [flags]   an in-memory operator network (test double)
  firmware-sim sink    [flags]   a customer's HTTPS CloudEvents webhook endpoint
  firmware-sim fleet   [flags]   N gateways (simulated modems + the real agent) against a verifier

Run "firmware-sim <command> --help" for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "firmware-sim:", err)
		os.Exit(1)
	}
}

// errUsage reports bad command-line use (the message was printed).
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "modem":
		return runModem(ctx, args[1:], stdout, stderr)
	case "network":
		return runNetwork(ctx, args[1:], stdout, stderr)
	case "sink":
		return runSink(ctx, args[1:], stdout, stderr)
	case "fleet":
		return runFleet(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
	return errUsage
}

// newLogger returns a text logger at the named level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// parse parses flags; on error it has printed the message and usage. Help
// asked for goes to stdout.
func parse(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(stdout)
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %v\n", fs.Args())
		return errUsage
	}
	return nil
}

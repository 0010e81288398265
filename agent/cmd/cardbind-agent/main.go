// Command cardbind-agent runs on a Linux IoT gateway: it reads the identity
// of the modem and of the SIM in it over AT commands and reports it, signed,
// to the cardbind verifier over MQTT — at start, within a second of every
// change, and as a heartbeat. "identify" prints what the modem says (for
// installers), "enroll" registers the gateway with the verifier once, and
// "run" is the daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/cardbind/cardbind/agent/config"
)

const usage = `usage: cardbind-agent COMMAND [flags]

Commands:
  identify  print the modem's and the SIM's identity as JSON (for installers)
  enroll    create the device key and register this gateway with the verifier
  run       report the modem's identity to the verifier (the daemon)

Run "cardbind-agent COMMAND --help" for a command's flags. Configuration
keys are documented in "cardbind-agent run --help".
`

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "identify":
		err = identify(ctx, args[1:], stdout, stderr)
	case "enroll":
		err = enroll(ctx, args[1:], stdout, stderr)
	case "run":
		err = daemon(ctx, args[1:], stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprint(stderr, usage)
		fmt.Fprintf(stderr, "cardbind-agent: unknown command %q\n", args[0])
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "cardbind-agent %s: %v\n", args[0], err)
	return 1
}

// errUsage means the flags were wrong; the flag package already said how.
var errUsage = errors.New("usage")

// parseFlags parses args, turning flag errors into errUsage and refusing
// positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	return nil
}

// loadConfig reads file (or the defaults when it is empty) and applies the
// flags the user set, through set, which gets each set flag's name.
func loadConfig(fs *flag.FlagSet, file string, set func(c *config.Config, name string)) (config.Config, error) {
	cfg := config.Default()
	if file != "" {
		var err error
		if cfg, err = config.Load(file); err != nil {
			return cfg, err
		}
	}
	fs.Visit(func(f *flag.Flag) { set(&cfg, f.Name) })
	return cfg, nil
}

// newLogger returns a logger whose level can change at run time.
func newLogger(w io.Writer, format string, level *slog.LevelVar) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return l, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// version is the module version the binary was built from.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

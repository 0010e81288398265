// Command importbench measures the bulk import of cards with bindings
// the way an operator runs it: it writes a CSV of N cards, each with an
// IMSI, an MSISDN and a one-IMEI binding, starts a real
// `cardbind-verifier serve` on a fresh data directory and loopback ports,
// and times `cardbind-verifier admin import --file F` against it, then the
// same import again (idempotent: it must change nothing).
//
// Two baselines run on the same file in the same run:
//
//   - parse: the file read and parsed by verifier/inventory, the parser
//     the verifier streams the upload through; no import can be faster.
//   - pebble: parse plus a raw Pebble write of every card, keyed by ICCID
//     with the CSV line as the value, in synced batches of 1,000 with the
//     store's own Pebble options: the storage floor of the same data,
//     without indexes, history or version checks.
//
// Usage:
//
//	importbench -verifier-bin ./cardbind-verifier [-cards 1000000] [-dir D] [-md out.md]
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

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			slog.Error("importbench", "err", err)
		}
		os.Exit(1)
	}
}

// options are the command's flags.
type options struct {
	cards       int
	verifierBin string
	dir         string
	md          string
	keep        bool
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("importbench", flag.ContinueOnError)
	fs.IntVar(&o.cards, "cards", 1_000_000, "cards in the generated file")
	fs.StringVar(&o.verifierBin, "verifier-bin", "cardbind-verifier", "the cardbind-verifier binary")
	fs.StringVar(&o.dir, "dir", "", "work directory (default: a new temporary one, removed after)")
	fs.StringVar(&o.md, "md", "", "also write the Markdown report to this file")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.cards <= 0 || o.cards > 90_000_000 {
		return o, errors.New("-cards: want 1 to 90,000,000")
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	if o.dir == "" {
		d, err := os.MkdirTemp("", "importbench-")
		if err != nil {
			return err
		}
		o.dir = d
		if !o.keep {
			defer os.RemoveAll(d)
		}
	} else if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return err
	}
	res, err := measure(ctx, o)
	if err != nil {
		return err
	}
	md := res.markdown()
	if _, err := io.WriteString(stdout, md); err != nil {
		return err
	}
	if o.md != "" {
		if err := os.WriteFile(o.md, []byte(md), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", o.md, err)
		}
	}
	return nil
}

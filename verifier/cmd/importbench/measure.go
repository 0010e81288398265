package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// result is everything one run measured.
type result struct {
	Cards     int
	FileBytes int64
	Parse     time.Duration
	Pebble    time.Duration
	First     importRun
	Again     importRun
	DataBytes int64 // the verifier's data directory after the imports
	Machine   string
	Start     time.Time
	Load      [2]string // /proc/loadavg's 1-minute figure before and after
}

// measure generates the file, runs the baselines and the two imports.
func measure(ctx context.Context, o options) (*result, error) {
	res := &result{Cards: o.cards, Start: time.Now().UTC(), Machine: machine()}
	res.Load[0] = loadAvg()
	defer func() { res.Load[1] = loadAvg() }()
	path := filepath.Join(o.dir, "cards.csv")
	slog.Info("generating", "cards", o.cards, "file", path)
	size, err := writeCSV(path, o.cards)
	if err != nil {
		return nil, err
	}
	res.FileBytes = size

	slog.Info("baseline: parse")
	d, n, err := parseOnly(ctx, path)
	if err != nil {
		return nil, err
	}
	if n != o.cards {
		return nil, fmt.Errorf("parse baseline: %d items, want %d", n, o.cards)
	}
	res.Parse = d
	slog.Info("baseline: parse + raw Pebble")
	pdir := filepath.Join(o.dir, "raw-pebble")
	if res.Pebble, err = rawPebble(ctx, path, pdir); err != nil {
		return nil, err
	}
	_ = os.RemoveAll(pdir)

	v, err := startVerifier(ctx, o.verifierBin, o.dir)
	if err != nil {
		return nil, err
	}
	defer v.stop()
	if _, err := v.admin(ctx, "tenant", "create", benchTenant); err != nil {
		return nil, err
	}
	slog.Info("import")
	if res.First, err = v.timedImport(ctx, path); err != nil {
		return nil, err
	}
	if s := res.First.Summary; s.Lines != o.cards || s.Created != o.cards || s.Bound != o.cards || s.Errors != 0 {
		return nil, fmt.Errorf("import: summary %+v, want %d lines created and bound; stderr: %s", s, o.cards, res.First.Stderr)
	}
	slog.Info("import again")
	if res.Again, err = v.timedImport(ctx, path); err != nil {
		return nil, err
	}
	if s := res.Again.Summary; s.Unchanged != o.cards || s.Bound != 0 || s.Errors != 0 {
		return nil, fmt.Errorf("import again: summary %+v, want %d unchanged and nothing bound; stderr: %s", s, o.cards, res.Again.Stderr)
	}
	v.stop()
	if res.DataBytes, err = dirSize(v.dataDir); err != nil {
		return nil, err
	}
	return res, nil
}

func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s), %s", runtime.NumCPU(), model, runtime.Version())
}

// loadAvg returns the 1-minute load average, or "?".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

func rate(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

// markdown renders the result as a report section.
func (r *result) markdown() string {
	var b strings.Builder
	mib := func(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
	fmt.Fprintf(&b, "Bulk import of %s cards with bindings, %s UTC; %s.\n", itoa(r.Cards), r.Start.Format("2006-01-02 15:04"), r.Machine)
	fmt.Fprintf(&b, "CSV %s (iccid, tenant, imsi, msisdn, one imei, mode, grace). Load average %s before, %s after.\n\n",
		mib(r.FileBytes), r.Load[0], r.Load[1])
	fmt.Fprintf(&b, "| run | seconds | cards/s | vs parse | verifier CPU s | verifier peak RSS |\n|---|---:|---:|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| parse only (inventory.Read) | %.2f | %.0f | 1.0x | | |\n", r.Parse.Seconds(), rate(r.Cards, r.Parse))
	fmt.Fprintf(&b, "| parse + raw Pebble, synced batches of 1,000 | %.2f | %.0f | %.1fx | | |\n",
		r.Pebble.Seconds(), rate(r.Cards, r.Pebble), r.Pebble.Seconds()/r.Parse.Seconds())
	for _, x := range []struct {
		name string
		run  importRun
	}{{"`admin import` (create + bind)", r.First}, {"`admin import` again (unchanged)", r.Again}} {
		fmt.Fprintf(&b, "| %s | %.2f | %.0f | %.1fx | %.1f | %s |\n", x.name, x.run.Elapsed.Seconds(),
			rate(r.Cards, x.run.Elapsed), x.run.Elapsed.Seconds()/r.Parse.Seconds(), x.run.CPU.Seconds(), mib(x.run.PeakRSS))
	}
	fmt.Fprintf(&b, "\nFirst import vs the raw Pebble floor: %.1fx. Extrapolated to 1,000,000 cards: %.1f s.\n",
		r.First.Elapsed.Seconds()/r.Pebble.Seconds(), r.First.Elapsed.Seconds()*1e6/float64(r.Cards))
	fmt.Fprintf(&b, "Summary: %+v. Data directory after both imports: %s.\n", r.First.Summary, mib(r.DataBytes))
	return b.String()
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cardbind/cardbind/verifier/cmd/internal/benchproc"
)

// counter returns how many reports a target has processed so far.
type counter func(ctx context.Context) (int64, error)

// metricValue returns the value of the series named exactly series
// (name and labels as /metrics prints them) in a Prometheus text
// exposition.
func metricValue(text, series string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, series)
		if !ok || !strings.HasPrefix(rest, " ") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, false
		}
		return v, true
	}
	return 0, false
}

// reportOutcomes are the outcomes of cardbind_reports_total.
var reportOutcomes = []string{"accepted", "malformed", "unknown_device", "topic_mismatch", "forged",
	"replayed", "cross_tenant", "unknown_card", "flagged"}

// verifierReports reads the verifier's /metrics and returns the reports
// accepted and the reports refused (every other outcome but flagged,
// which also counts as accepted).
func verifierReports(ctx context.Context, hc *http.Client, url string) (accepted, refused int64, err error) {
	text, err := get(ctx, hc, url)
	if err != nil {
		return 0, 0, err
	}
	for _, o := range reportOutcomes {
		v, ok := metricValue(text, `cardbind_reports_total{outcome="`+o+`"}`)
		if !ok {
			return 0, 0, fmt.Errorf("%s: no cardbind_reports_total{outcome=%q}", url, o)
		}
		switch o {
		case "accepted":
			accepted = int64(v)
		case "flagged":
		default:
			refused += int64(v)
		}
	}
	return accepted, refused, nil
}

func get(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return string(b), nil
}

// bareCount reads the bare broker's GET /count.
func bareCount(hc *http.Client, url string) counter {
	return func(ctx context.Context) (int64, error) {
		s, err := get(ctx, hc, url)
		if err != nil {
			return 0, err
		}
		return strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	}
}

// sample is the count of processed reports at a time since the start.
type sample struct {
	T time.Duration `json:"t_ns"`
	N int64         `json:"n"`
}

// throughputRun is one measured run of the ingest throughput.
type throughputRun struct {
	Target  string `json:"target"` // "verifier" or "bare"
	Round   int    `json:"round"`
	Reports int64  `json:"reports"`
	// Elapsed runs from the first publish until the last report was
	// processed; Acked until the last PUBACK.
	Elapsed time.Duration `json:"elapsed_ns"`
	Acked   time.Duration `json:"acked_ns"`
	// Rate is Reports/Elapsed; Steady the rate between 10 % and 90 % of
	// the reports processed (no ramp-up, no drain).
	Rate   float64 `json:"rate"`
	Steady float64 `json:"steady"`
	// ServerCPU and LoadCPU are the CPU time of the broker process (the
	// verifier or the bare broker) and of this load generator during the
	// run.
	ServerCPU time.Duration `json:"server_cpu_ns"`
	LoadCPU   time.Duration `json:"load_cpu_ns"`
	// PeakRSS is the server's largest resident set seen during the run.
	PeakRSS int64    `json:"peak_rss"`
	Samples []sample `json:"samples"`
}

// steadyRate returns the rate between the times the count passed 10 %
// and 90 % of total, interpolated between samples.
func steadyRate(samples []sample, total int64) float64 {
	at := func(frac float64) (time.Duration, bool) {
		want := float64(total) * frac
		for i, s := range samples {
			if float64(s.N) >= want {
				if i == 0 {
					return s.T, true
				}
				p := samples[i-1]
				if s.N == p.N {
					return s.T, true
				}
				f := (want - float64(p.N)) / float64(s.N-p.N)
				return p.T + time.Duration(f*float64(s.T-p.T)), true
			}
		}
		return 0, false
	}
	t10, ok1 := at(0.1)
	t90, ok2 := at(0.9)
	if !ok1 || !ok2 || t90 <= t10 {
		return 0
	}
	return 0.8 * float64(total) / (t90 - t10).Seconds()
}

// measureThroughput publishes payloads through gws and follows count until
// every report is processed. pid is the server process.
func measureThroughput(ctx context.Context, target string, pid int, count counter, gws []*gateway, payloads [][][]byte, window int) (throughputRun, error) {
	run := throughputRun{Target: target}
	for _, p := range payloads {
		run.Reports += int64(len(p))
	}
	base, err := count(ctx)
	if err != nil {
		return run, err
	}
	cpu0, _ := benchproc.ReadCPU(pid)
	self0, _ := benchproc.ReadCPU(os.Getpid())
	start := time.Now()
	pubDone := make(chan time.Duration, 1)
	pubErr := make(chan error, 1)
	go func() {
		err := publishAll(ctx, gws, payloads, window)
		pubDone <- time.Since(start)
		pubErr <- err
	}()
	// Sampling costs the target CPU (a /metrics scrape is about a
	// millisecond), so it is sparse while the publishers run and dense
	// only once they are done, to catch the end.
	interval := 250 * time.Millisecond
	run.Samples = append(run.Samples, sample{0, 0})
	deadline := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return run, ctx.Err()
		case d := <-pubDone:
			run.Acked = d
			if err := <-pubErr; err != nil {
				return run, fmt.Errorf("%s: publish: %w", target, err)
			}
			interval = 20 * time.Millisecond
			deadline = time.Now().Add(120 * time.Second)
		case <-time.After(interval):
		}
		n, err := count(ctx)
		if err != nil {
			return run, err
		}
		t := time.Since(start)
		run.Samples = append(run.Samples, sample{t, n - base})
		if m, err := benchproc.ReadMem(pid); err == nil && m.RSS > run.PeakRSS {
			run.PeakRSS = m.RSS
		}
		if n-base >= run.Reports {
			run.Elapsed = t
			break
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return run, fmt.Errorf("%s: %d of %d reports processed 120s after the last PUBACK", target, n-base, run.Reports)
		}
	}
	if run.Acked == 0 {
		run.Acked = <-pubDone
		if err := <-pubErr; err != nil {
			return run, fmt.Errorf("%s: publish: %w", target, err)
		}
	}
	cpu1, _ := benchproc.ReadCPU(pid)
	self1, _ := benchproc.ReadCPU(os.Getpid())
	run.ServerCPU, run.LoadCPU = cpu1-cpu0, self1-self0
	run.Rate = float64(run.Reports) / run.Elapsed.Seconds()
	run.Steady = steadyRate(run.Samples, run.Reports)
	return run, nil
}

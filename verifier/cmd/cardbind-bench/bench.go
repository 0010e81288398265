package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cardbind/cardbind/firmware-sim/network"
	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier/cmd/internal/benchproc"
)

// options are the bench's flags.
type options struct {
	verifierBin string
	workDir     string
	keep        bool
	devices     int
	window      int
	reports     int
	rounds      int
	swaps       int
	rate        float64
	rateFrac    float64
	mdFile      string
	jsonFile    string
	plotDir     string
	plotRef     string
	cpuProfile  string
	bareProfile string
	bareAckAll  bool
	workers     int
	noEarly     bool
	label       string
	command     string
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("cardbind-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: cardbind-bench [run] [flags]\n"+
			"       cardbind-bench splice -doc FILE -section NAME -from FILE\n\n"+
			"Measures the verifier's verified reports per second against a bare nats-server\n"+
			"in the same run, and the SIM swap → block → alert latency under background load.\n\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.verifierBin, "verifier-bin", "", "cardbind-verifier binary (default: go build it into the work directory)")
	fs.StringVar(&o.workDir, "work-dir", "", "directory for data and logs (default: a new temporary directory)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, data)")
	fs.IntVar(&o.devices, "devices", 64, "load gateways, each enrolled with its own key and MQTT connection")
	fs.IntVar(&o.window, "window", 16, "QoS 1 publishes in flight (without PUBACK) per connection")
	fs.IntVar(&o.reports, "reports", 64_000, "reports per throughput run (split over the gateways)")
	fs.IntVar(&o.rounds, "rounds", 2, "throughput rounds; each runs the bare broker and the verifier, alternating which goes first")
	fs.IntVar(&o.swaps, "swaps", 200, "SIM swaps timed in the latency phase")
	fs.Float64Var(&o.rate, "rate", 10_000, "background reports per second during the swaps (the target)")
	fs.Float64Var(&o.rateFrac, "rate-cap", 0.5, "cap the background rate at this fraction of the verifier's measured throughput (0: no cap)")
	fs.StringVar(&o.mdFile, "md", "", "write the results as a Markdown section to this file")
	fs.StringVar(&o.jsonFile, "json", "", "write the raw results as JSON to this file")
	fs.StringVar(&o.plotDir, "plots", "", "write PNG plots into this directory")
	fs.StringVar(&o.plotRef, "plot-ref", "bench", "how the Markdown refers to the plot directory")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "profile the verifier's CPU (runs app.Run in a child of this binary instead of -verifier-bin)")
	fs.BoolVar(&o.bareAckAll, "bare-ack-all", false, "the bare broker's consumer acks with AckAll, once per 64 reports and every 10 ms, as the verifier acks in rounds (default: each report, explicitly)")
	fs.StringVar(&o.bareProfile, "bare-cpuprofile", "", "profile the bare broker's CPU; round N writes FILE.N")
	fs.IntVar(&o.workers, "workers", 0, "the verifier's ingest.workers (0: its default)")
	fs.BoolVar(&o.noEarly, "no-early", false, "run the verifier with ingest.early_changes = false (swap reports wait their turn behind the queued heartbeats)")
	fs.StringVar(&o.label, "label", "", "name of the mode, for the Markdown (e.g. quick)")
	fs.StringVar(&o.command, "command", "", "command line to show in the Markdown (default: this one)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.devices < 1 || o.window < 1 || o.reports < o.devices || o.rounds < 1 || o.swaps < 0 || o.rate <= 0 {
		return o, errors.New("-devices, -window, -rounds and -rate must be positive, -reports at least -devices")
	}
	if o.command == "" {
		o.command = "cardbind-bench " + strings.Join(args, " ")
	}
	return o, nil
}

// results is everything one bench run measured.
type results struct {
	Started     time.Time       `json:"started"`
	Machine     machine         `json:"machine"`
	Options     map[string]any  `json:"options"`
	PayloadSize int             `json:"payload_bytes"`
	Throughput  []throughputRun `json:"throughput"`
	Latency     *latencyRun     `json:"latency,omitempty"`
	LatencyNote string          `json:"latency_note,omitempty"`
	VerifierRSS int64           `json:"verifier_peak_rss"`
	BareRSS     int64           `json:"bare_peak_rss"`
	Refused     int64           `json:"refused"`
}

func bench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
	}
	res := &results{Started: time.Now().UTC(), Machine: readMachine(), Options: map[string]any{
		"devices": o.devices, "window": o.window, "reports": o.reports, "rounds": o.rounds,
		"swaps": o.swaps, "rate": o.rate, "workers": o.workers, "bare_ack_all": o.bareAckAll, "no_early": o.noEarly, "rate_cap": o.rateFrac, "label": o.label, "command": o.command}}

	if o.workDir == "" {
		d, err := os.MkdirTemp("", "cardbind-bench-")
		if err != nil {
			return err
		}
		o.workDir = d
		if !o.keep {
			defer os.RemoveAll(d)
		}
	} else if err := os.MkdirAll(o.workDir, 0o755); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if o.verifierBin == "" && o.cpuProfile == "" {
		o.verifierBin = filepath.Join(o.workDir, "cardbind-verifier")
		logf("building cardbind-verifier")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", o.verifierBin, "github.com/cardbind/cardbind/verifier/cmd/cardbind-verifier")
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build cardbind-verifier: %w", err)
		}
	}

	// The simulated operator network, in this process: what
	// "firmware-sim network" serves.
	nw := network.New(network.Options{})
	netLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	netSrv := &http.Server{Handler: network.NewHandler(nw, nil), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = netSrv.Serve(netLn) }()
	defer netSrv.Close()
	swapIdx := o.devices
	if _, _, err := nw.Register(ctx, network.CardSpec{ICCID: cardICCID(swapIdx), IMSI: cardIMSI(swapIdx)}); err != nil {
		return err
	}

	// A customer's HTTPS CloudEvents sink, for CAMARA subscriptions.
	se, err := startSink()
	if err != nil {
		return err
	}
	defer se.close()
	caFile := filepath.Join(o.workDir, "sink-ca.pem")
	if err := os.WriteFile(caFile, se.s.CertPEM(), 0o644); err != nil {
		return err
	}

	// The verifier, a child process on its own data directory. Its
	// webhook settings let it deliver to the sink on loopback; a verifier
	// that does not know them yet runs without.
	webhookCfg := fmt.Sprintf("\n[camara.webhook]\nallow_private_sinks = true\nca_file = %q\n", caFile)
	v, httpAddr, mqttAddr, err := startVerifier(ctx, o, self, "http://"+netLn.Addr().String(), webhookCfg)
	if err != nil && strings.Contains(err.Error(), "unknown key camara.webhook") {
		res.LatencyNote = "CloudEvents are not measured: this verifier has no camara.webhook settings"
		logf("%s", res.LatencyNote)
		se = nil
		_ = os.RemoveAll(filepath.Join(o.workDir, "verifier"))
		v, httpAddr, mqttAddr, err = startVerifier(ctx, o, self, "http://"+netLn.Addr().String(), "")
	}
	if err != nil {
		return err
	}
	defer v.Stop(20 * time.Second)
	token, err := os.ReadFile(filepath.Join(o.workDir, "verifier", "operator-token"))
	if err != nil {
		return err
	}
	// No gzip: /metrics is scraped often and compressing it would cost
	// the verifier CPU the bench does not mean to measure.
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	a := &admin{base: "http://" + httpAddr, token: strings.TrimSpace(string(token)), hc: hc}
	metricsURL := a.base + "/metrics"
	accepted := func(ctx context.Context) (int64, error) {
		n, _, err := verifierReports(ctx, hc, metricsURL)
		return n, err
	}

	logf("enrolling %d gateways and importing their cards with bindings", o.devices+2)
	f, err := setupFleet(ctx, a, "bench", o.devices)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}

	// Throughput: bare broker and verifier, alternating.
	per := o.reports / o.devices
	for round := 1; round <= o.rounds; round++ {
		payloads, size, err := signHeartbeats(f.load, per)
		if err != nil {
			return err
		}
		res.PayloadSize = size
		order := []string{"bare", "verifier"}
		if round%2 == 0 {
			order = []string{"verifier", "bare"}
		}
		for _, target := range order {
			logf("round %d: %s: %d reports of %d bytes from %d connections, window %d", round, target, per*o.devices, size, o.devices, o.window)
			var run throughputRun
			if target == "bare" {
				run, err = bareRun(ctx, o, self, round, hc, f.load, payloads)
			} else {
				run, err = func() (throughputRun, error) {
					if err := connectAll(ctx, mqttAddr, f.load); err != nil {
						return throughputRun{}, err
					}
					defer disconnectAll(f.load)
					return measureThroughput(ctx, "verifier", v.PID(), accepted, f.load, payloads, o.window)
				}()
			}
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round, target, err)
			}
			run.Round = round
			if target == "bare" {
				res.BareRSS = max(res.BareRSS, run.PeakRSS)
			}
			logf("  %s: %.0f reports/s (steady %.0f), last PUBACK at %v, all processed at %v",
				target, run.Rate, run.Steady, run.Acked.Round(time.Millisecond), run.Elapsed.Round(time.Millisecond))
			res.Throughput = append(res.Throughput, run)
		}
	}

	// Latency under background load.
	if o.swaps > 0 {
		lat, note, err := latencyPhase(ctx, o, a, nw, se, mqttAddr, f, v.PID(), accepted, res, logf)
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		res.Latency = lat
		if note != "" {
			res.LatencyNote = strings.TrimPrefix(res.LatencyNote+"; "+note, "; ")
		}
	}
	if _, refused, err := verifierReports(ctx, hc, metricsURL); err == nil {
		res.Refused = refused
	}
	if m, err := benchproc.ReadMem(v.PID()); err == nil {
		res.VerifierRSS = m.Peak
	}
	v.Stop(20 * time.Second)
	if n, first := logErrors(filepath.Join(o.workDir, "verifier.log")); n > 0 {
		logf("the verifier logged %d errors (figures may be off); the first: %s", n, first)
	}

	printSummary(stdout, res)
	if o.jsonFile != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonFile, b, 0o644); err != nil {
			return err
		}
	}
	var plots []string
	if o.plotDir != "" {
		if plots, err = writePlots(o.plotDir, res); err != nil {
			return fmt.Errorf("plots: %w", err)
		}
	}
	if o.mdFile != "" {
		if err := os.WriteFile(o.mdFile, []byte(markdown(res, o, plots)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// startVerifier writes a configuration and starts the verifier on it:
// the real binary, or app.Run in a child of this binary when profiling.
func startVerifier(ctx context.Context, o options, self, netURL, extra string) (*benchproc.Child, string, string, error) {
	httpAddr, err := benchproc.FreeAddr()
	if err != nil {
		return nil, "", "", err
	}
	mqttAddr, err := benchproc.FreeAddr()
	if err != nil {
		return nil, "", "", err
	}
	dataDir := filepath.Join(o.workDir, "verifier")
	cfg := fmt.Sprintf("data_dir = %q\n\n[http]\nlisten = %q\n\n[mqtt]\nlisten = %q\n\n[enforce]\nadapter = \"simnet\"\nsimnet_url = %q\n",
		dataDir, httpAddr, mqttAddr, netURL)
	if o.workers > 0 || o.noEarly {
		cfg += "\n[ingest]\n"
	}
	if o.workers > 0 {
		cfg += fmt.Sprintf("workers = %d\n", o.workers)
	}
	if o.noEarly {
		cfg += "early_changes = false\n"
	}
	cfg += extra
	cfgPath := filepath.Join(o.workDir, "verifier.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, "", "", err
	}
	logPath := filepath.Join(o.workDir, "verifier.log")
	var v *benchproc.Child
	if o.cpuProfile != "" {
		v, err = benchproc.Start("verifier", logPath, self, "profiled-verifier", "-config", cfgPath, "-cpuprofile", o.cpuProfile)
	} else {
		v, err = benchproc.Start("verifier", logPath, o.verifierBin, "serve", "--config", cfgPath)
	}
	if err != nil {
		return nil, "", "", err
	}
	if err := v.WaitHTTP(ctx, "http://"+httpAddr+"/readyz", 60*time.Second); err != nil {
		v.Stop(5 * time.Second)
		return nil, "", "", err
	}
	return v, httpAddr, mqttAddr, nil
}

// bareRun starts a fresh bare broker, runs the payloads through it and
// stops it.
func bareRun(ctx context.Context, o options, self string, round int, hc *http.Client, gws []*gateway, payloads [][][]byte) (throughputRun, error) {
	mqttAddr, err := benchproc.FreeAddr()
	if err != nil {
		return throughputRun{}, err
	}
	httpAddr, err := benchproc.FreeAddr()
	if err != nil {
		return throughputRun{}, err
	}
	dir := filepath.Join(o.workDir, fmt.Sprintf("bare-%d", round))
	args := []string{"bare-broker", "-dir", dir, "-mqtt", mqttAddr, "-http", httpAddr}
	if o.bareProfile != "" {
		args = append(args, "-cpuprofile", fmt.Sprintf("%s.%d", o.bareProfile, round))
	}
	if o.bareAckAll {
		args = append(args, "-ack-all")
	}
	b, err := benchproc.Start("bare broker", filepath.Join(o.workDir, fmt.Sprintf("bare-%d.log", round)), self, args...)
	if err != nil {
		return throughputRun{}, err
	}
	defer func() {
		b.Stop(10 * time.Second)
		if !o.keep {
			_ = os.RemoveAll(dir)
		}
	}()
	if err := b.WaitHTTP(ctx, "http://"+httpAddr+"/healthz", 60*time.Second); err != nil {
		return throughputRun{}, err
	}
	if err := connectAll(ctx, mqttAddr, gws); err != nil {
		return throughputRun{}, err
	}
	defer disconnectAll(gws)
	run, err := measureThroughput(ctx, "bare", b.PID(), bareCount(hc, "http://"+httpAddr+"/count"), gws, payloads, o.window)
	if m, merr := benchproc.ReadMem(b.PID()); merr == nil {
		run.PeakRSS = max(run.PeakRSS, m.Peak)
	}
	return run, err
}

// latencyPhase times SIM swaps while the load gateways publish in the
// background.
func latencyPhase(ctx context.Context, o options, a *admin, nw *network.Network, se *sinkEvents, mqttAddr string, f *fleet, pid int,
	accepted counter, res *results, logf func(string, ...any)) (*latencyRun, string, error) {
	lat := &latencyRun{TargetRate: o.rate}
	rate := o.rate
	var notes []string
	var events eventWaiter
	if se != nil {
		err := subscribeIMEIChange(ctx, a, f.tenant, cardMSISDN(len(f.load)), se)
		switch {
		case errors.Is(err, errNoSubscriptions):
			notes = append(notes, "CloudEvents are not measured: this verifier does not serve the CAMARA subscriptions API")
			logf("%s", notes[len(notes)-1])
		case err != nil:
			return nil, "", fmt.Errorf("CAMARA subscription: %w", err)
		default:
			events = se
			lat.Events = true
		}
	}
	var steady []float64
	for _, r := range res.Throughput {
		if r.Target == "verifier" {
			steady = append(steady, r.Steady)
		}
	}
	if o.rateFrac > 0 && len(steady) > 0 {
		slices.Sort(steady)
		capRate := o.rateFrac * steady[len(steady)/2]
		if capRate < rate {
			note := fmt.Sprintf("background lowered from the %.0f reports/s target to %.0f/s, %.0f %% of the verifier's measured steady throughput (%.0f/s)",
				o.rate, capRate, o.rateFrac*100, steady[len(steady)/2])
			logf("%s", note)
			notes = append(notes, note)
			rate = capRate
		}
	}
	lat.TargetRate = rate
	all := append(slices.Clone(f.load), f.home, f.foreign)
	if err := connectAll(ctx, mqttAddr, all); err != nil {
		return nil, "", err
	}
	defer disconnectAll(all)
	alerts, err := subscribeAlerts(ctx, a, mqttAddr, f.tenant)
	if err != nil {
		return nil, "", err
	}
	defer alerts.close()
	// The home gateway reports its card once, so the card is seen where
	// it belongs before the first swap.
	first, err := f.home.report(f.home.imei, f.home.iccid, protocol.ReasonStart, time.Now())
	if err != nil {
		return nil, "", err
	}
	if err := waitToken(f.home.client.Publish(protocol.ReportTopic(f.home.id), 1, false, first)); err != nil {
		return nil, "", err
	}

	// Enough pre-signed background for the swaps at about 250 ms each
	// (they take 30-100 ms); swaps after it ran out are marked unloaded.
	planned := 4*time.Second + time.Duration(o.swaps)*250*time.Millisecond
	perGw := int(rate*planned.Seconds())/len(f.load) + 1
	logf("latency: signing %d background reports (%.0f/s for %v)", perGw*len(f.load), rate, planned)
	bg, _, err := signHeartbeats(f.load, perGw)
	if err != nil {
		return nil, "", err
	}
	bgCtx, stopBG := context.WithCancel(ctx)
	defer stopBG()
	var running atomic.Bool
	running.Store(true)
	bgErr := make(chan error, 1)
	go func() { bgErr <- background(bgCtx, f.load, bg, rate, o.window, &running) }()
	time.Sleep(2 * time.Second) // let the background reach its rate
	acc0, err := accepted(ctx)
	if err != nil {
		return nil, "", err
	}
	t0 := time.Now()
	logf("latency: %d swaps under %.0f reports/s", o.swaps, rate)
	swaps, err := measureSwaps(ctx, a, nw, alerts, events, f, o.swaps, &running, func(i int) {
		if i%50 == 0 {
			logf("  %d swaps", i)
		}
	})
	if err != nil {
		return nil, "", err
	}
	acc1, err := accepted(ctx)
	if err != nil {
		return nil, "", err
	}
	lat.Duration = time.Since(t0)
	lat.PoolExhausted = !running.Load()
	if m, err := benchproc.ReadMem(pid); err == nil {
		lat.PeakRSS = m.RSS
	}
	stopBG()
	if err := <-bgErr; err != nil && ctx.Err() == nil {
		return nil, "", fmt.Errorf("background: %w", err)
	}
	lat.Swaps = swaps
	lat.BackgroundRate = float64(acc1-acc0) / lat.Duration.Seconds()
	return lat, strings.Join(notes, "; "), nil
}

// logErrors counts the error lines in a child's log (text or JSON slog)
// and returns the first, so that a run whose verifier failed and retried
// reports do not pass unnoticed.
func logErrors(path string) (int, string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, ""
	}
	n, first := 0, ""
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, "level=ERROR") || strings.Contains(line, `"level":"ERROR"`) {
			if n == 0 {
				first = strings.TrimSpace(line)
			}
			n++
		}
	}
	return n, first
}

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
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/cardbind/cardbind/firmware-sim/fleet"
	"github.com/cardbind/cardbind/firmware-sim/network"
)

const fleetHelp = `Usage: firmware-sim fleet --devices N --verifier URL --token-file FILE [flags]

Runs N simulated gateways in this one process against a cardbind verifier.
Each gateway is a firmware-sim modem served in memory (no pseudo-terminal)
and the REAL agent code reading it: AT engine, atmodem, agent core,
on-disk outbox, MQTT link (paho) with the gateway's own credentials.

Before the run the fleet makes the verifier know it, through the admin API
with the operator credential (--token-file): it creates the tenant if
missing, imports the N cards in one CSV request, each bound to its
gateway's IMEI (mode block, resumed automatically), mints one enrolment
token per gateway and enrols it at /v1/enroll with a fresh key. All of it
is cached in --state-dir (keys, credentials, sequences, outboxes), so a
second run with the same directory reuses it.

Gateways start at --ramp per second; the scenario then runs for
--duration:
  --swap-rate R    SIM swaps per second: a card moves into another gateway
                   (whose own card is set aside) and both go back after
                   --swap-hold; the fleet watches the network block the
                   moved card and resume it, and measures both
  --move-rate R    cell moves per second: a gateway's modem moves to the
                   next cell (+CEREG URC, location update to the network);
                   its agent reports it at most once per
                   --cell-change-interval
  --fault-rate R   modem faults per second: reboots, garbled answers,
                   silence (command timeouts), error answers
  --storm-every D --storm-percent P
                   every D, drop P% of the MQTT sessions at once (the
                   connections are shut down under the clients); the time
                   until the fleet has as many sessions again is measured

The modems attach to an operator network: --network URL (a running
"firmware-sim network"; every modem then holds an HTTP long poll there),
or the fleet's own in-memory network, whose HTTP API --network-listen
serves so that the verifier can block cards in it
(cardbind-verifier serve --enforce simnet --simnet-url http://ADDR).

A progress line goes to stderr every --progress, a summary to stdout at
the end (--json for JSON).

Scale: one socket per MQTT session. The fleet raises its open-file limit
(RLIMIT_NOFILE) at start and says what it got; the verifier needs as many
(ulimit -n before cardbind-verifier serve, and mqtt.max_connections).
Towards a broker on loopback the connections come from
--source-addrs loopback addresses (127.0.0.2, 127.0.0.3, ...; about
28,000 ephemeral ports each). Put --state-dir on tmpfs for large fleets:
every report is written and synced to the gateway's outbox, as on a
gateway.

Examples:
  firmware-sim fleet --devices 1000 --verifier http://127.0.0.1:8080 \
      --token-file data/operator-token --network-listen 127.0.0.1:7000 \
      --heartbeat 30s --swap-rate 2 --fault-rate 1 --duration 2m
  firmware-sim fleet --devices 10000 --ramp 2000 --verifier http://127.0.0.1:8080 \
      --token-file data/operator-token --state-dir /dev/shm/fleet \
      --storm-every 30s --storm-percent 20 --duration 3m

Flags:
`

func runFleet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), fleetHelp)
		fs.PrintDefaults()
	}
	var cfg fleet.Config
	fs.IntVar(&cfg.Devices, "devices", 0, "number of gateways `N` (required)")
	fs.StringVar(&cfg.VerifierURL, "verifier", "http://127.0.0.1:8080", "the verifier's HTTP base `URL`")
	tokenFile := fs.String("token-file", "", "`file` holding the operator credential (required; or $CARDBIND_TOKEN)")
	fs.StringVar(&cfg.Tenant, "tenant", "fleet", "`tenant` of the fleet's cards and gateways (created if missing)")
	fs.StringVar(&cfg.StateDir, "state-dir", "fleet-state", "`directory` caching the enrolment and the gateways' state")
	fs.StringVar(&cfg.BrokerURL, "broker", "", "broker `URL` overriding the one the verifier gives at enrolment")
	netURL := fs.String("network", "", "`URL` of a running firmware-sim network to attach the modems to")
	netListen := fs.String("network-listen", "", "serve the fleet's own network's HTTP API on `address` (for the verifier's simnet enforcer)")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", 5*time.Minute, "the agents' heartbeat period")
	fs.DurationVar(&cfg.Poll, "poll", 30*time.Second, "the agents' modem poll period")
	fs.DurationVar(&cfg.KeepAlive, "keepalive", 60*time.Second, "MQTT keep-alive")
	fs.DurationVar(&cfg.MinBackoff, "min-backoff", time.Second, "first MQTT reconnect delay")
	fs.DurationVar(&cfg.MaxBackoff, "max-backoff", 2*time.Minute, "longest MQTT reconnect delay")
	fs.Float64Var(&cfg.Ramp, "ramp", 1000, "gateways started per `second` (0: all at once)")
	fs.DurationVar(&cfg.Duration, "duration", time.Minute, "how long the scenario runs once all gateways are started (0: until interrupted)")
	srcN := fs.Int("source-addrs", -1, "number of loopback source `addresses` from 127.0.0.2 (-1: one per 10,000 gateways and one more towards a loopback verifier, leaving ports for reconnects in TIME_WAIT; 0: the system's choice)")
	fs.Float64Var(&cfg.SwapRate, "swap-rate", 0, "SIM swaps per `second` across the fleet")
	fs.DurationVar(&cfg.SwapHold, "swap-hold", 5*time.Second, "how long a swapped card stays in the other gateway")
	fs.DurationVar(&cfg.SwapGap, "swap-gap", 200*time.Millisecond, "empty slot time while a card is changed")
	fs.Float64Var(&cfg.FaultRate, "fault-rate", 0, "modem faults per `second` across the fleet")
	fs.Float64Var(&cfg.MoveRate, "move-rate", 0, "cell moves per `second` across the fleet")
	fs.DurationVar(&cfg.CellChangeInterval, "cell-change-interval", time.Minute, "the agents' report.cell_change_interval (0: no cell change reports)")
	fs.DurationVar(&cfg.RebootDownFor, "reboot-down", time.Second, "how long a rebooted modem stays away")
	fs.DurationVar(&cfg.StormEvery, "storm-every", 0, "drop sessions at once this often (0: no storms)")
	fs.Float64Var(&cfg.StormPercent, "storm-percent", 0, "`percent` of the sessions each storm drops")
	fs.IntVar(&cfg.OutboxLimit, "outbox-limit", 1000, "each agent's outbox limit")
	fs.DurationVar(&cfg.FlushTimeout, "flush-timeout", 10*time.Second, "how long the links may deliver queued reports at the end")
	fs.IntVar(&cfg.EnrollWorkers, "enroll-workers", 16, "parallel enrolments")
	fs.DurationVar(&cfg.ProgressEvery, "progress", time.Second, "progress line interval")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the scenario's choices")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	logLevel := fs.String("log-level", "info", "log `level` of the fleet: debug, info, warn, error")
	devLevel := fs.String("device-log-level", "error", "log `level` of the gateways' modems and agents")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if cfg.CellChangeInterval == 0 {
		cfg.CellChangeInterval = -1 // fleet.Config: negative turns them off
	}
	if cfg.Devices < 1 {
		fmt.Fprintln(stderr, "--devices is required")
		fs.Usage()
		return errUsage
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	if cfg.DeviceLogger, err = newLogger(stderr, *devLevel); err != nil {
		return fmt.Errorf("--device-log-level: %w", err)
	}
	cfg.Logger = log
	if cfg.OperatorToken, err = readToken(*tokenFile); err != nil {
		return err
	}
	if *netURL != "" && *netListen != "" {
		return errors.New("--network and --network-listen exclude each other")
	}

	lim, err := fleet.RaiseFileLimit(fleet.FilesFor(cfg.Devices))
	if err != nil {
		log.Warn("open-file limit", "err", err)
	}
	fmt.Fprintln(stderr, "fleet:", lim)

	n := *srcN
	if n < 0 {
		n = 0
		if u, err := url.Parse(cfg.VerifierURL); err == nil && isLoopback(u.Hostname()) {
			n = cfg.Devices/10_000 + 1
		}
	}
	cfg.SourceAddrs = fleet.LoopbackSources(n)

	switch {
	case *netURL != "":
		tr := &http.Transport{DialContext: fleet.Dialer(cfg.SourceAddrs), MaxIdleConnsPerHost: cfg.Devices + 16,
			IdleConnTimeout: 90 * time.Second}
		cfg.Network = network.NewClient(*netURL, &http.Client{Transport: tr})
	default:
		own := network.New(network.Options{Logger: cfg.DeviceLogger})
		cfg.Network = own
		if *netListen != "" {
			ln, err := net.Listen("tcp", *netListen)
			if err != nil {
				return fmt.Errorf("--network-listen: %w", err)
			}
			sctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- serveHTTP(sctx, ln, network.NewHandler(own, cfg.DeviceLogger)) }()
			defer func() { stop(); <-done }()
			fmt.Fprintf(stderr, "fleet: the fleet's network serves its API on http://%s\n", ln.Addr())
		}
	}
	cfg.Notice = func(s string) { fmt.Fprintln(stderr, "fleet:", s) }
	cfg.Progress = func(p fleet.Progress) { fmt.Fprintln(stderr, p) }

	sum, err := fleet.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			*fleet.Summary
			FileLimit           fleet.FileLimit
			RSSPerSession       float64
			GoroutinesPerDevice float64
		}{sum, lim, sum.RSSPerSession(), sum.GoroutinesPerDevice()})
	}
	writeSummary(stdout, sum, lim)
	return nil
}

// readToken reads the operator credential from file, or $CARDBIND_TOKEN.
func readToken(file string) (string, error) {
	if file == "" {
		if t := strings.TrimSpace(os.Getenv("CARDBIND_TOKEN")); t != "" {
			return t, nil
		}
		return "", errors.New("--token-file is required (the verifier's data/operator-token), or $CARDBIND_TOKEN")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("--token-file %s is empty", file)
	}
	return t, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// writeSummary prints the run's figures.
func writeSummary(w io.Writer, s *fleet.Summary, lim fleet.FileLimit) {
	sec := func(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond)) }
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("fleet summary")
	p("  gateways            %d (%s)", s.Devices, lim)
	p("  source addresses    %s", strings.Join(s.SourceAddrs, " "))
	e := s.Enrolment
	p("  enrolment           %s: %d enrolled, %d reused, %d cards imported, tenant created %v", sec(e.Took), e.Enrolled, e.Reused, e.Imported, e.TenantCreated)
	all := "never all at once"
	if s.ConnectAll > 0 {
		all = fmt.Sprintf("all connected after %s (%.0f/s)", sec(s.ConnectAll), float64(s.Devices)/s.ConnectAll.Seconds())
	}
	p("  sessions            peak %d, %d at the end; started in %s, %s; %d dials, %d failed", s.Peak, s.Connected, sec(s.Ramp), all, s.Dials, s.DialErrors)
	p("  reports             queued %d, acked (PUBACK) %d; over the steady %s: %.1f/s queued, %.1f/s acked", s.Queued, s.Acked, sec(s.Steady), s.QueuedRate, s.AckedRate)
	p("  outboxes            %d waiting before, %d after", s.PendingStart, s.PendingEnd)
	p("  SIM swaps           %d, %d put back; blocks seen at the network %d, resumes %d", s.Swaps, s.SwapsBack, s.BlocksObserved, s.ResumesObserved)
	if s.BlockLatency.N > 0 {
		p("  swap → block        p50 %s p99 %s max %s (%d)", ms(s.BlockLatency.P50), ms(s.BlockLatency.P99), ms(s.BlockLatency.Max), s.BlockLatency.N)
	}
	if s.ResumeLatency.N > 0 {
		p("  back → resume       p50 %s p99 %s max %s (%d)", ms(s.ResumeLatency.P50), ms(s.ResumeLatency.P99), ms(s.ResumeLatency.Max), s.ResumeLatency.N)
	}
	p("  cell moves          %d", s.Moves)
	p("  modem faults        %d reboots, %d garbled, %d silent, %d errors", s.Reboots, s.Garbles, s.Timeouts, s.Errors)
	for _, st := range s.Storms {
		back := "not back before the next storm"
		if st.Cut {
			back = "the run ended first"
		}
		if st.Recovered > 0 {
			back = "back in " + sec(st.Recovered)
		}
		p("  storm at %-10s dropped %d, %s", sec(st.At), st.Dropped, back)
	}
	p("  goroutines          %d (%.1f per gateway)", s.Goroutines, s.GoroutinesPerDevice())
	p("  Go memory           heap %.0f MiB, stacks %.0f MiB", float64(s.HeapInuse)/(1<<20), float64(s.StackInuse)/(1<<20))
	p("  RSS                 %.0f MiB before the gateways, %.0f MiB running: %.1f KiB per session",
		float64(s.RSSBefore)/(1<<20), float64(s.RSS)/(1<<20), s.RSSPerSession()/1024)
}

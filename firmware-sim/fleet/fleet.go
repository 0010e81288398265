// Package fleet runs many simulated gateways in one process against a real
// cardbind verifier: each is a firmware-sim modem served in process (no
// pseudo-terminal) and driven by the real agent code — the AT engine and
// its supervisor, atmodem, the agent core, the on-disk outbox and the MQTT
// link — enrolled with the verifier like a gateway and connected over real
// MQTT. A scenario adds SIM swaps, modem faults and reconnect storms.
//
// firmware-sim otherwise shares no code with the agent (a bug shared by
// both would hide itself); this package is the one place that joins the
// two, on purpose: it drives the real agent against the simulated modem.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cardbind/cardbind/firmware-sim/modem"
	"github.com/cardbind/cardbind/firmware-sim/network"
	"github.com/cardbind/cardbind/protocol"
)

// Network is the operator network the modems attach to, and where the
// fleet watches for blocks: *network.Network (in process) or
// *network.Client (HTTP) both are one.
type Network interface {
	modem.Network
	Card(ctx context.Context, iccid string) (network.Card, error)
	Cards(ctx context.Context, f network.Filter) ([]network.Card, error)
}

// Config describes a fleet run. Devices, VerifierURL, OperatorToken and
// StateDir are required; the rest have defaults.
type Config struct {
	// Devices is the number of gateways (1..MaxDevices).
	Devices int
	// VerifierURL is the verifier's HTTP base URL (admin API, enrolment).
	VerifierURL string
	// OperatorToken is the operator credential for the admin API.
	OperatorToken string
	// Tenant owns the fleet's cards and gateways (default "fleet"); it is
	// created if missing.
	Tenant string
	// StateDir keeps every gateway's key, credentials, sequence and outbox,
	// and what was imported, so that a second run reuses the enrolment.
	StateDir string
	// BrokerURL overrides the broker URL the verifier gave at enrolment.
	BrokerURL string
	// Network is the operator network; nil means an in-memory one of the
	// fleet's own, which nothing else can block cards in.
	Network Network

	// Heartbeat and Poll are the agents' report.heartbeat and report.poll
	// (defaults 5m and 30s, as cardbind-agent).
	Heartbeat, Poll time.Duration
	// KeepAlive, MinBackoff and MaxBackoff are the MQTT link's (defaults
	// 60s, 1s, 2m).
	KeepAlive, MinBackoff, MaxBackoff time.Duration
	// OutboxLimit is each agent's outbox.limit (default 1000).
	OutboxLimit int
	// RebootDownFor is how long a rebooted modem stays away (default 1s).
	RebootDownFor time.Duration

	// Ramp is how many gateways are started per second (0: all at once).
	Ramp float64
	// Duration is how long the scenario runs once all gateways are
	// started (0: until ctx ends).
	Duration time.Duration
	// SourceAddrs are the local addresses broker connections are made
	// from, in turn (each gives about 28,000 ephemeral ports towards one
	// broker address); empty means the system's choice.
	SourceAddrs []netip.Addr

	// SwapRate is SIM swaps per second across the fleet: a card moves into
	// another gateway and back after SwapHold (default 5s), with SwapGap
	// (default 200ms) between taking a card out and putting one in.
	SwapRate          float64
	SwapHold, SwapGap time.Duration
	// MoveRate is cell moves per second across the fleet: a gateway's
	// modem moves to the next cell (ECI + 1, in the same tracking area),
	// which its agent reports (at most once per CellChangeInterval) and,
	// with a network, the network's accounting carries.
	MoveRate float64
	// CellChangeInterval is the agents' report.cell_change_interval
	// (default 1m, as cardbind-agent; negative: no cell change reports).
	CellChangeInterval time.Duration
	// FaultRate is modem faults per second across the fleet: reboots,
	// garbled answers, silence (command timeouts) and error answers.
	FaultRate float64
	// StormEvery and StormPercent: every StormEvery, StormPercent of the
	// sessions are dropped at once and reconnect.
	StormEvery   time.Duration
	StormPercent float64
	// Seed seeds the scenario's choices.
	Seed uint64

	// FlushTimeout is how long the links may deliver what is queued once
	// the modems and agents stopped (default 10s).
	FlushTimeout time.Duration
	// EnrollWorkers is how many enrolments run in parallel (default 16).
	EnrollWorkers int
	// ProgressEvery is the interval of Progress calls (default 1s).
	ProgressEvery time.Duration
	// Progress, if set, receives the live figures, and Notice what the
	// fleet is doing before it runs (importing, enrolling).
	Progress func(Progress)
	Notice   func(string)
	// Logger logs the fleet's own events; DeviceLogger the gateways'
	// modems and agents (default: both discard).
	Logger, DeviceLogger *slog.Logger
}

func (c *Config) validate() error {
	switch {
	case c.Devices < 1 || c.Devices > MaxDevices:
		return fmt.Errorf("fleet: devices %d: want 1 to %d", c.Devices, MaxDevices)
	case c.VerifierURL == "":
		return errors.New("fleet: the verifier URL is required")
	case c.OperatorToken == "":
		return errors.New("fleet: the operator token is required")
	case c.StateDir == "":
		return errors.New("fleet: a state directory is required")
	case c.SwapRate < 0 || c.FaultRate < 0 || c.MoveRate < 0 || c.Ramp < 0:
		return errors.New("fleet: rates must not be negative")
	case c.StormPercent < 0 || c.StormPercent > 100:
		return fmt.Errorf("fleet: storm percent %v: want 0 to 100", c.StormPercent)
	}
	if u, err := url.Parse(c.VerifierURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("fleet: verifier URL %q: want http(s)://host:port", c.VerifierURL)
	}
	if c.Tenant == "" {
		c.Tenant = "fleet"
	}
	if err := protocol.ValidateID("tenant", c.Tenant); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Heartbeat, 5*time.Minute)
	if c.CellChangeInterval == 0 {
		c.CellChangeInterval = time.Minute
	}
	def(&c.Poll, 30*time.Second)
	def(&c.KeepAlive, 60*time.Second)
	def(&c.MinBackoff, time.Second)
	def(&c.MaxBackoff, 2*time.Minute)
	def(&c.RebootDownFor, time.Second)
	def(&c.SwapHold, 5*time.Second)
	def(&c.SwapGap, 200*time.Millisecond)
	def(&c.ProgressEvery, time.Second)
	def(&c.FlushTimeout, 10*time.Second)
	if c.OutboxLimit <= 0 {
		c.OutboxLimit = 1000
	}
	if c.EnrollWorkers <= 0 {
		c.EnrollWorkers = 16
	}
	if c.Network == nil {
		c.Network = network.New(network.Options{})
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.DeviceLogger == nil {
		c.DeviceLogger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Progress is the fleet's state at one moment.
type Progress struct {
	Elapsed   time.Duration
	Started   int
	Connected int
	// Queued counts reports the agents signed and queued; Acked those the
	// broker acknowledged (PUBACK). Rates are per second since the last
	// Progress.
	Queued, Acked         int64
	QueuedRate, AckedRate float64
	Swaps, BlocksObserved int64
	// BlockedNow is how many cards the network has blocked now.
	BlockedNow int
	Faults     int64
	Dropped    int64 // sessions dropped by storms
	Goroutines int
	RSS        uint64 // bytes
}

// String is the live progress line.
func (p Progress) String() string {
	return fmt.Sprintf("%5.0fs started %d connected %d | reports queued %d (%.0f/s) acked %d (%.0f/s) | swaps %d blocks seen %d blocked now %d | faults %d dropped %d | goroutines %d rss %s",
		p.Elapsed.Seconds(), p.Started, p.Connected, p.Queued, p.QueuedRate, p.Acked, p.AckedRate,
		p.Swaps, p.BlocksObserved, p.BlockedNow, p.Faults, p.Dropped, p.Goroutines, mib(p.RSS))
}

func mib(b uint64) string { return fmt.Sprintf("%.0fMiB", float64(b)/(1<<20)) }

// Summary is what a fleet run did.
type Summary struct {
	Devices     int
	Enrolment   Enrolment
	SourceAddrs []string
	// ConnectAll is the time from the first gateway's start until all
	// were connected at once (0: never); Peak the most at once.
	ConnectAll time.Duration
	Peak       int
	Connected  int // at the end of the scenario
	Ramp       time.Duration
	// Steady is the time after ConnectAll (or the ramp) until the end; the
	// rates are over it.
	Steady                time.Duration
	Queued, Acked         int64
	QueuedRate, AckedRate float64
	// PendingStart and PendingEnd are the reports waiting in the outboxes
	// before the start and after the end.
	PendingStart, PendingEnd int
	Dials, DialErrors        int64
	Swaps, SwapsBack         int64
	BlocksObserved           int64
	ResumesObserved          int64
	BlockLatency             Latency // card moved → blocked at the network
	ResumeLatency            Latency // card back → resumed at the network
	Moves                    int64   // cell moves
	Reboots, Garbles         int64
	Timeouts, Errors         int64
	Storms                   []Storm
	Goroutines               int // while running, whole process
	GoroutinesBefore         int
	RSSBefore, RSS           uint64 // before building the gateways; at the end of the scenario
	// HeapInuse and StackInuse are the Go runtime's, at the end of the
	// scenario.
	HeapInuse, StackInuse uint64
}

// RSSPerSession is the resident memory the gateways added, per connected
// session.
func (s *Summary) RSSPerSession() float64 {
	if s.Peak == 0 || s.RSS < s.RSSBefore {
		return 0
	}
	return float64(s.RSS-s.RSSBefore) / float64(max(s.Connected, 1))
}

// GoroutinesPerDevice is the goroutines the gateways added, per gateway.
func (s *Summary) GoroutinesPerDevice() float64 {
	return float64(s.Goroutines-s.GoroutinesBefore) / float64(s.Devices)
}

// Run enrols the fleet with the verifier (reusing the cached enrolment),
// starts the gateways at cfg.Ramp per second, runs the scenario for
// cfg.Duration and stops the gateways, delivering what they queued.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	notice := func(s string) {
		cfg.Logger.Info(s)
		if cfg.Notice != nil {
			cfg.Notice(s)
		}
	}
	hc := &http.Client{Timeout: 10 * time.Minute, Transport: &http.Transport{
		MaxIdleConnsPerHost: cfg.EnrollWorkers + 4, IdleConnTimeout: 30 * time.Second}}
	defer hc.CloseIdleConnections()
	a := &admin{base: strings.TrimRight(cfg.VerifierURL, "/"), token: cfg.OperatorToken, hc: hc}
	creds, enr, err := prepare(ctx, &cfg, a, notice)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	notice(fmt.Sprintf("enrolment ready in %v: %d enrolled, %d reused, %d cards imported",
		enr.Took.Round(time.Millisecond), enr.Enrolled, enr.Reused, enr.Imported))

	sum := &Summary{Devices: cfg.Devices, Enrolment: enr, GoroutinesBefore: runtime.NumGoroutine(), RSSBefore: rss()}
	for _, a := range cfg.SourceAddrs {
		sum.SourceAddrs = append(sum.SourceAddrs, a.String())
	}
	dial := Dialer(cfg.SourceAddrs)
	var c counters
	devices := make([]*device, cfg.Devices)
	for i := range devices {
		if devices[i], err = newDevice(&cfg, i, creds[i], dial, &c, cfg.DeviceLogger.With("gateway", i)); err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
		sum.PendingStart += devices[i].box.Len()
	}
	creds = nil

	devCtx, stopDevices := context.WithCancel(ctx)
	defer stopDevices()
	linkCtx, stopLinks := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLinks()
	var devWG sync.WaitGroup
	var mu sync.Mutex
	started := 0
	connected := func() int {
		mu.Lock()
		n := started
		mu.Unlock()
		k := 0
		for _, d := range devices[:n] {
			if d.link.Connected() {
				k++
			}
		}
		return k
	}

	start := time.Now()
	sc := newScenario(&cfg, devices)
	// The monitor: progress lines, the peak, the moment all are connected.
	monCtx, stopMon := context.WithCancel(context.Background())
	var monWG sync.WaitGroup
	allUp := make(chan struct{})
	monWG.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		lastAt, lastQ, lastA := start, int64(0), int64(0)
		nextProgress := start.Add(cfg.ProgressEvery)
		for {
			select {
			case <-monCtx.Done():
				return
			case <-tick.C:
			}
			n := connected()
			mu.Lock()
			if n > sum.Peak {
				sum.Peak = n
			}
			if n == cfg.Devices && sum.ConnectAll == 0 {
				sum.ConnectAll = time.Since(start)
				close(allUp)
			}
			mu.Unlock()
			if now := time.Now(); cfg.Progress != nil && !now.Before(nextProgress) {
				nextProgress = nextProgress.Add(cfg.ProgressEvery)
				q, ak := c.queued.Load(), c.acked.Load()
				dt := now.Sub(lastAt).Seconds()
				mu.Lock()
				st := started
				mu.Unlock()
				p := Progress{Elapsed: now.Sub(start), Started: st, Connected: n, Queued: q, Acked: ak,
					QueuedRate: float64(q-lastQ) / dt, AckedRate: float64(ak-lastA) / dt,
					Swaps: sc.swaps.Load(), BlocksObserved: sc.blocks.Load(), BlockedNow: blockedNow(monCtx, cfg.Network),
					Faults:  sc.reboots.Load() + sc.garbles.Load() + sc.timeouts.Load() + sc.errs.Load(),
					Dropped: sc.dropped.Load(), Goroutines: runtime.NumGoroutine(), RSS: rss()}
				lastAt, lastQ, lastA = now, q, ak
				cfg.Progress(p)
			}
		}
	})
	stopMonitor := func() { stopMon(); monWG.Wait() }
	defer stopMonitor()

	// Ramp up.
	for i, d := range devices {
		if cfg.Ramp > 0 {
			due := start.Add(time.Duration(float64(i) / cfg.Ramp * float64(time.Second)))
			if w := time.Until(due); w > 0 {
				t := time.NewTimer(w)
				select {
				case <-ctx.Done():
					t.Stop()
				case <-t.C:
				}
			}
		}
		if ctx.Err() != nil {
			break
		}
		d.run(devCtx, linkCtx, &devWG)
		mu.Lock()
		started = i + 1
		mu.Unlock()
	}
	sum.Ramp = time.Since(start)
	notice(fmt.Sprintf("%d gateways started in %v", started, sum.Ramp.Round(time.Millisecond)))

	// Steady state: the scenario, for Duration.
	steadyFrom := time.Now()
	q0, a0 := c.queued.Load(), c.acked.Load()
	// Rates count from the moment all are connected, if that comes soon.
	select {
	case <-allUp:
		steadyFrom = time.Now()
		q0, a0 = c.queued.Load(), c.acked.Load()
	case <-time.After(2 * time.Second):
	case <-ctx.Done():
	}
	runCtx, stopRun := context.WithCancel(ctx)
	if cfg.Duration > 0 {
		runCtx, stopRun = context.WithTimeout(ctx, cfg.Duration)
	}
	var scWG sync.WaitGroup
	sc.run(runCtx, start, connected, &scWG)
	<-runCtx.Done()
	stopRun()
	sum.Steady = time.Since(steadyFrom)
	q1, a1 := c.queued.Load(), c.acked.Load()
	sum.QueuedRate = float64(q1-q0) / sum.Steady.Seconds()
	sum.AckedRate = float64(a1-a0) / sum.Steady.Seconds()
	sum.Connected = connected()
	sum.Goroutines = runtime.NumGoroutine()
	sum.RSS = rss()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	sum.HeapInuse, sum.StackInuse = ms.HeapInuse, ms.StackInuse
	scWG.Wait() // swaps put their cards back

	// Stop: modems and agents first, then give the links a few seconds
	// to deliver what is queued, as cardbind-agent does on SIGTERM.
	notice("stopping the gateways")
	stopDevices()
	devWGDone := make(chan struct{})
	go func() { devWG.Wait(); close(devWGDone) }()
	deadline := time.Now().Add(cfg.FlushTimeout)
	for time.Now().Before(deadline) {
		pending := 0
		for _, d := range devices[:started] {
			pending += d.box.Len()
		}
		if pending == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	stopLinks()
	<-devWGDone
	stopMonitor()

	for _, d := range devices {
		sum.PendingEnd += d.box.Len()
	}
	sum.Queued, sum.Acked = c.queued.Load(), c.acked.Load()
	sum.Dials, sum.DialErrors = c.dials.Load(), c.dialErrors.Load()
	sum.Swaps, sum.SwapsBack = sc.swaps.Load(), sc.swapsBack.Load()
	sum.BlocksObserved, sum.ResumesObserved = sc.blocks.Load(), sc.resumes.Load()
	sc.mu.Lock()
	sum.BlockLatency, sum.ResumeLatency = latencyOf(sc.blockLat), latencyOf(sc.resumeLat)
	sum.Storms = sc.storms
	sc.mu.Unlock()
	sum.Reboots, sum.Garbles, sum.Timeouts, sum.Errors = sc.reboots.Load(), sc.garbles.Load(), sc.timeouts.Load(), sc.errs.Load()
	sum.Moves = sc.moves.Load()
	return sum, nil
}

// blockedNow counts the cards the network has blocked, or -1.
func blockedNow(ctx context.Context, n Network) int {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	yes := true
	cards, err := n.Cards(ctx, network.Filter{Blocked: &yes})
	if err != nil {
		return -1
	}
	return len(cards)
}

// Dialer returns a dial function that binds connections to the source
// addresses in turn (the system chooses when there are none).
func Dialer(addrs []netip.Addr) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if len(addrs) == 0 {
		var d net.Dialer
		return d.DialContext
	}
	ds := make([]*net.Dialer, len(addrs))
	for i, a := range addrs {
		ds[i] = &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, 0))}
	}
	var mu sync.Mutex
	next := 0
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		d := ds[next]
		next = (next + 1) % len(ds)
		mu.Unlock()
		return d.DialContext(ctx, network, addr)
	}
}

// LoopbackSources returns n loopback source addresses from 127.0.0.2 on.
func LoopbackSources(n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	a := netip.AddrFrom4([4]byte{127, 0, 0, 2})
	for range n {
		out = append(out, a)
		a = a.Next()
	}
	return out
}

// rss returns the process's resident set size in bytes, or 0.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

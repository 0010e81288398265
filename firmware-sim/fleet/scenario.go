package fleet

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cardbind/cardbind/firmware-sim/modem"
)

// scenario runs the events of a fleet run: SIM swaps, cell moves, modem
// faults and reconnect storms, and keeps their counts.
type scenario struct {
	cfg     *Config
	devices []*device
	rng     *rand.Rand
	rngMu   sync.Mutex

	swaps, swapsBack, blocks, resumes atomic.Int64
	reboots, garbles, timeouts, errs  atomic.Int64
	moves                             atomic.Int64
	dropped                           atomic.Int64

	mu        sync.Mutex
	blockLat  []time.Duration
	resumeLat []time.Duration
	storms    []Storm
}

// Storm is one reconnect storm: how many sessions were dropped at once and
// how long the fleet took to have as many sessions as before.
type Storm struct {
	At        time.Duration // since the start of the run
	Dropped   int
	Recovered time.Duration // 0: not back to the count before it
	// Cut is set when the run ended before the fleet was back.
	Cut bool
}

func newScenario(cfg *Config, devices []*device) *scenario {
	return &scenario{cfg: cfg, devices: devices, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed+1))}
}

func (s *scenario) intN(n int) int {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.IntN(n)
}

// every calls f about rate times a second (with exponential gaps, as
// independent events arrive) until ctx ends.
func every(ctx context.Context, rate float64, rng func() float64, f func()) {
	if rate <= 0 {
		return
	}
	for {
		gap := time.Duration(-math.Log(1-rng()) / rate * float64(time.Second))
		t := time.NewTimer(gap)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		f()
	}
}

// run starts the scenario's loops; they stop when ctx ends, and swaps in
// progress then put their cards back before wg is done.
func (s *scenario) run(ctx context.Context, start time.Time, connected func() int, wg *sync.WaitGroup) {
	float := func() float64 {
		s.rngMu.Lock()
		defer s.rngMu.Unlock()
		return s.rng.Float64()
	}
	if len(s.devices) >= 2 {
		wg.Go(func() {
			every(ctx, s.cfg.SwapRate, float, func() { wg.Go(func() { s.swap(ctx) }) })
		})
	}
	wg.Go(func() { every(ctx, s.cfg.FaultRate, float, s.fault) })
	wg.Go(func() { every(ctx, s.cfg.MoveRate, float, s.move) })
	if s.cfg.StormEvery > 0 && s.cfg.StormPercent > 0 {
		wg.Go(func() { s.stormLoop(ctx, start, connected) })
	}
}

// pick reserves a random gateway not in a swap, or returns nil.
func (s *scenario) pick(not *device) *device {
	for range 8 {
		d := s.devices[s.intN(len(s.devices))]
		if d != not && d.busy.CompareAndSwap(false, true) {
			return d
		}
	}
	return nil
}

// swap moves gateway A's card into gateway B (whose own card is set aside,
// as a thief would), waits for the network to block the moved card, holds
// for SwapHold, then puts both cards back and waits for the resume.
func (s *scenario) swap(ctx context.Context) {
	a := s.pick(nil)
	if a == nil {
		return
	}
	defer a.busy.Store(false)
	b := s.pick(a)
	if b == nil {
		return
	}
	defer b.busy.Store(false)

	card, own := a.id.SIM, b.id.SIM
	var before uint64
	if s.cfg.Network != nil {
		if c, err := s.cfg.Network.Card(ctx, card.ICCID); err == nil {
			before = c.Version
		}
	}
	moved := time.Now()
	if err := a.modem.RemoveSIM(); err != nil {
		return
	}
	s.swaps.Add(1)
	_ = b.modem.SwapSIM(context.WithoutCancel(ctx), card, s.cfg.SwapGap)

	hold, cancel := context.WithTimeout(ctx, s.cfg.SwapHold)
	if s.cfg.Network != nil {
		if after, ok := s.waitBlocked(hold, card.ICCID, before, true); ok {
			s.blocks.Add(1)
			s.addLatency(&s.blockLat, time.Since(moved))
			before = after
		}
	}
	<-hold.Done()
	cancel()

	// Back home, even when the run is ending.
	back := time.Now()
	_ = b.modem.SwapSIM(context.WithoutCancel(ctx), own, s.cfg.SwapGap)
	if err := a.modem.InsertSIM(card); err != nil && !errors.Is(err, modem.ErrSIMPresent) {
		return
	}
	s.swapsBack.Add(1)
	if s.cfg.Network != nil && ctx.Err() == nil {
		wait, cancel := context.WithTimeout(ctx, s.cfg.SwapHold)
		defer cancel()
		if _, ok := s.waitBlocked(wait, card.ICCID, before, false); ok {
			s.resumes.Add(1)
			s.addLatency(&s.resumeLat, time.Since(back))
		}
	}
}

// waitBlocked waits until the network shows the card, at a version above
// after, blocked (or not blocked when blocked is false); it returns that
// version.
func (s *scenario) waitBlocked(ctx context.Context, iccid string, after uint64, blocked bool) (uint64, bool) {
	for ctx.Err() == nil {
		c, err := s.cfg.Network.Watch(ctx, iccid, after)
		if err != nil {
			if ctx.Err() == nil {
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		after = c.Version
		if c.Blocked == blocked {
			return after, true
		}
	}
	return after, false
}

func (s *scenario) addLatency(to *[]time.Duration, d time.Duration) {
	s.mu.Lock()
	*to = append(*to, d)
	s.mu.Unlock()
}

// move puts a random gateway's modem in the next cell of its tracking
// area, as a gateway on a vehicle reselects.
func (s *scenario) move() {
	d := s.devices[s.intN(len(s.devices))]
	c := d.modem.Cell()
	if c.MCC == "" {
		return // no SIM: no network to move in
	}
	c.ECI = (c.ECI + 1) % (1 << 28)
	if err := d.modem.SetCell(c); err == nil {
		s.moves.Add(1)
	}
}

// fault injects one modem fault into a random gateway: a reboot, garbled
// answers, silence (the agent's command times out) or error answers.
func (s *scenario) fault() {
	d := s.devices[s.intN(len(s.devices))]
	switch s.intN(4) {
	case 0:
		if d.modem.Reboot(s.cfg.RebootDownFor) {
			s.reboots.Add(1)
		}
	case 1:
		d.modem.SetFaults(modem.Faults{Garble: 2})
		s.garbles.Add(1)
	case 2:
		d.modem.SetFaults(modem.Faults{NoResponse: 1})
		s.timeouts.Add(1)
	default:
		d.modem.SetFaults(modem.Faults{Errors: 2, ErrorCode: 14}) // SIM busy
		s.errs.Add(1)
	}
}

// stormLoop drops StormPercent of the sessions at once every StormEvery
// and measures how long the fleet takes to reconnect them.
func (s *scenario) stormLoop(ctx context.Context, start time.Time, connected func() int) {
	t := time.NewTicker(s.cfg.StormEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		before := connected()
		n := int(float64(len(s.devices)) * s.cfg.StormPercent / 100)
		st := Storm{At: time.Since(start)}
		perm := func() []int {
			s.rngMu.Lock()
			defer s.rngMu.Unlock()
			return s.rng.Perm(len(s.devices))
		}()
		t0 := time.Now()
		for _, i := range perm {
			if st.Dropped >= n {
				break
			}
			if s.devices[i].drop() {
				st.Dropped++
			}
		}
		s.dropped.Add(int64(st.Dropped))
		// Wait for the fleet to be back, up to the next storm.
		deadline := time.Now().Add(s.cfg.StormEvery)
		poll := time.NewTicker(50 * time.Millisecond)
	wait:
		for time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				st.Cut = true
				break wait
			case <-poll.C:
			}
			if connected() >= before {
				st.Recovered = time.Since(t0)
				break
			}
		}
		poll.Stop()
		s.mu.Lock()
		s.storms = append(s.storms, st)
		s.mu.Unlock()
	}
}

// Latency summarises a set of durations.
type Latency struct {
	N             int
	P50, P99, Max time.Duration
}

func latencyOf(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return Latency{N: len(s), P50: q(0.50), P99: q(0.99), Max: s[len(s)-1]}
}

// Command storebench measures the Pebble store at the size cardbind is
// built for: it loads N cards (inventory through UpsertInventory, then a
// binding each through Commit, as the admin bulk import and bulk binding
// do), reports the load rates, the disk size, the process RSS and the
// close and reopen times, then runs random point lookups from G
// goroutines, and the same lookups as raw Pebble Gets on the same files,
// so the store's own cost shows as a ratio. The settled loops (-loops)
// are verify (Card by ICCID, then FindCard by IMSI of another card),
// card (Card alone, an agent report's lookup) and imsi (FindCard by IMSI
// alone, a RADIUS accounting record's lookup: index entry, then card).
// Raw and store alternate twice, each on a fresh open with its own block
// cache; -warmup runs random verifications after each open first, so a
// large store is measured with a warm cache rather than while it fills.
// Each loop reports its block cache hit rate.
//
//	go run ./verifier/store/pebble/cmd/storebench                   # 1M cards
//	go run ./verifier/store/pebble/cmd/storebench -cards 30000000   # the full run
//	storebench -reuse -dir DIR -cards N -bind=false -cache 4096 -warmup 45s -duration 30s -loops imsi
//
// Data goes to a new temporary directory that is removed at the end,
// unless -dir names one (-keep keeps it).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pdb "github.com/cockroachdb/pebble/v2"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/store/pebble"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "storebench:", err)
		os.Exit(1)
	}
}

// config is the benchmark's flags.
type config struct {
	dir         string
	keep        bool
	cards       int
	batch       int
	loaders     int
	bind        bool
	binders     int
	readers     int
	duration    time.Duration
	cacheMB     int64
	compression string
	settle      time.Duration
	reuse       bool
	warmup      time.Duration
	loops       []string
	cpuprofile  string
	compact     bool
	imsiMemory  bool
}

// loopKinds are the settled read loops -loops may name.
var loopKinds = []string{"verify", "card", "imsi", "missing"}

func run(args []string, stdout, stderr io.Writer) error {
	var c config
	flags := flag.NewFlagSet("storebench", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.StringVar(&c.dir, "dir", "", "data directory (default: a new temporary directory, removed at the end)")
	flags.BoolVar(&c.keep, "keep", false, "keep the data directory")
	flags.IntVar(&c.cards, "cards", 1_000_000, "cards to load")
	flags.IntVar(&c.batch, "batch", 1000, "cards per UpsertInventory call")
	flags.IntVar(&c.loaders, "loaders", 2, "concurrent UpsertInventory callers")
	flags.BoolVar(&c.bind, "bind", true, "give every card a binding (one Commit with a history entry per card)")
	flags.IntVar(&c.binders, "binders", 64, "concurrent binding committers")
	flags.IntVar(&c.readers, "readers", 4, "concurrent readers (G) in the verification loops")
	flags.DurationVar(&c.duration, "duration", 10*time.Second, "length of each verification loop")
	flags.Int64Var(&c.cacheMB, "cache", 64, "block cache in MiB")
	flags.StringVar(&c.compression, "compression", "balanced", "balanced, fastest, good or none")
	flags.BoolVar(&c.reuse, "reuse", false, "skip the load: measure the cards a previous -keep run left in -dir (same -cards and -bind)")
	flags.DurationVar(&c.settle, "settle", 30*time.Minute, "longest wait for compactions to finish before the settled reads")
	flags.DurationVar(&c.warmup, "warmup", 0, "random lookups (Card and FindCard by IMSI) after each open, before the measured loops, to warm the block cache")
	loops := flags.String("loops", strings.Join(loopKinds, ","), "settled loops to run: verify (Card + FindCard by IMSI), card (Card alone), imsi (FindCard by IMSI alone), missing (Card of an ICCID not in the store)")
	flags.BoolVar(&c.compact, "compact", false, "compact the whole key space into the last level (raw Pebble) before the settled loops")
	flags.BoolVar(&c.imsiMemory, "imsi-in-memory", false, "open the store with the IMSI index in memory (pebble.Options.IMSIInMemory); the settled loops start once it is loaded")
	flags.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the settled loops (raw and store) to this file")
	if err := flags.Parse(args); err != nil {
		return err
	}
	for _, l := range strings.Split(*loops, ",") {
		if !slices.Contains(loopKinds, l) {
			return fmt.Errorf("-loops: unknown loop %q (%s)", l, strings.Join(loopKinds, ", "))
		}
		if !slices.Contains(c.loops, l) {
			c.loops = append(c.loops, l)
		}
	}
	if c.cards <= 0 || c.batch <= 0 || c.loaders <= 0 || c.binders <= 0 || c.readers <= 0 {
		return errors.New("-cards, -batch, -loaders, -binders and -readers must be positive")
	}
	if c.reuse && c.dir == "" {
		return errors.New("-reuse needs -dir")
	}
	if c.dir == "" {
		d, err := os.MkdirTemp(".", "storebench-*")
		if err != nil {
			return err
		}
		c.dir = d
		if !c.keep {
			defer os.RemoveAll(d)
			// An interrupted run removes its data too.
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
			go func() {
				<-sig
				_ = os.RemoveAll(d)
				fmt.Fprintln(stderr, "storebench: interrupted; removed", d)
				os.Exit(1)
			}()
		}
	}
	b := &bench{config: c, out: stdout, log: stderr}
	return b.run(context.Background())
}

// bench runs the phases and prints the report.
type bench struct {
	config
	out, log io.Writer
}

func (b *bench) opts() pebble.Options {
	return pebble.Options{CacheSize: b.cacheMB << 20, Compression: b.compression, IMSIInMemory: b.imsiMemory}
}

func (b *bench) report(format string, args ...any) { fmt.Fprintf(b.out, format+"\n", args...) }

func (b *bench) run(ctx context.Context) error {
	b.report("storebench: %d cards, batch %d, %d loaders, bind %v (%d committers), %d readers, %s loops (%s) after %s warm-up, cache %d MiB, compression %s, GOMAXPROCS %d",
		b.cards, b.batch, b.loaders, b.bind, b.binders, b.readers, b.duration, strings.Join(b.loops, ", "), b.warmup, b.cacheMB, b.compression, runtime.GOMAXPROCS(0))
	s, err := pebble.Open(b.dir, b.opts())
	if err != nil {
		return err
	}
	if b.reuse {
		if _, err := s.Card(ctx, iccid(b.cards-1)); err != nil {
			s.Close()
			return fmt.Errorf("-reuse: last card: %w", err)
		}
	} else if err := b.load(ctx, s); err != nil {
		s.Close()
		return err
	}
	if b.bind && !b.reuse {
		if err := b.bindAll(ctx, s); err != nil {
			s.Close()
			return err
		}
	}
	b.report("after load: %s", rss())
	t := time.Now()
	if err := s.Close(); err != nil {
		return err
	}
	b.report("close: %s", time.Since(t).Round(time.Millisecond))
	if err := b.disk("disk after close"); err != nil {
		return err
	}
	t = time.Now()
	s, err = pebble.Open(b.dir, b.opts())
	if err != nil {
		return err
	}
	b.report("open: %s (page cache warm)", time.Since(t).Round(time.Millisecond))
	if err := b.disk("disk after reopen"); err != nil {
		return err
	}

	// Reads while the LSM tree still digests the load, as during an
	// import.
	b.report("read amplification after the load: %d", s.Metrics().ReadAmp())
	unsettled, _, err := b.loopFor(b.duration, 42, b.storeLookup(ctx, s, "verify"))
	if err != nil {
		s.Close()
		return err
	}
	b.report("verifications during compaction (store): %.0f/s", unsettled)

	// Settled: no compaction has run for five seconds.
	t = time.Now()
	last, quiet := int64(-1), 0
	for quiet < 5 {
		if time.Since(t) > b.settle {
			b.report("compactions not settled after %s", b.settle)
			break
		}
		time.Sleep(time.Second)
		m := s.Metrics()
		if m.Compact.NumInProgress == 0 && m.Compact.Count == last {
			quiet++
		} else {
			quiet = 0
		}
		last = m.Compact.Count
	}
	b.report("compactions settled in %s; read amplification %d; %s", time.Since(t).Round(time.Second), s.Metrics().ReadAmp(), rss())

	if err := s.Close(); err != nil {
		return err
	}
	if err := b.disk("disk settled"); err != nil {
		return err
	}
	if err := b.tableSizes(); err != nil {
		return err
	}
	if b.compact {
		if err := b.compactAll(ctx); err != nil {
			return err
		}
	}
	if b.cpuprofile != "" {
		f, err := os.Create(b.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	// Raw Pebble on the same files, then the store, twice over, so
	// neither has the warmer cache or the quieter machine throughout.
	res, err := b.alternate(ctx)
	if err != nil {
		return err
	}
	for _, kind := range b.loops {
		r := res[kind]
		switch kind {
		case "verify":
			b.report("verifications settled (Card by ICCID + FindCard by IMSI, %d readers, 2 x %s each, alternating):", b.readers, b.duration)
			b.report("  store:    %8.0f/s  (%s)", r.store.rate, r.store)
			b.report("  raw Get:  %8.0f/s  (%s; 3 Gets each: card, index, card)", r.raw.rate, r.raw)
			b.report("  ratio:    %.2f", r.store.rate/r.raw.rate)
			b.report("point reads/s through the store (Card + FindCard each count one): %.0f", 2*r.store.rate)
		case "card":
			// An agent's report names its card by ICCID: one Card call.
			b.report("card lookups settled (Card by ICCID alone, as for an agent report; %d readers, 2 x %s each, alternating):", b.readers, b.duration)
			b.report("  store:    %8.0f/s  (%s)", r.store.rate, r.store)
			b.report("  raw Get:  %8.0f/s  (%s)", r.raw.rate, r.raw)
			b.report("  ratio:    %.2f", r.store.rate/r.raw.rate)
		case "imsi":
			// A RADIUS accounting record names its card by IMSI.
			b.report("IMSI lookups settled (FindCard by IMSI alone, as for a RADIUS record; %d readers, 2 x %s each, alternating):", b.readers, b.duration)
			b.report("  store:    %8.0f/s  (%s)", r.store.rate, r.store)
			b.report("  raw Get:  %8.0f/s  (%s; 2 Gets each: index, card)", r.raw.rate, r.raw)
			b.report("  ratio:    %.2f", r.store.rate/r.raw.rate)
		case "missing":
			// A report or an import naming a card the store does not have.
			b.report("missing-card lookups settled (Card of an ICCID not in the store; %d readers, 2 x %s each, alternating):", b.readers, b.duration)
			b.report("  store:    %8.0f/s  (%s)", r.store.rate, r.store)
			b.report("  raw Get:  %8.0f/s  (%s)", r.raw.rate, r.raw)
			b.report("  ratio:    %.2f", r.store.rate/r.raw.rate)
		}
	}
	b.report("after reads: %s", rss())
	return nil
}

// result is one kind of loop's outcome, summed over its runs.
type result struct {
	rate         float64 // mean of the runs' lookups per second
	n            int64
	hits, misses int64         // block cache, during the measured loops
	cpu          time.Duration // the process's CPU time in the loops
}

func (r *result) add(rate float64, n int64, cpu time.Duration, before, after pdb.CacheMetrics, runs int) {
	r.rate += rate / float64(runs)
	r.n += n
	r.cpu += cpu
	r.hits += after.Hits - before.Hits
	r.misses += after.Misses - before.Misses
}

// String reports the count, the block cache hit rate and the CPU time
// per lookup, which other work on the machine disturbs less than the
// rate.
func (r result) String() string {
	return fmt.Sprintf("%d; block cache hits %.1f%%; CPU %.1f µs each", r.n, r.hitRate(), float64(r.cpu.Microseconds())/float64(max(r.n, 1)))
}

func (r result) hitRate() float64 {
	if r.hits+r.misses == 0 {
		return 0
	}
	return 100 * float64(r.hits) / float64(r.hits+r.misses)
}

// rawStore is a loop kind's raw and store results.
type rawStore struct{ raw, store result }

// alternate opens raw Pebble, then the store, on the same files, twice
// over, so that neither has the warmer cache or the quieter machine
// throughout. After each open it warms the block cache for -warmup,
// then runs every loop of -loops on that open.
func (b *bench) alternate(ctx context.Context) (map[string]*rawStore, error) {
	const rounds = 2
	res := map[string]*rawStore{}
	for _, kind := range b.loops {
		res[kind] = &rawStore{}
	}
	for range rounds {
		db, err := b.openRaw()
		if err != nil {
			return nil, err
		}
		err = b.runLoops(db.Metrics, func(kind string) func(*rand.Rand) error { return b.rawLookup(db, kind) },
			func(kind string, rate float64, n int64, cpu time.Duration, before, after pdb.CacheMetrics) {
				res[kind].raw.add(rate, n, cpu, before, after, rounds)
			})
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
		s, err := pebble.Open(b.dir, b.opts())
		if err != nil {
			return nil, err
		}
		b.waitIMSIIndex(s)
		err = b.runLoops(s.Metrics, func(kind string) func(*rand.Rand) error { return b.storeLookup(ctx, s, kind) },
			func(kind string, rate float64, n int64, cpu time.Duration, before, after pdb.CacheMetrics) {
				res[kind].store.add(rate, n, cpu, before, after, rounds)
			})
		if cerr := s.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
	}
	return res, nil
}

// waitIMSIIndex waits until the store's IMSI index in memory is loaded,
// if it has one, and reports the time and memory it took.
func (b *bench) waitIMSIIndex(s *pebble.Store) {
	if !b.imsiMemory {
		return
	}
	start := time.Now()
	loaded := s.WaitIMSIIndex(context.Background())
	_, imsis, bytes := s.IMSIIndexInMemory()
	if !loaded {
		b.report("IMSI index in memory: load failed with %d IMSIs (see the log); measuring anyway", imsis)
		return
	}
	b.report("IMSI index in memory: %d IMSIs in %s, loaded %s after open; %s",
		imsis, mib(bytes), time.Since(start).Round(100*time.Millisecond), rss())
}

// runLoops warms the cache with the verify lookups for -warmup, then
// runs each loop of -loops for -duration and hands its rate, count and
// the block cache metrics around it to done.
func (b *bench) runLoops(metrics func() *pdb.Metrics, lookup func(kind string) func(*rand.Rand) error,
	done func(kind string, rate float64, n int64, cpu time.Duration, before, after pdb.CacheMetrics)) error {
	if b.warmup > 0 {
		t := time.Now()
		rate, _, err := b.loopFor(b.warmup, 1000, lookup("verify"))
		if err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		m := metrics().BlockCache
		fmt.Fprintf(b.log, "warm-up %s: %.0f verifications/s; block cache %s in %d blocks\n", time.Since(t).Round(time.Second), rate, mib(m.Size), m.Count)
	}
	for i, kind := range b.loops {
		before, cpu := metrics().BlockCache, cpuTime()
		rate, n, err := b.loopFor(b.duration, uint64(i), lookup(kind))
		if err != nil {
			return fmt.Errorf("%s loop: %w", kind, err)
		}
		done(kind, rate, n, cpuTime()-cpu, before, metrics().BlockCache)
	}
	return nil
}

func (b *bench) openRaw() (*pdb.DB, error) {
	cache := pdb.NewCache(b.cacheMB << 20)
	defer cache.Unref() // the DB holds its own reference
	po, err := pebble.PebbleOptions(b.opts(), cache)
	if err != nil {
		return nil, err
	}
	return pdb.Open(b.dir, po)
}

// Card identities: ICCIDs in one range, IMSIs and MSISDNs scattered over
// theirs (a multiplier coprime to 10^n is a permutation), so an index
// lookup and its card are far apart in the key space.
func iccid(i int) protocol.ICCID { return protocol.ICCID(fmt.Sprintf("8986031%012d", i)) }
func imsi(i int) protocol.IMSI {
	return protocol.IMSI(fmt.Sprintf("46003%010d", (uint64(i)*7919+13)%10_000_000_000))
}
func msisdn(i int) protocol.MSISDN {
	return protocol.MSISDN(fmt.Sprintf("+86149%08d", (uint64(i)*6133+7)%100_000_000))
}

// missingICCID is an ICCID not in the store that sorts right after
// card i's, so its lookup reaches the tables that hold the cards.
func missingICCID(i int) protocol.ICCID { return iccid(i) + "5" }

func imei(i int) protocol.IMEI { return protocol.IMEI(fmt.Sprintf("35693803%07d", i%10_000_000)) }

// progress prints a phase's progress every 5 seconds until stop.
func (b *bench) progress(phase string, done *atomic.Int64, total int) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				n := done.Load()
				fmt.Fprintf(b.log, "%s: %d/%d (%.0f/s) %s\n", phase, n, total, float64(n)/time.Since(start).Seconds(), rss())
			}
		}
	}()
	return func() { close(quit); wg.Wait() }
}

// parallel runs f(i) for i in [0, n) in chunks of size from workers
// goroutines; the first error stops it.
func parallel(n, size, workers int, f func(lo, hi int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				lo := int(next.Add(int64(size))) - size
				if lo >= n {
					return
				}
				if err := f(lo, min(lo+size, n)); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func (b *bench) load(ctx context.Context, s *pebble.Store) error {
	var done atomic.Int64
	stop := b.progress("inventory", &done, b.cards)
	t := time.Now()
	err := parallel(b.cards, b.batch, b.loaders, func(lo, hi int) error {
		items := make([]verifier.Card, 0, hi-lo)
		for i := lo; i < hi; i++ {
			items = append(items, verifier.Card{ICCID: iccid(i), Tenant: "acme", IMSI: imsi(i), MSISDN: msisdn(i)})
		}
		created, _, err := s.UpsertInventory(ctx, items)
		if err == nil && created != len(items) {
			err = fmt.Errorf("created %d of %d", created, len(items))
		}
		done.Add(int64(hi - lo))
		return err
	})
	stop()
	if err != nil {
		return fmt.Errorf("inventory: %w", err)
	}
	d := time.Since(t)
	b.report("inventory (UpsertInventory, %d per call): %d cards in %s = %.0f cards/s", b.batch, b.cards, d.Round(time.Millisecond), float64(b.cards)/d.Seconds())
	return nil
}

func (b *bench) bindAll(ctx context.Context, s *pebble.Store) error {
	var done atomic.Int64
	stop := b.progress("bind", &done, b.cards)
	t := time.Now()
	now := time.Now().UTC()
	err := parallel(b.cards, 64, b.binders, func(lo, hi int) error {
		for i := lo; i < hi; i++ {
			c, err := s.Card(ctx, iccid(i))
			if err != nil {
				return err
			}
			c.Binding = &verifier.Binding{IMEIs: []protocol.IMEI{imei(i)}, Mode: verifier.ModeBlock, AutoResume: true, Created: now, CreatedBy: "bench"}
			c.Status = verifier.CardStatus{State: protocol.CardActive, Reason: protocol.DecisionLearned, LastIMEI: imei(i),
				LastSource: protocol.SourceAgent, LastSeen: now, Seq: c.Status.Seq + 1}
			err = s.Commit(ctx, &verifier.Commit{Card: c, History: &verifier.HistoryEntry{
				ICCID: c.ICCID, Seq: c.Status.Seq, Time: now, Decision: protocol.DecisionLearned,
				From: protocol.CardUnbound, To: protocol.CardActive,
				Observed: verifier.Observation{Kind: verifier.ObservedBindingChange, ICCID: c.ICCID, Source: protocol.SourceAdmin, Time: now, Actor: "bench"},
			}})
			if err != nil {
				return err
			}
			done.Add(1)
		}
		return nil
	})
	stop()
	if err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	d := time.Since(t)
	b.report("bindings (Commit: card + history entry, synced, %d committers): %d in %s = %.0f commits/s", b.binders, b.cards, d.Round(time.Millisecond), float64(b.cards)/d.Seconds())
	return nil
}

// loopFor runs f from b.readers goroutines for d and returns the calls
// per second and the count. Reader g draws its cards from a generator
// seeded with (g, seed), so raw and store loops of one seed look up the
// same cards.
func (b *bench) loopFor(d time.Duration, seed uint64, f func(r *rand.Rand) error) (float64, int64, error) {
	var n atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	deadline := time.Now().Add(d)
	start := time.Now()
	for g := 0; g < b.readers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), seed))
			var local int64
			for local%256 != 0 || time.Now().Before(deadline) {
				if err := f(r); err != nil {
					once.Do(func() { first = err })
					break
				}
				local++
			}
			n.Add(local)
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds(), n.Load(), first
}

// storeLookup returns one lookup of a loop kind through the store:
// verify is Card by ICCID then FindCard by IMSI of another card, card
// the Card alone, imsi the FindCard alone.
func (b *bench) storeLookup(ctx context.Context, s *pebble.Store, kind string) func(r *rand.Rand) error {
	card := func(r *rand.Rand) error {
		i := r.IntN(b.cards)
		c, err := s.Card(ctx, iccid(i))
		if err != nil {
			return err
		}
		if b.bind && (c.Binding == nil || !c.Binding.Allows(imei(i))) {
			return fmt.Errorf("card %s: binding %+v", c.ICCID, c.Binding)
		}
		return nil
	}
	byIMSI := func(r *rand.Rand) error {
		j := r.IntN(b.cards)
		c, err := s.FindCard(ctx, verifier.ByIMSI, string(imsi(j)))
		if err != nil {
			return err
		}
		if c.ICCID != iccid(j) {
			return fmt.Errorf("IMSI %s finds %s, want %s", imsi(j), c.ICCID, iccid(j))
		}
		return nil
	}
	missing := func(r *rand.Rand) error {
		if _, err := s.Card(ctx, missingICCID(r.IntN(b.cards))); !errors.Is(err, verifier.ErrNotFound) {
			return fmt.Errorf("a card not in the store: %v", err)
		}
		return nil
	}
	return combine(kind, card, byIMSI, missing)
}

// combine returns the lookup of a loop kind made of a card lookup, an
// IMSI lookup and a lookup of a card not in the store.
func combine(kind string, card, byIMSI, missing func(*rand.Rand) error) func(*rand.Rand) error {
	switch kind {
	case "card":
		return card
	case "imsi":
		return byIMSI
	case "missing":
		return missing
	}
	return func(r *rand.Rand) error {
		if err := card(r); err != nil {
			return err
		}
		return byIMSI(r)
	}
}

// compactAll compacts every key into the last level with raw Pebble
// (as a bulk import followed by a full compaction would leave a store)
// and reports the time and the read amplification after it.
func (b *bench) compactAll(ctx context.Context) error {
	db, err := b.openRaw()
	if err != nil {
		return err
	}
	t := time.Now()
	err = db.Compact(ctx, []byte{0}, []byte{0xff}, true)
	d := time.Since(t)
	ra := db.Metrics().ReadAmp()
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	b.report("compaction of the whole key space into the last level: %s; read amplification %d", d.Round(time.Second), ra)
	return b.disk("disk compacted")
}

// tableSizes reports the table space per key prefix.
func (b *bench) tableSizes() error {
	cache := pdb.NewCache(8 << 20)
	defer cache.Unref()
	po, err := pebble.PebbleOptions(b.opts(), cache)
	if err != nil {
		return err
	}
	db, err := pdb.Open(b.dir, po)
	if err != nil {
		return err
	}
	defer db.Close()
	var parts []string
	for _, p := range []struct {
		name     string
		prefixes string
	}{{"cards", "c"}, {"indexes", "Ii"}, {"history", "h"}} {
		var n uint64
		for _, c := range []byte(p.prefixes) {
			m, err := db.EstimateDiskUsage([]byte{c}, []byte{c + 1})
			if err != nil {
				return err
			}
			n += m
		}
		parts = append(parts, fmt.Sprintf("%s %s (%.1f bytes/card)", p.name, mib(int64(n)), float64(n)/float64(b.cards)))
	}
	b.report("tables by key prefix: %s", strings.Join(parts, ", "))
	return nil
}

// rawLookup returns the same lookups as storeLookup as raw Gets on the
// store's files, by the key layout the pebble package documents: the
// card under c <ICCID>, the IMSI index entry under I 0x01 <BCD IMSI>
// with the ICCID packed in nibbles (the store's Open has rewritten the
// string-form entries of older stores before the raw runs).
func (b *bench) rawLookup(db *pdb.DB, kind string) func(r *rand.Rand) error {
	get := func(k []byte) error {
		_, closer, err := db.Get(k)
		if err != nil {
			return fmt.Errorf("get %q: %w", k, err)
		}
		return closer.Close()
	}
	card := func(r *rand.Rand) error {
		return get(append([]byte{'c'}, iccid(r.IntN(b.cards))...))
	}
	byIMSI := func(r *rand.Rand) error {
		k := packedIMSIKey(imsi(r.IntN(b.cards)))
		v, closer, err := db.Get(k)
		if err != nil {
			return fmt.Errorf("get %q: %w", k, err)
		}
		ck := unpackICCID(make([]byte, 1, 32), v)
		ck[0] = 'c'
		closer.Close()
		return get(ck)
	}
	missing := func(r *rand.Rand) error {
		k := append([]byte{'c'}, missingICCID(r.IntN(b.cards))...)
		if _, _, err := db.Get(k); !errors.Is(err, pdb.ErrNotFound) {
			return fmt.Errorf("get %q, not in the store: %v", k, err)
		}
		return nil
	}
	return combine(kind, card, byIMSI, missing)
}

// packedIMSIKey is the packed IMSI index key: 'I', 1, the digits as
// BCD with a 0xF nibble after an odd last one.
func packedIMSIKey(m protocol.IMSI) []byte {
	k := append(make([]byte, 0, 2+(len(m)+1)/2), 'I', 1)
	for i := 0; i < len(m); i += 2 {
		lo := byte(0xF)
		if i+1 < len(m) {
			lo = m[i+1] - '0'
		}
		k = append(k, (m[i]-'0')<<4|lo)
	}
	return k
}

// unpackICCID appends to k the ICCID of a packed index value: a count
// of nibbles, then the nibbles (0-9, A-F); a count of 0, then the ICCID
// as it is.
func unpackICCID(k, v []byte) []byte {
	if v[0] == 0 {
		return append(k, v[1:]...)
	}
	for i := 0; i < int(v[0]); i++ {
		x := v[1+i/2]
		if i%2 == 0 {
			x >>= 4
		}
		k = append(k, "0123456789ABCDEF"[x&0xF])
	}
	return k
}

// disk reports the disk space of the data directory, by file type.
func (b *bench) disk(what string) error {
	by, err := du(b.dir)
	if err != nil {
		return err
	}
	total := by[".sst"] + by[".log"] + by[""]
	b.report("%s: %s (%.1f bytes/card; tables %s, WAL %s, other %s)", what, mib(total), float64(total)/float64(b.cards),
		mib(by[".sst"]), mib(by[".log"]), mib(by[""]))
	return nil
}

// du returns the disk space the files under dir use, by extension
// (.sst tables, .log write-ahead logs, "" the rest).
func du(dir string) (map[string]int64, error) {
	total := map[string]int64{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // deleted by Pebble while we walk
		}
		if err != nil {
			return err
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		ext := filepath.Ext(path)
		if ext != ".sst" && ext != ".log" {
			ext = ""
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total[ext] += st.Blocks * 512
		} else {
			total[ext] += info.Size()
		}
		return nil
	})
	return total, err
}

// cpuTime returns the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// rss returns the process's resident set size now and at its peak.
func rss() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "RSS unknown"
	}
	var cur, peak string
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			cur = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			peak = strings.TrimSpace(v)
		}
	}
	return fmt.Sprintf("RSS %s (peak %s)", cur, peak)
}

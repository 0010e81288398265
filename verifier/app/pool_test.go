package app

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/ingest"
	"github.com/cardbind/cardbind/verifier/store/pebble"
)

// Reports of many devices, handed in as the broker would (one goroutine),
// are all handled and acked, each device's in order: none is refused as a
// replay, whatever batches the checkers make and whichever workers run.
func TestPoolKeepsEachDeviceInOrder(t *testing.T) {
	tests := []struct {
		name              string
		checkers, workers int
		devices, reports  int
	}{
		{"one checker, one worker", 1, 1, 4, 20},
		{"more checkers than devices", 8, 3, 2, 50},
		{"many of each", 2, 16, 24, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			store, keys := enrolledStore(t, tt.devices)
			in := ingest.New(store, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
			p := newPool(ctx, tt.checkers, tt.workers, in, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
			var acked atomic.Int64
			for seq := 1; seq <= tt.reports; seq++ {
				for d := range keys {
					device := fmt.Sprintf("gw-%d", d)
					p.handle(device, signedReport(t, keys[d], device, uint64(seq), protocol.ReasonHeartbeat), func() { acked.Add(1) })
				}
			}
			p.close()
			want := int64(tt.devices * tt.reports)
			s := in.Stats()
			if acked.Load() != want || s.Accepted.Load() != uint64(want) || s.Replayed.Load() != 0 || s.Forged.Load() != 0 {
				t.Errorf("acked %d, accepted %d, replayed %d, forged %d; want %d acked and accepted",
					acked.Load(), s.Accepted.Load(), s.Replayed.Load(), s.Forged.Load(), want)
			}
			for d := range keys {
				dev, err := store.Device(ctx, fmt.Sprintf("gw-%d", d))
				if err != nil || dev.LastSeq != uint64(tt.reports) {
					t.Errorf("gw-%d: last seq %v (%v), want %d", d, dev, err, tt.reports)
				}
			}
		})
	}
}

// A change report watched early is handled without waiting for the queue
// (no ack: the queue's copy acks), a heartbeat is left to the queue, and
// the queued copies of both are then handled once each.
func TestPoolTakesChangesEarly(t *testing.T) {
	ctx := context.Background()
	store, keys := enrolledStore(t, 1)
	report := func(seq uint64, reason protocol.ReportReason) []byte {
		return signedReport(t, keys[0], "gw-0", seq, reason)
	}
	in := ingest.New(store, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	p := newPool(ctx, 1, 4, in, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	defer p.close()
	heartbeat, change := report(1, protocol.ReasonHeartbeat), report(2, protocol.ReasonChange)

	p.handleEarly("gw-0", heartbeat)
	p.handleEarly("gw-0", change)
	eventually(t, "the change taken early", func() bool { return in.Stats().Accepted.Load() == 1 })
	if dev, err := store.Device(ctx, "gw-0"); err != nil || dev.LastSeq != 2 {
		t.Fatalf("device after the early change: %+v, %v", dev, err)
	}
	var acked atomic.Int64
	p.handle("gw-0", heartbeat, func() { acked.Add(1) })
	p.handle("gw-0", change, func() { acked.Add(1) })
	eventually(t, "both queued copies acked", func() bool { return acked.Load() == 2 })
	s := in.Stats()
	if s.Accepted.Load() != 1 || s.Overtaken.Load() != 2 || s.Replayed.Load() != 0 {
		t.Errorf("accepted %d overtaken %d replayed %d; want 1, 2, 0", s.Accepted.Load(), s.Overtaken.Load(), s.Replayed.Load())
	}
}

// Every report is acknowledged only once its effect is durable: after a
// Sync that began after its commit (or a synced commit after it), also
// when the pool is closed with reports still in flight.
func TestPoolAcksOnlyDurableReports(t *testing.T) {
	ctx := context.Background()
	const devices, reports = 6, 40
	pebbleStore, keys := enrolledStore(t, devices)
	store := &syncWatch{Store: pebbleStore, at: map[string]int{}}
	in := ingest.New(store, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	var rounds, roundReports atomic.Int64
	onSync := func(reports int, took time.Duration) {
		rounds.Add(1)
		roundReports.Add(int64(reports))
	}
	p := newPool(ctx, 1, 3, in, slog.New(slog.NewTextHandler(io.Discard, nil)), onSync)
	var acked, early atomic.Int64
	for seq := 1; seq <= reports; seq++ {
		for d := range keys {
			device := fmt.Sprintf("gw-%d", d)
			p.handle(device, signedReport(t, keys[d], device, uint64(seq), protocol.ReasonHeartbeat), func() {
				if !store.durable(device, uint64(seq)) {
					early.Add(1)
				}
				acked.Add(1)
			})
		}
	}
	p.close()
	if acked.Load() != devices*reports || early.Load() != 0 {
		t.Errorf("acked %d of %d reports, %d of them before their commit was synced", acked.Load(), devices*reports, early.Load())
	}
	if store.lazy == 0 {
		t.Error("no commit was lazy: the test does not test what it should")
	}
	if roundReports.Load() != devices*reports || rounds.Load() != int64(store.syncs) {
		t.Errorf("onSync told of %d reports in %d rounds; want %d reports in %d rounds (the store's syncs)",
			roundReports.Load(), rounds.Load(), devices*reports, store.syncs)
	}
	t.Logf("%d lazy commits, %d syncs", store.lazy, store.syncs)
}

// syncWatch is a store that knows which device updates are durable: those
// a completed Sync, or a later synced commit, covers.
type syncWatch struct {
	*pebble.Store
	mu             sync.Mutex
	writes, synced int            // commits so far; those covered by a sync
	at             map[string]int // "device/seq" → writes after its commit
	lazy, syncs    int
}

func (w *syncWatch) Commit(ctx context.Context, c *verifier.Commit) error {
	err := w.Store.Commit(ctx, c)
	w.wrote(c, err, false)
	return err
}

func (w *syncWatch) CommitLazy(ctx context.Context, c *verifier.Commit) error {
	err := w.Store.CommitLazy(ctx, c)
	w.wrote(c, err, true)
	return err
}

func (w *syncWatch) wrote(c *verifier.Commit, err error, lazy bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		return
	}
	w.writes++
	if c.Device != nil {
		w.at[fmt.Sprintf("%s/%d", c.Device.ID, c.Device.LastSeq)] = w.writes
	}
	if lazy {
		w.lazy++
	} else {
		w.synced = w.writes
	}
}

func (w *syncWatch) Sync(ctx context.Context) error {
	w.mu.Lock()
	n := w.writes
	w.mu.Unlock()
	err := w.Store.Sync(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		w.synced = max(w.synced, n)
		w.syncs++
	}
	return err
}

func (w *syncWatch) durable(device string, seq uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.at[fmt.Sprintf("%s/%d", device, seq)]
	return ok && at <= w.synced
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// enrolledStore opens a Pebble store in a temporary directory with n
// devices enrolled, gw-0 to gw-<n-1>, and returns their keys.
func enrolledStore(t testing.TB, n int) (*pebble.Store, []ed25519.PrivateKey) {
	t.Helper()
	store, err := pebble.Open(t.TempDir(), pebble.Options{CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	keys := make([]ed25519.PrivateKey, n)
	for d := range keys {
		pub, priv, _ := ed25519.GenerateKey(nil)
		keys[d] = priv
		dev := &verifier.Device{ID: fmt.Sprintf("gw-%d", d), Tenant: "acme", PublicKey: pub, IMEI: "356938035643809"}
		if err := store.Commit(context.Background(), &verifier.Commit{Device: dev}); err != nil {
			t.Fatal(err)
		}
	}
	return store, keys
}

// signedReport returns device's encoded report seq, signed with key: the
// SIM slot empty, so that it touches no card.
func signedReport(t *testing.T, key ed25519.PrivateKey, device string, seq uint64, reason protocol.ReportReason) []byte {
	t.Helper()
	r := &protocol.Report{Version: protocol.Version, DeviceID: device, Seq: seq, Time: time.Now().UTC(), Reason: reason,
		IMEI: "356938035643809", SIM: protocol.SIMAbsent, Registration: protocol.Registration{State: protocol.RegHome, Stat: 1}}
	protocol.SignReport(key, r)
	b, err := protocol.EncodeReport(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// BenchmarkPoolHeartbeats runs signed heartbeats of bound cards at home
// through the pool over a Pebble store on disk (no broker): the
// verifier's own per-report path. Reports are signed before the clock
// starts, 102,400 of them (256 devices, each with its card): run it with
// -benchtime 60000x, say.
func BenchmarkPoolHeartbeats(b *testing.B) {
	const devices = 256
	ctx := context.Background()
	store, keys := enrolledStore(b, devices)
	payloads := make([][][]byte, devices)
	const perDevice = 400
	for d := range keys {
		device := fmt.Sprintf("gw-%d", d)
		iccid := protocol.ICCID(fmt.Sprintf("89860318640220%06d", d))
		card := &verifier.Card{ICCID: iccid, Tenant: "acme", Status: verifier.CardStatus{State: protocol.CardActive},
			Binding: &verifier.Binding{IMEIs: []protocol.IMEI{"356938035643809"}, Mode: verifier.ModeBlock, AutoResume: true}}
		if err := store.Commit(ctx, &verifier.Commit{Card: card}); err != nil {
			b.Fatal(err)
		}
		for seq := 1; seq <= perDevice; seq++ {
			r := &protocol.Report{Version: protocol.Version, DeviceID: device, Seq: uint64(seq), Time: time.Now().UTC(),
				Reason: protocol.ReasonHeartbeat, IMEI: "356938035643809", SIM: protocol.SIMPresent, ICCID: iccid,
				Registration: protocol.Registration{State: protocol.RegHome, Stat: 1}}
			protocol.SignReport(keys[d], r)
			p, err := protocol.EncodeReport(r)
			if err != nil {
				b.Fatal(err)
			}
			payloads[d] = append(payloads[d], p)
		}
	}
	in := ingest.New(store, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	p := newPool(ctx, 1, 64, in, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	defer p.close()
	var acked atomic.Int64
	sent := 0
	for b.Loop() {
		d, seq := sent%devices, sent/devices
		if seq >= perDevice {
			b.Fatalf("only %d reports are signed in advance: run with -benchtime %dx or less", devices*perDevice, devices*perDevice)
		}
		p.handle(fmt.Sprintf("gw-%d", d), payloads[d][seq], func() { acked.Add(1) })
		sent++
	}
	for acked.Load() < int64(sent) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	if s := in.Stats(); s.Accepted.Load() != uint64(sent) {
		b.Fatalf("accepted %d of %d", s.Accepted.Load(), sent)
	}
}

// gather takes what waits, up to a full batch; with fewer than enough it
// waits for more until linger has passed.
func TestGather(t *testing.T) {
	tests := []struct {
		name           string
		waiting, later int // jobs in the queue at the start, and sent 1 ms in
		enough         int
		linger         time.Duration
		min, max       int // gathered
	}{
		{"a full batch waiting", 300, 0, fullEnough, time.Hour, maxCheckBatch, maxCheckBatch},
		{"enough waiting", 20, 0, fullEnough, time.Hour, 20, 20},
		{"too few, none come", 5, 0, fullEnough, time.Millisecond, 5, 5},
		{"too few, more come", 5, 20, fullEnough, time.Hour, fullEnough, 25},
		{"busy: waits for a full batch", 100, 200, maxCheckBatch, time.Hour, maxCheckBatch, maxCheckBatch},
		{"busy: a full batch does not come", 100, 0, maxCheckBatch, 5 * time.Millisecond, 100, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := make(chan job, 4*maxCheckBatch)
			for range tt.waiting {
				q <- job{}
			}
			go func() {
				time.Sleep(time.Millisecond)
				for range tt.later {
					q <- job{}
				}
			}()
			wait := time.NewTimer(time.Hour)
			wait.Stop()
			first := <-q
			if got := len(gather(q, []job{first}, wait, tt.enough, tt.linger)); got < tt.min || got > tt.max {
				t.Errorf("gathered %d, want %d to %d", got, tt.min, tt.max)
			}
		})
	}
}

// TestSyncerPacesRounds: acks handed over continuously are synced in
// rounds at most every syncEvery, each acked after its round.
func TestSyncerPacesRounds(t *testing.T) {
	store, _ := enrolledStore(t, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var rounds atomic.Int64
	s := newSyncer(ingest.New(store, log, time.Now), log, func(int, time.Duration) { rounds.Add(1) })
	stop := make(chan struct{})
	go s.run(context.Background(), stop)
	const span = 200 * time.Millisecond
	var acked atomic.Int64
	n := int64(0)
	for start := time.Now(); time.Since(start) < span; n++ {
		s.add(func() { acked.Add(1) })
		time.Sleep(100 * time.Microsecond)
	}
	close(stop)
	<-s.done
	if acked.Load() != n {
		t.Errorf("acked %d of %d", acked.Load(), n)
	}
	if most := int64(span/syncEvery) + 2; rounds.Load() > most || rounds.Load() < 2 {
		t.Errorf("%d acks in %d sync rounds over %v; want 2 to %d rounds", n, rounds.Load(), span, most)
	}
}

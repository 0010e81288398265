package ingest

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/engine"
)

// memStore is an in-memory fake of the store with the same version rules.
type memStore struct {
	mu      sync.Mutex
	cards   map[protocol.ICCID]verifier.Card
	devices map[string]verifier.Device
	history []verifier.HistoryEntry
	outbox  []verifier.OutboxEntry
	commits int
	// lazy counts CommitLazy calls, lazyEffects those that carried a
	// history or outbox entry (which must be durable at once), syncs
	// calls to Sync.
	lazy, lazyEffects, syncs int
}

func newMemStore() *memStore {
	return &memStore{cards: map[protocol.ICCID]verifier.Card{}, devices: map[string]verifier.Device{}}
}

func (m *memStore) Card(_ context.Context, iccid protocol.ICCID) (*verifier.Card, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.cards[iccid]
	if !ok {
		return nil, verifier.ErrNotFound
	}
	// A deep copy through JSON, as a real store decodes.
	b, _ := json.Marshal(c)
	var out verifier.Card
	_ = json.Unmarshal(b, &out)
	return &out, nil
}

func (m *memStore) Device(_ context.Context, id string) (*verifier.Device, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.devices[id]
	if !ok {
		return nil, verifier.ErrNotFound
	}
	return &d, nil
}

func (m *memStore) Commit(_ context.Context, c *verifier.Commit) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c.Card != nil {
		if old, ok := m.cards[c.Card.ICCID]; (ok && old.Version != c.Card.Version) || (!ok && c.Card.Version != 0) {
			return verifier.ErrConflict
		}
	}
	if c.Device != nil {
		if old, ok := m.devices[c.Device.ID]; (ok && old.Version != c.Device.Version) || (!ok && c.Device.Version != 0) {
			return verifier.ErrConflict
		}
	}
	if c.Card != nil {
		c.Card.Version++
		m.cards[c.Card.ICCID] = *c.Card
	}
	if c.Device != nil {
		c.Device.Version++
		m.devices[c.Device.ID] = *c.Device
	}
	if c.History != nil {
		m.history = append(m.history, *c.History)
	}
	m.outbox = append(m.outbox, c.Outbox...)
	m.commits++
	return nil
}

func (m *memStore) CommitLazy(ctx context.Context, c *verifier.Commit) error {
	err := m.Commit(ctx, c)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lazy++
	if c.History != nil || len(c.Outbox) > 0 {
		m.lazyEffects++
	}
	return err
}

func (m *memStore) Sync(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.syncs++
	return nil
}

const (
	gw1IMEI protocol.IMEI  = "356938035643809"
	gw2IMEI protocol.IMEI  = "352099001761481"
	phone   protocol.IMEI  = "490154203237518"
	cardA   protocol.ICCID = "89860318640220133897"
	cardB   protocol.ICCID = "8901260886258128535"
	tenant                 = "acme"
	t0secs                 = 1_800_000_000
)

type fixture struct {
	t     *testing.T
	store *memStore
	in    *Ingest
	keys  map[string]ed25519.PrivateKey
	seq   map[string]uint64
	now   time.Time
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, store: newMemStore(), keys: map[string]ed25519.PrivateKey{}, seq: map[string]uint64{},
		now: time.Unix(t0secs, 0).UTC()}
	f.in = New(f.store, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return f.now })
	f.enroll("gw-1", gw1IMEI)
	f.enroll("gw-2", gw2IMEI)
	for _, c := range []protocol.ICCID{cardA, cardB} {
		f.store.cards[c] = verifier.Card{ICCID: c, Tenant: tenant, IMSI: "460031234567890"}
	}
	return f
}

func (f *fixture) enroll(id string, imei protocol.IMEI) {
	seed := make([]byte, ed25519.SeedSize)
	copy(seed, id)
	key := ed25519.NewKeyFromSeed(seed)
	f.keys[id] = key
	f.store.devices[id] = verifier.Device{ID: id, Tenant: tenant, PublicKey: key.Public().(ed25519.PublicKey), IMEI: imei}
}

func (f *fixture) bind(c protocol.ICCID, b *verifier.Binding) {
	card := f.store.cards[c]
	card.Binding = b
	card.Status.State = protocol.CardActive
	f.store.cards[c] = card
}

// report builds a signed report of device id holding card (empty: no SIM).
func (f *fixture) report(id string, imei protocol.IMEI, card protocol.ICCID) []byte {
	f.seq[id]++
	r := &protocol.Report{Version: 1, DeviceID: id, Seq: f.seq[id], Time: f.now, Reason: protocol.ReasonChange,
		IMEI: imei, SIM: protocol.SIMPresent, ICCID: card, Registration: protocol.Registration{State: protocol.RegHome, Stat: 1}}
	if card == "" {
		r.SIM = protocol.SIMAbsent
	}
	protocol.SignReport(f.keys[id], r)
	b, _ := protocol.EncodeReport(r)
	return b
}

func (f *fixture) handle(id string, payload []byte) {
	f.t.Helper()
	if err := f.in.HandleReport(context.Background(), id, payload); err != nil {
		f.t.Fatalf("HandleReport: %v", err)
	}
}

func (f *fixture) state(c protocol.ICCID) protocol.CardState { return f.store.cards[c].Status.State }

func (f *fixture) outboxKinds() []string {
	var out []string
	for _, e := range f.store.outbox {
		if e.Kind == verifier.OutboxEnforce {
			var task verifier.EnforceTask
			_ = json.Unmarshal(e.Payload, &task)
			out = append(out, "enforce:"+string(task.Action))
		} else {
			a, err := protocol.DecodeAlert(e.Payload)
			if err != nil {
				f.t.Fatalf("outbox alert does not decode: %v", err)
			}
			out = append(out, "alert:"+string(a.Type))
		}
	}
	return out
}

func TestSwapBlocksAndBackResumes(t *testing.T) {
	f := newFixture(t)
	f.bind(cardA, &verifier.Binding{IMEIs: []protocol.IMEI{gw1IMEI}, Mode: verifier.ModeBlock, AutoResume: true})

	f.handle("gw-1", f.report("gw-1", gw1IMEI, cardA))
	if f.state(cardA) != protocol.CardActive || len(f.store.outbox) != 0 {
		t.Fatalf("in its own gateway: state %s outbox %v", f.state(cardA), f.outboxKinds())
	}
	// Card A is moved into gateway 2: gateway 1 reports the slot empty,
	// gateway 2 reports card A.
	f.handle("gw-1", f.report("gw-1", gw1IMEI, ""))
	if f.state(cardA) != protocol.CardBlocked {
		t.Fatalf("after separation: %s", f.state(cardA))
	}
	f.handle("gw-2", f.report("gw-2", gw2IMEI, cardA))
	f.handle("gw-1", f.report("gw-1", gw1IMEI, cardA)) // back home
	if f.state(cardA) != protocol.CardActive {
		t.Fatalf("back home: %s", f.state(cardA))
	}
	want := []string{"enforce:block", "alert:separated", "alert:blocked", "alert:mismatch", "enforce:resume", "alert:resumed"}
	if got := f.outboxKinds(); !slices.Equal(got, want) {
		t.Errorf("outbox = %v\nwant     %v", got, want)
	}
	if n := len(f.store.history); n != 3 {
		t.Errorf("history has %d entries, want 3", n)
	}
	for i, h := range f.store.history {
		if h.Seq != uint64(i+1) {
			t.Errorf("history entry %d has seq %d", i, h.Seq)
		}
	}
	if got := f.store.devices["gw-1"].LastSeq; got != 3 {
		t.Errorf("gw-1 last seq = %d", got)
	}
	if f.in.Stats().Accepted.Load() != 4 {
		t.Errorf("accepted = %d", f.in.Stats().Accepted.Load())
	}
}

func TestRefusedReportsChangeNothing(t *testing.T) {
	f := newFixture(t)
	f.bind(cardA, &verifier.Binding{IMEIs: []protocol.IMEI{gw1IMEI}, Mode: verifier.ModeBlock, AutoResume: true})
	good := f.report("gw-2", gw2IMEI, cardA)
	f.handle("gw-2", good)
	if f.state(cardA) != protocol.CardBlocked {
		t.Fatalf("foreign IMEI: %s", f.state(cardA))
	}
	f.handle("gw-1", f.report("gw-1", gw1IMEI, cardA))
	if f.state(cardA) != protocol.CardActive {
		t.Fatalf("right IMEI: %s", f.state(cardA))
	}
	before := f.store.commits

	// Replayed: the genuine report of the foreign device, published again.
	f.handle("gw-2", good)
	// Forged: a report in gw-2's name signed with gw-1's key.
	f.seq["gw-2"]++
	forged := &protocol.Report{Version: 1, DeviceID: "gw-2", Seq: f.seq["gw-2"], Time: f.now, Reason: protocol.ReasonChange,
		IMEI: gw2IMEI, SIM: protocol.SIMPresent, ICCID: cardA, Registration: protocol.Registration{State: protocol.RegHome, Stat: 1}}
	protocol.SignReport(f.keys["gw-1"], forged)
	fb, _ := protocol.EncodeReport(forged)
	f.handle("gw-2", fb)
	// Published on another device's topic.
	f.handle("gw-1", f.report("gw-2", gw2IMEI, cardA))
	// Unknown device and garbage.
	f.handle("gw-9", []byte(`{"v":1}`))
	f.enroll("gw-3", phone)
	delete(f.store.devices, "gw-3")
	f.handle("gw-3", f.report("gw-3", phone, cardA))

	if f.state(cardA) != protocol.CardActive || f.store.commits != before {
		t.Errorf("refused reports changed something: state %s, %d commits", f.state(cardA), f.store.commits-before)
	}
	s := f.in.Stats()
	if s.Replayed.Load() != 1 || s.Forged.Load() != 1 || s.TopicMismatch.Load() != 1 || s.Malformed.Load() != 1 || s.UnknownDevice.Load() != 1 {
		t.Errorf("counters: replayed %d forged %d topic %d malformed %d unknown %d", s.Replayed.Load(), s.Forged.Load(),
			s.TopicMismatch.Load(), s.Malformed.Load(), s.UnknownDevice.Load())
	}
}

func TestUnknownCardAndCrossTenant(t *testing.T) {
	f := newFixture(t)
	f.handle("gw-1", f.report("gw-1", gw1IMEI, "8910042348144559361"))
	if f.in.Stats().UnknownCard.Load() != 1 || f.store.devices["gw-1"].LastSeq != 1 {
		t.Errorf("unknown card: counter %d, seq %d", f.in.Stats().UnknownCard.Load(), f.store.devices["gw-1"].LastSeq)
	}
	other := f.store.cards[cardB]
	other.Tenant = "globex"
	other.Binding = &verifier.Binding{IMEIs: []protocol.IMEI{gw2IMEI}, Mode: verifier.ModeBlock}
	other.Status.State = protocol.CardActive
	f.store.cards[cardB] = other
	f.handle("gw-1", f.report("gw-1", gw1IMEI, cardB))
	if f.state(cardB) != protocol.CardActive || f.in.Stats().CrossTenant.Load() != 1 {
		t.Errorf("another tenant's device changed the card: %s", f.state(cardB))
	}
	if f.store.devices["gw-1"].LastSeq != 2 {
		t.Errorf("seq not recorded for a genuine report: %d", f.store.devices["gw-1"].LastSeq)
	}
}

func TestDeviceFlagged(t *testing.T) {
	f := newFixture(t)
	f.bind(cardA, &verifier.Binding{IMEIs: []protocol.IMEI{gw1IMEI, phone}, Mode: verifier.ModeBlock, AutoResume: true})
	f.handle("gw-1", f.report("gw-1", phone, cardA)) // module swapped or IMEI rewritten
	if got := f.outboxKinds(); !slices.Equal(got, []string{"alert:device_flagged"}) {
		t.Errorf("outbox = %v", got)
	}
	if f.in.Stats().Flagged.Load() != 1 {
		t.Error("not counted")
	}
}

func TestNetworkObservationAndGrace(t *testing.T) {
	f := newFixture(t)
	f.bind(cardA, &verifier.Binding{IMEIs: []protocol.IMEI{gw1IMEI}, Mode: verifier.ModeBlock, Grace: time.Minute, AutoResume: true})
	obs := verifier.Observation{Kind: verifier.ObservedIn, ICCID: cardA, IMEI: phone, Source: protocol.SourceRADIUS, Time: f.now}
	out, err := f.in.Observe(context.Background(), obs, "")
	if err != nil || out.Card.Status.State != protocol.CardGrace {
		t.Fatalf("Observe: %v %v", out.Card.Status.State, err)
	}
	if err := f.in.ExpireGrace(context.Background(), cardA); err != nil || f.state(cardA) != protocol.CardGrace {
		t.Fatalf("expired early: %s %v", f.state(cardA), err)
	}
	f.now = f.now.Add(time.Minute)
	if err := f.in.ExpireGrace(context.Background(), cardA); err != nil || f.state(cardA) != protocol.CardBlocked {
		t.Fatalf("not blocked after grace: %s %v", f.state(cardA), err)
	}
	if got := f.outboxKinds(); !slices.Equal(got, []string{"alert:mismatch", "enforce:block", "alert:blocked"}) {
		t.Errorf("outbox = %v", got)
	}
}

// Outbox ids are derived from the card and its history sequence, so that a
// report processed again after a crash (before its sequence number was
// recorded) produces the same ids, which the dispatcher deduplicates.
func TestOutboxIDsStable(t *testing.T) {
	f := newFixture(t)
	f.bind(cardA, &verifier.Binding{IMEIs: []protocol.IMEI{gw1IMEI}, Mode: verifier.ModeBlock, AutoResume: true})
	f.handle("gw-2", f.report("gw-2", gw2IMEI, cardA))
	ids := map[string]bool{}
	for _, e := range f.store.outbox {
		if ids[e.ID] {
			t.Errorf("duplicate outbox id %s", e.ID)
		}
		ids[e.ID] = true
	}
	if !ids[string(cardA)+"-1-block"] || !ids[string(cardA)+"-1-mismatch"] {
		t.Errorf("ids = %v", ids)
	}
}

// cellMap is a Locator over a fixed table; fail makes it fail.
type cellMap struct {
	cells map[uint64]protocol.Location
	fail  bool
}

func (m *cellMap) Locate(_ context.Context, c *protocol.Cell) (*protocol.Location, error) {
	if m.fail {
		return nil, errors.New("cell table unavailable")
	}
	if l, ok := m.cells[c.ID]; ok {
		return &l, nil
	}
	return nil, nil
}

// An agent report naming its serving cell is placed through the locator:
// the area limit blocks the card in a cell outside its circle and resumes
// it back inside; an unknown cell changes nothing; a failing table is a
// transient error (the report is not acked, so it comes again).
func TestReportCellLocated(t *testing.T) {
	f := newFixture(t)
	locs := &cellMap{cells: map[uint64]protocol.Location{
		1: {Lat: 31.2310, Lon: 121.4740, AccuracyM: 300, Source: "cell"},
		2: {Lat: 31.4000, Lon: 121.4740, AccuracyM: 500, Source: "cell"}, // ~19 km north
	}}
	f.in.SetLocator(locs)
	f.bind(cardA, &verifier.Binding{IMEIs: []protocol.IMEI{gw1IMEI}, Mode: verifier.ModeBlock, AutoResume: true,
		Area: &verifier.Area{Lat: 31.2310, Lon: 121.4740, RadiusM: 2000}})
	inCell := func(cell uint64) []byte {
		f.seq["gw-1"]++
		r := &protocol.Report{Version: 1, DeviceID: "gw-1", Seq: f.seq["gw-1"], Time: f.now, Reason: protocol.ReasonChange,
			IMEI: gw1IMEI, SIM: protocol.SIMPresent, ICCID: cardA,
			Registration: protocol.Registration{State: protocol.RegHome, Stat: 1, Cell: &protocol.Cell{MCC: "460", MNC: "03", Area: 6699, ID: cell}}}
		protocol.SignReport(f.keys["gw-1"], r)
		b, _ := protocol.EncodeReport(r)
		return b
	}
	steps := []struct {
		cell uint64
		want protocol.CardState
	}{{1, protocol.CardActive}, {2, protocol.CardBlocked}, {9, protocol.CardBlocked}, {1, protocol.CardActive}}
	for i, s := range steps {
		f.handle("gw-1", inCell(s.cell))
		if got := f.state(cardA); got != s.want {
			t.Fatalf("step %d, cell %d: %s, want %s", i, s.cell, got, s.want)
		}
	}
	if got := strings.Join(f.outboxKinds(), " "); got != "enforce:block alert:area_exit alert:blocked enforce:resume alert:resumed" {
		t.Errorf("outbox: %s", got)
	}
	if l := f.store.cards[cardA].Status.LastLocation; l == nil || l.Lat != 31.2310 {
		t.Errorf("last location %+v", l)
	}

	locs.fail = true
	err := f.in.HandleReport(context.Background(), "gw-1", inCell(2))
	if err == nil || errors.Is(err, verifier.ErrRefused) {
		t.Errorf("a failing cell table gave %v, want a transient error", err)
	}
	if f.state(cardA) != protocol.CardActive {
		t.Errorf("a failed lookup changed the card: %s", f.state(cardA))
	}
}

// Reports checked in a batch and then handled one by one end exactly as
// when each is handled with HandleReport: same states, outbox, history
// and counters.
func TestCheckedBatchSameAsOneByOne(t *testing.T) {
	type msg struct {
		topic   string
		payload []byte
	}
	script := func(f *fixture) []msg {
		f.bind(cardA, &verifier.Binding{IMEIs: []protocol.IMEI{gw1IMEI}, Mode: verifier.ModeBlock, AutoResume: true})
		f.enroll("gw-3", phone)
		f.enroll("gw-9", phone)
		delete(f.store.devices, "gw-9")
		foreign := f.report("gw-2", gw2IMEI, cardA)
		f.seq["gw-2"]++
		forged := &protocol.Report{Version: 1, DeviceID: "gw-2", Seq: f.seq["gw-2"], Time: f.now, Reason: protocol.ReasonChange,
			IMEI: gw2IMEI, SIM: protocol.SIMPresent, ICCID: cardA, Registration: protocol.Registration{State: protocol.RegHome, Stat: 1}}
		protocol.SignReport(f.keys["gw-1"], forged)
		fb, _ := protocol.EncodeReport(forged)
		return []msg{
			{"gw-1", f.report("gw-1", gw1IMEI, cardA)},
			{"gw-2", foreign},
			{"gw-2", foreign},                          // replayed
			{"gw-2", fb},                               // forged
			{"gw-1", f.report("gw-2", gw2IMEI, cardA)}, // on another device's topic
			{"gw-9", []byte(`{"v":1}`)},                // garbage
			{"gw-9", f.report("gw-9", phone, cardA)},   // not enrolled
			{"gw-1", f.report("gw-1", gw1IMEI, cardA)}, // home again: resumed
			{"gw-3", f.report("gw-3", phone, cardB)},
		}
	}
	one := newFixture(t)
	for _, m := range script(one) {
		one.handle(m.topic, m.payload)
	}
	batched := newFixture(t)
	msgs := script(batched)
	var topics []string
	var payloads [][]byte
	for _, m := range msgs {
		topics = append(topics, m.topic)
		payloads = append(payloads, m.payload)
	}
	ctx := context.Background()
	for i, c := range batched.in.CheckBatch(ctx, topics, payloads) {
		if err := batched.in.HandleChecked(ctx, topics[i], c); err != nil {
			t.Fatalf("HandleChecked %d: %v", i, err)
		}
	}
	if got, want := batched.outboxKinds(), one.outboxKinds(); !slices.Equal(got, want) {
		t.Errorf("outbox: batched %v, one by one %v", got, want)
	}
	if len(batched.store.history) != len(one.store.history) || batched.state(cardA) != one.state(cardA) || batched.state(cardB) != one.state(cardB) {
		t.Errorf("batched: %d history entries, A %s, B %s; one by one: %d, %s, %s", len(batched.store.history),
			batched.state(cardA), batched.state(cardB), len(one.store.history), one.state(cardA), one.state(cardB))
	}
	counters := func(s *Stats) []uint64 {
		return []uint64{s.Accepted.Load(), s.Malformed.Load(), s.UnknownDevice.Load(), s.TopicMismatch.Load(),
			s.Forged.Load(), s.Replayed.Load(), s.UnknownCard.Load()}
	}
	if got, want := counters(batched.in.Stats()), counters(one.in.Stats()); !slices.Equal(got, want) {
		t.Errorf("counters (accepted malformed unknown topic forged replayed unknown-card): batched %v, one by one %v", got, want)
	}
	if one.in.Stats().Forged.Load() != 1 || one.in.Stats().Accepted.Load() != 4 {
		t.Errorf("the script does not exercise what it should: %v", counters(one.in.Stats()))
	}
}

// Through HandleChecked, a report that changes nothing anyone is told of
// is committed lazily; one that blocks, alerts or writes history is
// durable before HandleChecked returns, and so is every report through
// HandleReport. Sync reaches the store.
func TestCheckedQuietCommitsAreLazy(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.bind(cardA, &verifier.Binding{IMEIs: []protocol.IMEI{gw1IMEI}, Mode: verifier.ModeBlock, AutoResume: true})
	checked := func(id string, p []byte) {
		t.Helper()
		if err := f.in.HandleChecked(ctx, id, f.in.CheckBatch(ctx, []string{id}, [][]byte{p})[0]); err != nil {
			t.Fatalf("HandleChecked: %v", err)
		}
	}
	tests := []struct {
		name         string
		run          func()
		lazy, synced int // commits added of each kind
	}{
		{"card at home, through HandleReport", func() { f.handle("gw-1", f.report("gw-1", gw1IMEI, cardA)) }, 0, 1},
		{"card at home", func() { checked("gw-1", f.report("gw-1", gw1IMEI, cardA)) }, 1, 0},
		{"no SIM: separated, blocked", func() { checked("gw-1", f.report("gw-1", gw1IMEI, "")) }, 0, 1},
		{"unknown card: only the device's sequence", func() { checked("gw-1", f.report("gw-1", gw1IMEI, "8944500102030405060")) }, 1, 0},
		{"card back: resumed", func() { checked("gw-1", f.report("gw-1", gw1IMEI, cardA)) }, 0, 1},
		{"card in another gateway: blocked", func() { checked("gw-2", f.report("gw-2", gw2IMEI, cardA)) }, 0, 1},
		{"replayed: nothing", func() {
			f.seq["gw-1"]--
			checked("gw-1", f.report("gw-1", gw1IMEI, cardA))
		}, 0, 0},
	}
	for _, tt := range tests {
		lazy, all := f.store.lazy, f.store.commits
		tt.run()
		gotLazy := f.store.lazy - lazy
		if gotSynced := f.store.commits - all - gotLazy; gotLazy != tt.lazy || gotSynced != tt.synced {
			t.Errorf("%s: %d lazy and %d synced commits, want %d and %d", tt.name, gotLazy, gotSynced, tt.lazy, tt.synced)
		}
	}
	if f.store.lazyEffects != 0 {
		t.Errorf("%d lazy commits carried history or outbox entries", f.store.lazyEffects)
	}
	if err := f.in.Sync(ctx); err != nil || f.store.syncs != 1 {
		t.Errorf("Sync: %v, store synced %d times", err, f.store.syncs)
	}
}

// ObserveLazy commits a quiet outcome lazily and a change at once, as
// HandleChecked does; Observe commits both at once.
func TestObserveLazy(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.bind(cardA, &verifier.Binding{IMEIs: []protocol.IMEI{gw1IMEI}, Mode: verifier.ModeBlock, AutoResume: true})
	at := func(imei protocol.IMEI) verifier.Observation {
		return verifier.Observation{Kind: verifier.ObservedIn, ICCID: cardA, IMEI: imei, Source: protocol.SourceRADIUS, Time: f.now}
	}
	tests := []struct {
		name         string
		observe      func(context.Context, verifier.Observation, string) (engine.Outcome, error)
		imei         protocol.IMEI
		lazy, synced int
	}{
		{"at home", f.in.ObserveLazy, gw1IMEI, 1, 0},
		{"at home, Observe", f.in.Observe, gw1IMEI, 0, 1},
		{"in a phone: blocked", f.in.ObserveLazy, phone, 0, 1},
		{"back: resumed", f.in.ObserveLazy, gw1IMEI, 0, 1},
	}
	for _, tt := range tests {
		lazy, all := f.store.lazy, f.store.commits
		if _, err := tt.observe(ctx, at(tt.imei), ""); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		gotLazy := f.store.lazy - lazy
		if gotSynced := f.store.commits - all - gotLazy; gotLazy != tt.lazy || gotSynced != tt.synced {
			t.Errorf("%s: %d lazy and %d synced commits, want %d and %d", tt.name, gotLazy, gotSynced, tt.lazy, tt.synced)
		}
	}
	if f.store.lazyEffects != 0 {
		t.Errorf("%d lazy commits carried history or outbox entries", f.store.lazyEffects)
	}
}

// A device that enrols again between the batch check and its turn has
// its report checked again, against the key it has then.
func TestCheckedKeyChangedInBetween(t *testing.T) {
	ctx := context.Background()
	t.Run("signed with the old key", func(t *testing.T) {
		f := newFixture(t)
		p := f.report("gw-1", gw1IMEI, cardA)
		checked := f.in.CheckBatch(ctx, []string{"gw-1"}, [][]byte{p})
		dev := f.store.devices["gw-1"]
		newKey := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
		dev.PublicKey = newKey.Public().(ed25519.PublicKey)
		f.store.devices["gw-1"] = dev
		if err := f.in.HandleChecked(ctx, "gw-1", checked[0]); err != nil {
			t.Fatal(err)
		}
		if f.in.Stats().Forged.Load() != 1 || f.in.Stats().Accepted.Load() != 0 {
			t.Errorf("forged %d, accepted %d; want the report refused", f.in.Stats().Forged.Load(), f.in.Stats().Accepted.Load())
		}
	})
	t.Run("signed with the new key", func(t *testing.T) {
		f := newFixture(t)
		newKey := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
		oldKey := f.keys["gw-1"]
		f.keys["gw-1"] = newKey
		p := f.report("gw-1", gw1IMEI, cardA)
		checked := f.in.CheckBatch(ctx, []string{"gw-1"}, [][]byte{p}) // the store still has the old key
		dev := f.store.devices["gw-1"]
		if !oldKey.Public().(ed25519.PublicKey).Equal(ed25519.PublicKey(dev.PublicKey)) {
			t.Fatal("fixture: the store should hold the old key")
		}
		dev.PublicKey = newKey.Public().(ed25519.PublicKey)
		f.store.devices["gw-1"] = dev
		if err := f.in.HandleChecked(ctx, "gw-1", checked[0]); err != nil {
			t.Fatal(err)
		}
		if f.in.Stats().Accepted.Load() != 1 || f.in.Stats().Forged.Load() != 0 {
			t.Errorf("accepted %d, forged %d; want the report accepted", f.in.Stats().Accepted.Load(), f.in.Stats().Forged.Load())
		}
	})
}

// A change taken early acts at once; its queued copy, and the device's
// older reports queued before it, are overtaken: the card is decided once,
// and nothing is counted twice.
func TestEarlyChangeAndItsQueuedCopy(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.bind(cardA, &verifier.Binding{IMEIs: []protocol.IMEI{gw1IMEI}, Mode: verifier.ModeBlock, AutoResume: true})
	home := f.report("gw-1", gw1IMEI, cardA) // seq 1, still queued
	f.handle("gw-2", f.report("gw-2", gw2IMEI, cardB))
	older := f.report("gw-2", gw2IMEI, cardB) // seq 2, still queued
	swap := f.report("gw-2", gw2IMEI, cardA)  // seq 3: card A in the wrong gateway

	if err := f.in.HandleEarly(ctx, "gw-2", swap); err != nil {
		t.Fatal(err)
	}
	if f.state(cardA) != protocol.CardBlocked {
		t.Fatalf("after the early swap: %s", f.state(cardA))
	}
	// The queue catches up: gw-1's report, then gw-2's older one and the
	// swap's own copy.
	f.handle("gw-1", home)
	f.handle("gw-2", older)
	f.handle("gw-2", swap)
	s := f.in.Stats()
	if s.Overtaken.Load() != 2 || s.Replayed.Load() != 0 || s.Accepted.Load() != 3 {
		t.Errorf("overtaken %d replayed %d accepted %d; want 2, 0, 3", s.Overtaken.Load(), s.Replayed.Load(), s.Accepted.Load())
	}
	blocked := 0
	for _, h := range f.store.history {
		if h.ICCID == cardA && h.To == protocol.CardBlocked {
			blocked++
		}
	}
	if blocked != 1 {
		t.Errorf("card A blocked %d times", blocked)
	}
	// The early entry is forgotten once its copy came: a replay of the
	// swap is a replay again.
	f.handle("gw-2", swap)
	if s.Replayed.Load() != 1 {
		t.Errorf("replayed %d after the copy; want 1", s.Replayed.Load())
	}
}

// A report taken early that is refused, or that its queued copy beat,
// changes and counts nothing; its queued copy is counted as usual.
func TestEarlyRefusedIsQuiet(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.bind(cardA, &verifier.Binding{IMEIs: []protocol.IMEI{gw1IMEI}, Mode: verifier.ModeBlock, AutoResume: true})

	f.seq["gw-2"]++
	forged := &protocol.Report{Version: 1, DeviceID: "gw-2", Seq: f.seq["gw-2"], Time: f.now, Reason: protocol.ReasonChange,
		IMEI: gw2IMEI, SIM: protocol.SIMPresent, ICCID: cardA, Registration: protocol.Registration{State: protocol.RegHome, Stat: 1}}
	protocol.SignReport(f.keys["gw-1"], forged)
	fb, _ := protocol.EncodeReport(forged)
	late := f.report("gw-1", gw1IMEI, cardA)
	f.handle("gw-1", late) // the queued copy came first
	for _, m := range []struct{ topic, payload string }{
		{"gw-2", string(fb)},
		{"gw-1", string(late)},
		{"gw-2", `{"v":1}`},
		{"gw-1", string(f.report("gw-2", gw2IMEI, cardA))},
	} {
		if err := f.in.HandleEarly(ctx, m.topic, []byte(m.payload)); err != nil {
			t.Fatal(err)
		}
	}
	s := f.in.Stats()
	got := []uint64{s.Accepted.Load(), s.Forged.Load(), s.Replayed.Load(), s.Malformed.Load(), s.TopicMismatch.Load(), s.Overtaken.Load()}
	if want := []uint64{1, 0, 0, 0, 0, 0}; !slices.Equal(got, want) {
		t.Errorf("accepted forged replayed malformed topic overtaken = %v, want %v", got, want)
	}
	if f.state(cardA) != protocol.CardActive {
		t.Errorf("card A %s", f.state(cardA))
	}
	f.handle("gw-2", fb) // the forged report's queued copy is counted
	if s.Forged.Load() != 1 {
		t.Errorf("forged %d after the queued copy", s.Forged.Load())
	}
}

// Queued reports that a report taken early went ahead of are overtaken
// only if they were new: a replay of an older report, or a forged one,
// is still counted as such.
func TestEarlyDoesNotHideReplaysOrForgeries(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	old := f.report("gw-1", gw1IMEI, cardA) // seq 1
	f.handle("gw-1", old)
	f.seq["gw-1"]++ // seq 2: forged below
	forged := &protocol.Report{Version: 1, DeviceID: "gw-1", Seq: f.seq["gw-1"], Time: f.now, Reason: protocol.ReasonChange,
		IMEI: gw1IMEI, SIM: protocol.SIMPresent, ICCID: cardA, Registration: protocol.Registration{State: protocol.RegHome, Stat: 1}}
	protocol.SignReport(f.keys["gw-2"], forged)
	fb, _ := protocol.EncodeReport(forged)
	queuedNew := f.report("gw-1", gw1IMEI, cardA) // seq 3
	later := f.report("gw-1", gw1IMEI, "")        // seq 4, taken early
	if err := f.in.HandleEarly(ctx, "gw-1", later); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{old, fb, queuedNew, later} {
		f.handle("gw-1", p)
	}
	s := f.in.Stats()
	got := []uint64{s.Replayed.Load(), s.Forged.Load(), s.Overtaken.Load(), s.Accepted.Load()}
	if want := []uint64{1, 1, 2, 2}; !slices.Equal(got, want) {
		t.Errorf("replayed forged overtaken accepted = %v, want %v", got, want)
	}
}

// A change dropped from the early lane keeps the device's later reports
// from going ahead of it, until its queued copy has been handled: every
// change is applied, in order.
func TestDroppedEarlyHoldsTheDevice(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.bind(cardA, &verifier.Binding{IMEIs: []protocol.IMEI{gw1IMEI}, Mode: verifier.ModeBlock, AutoResume: true})
	f.handle("gw-1", f.report("gw-1", gw1IMEI, cardA)) // seq 1: card A in its gateway
	out := f.report("gw-1", gw1IMEI, "")               // seq 2: taken out, dropped from the early lane
	back := f.report("gw-1", gw1IMEI, cardA)           // seq 3: put back
	f.in.DropEarly("gw-1", 2)
	if err := f.in.HandleEarly(ctx, "gw-1", back); err != nil {
		t.Fatal(err)
	}
	if f.in.Stats().Accepted.Load() != 1 {
		t.Fatal("a later report went ahead of the dropped one")
	}
	f.handle("gw-1", out)
	f.handle("gw-1", back)
	if got := f.outboxKinds(); !slices.Contains(got, "alert:separated") || !slices.Contains(got, "alert:resumed") {
		t.Errorf("outbox %v: want the separation and the resume", got)
	}
	// Released: the next change is taken early again.
	again := f.report("gw-1", gw1IMEI, "")
	if err := f.in.HandleEarly(ctx, "gw-1", again); err != nil {
		t.Fatal(err)
	}
	if s := f.in.Stats(); s.Accepted.Load() != 4 || s.Overtaken.Load() != 0 {
		t.Errorf("accepted %d overtaken %d, want 4 and 0", s.Accepted.Load(), s.Overtaken.Load())
	}
}

// queueBacklog is a Backlog over payloads per device, oldest first.
type queueBacklog struct {
	reports map[string][][]byte
	err     error
	asked   int
}

func (q *queueBacklog) PendingReports(_ context.Context, device string, max int) ([][]byte, error) {
	q.asked++
	if q.err != nil {
		return nil, q.err
	}
	r := q.reports[device]
	return r[:min(len(r), max)], nil
}

// queuedSeparation returns a fixture with a queue at hand, card A bound to
// gw-1 and seen there (seq 1), and gw-1's next two reports, not handled:
// out (seq 2, the card taken out) and back (seq 3, put back).
func queuedSeparation(t *testing.T) (f *fixture, q *queueBacklog, out, back []byte) {
	f = newFixture(t)
	q = &queueBacklog{reports: map[string][][]byte{}}
	f.in.SetBacklog(q)
	f.bind(cardA, &verifier.Binding{IMEIs: []protocol.IMEI{gw1IMEI}, Mode: verifier.ModeBlock, AutoResume: true})
	f.handle("gw-1", f.report("gw-1", gw1IMEI, cardA))
	return f, q, f.report("gw-1", gw1IMEI, ""), f.report("gw-1", gw1IMEI, cardA)
}

// With the queue at hand, a report taken early first applies its
// device's reports queued before it: none is overtaken unapplied, and
// their queued copies change and count nothing more.
func TestEarlyAppliesTheDevicesQueueFirst(t *testing.T) {
	ctx := context.Background()
	f, q, out, back := queuedSeparation(t)
	q.reports["gw-1"] = [][]byte{out, back}
	if err := f.in.HandleEarly(ctx, "gw-1", back); err != nil {
		t.Fatal(err)
	}
	if got := f.outboxKinds(); !slices.Contains(got, "alert:separated") || !slices.Contains(got, "alert:resumed") {
		t.Fatalf("outbox %v: want the separation (the queued report) and the resume (the one taken early)", got)
	}
	entries := len(f.store.history)
	f.handle("gw-1", out)
	f.handle("gw-1", back)
	s := f.in.Stats()
	if s.Overtaken.Load() != 2 || s.Replayed.Load() != 0 || s.Accepted.Load() != 3 {
		t.Errorf("overtaken %d replayed %d accepted %d; want 2, 0, 3", s.Overtaken.Load(), s.Replayed.Load(), s.Accepted.Load())
	}
	if len(f.store.history) != entries {
		t.Errorf("the queued copies wrote %d more history entries", len(f.store.history)-entries)
	}
	// The next report follows the last one handled: nothing of the
	// device can wait before it, and the queue is not read.
	asked := q.asked
	if err := f.in.HandleEarly(ctx, "gw-1", f.report("gw-1", gw1IMEI, "")); err != nil {
		t.Fatal(err)
	}
	if q.asked != asked || !slices.Contains(f.outboxKinds(), "alert:separated") {
		t.Errorf("queue read %d more times; outbox %v", q.asked-asked, f.outboxKinds())
	}
}

// A report not (yet) in the queue is not taken early, and holds the
// device's later ones until its queued copy has come; a queue that cannot
// be read is an error.
func TestEarlyWaitsForTheQueue(t *testing.T) {
	ctx := context.Background()
	f, q, out, back := queuedSeparation(t)
	q.reports["gw-1"] = [][]byte{out} // back is not in the queue yet
	if err := f.in.HandleEarly(ctx, "gw-1", back); err != nil {
		t.Fatal(err)
	}
	if q.asked != backlogTries {
		t.Errorf("queue read %d times, want %d", q.asked, backlogTries)
	}
	if got := f.outboxKinds(); len(got) != 0 {
		t.Fatalf("outbox %v: nothing may be applied", got)
	}
	later := f.report("gw-1", gw1IMEI, "") // seq 4: held behind seq 3
	q.reports["gw-1"] = [][]byte{out, back, later}
	if err := f.in.HandleEarly(ctx, "gw-1", later); err != nil {
		t.Fatal(err)
	}
	if got := f.outboxKinds(); len(got) != 0 {
		t.Fatalf("outbox %v: a later report went ahead of a held one", got)
	}
	f.handle("gw-1", out)
	f.handle("gw-1", back)
	if s := f.in.Stats(); s.Accepted.Load() != 3 || s.Overtaken.Load() != 0 {
		t.Errorf("accepted %d overtaken %d, want 3 and 0", s.Accepted.Load(), s.Overtaken.Load())
	}

	q.err = errors.New("broker gone")
	again := f.report("gw-1", gw1IMEI, cardA)
	if err := f.in.HandleEarly(ctx, "gw-1", again); err == nil {
		t.Error("HandleEarly with an unreadable queue: no error")
	}
}

// A device with up to maxBacklog reports queued before a change has them
// applied first and the change taken early; with more, the change is not
// taken early (one look into the queue, no retries) and holds the
// device's later reports until its queued copy has come.
func TestEarlyBehindALongQueue(t *testing.T) {
	for _, queued := range []int{maxBacklog, maxBacklog + 1} {
		t.Run(fmt.Sprint(queued), func(t *testing.T) {
			ctx := context.Background()
			f, q, out, back := queuedSeparation(t)
			reports := [][]byte{out, back}
			for len(reports) < queued {
				reports = append(reports, f.report("gw-1", gw1IMEI, cardA))
			}
			change := f.report("gw-1", gw1IMEI, "")
			q.reports["gw-1"] = append(reports, change)
			if err := f.in.HandleEarly(ctx, "gw-1", change); err != nil {
				t.Fatal(err)
			}
			applied := f.in.Stats().Accepted.Load() - 1 // less seq 1, handled by queuedSeparation
			if queued == maxBacklog {
				if applied != uint64(queued)+1 {
					t.Errorf("applied %d reports, want the %d queued and the change", applied, queued)
				}
				return
			}
			if applied != 0 || q.asked != 1 {
				t.Errorf("applied %d reports after %d looks into the queue; want none after one", applied, q.asked)
			}
			later := f.report("gw-1", gw1IMEI, cardA)
			if err := f.in.HandleEarly(ctx, "gw-1", later); err != nil {
				t.Fatal(err)
			}
			if applied := f.in.Stats().Accepted.Load() - 1; applied != 0 {
				t.Errorf("a later report went ahead of the held change: %d applied", applied)
			}
		})
	}
}

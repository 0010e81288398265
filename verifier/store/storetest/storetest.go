// Package storetest is the conformance suite of verifier.Store: every
// implementation (Pebble today, PostgreSQL later) runs Run and must pass
// it, so the contract's semantics are checked once, the same way.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// Run runs the conformance suite; open returns a new, empty store that
// the suite closes. Times in the suite have microsecond precision (what
// PostgreSQL keeps) and are compared with Equal, so a store may return
// them in UTC.
func Run(t *testing.T, open func(t *testing.T) verifier.Store) {
	tests := []struct {
		name string
		f    func(t *testing.T, s verifier.Store)
	}{
		{"NotFound", testNotFound},
		{"RoundTrip", testRoundTrip},
		{"CommitAndVersions", testCommitAndVersions},
		{"AtomicOnConflict", testAtomicOnConflict},
		{"AtomicCreate", testAtomicCreate},
		{"CommitAll", testCommitAll},
		{"CommitAllConflict", testCommitAllConflict},
		{"CommitLazy", testCommitLazy},
		{"CanceledContext", testCanceledContext},
		{"Indexes", testIndexes},
		{"IndexMoves", testIndexMoves},
		{"UpsertInventory", testUpsertInventory},
		{"UpsertInventoryIndexes", testUpsertInventoryIndexes},
		{"History", testHistory},
		{"Grace", testGrace},
		{"Outbox", testOutbox},
		{"Records", testRecords},
		{"ConcurrentCommits", testConcurrentCommits},
		{"ConcurrentCards", testConcurrentCards},
		{"ConcurrentIndexValue", testConcurrentIndexValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			defer s.Close()
			tt.f(t, s)
		})
	}
}

var ctx = context.Background()

// t0 is the suite's clock: fixed, in microseconds.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC)

const (
	iccidA protocol.ICCID = "89860318640220133897"
	iccidB protocol.ICCID = "8901260886258128535"
)

func newCard(iccid protocol.ICCID, imsi protocol.IMSI) *verifier.Card {
	return &verifier.Card{ICCID: iccid, Tenant: "acme", IMSI: imsi, Status: verifier.CardStatus{State: protocol.CardUnbound}}
}

func mustCommit(t *testing.T, s verifier.Store, c *verifier.Commit) {
	t.Helper()
	if err := s.Commit(ctx, c); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func testNotFound(t *testing.T, s verifier.Store) {
	if _, err := s.Card(ctx, iccidA); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("Card: %v", err)
	}
	if _, err := s.FindCard(ctx, verifier.ByIMSI, "460031234567890"); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("FindCard: %v", err)
	}
	if _, err := s.Device(ctx, "gw-1"); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("Device: %v", err)
	}
	if _, err := s.GetRecord(ctx, "ns", "k"); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("GetRecord: %v", err)
	}
	if h, err := s.History(ctx, iccidA, 0, 10); err != nil || len(h) != 0 {
		t.Errorf("History: %v %v", h, err)
	}
}

func testCommitAndVersions(t *testing.T, s verifier.Store) {
	c := newCard(iccidA, "460031234567890")
	c.Binding = &verifier.Binding{IMEIs: []protocol.IMEI{"356938035643809"}, Mode: verifier.ModeBlock, AutoResume: true, Grace: time.Minute}
	mustCommit(t, s, &verifier.Commit{Card: c})
	if c.Version != 1 {
		t.Errorf("caller's version after create = %d, want 1", c.Version)
	}
	got, err := s.Card(ctx, iccidA)
	if err != nil || got.Version != 1 || got.ICCID != iccidA || got.Binding == nil || got.Binding.Grace != time.Minute ||
		got.Binding.IMEIs[0] != "356938035643809" {
		t.Fatalf("Card = %+v, %v", got, err)
	}
	// A second create of the same card conflicts.
	if err := s.Commit(ctx, &verifier.Commit{Card: newCard(iccidA, "")}); !errors.Is(err, verifier.ErrConflict) {
		t.Errorf("double create: %v", err)
	}
	// An update from the read version succeeds; a stale one conflicts.
	got.Status.State = protocol.CardActive
	stale := *got
	mustCommit(t, s, &verifier.Commit{Card: got})
	if got.Version != 2 {
		t.Errorf("version after update = %d", got.Version)
	}
	if err := s.Commit(ctx, &verifier.Commit{Card: &stale}); !errors.Is(err, verifier.ErrConflict) {
		t.Errorf("stale update: %v", err)
	}
	// Devices follow the same rule.
	d := &verifier.Device{ID: "gw-1", Tenant: "acme", IMEI: "356938035643809", PublicKey: []byte("k"), SecretHash: []byte("h")}
	mustCommit(t, s, &verifier.Commit{Device: d})
	if err := s.Commit(ctx, &verifier.Commit{Device: &verifier.Device{ID: "gw-1"}}); !errors.Is(err, verifier.ErrConflict) {
		t.Errorf("double device create: %v", err)
	}
	d.LastSeq = 7
	mustCommit(t, s, &verifier.Commit{Device: d})
	gd, err := s.Device(ctx, "gw-1")
	if err != nil || gd.LastSeq != 7 || gd.Version != 2 || string(gd.SecretHash) != "h" {
		t.Errorf("Device = %+v, %v", gd, err)
	}
}

// A Commit that fails writes nothing: not the card, not its history, not
// its outbox entries.
func testAtomicOnConflict(t *testing.T, s verifier.Store) {
	mustCommit(t, s, &verifier.Commit{Card: newCard(iccidA, ""), Device: &verifier.Device{ID: "gw-1"}})
	c, _ := s.Card(ctx, iccidA)
	c.Status.State = protocol.CardBlocked
	c.Status.Seq = 1
	err := s.Commit(ctx, &verifier.Commit{
		Card:    c,
		Device:  &verifier.Device{ID: "gw-1", Version: 9}, // stale
		History: &verifier.HistoryEntry{ICCID: iccidA, Seq: 1, Decision: protocol.DecisionMismatch},
		Outbox:  []verifier.OutboxEntry{{ID: "x-1", Kind: verifier.OutboxEnforce, Created: t0, Payload: []byte("{}")}},
	})
	if !errors.Is(err, verifier.ErrConflict) {
		t.Fatalf("stale device: %v", err)
	}
	got, _ := s.Card(ctx, iccidA)
	h, _ := s.History(ctx, iccidA, 0, 10)
	o, _ := s.PendingOutbox(ctx, verifier.OutboxEnforce, t0.Add(time.Hour), 10)
	if got.Status.State != protocol.CardUnbound || got.Version != 1 || len(h) != 0 || len(o) != 0 {
		t.Errorf("failed commit left: state %s version %d history %d outbox %d", got.Status.State, got.Version, len(h), len(o))
	}
}

func testIndexes(t *testing.T, s verifier.Store) {
	c := newCard(iccidA, "460031234567890")
	c.MSISDN = "+8613912345678"
	c.NAI = "meter-1@iot.example"
	c.IPv4 = netip.MustParseAddr("10.1.2.3")
	c.IPv6 = netip.MustParsePrefix("2001:db8:1:2::/64")
	mustCommit(t, s, &verifier.Commit{Card: c})
	for _, q := range []struct {
		by    verifier.IndexKind
		value string
	}{
		{verifier.ByIMSI, "460031234567890"}, {verifier.ByMSISDN, "+8613912345678"}, {verifier.ByNAI, "meter-1@iot.example"},
		{verifier.ByIPv4, "10.1.2.3"}, {verifier.ByIPv6, "2001:db8:1:2::/64"},
	} {
		got, err := s.FindCard(ctx, q.by, q.value)
		if err != nil || got.ICCID != iccidA {
			t.Errorf("FindCard(%s, %s) = %v, %v", q.by, q.value, got, err)
		}
	}
	// Changing a value removes the old index entry.
	c.IPv4 = netip.MustParseAddr("10.9.9.9")
	c.MSISDN = ""
	mustCommit(t, s, &verifier.Commit{Card: c})
	if _, err := s.FindCard(ctx, verifier.ByIPv4, "10.1.2.3"); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("old IP still found: %v", err)
	}
	if _, err := s.FindCard(ctx, verifier.ByMSISDN, "+8613912345678"); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("cleared MSISDN still found: %v", err)
	}
	if got, err := s.FindCard(ctx, verifier.ByIPv4, "10.9.9.9"); err != nil || got.ICCID != iccidA {
		t.Errorf("new IP: %v %v", got, err)
	}
}

// An address that moves to another card (a new data session) finds the
// new card, and the old card's later writes do not take it back.
func testIndexMoves(t *testing.T, s verifier.Store) {
	a := newCard(iccidA, "460031234567890")
	a.IPv4 = netip.MustParseAddr("10.0.0.1")
	mustCommit(t, s, &verifier.Commit{Card: a})
	b := newCard(iccidB, "460031234567891")
	b.IPv4 = netip.MustParseAddr("10.0.0.1")
	mustCommit(t, s, &verifier.Commit{Card: b})
	if got, err := s.FindCard(ctx, verifier.ByIPv4, "10.0.0.1"); err != nil || got.ICCID != iccidB {
		t.Fatalf("moved IP finds %v, %v", got, err)
	}
	a.Status.State = protocol.CardActive // A writes again without touching its IP
	mustCommit(t, s, &verifier.Commit{Card: a})
	if got, err := s.FindCard(ctx, verifier.ByIPv4, "10.0.0.1"); err != nil || got.ICCID != iccidB {
		t.Errorf("after A's write the IP finds %v, %v", got, err)
	}
	a.IPv4 = netip.Addr{} // A's session ends: B keeps the address
	mustCommit(t, s, &verifier.Commit{Card: a})
	if got, err := s.FindCard(ctx, verifier.ByIPv4, "10.0.0.1"); err != nil || got.ICCID != iccidB {
		t.Errorf("after A cleared its IP the IP finds %v, %v", got, err)
	}
}

func testUpsertInventory(t *testing.T, s verifier.Store) {
	items := []verifier.Card{
		{ICCID: iccidA, Tenant: "acme", IMSI: "460031234567890", MSISDN: "+8613912345678"},
		{ICCID: iccidB, Tenant: "acme", IMSI: "460031234567891"},
	}
	created, changed, err := s.UpsertInventory(ctx, items)
	if err != nil || created != 2 || changed != 0 {
		t.Fatalf("first upsert: %d %d %v", created, changed, err)
	}
	created, changed, err = s.UpsertInventory(ctx, items)
	if err != nil || created != 0 || changed != 0 {
		t.Errorf("same upsert again: %d %d %v", created, changed, err)
	}
	// Binding and status set since are left alone by an inventory update.
	c, _ := s.Card(ctx, iccidA)
	c.Binding = &verifier.Binding{IMEIs: []protocol.IMEI{"356938035643809"}, Mode: verifier.ModeBlock}
	c.Status.State = protocol.CardBlocked
	mustCommit(t, s, &verifier.Commit{Card: c})
	items[0].MSISDN = "+8613912345670"
	created, changed, err = s.UpsertInventory(ctx, items)
	if err != nil || created != 0 || changed != 1 {
		t.Errorf("changed upsert: %d %d %v", created, changed, err)
	}
	got, _ := s.Card(ctx, iccidA)
	if got.Binding == nil || got.Status.State != protocol.CardBlocked || got.MSISDN != "+8613912345670" || got.Version != c.Version+1 {
		t.Errorf("after upsert: %+v", got)
	}
	if f, err := s.FindCard(ctx, verifier.ByMSISDN, "+8613912345670"); err != nil || f.ICCID != iccidA {
		t.Errorf("new MSISDN index: %v %v", f, err)
	}
	if _, err := s.FindCard(ctx, verifier.ByMSISDN, "+8613912345678"); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("old MSISDN index: %v", err)
	}
	if created, changed, err := s.UpsertInventory(ctx, nil); err != nil || created+changed != 0 {
		t.Errorf("empty upsert: %v", err)
	}
}

func testHistory(t *testing.T, s verifier.Store) {
	c := newCard(iccidA, "")
	mustCommit(t, s, &verifier.Commit{Card: c})
	for seq := uint64(1); seq <= 5; seq++ {
		c.Status.Seq = seq
		mustCommit(t, s, &verifier.Commit{Card: c, History: &verifier.HistoryEntry{ICCID: iccidA, Seq: seq, Detail: fmt.Sprint("entry ", seq)}})
	}
	// Another card's history does not mix in.
	mustCommit(t, s, &verifier.Commit{Card: newCard(iccidB, ""), History: &verifier.HistoryEntry{ICCID: iccidB, Seq: 1}})
	h, err := s.History(ctx, iccidA, 0, 3)
	if err != nil || len(h) != 3 || h[0].Seq != 1 || h[2].Seq != 3 || h[1].Detail != "entry 2" {
		t.Fatalf("first page: %+v %v", h, err)
	}
	h, _ = s.History(ctx, iccidA, 3, 10)
	if len(h) != 2 || h[0].Seq != 4 || h[1].Seq != 5 {
		t.Errorf("second page: %+v", h)
	}
}

func testGrace(t *testing.T, s verifier.Store) {
	now := t0
	a := newCard(iccidA, "")
	a.Status = verifier.CardStatus{State: protocol.CardGrace, GraceUntil: now.Add(2 * time.Second)}
	b := newCard(iccidB, "")
	b.Status = verifier.CardStatus{State: protocol.CardGrace, GraceUntil: now.Add(time.Second)}
	mustCommit(t, s, &verifier.Commit{Card: a})
	mustCommit(t, s, &verifier.Commit{Card: b})
	if due, _ := s.GraceDue(ctx, now, 10); len(due) != 0 {
		t.Errorf("due early: %v", due)
	}
	if due, _ := s.GraceDue(ctx, now.Add(time.Second), 10); len(due) != 1 || due[0] != iccidB {
		t.Errorf("due at B's deadline exactly: %v (want B)", due)
	}
	due, err := s.GraceDue(ctx, now.Add(3*time.Second), 10)
	if err != nil || len(due) != 2 || due[0] != iccidB || due[1] != iccidA {
		t.Errorf("due = %v, %v (want B then A)", due, err)
	}
	if due, _ := s.GraceDue(ctx, now.Add(3*time.Second), 1); len(due) != 1 {
		t.Errorf("limit ignored: %v", due)
	}
	// A new deadline replaces the old one.
	a.Status.GraceUntil = now.Add(time.Hour)
	mustCommit(t, s, &verifier.Commit{Card: a})
	if due, _ := s.GraceDue(ctx, now.Add(3*time.Second), 10); len(due) != 1 || due[0] != iccidB {
		t.Errorf("after A's deadline moved: %v (want B only)", due)
	}
	// Leaving grace leaves the index.
	b.Status = verifier.CardStatus{State: protocol.CardBlocked, GraceUntil: b.Status.GraceUntil}
	mustCommit(t, s, &verifier.Commit{Card: b})
	if due, _ := s.GraceDue(ctx, now.Add(2*time.Hour), 10); len(due) != 1 || due[0] != iccidA {
		t.Errorf("after B left grace: %v (want A)", due)
	}
	// An inventory update leaves the grace deadline alone.
	if _, _, err := s.UpsertInventory(ctx, []verifier.Card{{ICCID: iccidA, Tenant: "other"}}); err != nil {
		t.Fatal(err)
	}
	if due, _ := s.GraceDue(ctx, now.Add(2*time.Hour), 10); len(due) != 1 || due[0] != iccidA {
		t.Errorf("after an inventory update: %v (want A)", due)
	}
}

func testOutbox(t *testing.T, s verifier.Store) {
	now := t0.Add(time.Minute)
	entries := []verifier.OutboxEntry{
		{ID: "e2", Kind: verifier.OutboxEnforce, Created: t0.Add(2 * time.Second), Payload: []byte(`"two"`)},
		{ID: "e1", Kind: verifier.OutboxEnforce, Created: t0.Add(time.Second), Payload: []byte(`"one"`)},
		{ID: "a1", Kind: verifier.OutboxAlert, Created: t0, Payload: []byte(`"alert"`)},
	}
	mustCommit(t, s, &verifier.Commit{Card: newCard(iccidA, ""), Outbox: entries})
	got, err := s.PendingOutbox(ctx, verifier.OutboxEnforce, now, 10)
	if err != nil || len(got) != 2 || got[0].ID != "e1" || got[1].ID != "e2" || string(got[0].Payload) != `"one"` {
		t.Fatalf("pending: %+v %v", got, err)
	}
	e := got[0]
	e.Attempts, e.NotBefore = 1, now.Add(time.Hour)
	if err := s.RescheduleOutbox(ctx, e); err != nil {
		t.Fatal(err)
	}
	got, _ = s.PendingOutbox(ctx, verifier.OutboxEnforce, now, 10)
	if len(got) != 1 || got[0].ID != "e2" {
		t.Errorf("after reschedule: %+v", got)
	}
	got, _ = s.PendingOutbox(ctx, verifier.OutboxEnforce, now.Add(2*time.Hour), 10)
	if len(got) != 2 || got[0].ID != "e1" || got[0].Attempts != 1 {
		t.Errorf("later: %+v", got)
	}
	for i := 0; i < 2; i++ {
		if err := s.CompleteOutbox(ctx, "e1"); err != nil {
			t.Errorf("complete #%d: %v", i+1, err)
		}
	}
	if err := s.RescheduleOutbox(ctx, e); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("reschedule of completed entry: %v", err)
	}
	got, _ = s.PendingOutbox(ctx, verifier.OutboxEnforce, now.Add(2*time.Hour), 10)
	if len(got) != 1 || got[0].ID != "e2" {
		t.Errorf("after complete: %+v", got)
	}
	if a, _ := s.PendingOutbox(ctx, verifier.OutboxAlert, now, 10); len(a) != 1 || a[0].ID != "a1" {
		t.Errorf("alerts: %+v", a)
	}
	if got, _ := s.PendingOutbox(ctx, verifier.OutboxEnforce, now, 0); len(got) != 0 {
		t.Errorf("limit 0: %+v", got)
	}
	if err := s.RescheduleOutbox(ctx, verifier.OutboxEntry{ID: "nope", Kind: verifier.OutboxEnforce}); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("reschedule of unknown entry: %v", err)
	}
	if err := s.CompleteOutbox(ctx, "nope"); err != nil {
		t.Errorf("complete of unknown entry: %v", err)
	}

	// An entry committed with a NotBefore waits for it; a reschedule
	// changes Attempts and NotBefore only.
	mustCommit(t, s, &verifier.Commit{Outbox: []verifier.OutboxEntry{
		{ID: "later", Kind: verifier.OutboxAlert, Created: now, NotBefore: now.Add(time.Minute), Payload: []byte(`"p"`)},
	}})
	if a, _ := s.PendingOutbox(ctx, verifier.OutboxAlert, now, 10); len(a) != 1 {
		t.Errorf("entry with NotBefore pending early: %+v", a)
	}
	if a, _ := s.PendingOutbox(ctx, verifier.OutboxAlert, now.Add(time.Minute), 10); len(a) != 2 || a[1].ID != "later" {
		t.Errorf("entry with NotBefore not pending at it: %+v", a)
	}
	err = s.RescheduleOutbox(ctx, verifier.OutboxEntry{ID: "later", Kind: verifier.OutboxAlert, Attempts: 3, NotBefore: now.Add(2 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := s.PendingOutbox(ctx, verifier.OutboxAlert, now.Add(2*time.Minute), 10)
	if len(a) != 2 || a[1].ID != "later" || a[1].Attempts != 3 || string(a[1].Payload) != `"p"` ||
		!a[1].Created.Equal(now) || !a[1].NotBefore.Equal(now.Add(2*time.Minute)) {
		t.Errorf("after reschedule: %+v", a)
	}
}

func testRecords(t *testing.T, s verifier.Store) {
	for _, k := range []string{"b", "a", "c"} {
		if err := s.PutRecord(ctx, "tenant", k, []byte("v"+k)); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.PutRecord(ctx, "tenantx", "z", []byte("other namespace"))
	recs, err := s.ListRecords(ctx, "tenant", "", 10)
	if err != nil || len(recs) != 3 || recs[0].Key != "a" || string(recs[2].Value) != "vc" {
		t.Fatalf("list: %+v %v", recs, err)
	}
	if recs, _ = s.ListRecords(ctx, "tenant", "a", 1); len(recs) != 1 || recs[0].Key != "b" {
		t.Errorf("paged: %+v", recs)
	}
	// A batch replaces and adds, in its namespace only.
	batch := []verifier.Record{{Key: "c", Value: []byte("vc2")}, {Key: "d", Value: []byte("vd")}}
	if err := s.PutRecords(ctx, "tenant", batch); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRecords(ctx, "tenant", nil); err != nil {
		t.Errorf("empty batch: %v", err)
	}
	if recs, _ = s.ListRecords(ctx, "tenant", "b", 10); len(recs) != 2 || string(recs[0].Value) != "vc2" || recs[1].Key != "d" {
		t.Errorf("after batch: %+v", recs)
	}
	if v, err := s.GetRecord(ctx, "tenantx", "d"); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("batch leaked into another namespace: %q %v", v, err)
	}
	if err := s.DeleteRecord(ctx, "tenant", "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRecord(ctx, "tenant", "b"); err != nil {
		t.Errorf("delete absent: %v", err)
	}
	// One-time take: of concurrent takers exactly one wins.
	_ = s.PutRecord(ctx, "token", "t1", []byte("once"))
	var wins, losses int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := s.TakeRecord(ctx, "token", "t1")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && string(v) == "once":
				wins++
			case errors.Is(err, verifier.ErrNotFound):
				losses++
			default:
				t.Errorf("take: %q %v", v, err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || losses != 7 {
		t.Errorf("wins %d losses %d", wins, losses)
	}
}

// Many writers on one card, each retrying on conflict: every successful
// commit is counted in the version and none of their history is lost.
func testConcurrentCommits(t *testing.T, s verifier.Store) {
	mustCommit(t, s, &verifier.Commit{Card: newCard(iccidA, "")})
	const writers, each = 6, 10
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				for {
					c, err := s.Card(ctx, iccidA)
					if err != nil {
						t.Error(err)
						return
					}
					c.Status.Seq++
					err = s.Commit(ctx, &verifier.Commit{Card: c, History: &verifier.HistoryEntry{ICCID: iccidA, Seq: c.Status.Seq}})
					if err == nil {
						break
					}
					if !errors.Is(err, verifier.ErrConflict) {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	c, _ := s.Card(ctx, iccidA)
	h, _ := s.History(ctx, iccidA, 0, 1000)
	if c.Version != 1+writers*each || c.Status.Seq != writers*each || len(h) != writers*each {
		t.Errorf("version %d seq %d history %d; want %d, %d, %d", c.Version, c.Status.Seq, len(h), 1+writers*each, writers*each, writers*each)
	}
}

// fullCard returns a card with every field set.
func fullCard() *verifier.Card {
	return &verifier.Card{
		ICCID: iccidA, Tenant: "acme", IMSI: "460031234567890", MSISDN: "+8613912345678", NAI: "meter-1@iot.example",
		IPv4: netip.MustParseAddr("10.1.2.3"), IPv6: netip.MustParsePrefix("2001:db8:1:2::/64"),
		Binding: &verifier.Binding{
			IMEIs: []protocol.IMEI{"356938035643809", "490154203237518"}, TAC: "35693803", Mode: verifier.ModeAlert,
			Grace: 90 * time.Second, AutoResume: true, Area: &verifier.Area{Lat: 31.2304, Lon: 121.4737, RadiusM: 1500.5},
			Created: t0, CreatedBy: "ops@acme",
		},
		Status: verifier.CardStatus{
			State: protocol.CardGrace, Reason: protocol.DecisionMismatch, Manual: true, GraceUntil: t0.Add(time.Minute),
			OffendingIMEI: "490154203237518", LastIMEI: "490154203237518", LastSource: protocol.SourceAgent,
			LastSeen: t0.Add(time.Second), LastLocation: &protocol.Location{Lat: -33.5, Lon: 151.25, AccuracyM: 12, Source: "gnss"},
			Seq: 42,
		},
	}
}

// sameCard reports whether two cards are equal, times compared with Equal.
func sameCard(a, b *verifier.Card) bool {
	norm := func(c *verifier.Card) verifier.Card {
		n := *c
		n.Status.GraceUntil = n.Status.GraceUntil.UTC()
		n.Status.LastSeen = n.Status.LastSeen.UTC()
		if c.Binding != nil {
			bd := *c.Binding
			bd.Created = bd.Created.UTC()
			n.Binding = &bd
		}
		return n
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

// Every field of a card, a device, a history entry and an outbox entry
// comes back as it was written.
func testRoundTrip(t *testing.T, s verifier.Store) {
	c := fullCard()
	d := &verifier.Device{ID: "gw-1", Tenant: "acme", PublicKey: []byte{1, 2, 3}, SecretHash: []byte{4, 5}, IMEI: "356938035643809",
		LastSeq: 9, LastICCID: iccidA, LastIMEI: "356938035643809", Enrolled: t0}
	h := &verifier.HistoryEntry{ICCID: iccidA, Seq: 42, Time: t0, Decision: protocol.DecisionMismatch, From: protocol.CardActive, To: protocol.CardGrace,
		Observed: verifier.Observation{Kind: verifier.ObservedIn, ICCID: iccidA, IMEI: "490154203237518", Source: protocol.SourceAgent, Time: t0,
			DeviceID: "gw-1", Location: &protocol.Location{Lat: 1, Lon: 2, Source: "cell"}, Ref: "gw-1/9"},
		Enforce: verifier.EnforceBlock, Alerts: []protocol.AlertType{protocol.AlertMismatch}, Detail: "grace 90s"}
	e := verifier.OutboxEntry{ID: "o-1", Kind: verifier.OutboxAlert, Created: t0, Payload: []byte(`{"x":1}`)}
	mustCommit(t, s, &verifier.Commit{Card: c, Device: d, History: h, Outbox: []verifier.OutboxEntry{e}})
	want := fullCard()
	want.Version = 1
	if got, err := s.Card(ctx, iccidA); err != nil || !sameCard(got, want) {
		t.Errorf("Card =\n%+v\nwant\n%+v (%v)", got, want, err)
	}
	if !sameCard(c, want) {
		t.Errorf("caller's card after Commit = %+v", c)
	}
	gd, err := s.Device(ctx, "gw-1")
	d.Enrolled = d.Enrolled.UTC()
	if err == nil {
		gd.Enrolled = gd.Enrolled.UTC()
	}
	if err != nil || !reflect.DeepEqual(gd, d) {
		t.Errorf("Device = %+v, want %+v (%v)", gd, d, err)
	}
	hs, err := s.History(ctx, iccidA, 0, 10)
	if err != nil || len(hs) != 1 || !hs[0].Time.Equal(t0) || !hs[0].Observed.Time.Equal(t0) {
		t.Fatalf("History = %+v, %v", hs, err)
	}
	hs[0].Time, hs[0].Observed.Time = h.Time, h.Observed.Time
	if !reflect.DeepEqual(hs[0], *h) {
		t.Errorf("History[0] = %+v, want %+v", hs[0], *h)
	}
	o, err := s.PendingOutbox(ctx, verifier.OutboxAlert, t0, 10)
	if err != nil || len(o) != 1 || o[0].ID != "o-1" || o[0].Kind != verifier.OutboxAlert || !o[0].Created.Equal(t0) || string(o[0].Payload) != `{"x":1}` {
		t.Errorf("PendingOutbox = %+v, %v", o, err)
	}
	// A card with nothing but its key round-trips too.
	mustCommit(t, s, &verifier.Commit{Card: &verifier.Card{ICCID: iccidB}})
	if got, err := s.Card(ctx, iccidB); err != nil || !sameCard(got, &verifier.Card{ICCID: iccidB, Version: 1}) {
		t.Errorf("bare card = %+v, %v", got, err)
	}
}

// A new card committed with a stale device is not created, nor indexed.
func testAtomicCreate(t *testing.T, s verifier.Store) {
	mustCommit(t, s, &verifier.Commit{Device: &verifier.Device{ID: "gw-1"}})
	c := newCard(iccidA, "460031234567890")
	c.Status.Seq = 1
	err := s.Commit(ctx, &verifier.Commit{
		Card:    c,
		Device:  &verifier.Device{ID: "gw-1", Version: 0}, // exists: a create conflicts
		History: &verifier.HistoryEntry{ICCID: iccidA, Seq: 1},
		Outbox:  []verifier.OutboxEntry{{ID: "x-1", Kind: verifier.OutboxAlert, Created: t0}},
	})
	if !errors.Is(err, verifier.ErrConflict) {
		t.Fatalf("double device create: %v", err)
	}
	if c.Version != 0 {
		t.Errorf("caller's card version after a failed commit = %d", c.Version)
	}
	if _, err := s.Card(ctx, iccidA); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("card stored: %v", err)
	}
	if _, err := s.FindCard(ctx, verifier.ByIMSI, "460031234567890"); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("index stored: %v", err)
	}
	if h, _ := s.History(ctx, iccidA, 0, 10); len(h) != 0 {
		t.Errorf("history stored: %+v", h)
	}
	if o, _ := s.PendingOutbox(ctx, verifier.OutboxAlert, t0, 10); len(o) != 0 {
		t.Errorf("outbox stored: %+v", o)
	}
	// An update of a card that does not exist conflicts.
	c.Version = 3
	if err := s.Commit(ctx, &verifier.Commit{Card: c}); !errors.Is(err, verifier.ErrConflict) {
		t.Errorf("update of absent card: %v", err)
	}
	if err := s.Commit(ctx, &verifier.Commit{Device: &verifier.Device{ID: "gw-2", Version: 1}}); !errors.Is(err, verifier.ErrConflict) {
		t.Errorf("update of absent device: %v", err)
	}
}

// CommitLazy follows Commit's rules, and what it wrote is read back at
// once, before any Sync. (That a crash loses it only with what came after
// is each implementation's own test: it needs a crash.)
func testCommitLazy(t *testing.T, s verifier.Store) {
	c := newCard(iccidA, "460031234567890")
	d := &verifier.Device{ID: "gw-1", Tenant: "acme", LastSeq: 1}
	if err := s.CommitLazy(ctx, &verifier.Commit{Card: c, Device: d}); err != nil {
		t.Fatalf("CommitLazy: %v", err)
	}
	if c.Version != 1 || d.Version != 1 {
		t.Errorf("caller's versions after a lazy create: card %d, device %d; want 1, 1", c.Version, d.Version)
	}
	got, err := s.FindCard(ctx, verifier.ByIMSI, "460031234567890")
	if err != nil || got.ICCID != iccidA || got.Version != 1 {
		t.Fatalf("FindCard after CommitLazy = %+v, %v", got, err)
	}
	stale := *d
	d.LastSeq = 2
	if err := s.CommitLazy(ctx, &verifier.Commit{Device: d}); err != nil {
		t.Fatalf("CommitLazy update: %v", err)
	}
	if err := s.CommitLazy(ctx, &verifier.Commit{Device: &stale}); !errors.Is(err, verifier.ErrConflict) {
		t.Errorf("stale lazy update: %v, want ErrConflict", err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if gd, err := s.Device(ctx, "gw-1"); err != nil || gd.LastSeq != 2 || gd.Version != 2 {
		t.Errorf("Device = %+v, %v; want LastSeq 2, Version 2", gd, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.CommitLazy(cctx, &verifier.Commit{Card: newCard(iccidB, "")}); err == nil {
		t.Error("CommitLazy under a canceled context succeeded")
	}
	if err := s.Sync(cctx); err == nil {
		t.Error("Sync under a canceled context succeeded")
	}
	if _, err := s.Card(ctx, iccidB); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("card %s: %v", iccidB, err)
	}
}

// A write under a canceled context fails and writes nothing.
func testCanceledContext(t *testing.T, s verifier.Store) {
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Commit(cctx, &verifier.Commit{Card: newCard(iccidA, "")}); err == nil {
		t.Error("Commit under a canceled context succeeded")
	}
	if _, _, err := s.UpsertInventory(cctx, []verifier.Card{{ICCID: iccidB}}); err == nil {
		t.Error("UpsertInventory under a canceled context succeeded")
	}
	for _, iccid := range []protocol.ICCID{iccidA, iccidB} {
		if _, err := s.Card(ctx, iccid); !errors.Is(err, verifier.ErrNotFound) {
			t.Errorf("card %s: %v", iccid, err)
		}
	}
}

// Inventory updates keep the indexes: a value that changes leaves its
// old key, an IMSI re-assigned to another card moves, and two cards may
// swap values in one call.
func testUpsertInventoryIndexes(t *testing.T, s verifier.Store) {
	const x, y, z = "460030000000001", "460030000000002", "460030000000003"
	mustUpsert := func(items ...verifier.Card) {
		t.Helper()
		if _, _, err := s.UpsertInventory(ctx, items); err != nil {
			t.Fatal(err)
		}
	}
	finds := func(value string, want protocol.ICCID) {
		t.Helper()
		got, err := s.FindCard(ctx, verifier.ByIMSI, value)
		switch {
		case want == "" && !errors.Is(err, verifier.ErrNotFound):
			t.Errorf("FindCard(%s) = %v, %v; want not found", value, got, err)
		case want != "" && (err != nil || got.ICCID != want):
			t.Errorf("FindCard(%s) = %v, %v; want %s", value, got, err, want)
		}
	}
	mustUpsert(verifier.Card{ICCID: iccidA, Tenant: "acme", IMSI: x}, verifier.Card{ICCID: iccidB, Tenant: "acme", IMSI: y})
	finds(x, iccidA)
	finds(y, iccidB)
	// Swap in one call.
	mustUpsert(verifier.Card{ICCID: iccidA, Tenant: "acme", IMSI: y}, verifier.Card{ICCID: iccidB, Tenant: "acme", IMSI: x})
	finds(x, iccidB)
	finds(y, iccidA)
	// A's IMSI is given to B: B holds it, and A's next change of IMSI
	// does not take it from B.
	mustUpsert(verifier.Card{ICCID: iccidB, Tenant: "acme", IMSI: y})
	finds(y, iccidB)
	finds(x, "")
	mustUpsert(verifier.Card{ICCID: iccidA, Tenant: "acme", IMSI: z})
	finds(y, iccidB)
	finds(z, iccidA)
	// A repeated ICCID in one call: the last item wins, one version step.
	before, _ := s.Card(ctx, iccidA)
	created, changed, err := s.UpsertInventory(ctx, []verifier.Card{
		{ICCID: iccidA, Tenant: "acme", IMSI: x}, {ICCID: iccidA, Tenant: "acme", IMSI: z, NAI: "a@iot"},
	})
	if err != nil || created != 0 || changed != 1 {
		t.Errorf("repeated item: %d %d %v", created, changed, err)
	}
	finds(x, "")
	finds(z, iccidA)
	if got, _ := s.Card(ctx, iccidA); got.NAI != "a@iot" || got.Version != before.Version+1 {
		t.Errorf("after repeated item: %+v", got)
	}
	// Inventory leaves the addresses (and their indexes) alone.
	c, _ := s.Card(ctx, iccidA)
	c.IPv4 = netip.MustParseAddr("10.0.0.7")
	mustCommit(t, s, &verifier.Commit{Card: c})
	mustUpsert(verifier.Card{ICCID: iccidA, Tenant: "acme", IMSI: x})
	if got, err := s.FindCard(ctx, verifier.ByIPv4, "10.0.0.7"); err != nil || got.ICCID != iccidA || got.IMSI != x {
		t.Errorf("IPv4 after inventory update: %+v %v", got, err)
	}
}

// Writers on different cards do not lose each other's writes.
func testConcurrentCards(t *testing.T, s verifier.Store) {
	const cards, each = 8, 5
	iccid := func(i int) protocol.ICCID { return protocol.ICCID(fmt.Sprintf("8986031864022013%04d", i)) }
	var wg sync.WaitGroup
	for i := 0; i < cards; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newCard(iccid(i), protocol.IMSI(fmt.Sprintf("46003000000%04d", i)))
			for seq := uint64(1); seq <= each; seq++ {
				c.Status.Seq = seq
				err := s.Commit(ctx, &verifier.Commit{Card: c, History: &verifier.HistoryEntry{ICCID: c.ICCID, Seq: seq},
					Outbox: []verifier.OutboxEntry{{ID: fmt.Sprintf("%s/%d", c.ICCID, seq), Kind: verifier.OutboxAlert, Created: t0}}})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for i := 0; i < cards; i++ {
		c, err := s.FindCard(ctx, verifier.ByIMSI, fmt.Sprintf("46003000000%04d", i))
		if err != nil || c.ICCID != iccid(i) || c.Version != each || c.Status.Seq != each {
			t.Errorf("card %d: %+v %v", i, c, err)
		}
		if h, _ := s.History(ctx, iccid(i), 0, 100); len(h) != each {
			t.Errorf("card %d: %d history entries", i, len(h))
		}
	}
	if o, _ := s.PendingOutbox(ctx, verifier.OutboxAlert, t0, 1000); len(o) != cards*each {
		t.Errorf("%d outbox entries, want %d", len(o), cards*each)
	}
}

// Cards that take and release the same address concurrently (sessions
// coming and going) never lose the index of a card that takes it: in each
// round the card the address points at releases it while the others
// take it, and afterwards it must point at one of the takers.
func testConcurrentIndexValue(t *testing.T, s verifier.Store) {
	const cards, rounds = 4, 40
	addr := netip.MustParseAddr("10.20.30.40")
	cs := make([]*verifier.Card, cards)
	for i := range cs {
		cs[i] = newCard(protocol.ICCID(fmt.Sprintf("8986031864022014%04d", i)), "")
		cs[i].IPv4 = addr
		mustCommit(t, s, &verifier.Commit{Card: cs[i]})
	}
	for r := 0; r < rounds; r++ {
		holder, err := s.FindCard(ctx, verifier.ByIPv4, addr.String())
		if err != nil {
			t.Fatalf("round %d: FindCard: %v", r, err)
		}
		for _, c := range cs { // the others let go of their stale claims
			if c.ICCID != holder.ICCID && c.IPv4.IsValid() {
				c.IPv4 = netip.Addr{}
				mustCommit(t, s, &verifier.Commit{Card: c})
			}
		}
		var wg sync.WaitGroup
		for _, c := range cs {
			if c.ICCID == holder.ICCID {
				c.IPv4 = netip.Addr{}
			} else {
				c.IPv4 = addr
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.Commit(ctx, &verifier.Commit{Card: c}); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		got, err := s.FindCard(ctx, verifier.ByIPv4, addr.String())
		if err != nil || got.ICCID == holder.ICCID || got.IPv4 != addr {
			t.Fatalf("round %d: %s released the address, the others took it; FindCard = %+v, %v", r, holder.ICCID, got, err)
		}
	}
}

// CommitAll writes many commits at once, each with Commit's effects.
func testCommitAll(t *testing.T, s verifier.Store) {
	if err := s.CommitAll(ctx, nil); err != nil {
		t.Fatalf("no commits: %v", err)
	}
	a := newCard(iccidA, "460031234567890")
	mustCommit(t, s, &verifier.Commit{Card: a})
	a.Status.State, a.Status.Seq = protocol.CardBlocked, 1
	b := newCard(iccidB, "460031234567891")
	b.Binding = &verifier.Binding{IMEIs: []protocol.IMEI{"356938035643809"}, Mode: verifier.ModeBlock, AutoResume: true}
	b.Status.State, b.Status.Seq = protocol.CardActive, 1
	d := &verifier.Device{ID: "gw-1", Tenant: "acme"}
	cs := []*verifier.Commit{
		{Card: a, History: &verifier.HistoryEntry{ICCID: iccidA, Seq: 1, Time: t0, Decision: protocol.DecisionMismatch},
			Outbox: []verifier.OutboxEntry{{ID: "a-1", Kind: verifier.OutboxEnforce, Created: t0, Payload: []byte("{}")}}},
		{Card: b, History: &verifier.HistoryEntry{ICCID: iccidB, Seq: 1, Time: t0, Decision: protocol.DecisionAdmin}, Device: d},
	}
	if err := s.CommitAll(ctx, cs); err != nil {
		t.Fatalf("CommitAll: %v", err)
	}
	if a.Version != 2 || b.Version != 1 || d.Version != 1 {
		t.Errorf("callers' versions after CommitAll: card A %d, card B %d, device %d; want 2, 1, 1", a.Version, b.Version, d.Version)
	}
	ga, errA := s.Card(ctx, iccidA)
	gb, errB := s.Card(ctx, iccidB)
	if errA != nil || errB != nil || ga.Version != 2 || ga.Status.State != protocol.CardBlocked || gb.Version != 1 || gb.Binding == nil {
		t.Fatalf("cards after CommitAll: %+v %v, %+v %v", ga, errA, gb, errB)
	}
	if c, err := s.FindCard(ctx, verifier.ByIMSI, "460031234567891"); err != nil || c.ICCID != iccidB {
		t.Errorf("index of a card created by CommitAll: %+v, %v", c, err)
	}
	// Cards reads many in the order asked, nil for one that does not exist.
	const absent protocol.ICCID = "89860318640220133905"
	many, err := s.Cards(ctx, []protocol.ICCID{iccidB, absent, iccidA, iccidB})
	if err != nil || len(many) != 4 || many[0] == nil || many[0].ICCID != iccidB || many[1] != nil ||
		many[2] == nil || many[2].Version != 2 || many[3] == nil || many[3].ICCID != iccidB {
		t.Errorf("Cards: %+v, %v", many, err)
	}
	if none, err := s.Cards(ctx, nil); err != nil || len(none) != 0 {
		t.Errorf("Cards(nil): %+v, %v", none, err)
	}
	ha, _ := s.History(ctx, iccidA, 0, 10)
	hb, _ := s.History(ctx, iccidB, 0, 10)
	o, _ := s.PendingOutbox(ctx, verifier.OutboxEnforce, t0.Add(time.Hour), 10)
	gd, errD := s.Device(ctx, "gw-1")
	if len(ha) != 1 || len(hb) != 1 || len(o) != 1 || o[0].ID != "a-1" || errD != nil || gd.Version != 1 {
		t.Errorf("after CommitAll: history %d and %d, outbox %+v, device %+v %v", len(ha), len(hb), o, gd, errD)
	}
}

// A CommitAll with one stale card writes none of its commits, and one
// that names a card twice is refused without being a conflict.
func testCommitAllConflict(t *testing.T, s verifier.Store) {
	a := newCard(iccidA, "460031234567890")
	mustCommit(t, s, &verifier.Commit{Card: a})
	stale := *a
	a.Status.State = protocol.CardActive
	mustCommit(t, s, &verifier.Commit{Card: a}) // now version 2
	b := newCard(iccidB, "460031234567891")
	stale.Status.State = protocol.CardBlocked
	stale.IMSI = "460031234567899"
	err := s.CommitAll(ctx, []*verifier.Commit{
		{Card: b, History: &verifier.HistoryEntry{ICCID: iccidB, Seq: 1, Time: t0},
			Outbox: []verifier.OutboxEntry{{ID: "b-1", Kind: verifier.OutboxEnforce, Created: t0, Payload: []byte("{}")}}},
		{Card: &stale, History: &verifier.HistoryEntry{ICCID: iccidA, Seq: 1, Time: t0}},
	})
	if !errors.Is(err, verifier.ErrConflict) {
		t.Fatalf("CommitAll with a stale card: %v, want ErrConflict", err)
	}
	if b.Version != 0 || stale.Version != 1 {
		t.Errorf("callers' versions after a failed CommitAll: %d and %d, want 0 and 1", b.Version, stale.Version)
	}
	if _, err := s.Card(ctx, iccidB); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("a failed CommitAll created card B: %v", err)
	}
	if _, err := s.FindCard(ctx, verifier.ByIMSI, "460031234567891"); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("a failed CommitAll indexed card B: %v", err)
	}
	got, _ := s.Card(ctx, iccidA)
	ha, _ := s.History(ctx, iccidA, 0, 10)
	hb, _ := s.History(ctx, iccidB, 0, 10)
	o, _ := s.PendingOutbox(ctx, verifier.OutboxEnforce, t0.Add(time.Hour), 10)
	if got.Version != 2 || got.Status.State != protocol.CardActive || got.IMSI != "460031234567890" || len(ha)+len(hb)+len(o) != 0 {
		t.Errorf("a failed CommitAll left: card A %+v, history %d and %d, outbox %d", got, len(ha), len(hb), len(o))
	}

	// The same card twice in one call.
	c1, c2 := *got, *got
	err = s.CommitAll(ctx, []*verifier.Commit{{Card: &c1}, {Card: &c2}})
	if err == nil || errors.Is(err, verifier.ErrConflict) {
		t.Errorf("CommitAll naming a card twice: %v, want an error other than ErrConflict", err)
	}
	if g, _ := s.Card(ctx, iccidA); g.Version != 2 {
		t.Errorf("CommitAll naming a card twice wrote it: version %d", g.Version)
	}
}

// Package storetest is the conformance suite of verifier.Store: every
// implementation (Pebble today, PostgreSQL later) runs Run and must pass
// it, so the contract's semantics are checked once, the same way.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// Run runs the conformance suite; open returns a new, empty store that
// the suite closes.
func Run(t *testing.T, open func(t *testing.T) verifier.Store) {
	tests := []struct {
		name string
		f    func(t *testing.T, s verifier.Store)
	}{
		{"NotFound", testNotFound},
		{"CommitAndVersions", testCommitAndVersions},
		{"AtomicOnConflict", testAtomicOnConflict},
		{"Indexes", testIndexes},
		{"IndexMoves", testIndexMoves},
		{"UpsertInventory", testUpsertInventory},
		{"History", testHistory},
		{"Grace", testGrace},
		{"Outbox", testOutbox},
		{"Records", testRecords},
		{"ConcurrentCommits", testConcurrentCommits},
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
		Outbox:  []verifier.OutboxEntry{{ID: "x-1", Kind: verifier.OutboxEnforce, Created: time.Now(), Payload: []byte("{}")}},
	})
	if !errors.Is(err, verifier.ErrConflict) {
		t.Fatalf("stale device: %v", err)
	}
	got, _ := s.Card(ctx, iccidA)
	h, _ := s.History(ctx, iccidA, 0, 10)
	o, _ := s.PendingOutbox(ctx, verifier.OutboxEnforce, time.Now().Add(time.Hour), 10)
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
	now := time.Now()
	a := newCard(iccidA, "")
	a.Status = verifier.CardStatus{State: protocol.CardGrace, GraceUntil: now.Add(2 * time.Second)}
	b := newCard(iccidB, "")
	b.Status = verifier.CardStatus{State: protocol.CardGrace, GraceUntil: now.Add(time.Second)}
	mustCommit(t, s, &verifier.Commit{Card: a})
	mustCommit(t, s, &verifier.Commit{Card: b})
	if due, _ := s.GraceDue(ctx, now, 10); len(due) != 0 {
		t.Errorf("due early: %v", due)
	}
	due, err := s.GraceDue(ctx, now.Add(3*time.Second), 10)
	if err != nil || len(due) != 2 || due[0] != iccidB || due[1] != iccidA {
		t.Errorf("due = %v, %v (want B then A)", due, err)
	}
	if due, _ := s.GraceDue(ctx, now.Add(3*time.Second), 1); len(due) != 1 {
		t.Errorf("limit ignored: %v", due)
	}
	b.Status = verifier.CardStatus{State: protocol.CardBlocked}
	mustCommit(t, s, &verifier.Commit{Card: b})
	if due, _ := s.GraceDue(ctx, now.Add(3*time.Second), 10); len(due) != 1 || due[0] != iccidA {
		t.Errorf("after B left grace: %v", due)
	}
}

func testOutbox(t *testing.T, s verifier.Store) {
	t0 := time.Now().Add(-time.Minute)
	entries := []verifier.OutboxEntry{
		{ID: "e2", Kind: verifier.OutboxEnforce, Created: t0.Add(2 * time.Second), Payload: []byte(`"two"`)},
		{ID: "e1", Kind: verifier.OutboxEnforce, Created: t0.Add(time.Second), Payload: []byte(`"one"`)},
		{ID: "a1", Kind: verifier.OutboxAlert, Created: t0, Payload: []byte(`"alert"`)},
	}
	mustCommit(t, s, &verifier.Commit{Card: newCard(iccidA, ""), Outbox: entries})
	got, err := s.PendingOutbox(ctx, verifier.OutboxEnforce, time.Now(), 10)
	if err != nil || len(got) != 2 || got[0].ID != "e1" || got[1].ID != "e2" || string(got[0].Payload) != `"one"` {
		t.Fatalf("pending: %+v %v", got, err)
	}
	e := got[0]
	e.Attempts, e.NotBefore = 1, time.Now().Add(time.Hour)
	if err := s.RescheduleOutbox(ctx, e); err != nil {
		t.Fatal(err)
	}
	got, _ = s.PendingOutbox(ctx, verifier.OutboxEnforce, time.Now(), 10)
	if len(got) != 1 || got[0].ID != "e2" {
		t.Errorf("after reschedule: %+v", got)
	}
	got, _ = s.PendingOutbox(ctx, verifier.OutboxEnforce, time.Now().Add(2*time.Hour), 10)
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
	got, _ = s.PendingOutbox(ctx, verifier.OutboxEnforce, time.Now().Add(2*time.Hour), 10)
	if len(got) != 1 || got[0].ID != "e2" {
		t.Errorf("after complete: %+v", got)
	}
	if a, _ := s.PendingOutbox(ctx, verifier.OutboxAlert, time.Now(), 10); len(a) != 1 || a[0].ID != "a1" {
		t.Errorf("alerts: %+v", a)
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

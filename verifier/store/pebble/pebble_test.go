package pebble

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/store/storetest"
)

var ctx = context.Background()

func open(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) verifier.Store { return open(t, t.TempDir()) })
}

// Everything written is there after Close and Open.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := &verifier.Card{ICCID: "89860318640220133897", Tenant: "acme", IMSI: "460031234567890", MSISDN: "+8613912345678",
		IPv4:    netip.MustParseAddr("10.1.2.3"),
		Binding: &verifier.Binding{IMEIs: []protocol.IMEI{"356938035643809"}, Mode: verifier.ModeBlock, AutoResume: true},
		Status:  verifier.CardStatus{State: protocol.CardGrace, GraceUntil: t0, Seq: 1}}
	err := s.Commit(ctx, &verifier.Commit{
		Card:    c,
		History: &verifier.HistoryEntry{ICCID: c.ICCID, Seq: 1, Decision: protocol.DecisionMismatch},
		Outbox:  []verifier.OutboxEntry{{ID: "e1", Kind: verifier.OutboxEnforce, Created: t0, Payload: []byte(`{}`)}},
		Device:  &verifier.Device{ID: "gw-1", Tenant: "acme", LastSeq: 5},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutRecord(ctx, "tenant", "acme", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	s = open(t, dir)
	defer s.Close()
	if got, err := s.FindCard(ctx, verifier.ByIPv4, "10.1.2.3"); err != nil || got.Version != 1 || got.Binding == nil || got.MSISDN != c.MSISDN {
		t.Errorf("card after reopen: %+v, %v", got, err)
	}
	if h, err := s.History(ctx, c.ICCID, 0, 10); err != nil || len(h) != 1 {
		t.Errorf("history after reopen: %+v, %v", h, err)
	}
	if o, err := s.PendingOutbox(ctx, verifier.OutboxEnforce, t0, 10); err != nil || len(o) != 1 {
		t.Errorf("outbox after reopen: %+v, %v", o, err)
	}
	if due, err := s.GraceDue(ctx, t0, 10); err != nil || len(due) != 1 {
		t.Errorf("grace after reopen: %v, %v", due, err)
	}
	if d, err := s.Device(ctx, "gw-1"); err != nil || d.LastSeq != 5 || d.Version != 1 {
		t.Errorf("device after reopen: %+v, %v", d, err)
	}
	if v, err := s.GetRecord(ctx, "tenant", "acme"); err != nil || string(v) != "v" {
		t.Errorf("record after reopen: %q, %v", v, err)
	}
}

// FindCard compares addresses and prefixes in canonical form.
func TestFindCardCanonical(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	c := &verifier.Card{ICCID: "89860318640220133897", IPv4: netip.MustParseAddr("10.1.2.3"), IPv6: netip.MustParsePrefix("2001:db8:1:2::/64")}
	if err := s.Commit(ctx, &verifier.Commit{Card: c}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		by    verifier.IndexKind
		value string
		found bool
	}{
		{verifier.ByIPv4, "10.1.2.3", true},
		{verifier.ByIPv6, "2001:db8:1:2::/64", true},
		{verifier.ByIPv6, "2001:DB8:1:2:0:0:0:0/64", true},
		{verifier.ByIPv6, "2001:db8:1:2::99/64", true}, // masked
		{verifier.ByIPv6, "2001:db8:1:3::/64", false},
		{verifier.ByIPv6, "2001:db8:1:2::/56", false},
		{verifier.ByIPv4, "10.1.2.4", false},
		{verifier.ByIPv4, "", false},
	}
	for _, tt := range tests {
		got, err := s.FindCard(ctx, tt.by, tt.value)
		if tt.found != (err == nil) || (err != nil && !errors.Is(err, verifier.ErrNotFound)) || (err == nil && got.ICCID != c.ICCID) {
			t.Errorf("FindCard(%s, %q) = %v, %v; found want %v", tt.by, tt.value, got, err, tt.found)
		}
	}
	if _, err := s.FindCard(ctx, "imei", "356938035643809"); err == nil || errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("unknown index kind: %v", err)
	}
}

func TestOpenBadCompression(t *testing.T) {
	if _, err := Open(t.TempDir(), Options{Compression: "lz4"}); err == nil {
		t.Error("unknown compression accepted")
	}
}

// Benchmarks run on a store of benchCards cards.
const benchCards = 100_000

func benchICCID(i int) protocol.ICCID { return protocol.ICCID(fmt.Sprintf("898603%014d", i)) }
func benchIMSI(i int) protocol.IMSI   { return protocol.IMSI(fmt.Sprintf("46003%010d", i)) }

func benchStore(b *testing.B) *Store {
	b.Helper()
	s := open(b, b.TempDir())
	b.Cleanup(func() { _ = s.Close() })
	items := make([]verifier.Card, 0, 1000)
	for i := 0; i < benchCards; i++ {
		items = append(items, verifier.Card{ICCID: benchICCID(i), Tenant: "acme", IMSI: benchIMSI(i), MSISDN: protocol.MSISDN(fmt.Sprintf("+86139%08d", i))})
		if len(items) == cap(items) {
			if _, _, err := s.UpsertInventory(ctx, items); err != nil {
				b.Fatal(err)
			}
			items = items[:0]
		}
	}
	return s
}

func BenchmarkCard(b *testing.B) {
	s := benchStore(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i = (i + 7919) % benchCards
			if _, err := s.Card(ctx, benchICCID(i)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkFindCard(b *testing.B) {
	s := benchStore(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i = (i + 7919) % benchCards
			if _, err := s.FindCard(ctx, verifier.ByIMSI, string(benchIMSI(i))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkCommit commits a state change with a history entry and an
// outbox entry to distinct cards from 32 goroutines per CPU (synced;
// they share fsyncs through group commit, as the ingest's workers do).
func BenchmarkCommit(b *testing.B) {
	s := benchStore(b)
	var next atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := int(next.Add(1))
			i := n % benchCards
			c, err := s.Card(ctx, benchICCID(i))
			if err != nil {
				b.Error(err)
				return
			}
			c.Status.State, c.Status.Seq = protocol.CardActive, c.Status.Seq+1
			err = s.Commit(ctx, &verifier.Commit{
				Card:    c,
				History: &verifier.HistoryEntry{ICCID: c.ICCID, Seq: c.Status.Seq, Decision: protocol.DecisionMatch, To: protocol.CardActive},
				Outbox:  []verifier.OutboxEntry{{ID: fmt.Sprintf("b-%d", n), Kind: verifier.OutboxAlert, Created: time.Now(), Payload: []byte(`{}`)}},
			})
			if err != nil && !errors.Is(err, verifier.ErrConflict) {
				b.Error(err)
				return
			}
		}
	})
}

// commitRows lists every row a call's commits write and refuses a row
// named twice, among a few commits (compared in turn) or many (a map).
func TestCommitRows(t *testing.T) {
	card := func(i int) *verifier.Card { return &verifier.Card{ICCID: benchICCID(i)} }
	commits := func(n int) []*verifier.Commit {
		cs := make([]*verifier.Commit, n)
		for i := range cs {
			cs[i] = &verifier.Commit{Card: card(i), Device: &verifier.Device{ID: fmt.Sprint("gw-", i)}}
		}
		return cs
	}
	tests := []struct {
		name    string
		cs      []*verifier.Commit
		wantErr bool
	}{
		{"one", commits(1), false},
		{"few", commits(4), false},
		{"many", commits(9), false},
		{"a card twice among few", append(commits(2), &verifier.Commit{Card: card(1)}), true},
		{"a device twice among many", append(commits(8), &verifier.Commit{Device: &verifier.Device{ID: "gw-3"}}), true},
		{"an outbox id twice in one commit", []*verifier.Commit{{Outbox: []verifier.OutboxEntry{
			{ID: "e", Kind: verifier.OutboxAlert}, {ID: "e", Kind: verifier.OutboxAlert}}}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := commitRows(tt.cs)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want an error: %v", err, tt.wantErr)
			}
			if err == nil && len(rows) != 2*len(tt.cs) {
				t.Errorf("%d rows for %d commits of a card and a device each", len(rows), len(tt.cs))
			}
		})
	}
}

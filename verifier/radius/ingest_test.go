package radius

import (
	"context"
	"log/slog"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/ingest"
)

// The production implementations satisfy the consumer-side interfaces.
var (
	_ Observer = (*ingest.Ingest)(nil)
	_ Cards    = verifier.Store(nil)
)

// TestServerWithIngest runs accounting through the real ingest and engine
// over the fake store: a card bound to one device, seen by the network in
// another, is blocked through RADIUS alone, and resumed when it is back.
func TestServerWithIngest(t *testing.T) {
	card := testCard
	card.Binding = &verifier.Binding{IMEIs: []protocol.IMEI{"354882091234560"}, Mode: verifier.ModeBlock, AutoResume: true}
	card.Status.State = protocol.CardActive
	fc := newFakeCards(card)
	in := ingest.New(fc, slog.New(slog.DiscardHandler), time.Now)
	h := serve(t, nil, fc, in)
	send := func(session string, imeisv protocol.IMEISV, ip string) {
		t.Helper()
		rec := &Record{Status: Start, SessionID: session, IMSI: card.IMSI, IMEISV: imeisv, IPv4: netip.MustParseAddr(ip)}
		if err := h.sender().Send(context.Background(), rec); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}

	send("s-1", "3569380356438091", "10.45.0.8") // a foreign device
	c := h.cards.get(card.ICCID)
	if c.Status.State != protocol.CardBlocked || c.Status.LastSource != protocol.SourceRADIUS || c.Status.OffendingIMEI != "356938035643809" {
		t.Errorf("status after a foreign device = %+v", c.Status)
	}
	if c.IPv4 != netip.MustParseAddr("10.45.0.8") {
		t.Errorf("IPv4 = %v", c.IPv4)
	}
	// The Stop of the card's earlier session, in its own device, arrives
	// late: it must not resume the card.
	late := &Record{Status: Stop, SessionID: "s-0", IMSI: card.IMSI, IMEISV: "3548820912345601", IPv4: netip.MustParseAddr("10.45.0.2")}
	if err := h.sender().Send(context.Background(), late); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if c := h.cards.get(card.ICCID); c.Status.State != protocol.CardBlocked || c.IPv4 != netip.MustParseAddr("10.45.0.8") {
		t.Errorf("after a late Stop from the bound device: %+v %v", c.Status, c.IPv4)
	}

	send("s-2", "3548820912345601", "10.45.0.9") // back in its own device
	c = h.cards.get(card.ICCID)
	if c.Status.State != protocol.CardActive || c.IPv4 != netip.MustParseAddr("10.45.0.9") {
		t.Errorf("card back in its device = %+v %v", c.Status, c.IPv4)
	}
	want := []string{card.ICCID.String() + "-1-block", card.ICCID.String() + "-2-resume"}
	if got := h.cards.enforcements(); !reflect.DeepEqual(got, want) {
		t.Errorf("enforcement outbox = %v, want %v", got, want)
	}
	if s := h.srv.Stats(); s.Observations != 2 || s.AddressUpdates != 2 || s.Answered != 3 {
		t.Errorf("stats = %+v", s)
	}
}

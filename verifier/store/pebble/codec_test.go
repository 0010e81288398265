package pebble

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

func codecCards() []*verifier.Card {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	return []*verifier.Card{
		{ICCID: "89860318640220133897"},
		{ICCID: "89860318640220133897", Tenant: "acme", IMSI: "460031234567890", MSISDN: "+8613912345678",
			Status: verifier.CardStatus{State: protocol.CardUnbound}, Version: 1},
		{ICCID: "89860318640220133897", Tenant: "acme", IMSI: "460031234567890", MSISDN: "+8613912345678", NAI: "m@iot",
			IPv4: netip.MustParseAddr("10.1.2.3"), IPv6: netip.MustParsePrefix("2001:db8::/48"),
			Binding: &verifier.Binding{IMEIs: []protocol.IMEI{"356938035643809", "490154203237518"}, TAC: "35693803",
				Mode: verifier.ModeBlock, Grace: -time.Second, AutoResume: true, Area: &verifier.Area{Lat: -1.5, Lon: 2.25, RadiusM: 3},
				Created: t0, CreatedBy: "ops"},
			Status: verifier.CardStatus{State: protocol.CardGrace, Reason: protocol.DecisionMismatch, Manual: true,
				GraceUntil: t0.Add(time.Minute), OffendingIMEI: "490154203237518", LastIMEI: "490154203237518",
				LastSource: protocol.SourceAgent, LastSeen: time.Unix(-5, 7).UTC(),
				LastLocation: &protocol.Location{Lat: 1, Lon: 2, AccuracyM: 3, Source: "gnss"}, Seq: 1 << 40},
			Version: 1<<64 - 1},
		{ICCID: "8901", Binding: &verifier.Binding{}, IPv4: netip.MustParseAddr("::ffff:10.0.0.1")},
	}
}

func TestCardCodecRoundTrip(t *testing.T) {
	for i, c := range codecCards() {
		v := encodeCard(c)
		got, err := decodeCard(c.ICCID, v)
		if err != nil || !reflect.DeepEqual(got, c) {
			t.Errorf("card %d: decode(encode) =\n%+v, %v\nwant\n%+v", i, got, err, c)
		}
		// Every truncation and every trailing byte is an error, never a
		// half-read card.
		for n := 0; n < len(v); n++ {
			if _, err := decodeCard(c.ICCID, v[:n]); !errors.Is(err, errCorrupt) {
				t.Errorf("card %d truncated to %d bytes: %v", i, n, err)
			}
		}
		if _, err := decodeCard(c.ICCID, append(v, 0)); !errors.Is(err, errCorrupt) {
			t.Errorf("card %d with a trailing byte: %v", i, err)
		}
	}
	if _, err := decodeCard("1", []byte{formatCard, 0x80, 0x80, 0x80, 0x80, 0x01}); !errors.Is(err, errCorrupt) {
		t.Errorf("unknown field bit: %v", err)
	}
}

// The compact encoding is what makes 30M cards small: report it.
func TestCardCodecSize(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	typical := &verifier.Card{ICCID: "89860318640220133897", Tenant: "acme", IMSI: "460031234567890", MSISDN: "+8613912345678",
		Binding: &verifier.Binding{IMEIs: []protocol.IMEI{"356938035643809"}, Mode: verifier.ModeBlock, AutoResume: true, Created: now, CreatedBy: "ops"},
		Status: verifier.CardStatus{State: protocol.CardActive, Reason: protocol.DecisionMatch, LastIMEI: "356938035643809",
			LastSource: protocol.SourceAgent, LastSeen: now, Seq: 3},
		Version: 4}
	for _, c := range []struct {
		name string
		card *verifier.Card
	}{{"typical bound card", typical}, {"every field", codecCards()[2]}} {
		j, _ := json.Marshal(c.card)
		b := encodeCard(c.card)
		t.Logf("%s: %d bytes binary, %d bytes JSON", c.name, len(b), len(j))
		if len(b)*2 > len(j) {
			t.Errorf("%s: binary %d bytes is not under half of JSON's %d", c.name, len(b), len(j))
		}
	}
}

func FuzzDecodeCard(f *testing.F) {
	for _, c := range codecCards() {
		f.Add(encodeCard(c))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		c, err := decodeCard("1", v)
		if err != nil {
			return
		}
		// What decodes re-encodes to a value that decodes and encodes
		// the same.
		v1 := encodeCard(c)
		again, err := decodeCard("1", v1)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if v2 := encodeCard(again); !bytes.Equal(v1, v2) {
			t.Fatalf("re-encode: %x, want %x", v2, v1)
		}
	})
}

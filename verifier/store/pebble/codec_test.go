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

func TestDeviceCodecRoundTrip(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	for i, d := range []*verifier.Device{
		{ID: "gw-1"},
		{ID: "gw-1", PublicKey: []byte{}, SecretHash: []byte{}},
		{ID: "gw-2", Tenant: "acme", PublicKey: bytes.Repeat([]byte{7}, 32), SecretHash: bytes.Repeat([]byte{9}, 32),
			IMEI: "356938035643809", LastSeq: 1<<64 - 1, LastICCID: "89860318640220133897", LastIMEI: "490154203237518",
			Enrolled: t0, Version: 3},
	} {
		v := encodeDevice(d)
		got, err := decodeDevice(d.ID, v)
		if err != nil || !reflect.DeepEqual(got, d) {
			t.Errorf("device %d: decode(encode) =\n%+v, %v\nwant\n%+v", i, got, err, d)
		}
		for n := 0; n < len(v); n++ {
			if _, err := decodeDevice(d.ID, v[:n]); !errors.Is(err, errCorrupt) {
				t.Errorf("device %d truncated to %d bytes: %v", i, n, err)
			}
		}
		if _, err := decodeDevice(d.ID, append(v, 0)); !errors.Is(err, errCorrupt) {
			t.Errorf("device %d with a trailing byte: %v", i, err)
		}
		// A device stored as JSON by an earlier version reads the same.
		old, err := encodeJSON(d)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := decodeDevice(d.ID, old); err != nil || !reflect.DeepEqual(got, d) {
			t.Errorf("device %d stored as JSON: %+v, %v", i, got, err)
		}
	}
	if _, err := decodeDevice("gw-1", []byte{formatDevice, 0x80, 0x80, 0x80, 0x80, 0x01}); !errors.Is(err, errCorrupt) {
		t.Errorf("unknown field bit: %v", err)
	}
}

func BenchmarkDeviceCodec(b *testing.B) {
	d := &verifier.Device{ID: "gw-2", Tenant: "acme", PublicKey: bytes.Repeat([]byte{7}, 32), SecretHash: bytes.Repeat([]byte{9}, 32),
		IMEI: "356938035643809", LastSeq: 12345, LastICCID: "89860318640220133897", LastIMEI: "490154203237518",
		Enrolled: time.Now().UTC(), Version: 3}
	for _, c := range []struct {
		name   string
		encode func() []byte
	}{
		{"binary", func() []byte { return encodeDevice(d) }},
		{"json", func() []byte { v, _ := encodeJSON(d); return v }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeDevice(d.ID, c.encode()); err != nil {
					b.Fatal(err)
				}
			}
		})
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

func FuzzDecodeDevice(f *testing.F) {
	f.Add(encodeDevice(&verifier.Device{ID: "gw-1", Tenant: "acme", PublicKey: []byte{1}, LastSeq: 3,
		Enrolled: time.Unix(5, 6).UTC(), Version: 2}))
	f.Add([]byte{formatJSON, '{', '}'})
	f.Fuzz(func(t *testing.T, v []byte) {
		d, err := decodeDevice("gw-1", v)
		if err != nil || v[0] != formatDevice {
			return
		}
		v1 := encodeDevice(d)
		again, err := decodeDevice("gw-1", v1)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if v2 := encodeDevice(again); !bytes.Equal(v1, v2) {
			t.Fatalf("re-encode: %x, want %x", v2, v1)
		}
	})
}

package protocol

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

func TestVerifyReport(t *testing.T) {
	pub := testKey().Public().(ed25519.PublicKey)
	if err := VerifyReport(pub, sampleReport()); err != nil {
		t.Fatalf("good report: %v", err)
	}
	other := ed25519.NewKeyFromSeed([]byte("another-device-key-seed-32-bytes")).Public().(ed25519.PublicKey)
	if err := VerifyReport(other, sampleReport()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("other device's key verified: %v", err)
	}
	if err := VerifyReport(pub[:10], sampleReport()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("short key: %v", err)
	}
}

// Every field the report carries is covered by the signature: changing any
// one of them makes verification fail.
func TestVerifyReportDetectsEveryChange(t *testing.T) {
	pub := testKey().Public().(ed25519.PublicKey)
	changes := map[string]func(r *Report){
		"version":    func(r *Report) { r.Version = 2 },
		"device":     func(r *Report) { r.DeviceID = "gw-0002" },
		"seq":        func(r *Report) { r.Seq++ },
		"time":       func(r *Report) { r.Time = r.Time.Add(time.Nanosecond) },
		"reason":     func(r *Report) { r.Reason = ReasonHeartbeat },
		"imei":       func(r *Report) { r.IMEI = "490154203237518" },
		"imeisv":     func(r *Report) { r.IMEISV = "" },
		"sim":        func(r *Report) { r.SIM = SIMNotReady },
		"iccid":      func(r *Report) { r.ICCID = "8901260886258128535" },
		"imsi":       func(r *Report) { r.IMSI = "460031234567891" },
		"reg state":  func(r *Report) { r.Registration.State = RegDenied },
		"reg stat":   func(r *Report) { r.Registration.Stat = 3 },
		"reg tech":   func(r *Report) { r.Registration.Tech = "gsm" },
		"cell mcc":   func(r *Report) { r.Registration.Cell.MCC = "461" },
		"cell mnc":   func(r *Report) { r.Registration.Cell.MNC = "01" },
		"cell area":  func(r *Report) { r.Registration.Cell.Area++ },
		"cell id":    func(r *Report) { r.Registration.Cell.ID++ },
		"no cell":    func(r *Report) { r.Registration.Cell = nil },
		"lat":        func(r *Report) { r.Location.Lat += 1e-9 },
		"lon":        func(r *Report) { r.Location.Lon = -r.Location.Lon },
		"accuracy":   func(r *Report) { r.Location.AccuracyM = 16 },
		"loc source": func(r *Report) { r.Location.Source = "cell" },
		"no loc":     func(r *Report) { r.Location = nil },
		"rssi":       func(r *Report) { r.Signal.RSSIdBm = -80 },
		"no signal":  func(r *Report) { r.Signal = nil },
		"ack":        func(r *Report) { r.Acks[0] = "cmd-2" },
		"no acks":    func(r *Report) { r.Acks = nil },
		"dropped":    func(r *Report) { r.Dropped = 0 },
		// Moving bytes between adjacent fields must not keep the encoding.
		"shift": func(r *Report) { r.IMSI = ""; r.ICCID += "460031234567890" },
	}
	for name, change := range changes {
		r := sampleReport()
		change(r)
		if err := VerifyReport(pub, r); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: changed report verified (%v)", name, err)
		}
	}
	// Any flipped bit of the signature fails too.
	for i := 0; i < SignatureSize; i++ {
		r := sampleReport()
		r.Sig[i] ^= 0x01
		if err := VerifyReport(pub, r); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("signature byte %d flipped: verified", i)
		}
	}
}

func TestCanonicalDomains(t *testing.T) {
	// A command signature never verifies as a report and vice versa.
	c := sampleCommand()
	r := sampleReport()
	r.Sig = c.Sig
	if err := VerifyReport(testKey().Public().(ed25519.PublicKey), r); err == nil {
		t.Error("command signature verified as a report")
	}
}

func TestCheckSequence(t *testing.T) {
	tests := []struct {
		last, seq uint64
		ok        bool
	}{
		{0, 1, true},
		{41, 42, true},
		{41, 1000, true}, // gaps are fine: heartbeats may have been dropped offline
		{42, 42, false},  // replay or duplicate delivery
		{42, 41, false},  // old report
		{42, 0, false},
	}
	for _, tt := range tests {
		err := CheckSequence(tt.last, tt.seq)
		if (err == nil) != tt.ok {
			t.Errorf("CheckSequence(%d, %d) = %v", tt.last, tt.seq, err)
		}
		if err != nil && !errors.Is(err, ErrReplay) {
			t.Errorf("error %v does not wrap ErrReplay", err)
		}
	}
}

// A signed report captured on the wire and published again is refused by
// the sequence check even though its signature is genuine.
func TestReplayedReportRejected(t *testing.T) {
	pub := testKey().Public().(ed25519.PublicKey)
	data, _ := EncodeReport(sampleReport())
	var last uint64
	accept := func() error {
		r, err := DecodeReport(data)
		if err != nil {
			return err
		}
		if err := VerifyReport(pub, r); err != nil {
			return err
		}
		if err := CheckSequence(last, r.Seq); err != nil {
			return err
		}
		last = r.Seq
		return nil
	}
	if err := accept(); err != nil {
		t.Fatalf("first delivery: %v", err)
	}
	if err := accept(); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: %v", err)
	}
}

// BenchmarkVerifyReport is the signature check of one report with
// crypto/ed25519; verifier/sigcheck has the verifier's faster one.
func BenchmarkVerifyReport(b *testing.B) {
	r := sampleReport()
	pub := testKey().Public().(ed25519.PublicKey)
	for b.Loop() {
		if err := VerifyReport(pub, r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCanonicalReport(b *testing.B) {
	r := sampleReport()
	b.ReportAllocs()
	for b.Loop() {
		_ = CanonicalReport(r)
	}
}

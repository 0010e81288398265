package sigcheck

import (
	"compress/gzip"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
)

type vector struct{ pub, msg, sig []byte }

func unhex(t testing.TB, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readGz(t testing.TB, name string, v any) {
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(zr).Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// edgeVectors returns the low-order, non-canonical and cofactor cases of
// testdata (see testdata/README.md).
func edgeVectors(t testing.TB) []vector {
	var fv []struct{ A, R, S, M string }
	readGz(t, "testdata/ed25519vectors.json.gz", &fv)
	var sc []struct {
		Message   string `json:"message"`
		PublicKey string `json:"pub_key"`
		Signature string `json:"signature"`
	}
	readGz(t, "testdata/speccheck_cases.json.gz", &sc)
	var vs []vector
	for _, v := range fv {
		vs = append(vs, vector{unhex(t, v.A), []byte(v.M), append(unhex(t, v.R), unhex(t, v.S)...)})
	}
	for _, v := range sc {
		vs = append(vs, vector{unhex(t, v.PublicKey), unhex(t, v.Message), unhex(t, v.Signature)})
	}
	if len(vs) < 100 {
		t.Fatalf("only %d vectors", len(vs))
	}
	return vs
}

// Every edge case is accepted or refused exactly as crypto/ed25519 does,
// with the key expanded afresh and from the kept copy.
func TestSameAsStdlibOnEdgeCases(t *testing.T) {
	v := New(0)
	accepted := 0
	for i, c := range edgeVectors(t) {
		want := ed25519.Verify(c.pub, c.msg, c.sig)
		for pass := range 2 {
			if got := v.Verify(c.pub, c.msg, c.sig); got != want {
				t.Errorf("vector %d (pass %d): A=%x sig=%x: sigcheck %v, crypto/ed25519 %v", i, pass, c.pub, c.sig, got, want)
			}
		}
		if want {
			accepted++
		}
	}
	t.Logf("%d edge vectors accepted by both", accepted)
}

func testReport(t testing.TB) (*protocol.Report, ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &protocol.Report{Version: protocol.Version, DeviceID: "gw-1", Seq: 7, Time: time.Unix(1700000000, 5).UTC(),
		Reason: protocol.ReasonHeartbeat, IMEI: "356938035643809", SIM: protocol.SIMPresent, ICCID: "89860318640220133897",
		Registration: protocol.Registration{State: protocol.RegHome, Stat: 1}}
	protocol.SignReport(priv, r)
	return r, pub, priv
}

// order is the Ed25519 group order L.
var order, _ = new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)

// malleate returns sig with S replaced by S+L (little-endian), the
// classic malleated signature.
func malleate(sig []byte) []byte {
	le := func(b []byte) []byte {
		r := make([]byte, len(b))
		for i := range b {
			r[i] = b[len(b)-1-i]
		}
		return r
	}
	s := new(big.Int).SetBytes(le(sig[32:]))
	s.Add(s, order)
	out := append([]byte{}, sig[:32]...)
	sb := make([]byte, 32)
	s.FillBytes(sb)
	return append(out, le(sb)...)
}

func TestVerifyReport(t *testing.T) {
	v := New(0)
	r, pub, _ := testReport(t)
	if err := v.VerifyReport(pub, r); err != nil {
		t.Fatalf("honest report: %v", err)
	}
	if err := v.VerifyReport(pub, r); err != nil {
		t.Fatalf("honest report, key kept: %v", err)
	}
	otherPub, _, _ := ed25519.GenerateKey(nil)
	forged := func(name string, pub []byte, r *protocol.Report) {
		t.Helper()
		err := v.VerifyReport(pub, r)
		if !errors.Is(err, protocol.ErrBadSignature) {
			t.Errorf("%s: %v, want ErrBadSignature", name, err)
		}
		if want := protocol.VerifyReport(pub, r); want == nil || err == nil || err.Error() != want.Error() {
			t.Errorf("%s: error %q, protocol.VerifyReport %q", name, err, want)
		}
	}
	forged("another device's key", otherPub, r)
	forged("short key", pub[:31], r)
	forged("no key", nil, r)

	changed := *r
	changed.Seq++
	forged("changed seq", pub, &changed)
	changed = *r
	changed.ICCID = "89860318640220133905"
	forged("changed iccid", pub, &changed)
	for i := range len(r.Sig) * 8 {
		flipped := *r
		flipped.Sig = append([]byte{}, r.Sig...)
		flipped.Sig[i/8] ^= 1 << (i % 8)
		forged(fmt.Sprintf("signature bit %d flipped", i), pub, &flipped)
	}
	mal := *r
	mal.Sig = malleate(r.Sig)
	forged("S+L", pub, &mal)
	short := *r
	short.Sig = r.Sig[:63]
	forged("short signature", pub, &short)
	// A device key that is not a point on the curve verifies nothing.
	bad := unhex(t, "0200000000000000000000000000000000000000000000000000000000000000")
	forged("key not on the curve", bad, r)
}

// testReports returns n reports, each signed by its own device key.
func testReports(t *testing.T, n int) ([]*protocol.Report, []ed25519.PublicKey) {
	t.Helper()
	rs, pubs := make([]*protocol.Report, n), make([]ed25519.PublicKey, n)
	for i := range n {
		rs[i], pubs[i], _ = testReport(t)
	}
	return rs, pubs
}

// A full Verifier drops keys and still verifies with every key.
func TestKeepsAtMostMax(t *testing.T) {
	v := New(3)
	rs, pubs := testReports(t, 10)
	for round := range 3 {
		for i, r := range rs {
			if err := v.VerifyReport(pubs[i], r); err != nil {
				t.Fatalf("round %d report %d: %v", round, i, err)
			}
			if err := v.VerifyReport(pubs[(i+1)%len(pubs)], r); err == nil {
				t.Fatalf("round %d report %d verified with another key", round, i)
			}
		}
	}
	if n := v.Len(); n > 3 {
		t.Errorf("keeps %d keys, max 3", n)
	}
}

// Once full, a Verifier expands a new key only when it comes back while
// remembered; a key met once is checked unexpanded and not kept.
func TestFullExpandsKeysThatComeBack(t *testing.T) {
	v := New(2)
	rs, pubs := testReports(t, 4)
	kept := func(pub ed25519.PublicKey) bool {
		v.mu.Lock()
		defer v.mu.Unlock()
		_, ok := v.keys[string(pub)]
		return ok
	}
	const either = 2 // kept or not: which key made room is chance
	steps := []struct {
		report int
		kept   int // the report's key, after its check: 0, 1 or either
	}{
		{0, 1}, {1, 1}, // room: kept at once
		{2, 0}, // full, met for the first time: checked unexpanded
		{2, 1}, // back while remembered: expanded, in another's place
		{3, 0}, {0, either},
	}
	for i, st := range steps {
		if err := v.VerifyReport(pubs[st.report], rs[st.report]); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := kept(pubs[st.report]); st.kept != either && got != (st.kept == 1) {
			t.Errorf("step %d: key %d kept %v, want %v", i, st.report, got, st.kept == 1)
		}
		if v.Len() > 2 {
			t.Fatalf("step %d: keeps %d keys, max 2", i, v.Len())
		}
	}
}

func TestConcurrent(t *testing.T) {
	v := New(4)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, pub, _ := testReport(t)
			for i := range 20 {
				if err := v.VerifyReport(pub, r); err != nil {
					t.Errorf("goroutine %d, %d: %v", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func FuzzSameAsStdlib(f *testing.F) {
	seed := ed25519.NewKeyFromSeed(make([]byte, 32))
	msg := []byte("cardbind report v1")
	f.Add([]byte(seed.Public().(ed25519.PublicKey)), msg, ed25519.Sign(seed, msg))
	f.Add(make([]byte, 32), msg, make([]byte, 64))
	v := New(8)
	f.Fuzz(func(t *testing.T, pub, msg, sig []byte) {
		if len(pub) != ed25519.PublicKeySize {
			return // crypto/ed25519 panics
		}
		if got, want := v.Verify(pub, msg, sig), ed25519.Verify(pub, msg, sig); got != want {
			t.Fatalf("A=%x msg=%x sig=%x: sigcheck %v, crypto/ed25519 %v", pub, msg, sig, got, want)
		}
	})
}

// BenchmarkVerifyReport compares the check of one report's signature:
// crypto/ed25519 (protocol.VerifyReport), sigcheck with the device's key
// kept, and sigcheck expanding the key every time (more devices than it
// keeps).
func BenchmarkVerifyReport(b *testing.B) {
	r, pub, _ := testReport(b)
	r2, pub2, _ := testReport(b)
	b.Run("crypto-ed25519", func(b *testing.B) {
		for b.Loop() {
			if err := protocol.VerifyReport(pub, r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sigcheck-kept", func(b *testing.B) {
		v := New(0)
		for b.Loop() {
			if err := v.VerifyReport(pub, r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sigcheck-expanded-each-time", func(b *testing.B) {
		v := New(1)
		i := 0
		for b.Loop() {
			rr, pp := r, pub
			if i++; i%2 == 0 {
				rr, pp = r2, pub2
			}
			if err := v.VerifyReport(pp, rr); err != nil {
				b.Fatal(err)
			}
		}
	})
}

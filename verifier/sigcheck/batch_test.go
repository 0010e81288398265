package sigcheck

import (
	"crypto/ed25519"
	"fmt"
	"testing"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// honestItems returns n items signed by n keys.
func honestItems(t testing.TB, n int) []Item {
	items := make([]Item, n)
	for i := range items {
		pub, priv, err := ed25519.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		msg := fmt.Appendf(nil, "report %d", i)
		items[i] = Item{Pub: pub, Msg: msg, Sig: ed25519.Sign(priv, msg)}
	}
	return items
}

// cofactored is the rule VerifyBatch applies to a key not of small order:
// crypto/ed25519's encoding rules with the cofactored equation.
func cofactored(it Item) bool {
	opts := *voi.VerifyOptionsStdLib
	opts.CofactorlessVerify = false
	return voi.VerifyWithOptions(voi.PublicKey(it.Pub), it.Msg, it.Sig, &voi.Options{Verify: &opts})
}

// verifiers returns Verifiers to run a test on: one that expands and
// keeps every key, one that is full and expands a key when it comes
// back (so the first check of a key is unexpanded, the next expanded),
// and one that never expands.
func verifiers(t testing.TB) map[string]*Verifier {
	full := New(1)
	full.key(honestItems(t, 1)[0].Pub)
	never := New(1)
	never.key(honestItems(t, 1)[0].Pub)
	never.seen.ring = nil
	return map[string]*Verifier{"kept": New(0), "full": full, "unexpanded": never}
}

func TestVerifyBatch(t *testing.T) {
	for name, v := range verifiers(t) {
		t.Run(name, func(t *testing.T) { testVerifyBatch(t, v) })
	}
}

func testVerifyBatch(t *testing.T, v *Verifier) {
	_, otherPriv, _ := ed25519.GenerateKey(nil)
	bad := func(items []Item, i int) []Item {
		items[i].Sig = ed25519.Sign(otherPriv, items[i].Msg)
		return items
	}
	tests := []struct {
		name  string
		items []Item
		want  []bool
	}{
		{"empty", nil, []bool{}},
		{"one", honestItems(t, 1), []bool{true}},
		{"one forged", bad(honestItems(t, 1), 0), []bool{false}},
		{"all good", honestItems(t, 64), nil},
		{"one forged among many", bad(honestItems(t, 8), 5), []bool{true, true, true, true, true, false, true, true}},
		{"short key", append(honestItems(t, 2), Item{Pub: make([]byte, 31), Msg: []byte("m"), Sig: make([]byte, 64)}), []bool{true, true, false}},
		{"short signature", append(honestItems(t, 2), Item{Pub: honestItems(t, 1)[0].Pub, Msg: []byte("m"), Sig: make([]byte, 63)}), []bool{true, true, false}},
		{"key not on the curve", append(honestItems(t, 2), Item{Pub: notOnCurve(), Msg: []byte("m"), Sig: make([]byte, 64)}), []bool{true, true, false}},
		{"message changed", func() []Item { it := honestItems(t, 3); it[1].Msg = []byte("other"); return it }(), []bool{true, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if want == nil {
				want = make([]bool, len(tt.items))
				for i := range want {
					want[i] = true
				}
			}
			for pass := range 2 { // keys met for the first time, then again
				got := v.VerifyBatch(tt.items)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("pass %d: got %v, want %v", pass, got, want)
				}
			}
		})
	}
}

// A key whose signature failed is kept out of the next batches: its bad
// signatures no longer make a whole batch fail, its good ones still
// verify, and the others' batch still passes.
func TestFailedKeyCheckedAlone(t *testing.T) {
	for name, v := range verifiers(t) {
		t.Run(name, func(t *testing.T) {
			pub, priv, _ := ed25519.GenerateKey(nil)
			forged := Item{Pub: pub, Msg: []byte("report"), Sig: make([]byte, ed25519.SignatureSize)}
			good := Item{Pub: pub, Msg: []byte("report 2"), Sig: ed25519.Sign(priv, []byte("report 2"))}
			want := func(items []Item, oks ...bool) {
				t.Helper()
				if got := v.VerifyBatch(items); fmt.Sprint(got) != fmt.Sprint(oks) {
					t.Fatalf("got %v, want %v", got, oks)
				}
			}
			before := v.fallbacks.Load()
			want(append([]Item{forged}, honestItems(t, 3)...), false, true, true, true)
			if v.fallbacks.Load() != before+1 {
				t.Fatalf("the first bad signature did not fail its batch")
			}
			want(append([]Item{forged, good}, honestItems(t, 3)...), false, true, true, true, true)
			if n := v.fallbacks.Load() - before; n != 1 {
				t.Errorf("batches checked item by item: %d, want 1 (the key's items checked alone after its first failure)", n)
			}
		})
	}
}

// notOnCurve returns 32 bytes that decode to no point.
func notOnCurve() []byte {
	for b := byte(2); ; b++ {
		p := make([]byte, 32)
		p[0] = b
		if _, err := voi.NewExpandedPublicKey(voi.PublicKey(p)); err != nil {
			return p
		}
	}
}

// On every edge case, alone and in a batch of honest signatures, VerifyBatch
// accepts whatever crypto/ed25519 accepts, and otherwise differs from it
// only by the cofactored equation for keys not of small order.
func TestVerifyBatchEdgeCases(t *testing.T) {
	for name, v := range verifiers(t) {
		t.Run(name, func(t *testing.T) { testVerifyBatchEdgeCases(t, v) })
	}
}

func testVerifyBatchEdgeCases(t *testing.T, v *Verifier) {
	honest := honestItems(t, 7)
	differ := 0
	for i, c := range edgeVectors(t) {
		it := Item{Pub: c.pub, Msg: c.msg, Sig: c.sig}
		stdlib := ed25519.Verify(c.pub, c.msg, c.sig)
		want := stdlib
		if small, ok := smallOrder(c.pub); ok && !small {
			want = cofactored(it)
		}
		if stdlib && !want {
			t.Fatalf("vector %d: the rule refuses what crypto/ed25519 accepts", i)
		}
		if want != stdlib {
			differ++
		}
		alone := v.VerifyBatch([]Item{it})
		mixed := v.VerifyBatch(append([]Item{it}, honest...))
		if alone[0] != want || mixed[0] != want {
			t.Errorf("vector %d: A=%x sig=%x: alone %v, in a batch %v, want %v (crypto/ed25519 %v)", i, c.pub, c.sig, alone[0], mixed[0], want, stdlib)
		}
		for j, ok := range mixed[1:] {
			if !ok {
				t.Errorf("vector %d: honest item %d refused next to it", i, j)
			}
		}
	}
	t.Logf("%d edge vectors accepted by the cofactored equation only", differ)
}

func FuzzVerifyBatch(f *testing.F) {
	honest := honestItems(f, 3)
	for _, it := range honest {
		f.Add(it.Pub, it.Msg, it.Sig)
	}
	f.Add(make([]byte, 32), []byte("m"), make([]byte, 64))
	vs := verifiers(f)
	f.Fuzz(func(t *testing.T, pub, msg, sig []byte) {
		it := Item{Pub: pub, Msg: msg, Sig: sig}
		stdlib := len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, msg, sig)
		v := vs["kept"]
		if len(msg) > 0 && msg[0]%2 == 1 {
			v = vs["unexpanded"]
		}
		got := v.VerifyBatch(append([]Item{it}, honest...))
		if stdlib && !got[0] {
			t.Fatalf("refused what crypto/ed25519 accepts: A=%x sig=%x", pub, sig)
		}
		if got[0] && !stdlib && !cofactored(it) {
			t.Fatalf("accepted what neither equation accepts: A=%x sig=%x", pub, sig)
		}
		for j, ok := range got[1:] {
			if !ok {
				t.Fatalf("honest item %d refused", j)
			}
		}
	})
}

// BenchmarkVerifyBatchFleet checks batches of 64 and 256 signatures from
// a fleet of devices with more keys than the Verifier keeps, each device
// met once a pass, as at millions of devices: "expand-each" expands every
// key for its one check (what sigcheck did before it expanded only keys
// that come back), "unexpanded" is what it does now.
func BenchmarkVerifyBatchFleet(b *testing.B) {
	const keep, fleet = 256, 4096
	items := honestItems(b, fleet)
	run := func(b *testing.B, v *Verifier, n int, expandEach bool) {
		i := 0
		for b.Loop() {
			batch := items[i : i+n]
			if i += n; i == fleet {
				i = 0
			}
			if expandEach { // forget every key: all are expanded again
				v.mu.Lock()
				v.keys = map[string]*key{}
				v.mu.Unlock()
			}
			for j, ok := range v.VerifyBatch(batch) {
				if !ok {
					b.Fatalf("item %d refused", j)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/sig")
	}
	for _, n := range []int{64, 256} {
		b.Run(fmt.Sprintf("expand-each/%d", n), func(b *testing.B) {
			run(b, New(fleet), n, true) // never full: every key it meets is expanded
		})
		b.Run(fmt.Sprintf("unexpanded/%d", n), func(b *testing.B) {
			v := New(keep)
			for _, it := range honestItems(b, keep) {
				v.key(it.Pub)
			}
			// A fleet of millions comes back long after seenKeys others.
			v.seen.ring = make([]uint64, 0, 64)
			run(b, v, n, false)
		})
	}
}

func BenchmarkVerifyBatch(b *testing.B) {
	for _, n := range []int{1, 16, 64, 256} {
		items := honestItems(b, n)
		v := New(0)
		v.VerifyBatch(items)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				v.VerifyBatch(items)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/sig")
		})
	}
}

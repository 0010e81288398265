package pebble

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/store/storetest"
)

func TestConformanceIMSIInMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) verifier.Store {
		s, err := Open(t.TempDir(), Options{CacheSize: 8 << 20, IMSIInMemory: true})
		if err != nil {
			t.Fatal(err)
		}
		s.imsi.waitLoaded()
		return s
	})
}

// emptyMirror returns a mirror with no scan.
func emptyMirror() *imsiMirror {
	m := &imsiMirror{cancel: func() {}, done: make(chan struct{})}
	close(m.done)
	return m
}

func TestIMSICode(t *testing.T) {
	for _, tc := range []struct {
		imsi string
		ok   bool
	}{
		{"460031234567890", true},
		{"001010000000001", true},
		{"0", true},
		{"1234567890123456", false}, // 16 digits
		{"", false},
		{"46003123456789x", false},
	} {
		k, ok := imsiCode(tc.imsi)
		if ok != tc.ok || (ok && k == 0) {
			t.Errorf("imsiCode(%q) = %#x, %v; want ok %v and not 0", tc.imsi, k, ok, tc.ok)
		}
	}
	// Leading zeros count: these are different IMSIs.
	a, _ := imsiCode("0012345")
	b, _ := imsiCode("012345")
	if a == b {
		t.Errorf("imsiCode ignores leading zeros: %#x", a)
	}
	// The code of a packed key's digits is the code of the digits.
	for _, imsi := range []string{"460031234567890", "46003123456789", "1", "12"} {
		key := indexKey(verifier.ByIMSI, imsi)
		got, ok := imsiCodeOfBCD(key[2:])
		want, _ := imsiCode(imsi)
		if !ok || got != want {
			t.Errorf("imsiCodeOfBCD(%x) = %#x, %v; want %#x", key[2:], got, ok, want)
		}
	}
	if _, ok := imsiCodeOfBCD([]byte{0x4A}); ok {
		t.Error("imsiCodeOfBCD accepted a nibble over 9")
	}
}

func TestICCIDCode(t *testing.T) {
	for _, tc := range []struct {
		iccid protocol.ICCID
		fits  bool
	}{
		{"89860318640220133897", true}, // 20 digits
		{"8901260886258128535", true},  // 19
		{"890000000000000000", true},   // 18, all zeros after 89
		{"89999999999999999999", true}, // the largest
		{"89000000000000001", false},   // 17
		{"898603186402201338971", false},
		{"98860318640220133897", false}, // not 89
		{"8986031864022013389F", false}, // hex digit
	} {
		v := iccidCode(tc.iccid)
		if got := v != mirrorInStore; got != tc.fits {
			t.Errorf("iccidCode(%s) = %#x: fits %v, want %v", tc.iccid, v, got, tc.fits)
			continue
		}
		if !tc.fits {
			continue
		}
		if v>>63 != 1 {
			t.Errorf("iccidCode(%s) = %#x: top bit not set", tc.iccid, v)
		}
		if back := decodeICCIDCode(v); back != tc.iccid {
			t.Errorf("decodeICCIDCode(iccidCode(%s)) = %s", tc.iccid, back)
		}
		if p := iccidCodeOfPacked(packedIndexValue(tc.iccid)); p != v {
			t.Errorf("iccidCodeOfPacked(%s) = %#x, want %#x", tc.iccid, p, v)
		}
	}
}

// The table agrees with a map through inserts, overwrites, fills and
// removals, across many growths.
func TestMirrorTableAgainstMap(t *testing.T) {
	m := emptyMirror()
	defer m.stop()
	want := map[uint64]uint64{}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300_000 {
		k := 1<<63 | rng.Uint64N(100_000)
		v := 1<<63 | uint64(i)
		switch rng.IntN(4) {
		case 0: // removal
			m.put(k, mirrorAbsent, true)
			want[k] = mirrorAbsent
		case 1: // scanned entry: only where no write was
			m.fill(k, v)
			if _, ok := want[k]; !ok {
				want[k] = v
			}
		default:
			m.put(k, v, true)
			want[k] = v
		}
	}
	for k, v := range want {
		if got, ok := m.get(k); !ok || got != v {
			t.Fatalf("get(%#x) = %#x, %v; want %#x", k, got, ok, v)
		}
	}
	for range 10_000 {
		k := 1<<63 | (100_000 + rng.Uint64N(1<<40))
		if _, ok := m.get(k); ok {
			t.Fatalf("get(%#x) found a key never put", k)
		}
	}
	slots, bytes := m.size()
	if slots != len(want) || bytes < int64(slots)*16*5/4 {
		t.Errorf("size = %d slots in %d bytes; want %d slots at most 80 %% full", slots, bytes, len(want))
	}
}

// After stop the mirror answers nothing and takes no writes: a write that
// commits while the store closes maps no new slots.
func TestMirrorStopped(t *testing.T) {
	m := emptyMirror()
	op, _ := mirrorOpOf("460030000000001", "89860318640220133897")
	m.apply([]mirrorOp{op})
	m.loaded.Store(true)
	m.stop()
	m.apply([]mirrorOp{op})
	if slots, bytes := m.size(); slots != 0 || bytes != 0 {
		t.Errorf("after stop: %d slots in %d bytes", slots, bytes)
	}
	if _, _, ok := m.lookup("460030000000001"); ok {
		t.Error("after stop the mirror still answers")
	}
}

func TestMirrorLookup(t *testing.T) {
	m := emptyMirror()
	defer m.stop()
	put := func(imsi string, iccid protocol.ICCID) {
		op, ok := mirrorOpOf(imsi, iccid)
		if !ok {
			t.Fatalf("mirrorOpOf(%s) not ok", imsi)
		}
		m.apply([]mirrorOp{op})
	}
	put("460030000000001", "89860318640220133897")
	put("460030000000002", "89860318640220133898")
	put("460030000000002", "") // removed
	put("460030000000003", "ICCID-WITH-LETTERS")
	type want struct {
		iccid     protocol.ICCID
		found, ok bool
	}
	check := func(imsi string, w want) {
		t.Helper()
		iccid, found, ok := m.lookup(imsi)
		if (want{iccid, found, ok}) != w {
			t.Errorf("lookup(%s) = %q, %v, %v; want %q, %v, %v", imsi, iccid, found, ok, w.iccid, w.found, w.ok)
		}
	}
	check("460030000000001", want{"89860318640220133897", true, true})
	check("460030000000002", want{"", false, true})
	check("460030000000003", want{"", false, false}) // in Pebble only
	check("460030000000004", want{"", false, false}) // not loaded: ask Pebble
	check("4600300000000001", want{"", false, false})
	m.loaded.Store(true)
	check("460030000000004", want{"", false, true}) // loaded: no entry
}

// Writes that move IMSIs between cards while the mirror is being filled
// leave it answering as Pebble does, for every IMSI.
func TestMirrorLoadRacesWrites(t *testing.T) {
	dir := t.TempDir()
	const cards = 5_000
	iccid := func(i int) protocol.ICCID { return protocol.ICCID(fmt.Sprintf("8986%015d", i)) }
	imsi := func(i int) protocol.IMSI { return protocol.IMSI(fmt.Sprintf("46003%010d", i)) }
	s, err := Open(dir, Options{CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	items := make([]verifier.Card, cards)
	for i := range items {
		items[i] = verifier.Card{ICCID: iccid(i), Tenant: "acme", IMSI: imsi(i)}
	}
	if _, _, err := s.UpsertInventory(ctx, items); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, dir)
	defer s.Close()
	// The scan stops halfway until the first writes are done.
	paused, resume := make(chan struct{}), make(chan struct{})
	var resumeOnce sync.Once
	release := func() { resumeOnce.Do(func() { close(resume) }) }
	defer release() // before the deferred Close, so a failed test does not hang in it
	s.imsi = newIMSIMirror(s.db, slog.Default(), func(n int) {
		if n == cards/2 {
			close(paused)
			<-resume
		}
	})
	<-paused
	// Lookups run throughout: whatever the mirror holds, FindCard answers
	// with a card holding the IMSI or not found.
	lookups := make(chan struct{})
	var lwg sync.WaitGroup
	lwg.Add(1)
	go func() {
		defer lwg.Done()
		for i := 0; ; i = (i + 7) % (2 * cards) {
			select {
			case <-lookups:
				return
			default:
			}
			c, err := s.FindCard(ctx, verifier.ByIMSI, string(imsi(i)))
			if err != nil && !errors.Is(err, verifier.ErrNotFound) {
				t.Error(err)
				return
			}
			if err == nil && c.IMSI != imsi(i) {
				t.Errorf("FindCard(%s) = card %s holding %s", imsi(i), c.ICCID, c.IMSI)
				return
			}
		}
	}()
	// Meanwhile: cards take IMSIs of other cards and new ones, some
	// IMSIs are dropped (a card without IMSI).
	var wg sync.WaitGroup
	for w := range 4 {
		if w == 2 {
			wg.Wait()
			if s.imsi.loaded.Load() {
				t.Fatal("mirror loaded while its scan was paused")
			}
			release()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range 150 {
				a := rng.IntN(cards)
				var to protocol.IMSI
				switch rng.IntN(3) {
				case 0:
					to = imsi(rng.IntN(cards))
				case 1:
					to = imsi(cards + rng.IntN(cards))
				}
				if _, _, err := s.UpsertInventory(ctx, []verifier.Card{{ICCID: iccid(a), Tenant: "acme", IMSI: to}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	s.imsi.waitLoaded()
	close(lookups)
	lwg.Wait()
	if !s.imsi.loaded.Load() {
		t.Fatal("mirror not loaded")
	}
	// The mirror holds what the index on disk holds, entry by entry.
	for i := range 2 * cards {
		v := string(imsi(i))
		got, found, ok := s.imsi.lookup(v)
		raw, err := getCopy(s.db, indexKey(verifier.ByIMSI, v))
		var want protocol.ICCID
		if err == nil {
			want, err = indexTarget(indexKey(verifier.ByIMSI, v), raw)
		}
		if err != nil && !errors.Is(err, verifier.ErrNotFound) {
			t.Fatal(err)
		}
		if !ok || found != (want != "") || got != want {
			t.Fatalf("mirror: %s -> %q, found %v, ok %v; index on disk: %q", v, got, found, ok, want)
		}
	}
	for i := range 2 * cards {
		got, gerr := s.FindCard(ctx, verifier.ByIMSI, string(imsi(i)))
		want, werr := s.findCardOnDisk(verifier.ByIMSI, string(imsi(i)))
		if !errors.Is(gerr, werr) || (got == nil) != (want == nil) || (got != nil && got.ICCID != want.ICCID) {
			t.Fatalf("FindCard(%s) = %v, %v; on disk %v, %v", imsi(i), got, gerr, want, werr)
		}
		if gerr != nil && !errors.Is(gerr, verifier.ErrNotFound) {
			t.Fatal(gerr)
		}
	}
}

func BenchmarkMirrorLookup(b *testing.B) {
	m := emptyMirror()
	defer m.stop()
	const n = 1 << 20
	for i := range n {
		op, _ := mirrorOpOf(fmt.Sprintf("46003%010d", i), protocol.ICCID(fmt.Sprintf("8986%015d", i)))
		m.apply([]mirrorOp{op})
	}
	m.loaded.Store(true)
	imsis := make([]string, 4096)
	for i := range imsis {
		imsis[i] = fmt.Sprintf("46003%010d", rand.IntN(n))
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, found, _ := m.lookup(imsis[i%len(imsis)]); !found {
				b.Fatal("not found")
			}
			i++
		}
	})
}

func TestWaitIMSIIndex(t *testing.T) {
	for _, inMemory := range []bool{true, false} {
		s, err := Open(t.TempDir(), Options{CacheSize: 8 << 20, IMSIInMemory: inMemory})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.WaitIMSIIndex(ctx); got != inMemory {
			t.Errorf("IMSIInMemory %v: WaitIMSIIndex = %v", inMemory, got)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

package pebble

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	pdb "github.com/cockroachdb/pebble/v2"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

func TestIndexKey(t *testing.T) {
	for _, tc := range []struct {
		kind  verifier.IndexKind
		value string
		want  []byte
	}{
		{verifier.ByIMSI, "460031234567890", []byte{'I', 1, 0x46, 0x00, 0x31, 0x23, 0x45, 0x67, 0x89, 0x0F}},
		{verifier.ByIMSI, "46003123456789", []byte{'I', 1, 0x46, 0x00, 0x31, 0x23, 0x45, 0x67, 0x89}},
		{verifier.ByIMSI, "001010000000001", []byte{'I', 1, 0x00, 0x10, 0x10, 0x00, 0x00, 0x00, 0x00, 0x1F}},
		{verifier.ByIMSI, "7", []byte{'I', 1, 0x7F}},
		{verifier.ByMSISDN, "+8613912345678", []byte{'I', 2, 0x86, 0x13, 0x91, 0x23, 0x45, 0x67, 0x8F}},
		// Values that do not pack keep the string form.
		{verifier.ByIMSI, "", []byte("iimsi\x00")},
		{verifier.ByIMSI, "46003123456789x", []byte("iimsi\x0046003123456789x")},
		{verifier.ByIMSI, "+460031234567890", []byte("iimsi\x00+460031234567890")},
		{verifier.ByIMSI, strings.Repeat("1", maxPackedDigits+1), []byte("iimsi\x00" + strings.Repeat("1", maxPackedDigits+1))},
		{verifier.ByMSISDN, "8613912345678", []byte("imsisdn\x008613912345678")},
		{verifier.ByMSISDN, "+", []byte("imsisdn\x00+")},
		{verifier.ByMSISDN, "+86 139", []byte("imsisdn\x00+86 139")},
		{verifier.ByIPv4, "10.1.2.3", []byte("iipv4\x0010.1.2.3")},
		{verifier.ByNAI, "123", []byte("inai\x00123")},
	} {
		if got := indexKey(tc.kind, tc.value); !bytes.Equal(got, tc.want) {
			t.Errorf("indexKey(%s, %q) = %x, want %x", tc.kind, tc.value, got, tc.want)
		}
	}
	// Different values have different keys.
	seen := map[string]string{}
	for _, v := range []string{"1", "10", "01", "11", "1F", "100", "0", "00", "000", "+1", "+10"} {
		for _, kind := range []verifier.IndexKind{verifier.ByIMSI, verifier.ByMSISDN} {
			k := string(indexKey(kind, v))
			if prev, ok := seen[k]; ok {
				t.Errorf("%s %q and %s share key %x", kind, v, prev, k)
			}
			seen[k] = fmt.Sprintf("%s %q", kind, v)
		}
	}
}

func TestPackedIndexValue(t *testing.T) {
	for _, tc := range []struct {
		iccid protocol.ICCID
		want  []byte
	}{
		{"8986031864022013389", []byte{19, 0x89, 0x86, 0x03, 0x18, 0x64, 0x02, 0x20, 0x13, 0x38, 0x90}},
		{"89860318640220133897", []byte{20, 0x89, 0x86, 0x03, 0x18, 0x64, 0x02, 0x20, 0x13, 0x38, 0x97}},
		{"8986031ABCDEF0133897", []byte{20, 0x89, 0x86, 0x03, 0x1A, 0xBC, 0xDE, 0xF0, 0x13, 0x38, 0x97}},
		{"8901", []byte{4, 0x89, 0x01}},
		{"8", []byte{1, 0x80}},
		// Not nibbles: kept as they are after a 0.
		{"8986031abc", append([]byte{0}, "8986031abc"...)},
		{"89-01", append([]byte{0}, "89-01"...)},
		{protocol.ICCID(strings.Repeat("8", 256)), append([]byte{0}, strings.Repeat("8", 256)...)},
	} {
		v := packedIndexValue(tc.iccid)
		if !bytes.Equal(v, tc.want) {
			t.Errorf("packedIndexValue(%s) = %x, want %x", tc.iccid, v, tc.want)
		}
		got, err := decodePackedIndexValue(v)
		if err != nil || got != tc.iccid {
			t.Errorf("decode(packedIndexValue(%s)) = %q, %v", tc.iccid, got, err)
		}
	}
	for _, v := range [][]byte{
		nil,
		{0},
		{19},
		{19, 0x89},
		{20, 0x89, 0x86, 0x03, 0x18, 0x64, 0x02, 0x20, 0x13, 0x38, 0x97, 0x00}, // a byte too many
		{3, 0x89, 0x01},        // odd count, last nibble not 0
		{255, 0x89, 0x01, 0x2}, // short
	} {
		if got, err := decodePackedIndexValue(v); !errors.Is(err, errCorrupt) {
			t.Errorf("decodePackedIndexValue(%x) = %q, %v; want errCorrupt", v, got, err)
		}
	}
}

// oldCard is a card as the code before the packed index stored it.
type oldCard struct {
	card *verifier.Card
	// index entries in the string form: kind -> value
	index map[verifier.IndexKind]string
}

// openRaw opens the store in dir as bare Pebble, with the store's options;
// the caller closes it.
func openRaw(t *testing.T, dir string) *pdb.DB {
	t.Helper()
	cache := pdb.NewCache(8 << 20)
	defer cache.Unref() // the DB holds its own reference
	po, err := PebbleOptions(Options{}, cache)
	if err != nil {
		t.Fatal(err)
	}
	db, err := pdb.Open(dir, po)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// writeOldStore writes cards and their index entries the way cardbind
// wrote them before the packed index form: the card under c<ICCID> and
// every index entry as i<kind>\x00<value> -> <ICCID>.
func writeOldStore(t *testing.T, dir string, cards []oldCard) {
	t.Helper()
	db := openRaw(t, dir)
	b := db.NewBatch()
	for _, c := range cards {
		_ = b.Set(append([]byte{'c'}, c.card.ICCID...), encodeCard(c.card), nil)
		for kind, v := range c.index {
			_ = b.Set(append(append([]byte("i"+string(kind)), 0), v...), []byte(c.card.ICCID), nil)
		}
	}
	if err := b.Commit(pdb.Sync); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(db.Flush(), db.Close()); err != nil {
		t.Fatal(err)
	}
}

// keysWithPrefix returns the keys of the store under p.
func keysWithPrefix(t *testing.T, s *Store, p string) []string {
	t.Helper()
	var keys []string
	err := s.scan(ctx, []byte(p), prefixEnd([]byte(p)), func(k, _ []byte) (bool, error) {
		keys = append(keys, string(k))
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// A store written before the packed index form is read by this code:
// Open rewrites its IMSI and MSISDN entries, cards are found by every
// index, and writes move the values as before.
func TestOpenMigratesStringIndexEntries(t *testing.T) {
	dir := t.TempDir()
	const n = 2*migrateBatch + 17 // several batches and a partial one
	iccidOf := func(i int) protocol.ICCID { return protocol.ICCID(fmt.Sprintf("89860318%011d", i)) }
	imsiOf := func(i int) string { return fmt.Sprintf("46003%010d", i*7919%10_000_000_000) }
	msisdnOf := func(i int) string { return fmt.Sprintf("+86139%08d", i) }
	var cards []oldCard
	for i := range n {
		c := &verifier.Card{ICCID: iccidOf(i), Tenant: "acme", IMSI: protocol.IMSI(imsiOf(i)), MSISDN: protocol.MSISDN(msisdnOf(i)),
			Status: verifier.CardStatus{State: protocol.CardUnbound}, Version: 1}
		cards = append(cards, oldCard{card: c, index: map[verifier.IndexKind]string{verifier.ByIMSI: imsiOf(i), verifier.ByMSISDN: msisdnOf(i)}})
	}
	// Values that keep the string form, an ICCID with hex digits and an
	// IP address.
	odd := &verifier.Card{ICCID: "8986031ABCDEF0000001", IMSI: "46003x", MSISDN: "8613900000000", NAI: "m@iot",
		IPv4: netip.MustParseAddr("10.1.2.3"), Version: 1}
	cards = append(cards, oldCard{card: odd, index: map[verifier.IndexKind]string{
		verifier.ByIMSI: "46003x", verifier.ByMSISDN: "8613900000000", verifier.ByNAI: "m@iot", verifier.ByIPv4: "10.1.2.3"}})
	hex := &verifier.Card{ICCID: "8986031ABCDEF0000002", IMSI: "460039999999999", Version: 1}
	cards = append(cards, oldCard{card: hex, index: map[verifier.IndexKind]string{verifier.ByIMSI: "460039999999999"}})
	writeOldStore(t, dir, cards)

	var logs bytes.Buffer
	s, err := Open(dir, Options{CacheSize: 8 << 20, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "rewritten in the packed form") || !strings.Contains(logs.String(), fmt.Sprintf("entries=%d", 2*n+1)) {
		t.Errorf("migration log:\n%s", logs.String())
	}
	if got := keysWithPrefix(t, s, "iimsi"); len(got) != 1 || got[0] != "iimsi\x0046003x" {
		t.Errorf("string-form IMSI keys left: %q", got)
	}
	if got := keysWithPrefix(t, s, "imsisdn"); len(got) != 1 {
		t.Errorf("string-form MSISDN keys left: %q", got)
	}
	if got := keysWithPrefix(t, s, "I"); len(got) != 2*n+1 {
		t.Errorf("%d packed keys, want %d", len(got), 2*n+1)
	}
	for _, i := range []int{0, 1, migrateBatch - 1, migrateBatch, n - 1} {
		for _, q := range []struct {
			by    verifier.IndexKind
			value string
		}{{verifier.ByIMSI, imsiOf(i)}, {verifier.ByMSISDN, msisdnOf(i)}} {
			if c, err := s.FindCard(ctx, q.by, q.value); err != nil || c.ICCID != iccidOf(i) {
				t.Errorf("FindCard(%s, %s) = %v, %v; want %s", q.by, q.value, c, err, iccidOf(i))
			}
		}
	}
	for _, q := range []struct {
		by    verifier.IndexKind
		value string
		want  protocol.ICCID
	}{
		{verifier.ByIMSI, "46003x", odd.ICCID},
		{verifier.ByMSISDN, "8613900000000", odd.ICCID},
		{verifier.ByNAI, "m@iot", odd.ICCID},
		{verifier.ByIPv4, "10.1.2.3", odd.ICCID},
		{verifier.ByIMSI, "460039999999999", hex.ICCID},
	} {
		if c, err := s.FindCard(ctx, q.by, q.value); err != nil || c.ICCID != q.want {
			t.Errorf("FindCard(%s, %s) = %v, %v; want %s", q.by, q.value, c, err, q.want)
		}
	}

	// A migrated IMSI moves to another card and is released by it.
	c0, err := s.Card(ctx, iccidOf(0))
	if err != nil {
		t.Fatal(err)
	}
	c0.IMSI = "460031111111111"
	if err := s.Commit(ctx, &verifier.Commit{Card: c0}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FindCard(ctx, verifier.ByIMSI, imsiOf(0)); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("old IMSI after the change: %v", err)
	}
	if c, err := s.FindCard(ctx, verifier.ByIMSI, "460031111111111"); err != nil || c.ICCID != iccidOf(0) {
		t.Errorf("new IMSI: %v, %v", c, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The next Open has nothing to rewrite and says nothing.
	logs.Reset()
	s, err = Open(dir, Options{CacheSize: 8 << 20, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if strings.Contains(logs.String(), "rewrit") {
		t.Errorf("second Open logged a migration:\n%s", logs.String())
	}
	if c, err := s.FindCard(ctx, verifier.ByMSISDN, msisdnOf(n-1)); err != nil || c.ICCID != iccidOf(n-1) {
		t.Errorf("after reopen: %v, %v", c, err)
	}
}

// An Open that stopped midway (some entries packed, the rest still in
// the string form) finishes the migration on the next Open.
func TestOpenFinishesPartialMigration(t *testing.T) {
	dir := t.TempDir()
	a := &verifier.Card{ICCID: "89860318000000000011", IMSI: "460030000000011", Version: 1}
	b := &verifier.Card{ICCID: "89860318000000000022", IMSI: "460030000000022", Version: 1}
	writeOldStore(t, dir, []oldCard{
		{card: a, index: map[verifier.IndexKind]string{verifier.ByIMSI: string(a.IMSI)}},
		{card: b, index: map[verifier.IndexKind]string{verifier.ByIMSI: string(b.IMSI)}},
	})
	// Migrate a's entry by hand, as a first batch would have.
	db := openRaw(t, dir)
	k := indexKey(verifier.ByIMSI, string(a.IMSI))
	batch := db.NewBatch()
	_ = batch.Set(k, packedIndexValue(a.ICCID), nil)
	_ = batch.Delete([]byte("iimsi\x00"+string(a.IMSI)), nil)
	if err := errors.Join(batch.Commit(pdb.Sync), db.Close()); err != nil {
		t.Fatal(err)
	}

	s := open(t, dir)
	defer s.Close()
	for _, c := range []*verifier.Card{a, b} {
		if got, err := s.FindCard(ctx, verifier.ByIMSI, string(c.IMSI)); err != nil || got.ICCID != c.ICCID {
			t.Errorf("FindCard(%s) = %v, %v", c.IMSI, got, err)
		}
	}
	if got := keysWithPrefix(t, s, "i"); len(got) != 0 {
		t.Errorf("string-form keys left: %q", got)
	}
}

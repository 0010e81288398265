package pebble

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	pdb "github.com/cockroachdb/pebble/v2"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// Index entries.
//
// The IMSI and MSISDN indexes hold one entry per card, tens of millions
// of them, and every RADIUS accounting record looks one up, so their
// entries are packed: the digits as BCD (two per byte, a 0xF nibble
// after an odd last digit) and the ICCID as nibbles:
//
//	I <kind byte> <BCD digits>      -> <packed ICCID>
//
// with kind byte 1 for an IMSI (digits only) and 2 for an MSISDN (the
// digits after its '+'). A typical entry is 10 bytes of key and 11 of
// value, against 21 and 19 in the string form, so the index takes about
// half the block cache. Values of other shapes (IP addresses, NAIs, an
// IMSI with a letter in it) keep the string form:
//
//	i <kind> 0 <value>              -> <ICCID>
//
// indexKey picks the form from the value, so a value has exactly one
// key. Stores written before the packed form have string-form IMSI and
// MSISDN entries; Open rewrites them (migrateIndexes).
//
// A packed ICCID is one byte n, then n nibbles (0-9, A-F for the hex
// digits some operators use) in ceil(n/2) bytes; n = 0 means the bytes
// after it are the ICCID as it is (an ICCID with other characters).

// Kind bytes of packed index keys.
const (
	packedIMSI   = 1
	packedMSISDN = 2
)

// maxPackedDigits bounds the digits of a packed index value; longer
// values (no valid IMSI or MSISDN) keep the string form.
const maxPackedDigits = 32

// packedDigits returns the digits an index value packs to and its kind
// byte, or ok false when the value keeps the string form.
func packedDigits(kind verifier.IndexKind, value string) (digits string, kb byte, ok bool) {
	switch kind {
	case verifier.ByIMSI:
		digits, kb = value, packedIMSI
	case verifier.ByMSISDN:
		if len(value) < 2 || value[0] != '+' {
			return "", 0, false
		}
		digits, kb = value[1:], packedMSISDN
	default:
		return "", 0, false
	}
	if len(digits) == 0 || len(digits) > maxPackedDigits {
		return "", 0, false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return "", 0, false
		}
	}
	return digits, kb, true
}

// indexKey returns the key of an index value: packed for a canonical
// IMSI or MSISDN, the string form otherwise.
func indexKey(kind verifier.IndexKind, value string) []byte {
	if digits, kb, ok := packedDigits(kind, value); ok {
		return appendBCD(append(make([]byte, 0, 2+(len(digits)+1)/2), 'I', kb), digits)
	}
	return appendStringIndexKey(make([]byte, 0, 2+len(kind)+len(value)), kind, value)
}

// appendStringIndexKey appends the string-form key of an index value to
// k: the only form before packed keys, and still the form of values that
// do not pack.
func appendStringIndexKey(k []byte, kind verifier.IndexKind, value string) []byte {
	k = append(append(append(k, 'i'), kind...), 0)
	return append(k, value...)
}

// appendBCD appends decimal digits two per byte, high nibble first, and
// a 0xF nibble after an odd last digit.
func appendBCD(b []byte, digits string) []byte {
	for i := 0; i+1 < len(digits); i += 2 {
		b = append(b, (digits[i]-'0')<<4|(digits[i+1]-'0'))
	}
	if len(digits)%2 == 1 {
		b = append(b, (digits[len(digits)-1]-'0')<<4|0xF)
	}
	return b
}

// nibble returns the 4-bit value of an ICCID character, or ok false.
func nibble(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

const hexDigits = "0123456789ABCDEF"

// packedIndexValue returns the value of a packed index entry that points
// at iccid.
func packedIndexValue(iccid protocol.ICCID) []byte {
	n := len(iccid)
	packable := n > 0 && n <= 255
	for i := 0; packable && i < n; i++ {
		_, packable = nibble(iccid[i])
	}
	if !packable {
		return append([]byte{0}, iccid...)
	}
	v := make([]byte, 1+(n+1)/2)
	v[0] = byte(n)
	for i := 0; i < n; i++ {
		x, _ := nibble(iccid[i])
		if i%2 == 0 {
			v[1+i/2] = x << 4
		} else {
			v[1+i/2] |= x
		}
	}
	return v
}

// decodePackedIndexValue returns the ICCID a packed index entry points at.
func decodePackedIndexValue(v []byte) (protocol.ICCID, error) {
	if len(v) == 0 {
		return "", fmt.Errorf("index entry: empty value: %w", errCorrupt)
	}
	n := int(v[0])
	if n == 0 {
		if len(v) == 1 {
			return "", fmt.Errorf("index entry: empty ICCID: %w", errCorrupt)
		}
		return protocol.ICCID(v[1:]), nil
	}
	if len(v) != 1+(n+1)/2 || (n%2 == 1 && v[len(v)-1]&0xF != 0) {
		return "", fmt.Errorf("index entry: %d bytes for %d nibbles: %w", len(v), n, errCorrupt)
	}
	var buf [255]byte
	for i := 0; i < n; i++ {
		x := v[1+i/2]
		if i%2 == 0 {
			x >>= 4
		}
		buf[i] = hexDigits[x&0xF]
	}
	return protocol.ICCID(buf[:n]), nil
}

// indexValueOf returns the value to store under key for an entry that
// points at iccid: packed for a packed key, the bare ICCID otherwise.
func indexValueOf(key []byte, iccid protocol.ICCID) []byte {
	if key[0] == 'I' {
		return packedIndexValue(iccid)
	}
	return []byte(iccid)
}

// indexTarget returns the ICCID an index entry (key and value) points at.
func indexTarget(key, v []byte) (protocol.ICCID, error) {
	if key[0] == 'I' {
		return decodePackedIndexValue(v)
	}
	return protocol.ICCID(v), nil
}

// migrateBatch is the number of index entries migrateIndexes rewrites
// per batch.
const migrateBatch = 10_000

// migrateIndexes rewrites the string-form IMSI and MSISDN index entries
// that pack (every entry of a store written before the packed form) to
// the packed form, each entry's new key set and old key deleted in one
// batch, so a crash midway leaves every entry in one form or the other
// and the next Open goes on. It runs in Open, before any read or write,
// and costs one short iterator when there is nothing to rewrite. After
// it, an older cardbind no longer finds cards by IMSI or MSISDN in this
// store.
func migrateIndexes(db *pdb.DB, log *slog.Logger) error {
	m := &migration{db: db, log: log, start: time.Now()}
	for _, kind := range []verifier.IndexKind{verifier.ByIMSI, verifier.ByMSISDN} {
		if err := m.index(kind); err != nil {
			return fmt.Errorf("migrate %s index: %w", kind, err)
		}
	}
	if m.n == 0 {
		return nil
	}
	// One synced write makes the unsynced batches before it durable.
	if err := db.LogData(nil, pdb.Sync); err != nil {
		return fmt.Errorf("migrate indexes: sync: %w", err)
	}
	log.Info("pebble: index entries rewritten in the packed form",
		"entries", m.n, "took", time.Since(m.start).Round(time.Millisecond))
	return nil
}

// migration is the state of migrateIndexes.
type migration struct {
	db    *pdb.DB
	log   *slog.Logger
	start time.Time
	n     int // entries rewritten
}

// index rewrites one index's string-form entries that pack.
func (m *migration) index(kind verifier.IndexKind) (err error) {
	lower := appendStringIndexKey(nil, kind, "")
	it, err := m.db.NewIter(&pdb.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	b := m.db.NewBatch()
	defer func() { _ = b.Close() }()
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		value := string(k[len(lower):])
		if _, _, ok := packedDigits(kind, value); !ok {
			continue // keeps the string form
		}
		if m.n == 0 {
			m.log.Info("pebble: rewriting the IMSI and MSISDN index entries of an earlier version in the packed form; this runs once, one to two minutes per 10 million cards")
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		nk := indexKey(kind, value)
		if err := b.Set(nk, indexValueOf(nk, protocol.ICCID(v)), nil); err != nil {
			return err
		}
		if err := b.Delete(k, nil); err != nil {
			return err
		}
		if m.n++; m.n%migrateBatch == 0 {
			if err := b.Commit(pdb.NoSync); err != nil {
				return err
			}
			_ = b.Close()
			b = m.db.NewBatch()
			if m.n%(100*migrateBatch) == 0 {
				m.log.Info("pebble: rewriting index entries", "entries", m.n, "elapsed", time.Since(m.start).Round(time.Second))
			}
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	if b.Empty() {
		return nil
	}
	return b.Commit(pdb.NoSync)
}

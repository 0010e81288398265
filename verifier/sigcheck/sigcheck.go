// Package sigcheck checks the Ed25519 signatures of device reports, with
// each device key's precomputed form kept for its next report.
//
// The verifier checks one signature per report, which is its largest cost.
// crypto/ed25519 decompresses the public key on every call and takes about
// 90-100 µs on a 2-core EPYC; here each key is expanded once
// (github.com/oasisprotocol/curve25519-voi, about 10 µs) into a table, and
// every check with it takes about 45 µs. The verification equation and
// encoding rules are those of crypto/ed25519 (voi's VerifyOptionsStdLib:
// cofactorless, canonical S and R), so a signature is accepted here
// exactly when protocol.VerifyReport accepts it.
//
// VerifyBatch checks many signatures at once, at about 17-24 µs each in
// batches of 64 and 15-20 µs in batches of 256 (see its doc for the one
// rule in which it differs).
//
// A fleet larger than the kept keys (DefaultKeys) would have every key
// expanded for one check and dropped before the device's next report.
// So a key is expanded only while there is room, or when it comes back
// soon after it was last seen; the others are checked unexpanded, which
// costs less than expanding them for one use (BenchmarkVerifyBatchFleet:
// 29 µs a signature in batches of 64 against 44-46 µs).
package sigcheck

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/oasisprotocol/curve25519-voi/curve"
	"github.com/oasisprotocol/curve25519-voi/primitives/ed25519"

	"github.com/cardbind/cardbind/protocol"
)

// DefaultKeys is the number of expanded keys a Verifier keeps when New is
// given 0: about 1.5 KiB each.
const DefaultKeys = 16384

// Verifier checks report signatures. It is safe for concurrent use.
type Verifier struct {
	max  int
	opts *ed25519.Options // verify as crypto/ed25519 does
	// batchOpts are the same rules with the cofactored equation, refusing
	// keys of small order (which are checked with opts instead).
	batchOpts *ed25519.Options
	mu        sync.Mutex
	keys      map[string]*key // by the key's 32 bytes
	seen      recent          // keys met but not kept
	suspects  recent          // keys with a signature that failed; checked alone
	fallbacks atomic.Uint64   // batches that failed and were checked item by item
}

// suspectKeys is how many keys whose signatures failed the Verifier keeps
// out of batches (the last ones to fail).
const suspectKeys = 4096

// seenKeys is how many keys met but not kept the Verifier remembers: a
// key that comes back while remembered is expanded and kept.
const seenKeys = 1 << 16

// recent remembers the hashes of the last n keys added, oldest forgotten
// first.
type recent struct {
	seed maphash.Seed
	set  map[uint64]struct{}
	ring []uint64
	next int
}

func newRecent(n int) recent {
	return recent{seed: maphash.MakeSeed(), set: make(map[uint64]struct{}), ring: make([]uint64, 0, n)}
}

// has reports whether pub is remembered.
func (r *recent) has(pub []byte) bool {
	_, ok := r.set[maphash.Bytes(r.seed, pub)]
	return ok
}

// add remembers pub; it reports whether pub was remembered already.
func (r *recent) add(pub []byte) bool {
	h := maphash.Bytes(r.seed, pub)
	if _, ok := r.set[h]; ok {
		return true
	}
	switch {
	case cap(r.ring) == 0:
		return false
	case len(r.ring) < cap(r.ring):
		r.ring = append(r.ring, h)
	default:
		delete(r.set, r.ring[r.next])
		r.ring[r.next] = h
		r.next = (r.next + 1) % len(r.ring)
	}
	r.set[h] = struct{}{}
	return false
}

// key is a public key's expanded form, and whether the key is a point of
// small order, which any signature verifies against in the cofactored
// equation and which VerifyBatch therefore checks on its own.
type key struct {
	exp        *ed25519.ExpandedPublicKey
	smallOrder bool
}

// New returns a Verifier that keeps up to maxKeys expanded keys
// (DefaultKeys when 0 or less). Once it is full, a new key is expanded
// only when it comes back while the Verifier still remembers meeting it
// (the last seenKeys keys it met), and then takes the place of a kept one;
// until then it is checked unexpanded.
func New(maxKeys int) *Verifier {
	if maxKeys <= 0 {
		maxKeys = DefaultKeys
	}
	batch := *ed25519.VerifyOptionsStdLib
	batch.CofactorlessVerify = false
	batch.AllowSmallOrderA = false
	return &Verifier{
		max:       maxKeys,
		opts:      &ed25519.Options{Verify: ed25519.VerifyOptionsStdLib},
		batchOpts: &ed25519.Options{Verify: &batch},
		keys:      make(map[string]*key),
		seen:      newRecent(seenKeys),
		suspects:  newRecent(suspectKeys),
	}
}

// VerifyReport checks the report's signature against the device's public
// key, like protocol.VerifyReport, with the same errors (wrapping
// protocol.ErrBadSignature). It says nothing about replay; see
// protocol.CheckSequence.
func (v *Verifier) VerifyReport(pub []byte, r *protocol.Report) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("report from %s: public key has %d bytes: %w", r.DeviceID, len(pub), protocol.ErrBadSignature)
	}
	if len(r.Sig) != protocol.SignatureSize || !v.Verify(pub, protocol.CanonicalReport(r), r.Sig) {
		return fmt.Errorf("report from %s seq %d: %w", r.DeviceID, r.Seq, protocol.ErrBadSignature)
	}
	return nil
}

// Verify reports whether sig is pub's Ed25519 signature of msg, exactly as
// crypto/ed25519.Verify does, except that it returns false rather than
// panic for a key that is not 32 bytes.
func (v *Verifier) Verify(pub, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	k, ok := v.key(pub)
	switch {
	case !ok:
		return false
	case k == nil:
		return ed25519.VerifyWithOptions(ed25519.PublicKey(pub), msg, sig, v.opts)
	}
	return ed25519.VerifyExpandedWithOptions(k.exp, msg, sig, v.opts)
}

// key returns pub's expanded form, kept or made now. It returns nil and
// true when pub is to be checked unexpanded (see New), and false for
// bytes that are not a point on the curve, which verify nothing.
func (v *Verifier) key(pub []byte) (*key, bool) {
	v.mu.Lock()
	k, ok := v.keys[string(pub)]
	if !ok && len(v.keys) >= v.max && !v.seen.add(pub) {
		v.mu.Unlock()
		return nil, true
	}
	v.mu.Unlock()
	if ok {
		return k, true
	}
	exp, err := ed25519.NewExpandedPublicKey(ed25519.PublicKey(pub))
	if err != nil {
		return nil, false
	}
	small, _ := smallOrder(pub)
	k = &key{exp: exp, smallOrder: small}
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.keys) >= v.max {
		for old := range v.keys {
			delete(v.keys, old)
			break
		}
	}
	v.keys[string(pub)] = k
	return k, true
}

// CheckKey tells whether pub can serve as a device key: 32 bytes that
// are a point on the curve and not one of small order (for which anyone
// can make signatures that verify). Enrolment refuses other keys.
func CheckKey(pub []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	small, ok := smallOrder(pub)
	switch {
	case !ok:
		return errors.New("public key is not a point on the curve")
	case small:
		return errors.New("public key is a point of small order: anyone could sign for it")
	}
	return nil
}

// smallOrder tells whether pub is a point of small order; ok is false
// when it is no point at all.
func smallOrder(pub []byte) (small, ok bool) {
	var c curve.CompressedEdwardsY
	var a curve.EdwardsPoint
	if _, err := c.SetBytes(pub); err != nil {
		return false, false
	}
	if _, err := a.SetCompressedY(&c); err != nil {
		return false, false
	}
	return a.IsSmallOrder(), true
}

// Len returns the number of expanded keys kept.
func (v *Verifier) Len() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.keys)
}

// Item is one signature for VerifyBatch: Sig is Pub's signature of Msg.
type Item struct {
	Pub, Msg, Sig []byte
}

// VerifyBatch checks every item's signature and reports, per item, whether
// it verified. When all of them do, which is the usual case, it costs one
// batch equation: about 17-24 µs a signature for 64 items against 45 µs
// for Verify. When the batch fails, each item is checked on its own with
// the same rules: one bad signature costs the whole batch again, item by
// item. So the key of a signature that failed is kept out of batches
// while it is remembered (the last suspectKeys such keys): its items are
// checked alone, and a device that sends bad signatures costs a check
// each, not a batch each.
//
// The rules are Verify's (crypto/ed25519's) except for one: the
// equation is the cofactored one ([8]sB = [8]R + [8]kA, which RFC 8032
// permits), where Verify's is cofactorless (sB = R + kA). The two differ
// only for a signature whose R is off by a point of small order, and only
// the key's holder can make one (it needs the discrete logarithm of A):
// so such a signature, accepted here and refused by crypto/ed25519, still
// proves that the key's holder signed the message. A key of small order,
// for which anyone could make a signature the cofactored equation
// accepts, never goes into a batch; its items are checked with Verify. A
// signature crypto/ed25519 accepts is always accepted here, and whether
// one is accepted does not depend on the others in the batch.
func (v *Verifier) VerifyBatch(items []Item) []bool {
	ok := make([]bool, len(items))
	exp := make([]*ed25519.ExpandedPublicKey, len(items)) // nil: checked unexpanded
	batch := make([]int, 0, len(items))
	plain := false
	for i, it := range items {
		if len(it.Pub) != ed25519.PublicKeySize || len(it.Sig) != ed25519.SignatureSize {
			continue
		}
		k, valid := v.key(it.Pub)
		switch {
		case !valid:
			continue
		case k != nil && k.smallOrder:
			ok[i] = ed25519.VerifyExpandedWithOptions(k.exp, it.Msg, it.Sig, v.opts)
			continue
		case k != nil:
			exp[i] = k.exp
		}
		if v.suspect(it.Pub) {
			ok[i] = v.verifyOne(exp[i], it)
			continue
		}
		if exp[i] == nil {
			plain = true
		}
		batch = append(batch, i)
	}
	if len(batch) >= 2 {
		bv := ed25519.NewBatchVerifierWithCapacity(len(batch))
		if plain {
			// Else voi would expand the unexpanded keys for this batch.
			bv.ForceNoPublicKeyExpansion()
		}
		for _, i := range batch {
			if exp[i] != nil {
				bv.AddExpandedWithOptions(exp[i], items[i].Msg, items[i].Sig, v.batchOpts)
			} else {
				bv.AddWithOptions(ed25519.PublicKey(items[i].Pub), items[i].Msg, items[i].Sig, v.batchOpts)
			}
		}
		if bv.VerifyBatchOnly(nil) {
			for _, i := range batch {
				ok[i] = true
			}
			return ok
		}
		v.fallbacks.Add(1)
	}
	for _, i := range batch {
		if ok[i] = v.verifyOne(exp[i], items[i]); !ok[i] {
			v.mu.Lock()
			v.suspects.add(items[i].Pub)
			v.mu.Unlock()
		}
	}
	return ok
}

// suspect tells whether pub had a signature fail lately.
func (v *Verifier) suspect(pub []byte) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.suspects.has(pub)
}

// verifyOne checks one item with VerifyBatch's rules: the cofactored
// equation, or crypto/ed25519's for a key of small order (which
// batchOpts refuses). exp is the item's key expanded, or nil.
func (v *Verifier) verifyOne(exp *ed25519.ExpandedPublicKey, it Item) bool {
	if exp != nil {
		return ed25519.VerifyExpandedWithOptions(exp, it.Msg, it.Sig, v.batchOpts)
	}
	pub := ed25519.PublicKey(it.Pub)
	if small, _ := smallOrder(it.Pub); small {
		return ed25519.VerifyWithOptions(pub, it.Msg, it.Sig, v.opts)
	}
	return ed25519.VerifyWithOptions(pub, it.Msg, it.Sig, v.batchOpts)
}

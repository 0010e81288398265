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
// VerifyBatch checks many signatures at once, at about 17 µs each in
// batches of 64 (see its doc for the one rule in which it differs).
package sigcheck

import (
	"fmt"
	"sync"

	"github.com/oasisprotocol/curve25519-voi/curve"
	"github.com/oasisprotocol/curve25519-voi/primitives/ed25519"

	"github.com/cardbind/cardbind/protocol"
)

// DefaultKeys is the number of expanded keys a Verifier keeps when New is
// given 0: about 1.5 KiB each.
const DefaultKeys = 16384

// Verifier checks report signatures. It is safe for concurrent use.
type Verifier struct {
	max       int
	opts      *ed25519.Options // verify as crypto/ed25519 does
	batchOpts *ed25519.Options // the same rules with the cofactored equation
	mu        sync.Mutex
	keys      map[string]*key // by the key's 32 bytes
}

// key is a public key's expanded form, and whether the key is a point of
// small order, which any signature verifies against in the cofactored
// equation and which VerifyBatch therefore checks on its own.
type key struct {
	exp        *ed25519.ExpandedPublicKey
	smallOrder bool
}

// New returns a Verifier that keeps up to maxKeys expanded keys
// (DefaultKeys when 0 or less). When it is full, a key seen before is
// dropped for each new one.
func New(maxKeys int) *Verifier {
	if maxKeys <= 0 {
		maxKeys = DefaultKeys
	}
	batch := *ed25519.VerifyOptionsStdLib
	batch.CofactorlessVerify = false
	return &Verifier{
		max:       maxKeys,
		opts:      &ed25519.Options{Verify: ed25519.VerifyOptionsStdLib},
		batchOpts: &ed25519.Options{Verify: &batch},
		keys:      make(map[string]*key),
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
	return ok && ed25519.VerifyExpandedWithOptions(k.exp, msg, sig, v.opts)
}

// key returns pub's expanded form, expanding and keeping it on first use.
// It returns false for bytes that are not a point on the curve, which
// verify nothing.
func (v *Verifier) key(pub []byte) (*key, bool) {
	v.mu.Lock()
	k, ok := v.keys[string(pub)]
	v.mu.Unlock()
	if ok {
		return k, true
	}
	exp, err := ed25519.NewExpandedPublicKey(ed25519.PublicKey(pub))
	if err != nil {
		return nil, false
	}
	var c curve.CompressedEdwardsY
	var a curve.EdwardsPoint
	if _, err := c.SetBytes(pub); err != nil {
		return nil, false
	}
	if _, err := a.SetCompressedY(&c); err != nil {
		return nil, false
	}
	k = &key{exp: exp, smallOrder: a.IsSmallOrder()}
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
// batch equation: about 17 µs a signature for 64 items against 45 µs for
// Verify. When the batch fails, each item is checked on its own with
// the same rules, so a bad signature costs its share of the batch on top.
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
	keys := make([]*key, len(items))
	batch := make([]int, 0, len(items))
	for i, it := range items {
		if len(it.Pub) != ed25519.PublicKeySize || len(it.Sig) != ed25519.SignatureSize {
			continue
		}
		k, valid := v.key(it.Pub)
		if !valid {
			continue
		}
		keys[i] = k
		if k.smallOrder {
			ok[i] = ed25519.VerifyExpandedWithOptions(k.exp, it.Msg, it.Sig, v.opts)
			continue
		}
		batch = append(batch, i)
	}
	if len(batch) < 2 {
		for _, i := range batch {
			ok[i] = ed25519.VerifyExpandedWithOptions(keys[i].exp, items[i].Msg, items[i].Sig, v.batchOpts)
		}
		return ok
	}
	bv := ed25519.NewBatchVerifierWithCapacity(len(batch))
	for _, i := range batch {
		bv.AddExpandedWithOptions(keys[i].exp, items[i].Msg, items[i].Sig, v.batchOpts)
	}
	if bv.VerifyBatchOnly(nil) {
		for _, i := range batch {
			ok[i] = true
		}
		return ok
	}
	for _, i := range batch {
		ok[i] = ed25519.VerifyExpandedWithOptions(keys[i].exp, items[i].Msg, items[i].Sig, v.batchOpts)
	}
	return ok
}

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
package sigcheck

import (
	"fmt"
	"sync"

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
	mu   sync.Mutex
	keys map[string]*ed25519.ExpandedPublicKey // by the key's 32 bytes
}

// New returns a Verifier that keeps up to maxKeys expanded keys
// (DefaultKeys when 0 or less). When it is full, a key seen before is
// dropped for each new one.
func New(maxKeys int) *Verifier {
	if maxKeys <= 0 {
		maxKeys = DefaultKeys
	}
	return &Verifier{max: maxKeys, opts: &ed25519.Options{Verify: ed25519.VerifyOptionsStdLib}, keys: make(map[string]*ed25519.ExpandedPublicKey)}
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
	key, ok := v.key(pub)
	return ok && ed25519.VerifyExpandedWithOptions(key, msg, sig, v.opts)
}

// key returns pub's expanded form, expanding and keeping it on first use.
// It returns false for bytes that are not a point on the curve, which
// verify nothing.
func (v *Verifier) key(pub []byte) (*ed25519.ExpandedPublicKey, bool) {
	v.mu.Lock()
	k, ok := v.keys[string(pub)]
	v.mu.Unlock()
	if ok {
		return k, true
	}
	k, err := ed25519.NewExpandedPublicKey(ed25519.PublicKey(pub))
	if err != nil {
		return nil, false
	}
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

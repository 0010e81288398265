package protocol

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// SignatureSize is the size of a report or command signature (Ed25519).
const SignatureSize = ed25519.SignatureSize

// ErrBadSignature is returned when a signature does not verify: the message
// was forged or changed on the way.
var ErrBadSignature = errors.New("signature does not verify")

// ErrReplay is returned when a report's sequence number is not above the
// last one accepted from its device.
var ErrReplay = errors.New("sequence number already used")

// Domain-separation prefixes: a signature over one kind of message can never
// verify as another kind.
const (
	reportDomain  = "cardbind report v1\x00"
	commandDomain = "cardbind command v1\x00"
)

// SignReport signs the report's canonical encoding with the device key and
// stores the signature in r.Sig.
func SignReport(key ed25519.PrivateKey, r *Report) {
	r.Sig = ed25519.Sign(key, CanonicalReport(r))
}

// VerifyReport checks the report's signature against the device's public
// key. It says nothing about replay; see CheckSequence.
func VerifyReport(pub ed25519.PublicKey, r *Report) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("report from %s: public key has %d bytes: %w", r.DeviceID, len(pub), ErrBadSignature)
	}
	if len(r.Sig) != SignatureSize || !ed25519.Verify(pub, CanonicalReport(r), r.Sig) {
		return fmt.Errorf("report from %s seq %d: %w", r.DeviceID, r.Seq, ErrBadSignature)
	}
	return nil
}

// CheckSequence accepts seq only when it is above the last sequence number
// accepted from the device (0 when none was). A replayed report, or a
// duplicate delivery of one already processed, gets ErrReplay.
func CheckSequence(last, seq uint64) error {
	if seq <= last {
		return fmt.Errorf("seq %d, last accepted %d: %w", seq, last, ErrReplay)
	}
	return nil
}

// CanonicalReport returns the bytes a report signature covers: every field
// except the signature, in a fixed order, each tagged and length-prefixed,
// so that no two different reports share an encoding. It does not depend on
// JSON formatting.
func CanonicalReport(r *Report) []byte {
	// Sized for a report with every field: one allocation.
	e := canon{b: make([]byte, 0, 384+len(r.DeviceID)+len(r.Acks)*16)}
	e.b = append(e.b, reportDomain...)
	e.uint(1, uint64(r.Version))
	e.str(2, r.DeviceID)
	e.uint(3, r.Seq)
	e.uint(4, uint64(r.Time.UnixNano()))
	e.str(5, string(r.Reason))
	e.str(6, string(r.IMEI))
	e.str(7, string(r.IMEISV))
	e.str(8, string(r.SIM))
	e.str(9, string(r.ICCID))
	e.str(10, string(r.IMSI))
	e.str(11, string(r.Registration.State))
	e.uint(12, uint64(int64(r.Registration.Stat)))
	e.str(13, r.Registration.Tech)
	if c := r.Registration.Cell; c != nil {
		e.str(14, c.MCC)
		e.str(15, c.MNC)
		e.uint(16, uint64(c.Area))
		e.uint(17, c.ID)
	}
	if l := r.Location; l != nil {
		e.uint(18, math.Float64bits(l.Lat))
		e.uint(19, math.Float64bits(l.Lon))
		e.uint(20, math.Float64bits(l.AccuracyM))
		e.str(21, l.Source)
	}
	if s := r.Signal; s != nil {
		e.uint(22, uint64(int64(s.RSSIdBm)))
	}
	e.uint(23, uint64(len(r.Acks)))
	for _, a := range r.Acks {
		e.str(24, a)
	}
	e.uint(25, r.Dropped)
	return e.b
}

// SignCommand signs the command with the verifier's command key.
func SignCommand(key ed25519.PrivateKey, c *Command) {
	c.Sig = ed25519.Sign(key, CanonicalCommand(c))
}

// VerifyCommand checks a command's signature against the verifier's command
// key, which the device received at enrolment.
func VerifyCommand(pub ed25519.PublicKey, c *Command) error {
	if len(pub) != ed25519.PublicKeySize || len(c.Sig) != SignatureSize ||
		!ed25519.Verify(pub, CanonicalCommand(c), c.Sig) {
		return fmt.Errorf("command %s: %w", c.ID, ErrBadSignature)
	}
	return nil
}

// CanonicalCommand returns the bytes a command signature covers.
func CanonicalCommand(c *Command) []byte {
	var e canon
	e.b = append(e.b, commandDomain...)
	e.uint(1, uint64(c.Version))
	e.str(2, c.ID)
	e.str(3, c.DeviceID)
	e.str(4, string(c.Kind))
	e.uint(5, uint64(c.Issued.UnixNano()))
	e.uint(6, uint64(c.Expires.UnixNano()))
	return e.b
}

// canon builds a canonical encoding: each field is a tag byte, then for
// strings a uvarint length and the bytes, for integers 8 big-endian bytes.
type canon struct{ b []byte }

func (e *canon) str(tag byte, s string) {
	e.b = append(e.b, tag, 's')
	e.b = binary.AppendUvarint(e.b, uint64(len(s)))
	e.b = append(e.b, s...)
}

func (e *canon) uint(tag byte, v uint64) {
	e.b = append(e.b, tag, 'u')
	e.b = binary.BigEndian.AppendUint64(e.b, v)
}

package pebble

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// Value formats: the first byte of every stored value.
const (
	// formatJSON is encoding/json of the record (history; devices stored
	// before formatDevice).
	formatJSON = 1
	// formatCard is the compact binary card encoding below.
	formatCard = 2
	// formatOutbox is an 8-byte big-endian NotBefore (Unix nanoseconds,
	// 0 for none) followed by the JSON entry, so PendingOutbox skips
	// entries that are not due without decoding them.
	formatOutbox = 3
	// formatDevice is the compact binary device encoding below. Devices
	// stored by earlier versions as formatJSON are still read.
	formatDevice = 4
)

// The card encoding is a presence mask (uvarint) followed by the present
// fields in bit order. Strings and byte strings are uvarint length +
// bytes, integers uvarints, times varint seconds + uvarint nanoseconds
// (decoded in UTC), floats 8 bytes. Boolean fields are mask bits with no
// payload. The ICCID is not stored: it is the key. A mask bit this code
// does not know is an error, so a value written by a newer format is
// never half-read.
const (
	cTenant = 1 << iota
	cIMSI
	cMSISDN
	cNAI
	cIPv4
	cIPv6
	cBinding
	cState
	cReason
	cManual
	cGraceUntil
	cOffendingIMEI
	cLastIMEI
	cLastSource
	cLastSeen
	cLastLocation
	cSeq
	cVersion
	cKnown = cVersion<<1 - 1
)

// Binding fields, in the nested mask.
const (
	bIMEIs = 1 << iota
	bTAC
	bMode
	bGrace
	bAutoResume
	bArea
	bCreated
	bCreatedBy
	bKnown = bCreatedBy<<1 - 1
)

// encodeCard returns the stored form of c.
func encodeCard(c *verifier.Card) []byte {
	var mask uint64
	set := func(bit uint64, on bool) {
		if on {
			mask |= bit
		}
	}
	st := &c.Status
	set(cTenant, c.Tenant != "")
	set(cIMSI, c.IMSI != "")
	set(cMSISDN, c.MSISDN != "")
	set(cNAI, c.NAI != "")
	set(cIPv4, c.IPv4.IsValid())
	set(cIPv6, c.IPv6.IsValid())
	set(cBinding, c.Binding != nil)
	set(cState, st.State != "")
	set(cReason, st.Reason != "")
	set(cManual, st.Manual)
	set(cGraceUntil, !st.GraceUntil.IsZero())
	set(cOffendingIMEI, st.OffendingIMEI != "")
	set(cLastIMEI, st.LastIMEI != "")
	set(cLastSource, st.LastSource != "")
	set(cLastSeen, !st.LastSeen.IsZero())
	set(cLastLocation, st.LastLocation != nil)
	set(cSeq, st.Seq != 0)
	set(cVersion, c.Version != 0)

	// Sized for a typical bound card with its status (about 120
	// bytes), so that it is made once: the row cache keeps it.
	b := make([]byte, 0, 144)
	b = append(b, formatCard)
	b = binary.AppendUvarint(b, mask)
	str := func(bit uint64, s string) {
		if mask&bit != 0 {
			b = appendString(b, s)
		}
	}
	str(cTenant, c.Tenant)
	str(cIMSI, string(c.IMSI))
	str(cMSISDN, string(c.MSISDN))
	str(cNAI, c.NAI)
	if mask&cIPv4 != 0 {
		raw, _ := c.IPv4.MarshalBinary()
		b = appendString(b, string(raw))
	}
	if mask&cIPv6 != 0 {
		raw, _ := c.IPv6.MarshalBinary()
		b = appendString(b, string(raw))
	}
	if c.Binding != nil {
		b = appendBinding(b, c.Binding)
	}
	str(cState, string(st.State))
	str(cReason, string(st.Reason))
	if mask&cGraceUntil != 0 {
		b = appendTime(b, st.GraceUntil)
	}
	str(cOffendingIMEI, string(st.OffendingIMEI))
	str(cLastIMEI, string(st.LastIMEI))
	str(cLastSource, string(st.LastSource))
	if mask&cLastSeen != 0 {
		b = appendTime(b, st.LastSeen)
	}
	if l := st.LastLocation; l != nil {
		b = appendFloat(b, l.Lat)
		b = appendFloat(b, l.Lon)
		b = appendFloat(b, l.AccuracyM)
		b = appendString(b, l.Source)
	}
	if mask&cSeq != 0 {
		b = binary.AppendUvarint(b, st.Seq)
	}
	if mask&cVersion != 0 {
		b = binary.AppendUvarint(b, c.Version)
	}
	return b
}

func appendBinding(b []byte, bd *verifier.Binding) []byte {
	var mask uint64
	set := func(bit uint64, on bool) {
		if on {
			mask |= bit
		}
	}
	set(bIMEIs, len(bd.IMEIs) > 0)
	set(bTAC, bd.TAC != "")
	set(bMode, bd.Mode != "")
	set(bGrace, bd.Grace != 0)
	set(bAutoResume, bd.AutoResume)
	set(bArea, bd.Area != nil)
	set(bCreated, !bd.Created.IsZero())
	set(bCreatedBy, bd.CreatedBy != "")
	b = binary.AppendUvarint(b, mask)
	if mask&bIMEIs != 0 {
		b = binary.AppendUvarint(b, uint64(len(bd.IMEIs)))
		for _, m := range bd.IMEIs {
			b = appendString(b, string(m))
		}
	}
	if mask&bTAC != 0 {
		b = appendString(b, bd.TAC)
	}
	if mask&bMode != 0 {
		b = appendString(b, string(bd.Mode))
	}
	if mask&bGrace != 0 {
		b = binary.AppendVarint(b, int64(bd.Grace))
	}
	if a := bd.Area; a != nil {
		b = appendFloat(b, a.Lat)
		b = appendFloat(b, a.Lon)
		b = appendFloat(b, a.RadiusM)
	}
	if mask&bCreated != 0 {
		b = appendTime(b, bd.Created)
	}
	if mask&bCreatedBy != 0 {
		b = appendString(b, bd.CreatedBy)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func appendFloat(b []byte, f float64) []byte {
	return binary.BigEndian.AppendUint64(b, math.Float64bits(f))
}

// errCorrupt is returned for a value that does not decode.
var errCorrupt = errors.New("corrupt value")

// reader decodes the card encoding; the first error sticks.
type reader struct {
	b   []byte
	err error
	// src, when set, is the value b started as, as a string: strings
	// are cut from it, one allocation for all of a card's strings.
	src string
	// srcb, when set, is a copy of the value b started as: bytes cuts
	// byte strings from it.
	srcb []byte
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.err = errCorrupt
		return ""
	}
	var s string
	if off := len(r.src) - len(r.b); r.src != "" {
		s = r.src[off : off+int(n)]
	} else {
		s = string(r.b[:n])
	}
	r.b = r.b[n:]
	return s
}

// bytes reads a byte string: cut from srcb when set (the caller may keep
// it, not append to it), else a copy.
func (r *reader) bytes() []byte {
	if r.srcb == nil {
		return []byte(r.string())
	}
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errCorrupt
		return nil
	}
	off := len(r.srcb) - len(r.b)
	r.b = r.b[n:]
	return r.srcb[off : off+int(n) : off+int(n)]
}

func (r *reader) float() float64 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 8 {
		r.err = errCorrupt
		return 0
	}
	v := math.Float64frombits(binary.BigEndian.Uint64(r.b))
	r.b = r.b[8:]
	return v
}

func (r *reader) time() time.Time {
	s, ns := r.varint(), r.uvarint()
	if r.err != nil {
		return time.Time{}
	}
	if ns >= 1e9 {
		r.err = errCorrupt
		return time.Time{}
	}
	return time.Unix(s, int64(ns)).UTC()
}

// decodeCard decodes a stored card; iccid is its key.
func decodeCard(iccid protocol.ICCID, v []byte) (*verifier.Card, error) {
	if len(v) == 0 || v[0] != formatCard {
		return nil, fmt.Errorf("card %s: unknown value format: %w", iccid, errCorrupt)
	}
	r := &reader{b: v[1:], src: string(v[1:])}
	mask := r.uvarint()
	if mask&^cKnown != 0 {
		return nil, fmt.Errorf("card %s: unknown fields %#x (written by a newer cardbind?): %w", iccid, mask&^cKnown, errCorrupt)
	}
	c := &verifier.Card{ICCID: iccid}
	st := &c.Status
	has := func(bit uint64) bool { return mask&bit != 0 }
	if has(cTenant) {
		c.Tenant = r.string()
	}
	if has(cIMSI) {
		c.IMSI = protocol.IMSI(r.string())
	}
	if has(cMSISDN) {
		c.MSISDN = protocol.MSISDN(r.string())
	}
	if has(cNAI) {
		c.NAI = r.string()
	}
	if has(cIPv4) {
		if err := c.IPv4.UnmarshalBinary([]byte(r.string())); err != nil && r.err == nil {
			r.err = errCorrupt
		}
	}
	if has(cIPv6) {
		if err := c.IPv6.UnmarshalBinary([]byte(r.string())); err != nil && r.err == nil {
			r.err = errCorrupt
		}
	}
	if has(cBinding) {
		c.Binding = r.binding()
	}
	if has(cState) {
		st.State = protocol.CardState(r.string())
	}
	if has(cReason) {
		st.Reason = protocol.Decision(r.string())
	}
	st.Manual = has(cManual)
	if has(cGraceUntil) {
		st.GraceUntil = r.time()
	}
	if has(cOffendingIMEI) {
		st.OffendingIMEI = protocol.IMEI(r.string())
	}
	if has(cLastIMEI) {
		st.LastIMEI = protocol.IMEI(r.string())
	}
	if has(cLastSource) {
		st.LastSource = protocol.Source(r.string())
	}
	if has(cLastSeen) {
		st.LastSeen = r.time()
	}
	if has(cLastLocation) {
		st.LastLocation = &protocol.Location{Lat: r.float(), Lon: r.float(), AccuracyM: r.float(), Source: r.string()}
	}
	if has(cSeq) {
		st.Seq = r.uvarint()
	}
	if has(cVersion) {
		c.Version = r.uvarint()
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errCorrupt
	}
	if r.err != nil {
		return nil, fmt.Errorf("card %s: %w", iccid, r.err)
	}
	return c, nil
}

func (r *reader) binding() *verifier.Binding {
	mask := r.uvarint()
	if mask&^bKnown != 0 && r.err == nil {
		r.err = errCorrupt
	}
	if r.err != nil {
		return nil
	}
	bd := &verifier.Binding{AutoResume: mask&bAutoResume != 0}
	if mask&bIMEIs != 0 {
		n := r.uvarint()
		if n == 0 || n > uint64(len(r.b)) { // each IMEI takes at least one byte
			r.err = errCorrupt
			return nil
		}
		bd.IMEIs = make([]protocol.IMEI, n)
		for i := range bd.IMEIs {
			bd.IMEIs[i] = protocol.IMEI(r.string())
		}
	}
	if mask&bTAC != 0 {
		bd.TAC = r.string()
	}
	if mask&bMode != 0 {
		bd.Mode = verifier.Mode(r.string())
	}
	if mask&bGrace != 0 {
		bd.Grace = time.Duration(r.varint())
	}
	if mask&bArea != 0 {
		bd.Area = &verifier.Area{Lat: r.float(), Lon: r.float(), RadiusM: r.float()}
	}
	if mask&bCreated != 0 {
		bd.Created = r.time()
	}
	if mask&bCreatedBy != 0 {
		bd.CreatedBy = r.string()
	}
	return bd
}

// The device encoding, like the card's: a presence mask (uvarint), then
// the present fields in bit order. The id is not stored: it is the key.
// It is read and written on every report, hence not JSON.
const (
	dTenant = 1 << iota
	dPublicKey
	dSecretHash
	dIMEI
	dLastSeq
	dLastICCID
	dLastIMEI
	dEnrolled
	dVersion
	dKnown = dVersion<<1 - 1
)

// encodeDevice returns the stored form of d.
func encodeDevice(d *verifier.Device) []byte {
	var mask uint64
	set := func(bit uint64, on bool) {
		if on {
			mask |= bit
		}
	}
	set(dTenant, d.Tenant != "")
	set(dPublicKey, d.PublicKey != nil)
	set(dSecretHash, d.SecretHash != nil)
	set(dIMEI, d.IMEI != "")
	set(dLastSeq, d.LastSeq != 0)
	set(dLastICCID, d.LastICCID != "")
	set(dLastIMEI, d.LastIMEI != "")
	set(dEnrolled, !d.Enrolled.IsZero())
	set(dVersion, d.Version != 0)

	b := make([]byte, 0, 160)
	b = append(b, formatDevice)
	b = binary.AppendUvarint(b, mask)
	str := func(bit uint64, s string) {
		if mask&bit != 0 {
			b = appendString(b, s)
		}
	}
	str(dTenant, d.Tenant)
	str(dPublicKey, string(d.PublicKey))
	str(dSecretHash, string(d.SecretHash))
	str(dIMEI, string(d.IMEI))
	if mask&dLastSeq != 0 {
		b = binary.AppendUvarint(b, d.LastSeq)
	}
	str(dLastICCID, string(d.LastICCID))
	str(dLastIMEI, string(d.LastIMEI))
	if mask&dEnrolled != 0 {
		b = appendTime(b, d.Enrolled)
	}
	if mask&dVersion != 0 {
		b = binary.AppendUvarint(b, d.Version)
	}
	return b
}

// decodeDevice decodes a stored device, in the binary encoding or as
// JSON (devices stored before the binary encoding); id is its key.
func decodeDevice(id string, v []byte) (*verifier.Device, error) {
	if len(v) > 0 && v[0] == formatJSON {
		var d verifier.Device
		if err := decodeJSON(v, &d); err != nil {
			return nil, fmt.Errorf("device %s: %w", id, err)
		}
		return &d, nil
	}
	if len(v) == 0 || v[0] != formatDevice {
		return nil, fmt.Errorf("device %s: unknown value format: %w", id, errCorrupt)
	}
	// One copy of the value for the strings, one for the keys: read
	// three times for each report, a device's decoding allocates little.
	r := &reader{b: v[1:], src: string(v[1:]), srcb: bytes.Clone(v[1:])}
	mask := r.uvarint()
	if mask&^dKnown != 0 {
		return nil, fmt.Errorf("device %s: unknown fields %#x (written by a newer cardbind?): %w", id, mask&^dKnown, errCorrupt)
	}
	d := &verifier.Device{ID: id}
	has := func(bit uint64) bool { return mask&bit != 0 }
	if has(dTenant) {
		d.Tenant = r.string()
	}
	if has(dPublicKey) {
		d.PublicKey = r.bytes()
	}
	if has(dSecretHash) {
		d.SecretHash = r.bytes()
	}
	if has(dIMEI) {
		d.IMEI = protocol.IMEI(r.string())
	}
	if has(dLastSeq) {
		d.LastSeq = r.uvarint()
	}
	if has(dLastICCID) {
		d.LastICCID = protocol.ICCID(r.string())
	}
	if has(dLastIMEI) {
		d.LastIMEI = protocol.IMEI(r.string())
	}
	if has(dEnrolled) {
		d.Enrolled = r.time()
	}
	if has(dVersion) {
		d.Version = r.uvarint()
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errCorrupt
	}
	if r.err != nil {
		return nil, fmt.Errorf("device %s: %w", id, r.err)
	}
	return d, nil
}

// encodeJSON returns the stored form of a JSON-encoded record.
func encodeJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append([]byte{formatJSON}, b...), nil
}

// decodeJSON decodes a value encodeJSON wrote.
func decodeJSON(b []byte, v any) error {
	if len(b) == 0 || b[0] != formatJSON {
		return fmt.Errorf("unknown value format: %w", errCorrupt)
	}
	return json.Unmarshal(b[1:], v)
}

// encodeOutbox returns the stored form of an outbox entry.
func encodeOutbox(e *verifier.OutboxEntry) ([]byte, error) {
	j, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 9, 9+len(j))
	b[0] = formatOutbox
	binary.BigEndian.PutUint64(b[1:], nanos(e.NotBefore))
	return append(b, j...), nil
}

// outboxNotBefore returns a stored entry's NotBefore in Unix nanoseconds.
func outboxNotBefore(v []byte) (uint64, error) {
	if len(v) < 9 || v[0] != formatOutbox {
		return 0, fmt.Errorf("outbox entry: unknown value format: %w", errCorrupt)
	}
	return binary.BigEndian.Uint64(v[1:9]), nil
}

// decodeOutbox decodes a value encodeOutbox wrote.
func decodeOutbox(v []byte) (verifier.OutboxEntry, error) {
	var e verifier.OutboxEntry
	if _, err := outboxNotBefore(v); err != nil {
		return e, err
	}
	err := json.Unmarshal(v[9:], &e)
	return e, err
}

// nanos returns t as Unix nanoseconds for ordered keys: 0 for the zero
// time, clamped to the range a uint64 of nanoseconds since 1970 holds.
func nanos(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	n := t.UnixNano() // saturates outside years 1678..2262
	if n < 0 {
		return 0
	}
	return uint64(n)
}

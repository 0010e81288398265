package radius

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	lr "layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
	"layeh.com/radius/rfc2869"
	"layeh.com/radius/rfc3162"
)

// EncodeRequest builds the Accounting-Request for r with the given
// identifier and shared secret, Request Authenticator included (RFC 2866
// section 3). It writes the attributes Decode reads, those of r that are
// set: the IMEISV (or, without one, the IMEI) as 3GPP-IMEISV digits, the
// MSISDN without its '+' as Calling-Station-Id. Record.Skipped is ignored.
func EncodeRequest(r *Record, identifier byte, secret []byte) ([]byte, error) {
	if len(secret) == 0 {
		return nil, errors.New("radius: encode: empty shared secret")
	}
	if r.Status == 0 {
		return nil, errors.New("radius: encode: no Acct-Status-Type")
	}
	p := &lr.Packet{Code: lr.CodeAccountingRequest, Identifier: identifier, Secret: secret}
	p.Add(rfc2866.AcctStatusType_Type, lr.NewInteger(uint32(r.Status)))
	if r.SessionID != "" {
		if err := addString(p, rfc2866.AcctSessionID_Type, r.SessionID); err != nil {
			return nil, fmt.Errorf("radius: encode %s: %w", attrSessionID, err)
		}
	}
	if r.NASIdentifier != "" {
		if err := addString(p, rfc2865.NASIdentifier_Type, r.NASIdentifier); err != nil {
			return nil, fmt.Errorf("radius: encode %s: %w", attrNASID, err)
		}
	}
	if r.MSISDN != "" {
		p.Add(rfc2865.CallingStationID_Type, lr.Attribute(r.MSISDN.Digits()))
	}
	if r.IPv4.Is4() {
		a := r.IPv4.As4()
		p.Add(rfc2865.FramedIPAddress_Type, lr.Attribute(a[:]))
	}
	if r.IPv6.IsValid() && r.IPv6.Addr().Is6() {
		p.Add(rfc3162.FramedIPv6Prefix_Type, ipv6PrefixAttr(r.IPv6))
	}
	if !r.EventTime.IsZero() {
		p.Add(rfc2869.EventTimestamp_Type, lr.NewInteger(uint32(r.EventTime.Unix())))
	}
	if r.Delay > 0 {
		p.Add(rfc2866.AcctDelayTime_Type, lr.NewInteger(uint32(r.Delay.Seconds())))
	}

	var sub [][]byte
	if r.IMSI != "" {
		sub = append(sub, vsa(type3GPPIMSI, []byte(r.IMSI)))
	}
	switch {
	case r.IMEISV != "":
		sub = append(sub, vsa(type3GPPIMEISV, []byte(r.IMEISV)))
	case r.IMEI != "":
		sub = append(sub, vsa(type3GPPIMEISV, []byte(r.IMEI)))
	}
	if r.SGSNPLMN != nil {
		sub = append(sub, vsa(type3GPPSGSNMCCMNC, []byte(r.SGSNPLMN.MCC+r.SGSNPLMN.MNC)))
	}
	if r.Location != nil {
		v, err := r.Location.Encode()
		if err != nil {
			return nil, fmt.Errorf("radius: encode %s: %w", attrUserLocation, err)
		}
		sub = append(sub, vsa(type3GPPUserLocation, v))
	}
	// One Vendor-Specific attribute per sub-attribute, as most NASes send
	// them (radclient and FreeRADIUS do too).
	for _, s := range sub {
		if len(s) > 249 {
			return nil, fmt.Errorf("radius: encode: 3GPP sub-attribute %d is %d octets, over 249", s[0], len(s))
		}
		a := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(s)), VendorID3GPP)
		p.Add(rfc2865.VendorSpecific_Type, append(a, s...))
	}
	b, err := p.Encode()
	if err != nil {
		return nil, fmt.Errorf("radius: encode: %w", err)
	}
	return b, nil
}

func addString(p *lr.Packet, t lr.Type, s string) error {
	a, err := lr.NewString(s)
	if err != nil {
		return err
	}
	p.Add(t, a)
	return nil
}

// vsa returns one 3GPP sub-attribute: type, length, value.
func vsa(t byte, v []byte) []byte {
	return append([]byte{t, byte(2 + len(v))}, v...)
}

// ipv6PrefixAttr encodes a Framed-IPv6-Prefix with only the octets the
// prefix length covers.
func ipv6PrefixAttr(p netip.Prefix) lr.Attribute {
	p = p.Masked()
	a := p.Addr().As16()
	n := (p.Bits() + 7) / 8
	return append([]byte{0, byte(p.Bits())}, a[:n]...)
}

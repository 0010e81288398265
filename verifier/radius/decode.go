package radius

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
	"unicode/utf8"

	lr "layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
	"layeh.com/radius/rfc2869"
	"layeh.com/radius/rfc3162"

	"github.com/cardbind/cardbind/protocol"
)

// VendorID3GPP is the IANA enterprise number of 3GPP, under which the
// 3GPP vendor-specific attributes of TS 29.061 are sent.
const VendorID3GPP = 10415

// 3GPP vendor-specific attribute types (3GPP TS 29.061 section 16.4.7.2).
const (
	type3GPPIMSI         = 1
	type3GPPSGSNMCCMNC   = 18
	type3GPPIMEISV       = 20
	type3GPPUserLocation = 22
)

// Decode decodes an Accounting-Request packet into a Record. It does no
// I/O and does not check the Request Authenticator (the server does, with
// the client's secret, before decoding).
//
// Attributes fall in two groups. The ones that say which card, which
// equipment and which addresses (Acct-Status-Type, 3GPP-IMSI,
// Calling-Station-Id, 3GPP-IMEISV, Framed-IP-Address, Framed-IPv6-Prefix)
// must be well formed and appear at most once: otherwise Decode returns an
// *AttributeError naming the attribute and no record, because acting on
// part of an identity could bind the wrong card or move the wrong address.
// A framing error inside a 3GPP Vendor-Specific attribute is treated the
// same way, as it may hide the IMSI. The others (3GPP-User-Location-Info,
// 3GPP-SGSN-MCC-MNC, Acct-Session-Id, NAS-Identifier, Event-Timestamp,
// Acct-Delay-Time) are hints: a malformed or repeated one is left out and
// listed in Record.Skipped. Attributes cardbind does not use are ignored.
// Acct-Status-Type is the only attribute that must be present.
//
// Every error wraps ErrMalformed.
func Decode(b []byte) (*Record, error) {
	if len(b) < 20 {
		return nil, fmt.Errorf("%w: %d octets is shorter than a RADIUS header", ErrMalformed, len(b))
	}
	pkt, err := lr.Parse(b, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if pkt.Code != lr.CodeAccountingRequest {
		return nil, fmt.Errorf("%w: code %d is not Accounting-Request", ErrMalformed, pkt.Code)
	}
	d := decoder{r: &Record{}}
	for _, avp := range pkt.Attributes {
		if err := d.attribute(avp.Type, avp.Attribute); err != nil {
			return nil, err
		}
	}
	if !d.seen[attrStatusType] {
		return nil, &AttributeError{Attribute: attrStatusType, Reason: "missing (RFC 2866 requires it)"}
	}
	return d.r, nil
}

type decoder struct {
	r    *Record
	seen map[string]bool
}

// once reports whether this is the first instance of the attribute.
func (d *decoder) once(name string) bool {
	if d.seen == nil {
		d.seen = make(map[string]bool, 8)
	}
	if d.seen[name] {
		return false
	}
	d.seen[name] = true
	return true
}

// required records an instance of an attribute the record cannot do
// without: repeated or malformed, it fails the whole request.
func (d *decoder) required(name string, parse func() error) error {
	if !d.once(name) {
		return &AttributeError{Attribute: name, Reason: "appears more than once"}
	}
	if err := parse(); err != nil {
		return &AttributeError{Attribute: name, Reason: err.Error()}
	}
	return nil
}

// optional records an instance of a hint: repeated or malformed, it is
// skipped and listed.
func (d *decoder) optional(name string, parse func() error) {
	if !d.once(name) {
		d.r.Skipped = append(d.r.Skipped, AttributeError{Attribute: name, Reason: "appears more than once; the first is used"})
		return
	}
	if err := parse(); err != nil {
		d.r.Skipped = append(d.r.Skipped, AttributeError{Attribute: name, Reason: err.Error()})
	}
}

func (d *decoder) attribute(t lr.Type, v []byte) error {
	r := d.r
	switch t {
	case rfc2866.AcctStatusType_Type:
		return d.required(attrStatusType, func() error {
			n, err := u32(v)
			r.Status = StatusType(n)
			return err
		})
	case rfc2865.CallingStationID_Type:
		return d.required(attrCallingID, func() (err error) {
			r.MSISDN, err = protocol.NormalizeMSISDN(string(v))
			return err
		})
	case rfc2865.FramedIPAddress_Type:
		return d.required(attrFramedIP, func() error {
			if len(v) != 4 {
				return fmt.Errorf("%d octets, want 4", len(v))
			}
			a := netip.AddrFrom4([4]byte(v))
			// 255.255.255.254 and .255 ask the NAS to choose; they are no
			// address. Neither is 0.0.0.0.
			if a != netip.AddrFrom4([4]byte{255, 255, 255, 254}) && a != netip.IPv4Unspecified() && !a.IsMulticast() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
				r.IPv4 = a
			}
			return nil
		})
	case rfc3162.FramedIPv6Prefix_Type:
		return d.required(attrFramedIPv6, func() (err error) {
			r.IPv6, err = ipv6Prefix(v)
			return err
		})
	case rfc2866.AcctSessionID_Type:
		d.optional(attrSessionID, func() error {
			if !utf8.Valid(v) {
				return fmt.Errorf("not UTF-8")
			}
			r.SessionID = string(v)
			return nil
		})
	case rfc2865.NASIdentifier_Type:
		d.optional(attrNASID, func() error {
			if !utf8.Valid(v) {
				return fmt.Errorf("not UTF-8")
			}
			r.NASIdentifier = string(v)
			return nil
		})
	case rfc2869.EventTimestamp_Type:
		d.optional(attrEventTime, func() error {
			n, err := u32(v)
			if err == nil {
				r.EventTime = time.Unix(int64(n), 0).UTC()
			}
			return err
		})
	case rfc2866.AcctDelayTime_Type:
		d.optional(attrDelayTime, func() error {
			n, err := u32(v)
			r.Delay = time.Duration(n) * time.Second
			return err
		})
	case rfc2865.VendorSpecific_Type:
		if len(v) < 4 {
			d.r.Skipped = append(d.r.Skipped, AttributeError{Attribute: attrVendor, Reason: fmt.Sprintf("%d octets is too short for a vendor id", len(v))})
			return nil
		}
		if binary.BigEndian.Uint32(v) != VendorID3GPP {
			return nil
		}
		return d.vendor3GPP(v[4:])
	}
	return nil
}

// vendor3GPP decodes the sub-attributes of a 3GPP Vendor-Specific
// attribute: type (1 octet), length (1 octet, counting both), value.
func (d *decoder) vendor3GPP(b []byte) error {
	if len(b) == 0 {
		return &AttributeError{Attribute: attr3GPP, Reason: "no sub-attribute"}
	}
	r := d.r
	for len(b) > 0 {
		if len(b) < 2 || int(b[1]) < 2 || int(b[1]) > len(b) {
			return &AttributeError{Attribute: attr3GPP, Reason: fmt.Sprintf("sub-attribute framing broken at % x", b)}
		}
		t, v := b[0], b[2:b[1]]
		b = b[b[1]:]
		var err error
		switch t {
		case type3GPPIMSI:
			err = d.required(attrIMSI, func() (err error) {
				r.IMSI, err = protocol.ParseIMSI(string(v))
				return err
			})
		case type3GPPIMEISV:
			err = d.required(attrIMEISV, func() (err error) {
				r.IMEI, r.IMEISV, err = equipment(v)
				return err
			})
		case type3GPPSGSNMCCMNC:
			d.optional(attrSGSNMCCMNC, func() error {
				if (len(v) != 5 && len(v) != 6) || !isDigits(string(v)) {
					return fmt.Errorf("%q is not 5 or 6 digits", v)
				}
				r.SGSNPLMN = &PLMN{MCC: string(v[:3]), MNC: string(v[3:])}
				return nil
			})
		case type3GPPUserLocation:
			d.optional(attrUserLocation, func() (err error) {
				r.Location, err = DecodeUserLocation(v)
				return err
			})
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// equipment decodes 3GPP-IMEISV: UTF-8 digits per TS 29.061 (an IMEISV of
// 16 or an IMEI of 15), or, as some nodes send it, the 8 TBCD octets of
// the GTP IMEI(SV) information element.
func equipment(v []byte) (protocol.IMEI, protocol.IMEISV, error) {
	if len(v) == 8 && !isDigits(string(v)) {
		var s []byte
		for i, o := range v {
			lo, hi := o&0x0f, o>>4
			if lo > 9 || (hi > 9 && !(i == 7 && hi == 0x0f)) {
				return "", "", fmt.Errorf("8 octets % x are neither digits nor TBCD", v)
			}
			s = append(s, '0'+lo)
			if hi <= 9 {
				s = append(s, '0'+hi)
			}
		}
		v = s
	}
	if !utf8.Valid(v) {
		return "", "", fmt.Errorf("not UTF-8")
	}
	return protocol.ParseEquipment(string(v))
}

// ipv6Prefix decodes Framed-IPv6-Prefix (RFC 3162 section 2.3): a reserved
// octet, the prefix length, and up to 16 octets of prefix whose bits past
// the prefix length are zero.
func ipv6Prefix(v []byte) (netip.Prefix, error) {
	if len(v) < 2 || len(v) > 18 {
		return netip.Prefix{}, fmt.Errorf("%d octets, want 2 to 18", len(v))
	}
	bits := int(v[1])
	if bits > 128 {
		return netip.Prefix{}, fmt.Errorf("prefix length %d is over 128", bits)
	}
	if bits == 0 {
		return netip.Prefix{}, nil // ::/0 names no address
	}
	var a [16]byte
	copy(a[:], v[2:])
	p := netip.PrefixFrom(netip.AddrFrom16(a), bits)
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("bits past the /%d prefix are set", bits)
	}
	return p, nil
}

func u32(v []byte) (uint32, error) {
	if len(v) != 4 {
		return 0, fmt.Errorf("%d octets, want 4", len(v))
	}
	return binary.BigEndian.Uint32(v), nil
}

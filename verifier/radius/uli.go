package radius

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cardbind/cardbind/protocol"
)

// LocationType is the Geographic Location Type of a
// 3GPP-User-Location-Info attribute (3GPP TS 29.061 section 16.4.7.2).
type LocationType uint8

// Geographic location types. The decoder decodes these; other types are
// kept undecoded in UserLocation.Raw.
const (
	LocationCGI     LocationType = 0   // cell global identity (GERAN)
	LocationSAI     LocationType = 1   // service area identity (UTRAN)
	LocationRAI     LocationType = 2   // routing area identity
	LocationTAI     LocationType = 128 // tracking area identity (E-UTRAN)
	LocationECGI    LocationType = 129 // E-UTRAN cell global identity
	LocationTAIECGI LocationType = 130 // TAI followed by ECGI
)

// PLMN identifies a mobile network: mobile country code (3 digits) and
// mobile network code (2 or 3 digits).
type PLMN struct {
	MCC string `json:"mcc"`
	MNC string `json:"mnc"`
}

// CGI is a GERAN cell global identity.
type CGI struct {
	PLMN
	LAC uint16 `json:"lac"`
	CI  uint16 `json:"ci"`
}

// SAI is a UTRAN service area identity.
type SAI struct {
	PLMN
	LAC uint16 `json:"lac"`
	SAC uint16 `json:"sac"`
}

// RAI is a routing area identity.
type RAI struct {
	PLMN
	LAC uint16 `json:"lac"`
	RAC uint8  `json:"rac"`
}

// TAI is an E-UTRAN tracking area identity.
type TAI struct {
	PLMN
	TAC uint16 `json:"tac"`
}

// ECGI is an E-UTRAN cell global identity; ECI is the 28-bit E-UTRAN cell
// identity (eNodeB id << 8 | cell id).
type ECGI struct {
	PLMN
	ECI uint32 `json:"eci"`
}

// UserLocation is a decoded 3GPP-User-Location-Info: the location type and
// the identities it carries.
type UserLocation struct {
	Type LocationType `json:"type"`
	CGI  *CGI         `json:"cgi,omitempty"`
	SAI  *SAI         `json:"sai,omitempty"`
	RAI  *RAI         `json:"rai,omitempty"`
	TAI  *TAI         `json:"tai,omitempty"`
	ECGI *ECGI        `json:"ecgi,omitempty"`
	// Raw is the location field of a type this decoder does not decode
	// (eNodeB ids, 5GS types).
	Raw []byte `json:"raw,omitempty"`
}

// Cell returns the serving cell in the form agents report it (MCC, MNC,
// area code, cell id): the ECGI with the TAI's TAC when both are present,
// or the CGI with its LAC. It returns nil when the location names no cell
// (a TAI, SAI or RAI alone is an area, too coarse to be a cell).
func (u *UserLocation) Cell() *protocol.Cell {
	switch {
	case u == nil:
		return nil
	case u.ECGI != nil:
		c := &protocol.Cell{MCC: u.ECGI.MCC, MNC: u.ECGI.MNC, ID: uint64(u.ECGI.ECI)}
		if u.TAI != nil {
			c.Area = uint32(u.TAI.TAC)
		}
		return c
	case u.CGI != nil:
		return &protocol.Cell{MCC: u.CGI.MCC, MNC: u.CGI.MNC, Area: uint32(u.CGI.LAC), ID: uint64(u.CGI.CI)}
	}
	return nil
}

// Encoded lengths of the location fields (3GPP TS 29.274 section 8.21).
const (
	plmnLen = 3
	cgiLen  = plmnLen + 4
	saiLen  = plmnLen + 4
	raiLen  = plmnLen + 4 // RAC, then a spare octet (some nodes omit it)
	taiLen  = plmnLen + 2
	ecgiLen = plmnLen + 4
)

// DecodeUserLocation decodes the value of a 3GPP-User-Location-Info
// attribute: one octet of location type, then the location field. The
// field's length must be exactly that of its type; an unknown type is not
// an error, its field is kept in Raw.
func DecodeUserLocation(b []byte) (*UserLocation, error) {
	if len(b) < 1 {
		return nil, errors.New("empty")
	}
	u := &UserLocation{Type: LocationType(b[0])}
	f := b[1:]
	want := func(n int) error {
		if len(f) != n {
			return fmt.Errorf("location type %d has %d octets, want %d", u.Type, len(f), n)
		}
		return nil
	}
	var err error
	switch u.Type {
	case LocationCGI:
		if err = want(cgiLen); err == nil {
			u.CGI = &CGI{LAC: be16(f[3:]), CI: be16(f[5:])}
			u.CGI.PLMN, err = decodePLMN(f)
		}
	case LocationSAI:
		if err = want(saiLen); err == nil {
			u.SAI = &SAI{LAC: be16(f[3:]), SAC: be16(f[5:])}
			u.SAI.PLMN, err = decodePLMN(f)
		}
	case LocationRAI:
		if len(f) == raiLen-1 {
			f = append(f[:len(f):len(f)], 0xff)
		}
		if err = want(raiLen); err == nil {
			u.RAI = &RAI{LAC: be16(f[3:]), RAC: f[5]}
			u.RAI.PLMN, err = decodePLMN(f)
		}
	case LocationTAI:
		if err = want(taiLen); err == nil {
			u.TAI = &TAI{TAC: be16(f[3:])}
			u.TAI.PLMN, err = decodePLMN(f)
		}
	case LocationECGI:
		if err = want(ecgiLen); err == nil {
			u.ECGI, err = decodeECGI(f)
		}
	case LocationTAIECGI:
		if err = want(taiLen + ecgiLen); err == nil {
			u.TAI = &TAI{TAC: be16(f[3:])}
			if u.TAI.PLMN, err = decodePLMN(f); err == nil {
				u.ECGI, err = decodeECGI(f[taiLen:])
			}
		}
	default:
		u.Raw = append([]byte(nil), f...)
	}
	if err != nil {
		return nil, err
	}
	return u, nil
}

// Encode returns the attribute value for u, the inverse of
// DecodeUserLocation.
func (u *UserLocation) Encode() ([]byte, error) {
	b := []byte{byte(u.Type)}
	var err error
	need := func(ok bool, what string) {
		if !ok && err == nil {
			err = fmt.Errorf("location type %d needs %s", u.Type, what)
		}
	}
	plmn := func(p PLMN) {
		var e error
		if b, e = appendPLMN(b, p); e != nil && err == nil {
			err = e
		}
	}
	switch u.Type {
	case LocationCGI:
		need(u.CGI != nil, "a CGI")
		if err == nil {
			plmn(u.CGI.PLMN)
			b = binary.BigEndian.AppendUint16(b, u.CGI.LAC)
			b = binary.BigEndian.AppendUint16(b, u.CGI.CI)
		}
	case LocationSAI:
		need(u.SAI != nil, "an SAI")
		if err == nil {
			plmn(u.SAI.PLMN)
			b = binary.BigEndian.AppendUint16(b, u.SAI.LAC)
			b = binary.BigEndian.AppendUint16(b, u.SAI.SAC)
		}
	case LocationRAI:
		need(u.RAI != nil, "an RAI")
		if err == nil {
			plmn(u.RAI.PLMN)
			b = binary.BigEndian.AppendUint16(b, u.RAI.LAC)
			b = append(b, u.RAI.RAC, 0xff)
		}
	case LocationTAI, LocationECGI, LocationTAIECGI:
		if u.Type != LocationECGI {
			need(u.TAI != nil, "a TAI")
			if err == nil {
				plmn(u.TAI.PLMN)
				b = binary.BigEndian.AppendUint16(b, u.TAI.TAC)
			}
		}
		if u.Type != LocationTAI {
			need(u.ECGI != nil, "an ECGI")
			need(u.ECGI == nil || u.ECGI.ECI <= 0x0fffffff, "an ECI of 28 bits")
			if err == nil {
				plmn(u.ECGI.PLMN)
				b = binary.BigEndian.AppendUint32(b, u.ECGI.ECI)
			}
		}
	default:
		b = append(b, u.Raw...)
	}
	if err != nil {
		return nil, err
	}
	return b, nil
}

func decodeECGI(f []byte) (*ECGI, error) {
	p, err := decodePLMN(f)
	if err != nil {
		return nil, err
	}
	// The four high bits are spare.
	return &ECGI{PLMN: p, ECI: binary.BigEndian.Uint32(f[3:]) & 0x0fffffff}, nil
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

// decodePLMN decodes the three BCD octets of an MCC and MNC: MCC digit 2
// and 1; MNC digit 3 (0xF for a two-digit MNC) and MCC digit 3; MNC digit
// 2 and 1 (3GPP TS 24.008 section 10.5.1.3).
func decodePLMN(b []byte) (PLMN, error) {
	d := [6]byte{b[0] & 0x0f, b[0] >> 4, b[1] & 0x0f, b[2] & 0x0f, b[2] >> 4, b[1] >> 4}
	var s [6]byte
	n := 6
	for i, x := range d {
		switch {
		case x <= 9:
			s[i] = '0' + x
		case i == 5 && x == 0x0f:
			n = 5
		default:
			return PLMN{}, fmt.Errorf("MCC/MNC octets % x are not BCD digits", b[:plmnLen])
		}
	}
	return PLMN{MCC: string(s[:3]), MNC: string(s[3:n])}, nil
}

// appendPLMN is the inverse of decodePLMN.
func appendPLMN(b []byte, p PLMN) ([]byte, error) {
	if len(p.MCC) != 3 || !isDigits(p.MCC) || (len(p.MNC) != 2 && len(p.MNC) != 3) || !isDigits(p.MNC) {
		return b, fmt.Errorf("MCC %q MNC %q: want 3 and 2 or 3 digits", p.MCC, p.MNC)
	}
	mnc3 := byte(0x0f)
	if len(p.MNC) == 3 {
		mnc3 = p.MNC[2] - '0'
	}
	return append(b,
		(p.MCC[1]-'0')<<4|(p.MCC[0]-'0'),
		mnc3<<4|(p.MCC[2]-'0'),
		(p.MNC[1]-'0')<<4|(p.MNC[0]-'0')), nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

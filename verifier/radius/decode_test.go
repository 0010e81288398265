package radius

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	lr "layeh.com/radius"
)

type attr struct {
	t lr.Type
	v []byte
}

func a(t lr.Type, v string) attr { return attr{t, []byte(v)} }

func u32attr(t lr.Type, n uint32) attr { return attr{t, binary.BigEndian.AppendUint32(nil, n)} }

// g builds a 3GPP Vendor-Specific attribute holding one sub-attribute.
func g(t byte, v string) attr {
	b := binary.BigEndian.AppendUint32(nil, VendorID3GPP)
	return attr{26, append(b, vsa(t, []byte(v))...)}
}

func unhex(s string) string {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return string(b)
}

// request encodes an Accounting-Request with these attributes, in order.
func request(id byte, secret string, attrs ...attr) []byte {
	p := &lr.Packet{Code: lr.CodeAccountingRequest, Identifier: id, Secret: []byte(secret)}
	for _, at := range attrs {
		p.Add(at.t, at.v)
	}
	b, err := p.Encode()
	if err != nil {
		panic(err)
	}
	return b
}

var (
	start     = u32attr(40, 1)
	sessionID = a(44, "pgw1-0001")
	imsi      = g(1, "460110123456789")
	imeisv    = g(20, "3548820912345601")
	calling   = a(31, "8613912345678")
	framedIP  = attr{8, []byte{10, 45, 0, 7}}
	// 2001:db8:1::/48 with only the octets the prefix covers.
	framedV6 = attr{97, []byte{0, 48, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01}}
	sgsn     = g(18, "46011")
	// China Telecom 460-11, TAC 0x5a1b, ECI eNB 0x1a2b3 cell 1.
	uliTAIECGI = g(22, unhex("82 64f011 5a1b 64f011 01a2b301"))
)

var wantFull = Record{
	Status: Start, SessionID: "pgw1-0001", IMSI: "460110123456789", MSISDN: "+8613912345678",
	IMEI: "354882091234560", IMEISV: "3548820912345601",
	IPv4: netip.MustParseAddr("10.45.0.7"), IPv6: netip.MustParsePrefix("2001:db8:1::/48"),
	SGSNPLMN: &PLMN{MCC: "460", MNC: "11"},
	Location: &UserLocation{Type: LocationTAIECGI, TAI: &TAI{PLMN{"460", "11"}, 0x5a1b}, ECGI: &ECGI{PLMN{"460", "11"}, 0x1a2b301}},
}

func TestDecode(t *testing.T) {
	full := []attr{start, sessionID, imsi, imeisv, calling, framedIP, framedV6, sgsn, uliTAIECGI}
	// without returns the full set less the attribute at i, plus extra.
	without := func(skip attr, extra ...attr) []attr {
		var out []attr
		for _, at := range full {
			if !reflect.DeepEqual(at, skip) {
				out = append(out, at)
			}
		}
		return append(out, extra...)
	}
	with := func(f func(r *Record)) Record {
		r := wantFull
		f(&r)
		return r
	}
	tests := []struct {
		name    string
		attrs   []attr
		want    Record
		wantErr string // attribute named in the error; "" for success
	}{
		{"all present", full, wantFull, ""},

		{"status missing", without(start), Record{}, "Acct-Status-Type"},
		{"status 3 octets", without(start, attr{40, []byte{0, 0, 1}}), Record{}, "Acct-Status-Type"},
		{"status twice", append(full, start), Record{}, "Acct-Status-Type"},
		{"status interim", append([]attr{u32attr(40, 3)}, without(start)...), with(func(r *Record) { r.Status = InterimUpdate }), ""},
		{"status stop", append([]attr{u32attr(40, 2)}, without(start)...), with(func(r *Record) { r.Status = Stop }), ""},
		{"status accounting-on", []attr{u32attr(40, 7)}, Record{Status: AccountingOn}, ""},

		{"session id missing", without(sessionID), with(func(r *Record) { r.SessionID = "" }), ""},
		{"session id not utf-8", without(sessionID, a(44, "\xff\xfe")), with(func(r *Record) {
			r.SessionID = ""
			r.Skipped = []AttributeError{{attrSessionID, "not UTF-8"}}
		}), ""},

		{"imsi missing", without(imsi), with(func(r *Record) { r.IMSI = "" }), ""},
		{"imsi too short", without(imsi, g(1, "46011")), Record{}, "3GPP-IMSI"},
		{"imsi not digits", without(imsi, g(1, "46011012345678x")), Record{}, "3GPP-IMSI"},
		{"imsi twice", append(full, g(1, "460110123456780")), Record{}, "3GPP-IMSI"},

		{"imeisv missing", without(imeisv), with(func(r *Record) { r.IMEI, r.IMEISV = "", "" }), ""},
		{"imeisv carries an imei", without(imeisv, g(20, "354882091234560")), with(func(r *Record) { r.IMEISV = "" }), ""},
		{"imeisv as tbcd", without(imeisv, g(20, unhex("5384 2890 2143 6510"))), wantFull, ""},
		{"imei as tbcd", without(imeisv, g(20, unhex("5384 2890 2143 65f0"))), with(func(r *Record) { r.IMEISV = "" }), ""},
		{"tbcd filler inside", without(imeisv, g(20, unhex("5384 2890 21f3 6504"))), Record{}, "3GPP-IMEISV"},
		{"imeisv wrong check digit imei", without(imeisv, g(20, "354882091234565")), Record{}, "3GPP-IMEISV"},
		{"imeisv 12 digits", without(imeisv, g(20, "354882091234")), Record{}, "3GPP-IMEISV"},
		{"imeisv letters", without(imeisv, g(20, "35488209123456AB")), Record{}, "3GPP-IMEISV"},
		{"imeisv empty", without(imeisv, g(20, "")), Record{}, "3GPP-IMEISV"},

		{"calling station missing", without(calling), with(func(r *Record) { r.MSISDN = "" }), ""},
		{"calling station with plus", without(calling, a(31, "+8613912345678")), wantFull, ""},
		{"calling station not a number", without(calling, a(31, "02:00:5e:10:00:01")), Record{}, "Calling-Station-Id"},
		{"calling station empty", without(calling, a(31, "")), Record{}, "Calling-Station-Id"},

		{"framed ip missing", without(framedIP), with(func(r *Record) { r.IPv4 = netip.Addr{} }), ""},
		{"framed ip 3 octets", without(framedIP, attr{8, []byte{10, 45, 0}}), Record{}, "Framed-IP-Address"},
		{"framed ip nas-assigned marker", without(framedIP, attr{8, []byte{255, 255, 255, 254}}), with(func(r *Record) { r.IPv4 = netip.Addr{} }), ""},
		{"framed ip twice", append(full, framedIP), Record{}, "Framed-IP-Address"},

		{"framed ipv6 missing", without(framedV6), with(func(r *Record) { r.IPv6 = netip.Prefix{} }), ""},
		{"framed ipv6 full 16 octets", without(framedV6, attr{97, append([]byte{0, 64}, netip.MustParseAddr("2001:db8:1:2::").AsSlice()...)}),
			with(func(r *Record) { r.IPv6 = netip.MustParsePrefix("2001:db8:1:2::/64") }), ""},
		{"framed ipv6 length 129", without(framedV6, attr{97, []byte{0, 129, 0x20, 0x01}}), Record{}, "Framed-IPv6-Prefix"},
		{"framed ipv6 bits past prefix", without(framedV6, attr{97, []byte{0, 16, 0x20, 0x01, 0x0d}}), Record{}, "Framed-IPv6-Prefix"},
		{"framed ipv6 one octet", without(framedV6, attr{97, []byte{0}}), Record{}, "Framed-IPv6-Prefix"},

		{"sgsn missing", without(sgsn), with(func(r *Record) { r.SGSNPLMN = nil }), ""},
		{"sgsn three-digit mnc", without(sgsn, g(18, "310410")), with(func(r *Record) { r.SGSNPLMN = &PLMN{"310", "410"} }), ""},
		{"sgsn malformed", without(sgsn, g(18, "46O11")), with(func(r *Record) {
			r.SGSNPLMN = nil
			r.Skipped = []AttributeError{{attrSGSNMCCMNC, `"46O11" is not 5 or 6 digits`}}
		}), ""},

		{"location missing", without(uliTAIECGI), with(func(r *Record) { r.Location = nil }), ""},
		{"location ecgi only", without(uliTAIECGI, g(22, unhex("81 64f011 01a2b301"))), with(func(r *Record) {
			r.Location = &UserLocation{Type: LocationECGI, ECGI: &ECGI{PLMN{"460", "11"}, 0x1a2b301}}
		}), ""},
		{"location truncated", without(uliTAIECGI, g(22, unhex("82 64f011 5a1b 64f011 01a2b3"))), with(func(r *Record) {
			r.Location = nil
			r.Skipped = []AttributeError{{attrUserLocation, "location type 130 has 11 octets, want 12"}}
		}), ""},
		{"location not bcd", without(uliTAIECGI, g(22, unhex("80 6af011 5a1b"))), with(func(r *Record) {
			r.Location = nil
			r.Skipped = []AttributeError{{attrUserLocation, "MCC/MNC octets 6a f0 11 are not BCD digits"}}
		}), ""},
		{"location empty", without(uliTAIECGI, g(22, "")), with(func(r *Record) {
			r.Location = nil
			r.Skipped = []AttributeError{{attrUserLocation, "empty"}}
		}), ""},
		{"location twice", append(full, g(22, unhex("80 64f011 0001"))), with(func(r *Record) {
			r.Skipped = []AttributeError{{attrUserLocation, "appears more than once; the first is used"}}
		}), ""},

		{"other vendor ignored", append(full, attr{26, []byte{0, 0, 0x28, 0xaf + 1, 1, 3, 'x'}}), wantFull, ""},
		{"3gpp framing broken", append(full, attr{26, []byte{0, 0, 0x28, 0xaf, 1, 9, '4'}}), Record{}, "Vendor-Specific(3GPP)"},
		{"3gpp sub-attribute length 1", append(full, attr{26, []byte{0, 0, 0x28, 0xaf, 1, 1}}), Record{}, "Vendor-Specific(3GPP)"},
		{"vendor-specific too short", append(full, attr{26, []byte{0, 0}}), with(func(r *Record) {
			r.Skipped = []AttributeError{{attrVendor, "2 octets is too short for a vendor id"}}
		}), ""},
		{"two 3gpp sub-attributes in one vendor-specific", without(imsi, attr{26, append(binary.BigEndian.AppendUint32(nil, VendorID3GPP),
			append(vsa(1, []byte("460110123456789")), vsa(8, []byte("46011"))...)...)}), wantFull, ""},

		{"event timestamp and delay", append(full, u32attr(55, 1767225600), u32attr(41, 3)), with(func(r *Record) {
			r.EventTime = time.Unix(1767225600, 0).UTC()
			r.Delay = 3 * time.Second
		}), ""},
		{"event timestamp malformed", append(full, attr{55, []byte{1}}), with(func(r *Record) {
			r.Skipped = []AttributeError{{attrEventTime, "1 octets, want 4"}}
		}), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(request(7, "s", tt.attrs...))
			if tt.wantErr != "" {
				var ae *AttributeError
				if !errors.As(err, &ae) || ae.Attribute != tt.wantErr || !errors.Is(err, ErrMalformed) {
					t.Fatalf("Decode error = %v, want an AttributeError naming %s", err, tt.wantErr)
				}
				if got != nil {
					t.Errorf("Decode returned a record with its error: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("Decode =\n%+v\nwant\n%+v", *got, tt.want)
			}
		})
	}
}

func TestDecodePacketErrors(t *testing.T) {
	ok := request(1, "s", start)
	accessRequest := append([]byte(nil), ok...)
	accessRequest[0] = byte(lr.CodeAccessRequest)
	badLen := append([]byte(nil), ok...)
	badLen[3] = 200
	badAttr := append(append([]byte(nil), ok[:20]...), 40, 1)
	binary.BigEndian.PutUint16(badAttr[2:], uint16(len(badAttr)))
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short header", ok[:19]},
		{"not accounting", accessRequest},
		{"length past the datagram", badLen},
		{"attribute length 1", badAttr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r, err := Decode(tt.b); !errors.Is(err, ErrMalformed) || r != nil {
				t.Errorf("Decode = %+v, %v; want ErrMalformed", r, err)
			}
		})
	}
}

func TestEncodeRequestRoundTrip(t *testing.T) {
	want := wantFull
	want.NASIdentifier = "pgw-1"
	want.EventTime = time.Unix(1767225600, 0).UTC()
	want.Delay = 2 * time.Second
	b, err := EncodeRequest(&want, 9, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	if !lr.IsAuthenticRequest(b, []byte("secret")) {
		t.Fatal("encoded request does not carry a valid Request Authenticator")
	}
	if lr.IsAuthenticRequest(b, []byte("other")) {
		t.Fatal("encoded request authenticates with another secret")
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("round trip =\n%+v\nwant\n%+v", *got, want)
	}
	if _, err := EncodeRequest(&Record{}, 1, []byte("s")); err == nil {
		t.Error("EncodeRequest without a status: no error")
	}
	if _, err := EncodeRequest(&want, 1, nil); err == nil {
		t.Error("EncodeRequest without a secret: no error")
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[StatusType]string{Start: "Start", Stop: "Stop", InterimUpdate: "Interim-Update",
		AccountingOn: "Accounting-On", AccountingOff: "Accounting-Off", 15: "15"} {
		if got := s.String(); got != want {
			t.Errorf("StatusType(%d) = %q, want %q", s, got, want)
		}
	}
}

package radius

import (
	"reflect"
	"testing"

	"github.com/cardbind/cardbind/protocol"
)

func TestDecodeUserLocation(t *testing.T) {
	ct := PLMN{"460", "11"}   // China Telecom
	att := PLMN{"310", "410"} // three-digit MNC
	test := PLMN{"001", "01"} // test network
	tests := []struct {
		name    string
		hex     string
		want    *UserLocation
		cell    *protocol.Cell
		wantErr bool
	}{
		{"tai and ecgi", "82 64f011 5a1b 64f011 01a2b301",
			&UserLocation{Type: LocationTAIECGI, TAI: &TAI{ct, 0x5a1b}, ECGI: &ECGI{ct, 0x1a2b301}},
			&protocol.Cell{MCC: "460", MNC: "11", Area: 0x5a1b, ID: 0x1a2b301}, false},
		{"tai and ecgi, three-digit mnc", "82 130014 0001 130014 0000a0b1",
			&UserLocation{Type: LocationTAIECGI, TAI: &TAI{att, 1}, ECGI: &ECGI{att, 0xa0b1}},
			&protocol.Cell{MCC: "310", MNC: "410", Area: 1, ID: 0xa0b1}, false},
		{"ecgi spare bits ignored", "81 00f110 f1234567",
			&UserLocation{Type: LocationECGI, ECGI: &ECGI{test, 0x1234567}},
			&protocol.Cell{MCC: "001", MNC: "01", ID: 0x1234567}, false},
		{"tai alone is no cell", "80 64f011 5a1b", &UserLocation{Type: LocationTAI, TAI: &TAI{ct, 0x5a1b}}, nil, false},
		{"cgi", "00 64f011 2a00 1b2c", &UserLocation{Type: LocationCGI, CGI: &CGI{ct, 0x2a00, 0x1b2c}},
			&protocol.Cell{MCC: "460", MNC: "11", Area: 0x2a00, ID: 0x1b2c}, false},
		{"sai", "01 64f011 2a00 0101", &UserLocation{Type: LocationSAI, SAI: &SAI{ct, 0x2a00, 0x0101}}, nil, false},
		{"rai with spare octet", "02 64f011 2a00 07ff", &UserLocation{Type: LocationRAI, RAI: &RAI{ct, 0x2a00, 7}}, nil, false},
		{"rai without spare octet", "02 64f011 2a00 07", &UserLocation{Type: LocationRAI, RAI: &RAI{ct, 0x2a00, 7}}, nil, false},
		{"undecoded type kept raw", "87 64f011 000001", &UserLocation{Type: 135, Raw: []byte{0x64, 0xf0, 0x11, 0, 0, 1}}, nil, false},

		{"empty", "", nil, nil, true},
		{"tai short", "80 64f011 5a", nil, nil, true},
		{"tai long", "80 64f011 5a1b 00", nil, nil, true},
		{"ecgi short", "81 64f011 01a2b3", nil, nil, true},
		{"tai and ecgi short", "82 64f011 5a1b", nil, nil, true},
		{"cgi short", "00 64f011 2a00", nil, nil, true},
		{"sai long", "01 64f011 2a00 0101 00", nil, nil, true},
		{"mcc digit not bcd", "80 a4f011 5a1b", nil, nil, true},
		{"mnc filler in first digit", "80 64f01f 5a1b", nil, nil, true},
		{"ecgi plmn not bcd", "82 64f011 5a1b 64f0e1 01a2b301", nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeUserLocation([]byte(unhex(tt.hex)))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("DecodeUserLocation = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeUserLocation: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("DecodeUserLocation = %+v, want %+v", got, tt.want)
			}
			if c := got.Cell(); !reflect.DeepEqual(c, tt.cell) {
				t.Errorf("Cell = %+v, want %+v", c, tt.cell)
			}
			enc, err := got.Encode()
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			again, err := DecodeUserLocation(enc)
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Errorf("Encode round trip = %+v, %v; want %+v", again, err, got)
			}
		})
	}
}

func TestEncodeUserLocationErrors(t *testing.T) {
	for _, u := range []*UserLocation{
		{Type: LocationTAIECGI, TAI: &TAI{PLMN{"460", "11"}, 1}},
		{Type: LocationECGI, ECGI: &ECGI{PLMN{"460", "11"}, 1 << 28}},
		{Type: LocationTAI, TAI: &TAI{PLMN{"46", "11"}, 1}},
		{Type: LocationCGI, CGI: &CGI{PLMN{"460", "1"}, 1, 1}},
		{Type: LocationSAI},
		{Type: LocationRAI},
	} {
		if b, err := u.Encode(); err == nil {
			t.Errorf("Encode(%+v) = % x, want an error", u, b)
		}
	}
	var none *UserLocation
	if none.Cell() != nil {
		t.Error("nil location has a cell")
	}
}

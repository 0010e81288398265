package eir

import (
	"net/url"
	"strings"
	"testing"

	"github.com/cardbind/cardbind/protocol"
)

func TestParseQuery(t *testing.T) {
	tests := []struct {
		query string
		want  Query
		cause string // of the problem; "" for none
	}{
		{"pei=imei-356938035643809", Query{PEI: "imei-356938035643809", IMEI: "356938035643809"}, ""},
		{"pei=imeisv-3569380356438023&supi=imsi-460031234567890&gpsi=msisdn-8613912345678",
			Query{PEI: "imeisv-3569380356438023", IMEI: "356938035643809", IMEISV: "3569380356438023",
				IMSI: "460031234567890", MSISDN: "+8613912345678"}, ""},
		{"", Query{}, "MANDATORY_IE_MISSING"},
		{"supi=imsi-460031234567890", Query{}, "MANDATORY_IE_MISSING"},
		{"pei=imei-35693803564380", Query{}, "MANDATORY_IE_INCORRECT"},
		{"pei=imei-35-693803-564380-9", Query{}, "MANDATORY_IE_INCORRECT"},
		{"pei=imei-%20356938035643809", Query{}, "MANDATORY_IE_INCORRECT"},
		{"pei=imeisv-356938035643802", Query{}, "MANDATORY_IE_INCORRECT"},
		{"pei=356938035643809", Query{}, "MANDATORY_IE_INCORRECT"},
		{"pei=eui-00-11-22-33-44-55-66-77", Query{}, "MANDATORY_IE_INCORRECT"},
		{"pei=imei-356938035643809&supi=460031234567890", Query{}, "OPTIONAL_IE_INCORRECT"},
		{"pei=imei-356938035643809&supi=imsi-%20460031234567890", Query{}, "OPTIONAL_IE_INCORRECT"},
		{"pei=imei-356938035643809&supi=imsi-000031234567890", Query{}, "OPTIONAL_IE_INCORRECT"},
		{"pei=imei-356938035643809&supi=imsi-1&supi=imsi-2", Query{}, "OPTIONAL_IE_INCORRECT"},
		{"pei=imei-356938035643809&gpsi=extid-a@b", Query{}, "OPTIONAL_IE_INCORRECT"},
		{"pei=imei-356938035643809&gpsi=msisdn-0861391234", Query{}, "OPTIONAL_IE_INCORRECT"},
	}
	for _, tt := range tests {
		v, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		got, p := ParseQuery(v)
		switch {
		case tt.cause == "" && p != nil:
			t.Errorf("%q: problem %v", tt.query, p)
		case tt.cause != "" && (p == nil || p.Cause != tt.cause || p.Status != 400):
			t.Errorf("%q: problem %v, want 400 %s", tt.query, p, tt.cause)
		case tt.cause == "" && got != tt.want:
			t.Errorf("%q: got %+v, want %+v", tt.query, got, tt.want)
		}
	}
}

// FuzzParseQuery checks that any query either parses into identifiers
// that parse again the same way, or gives a 400 problem naming a
// parameter; it never panics.
func FuzzParseQuery(f *testing.F) {
	f.Add("pei=imei-356938035643809&supi=imsi-460031234567890")
	f.Add("pei=imeisv-3569380356438023&gpsi=msisdn-8613912345678")
	f.Add("pei=mac-00-11-22-33-44-55")
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, p := ParseQuery(v)
		if p != nil {
			if p.Status != 400 || len(p.InvalidParams) != 1 || !strings.HasPrefix(p.Cause, "M") && !strings.HasPrefix(p.Cause, "O") {
				t.Fatalf("%q: problem %+v", raw, p)
			}
			return
		}
		if m, err := protocol.ParseIMEI(string(q.IMEI)); err != nil || m != q.IMEI {
			t.Fatalf("%q: IMEI %q does not parse again: %v", raw, q.IMEI, err)
		}
		if q.IMEISV != "" && q.IMEISV.IMEI() != q.IMEI {
			t.Fatalf("%q: IMEI %q is not that of IMEISV %q", raw, q.IMEI, q.IMEISV)
		}
		if q.IMSI != "" {
			if m, err := protocol.ParseIMSI(string(q.IMSI)); err != nil || m != q.IMSI {
				t.Fatalf("%q: IMSI %q does not parse again: %v", raw, q.IMSI, err)
			}
		}
		if q.MSISDN != "" {
			if m, err := protocol.ParseMSISDN(string(q.MSISDN)); err != nil || m != q.MSISDN {
				t.Fatalf("%q: MSISDN %q does not parse again: %v", raw, q.MSISDN, err)
			}
		}
	})
}

package identity

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cardbind/cardbind/agent/at"
)

// The seed corpora live in testdata/fuzz/<FuzzName>/. Inputs are replies
// with one information line per "\n".

func lines(s string) []string { return strings.Split(s, "\n") }

func checkICCIDShape(t *testing.T, in, id string) {
	t.Helper()
	if len(id) < 18 || len(id) > 20 || !strings.HasPrefix(id, "89") {
		t.Fatalf("%q gave ICCID %q of bad shape", in, id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || i >= 6 && c >= 'A' && c <= 'F') {
			t.Fatalf("%q gave ICCID %q with %q at %d", in, id, c, i)
		}
	}
}

func FuzzParseIMEI(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string) {
		imei, err := ParseIMEI(lines(in))
		if err != nil {
			if imei != "" {
				t.Fatalf("value %q with error %v", imei, err)
			}
			return
		}
		if len(imei) != 15 || !allDigits(imei) || strings.Trim(imei, "0") == "" || !strings.Contains(in, imei) {
			t.Fatalf("%q gave IMEI %q", in, imei)
		}
	})
}

func FuzzParseICCID(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string) {
		id, err := ParseICCID(lines(in))
		if err != nil {
			return
		}
		checkICCIDShape(t, in, id)
	})
}

func FuzzNormalizeICCID(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string) {
		id, err := NormalizeICCID(in)
		if err != nil {
			return
		}
		checkICCIDShape(t, in, id)
		// Normalising again changes nothing (unless a second trailing F is
		// taken as padding).
		if again, err := NormalizeICCID(id); err == nil && again != id && again+"F" != id {
			t.Fatalf("not idempotent: %q -> %q -> %q", in, id, again)
		}
	})
}

func FuzzParseCRSMICCID(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string) {
		id, err := ParseCRSMICCID(lines(in))
		if err != nil {
			var se *StatusError
			if errors.As(err, &se) && (se.SW1 < 0 || se.SW1 > 255 || se.SW2 < 0 || se.SW2 > 255) {
				t.Fatalf("status words out of range: %v", se)
			}
			return
		}
		checkICCIDShape(t, in, id)
	})
}

func FuzzParseIMSI(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string) {
		imsi, err := ParseIMSI(lines(in))
		if err != nil {
			return
		}
		if len(imsi) < 6 || len(imsi) > 15 || !allDigits(imsi) {
			t.Fatalf("%q gave IMSI %q", in, imsi)
		}
	})
}

func FuzzParseCPIN(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string, code int, text string) {
		for _, err := range []error{nil, at.ErrError, at.ErrTimeout, &at.CMEError{Code: code, Text: text}} {
			s := ParseCPIN(lines(in), err)
			if s.State < SIMUnknown || s.State > SIMFailure {
				t.Fatalf("state %d out of range", s.State)
			}
			if s.Lock != "" && s.State != SIMLocked {
				t.Fatalf("lock %q on state %v", s.Lock, s.State)
			}
			if _, err := s.State.MarshalText(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzParseRegistration(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string) {
		r, err := ParseRegistration(in)
		if err != nil {
			return
		}
		switch r.Kind {
		case "CREG", "CGREG", "CEREG", "C5GREG":
		default:
			t.Fatalf("%q gave kind %q", in, r.Kind)
		}
		if r.Stat < 0 || r.N < -1 || r.AcT < -1 || !isHex(r.Area) || !isHex(r.Cell) {
			t.Fatalf("%q gave %+v", in, r)
		}
		_ = r.Stat.String()
		if best, ok := BestRegistration(r); !ok || best != r {
			t.Fatalf("BestRegistration of one = %+v", best)
		}
	})
}

func FuzzParseCOPS(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string) {
		p, err := ParseCOPS(lines(in))
		if err != nil {
			if p != (PLMN{}) {
				t.Fatalf("value %+v with error %v", p, err)
			}
			return
		}
		if len(p.MCC) != 3 || !allDigits(p.MCC) || len(p.MNC) < 2 || len(p.MNC) > 3 || !allDigits(p.MNC) ||
			!strings.Contains(in, p.String()) {
			t.Fatalf("%q gave %+v", in, p)
		}
		if again, err := ParsePLMN(p.String()); err != nil || again != p {
			t.Fatalf("%+v does not round-trip: %+v, %v", p, again, err)
		}
	})
}

func FuzzParseCSQ(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseCSQ(lines(in))
		if err != nil {
			return
		}
		if s.RSSI != 99 && (s.RSSI < 0 || s.RSSI > 31 || s.DBm != -113+2*s.RSSI) {
			t.Fatalf("%q gave %+v", in, s)
		}
	})
}

func FuzzCleanInfo(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string) {
		got := CleanInfo(lines(in))
		if got != strings.TrimSpace(got) {
			t.Fatalf("%q gave untrimmed %q", in, got)
		}
		for _, r := range got {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("%q gave control character in %q", in, got)
			}
		}
		if utf8.ValidString(in) && !utf8.ValidString(got) {
			t.Fatalf("%q gave invalid UTF-8 %q", in, got)
		}
		_ = VendorOf(got, in)
	})
}

func FuzzClassifyURC(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string) {
		e := ClassifyURC(in)
		if IsSIMEvent(in) != (e == EventSIM || e == EventBoot) {
			t.Fatalf("IsSIMEvent disagrees with ClassifyURC(%q) = %v", in, e)
		}
		if e != EventNone && strings.TrimSpace(in) == "" {
			t.Fatalf("blank line is %v", e)
		}
	})
}

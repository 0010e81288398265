package protocol

import (
	"bytes"
	"testing"
)

// The fuzz targets check that parsers never panic, that whatever they
// accept is in normalised form, and that normalised output parses to
// itself. Seed corpora live in testdata/fuzz/<target>/.

func FuzzParseIMEI(f *testing.F) {
	for _, s := range []string{"490154203237518", "35-209900-176148-1", "490154203237519", "", "4901542032375180"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseIMEI(s)
		if err != nil {
			return
		}
		if len(m) != 15 || !isDigits(string(m)) || !luhnValid(string(m)) {
			t.Fatalf("ParseIMEI(%q) = %q: not a valid IMEI", s, m)
		}
		if again, err := ParseIMEI(m.Dashed()); err != nil || again != m {
			t.Fatalf("dashed %q does not parse back: %q %v", m.Dashed(), again, err)
		}
	})
}

func FuzzParseIMEISV(f *testing.F) {
	for _, s := range []string{"4901542032375180", "35-209900-176148-23", "490154203237518"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseIMEISV(s)
		if err != nil {
			return
		}
		if _, err := ParseIMEI(string(v.IMEI())); err != nil {
			t.Fatalf("IMEISV %q derives invalid IMEI %q: %v", v, v.IMEI(), err)
		}
		if m, sv, err := ParseEquipment(string(v)); err != nil || sv != v || m != v.IMEI() {
			t.Fatalf("ParseEquipment(%q) = %q %q %v", v, m, sv, err)
		}
	})
}

func FuzzParseICCID(f *testing.F) {
	for _, s := range []string{"8901260886258128535F", "898602F9091830030220", "89860436101892671308", "98680036904030021872", "8910 0423"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseICCID(s)
		if err != nil {
			return
		}
		if len(c) != 19 && len(c) != 20 || c[:2] != "89" || c[len(c)-1] == 'F' && len(c) == 20 {
			t.Fatalf("ParseICCID(%q) = %q: not normalised", s, c)
		}
		if again, err := ParseICCID(string(c)); err != nil || again != c {
			t.Fatalf("ParseICCID(%q) = %q, %v: not idempotent", c, again, err)
		}
		_ = c.Warning()
	})
}

func FuzzParseIMSI(f *testing.F) {
	for _, s := range []string{"460031234567890", "imsi-001010123456789", "31026012345678", "000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		i, err := ParseIMSI(s)
		if err != nil {
			return
		}
		if again, err := ParseIMSI(string(i)); err != nil || again != i {
			t.Fatalf("ParseIMSI(%q) = %q, %v: not idempotent", i, again, err)
		}
		if len(i.MCC()) != 3 || len(i.MNC(2)) != 2 || len(i.MNC(3)) != 3 {
			t.Fatalf("IMSI %q: MCC %q MNC %q/%q", i, i.MCC(), i.MNC(2), i.MNC(3))
		}
	})
}

func FuzzParseMSISDN(f *testing.F) {
	for _, s := range []string{"+8613912345678", "8613912345678", "msisdn-8613912345678", "+86 139-1234", "+0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if m, err := ParseMSISDN(s); err == nil && string(m) != s {
			t.Fatalf("ParseMSISDN(%q) changed the input to %q", s, m)
		}
		m, err := NormalizeMSISDN(s)
		if err != nil {
			return
		}
		if again, err := ParseMSISDN(string(m)); err != nil || again != m {
			t.Fatalf("NormalizeMSISDN(%q) = %q, which ParseMSISDN refuses: %v", s, m, err)
		}
	})
}

// roundTrip checks that an accepted message encodes to something that is
// accepted again and encodes identically.
func roundTrip[T any](t *testing.T, data []byte, decode func([]byte) (*T, error), encode func(*T) ([]byte, error)) {
	v, err := decode(data)
	if err != nil {
		return
	}
	out, err := encode(v)
	if err != nil {
		t.Fatalf("encode accepted message: %v", err)
	}
	v2, err := decode(out)
	if err != nil {
		t.Fatalf("re-encoded message refused: %v\n%s", err, out)
	}
	out2, _ := encode(v2)
	if !bytes.Equal(out, out2) {
		t.Fatalf("encoding not stable:\n%s\n%s", out, out2)
	}
}

func FuzzDecodeReport(f *testing.F) {
	good, _ := EncodeReport(sampleReport())
	f.Add(good)
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{"v":2,"x":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data, DecodeReport, EncodeReport)
		if r, err := DecodeReport(data); err == nil {
			_ = CanonicalReport(r)
		}
	})
}

func FuzzDecodeCommand(f *testing.F) {
	good, _ := EncodeCommand(sampleCommand())
	f.Add(good)
	f.Add([]byte(`{"v":1,"kind":"radio_off"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data, DecodeCommand, EncodeCommand)
	})
}

func FuzzDecodeAlert(f *testing.F) {
	good, _ := EncodeAlert(sampleAlert())
	f.Add(good)
	f.Add([]byte(`{"v":1,"type":"blocked"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data, DecodeAlert, EncodeAlert)
	})
}

func FuzzDecodeEnroll(f *testing.F) {
	f.Add([]byte(`{"v":1,"token":"t","public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","imei":"490154203237518"}`))
	f.Add([]byte(`{"v":1,"device_id":"d","tenant":"t","broker_url":"tcp://h:1","username":"u","password":"p","report_topic":"cardbind/v1/devices/d/report","command_topic":"cardbind/v1/devices/d/command","command_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data, DecodeEnrollRequest, EncodeEnrollRequest)
		roundTrip(t, data, DecodeEnrollResponse, EncodeEnrollResponse)
	})
}

func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{ReportTopic("gw-1"), CommandTopic("gw-1"), AlertTopic("acme", AlertBlocked), "a/b/c", "cardbind/v1/devices/+/report"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if dev, err := ParseReportTopic(s); err == nil && ReportTopic(dev) != s {
			t.Fatalf("ParseReportTopic(%q) = %q, which builds %q", s, dev, ReportTopic(dev))
		}
		if dev, err := ParseCommandTopic(s); err == nil && CommandTopic(dev) != s {
			t.Fatalf("ParseCommandTopic(%q) = %q", s, dev)
		}
		if tenant, typ, err := ParseAlertTopic(s); err == nil && AlertTopic(tenant, typ) != s {
			t.Fatalf("ParseAlertTopic(%q) = %q %q", s, tenant, typ)
		}
	})
}

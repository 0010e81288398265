package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestParseIMEI(t *testing.T) {
	tests := []struct {
		in      string
		want    IMEI
		wantErr string // substring of the error; empty for success
	}{
		{"490154203237518", "490154203237518", ""},
		{"352656100367872", "352656100367872", ""},
		{"35-209900-176148-1", "352099001761481", ""}, // CAMARA example form
		{"  356938035643809 ", "356938035643809", ""},
		{"35 209900 176148 1", "352099001761481", ""},
		{"490154203237519", "", "check digit is 9, want 8"},
		{"49015420323751", "", "has 14 digits, want 15"},
		{"4901542032375180", "", "16 digits is an IMEISV"},
		{"49015420323751a", "", `character 'a' is not a digit`},
		{"", "", "empty"},
		{"---", "", "empty"},
		{"+CGSN: 490154203237518", "", "is not a digit"},
	}
	for _, tt := range tests {
		got, err := ParseIMEI(tt.in)
		if tt.wantErr == "" {
			if err != nil || got != tt.want {
				t.Errorf("ParseIMEI(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalidIdentifier) {
			t.Errorf("ParseIMEI(%q) error = %v; want one containing %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestIMEIParts(t *testing.T) {
	m := IMEI("352099001761481")
	if got := m.TAC(); got != "35209900" {
		t.Errorf("TAC = %q", got)
	}
	if got := m.Dashed(); got != "35-209900-176148-1" {
		t.Errorf("Dashed = %q", got)
	}
	back, err := ParseIMEI(m.Dashed())
	if err != nil || back != m {
		t.Errorf("dashed round trip = %q, %v", back, err)
	}
}

func TestParseIMEISV(t *testing.T) {
	tests := []struct {
		in       string
		wantIMEI IMEI
		wantSVN  string
		wantErr  bool
	}{
		{"4901542032375180", "490154203237518", "80", false},
		{"3526561003678701", "352656100367872", "01", false},
		{"35-209900-176148-23", "352099001761481", "23", false},
		{"490154203237518", "", "", true},
		{"49015420323751800", "", "", true},
		{"490154203237518x", "", "", true},
	}
	for _, tt := range tests {
		sv, err := ParseIMEISV(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseIMEISV(%q) = %q, want error", tt.in, sv)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseIMEISV(%q): %v", tt.in, err)
			continue
		}
		if sv.IMEI() != tt.wantIMEI || sv.SVN() != tt.wantSVN {
			t.Errorf("ParseIMEISV(%q): IMEI %q SVN %q; want %q %q", tt.in, sv.IMEI(), sv.SVN(), tt.wantIMEI, tt.wantSVN)
		}
		if _, err := ParseIMEI(string(sv.IMEI())); err != nil {
			t.Errorf("derived IMEI %q does not parse: %v", sv.IMEI(), err)
		}
	}
}

func TestParseEquipment(t *testing.T) {
	m, sv, err := ParseEquipment("4901542032375180")
	if err != nil || m != "490154203237518" || sv != "4901542032375180" {
		t.Errorf("IMEISV: %q %q %v", m, sv, err)
	}
	m, sv, err = ParseEquipment("490154203237518")
	if err != nil || m != "490154203237518" || sv != "" {
		t.Errorf("IMEI: %q %q %v", m, sv, err)
	}
	if _, _, err = ParseEquipment("490154203237519"); err == nil {
		t.Error("bad check digit accepted")
	}
}

func TestParseICCID(t *testing.T) {
	tests := []struct {
		in       string
		want     ICCID
		wantWarn bool
		wantErr  string
	}{
		{"8901260886258128535", "8901260886258128535", false, ""},   // Luhn passes
		{"8901260886258128535F", "8901260886258128535", false, ""},  // padding stripped
		{"8901260886258128535f", "8901260886258128535", false, ""},  // lower-case padding
		{"89860436101892671308", "89860436101892671308", true, ""},  // real card, Luhn fails: warning only
		{"8944200053671052499F", "8944200053671052499", true, ""},   // Luhn fails, padded
		{"898602F9091830030220", "898602F9091830030220", false, ""}, // hex account digits: cannot be checked
		{"898600700907a6019125", "898600700907A6019125", false, ""}, // lower-case hex normalised
		{"8910 0423 4814 4559 361", "8910042348144559361", false, ""},
		{"89860318640220133897", "89860318640220133897", false, ""},
		{"98680036904030021872", "", false, "does not start with 89"}, // still nibble-swapped
		{"891004234814455936", "", false, "has 18 characters"},
		{"891004234814455936123", "", false, "has 21 characters"},
		{"89A0042348144559361", "", false, "position 3 is not allowed"},
		{"8910042348144559361FF", "", false, "has 21 characters"},
		{"", "", false, "empty"},
	}
	for _, tt := range tests {
		got, err := ParseICCID(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseICCID(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseICCID(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			continue
		}
		warn := got.Warning()
		if (warn != nil) != tt.wantWarn {
			t.Errorf("ParseICCID(%q).Warning() = %v; want warning %v", tt.in, warn, tt.wantWarn)
		}
		if warn != nil && !errors.Is(warn, ErrICCIDCheckDigit) {
			t.Errorf("warning %v does not wrap ErrICCIDCheckDigit", warn)
		}
	}
}

func TestParseIMSI(t *testing.T) {
	tests := []struct {
		in      string
		want    IMSI
		wantErr bool
	}{
		{"460031234567890", "460031234567890", false},
		{"001010123456789", "001010123456789", false}, // test network
		{"imsi-214010123456789", "214010123456789", false},
		{"31026012345678", "31026012345678", false}, // 14 digits
		{"4600312345678901", "", true},
		{"4600312345678", "", true},
		{"46003123456789X", "", true},
		{"000010123456789", "", true},
		{"", "", true},
	}
	for _, tt := range tests {
		got, err := ParseIMSI(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseIMSI(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	i := IMSI("310260123456789")
	if i.MCC() != "310" || i.MNC(3) != "260" || i.MNC(2) != "26" || i.MNC(4) != "" {
		t.Errorf("MCC/MNC of %s: %q %q %q", i, i.MCC(), i.MNC(3), i.MNC(2))
	}
}

func TestParseMSISDN(t *testing.T) {
	tests := []struct {
		in      string
		want    MSISDN
		wantErr string
	}{
		{"+8613912345678", "+8613912345678", ""},
		{"+123456789", "+123456789", ""},
		{"+12345", "+12345", ""},
		{"+123456789012345", "+123456789012345", ""},
		{"8613912345678", "", "must start with +"},
		{"+1234", "", "has 4 digits"},
		{"+1234567890123456", "", "has 16 digits"},
		{"+0123456789", "", "cannot start with 0"},
		{"+86 139 1234 5678", "", "is not a digit"},
		{"+", "", "no digits"},
		{"", "", "empty"},
	}
	for _, tt := range tests {
		got, err := ParseMSISDN(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseMSISDN(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseMSISDN(%q) = %q, %v", tt.in, got, err)
		}
	}
}

func TestNormalizeMSISDN(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"8613912345678", "+8613912345678", false},
		{"+86 139-1234-5678", "+8613912345678", false},
		{"msisdn-8613912345678", "+8613912345678", false},
		{"0613912345678", "", true},
		{"abc", "", true},
	}
	for _, tt := range tests {
		got, err := NormalizeMSISDN(tt.in)
		if (err != nil) != tt.wantErr || string(got) != tt.want {
			t.Errorf("NormalizeMSISDN(%q) = %q, %v", tt.in, got, err)
		}
		if got != "" && got.Digits() != strings.TrimPrefix(tt.want, "+") {
			t.Errorf("Digits = %q", got.Digits())
		}
	}
}

func TestLuhnDigit(t *testing.T) {
	// Known IMEIs: the check digit of the first 14 digits is the 15th.
	for _, s := range []string{"490154203237518", "352656100367872", "352099001761481", "356938035643809"} {
		if got := luhnDigit(s[:14]); got != s[14] {
			t.Errorf("luhnDigit(%s) = %c, want %c", s[:14], got, s[14])
		}
	}
}

func TestValidateID(t *testing.T) {
	for _, ok := range []string{"gw-0001", "A_b-9", strings.Repeat("x", 64)} {
		if err := ValidateID("device id", ok); err != nil {
			t.Errorf("ValidateID(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a b", "a/b", "a+b", "a#b", "a*", "a>", strings.Repeat("x", 65), "ü"} {
		if err := ValidateID("device id", bad); err == nil {
			t.Errorf("ValidateID(%q) accepted", bad)
		}
	}
}

func TestWithCheckDigit(t *testing.T) {
	tests := map[string]string{
		"35693803564380":           "356938035643809",     // a published example IMEI
		"35209900176148":           "352099001761481",     // CAMARA's 35-209900-176148-1
		"8901260886258128535"[:18]: "8901260886258128535", // an ICCID whose Luhn passes
		"":                         "",
		"3569380356438x":           "",
		"+3569380356438":           "",
	}
	for in, want := range tests {
		if got := WithCheckDigit(in); got != want {
			t.Errorf("WithCheckDigit(%q) = %q, want %q", in, got, want)
		}
	}
	if _, err := ParseIMEI(WithCheckDigit("86123456789012")); err != nil {
		t.Errorf("an IMEI made with WithCheckDigit does not parse: %v", err)
	}
}

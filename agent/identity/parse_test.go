package identity

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cardbind/cardbind/agent/at"
)

func TestParseIMEI(t *testing.T) {
	tests := []struct {
		name    string
		lines   []string
		want    string
		wantErr error
	}{
		{"bare +CGSN", []string{"490154203237518"}, "490154203237518", nil},
		{"+CGSN=1 quoted", []string{`+CGSN: "352656100367872"`}, "352656100367872", nil},
		{"+CGSN tag unquoted", []string{"+CGSN: 352099001761481"}, "352099001761481", nil},
		{"+GSN tag", []string{"+GSN: 867698041234561"}, "867698041234561", nil},
		{"GSN without plus", []string{"GSN: 867698041234561"}, "867698041234561", nil},
		{"ATI with IMEI line", []string{"Manufacturer: SIMCOM INCORPORATED", "Model: SIMCOM_SIM7600E-H",
			"Revision: SIM7600M22_V1.1", "IMEI: 862181041234563", "+GCAP: +CGSM"}, "862181041234563", nil},
		{"ATI label before digits is skipped", []string{"Revision: 123456789012345", "IMEI: 354056091234561"}, "354056091234561", nil},
		{"spaces around", []string{"  490154203237518  "}, "490154203237518", nil},
		{"IMEISV is not an IMEI", []string{`+CGSN: "3526561003678701"`}, "", ErrNotFound},
		{"14 digits", []string{"49015420323751"}, "", ErrNotFound},
		{"all zeros", []string{"000000000000000"}, "", ErrUnprovisioned},
		{"empty", nil, "", ErrNotFound},
		{"hex MEID", []string{"A1000049ABCDEF"}, "", ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseIMEI(tt.lines)
			if got != tt.want || !errors.Is(err, tt.wantErr) {
				t.Errorf("ParseIMEI(%q) = %q, %v; want %q, %v", tt.lines, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestNormalizeICCID(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"89860436101892671308", "89860436101892671308", true},
		{"8901260886258128535F", "8901260886258128535", true},
		{"8901260886258128535f", "8901260886258128535", true},
		{"8901260886258128535", "8901260886258128535", true},
		{`"8939107800023416395"`, "8939107800023416395", true},
		{"898600700907A6019125", "898600700907A6019125", true}, // hex in the account part
		{"898602F9091830030220", "898602F9091830030220", true},
		{"98680036904030021872", "89860063090403208127", true}, // Huawei ^ICCID, swapped
		{"984402003576012594F9", "8944200053671052499", true},  // swapped with F padding
		{"8A860436101892671308", "", false},                    // hex before index 6
		{"9868003690403002187", "", false},                     // 98 but 19 long
		{"12345678901234567890", "", false},                    // not 89
		{"891004234814455936", "", false},                      // 18
		{"891004234814455936123", "", false},                   // 21
		{"8910042348144559G61", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, err := NormalizeICCID(tt.in)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("NormalizeICCID(%q) = %q, %v; want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseICCID(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  string
	}{
		{"Quectel +QCCID", []string{"+QCCID: 89860436101892671308"}, "89860436101892671308"},
		{"Quectel +QCCID padded", []string{"+QCCID: 8901260886258128535F"}, "8901260886258128535"},
		{"SIMCom +ICCID", []string{"+ICCID: 898600700907A6019125"}, "898600700907A6019125"},
		{"SIMCom +CICCID", []string{"+CICCID: 8986007009070019125"}, "8986007009070019125"},
		{"+CCID quoted", []string{`+CCID: "8939107800023416395"`}, "8939107800023416395"},
		{"+CCID bare", []string{"+CCID: 8939107800023416395"}, "8939107800023416395"},
		{"bare digits", []string{"8939107800023416395"}, "8939107800023416395"},
		{"Huawei ^ICCID swapped", []string{"^ICCID: 98680036904030021872"}, "89860063090403208127"},
		{"Telit #CCID", []string{"#CCID: 8990011916180288209"}, "8990011916180288209"},
		{"Sierra !ICCID", []string{"!ICCID: 89014103211118510720"}, "89014103211118510720"},
		{"label ICCID", []string{"ICCID: 89014103211118510720"}, "89014103211118510720"},
		{"other lines first", []string{"+CSQ: 17,99", "+CCID: 8939107800023416395"}, "8939107800023416395"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseICCID(tt.lines)
			if err != nil || got != tt.want {
				t.Errorf("ParseICCID(%q) = %q, %v; want %q", tt.lines, got, err, tt.want)
			}
		})
	}
	for _, bad := range [][]string{nil, {"+CCID: 12345"}, {"+CSQ: 17,99"}, {"+QCCID: 0000000000000000000"}} {
		if got, err := ParseICCID(bad); err == nil {
			t.Errorf("ParseICCID(%q) = %q, want error", bad, got)
		}
	}
}

func TestParseCRSMICCID(t *testing.T) {
	tests := []struct {
		name    string
		lines   []string
		want    string
		wantSW  *StatusError
		wantErr bool
	}{
		{"quoted", []string{`+CRSM: 144,0,"980140328441549563F1"`}, "8910042348144559361", nil, false},
		{"unquoted", []string{`+CRSM: 144,0,980140328441549563F1`}, "8910042348144559361", nil, false},
		{"MM vector F padded", []string{`+CRSM: 144,0,"984402003576012594F9"`}, "8944200053671052499", nil, false},
		{"MM vector 20 digits", []string{`+CRSM: 144,0,"98231420326409614067"`}, "89324102234690160476", nil, false},
		{"lower case hex", []string{`+CRSM: 144,0,"980140328441549563f1"`}, "8910042348144559361", nil, false},
		{"sw1 0x91 ok", []string{`+CRSM: 145,10,"980140328441549563F1"`}, "8910042348144559361", nil, false},
		{"longer data", []string{`+CRSM: 144,0,"980140328441549563F1FFFF"`}, "8910042348144559361", nil, false},
		{"file not found", []string{`+CRSM: 106,130`}, "", &StatusError{106, 130}, true},
		{"Gobi bogus", []string{`+CRSM: 106,134,""`}, "", &StatusError{106, 134}, true},
		{"2G not found", []string{`+CRSM: 148,4`}, "", &StatusError{148, 4}, true},
		{"short data", []string{`+CRSM: 144,0,"98014032"`}, "", nil, true},
		{"not hex", []string{`+CRSM: 144,0,"98014032844154956XF1"`}, "", nil, true},
		{"decodes to non-89", []string{`+CRSM: 144,0,"FFFFFFFFFFFFFFFFFFFF"`}, "", nil, true},
		{"no line", []string{"OK"}, "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCRSMICCID(tt.lines)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("got %q, %v; want %q err=%v", got, err, tt.want, tt.wantErr)
			}
			if tt.wantSW != nil {
				var se *StatusError
				if !errors.As(err, &se) || *se != *tt.wantSW {
					t.Errorf("err = %v, want %v", err, tt.wantSW)
				}
			}
		})
	}
}

func TestParseIMSI(t *testing.T) {
	tests := []struct {
		lines []string
		want  string
		ok    bool
	}{
		{[]string{"001010123456789"}, "001010123456789", true},
		{[]string{"+CIMI: 460001234567890"}, "460001234567890", true},
		{[]string{`+CIMI: "214010123456789"`}, "214010123456789", true},
		{[]string{"31026012345678"}, "31026012345678", true},
		{[]string{"0010101234567890"}, "", false}, // 16 digits
		{[]string{"12345"}, "", false},
		{[]string{"+CSQ: 17,99"}, "", false},
		{nil, "", false},
	}
	for _, tt := range tests {
		got, err := ParseIMSI(tt.lines)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("ParseIMSI(%q) = %q, %v; want %q ok=%v", tt.lines, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseCPIN(t *testing.T) {
	cme := func(code int, text string) error {
		return fmt.Errorf("AT+CPIN?: %w", &at.CMEError{Code: code, Text: text})
	}
	tests := []struct {
		name  string
		lines []string
		err   error
		want  SIMStatus
	}{
		{"ready", []string{"+CPIN: READY"}, nil, SIMStatus{State: SIMReady}},
		{"ready quoted", []string{`+CPIN: "READY"`}, nil, SIMStatus{State: SIMReady}},
		{"ready without OK", []string{"+CPIN: READY"}, at.ErrTimeout, SIMStatus{State: SIMReady}},
		{"pin", []string{"+CPIN: SIM PIN"}, nil, SIMStatus{SIMLocked, "SIM PIN"}},
		{"puk2", []string{"+CPIN: SIM PUK2"}, nil, SIMStatus{SIMLocked, "SIM PUK2"}},
		{"ph-net", []string{"+CPIN: PH-NET PIN"}, nil, SIMStatus{SIMLocked, "PH-NET PIN"}},
		{"Quectel not inserted", []string{"+CPIN: NOT INSERTED"}, nil, SIMStatus{State: SIMAbsent}},
		{"not ready", []string{"+CPIN: NOT READY"}, nil, SIMStatus{State: SIMNotReady}},
		{"CMEE=1 no SIM", nil, cme(10, "SIM not inserted"), SIMStatus{State: SIMAbsent}},
		{"CMEE=2 no SIM", nil, cme(10, "SIM not inserted"), SIMStatus{State: SIMAbsent}},
		{"CMEE=0 plain ERROR", nil, at.ErrError, SIMStatus{State: SIMUnknown}},
		{"CME 13 failure", nil, cme(13, "SIM failure"), SIMStatus{State: SIMFailure}},
		{"CME 14 busy", nil, cme(14, "SIM busy"), SIMStatus{State: SIMNotReady}},
		{"CME 515 init", nil, cme(515, "please wait, init in progress"), SIMStatus{State: SIMNotReady}},
		{"CME 11 PIN", nil, cme(11, "SIM PIN required"), SIMStatus{SIMLocked, "SIM PIN"}},
		{"vendor text absent", nil, cme(-1, "SIM not present"), SIMStatus{State: SIMAbsent}},
		{"vendor text busy", nil, cme(-1, "SIM is initializing, please wait"), SIMStatus{State: SIMNotReady}},
		{"CME 3", nil, cme(3, "operation not allowed"), SIMStatus{State: SIMUnknown}},
		{"timeout nothing", nil, at.ErrTimeout, SIMStatus{State: SIMUnknown}},
		{"weird value", []string{"+CPIN: BANANA"}, nil, SIMStatus{State: SIMUnknown}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseCPIN(tt.lines, tt.err); got != tt.want {
				t.Errorf("ParseCPIN = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseCPINFromEngineErrors(t *testing.T) {
	// The three CMEE forms as the engine turns them into errors.
	for final, want := range map[string]SIMState{
		"+CME ERROR: 10":               SIMAbsent,
		"+CME ERROR: SIM not inserted": SIMAbsent,
		"+CME ERROR: sim NOT inserted": SIMAbsent,
		"ERROR":                        SIMUnknown,
	} {
		err := runOne(t, "AT+CPIN?", "\r\n"+final+"\r\n")
		if got := ParseCPIN(nil, err).State; got != want {
			t.Errorf("%s: state %v, want %v (err %v)", final, got, want, err)
		}
	}
}

func TestParseRegistration(t *testing.T) {
	tests := []struct {
		line string
		want Registration
	}{
		{"+CREG: 0,1", Registration{Kind: "CREG", N: 0, Stat: RegHome, AcT: -1}},
		{"+CREG: 1", Registration{Kind: "CREG", N: -1, Stat: RegHome, AcT: -1}},
		{"+CREG: 2,0", Registration{Kind: "CREG", N: 2, Stat: RegNotRegistered, AcT: -1}},
		{`+CREG: 1,"1234","001122BB",7`, Registration{"CREG", -1, RegHome, "1234", "001122BB", 7}},
		{`+CREG: 5,"1234","001122bb"`, Registration{"CREG", -1, RegRoaming, "1234", "001122BB", -1}},
		{`+CREG: 2,1,"1234","001122BB"`, Registration{"CREG", 2, RegHome, "1234", "001122BB", -1}},
		{`+CREG: 2,1,"1234","001122BB",7`, Registration{"CREG", 2, RegHome, "1234", "001122BB", 7}},
		{`+CEREG: 2,1,"31C5","0083F7CD",7`, Registration{"CEREG", 2, RegHome, "31C5", "0083F7CD", 7}},
		{`+CEREG: 3,"31C5","0083F7CD",7`, Registration{"CEREG", -1, RegDenied, "31C5", "0083F7CD", 7}},
		{`+CEREG: 4,3,"31C5","0083F7CD",7,0,13`, Registration{"CEREG", 4, RegDenied, "31C5", "0083F7CD", 7}},
		{`+CEREG: 3,,,,0,13`, Registration{"CEREG", -1, RegDenied, "", "", -1}},
		{`+CGREG: 2,5,1A2B,00C0FFEE,2,01`, Registration{"CGREG", 2, RegRoaming, "1A2B", "00C0FFEE", 2}},
		{"+CGREG:1,1", Registration{"CGREG", 1, RegHome, "", "", -1}},
		{`+CEREG: 0,4`, Registration{"CEREG", 0, RegUnknown, "", "", -1}},
	}
	for _, tt := range tests {
		got, err := ParseRegistration(tt.line)
		if err != nil || got != tt.want {
			t.Errorf("ParseRegistration(%q) = %+v, %v; want %+v", tt.line, got, err, tt.want)
		}
	}
	for _, bad := range []string{"+CSQ: 17,99", "+CREG:", "+CREG: x", `+CREG: 1,"ZZZZ","1"`, "+CREG: 2,1,\"12\",\"34\",x", "CREG"} {
		if got, err := ParseRegistration(bad); err == nil {
			t.Errorf("ParseRegistration(%q) = %+v, want error", bad, got)
		}
	}
}

func TestBestRegistration(t *testing.T) {
	reg := func(kind string, s RegStat) Registration { return Registration{Kind: kind, Stat: s} }
	tests := []struct {
		in   []Registration
		want string
	}{
		{[]Registration{reg("CEREG", RegHome), reg("CGREG", RegNotRegistered), reg("CREG", RegUnknown)}, "CEREG"},
		{[]Registration{reg("CEREG", RegSearching), reg("CGREG", RegRoaming)}, "CGREG"},
		{[]Registration{reg("CEREG", RegSearching), reg("CREG", RegDenied)}, "CREG"},
		{[]Registration{reg("CEREG", RegHome), reg("CREG", RegHome)}, "CEREG"},
	}
	for _, tt := range tests {
		got, ok := BestRegistration(tt.in...)
		if !ok || got.Kind != tt.want {
			t.Errorf("BestRegistration(%v) = %v", tt.in, got)
		}
	}
	if _, ok := BestRegistration(); ok {
		t.Error("BestRegistration() ok for no input")
	}
}

func TestCleanInfoAndVendor(t *testing.T) {
	tests := []struct {
		lines  []string
		want   string
		vendor Vendor
	}{
		{[]string{"Quectel"}, "Quectel", VendorQuectel},
		{[]string{" WAVECOM MODEM"}, "WAVECOM MODEM", VendorGeneric},
		{[]string{"+CGMI: \"u-blox\""}, "u-blox", VendorUblox},
		{[]string{"SIMCOM INCORPORATED"}, "SIMCOM INCORPORATED", VendorSIMCom},
		{[]string{"Telit"}, "Telit", VendorTelit},
		{[]string{"huawei"}, "huawei", VendorHuawei},
		{[]string{"Sierra Wireless, Incorporated"}, "Sierra Wireless, Incorporated", VendorSierra},
		{[]string{"GMI: Fibocom"}, "Fibocom", VendorGeneric},
		{[]string{"", "Revision: EC25EFAR06A06M4G"}, "EC25EFAR06A06M4G", VendorGeneric},
		{[]string{"+CGMR: LE20B04SIM7600M22"}, "LE20B04SIM7600M22", VendorGeneric},
		{nil, "", VendorGeneric},
	}
	for _, tt := range tests {
		got := CleanInfo(tt.lines)
		if got != tt.want {
			t.Errorf("CleanInfo(%q) = %q, want %q", tt.lines, got, tt.want)
		}
		if v := VendorOf(got, ""); v != tt.vendor {
			t.Errorf("VendorOf(%q) = %v, want %v", got, v, tt.vendor)
		}
	}
	if v := VendorOf("", "SIMCOM_SIM7600E-H"); v != VendorSIMCom {
		t.Errorf("VendorOf by model = %v", v)
	}
}

func TestParseCSQ(t *testing.T) {
	tests := []struct {
		lines []string
		want  Signal
		ok    bool
	}{
		{[]string{"+CSQ: 17,99"}, Signal{17, 99, -79}, true},
		{[]string{"+CSQ: 99,99"}, Signal{99, 99, 0}, true},
		{[]string{"+CSQ: 0,0"}, Signal{0, 0, -113}, true},
		{[]string{"+CSQ: 31,7"}, Signal{31, 7, -51}, true},
		{[]string{"+CSQ: 32,0"}, Signal{}, false},
		{[]string{"+CSQ: 17"}, Signal{}, false},
		{[]string{"+CSQ: -1,0"}, Signal{}, false},
		{nil, Signal{}, false},
	}
	for _, tt := range tests {
		got, err := ParseCSQ(tt.lines)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("ParseCSQ(%q) = %+v, %v", tt.lines, got, err)
		}
	}
}

func TestClassifyURC(t *testing.T) {
	tests := []struct {
		line string
		want Event
	}{
		{"+CPIN: READY", EventSIM},
		{"+CPIN: NOT READY", EventSIM},
		{"+QSIMSTAT: 1,0", EventSIM},
		{"+QUSIM: 1", EventSIM},
		{"+SIMCARD: NOT AVAILABLE", EventSIM},
		{"+UUSIMSTAT: 0", EventSIM},
		{"#QSS: 0", EventSIM},
		{"^SIMST: 255", EventSIM},
		{"^SCKS: 1", EventSIM},
		{"+SIM: 1", EventSIM},
		{"+KSUP: 2", EventSIM},
		{"PB DONE", EventSIM},
		{"+QIND: SMS DONE", EventSIM},
		{"RDY", EventBoot},
		{"^SYSSTART", EventBoot},
		{"+CREG: 0", EventRegistration},
		{"+CEREG: 1,\"31C5\",\"0083F7CD\",7", EventRegistration},
		{"+CMTI: \"SM\",1", EventNone},
		{"RING", EventNone},
		{"", EventNone},
	}
	for _, tt := range tests {
		if got := ClassifyURC(tt.line); got != tt.want {
			t.Errorf("ClassifyURC(%q) = %v, want %v", tt.line, got, tt.want)
		}
		if got, want := IsSIMEvent(tt.line), tt.want == EventSIM || tt.want == EventBoot; got != want {
			t.Errorf("IsSIMEvent(%q) = %v", tt.line, got)
		}
	}
}

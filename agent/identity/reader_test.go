package identity

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cardbind/cardbind/agent/at"
)

func TestReaderVendors(t *testing.T) {
	tests := []struct {
		name string
		tr   transcript
		want Identity
		// commands that must not have been sent
		notSent []string
	}{
		{
			name: "Quectel EC25",
			tr: transcript{replies: map[string][]string{
				"AT+CGMI":   r(ok("Quectel")),
				"AT+CGMM":   r(ok("EC25")),
				"AT+CGMR":   r(ok("Revision: EC25EFAR06A06M4G")),
				"AT+CGSN":   r(ok("867698041234561")),
				"AT+CPIN?":  r(ok("+CPIN: READY")),
				"AT+QCCID":  r("\r\n+QUSIM: 1\r\n\r\n+QCCID: 8901260886258128535F\r\n\r\nOK\r\n"),
				"AT+CIMI":   r(ok("310260123456789")),
				"AT+CEREG?": r(ok(`+CEREG: 2,1,"31C5","0083F7CD",7`)),
				"AT+CGREG?": r(ok("+CGREG: 0,1")),
				"AT+CREG?":  r(ok("+CREG: 0,1")),
				COPSNumeric: r(ok()),
				"AT+COPS?":  r(ok(`+COPS: 0,2,"310260",7`)),
				"AT+CSQ":    r(ok("+CSQ: 24,99")),
			}},
			want: Identity{Manufacturer: "Quectel", Model: "EC25", Revision: "EC25EFAR06A06M4G", Vendor: VendorQuectel,
				IMEI: "867698041234561", SIM: SIMStatus{State: SIMReady}, ICCID: "8901260886258128535", ICCIDSource: "AT+QCCID",
				IMSI:         "310260123456789",
				Registration: &Registration{"CEREG", 2, RegHome, "31C5", "0083F7CD", 7}, Signal: &Signal{24, 99, -65},
				PLMN: &PLMN{"310", "260"}},
			notSent: []string{CRSMReadICCID},
		},
		{
			name: "Quectel BG96 echo on, URCs inside replies, CMCC hex ICCID",
			tr: transcript{echo: true, replies: map[string][]string{
				"AT+CGMI":   r("\r\nQuectel\r\n\r\n+QIND: SMS DONE\r\n\r\nOK\r\n"),
				"AT+CGMM":   r(ok("BG96")),
				"AT+CGMR":   r(ok("BG96MAR02A07M1G")),
				"AT+CGSN":   r("\r\n354056091234561\r\n\r\n+CREG: 1\r\n\r\nOK\r\n"),
				"AT+CPIN?":  r("\r\n+QIND: PB DONE\r\n\r\n+CPIN: READY\r\n\r\nOK\r\n"),
				"AT+QCCID":  r(ok("+QCCID: 898602F9091830030220")),
				"AT+CIMI":   r("\r\n+QSIMSTAT: 1,1\r\n\r\n460001234567890\r\n\r\nOK\r\n"),
				"AT+CEREG?": r(ok("+CEREG: 0,4")),
				"AT+CGREG?": r(ok("+CGREG: 0,2")),
				"AT+CREG?":  r(ok("+CREG: 0,5")),
				"AT+CSQ":    r(ok("+CSQ: 99,99")),
			}},
			want: Identity{Manufacturer: "Quectel", Model: "BG96", Revision: "BG96MAR02A07M1G", Vendor: VendorQuectel,
				IMEI: "354056091234561", SIM: SIMStatus{State: SIMReady}, ICCID: "898602F9091830030220", ICCIDSource: "AT+QCCID",
				IMSI:         "460001234567890",
				Registration: &Registration{"CREG", 0, RegRoaming, "", "", -1}, Signal: &Signal{99, 99, 0}},
		},
		{
			name: "SIMCom SIM7600 doubled CR, echo on",
			tr: transcript{echo: true, replies: map[string][]string{
				"AT+CGMI":   r("\r\r\nSIMCOM INCORPORATED\r\r\n\r\r\nOK\r\r\n"),
				"AT+CGMM":   r("\r\r\nSIMCOM_SIM7600E-H\r\r\n\r\r\nOK\r\r\n"),
				"AT+CGMR":   r("\r\r\n+CGMR: LE20B04SIM7600M22\r\r\n\r\r\nOK\r\r\n"),
				"AT+CGSN":   r("\r\r\n862181041234563\r\r\n\r\r\nOK\r\r\n"),
				"AT+CPIN?":  r("\r\r\n+CPIN: READY\r\r\n\r\r\nOK\r\r\n"),
				"AT+CICCID": r("\r\r\n+ICCID: 898600700907A6019125\r\r\n\r\r\nOK\r\r\n"),
				"AT+CIMI":   r("\r\r\n460001234567891\r\r\n\r\r\nOK\r\r\n"),
				"AT+CEREG?": r("\r\r\n+CEREG: 0,1\r\r\n\r\r\nOK\r\r\n"),
				"AT+CGREG?": r("\r\r\n+CGREG: 0,1\r\r\n\r\r\nOK\r\r\n"),
				"AT+CREG?":  r("\r\r\n+CREG: 0,1\r\r\n\r\r\nOK\r\r\n"),
				COPSNumeric: r("\r\r\nOK\r\r\n"),
				"AT+COPS?":  r("\r\r\n+COPS: 0,2,\"46001\",7\r\r\n\r\r\nOK\r\r\n"),
				"AT+CSQ":    r("\r\r\n+CSQ: 20,99\r\r\n\r\r\nOK\r\r\n"),
			}},
			want: Identity{Manufacturer: "SIMCOM INCORPORATED", Model: "SIMCOM_SIM7600E-H", Revision: "LE20B04SIM7600M22",
				Vendor: VendorSIMCom, IMEI: "862181041234563", SIM: SIMStatus{State: SIMReady},
				ICCID: "898600700907A6019125", ICCIDSource: "AT+CICCID", IMSI: "460001234567891",
				Registration: &Registration{"CEREG", 0, RegHome, "", "", -1}, Signal: &Signal{20, 99, -73},
				PLMN: &PLMN{"460", "01"}},
		},
		{
			name: "u-blox SARA-R410M",
			tr: transcript{replies: map[string][]string{
				"AT+CGMI":   r(ok("u-blox")),
				"AT+CGMM":   r(ok("SARA-R410M-02B")),
				"AT+CGMR":   r(ok("L0.0.00.00.05.06 [Feb 03 2018 13:00:41]")),
				"AT+CGSN":   r("\r\n+UUSIMSTAT: 6\r\n\r\n352881081234566\r\n\r\nOK\r\n"),
				"AT+CPIN?":  r(ok("+CPIN: READY")),
				"AT+CCID":   r(ok("+CCID: 8939107800023416395")),
				"AT+CIMI":   r(ok("222107701772423")),
				"AT+CEREG?": r(ok("+CEREG: 0,5")),
				"AT+CGREG?": r(ok("+CGREG: 0,0")),
				"AT+CREG?":  r(ok("+CREG: 0,0")),
				COPSNumeric: r(ok()),
				"AT+COPS?":  r("\r\n+UUSIMSTAT: 6\r\n\r\n+COPS: 0,2,\"310410\",7\r\n\r\nOK\r\n"),
				"AT+CSQ":    r(ok("+CSQ: 12,99")),
			}},
			want: Identity{Manufacturer: "u-blox", Model: "SARA-R410M-02B", Revision: "L0.0.00.00.05.06 [Feb 03 2018 13:00:41]",
				Vendor: VendorUblox, IMEI: "352881081234566", SIM: SIMStatus{State: SIMReady},
				ICCID: "8939107800023416395", ICCIDSource: "AT+CCID", IMSI: "222107701772423",
				Registration: &Registration{"CEREG", 0, RegRoaming, "", "", -1}, Signal: &Signal{12, 99, -89},
				PLMN: &PLMN{"310", "410"}},
		},
		{
			name: "Telit LE910 tagged IMSI, no CEREG",
			tr: transcript{echo: true, replies: map[string][]string{
				"AT+CGMI":   r(ok("Telit")),
				"AT+CGMM":   r(ok("LE910C4-EU")),
				"AT+CGMR":   r(ok("25.21.660")),
				"AT+CGSN":   r(ok("359153081234563")),
				"AT+CPIN?":  r(ok("+CPIN: READY")),
				"AT#CCID":   r(ok("#CCID: 8990011916180288209")),
				"AT+CIMI":   r(ok("+CIMI: 901288001234567")),
				"AT+CGREG?": r(ok(`+CGREG: 2,5,"1A2B","00C0FFEE",2`)),
				"AT+CREG?":  r(ok(`+CREG: 2,5,"1A2B","00C0FFEE",2`)),
				COPSNumeric: r(ok()),
				"AT+COPS?":  r(ok(`+COPS: 0,2,"22201",2`)),
				"AT+CSQ":    r(ok("+CSQ: 15,0")),
			}},
			want: Identity{Manufacturer: "Telit", Model: "LE910C4-EU", Revision: "25.21.660", Vendor: VendorTelit,
				IMEI: "359153081234563", SIM: SIMStatus{State: SIMReady}, ICCID: "8990011916180288209", ICCIDSource: "AT#CCID",
				IMSI:         "901288001234567",
				Registration: &Registration{"CGREG", 2, RegRoaming, "1A2B", "00C0FFEE", 2}, Signal: &Signal{15, 0, -83},
				PLMN: &PLMN{"222", "01"}},
		},
		{
			name: "Huawei ME909s swapped ^ICCID, COMMAND NOT SUPPORT",
			tr: transcript{replies: map[string][]string{
				"AT+CGMI":   r(ok("Huawei Technologies Co., Ltd.")),
				"AT+CGMM":   r(ok("ME909s-120")),
				"AT+CGMR":   r(ok("11.617.01.00.00")),
				"AT+CGSN":   r(ok("+CGSN: 861000031234568")),
				"AT+CPIN?":  r("\r\n^SIMST: 1\r\n\r\n+CPIN: READY\r\n\r\nOK\r\n"),
				"AT^ICCID?": r(ok("^ICCID: 98680036904030021872")),
				"AT+CIMI":   r(ok("460011234567890")),
				"AT+CEREG?": r("\r\nCOMMAND NOT SUPPORT\r\n"),
				"AT+CGREG?": r(ok("+CGREG: 0,1")),
				"AT+CREG?":  r(ok("+CREG: 0,1")),
				"AT+CSQ":    r(ok("+CSQ: 31,99")),
			}},
			want: Identity{Manufacturer: "Huawei Technologies Co., Ltd.", Model: "ME909s-120", Revision: "11.617.01.00.00",
				Vendor: VendorHuawei, IMEI: "861000031234568", SIM: SIMStatus{State: SIMReady},
				ICCID: "89860063090403208127", ICCIDSource: "AT^ICCID?", IMSI: "460011234567890",
				Registration: &Registration{"CGREG", 0, RegHome, "", "", -1}, Signal: &Signal{31, 99, -51}},
		},
		{
			name: "Sierra MC7455",
			tr: transcript{replies: map[string][]string{
				"AT+CGMI":   r(ok("Sierra Wireless, Incorporated")),
				"AT+CGMM":   r(ok("MC7455")),
				"AT+CGMR":   r(ok("SWI9X30C_02.24.05.06 r7040 CARMD-EV-FRMWR2 2017/05/19 06:23:09")),
				"AT+CGSN":   r(ok("359072081234565")),
				"AT+CPIN?":  r(ok("+CPIN: READY")),
				"AT!ICCID?": r(ok("ICCID: 89014103211118510720")),
				"AT+CIMI":   r(ok("310410123456789")),
				"AT+CEREG?": r(ok(`+CEREG: 2,1,"1A2B","01A2B3C4",7`)),
				"AT+CGREG?": r(ok("+CGREG: 0,1")),
				"AT+CREG?":  r(ok("+CREG: 0,1")),
				"AT+CSQ":    r(ok("+CSQ: 18,99")),
			}},
			want: Identity{Manufacturer: "Sierra Wireless, Incorporated", Model: "MC7455",
				Revision: "SWI9X30C_02.24.05.06 r7040 CARMD-EV-FRMWR2 2017/05/19 06:23:09",
				Vendor:   VendorSierra, IMEI: "359072081234565", SIM: SIMStatus{State: SIMReady},
				ICCID: "89014103211118510720", ICCIDSource: "AT!ICCID?", IMSI: "310410123456789",
				Registration: &Registration{"CEREG", 2, RegHome, "1A2B", "01A2B3C4", 7}, Signal: &Signal{18, 99, -77}},
		},
		{
			name: "generic Wavecom: +GSN fallback, +CPIN: READY without OK, CRSM fallback with bogus first answer",
			tr: transcript{replies: map[string][]string{
				"AT+CGMI":     r(ok(" WAVECOM MODEM")),
				"AT+CGMM":     r(ok("MULTIBAND  900E  1800")),
				"AT+CGMR":     r(ok(`640b09gg.Q2406B 1266500 070607 17:06`)),
				"AT+CGSN":     r("\r\nERROR\r\n"),
				"AT+GSN":      r(ok("490154203237518")),
				"AT+CPIN?":    r("\r\n+CPIN: READY\r\n"),
				"AT+CCID":     r("\r\n+CME ERROR: 4\r\n"),
				CRSMReadICCID: {ok(`+CRSM: 106,134,""`), ok(`+CRSM: 144,0,"980140328441549563F1"`)},
				"AT+CIMI":     r(ok("208150123456789")),
				"AT+CREG?":    r(ok("+CREG: 0,1")),
				"AT+CSQ":      r(ok("+CSQ: 9,99")),
				"AT+CMEE?":    r(ok("+CMEE: 1")),
				"AT+CEREG?":   r("\r\nERROR\r\n"),
				"AT+CGREG?":   r("\r\n+CME ERROR: 4\r\n"),
			}},
			want: Identity{Manufacturer: "WAVECOM MODEM", Model: "MULTIBAND  900E  1800", Revision: "640b09gg.Q2406B 1266500 070607 17:06",
				Vendor: VendorGeneric, IMEI: "490154203237518", SIM: SIMStatus{State: SIMReady},
				ICCID: "8910042348144559361", ICCIDSource: CRSMReadICCID, IMSI: "208150123456789",
				Registration: &Registration{"CREG", 0, RegHome, "", "", -1}, Signal: &Signal{9, 99, -95}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, port := engineFor(t, tt.tr)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			got, err := NewReader(e, nil).Read(ctx)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			checkIdentity(t, got, tt.want, false)
			for _, c := range tt.notSent {
				if slices.Contains(port.commands(), c) {
					t.Errorf("%s was sent", c)
				}
			}
		})
	}
}

// checkIdentity compares everything but Problems (unless withProblems).
func checkIdentity(t *testing.T, got, want Identity, withProblems bool) {
	t.Helper()
	if !withProblems {
		got.Problems, want.Problems = nil, nil
	}
	if g, w := got.Registration, want.Registration; (g == nil) != (w == nil) || (g != nil && *g != *w) {
		t.Errorf("Registration = %+v, want %+v", g, w)
	}
	if g, w := got.Signal, want.Signal; (g == nil) != (w == nil) || (g != nil && *g != *w) {
		t.Errorf("Signal = %+v, want %+v", g, w)
	}
	if g, w := got.PLMN, want.PLMN; (g == nil) != (w == nil) || (g != nil && *g != *w) {
		t.Errorf("PLMN = %+v, want %+v", g, w)
	}
	got.Registration, want.Registration, got.Signal, want.Signal, got.PLMN, want.PLMN = nil, nil, nil, nil, nil, nil
	if !slices.Equal(got.Problems, want.Problems) {
		t.Errorf("Problems = %q, want %q", got.Problems, want.Problems)
	}
	got.Problems, want.Problems = nil, nil
	if got.Manufacturer != want.Manufacturer || got.Model != want.Model || got.Revision != want.Revision ||
		got.Vendor != want.Vendor || got.IMEI != want.IMEI || got.SIM != want.SIM || got.ICCID != want.ICCID ||
		got.ICCIDSource != want.ICCIDSource || got.IMSI != want.IMSI {
		t.Errorf("Identity =\n %+v\nwant\n %+v", got, want)
	}
}

func TestReaderNoSIM(t *testing.T) {
	base := func(cpin string) map[string][]string {
		return map[string][]string{
			"AT+CGMI":   r(ok("Telit")),
			"AT+CGMM":   r(ok("LE910C4-EU")),
			"AT+CGMR":   r(ok("25.21.660")),
			"AT+CGSN":   r(ok("359153081234563")),
			"AT+CPIN?":  r(cpin),
			"AT+CEREG?": r(ok("+CEREG: 0,0")),
			"AT+CGREG?": r(ok("+CGREG: 0,0")),
			"AT+CREG?":  r(ok("+CREG: 0,0")),
			"AT+CSQ":    r(ok("+CSQ: 14,99")),
		}
	}
	tests := []struct {
		name       string
		cpin       string
		echo       bool
		want       SIMState
		readsICCID bool
	}{
		{"CMEE=1", "\r\n#QSS: 0\r\n\r\n+CME ERROR: 10\r\n", false, SIMAbsent, false},
		{"CMEE=2", "\r\n+CME ERROR: SIM not inserted\r\n", true, SIMAbsent, false},
		{"CMEE=2 SIMCom URC first", "\r\n+SIMCARD: NOT AVAILABLE\r\n\r\n+CME ERROR: SIM not inserted\r\n", false, SIMAbsent, false},
		{"Quectel NOT INSERTED", ok("+CPIN: NOT INSERTED"), false, SIMAbsent, false},
		// CMEE=0 cannot tell: the reader still tries, and the failures are problems.
		{"CMEE=0", "\r\nERROR\r\n", false, SIMUnknown, true},
		{"busy", "\r\n+CME ERROR: 14\r\n", false, SIMNotReady, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, port := engineFor(t, transcript{echo: tt.echo, replies: base(tt.cpin)})
			got, err := NewReader(e, nil).Read(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if got.SIM.State != tt.want || got.ICCID != "" || got.IMSI != "" || got.IMEI != "359153081234563" {
				t.Errorf("got %+v", got)
			}
			if sent := slices.Contains(port.commands(), "AT#CCID"); sent != tt.readsICCID {
				t.Errorf("ICCID read = %v, want %v (%q)", sent, tt.readsICCID, port.commands())
			}
			if tt.readsICCID && !slices.ContainsFunc(got.Problems, func(p string) bool { return strings.HasPrefix(p, "iccid:") }) {
				t.Errorf("Problems = %q, want an iccid entry", got.Problems)
			}
			if got.Registration == nil || got.Registration.Stat != RegNotRegistered {
				t.Errorf("Registration = %+v", got.Registration)
			}
		})
	}
}

func TestReaderCRSMRefused(t *testing.T) {
	e, _ := engineFor(t, transcript{replies: map[string][]string{
		"AT+CGMI":     r(ok("Quectel")),
		"AT+CGSN":     r(ok("867698041234561")),
		"AT+CPIN?":    r(ok("+CPIN: READY")),
		"AT+QCCID":    r("\r\nERROR\r\n"),
		CRSMReadICCID: r("\r\n+CME ERROR: 3\r\n"),
	}})
	got, err := NewReader(e, nil).Read(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got.ICCID != "" || !slices.ContainsFunc(got.Problems, func(p string) bool {
		return strings.HasPrefix(p, "iccid:") && strings.Contains(p, "operation not allowed")
	}) {
		t.Errorf("ICCID %q, Problems %q", got.ICCID, got.Problems)
	}
}

func TestReaderNoAnswer(t *testing.T) {
	all := map[string][]string{}
	for _, c := range []string{"AT+CGMI", "AT+GMI", "AT+CGMM", "AT+CGMR", "AT+CGSN", "AT+GSN", "AT+CMEE?", "AT+CSCS?", "AT"} {
		all[c] = r(silent)
	}
	e, _ := engineFor(t, transcript{replies: all})
	start := time.Now()
	_, err := NewReader(e, nil).Read(t.Context())
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("err = %v, want ErrNoAnswer", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("gave up after %v", d)
	}
}

func TestReaderPortGone(t *testing.T) {
	e, port := engineFor(t, transcript{replies: map[string][]string{"AT+CGMI": r(ok("Quectel"))}})
	_ = port.Close()
	_, err := NewReader(e, nil).Read(t.Context())
	if !errors.Is(err, at.ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}

// fakeCommander answers from a map without an engine, to test Reader's
// decisions alone.
type fakeCommander map[string]struct {
	lines []string
	err   error
}

func (f fakeCommander) Command(_ context.Context, cmd string, _ ...at.CommandOption) (at.Response, error) {
	r, ok := f[cmd]
	if !ok {
		return at.Response{}, at.ErrError
	}
	return at.Response{Lines: r.lines}, r.err
}

func TestReaderLockedSIM(t *testing.T) {
	f := fakeCommander{
		"AT+CGMI":   {lines: []string{"Quectel"}},
		"AT+CGSN":   {lines: []string{"867698041234561"}},
		"AT+CPIN?":  {lines: []string{"+CPIN: SIM PIN"}},
		"AT+QCCID":  {lines: []string{"+QCCID: 8901260886258128535F"}},
		"AT+CIMI":   {err: &at.CMEError{Code: 11, Text: "SIM PIN required"}},
		"AT+CEREG?": {lines: []string{"+CEREG: 0,0"}},
	}
	got, err := NewReader(f, nil).Read(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got.SIM != (SIMStatus{SIMLocked, "SIM PIN"}) || got.ICCID != "8901260886258128535" || got.IMSI != "" {
		t.Errorf("got %+v", got)
	}
	if !slices.ContainsFunc(got.Problems, func(p string) bool { return strings.HasPrefix(p, "imsi:") }) {
		t.Errorf("Problems = %q", got.Problems)
	}
}

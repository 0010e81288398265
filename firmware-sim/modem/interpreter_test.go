package modem

import (
	"testing"
)

const ok = "\r\nOK\r\n"

// info frames information lines the way a verbose modem does.
func info(lines ...string) string {
	s := "\r\n"
	for _, l := range lines {
		s += l + "\r\n"
	}
	return s
}

type atCase struct {
	name  string
	noSIM bool
	setup []string // sent first, answers ignored
	in    string
	want  string
}

func runATCases(t *testing.T, personality string, cases []atCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := Config{Personality: personality, SIM: testSIM()}
			if tc.noSIM {
				cfg.SIM = nil
			}
			h := newHarness(t, cfg)
			if cfg.SIM != nil {
				waitStat(t, h.m, 1)
			}
			h.settle() // boot URCs
			for _, s := range tc.setup {
				h.send(s)
			}
			if got := h.send(tc.in); got != tc.want {
				t.Errorf("%q:\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}

// commonCases hold for every personality. CMEE is set explicitly because
// its default differs between vendors.
func commonCases() []atCase {
	return []atCase{
		{name: "AT", in: "AT\r", want: "AT\r" + ok},
		{name: "CGSN echo", in: "AT+CGSN\r", want: "AT+CGSN\r\r\n356938035643809\r\n\r\nOK\r\n"},
		{name: "CGSN no echo", setup: []string{"ATE0\r"}, in: "AT+CGSN\r", want: info(testIMEI) + ok},
		{name: "ATE0 echoes itself", in: "ATE0\r", want: "ATE0\r" + ok},
		{name: "lower case", setup: []string{"ATE0\r"}, in: "at+cgsn\r", want: info(testIMEI) + ok},
		{name: "CRLF", setup: []string{"ATE0\r"}, in: "AT+GSN\r\n", want: info(testIMEI) + ok},
		{name: "stray LF", setup: []string{"ATE0\r"}, in: "\nAT+GSN\n\r", want: info(testIMEI) + ok},
		{name: "backspace", in: "AT+CIMX\bI\r", want: "AT+CIMX\bI\r" + info(testIMSI) + ok},
		{name: "noise before AT", setup: []string{"ATE0\r"}, in: "~~AT+CIMI\r", want: info(testIMSI) + ok},
		{name: "empty line", setup: []string{"ATE0\r"}, in: "\r", want: ""},
		{name: "no AT", setup: []string{"ATE0\r"}, in: "hello\r", want: ""},
		{name: "CIMI", setup: []string{"ATE0\r"}, in: "AT+CIMI\r", want: info(testIMSI) + ok},
		{name: "CPIN", setup: []string{"ATE0\r"}, in: "AT+CPIN?\r", want: info("+CPIN: READY") + ok},
		{name: "CRSM ICCID", setup: []string{"ATE0\r"}, in: "AT+CRSM=176,12258,0,0,10\r",
			want: info(`+CRSM: 144,0,"98683081462002318379"`) + ok},
		{name: "CRSM IMSI", setup: []string{"ATE0\r"}, in: "AT+CRSM=176,28423,0,0,9\r",
			want: info(`+CRSM: 144,0,"084906302143658709"`) + ok},
		{name: "CRSM unknown file", setup: []string{"ATE0\r"}, in: "AT+CRSM=176,28589,0,0,4\r",
			want: info("+CRSM: 106,130") + ok},
		{name: "chain one final", setup: []string{"ATE0\r"}, in: "AT+CIMI;+GSN\r", want: info(testIMSI) + info(testIMEI) + ok},
		{name: "chain stops at error", setup: []string{"ATE0\r", "AT+CMEE=0\r"}, in: "AT+CIMI;+FOO;+GSN\r",
			want: info(testIMSI) + "\r\nERROR\r\n"},
		{name: "basic chain", in: "ATE0V1\r", want: "ATE0V1\r" + ok},
		{name: "unknown", setup: []string{"ATE0\r", "AT+CMEE=2\r"}, in: "AT+NOPE\r", want: "\r\nERROR\r\n"},
		{name: "syntax", setup: []string{"ATE0\r"}, in: "AT+CGSN=\"1\r", want: "\r\nERROR\r\n"},
		{name: "CMEE read", setup: []string{"ATE0\r", "AT+CMEE=2\r"}, in: "AT+CMEE?\r", want: info("+CMEE: 2") + ok},
		{name: "CMEE test", setup: []string{"ATE0\r"}, in: "AT+CMEE=?\r", want: info("+CMEE: (0-2)") + ok},
		{name: "CMEE bad", setup: []string{"ATE0\r", "AT+CMEE=1\r"}, in: "AT+CMEE=7\r", want: info("+CME ERROR: 50")},
		{name: "no SIM CMEE0", noSIM: true, setup: []string{"ATE0\r", "AT+CMEE=0\r"}, in: "AT+CIMI\r", want: "\r\nERROR\r\n"},
		{name: "no SIM CMEE1", noSIM: true, setup: []string{"ATE0\r", "AT+CMEE=1\r"}, in: "AT+CPIN?\r", want: info("+CME ERROR: 10")},
		{name: "no SIM CMEE2", noSIM: true, setup: []string{"ATE0\r", "AT+CMEE=2\r"}, in: "AT+CRSM=176,12258,0,0,10\r",
			want: info("+CME ERROR: SIM not inserted")},
		{name: "no SIM IMEI reads", noSIM: true, setup: []string{"ATE0\r"}, in: "AT+CGSN\r", want: info(testIMEI) + ok},
		{name: "CREG", setup: []string{"ATE0\r"}, in: "AT+CREG?\r", want: info("+CREG: 0,1") + ok},
		{name: "CEREG n=2", setup: []string{"ATE0\r", "AT+CEREG=2\r"}, in: "AT+CEREG?\r",
			want: info(`+CEREG: 2,1,"1A2B","01A2B3C4",7`) + ok},
		{name: "CGREG test", setup: []string{"ATE0\r"}, in: "AT+CGREG=?\r", want: info("+CGREG: (0-2)") + ok},
		{name: "no SIM CEREG", noSIM: true, setup: []string{"ATE0\r"}, in: "AT+CEREG?\r", want: info("+CEREG: 0,0") + ok},
		{name: "COPS", setup: []string{"ATE0\r"}, in: "AT+COPS?\r", want: info(`+COPS: 0,0,"CHN-CT",7`) + ok},
		{name: "COPS numeric", setup: []string{"ATE0\r"}, in: "AT+COPS=3,2;+COPS?\r", want: info(`+COPS: 0,2,"46003",7`) + ok},
		{name: "COPS dereg", setup: []string{"ATE0\r", "AT+COPS=2\r"}, in: "AT+COPS?;+CREG?\r",
			want: info("+COPS: 2") + info("+CREG: 0,0") + ok},
		{name: "CSQ", setup: []string{"ATE0\r"}, in: "AT+CSQ\r", want: info("+CSQ: 20,99") + ok},
		{name: "CFUN read", setup: []string{"ATE0\r"}, in: "AT+CFUN?\r", want: info("+CFUN: 1") + ok},
		{name: "CFUN 4", setup: []string{"ATE0\r", "AT+CFUN=4\r"}, in: "AT+CFUN?;+CREG?;+CSQ\r",
			want: info("+CFUN: 4") + info("+CREG: 0,0") + info("+CSQ: 99,99") + ok},
		{name: "CFUN 4 keeps SIM", setup: []string{"ATE0\r", "AT+CFUN=4\r"}, in: "AT+CIMI\r", want: info(testIMSI) + ok},
		{name: "CGPADDR", setup: []string{"ATE0\r"}, in: "AT+CGPADDR=1\r", want: info(`+CGPADDR: 1,"10.0.0.2"`) + ok},
		{name: "ATZ restores echo", setup: []string{"ATE0\r"}, in: "ATZ\r", want: ok},
		{name: "after ATZ echo", setup: []string{"ATE0\r", "ATZ\r"}, in: "AT\r", want: "AT\r" + ok},
		{name: "V0", setup: []string{"ATE0\r"}, in: "ATV0\r", want: "0\r"},
		{name: "V0 info", setup: []string{"ATE0\r", "ATV0\r"}, in: "AT+GSN\r", want: testIMEI + "\r\n0\r"},
		{name: "S3 read", setup: []string{"ATE0\r"}, in: "ATS3?\r", want: info("013") + ok},
		{name: "CNUM", setup: []string{"ATE0\r"}, in: "AT+CNUM\r", want: info(`+CNUM: "","8613800000000",129`) + ok},
		{name: "dial", setup: []string{"ATE0\r", "AT+CMEE=0\r"}, in: "ATD123;\r", want: info("NO CARRIER") + "\r\nERROR\r\n"},
	}
}

func TestGenericAT(t *testing.T) {
	cases := append(commonCases(),
		atCase{name: "ATI", setup: []string{"ATE0\r"}, in: "ATI\r", want: info("cardbind", "FWSIM-27007", "Revision: FWSIM01.00") + ok},
		atCase{name: "CGMI", setup: []string{"ATE0\r"}, in: "AT+CGMI\r", want: info("cardbind") + ok},
		atCase{name: "CCID", setup: []string{"ATE0\r"}, in: "AT+CCID\r", want: info("+CCID: "+testICCID) + ok},
		atCase{name: "CCID read", setup: []string{"ATE0\r"}, in: "AT+CCID?\r", want: info("+CCID: "+testICCID) + ok},
		atCase{name: "CGSN=1", setup: []string{"ATE0\r"}, in: "AT+CGSN=1\r", want: info(`+CGSN: "356938035643809"`) + ok},
		atCase{name: "CGSN=2", setup: []string{"ATE0\r"}, in: "AT+CGSN=2\r", want: info(`+CGSN: "3569380356438001"`) + ok},
		atCase{name: "default CMEE 0", setup: []string{"ATE0\r"}, in: "AT+CMEE?\r", want: info("+CMEE: 0") + ok},
		atCase{name: "QCCID unknown", setup: []string{"ATE0\r"}, in: "AT+QCCID\r", want: "\r\nERROR\r\n"},
	)
	runATCases(t, "generic", cases)
}

func TestQuectelAT(t *testing.T) {
	cases := append(commonCases(),
		atCase{name: "ATI", setup: []string{"ATE0\r"}, in: "ATI\r", want: info("Quectel", "EC25", "Revision: EC25EFAR06A06M4G") + ok},
		atCase{name: "CGMM", setup: []string{"ATE0\r"}, in: "AT+CGMM\r", want: info("EC25") + ok},
		atCase{name: "CGMR", setup: []string{"ATE0\r"}, in: "AT+CGMR\r", want: info("EC25EFAR06A06M4G") + ok},
		atCase{name: "QCCID", in: "AT+QCCID\r", want: "AT+QCCID\r" + info("+QCCID: "+testICCID) + ok},
		atCase{name: "CGSN=1 rejected", setup: []string{"ATE0\r"}, in: "AT+CGSN=1\r", want: "\r\nERROR\r\n"},
		atCase{name: "default CMEE 1", noSIM: true, setup: []string{"ATE0\r"}, in: "AT+QCCID\r", want: info("+CME ERROR: 10")},
		atCase{name: "QSIMSTAT", setup: []string{"ATE0\r", "AT+QSIMSTAT=1\r"}, in: "AT+QSIMSTAT?\r", want: info("+QSIMSTAT: 1,1") + ok},
		atCase{name: "QSIMDET", setup: []string{"ATE0\r"}, in: "AT+QSIMDET?\r", want: info("+QSIMDET: 1,0") + ok},
		atCase{name: "CCID unknown", setup: []string{"ATE0\r"}, in: "AT+CCID\r", want: "\r\nERROR\r\n"},
	)
	runATCases(t, "quectel", cases)
}

func TestSimcomAT(t *testing.T) {
	cases := append(commonCases(),
		atCase{name: "ATI", setup: []string{"ATE0\r"}, in: "ATI\r", want: info("Manufacturer: SIMCOM INCORPORATED",
			"Model: SIMCOM_SIM7600E-H", "Revision: SIM7600M22_V2.0", "IMEI: "+testIMEI, "+GCAP: +CGSM") + ok},
		atCase{name: "CGMR", setup: []string{"ATE0\r"}, in: "AT+CGMR\r", want: info("+CGMR: LE20B04SIM7600M22") + ok},
		atCase{name: "CICCID", setup: []string{"ATE0\r"}, in: "AT+CICCID\r", want: info("+ICCID: "+testICCID) + ok},
		atCase{name: "CCID bare", setup: []string{"ATE0\r"}, in: "AT+CCID\r", want: info(testICCID) + ok},
		atCase{name: "CFUN=0 SIM off", setup: []string{"ATE0\r", "AT+CMEE=2\r"}, in: "AT+CFUN=0\r",
			want: ok + info("+SIMCARD: NOT AVAILABLE")},
		atCase{name: "after CFUN=0", setup: []string{"ATE0\r", "AT+CMEE=2\r", "AT+CFUN=0\r"}, in: "AT+CICCID\r",
			want: info("+CME ERROR: SIM not inserted")},
		atCase{name: "CFUN=1 SIM back", setup: []string{"ATE0\r", "AT+CFUN=0\r"}, in: "AT+CFUN=1\r",
			want: ok + info("+CPIN: READY") + info("SMS DONE") + info("PB DONE")},
	)
	runATCases(t, "simcom", cases)
}

func TestUbloxAT(t *testing.T) {
	cases := append(commonCases(),
		atCase{name: "ATI", setup: []string{"ATE0\r"}, in: "ATI\r",
			want: info("Manufacturer: u-blox", "Model: SARA-R410M-02B", "Revision: L0.0.00.00.05.08") + ok},
		atCase{name: "CCID", setup: []string{"ATE0\r"}, in: "AT+CCID\r", want: info("+CCID: "+testICCID) + ok},
		atCase{name: "USIMSTAT", setup: []string{"ATE0\r", "AT+USIMSTAT=3\r"}, in: "AT+USIMSTAT?\r", want: info("+USIMSTAT: 3") + ok},
		atCase{name: "USIMSTAT bad", setup: []string{"ATE0\r", "AT+CMEE=1\r"}, in: "AT+USIMSTAT=9\r", want: info("+CME ERROR: 50")},
		atCase{name: "CGSN=1", setup: []string{"ATE0\r"}, in: "AT+CGSN=1\r", want: info(`+CGSN: "356938035643809"`) + ok},
	)
	runATCases(t, "ublox", cases)
}

func TestBootURCs(t *testing.T) {
	tests := []struct {
		personality string
		sim         *SIM
		want        string
	}{
		{"generic", testSIM(), ""},
		{"quectel", testSIM(), info("RDY") + info("+CPIN: READY") + info("+QUSIM: 1") + info("+QIND: SMS DONE") + info("+QIND: PB DONE")},
		{"quectel", nil, info("RDY")},
		{"simcom", testSIM(), info("RDY") + info("+CPIN: READY") + info("SMS DONE") + info("PB DONE")},
		{"simcom", nil, info("RDY") + info("+SIMCARD: NOT AVAILABLE")},
		{"ublox", testSIM(), ""},
	}
	for _, tc := range tests {
		t.Run(tc.personality, func(t *testing.T) {
			h := newHarness(t, Config{Personality: tc.personality, SIM: tc.sim})
			if got := h.settle(); got != tc.want {
				t.Errorf("boot: got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPIN(t *testing.T) {
	sim := testSIM()
	sim.PIN = "1234"
	h := newHarness(t, Config{Personality: "quectel", SIM: sim})
	if got, want := h.settle(), info("RDY")+info("+CPIN: SIM PIN")+info("+QUSIM: 1"); got != want {
		t.Fatalf("boot: got %q, want %q", got, want)
	}
	h.send("ATE0\r")
	steps := []struct{ in, want string }{
		{"AT+CPIN?\r", info("+CPIN: SIM PIN") + ok},
		{"AT+CIMI\r", info("+CME ERROR: 11")},
		{"AT+QCCID\r", info("+QCCID: "+testICCID) + ok},
		{"AT+CREG?\r", info("+CREG: 0,0") + ok},
		{"AT+CPIN=\"0000\"\r", info("+CME ERROR: 16")},
		{"AT+CPIN=\"1234\"\r", ok + info("+CPIN: READY") + info("+QIND: SMS DONE") + info("+QIND: PB DONE")},
		{"AT+CIMI\r", info(testIMSI) + ok},
		{"AT+CREG?\r", info("+CREG: 0,1") + ok},
	}
	for _, s := range steps {
		if got := h.send(s.in); got != s.want {
			t.Errorf("%q: got %q, want %q", s.in, got, s.want)
		}
	}
}

package identity

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var writeCorpus = flag.Bool("write-corpus", false, "rewrite testdata/fuzz seed corpora from fuzzSeeds")

// fuzzSeeds are the seed inputs of each fuzz target, written to
// testdata/fuzz/<FuzzName>/ by go test -run TestWriteSeedCorpus -write-corpus.
var fuzzSeeds = map[string][][]any{
	"FuzzParseIMEI": {
		{"490154203237518"}, {`+CGSN: "352656100367872"`}, {"+GSN: 867698041234561"},
		{"Manufacturer: SIMCOM INCORPORATED\nModel: SIMCOM_SIM7600E-H\nIMEI: 862181041234563"},
		{"000000000000000"}, {`+CGSN: "3526561003678701"`}, {""}, {"IMEI:\t354056091234561,"},
	},
	"FuzzParseICCID": {
		{"+QCCID: 89860436101892671308"}, {"+QCCID: 8901260886258128535F"},
		{"+ICCID: 898600700907A6019125"}, {`+CCID: "8939107800023416395"`}, {"8939107800023416395"},
		{"^ICCID: 98680036904030021872"}, {"#CCID: 8990011916180288209"}, {"!ICCID: 89014103211118510720"},
		{"+CCID: 12345"}, {"+CSQ: 17,99\n+CCID: 8939107800023416395"},
	},
	"FuzzNormalizeICCID": {
		{"89860436101892671308"}, {"8901260886258128535F"}, {"898602F9091830030220"},
		{"98680036904030021872"}, {"984402003576012594F9"}, {"8A860436101892671308"}, {`"89 39107800023416395"`},
		{"89014103211118510FFF"},
	},
	"FuzzParseCRSMICCID": {
		{`+CRSM: 144,0,"980140328441549563F1"`}, {`+CRSM: 144,0,984402003576012594F9`},
		{`+CRSM: 106,134,""`}, {`+CRSM: 106,130`}, {`+CRSM: 148,4`}, {`+CRSM: 145,10,"98231420326409614067"`},
		{`+CRSM: 144,0,"FFFFFFFFFFFFFFFFFFFF"`}, {`+CRSM: 999,0,"98"`},
	},
	"FuzzParseIMSI": {
		{"001010123456789"}, {"+CIMI: 460001234567890"}, {`+CIMI: "214010123456789"`}, {"0010101234567890"}, {"12345"},
	},
	"FuzzParseCPIN": {
		{"+CPIN: READY", 0, ""}, {`+CPIN: "SIM PIN"`, 0, ""}, {"+CPIN: NOT INSERTED", 0, ""},
		{"", 10, "SIM not inserted"}, {"", -1, "SIM not present"}, {"", 14, "SIM busy"}, {"", 515, ""},
		{"", 11, "SIM PIN required"}, {"+CPIN: NOT READY", 13, ""}, {"", -1, "pin puk busy"},
	},
	"FuzzParseRegistration": {
		{"+CREG: 0,1"}, {"+CREG: 1"}, {`+CREG: 1,"1234","001122BB",7`}, {`+CREG: 2,1,"1234","001122BB",7`},
		{`+CEREG: 4,3,"31C5","0083F7CD",7,0,13`}, {`+CEREG: 3,,,,0,13`}, {`+CGREG: 2,5,1A2B,00C0FFEE,2,01`},
		{"+C5GREG: 0,1"}, {"+CREG:"}, {"+CREG: 2,1,\"12\",\"34\",x"},
	},
	"FuzzParseCOPS": {
		{`+COPS: 0,2,"46003",7`}, {`+COPS: 0,2,"310410",7`}, {`+COPS: 0,2,"46000"`}, {"+COPS: 0"},
		{`+COPS: 0,0,"CHN-CT",7`}, {`+COPS: 0,0,"Example, Inc",7`}, {`+COPS: (2,"CHN-CT","CT","46003",7),,(0-4),(0-2)`},
		{"+CEREG: 1\n+COPS: 1,2,26201,9"}, {`+COPS: 0,2,"4600312",7`}, {`+COPS: 0,2,"`},
	},
	"FuzzParseCSQ": {
		{"+CSQ: 17,99"}, {"+CSQ: 99,99"}, {"+CSQ: 31,7"}, {"+CSQ: 32,0"}, {"+CSQ: -1,0"}, {"+CSQ:17"},
	},
	"FuzzCleanInfo": {
		{"Quectel"}, {" WAVECOM MODEM"}, {`+CGMI: "u-blox"`}, {"\nRevision: EC25EFAR06A06M4G"},
		{"GMR: \x01abc\x7f"}, {"\"\""},
	},
	"FuzzParseQGPSLOC": {
		{"+QGPSLOC: 061951.000,31.84536,117.19879,0.7,62.2,2,0.00,0.0,0.0,110513,09"},
		{"+QGPSLOC: 061951.000,3150.7223N,11711.9293E,0.7,62.2,2,0.00,0.0,0.0,110513,09"},
		{"+QGPSLOC: 152325.0,3352.128000S,07040.158000W,2.5,520.0,3,0.00,0.0,0.0,010226,05"},
		{"+QGPSLOC: 152325.0,-33.86880,-70.66930,1.0,520.0,3,0.00,0.0,0.0,010226,05"},
		{"AT+QGPSLOC=2\n+CEREG: 1,\"1A2C\",\"01A2B3C5\",7\n+QGPSLOC: 072809.0,31.23100,121.47400,1.1,12.0,3,0.00,0.0,0.0,271126,08"},
		{"+QGPSLOC: 000000.0,0.00000,0.00000,99.9,0.0,2,0.00,0.0,0.0,060180,00"},
		{"+QGPSLOC: 000000.0,,,,,0,,,,,"}, {"+QGPSLOC: 061951.000,3160.7223N,11711.9293E,0.7"},
		{"+QGPSLOC: 061951.000,1e1,117.1,0.7"}, {"+QGPSLOC:"},
	},
	"FuzzParseCGPSINFO": {
		{"+CGPSINFO: 3113.343286,N,12121.234064,E,250311,072809.3,44.1,0.0,0"},
		{"+CGPSINFO: 3352.128000,S,07040.158000,W,271126,072809.0,12.0,0.0,0.0"},
		{"+CGPSINFO: ,,,,,,,,"}, {"AT+CGPSINFO\n+CPIN: READY\n+CGPSINFO: ,,,,,,,,"},
		{"+CGPSINFO: 3113.343286,n,12121.234064,e,250311,072809.3,44.1,0.0,0"},
		{"+CGPSINFO: 3113.343286,E,12121.234064,N,250311,072809.3,44.1,0.0,0"},
		{"+CGPSINFO: 3113.343286,N"}, {"+CGPSINFO: 9000.000000,N,18000.000000,W,,,,,"},
	},
	"FuzzClassifyURC": {
		{"+CPIN: READY"}, {"+QSIMSTAT: 1,0"}, {"+SIMCARD: NOT AVAILABLE"}, {"+UUSIMSTAT: 0"}, {"#QSS: 0"},
		{"^SIMST: 255"}, {"RDY"}, {"+CREG: 0"}, {"+QIND: PB DONE"}, {"RING"}, {" "},
	},
}

func TestWriteSeedCorpus(t *testing.T) {
	if !*writeCorpus {
		t.Skip("use -write-corpus to rewrite the seed corpora")
	}
	for name, inputs := range fuzzSeeds {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, args := range inputs {
			var b strings.Builder
			b.WriteString("go test fuzz v1\n")
			for _, a := range args {
				switch v := a.(type) {
				case string:
					fmt.Fprintf(&b, "string(%q)\n", v)
				case int:
					fmt.Fprintf(&b, "int(%d)\n", v)
				default:
					t.Fatalf("%s: unsupported seed type %T", name, a)
				}
			}
			path := filepath.Join(dir, fmt.Sprintf("seed%02d", i))
			if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

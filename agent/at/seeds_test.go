package at

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
	"FuzzClassify": {
		{"+CPIN: READY", "AT+CPIN?"},
		{"+CPIN: READY", "AT+CSQ"},
		{"+CREG: 2,1,\"1234\",\"001122BB\",7", "AT+CREG?"},
		{"+CREG: 1", "AT+CSQ"},
		{"OK", "AT"},
		{"+CME ERROR: SIM not inserted", "AT+CIMI"},
		{"+CMS ERROR: 310", "AT+CMGL"},
		{"COMMAND NOT SUPPORT", "AT+CEREG?"},
		{"AT+CGSN", "AT+CGSN"},
		{"at+cgsn", "AT+CGSN"},
		{"490154203237518", "AT+CGSN"},
		{"\x00\xff\xfe", "AT"},
		{"RDY", "ATI"},
		{"+QIND: SMS DONE", "AT+QCCID"},
		{"  ", "AT+COPS=3,2;+COPS?"},
		{"+COPS: 0,2,\"21401\",7", "AT+COPS=3,2;+COPS?"},
		{"^ICCID: 98680036904030021872", "AT^ICCID?"},
		{"CONNECT 115200", "ATD*99#"},
	},
	"FuzzEngine": {
		{[]byte("\r\n+CSQ: 17,99\r\n\r\nOK\r\n")},
		{[]byte("AT+CSQ\r\r\n+CSQ: 17,99\r\r\n\r\r\nOK\r\r\n")},
		{[]byte("\r\n+CREG: 1\r\n\r\n+CSQ: 17,99\r\n")},
		{[]byte("\r\n+CME ERROR: 10\r\n")},
		{[]byte("\r\n+CME ERROR: SIM busy\r\n")},
		{[]byte("\x00\xff\r\n+CSQ: 1,2\r\n")},
		{[]byte("\r\nRDY\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n")},
		{[]byte("\r\nERROR\r\n")},
		{[]byte("\n\n\r\r")},
		{[]byte("+CSQ: 17,99")},
	},
}

func TestWriteSeedCorpus(t *testing.T) {
	if !*writeCorpus {
		t.Skip("use -write-corpus to rewrite the seed corpora")
	}
	writeSeeds(t, fuzzSeeds)
}

// writeSeeds writes each seed in the go test fuzz v1 format.
func writeSeeds(t *testing.T, seeds map[string][][]any) {
	for name, inputs := range seeds {
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
				case []byte:
					fmt.Fprintf(&b, "[]byte(%q)\n", v)
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

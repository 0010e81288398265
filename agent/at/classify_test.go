package at

import (
	"slices"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	cpin := &inflight{line: "AT+CPIN?", ids: commandIDs("AT+CPIN?")}
	cgsn := &inflight{line: "AT+CGSN", ids: commandIDs("AT+CGSN")}
	handler := func(l string) bool { return strings.HasPrefix(l, "+KSIMDET:") }
	tests := []struct {
		line string
		cur  *inflight
		want kind
	}{
		{"", cgsn, kindEmpty},
		{"   ", nil, kindEmpty},
		{"\x00\xff", cgsn, kindGarbage},
		{"abc\x1b[0m", nil, kindGarbage},
		{"\xc3\x28", cgsn, kindGarbage}, // invalid UTF-8
		{"AT+CGSN", cgsn, kindEcho},
		{"at+cgsn", cgsn, kindEcho},
		{"AT+CGSN", nil, kindStray},
		{"OK", cgsn, kindFinal},
		{"OK", nil, kindStray},
		{"+CME ERROR: 10", cgsn, kindFinal},
		{"490154203237518", cgsn, kindInfo},
		{"490154203237518", nil, kindStray},
		{"+CPIN: READY", cpin, kindInfo},
		{"+CPIN: READY", cgsn, kindURC},
		{"+CPIN: READY", nil, kindURC},
		{"+CREG: 1", cpin, kindURC},
		{"RDY", cgsn, kindURC},
		{"+QIND: SMS DONE", cgsn, kindURC},
		{"PB DONE", nil, kindURC},
		{"+KSIMDET: 1", cgsn, kindURC}, // registered by a handler
		{"+KSIMDET: 1", nil, kindURC},
		{"+WHATEVER: 1", cgsn, kindInfo},
	}
	for _, tt := range tests {
		if got := classify(tt.line, tt.cur, handler); got != tt.want {
			cmd := "idle"
			if tt.cur != nil {
				cmd = tt.cur.line
			}
			t.Errorf("classify(%q) during %s = %v, want %v", tt.line, cmd, got, tt.want)
		}
	}
}

func TestCommandIDs(t *testing.T) {
	tests := []struct {
		line string
		want []string
	}{
		{"AT+CGSN", []string{"+CGSN"}},
		{"AT+CPIN?", []string{"+CPIN"}},
		{"at+crsm=176,12258,0,0,10", []string{"+CRSM"}},
		{"AT^ICCID?", []string{"^ICCID"}},
		{"AT#CCID", []string{"#CCID"}},
		{"AT!ICCID?", []string{"!ICCID"}},
		{"AT+COPS=3,2;+COPS?", []string{"+COPS", "+COPS"}},
		{"ATI", nil},
		{"ATE0", nil},
		{"AT", nil},
		{"AT+", nil},
	}
	for _, tt := range tests {
		if got := commandIDs(tt.line); !slices.Equal(got, tt.want) {
			t.Errorf("commandIDs(%q) = %q, want %q", tt.line, got, tt.want)
		}
	}
}

func TestSplitter(t *testing.T) {
	var sp splitter
	var got []string
	emit := func(l string) { got = append(got, l) }
	for _, chunk := range []string{"AT+CGSN\r\r", "\n4901542", "03237518\r\n\r\nOK\r", "\n", "\nRDY\n"} {
		sp.feed([]byte(chunk), emit)
	}
	want := []string{"AT+CGSN", "490154203237518", "OK", "RDY"}
	if !slices.Equal(got, want) {
		t.Errorf("lines = %q, want %q", got, want)
	}
	got = nil
	sp.feed([]byte(strings.Repeat("x", maxLine+10)+"\r\n"), emit)
	if len(got) != 2 || len(got[0]) != maxLine || len(got[1]) != 10 {
		t.Errorf("long line split into %d pieces", len(got))
	}
}

func TestCMETable(t *testing.T) {
	for code, text := range cmeTexts {
		if c, ok := CMECode(strings.ToUpper(text)); !ok || c != code {
			t.Errorf("CMECode(%q) = %d, %v; want %d", text, c, ok, code)
		}
		if CMEText(code) != text {
			t.Errorf("CMEText(%d) = %q", code, CMEText(code))
		}
	}
	if _, ok := CMECode("no such error"); ok {
		t.Error("CMECode of an unknown text is ok")
	}
}

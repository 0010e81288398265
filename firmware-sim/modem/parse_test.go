package modem

import (
	"bytes"
	"context"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestParseCommandLine(t *testing.T) {
	tests := []struct {
		body    string
		want    []command
		wantErr bool
	}{
		{"", nil, false},
		{"+CGSN", []command{{"+CGSN", formExec, ""}}, false},
		{"+cpin?", []command{{"+CPIN", formRead, ""}}, false},
		{"+CREG=?", []command{{"+CREG", formTest, ""}}, false},
		{"+CREG = ?", []command{{"+CREG", formTest, ""}}, false},
		{"+CMEE=2", []command{{"+CMEE", formSet, "2"}}, false},
		{`+cpin="abCD"`, []command{{"+CPIN", formSet, `"abCD"`}}, false},
		{"+COPS=3,2;+COPS?", []command{{"+COPS", formSet, "3,2"}, {"+COPS", formRead, ""}}, false},
		{`+X="a;b";+Y`, []command{{"+X", formSet, `"a;b"`}, {"+Y", formExec, ""}}, false},
		{"E0V1", []command{{"E", formExec, "0"}, {"V", formExec, "1"}}, false},
		{"ZE0", []command{{"Z", formExec, ""}, {"E", formExec, "0"}}, false},
		{"&FE0", []command{{"&F", formExec, ""}, {"E", formExec, "0"}}, false},
		{"S3?", []command{{"S3", formRead, ""}}, false},
		{"S7=60E0", []command{{"S7", formSet, "60"}, {"E", formExec, "0"}}, false},
		{"^ICCID?", []command{{"^ICCID", formRead, ""}}, false},
		{"D*99#", []command{{"D", formExec, "*99#"}}, false},
		{"+CMEE=2;E0", []command{{"+CMEE", formSet, "2"}, {"E", formExec, "0"}}, false},
		{"+", nil, true},
		{"+CGSN!", nil, true},
		{`+X="open`, nil, true},
		{"S", nil, true},
		{"S3", nil, true},
		{"&", nil, true},
		{"~", nil, true},
	}
	for _, tc := range tests {
		got, err := parseCommandLine(tc.body)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseCommandLine(%q) error = %v, wantErr %v", tc.body, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseCommandLine(%q) = %+v, want %+v", tc.body, got, tc.want)
		}
	}
}

func TestSplitArgs(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", []string{""}},
		{"1", []string{"1"}},
		{`176, 12258 ,0,0,10`, []string{"176", "12258", "0", "0", "10"}},
		{`"a,b",2`, []string{"a,b", "2"}},
	}
	for _, tc := range tests {
		if got := splitArgs(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestEF(t *testing.T) {
	tests := []struct{ fn, in, want string }{
		{"iccid", "8910042348144559361", "980140328441549563F1"},
		{"iccid", "89860318640220133897", "98683081462002318379"},
		{"imsi", "001010123456789", "080910101032547698"},
	}
	for _, tc := range tests {
		got := efICCID(tc.in)
		if tc.fn == "imsi" {
			got = efIMSI(tc.in)
		}
		if got != tc.want {
			t.Errorf("ef %s(%s) = %s, want %s", tc.fn, tc.in, got, tc.want)
		}
	}
	if !LuhnValid(testIMEI) || !LuhnValid("490154203237518") || LuhnValid("490154203237519") {
		t.Error("LuhnValid is wrong")
	}
}

// render writes commands back as a command line body.
func render(cmds []command) string {
	var parts []string
	for _, c := range cmds {
		switch {
		case c.Name == "D":
			parts = append(parts, "D"+c.Arg)
		case strings.HasPrefix(c.Name, "S") && c.Form == formRead:
			parts = append(parts, c.Name+"?")
		case strings.HasPrefix(c.Name, "S") && c.Form == formSet:
			parts = append(parts, c.Name+"="+c.Arg)
		case c.Form == formRead:
			parts = append(parts, c.Name+"?")
		case c.Form == formTest:
			parts = append(parts, c.Name+"=?")
		case c.Form == formSet:
			parts = append(parts, c.Name+"="+c.Arg)
		default:
			parts = append(parts, c.Name+c.Arg)
		}
	}
	return strings.Join(parts, ";")
}

// FuzzParseCommandLine checks that the parser never panics, that names are
// upper case, and that what it parses renders back to the same commands.
func FuzzParseCommandLine(f *testing.F) {
	for _, s := range []string{"+CGSN", "E0V1;+CMEE=2", `+CPIN="1234"`, "+COPS=3,2;+COPS?", "S3=13", "D*99#"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		cmds, err := parseCommandLine(body)
		if err != nil {
			return
		}
		for _, c := range cmds {
			if c.Name == "" || c.Name != strings.ToUpper(c.Name) {
				t.Fatalf("%q: bad name %q", body, c.Name)
			}
		}
		again, err := parseCommandLine(render(cmds))
		if err != nil {
			t.Fatalf("%q: rendered %q does not parse: %v", body, render(cmds), err)
		}
		if len(again) != len(cmds) || (len(cmds) > 0 && !reflect.DeepEqual(again, cmds)) {
			t.Fatalf("%q: round trip %+v != %+v", body, again, cmds)
		}
	})
}

// FuzzInterpreter feeds arbitrary bytes to a modem: it must never panic and
// must keep answering afterwards.
func FuzzInterpreter(f *testing.F) {
	for _, s := range []string{"AT+CGSN\r", "ATE0\rAT+QCCID;+CIMI\r\n", "AT+CFUN=0\rAT+CPIN?\r", "a\bT+CMEE=2\r", "ATV0S3=10\nAT\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := New(Config{Personality: "quectel", IMEI: testIMEI, SIM: testSIM()})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		ctx, cancel := context.WithCancelCause(t.Context())
		defer cancel(nil)
		s := &session{m: m, rw: writeOnly{&out}, ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1)}
		s.feed(data)
		m.SetFaults(Faults{})
		m.mu.Lock()
		m.st.powerOn(m.pers)
		m.mu.Unlock()
		out.Reset()
		s.line, s.overflow = nil, false
		s.feed([]byte("\rATE0\r"))
		if got := out.String(); !strings.HasSuffix(got, "\r\nOK\r\n") {
			t.Fatalf("after %q the modem answered %q", data, got)
		}
	})
}

// writeOnly is a stream whose input side is never read.
type writeOnly struct{ io.Writer }

func (writeOnly) Read([]byte) (int, error) { return 0, io.EOF }

package identity

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestParseCOPS(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  PLMN
		err   error // nil: want a PLMN
	}{
		{"Quectel EC25 numeric", []string{`+COPS: 0,2,"46003",7`}, PLMN{"460", "03"}, nil},
		{"Quectel BG96 NB-IoT", []string{`+COPS: 0,2,"46011",9`}, PLMN{"460", "11"}, nil},
		{"SIMCom SIM7600 (engine strips the doubled CR)", []string{`+COPS: 0,2,"46001",7`}, PLMN{"460", "01"}, nil},
		{"SIMCom SIM800 2G, no AcT", []string{`+COPS: 0,2,"46000"`}, PLMN{"460", "00"}, nil},
		{"u-blox SARA-R410M 3-digit MNC", []string{`+COPS: 0,2,"310410",7`}, PLMN{"310", "410"}, nil},
		{"Telit LE910 roaming", []string{`+COPS: 0,2,"22201",7`}, PLMN{"222", "01"}, nil},
		{"manual mode", []string{`+COPS: 1,2,"26201",7`}, PLMN{"262", "01"}, nil},
		{"unquoted operator, spaces", []string{`+COPS: 0, 2, 23415, 7`}, PLMN{"234", "15"}, nil},
		{"URC before the answer", []string{"+CEREG: 1", `+COPS: 0,2,"21401",7`}, PLMN{"214", "01"}, nil},
		{"not registered", []string{"+COPS: 0"}, PLMN{}, ErrNotFound},
		{"deregistered", []string{"+COPS: 2"}, PLMN{}, ErrNotFound},
		{"empty operator", []string{`+COPS: 0,2,""`}, PLMN{}, ErrNotFound},
		{"long alphanumeric (format not set)", []string{`+COPS: 0,0,"CHN-CT",7`}, PLMN{}, ErrOperatorFormat},
		{"short alphanumeric", []string{`+COPS: 0,1,"CT",7`}, PLMN{}, ErrOperatorFormat},
		{"Telit long name", []string{`+COPS: 0,0,"I TIM",7`}, PLMN{}, ErrOperatorFormat},
		{"comma inside a quoted name", []string{`+COPS: 0,0,"Example, Inc",7`}, PLMN{}, ErrOperatorFormat},
		{"test form", []string{`+COPS: (2,"CHN-CT","CT","46003",7),,(0-4),(0-2)`}, PLMN{}, ErrNotFound},
		{"no COPS line", []string{"OK"}, PLMN{}, ErrNotFound},
		{"4 digits", []string{`+COPS: 0,2,"4600",7`}, PLMN{}, errAny},
		{"7 digits", []string{`+COPS: 0,2,"4600312",7`}, PLMN{}, errAny},
		{"letters in numeric format", []string{`+COPS: 0,2,"CHN-CT",7`}, PLMN{}, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCOPS(tt.lines)
			switch {
			case tt.err == nil && err != nil:
				t.Fatalf("err = %v", err)
			case tt.err == errAny && err == nil, tt.err != nil && tt.err != errAny && !errors.Is(err, tt.err):
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// errAny in a table means "some error".
var errAny = errors.New("any error")

func TestParsePLMN(t *testing.T) {
	for in, want := range map[string]PLMN{"46003": {"460", "03"}, "310410": {"310", "410"}, "00101": {"001", "01"}} {
		got, err := ParsePLMN(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("ParsePLMN(%q) = %+v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "4600", "4600312", "46O03", " 46003"} {
		if _, err := ParsePLMN(in); err == nil {
			t.Errorf("ParsePLMN(%q) succeeded", in)
		}
	}
}

// count returns how many times cmd was sent.
func count(sent []string, cmd string) int {
	n := 0
	for _, c := range sent {
		if c == cmd {
			n++
		}
	}
	return n
}

func registeredModem(cops map[string][]string) map[string][]string {
	m := map[string][]string{
		"AT+CGMI":   r(ok("Quectel")),
		"AT+CGMM":   r(ok("EC25")),
		"AT+CGMR":   r(ok("EC25EFAR06A06M4G")),
		"AT+CGSN":   r(ok("867698041234561")),
		"AT+CPIN?":  r(ok("+CPIN: READY")),
		"AT+QCCID":  r(ok("+QCCID: 8901260886258128535F")),
		"AT+CIMI":   r(ok("460031234567890")),
		"AT+CEREG?": r(ok(`+CEREG: 2,1,"1A2B","01A2B3C4",7`)),
		"AT+CSQ":    r(ok("+CSQ: 24,99")),
	}
	for k, v := range cops {
		m[k] = v
	}
	return m
}

func TestReaderOperator(t *testing.T) {
	numeric := ok(`+COPS: 0,2,"46003",7`)
	alpha := ok(`+COPS: 0,0,"CHN-CT",7`)
	tests := []struct {
		name string
		tr   transcript
		// want is the PLMN of each of len(want) reads ("" none).
		want []string
		// setSent is how often AT+COPS=3,2 went out in all.
		setSent int
	}{
		{"format accepted once, kept", transcript{replies: registeredModem(map[string][]string{
			COPSNumeric: r(ok()), "AT+COPS?": r(numeric)})}, []string{"46003", "46003"}, 1},
		{"format refused: no PLMN, not asked again", transcript{replies: registeredModem(map[string][]string{
			COPSNumeric: r("\r\nERROR\r\n"), "AT+COPS?": r(alpha)})}, []string{"", ""}, 1},
		{"format refused with CME 4, echo on", transcript{echo: true, replies: registeredModem(map[string][]string{
			COPSNumeric: r("\r\n+CME ERROR: 4\r\n"), "AT+COPS?": r(alpha)})}, []string{"", ""}, 1},
		{"SIM busy: asked again next read", transcript{replies: registeredModem(map[string][]string{
			COPSNumeric: {"\r\n+CME ERROR: 14\r\n", ok()}, "AT+COPS?": {alpha, numeric}})}, []string{"", "46003"}, 2},
		{"modem rebooted and forgot the format", transcript{replies: registeredModem(map[string][]string{
			COPSNumeric: r(ok()), "AT+COPS?": {numeric, alpha, numeric}})}, []string{"46003", "46003"}, 2},
		{"URC inside the answer, echo on", transcript{echo: true, replies: registeredModem(map[string][]string{
			COPSNumeric: r(ok()), "AT+COPS?": r("\r\n+QIND: PB DONE\r\n\r\n+COPS: 0,2,\"310410\",7\r\n\r\nOK\r\n")})},
			[]string{"310410"}, 1},
		{"registration URC inside the answer, no AcT", transcript{replies: registeredModem(map[string][]string{
			COPSNumeric: r(ok()), "AT+COPS?": r("\r\n+CEREG: 1,\"1A2B\",\"01A2B3C4\",7\r\n\r\n+COPS: 0,2,\"46003\"\r\n\r\nOK\r\n")})},
			[]string{"46003"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, port := engineFor(t, tt.tr)
			rd := NewReader(e, nil)
			for i, want := range tt.want {
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				id, err := rd.Read(ctx)
				cancel()
				if err != nil {
					t.Fatalf("read %d: %v", i, err)
				}
				got := ""
				if id.PLMN != nil {
					got = id.PLMN.String()
				}
				if got != want {
					t.Errorf("read %d: PLMN %q, want %q (problems %q)", i, got, want, id.Problems)
				}
				if slices.ContainsFunc(id.Problems, func(p string) bool { return p[:min(len(p), 9)] == "operator:" }) {
					t.Errorf("read %d: problems %q", i, id.Problems)
				}
			}
			if n := count(port.commands(), COPSNumeric); n != tt.setSent {
				t.Errorf("%s sent %d times, want %d (%q)", COPSNumeric, n, tt.setSent, port.commands())
			}
			if slices.ContainsFunc(port.commands(), func(c string) bool {
				return c != COPSNumeric && c != "AT+COPS?" && len(c) > 7 && c[:8] == "AT+COPS="
			}) {
				t.Errorf("a registration command was sent: %q", port.commands())
			}
		})
	}
}

func TestReaderOperatorNotRegistered(t *testing.T) {
	tr := transcript{replies: registeredModem(map[string][]string{
		"AT+CEREG?": r(ok("+CEREG: 2,2")), COPSNumeric: r(ok()), "AT+COPS?": r(ok("+COPS: 0"))})}
	e, port := engineFor(t, tr)
	id, err := NewReader(e, nil).Read(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if id.PLMN != nil || slices.Contains(port.commands(), "AT+COPS?") {
		t.Errorf("PLMN %+v, sent %q", id.PLMN, port.commands())
	}
}

func TestReaderResetOperatorFormat(t *testing.T) {
	tr := transcript{replies: registeredModem(map[string][]string{
		COPSNumeric: {"\r\nERROR\r\n", ok()}, "AT+COPS?": {ok(`+COPS: 0,0,"CHN-CT",7`), ok(`+COPS: 0,2,"46003",7`)}})}
	e, _ := engineFor(t, tr)
	rd := NewReader(e, nil)
	if id, err := rd.Read(t.Context()); err != nil || id.PLMN != nil {
		t.Fatalf("first read: %+v, %v", id.PLMN, err)
	}
	rd.ResetOperatorFormat() // the port was reopened
	if id, err := rd.Read(t.Context()); err != nil || id.PLMN == nil || *id.PLMN != (PLMN{"460", "03"}) {
		t.Fatalf("after reset: %+v, %v", id.PLMN, err)
	}
}

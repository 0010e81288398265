package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/term"

	"github.com/cardbind/cardbind/protocol"
)

func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	badCfg := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(badCfg, []byte("[report]\nheartbeat = \"0s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	typoCfg := filepath.Join(dir, "typo.toml")
	if err := os.WriteFile(typoCfg, []byte("[modem]\nprot = \"/dev/ttyUSB3\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		output string // expected in stdout+stderr
	}{
		{name: "no command", args: nil, code: 2, output: "Commands:"},
		{name: "help", args: []string{"--help"}, code: 0, output: "identify"},
		{name: "unknown command", args: []string{"fly"}, code: 2, output: `unknown command "fly"`},
		{name: "identify help", args: []string{"identify", "--help"}, code: 0, output: "prints them as JSON"},
		{name: "enroll help", args: []string{"enroll", "--help"}, code: 0, output: "mode 0600"},
		{name: "run help", args: []string{"run", "--help"}, code: 0, output: "SIGHUP reloads"},
		{name: "bad flag", args: []string{"run", "--heartbeat", "often"}, code: 2, output: "invalid value"},
		{name: "stray argument", args: []string{"identify", "now"}, code: 2, output: `unexpected argument "now"`},
		{name: "identify without a modem", args: []string{"identify", "--port", filepath.Join(dir, "ttyNone"), "--timeout", "300ms"},
			code: 1, output: "cannot open the modem port within 300ms"},
		{name: "identify through an absent ModemManager", args: []string{"identify", "--source", "modemmanager",
			"--dbus-address", "unix:path=" + filepath.Join(dir, "no-bus"), "--timeout", "300ms"}, code: 1, output: "no answer from ModemManager within 300ms"},
		{name: "identify from an unknown source", args: []string{"identify", "--source", "qmi"}, code: 1, output: "modem.source"},
		{name: "enroll needs a token", args: []string{"enroll", "--verifier", "http://127.0.0.1:1"}, code: 2, output: "--verifier and --token are required"},
		{name: "enroll needs an http URL", args: []string{"enroll", "--verifier", "tcp://x:1", "--token", "t", "--state-dir", dir},
			code: 1, output: "want http(s)://"},
		{name: "run before enrol", args: []string{"run", "--state-dir", filepath.Join(dir, "state")}, code: 1, output: "not enrolled"},
		{name: "run with an invalid key", args: []string{"run", "--config", badCfg}, code: 1, output: "report.heartbeat"},
		{name: "run with an unknown key", args: []string{"run", "--config", typoCfg}, code: 1, output: "unknown key modem.prot"},
		{name: "flag fixes the file", args: []string{"run", "--config", badCfg, "--heartbeat", "1m", "--state-dir", filepath.Join(dir, "s2")},
			code: 1, output: "not enrolled"},
		{name: "run with a bad log level", args: []string{"run", "--log-level", "loud"}, code: 1, output: "log.level"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			code := run(context.Background(), tc.args, &out, &out)
			if code != tc.code || !strings.Contains(out.String(), tc.output) {
				t.Errorf("exit %d, want %d; output does not contain %q:\n%s", code, tc.code, tc.output, out.String())
			}
		})
	}
}

// A port that opens but where nothing answers AT (a real pseudo-terminal
// nobody serves) fails within the timeout, saying so.
func TestIdentifyMutePort(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	if _, err := term.MakeRaw(int(tty.Fd())); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	start := time.Now()
	code := run(context.Background(), []string{"identify", "--port", tty.Name(), "--timeout", "1500ms"}, &out, &out)
	took := time.Since(start)
	if code != 1 || !strings.Contains(out.String(), "nothing answers AT") {
		t.Errorf("exit %d, output:\n%s", code, out.String())
	}
	if took > 3*time.Second {
		t.Errorf("identify took %v with a 1.5s timeout", took)
	}
}

func TestPostEnroll(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	good := &protocol.EnrollResponse{Version: 1, DeviceID: "gw-1", Tenant: "acme", BrokerURL: "tcp://127.0.0.1:1883",
		Username: "gw-1", Password: "secret", ReportTopic: protocol.ReportTopic("gw-1"),
		CommandTopic: protocol.CommandTopic("gw-1"), CommandKey: pub}
	goodJSON, err := protocol.EncodeEnrollResponse(good)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		status  int
		body    string
		wantErr string
	}{
		{name: "created", status: 201, body: string(goodJSON)},
		{name: "token refused", status: 401, body: `{"error":"enrolment token unknown, used or expired"}`,
			wantErr: "refused the enrolment (401 Unauthorized): enrolment token unknown"},
		{name: "proxy error page", status: 502, body: "<html>bad gateway</html>", wantErr: "502 Bad Gateway): <html>"},
		{name: "invalid answer", status: 201, body: `{"v":1,"device_id":"gw-1"}`, wantErr: "the verifier's answer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != protocol.EnrollPath {
					t.Errorf("%s %s", r.Method, r.URL.Path)
				}
				body, _ := io.ReadAll(r.Body)
				if _, err := protocol.DecodeEnrollRequest(body); err != nil {
					t.Errorf("request does not decode: %v", err)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			req := &protocol.EnrollRequest{Version: 1, Token: "cbe_x", PublicKey: pub, IMEI: "356938035643809"}
			resp, err := postEnroll(context.Background(), srv.URL+protocol.EnrollPath, req)
			if tc.wantErr == "" {
				if err != nil || resp.DeviceID != "gw-1" {
					t.Fatalf("postEnroll = %+v, %v", resp, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("postEnroll error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

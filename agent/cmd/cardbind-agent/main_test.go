package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/term"
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

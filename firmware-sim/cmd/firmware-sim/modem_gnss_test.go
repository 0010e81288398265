package main

import (
	"bytes"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

func TestModemBadGNSS(t *testing.T) {
	for _, args := range [][]string{
		{"--gnss", "31.2"}, {"--gnss", "95,0"}, {"--gnss", "x,y"},
		{"--personality", "ublox", "--gnss", "31.2,121.4"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), append([]string{"modem", "--imei", "356938035643809", "--link", filepath.Join(t.TempDir(), "tty")}, args...),
			&stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), "GNSS") && !strings.Contains(err.Error(), "gnss") {
			t.Errorf("%v: %v, want an error about GNSS", args, err)
		}
	}
}

// --gnss on a real pseudo-terminal, and POST /gnss losing the fix.
func TestModemGNSSOnPty(t *testing.T) {
	c, ctl := startModemCmd(t, "--gnss", "31.231,121.474")
	c.send("ATE0")
	c.readUntil("OK\r\n")
	c.send("AT+QGPS=1")
	c.readUntil("OK\r\n")
	c.send("AT+QGPSLOC=2")
	if got := c.readUntil("OK\r\n"); !strings.Contains(got, ",31.23100,121.47400,1.1,12.0,3,") {
		t.Errorf("AT+QGPSLOC=2 = %q", got)
	}
	resp, err := http.Post("http://"+ctl+"/gnss", "application/json", strings.NewReader(`{"fix":false}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /gnss: %s", resp.Status)
	}
	c.send("AT+QGPSLOC=2")
	c.readUntil("+CME ERROR: 516\r\n")
}

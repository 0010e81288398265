package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.bug.st/serial"
)

func TestModemBadCell(t *testing.T) {
	for _, cell := range []string{"460-03-6699", "46-03-1-1", "460-03-65536-1"} {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), []string{"modem", "--imei", "356938035643809", "--link", filepath.Join(t.TempDir(), "tty"),
			"--cell", cell}, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), "--cell") {
			t.Errorf("--cell %s: %v, want an error naming --cell", cell, err)
		}
	}
}

// freeAddr returns a loopback TCP address nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// ptyClient talks AT on the modem's pseudo-terminal, as the agent does.
type ptyClient struct {
	t    *testing.T
	port serial.Port
	buf  string
}

func (c *ptyClient) send(cmd string) {
	c.t.Helper()
	if _, err := c.port.Write([]byte(cmd + "\r")); err != nil {
		c.t.Fatal(err)
	}
}

func (c *ptyClient) readUntil(want string) string {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	b := make([]byte, 256)
	for {
		if i := strings.Index(c.buf, want); i >= 0 {
			out := c.buf[:i+len(want)]
			c.buf = c.buf[i+len(want):]
			return out
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %q; have %q", want, c.buf)
		}
		n, _ := c.port.Read(b)
		c.buf += string(b[:n])
	}
}

// startModemCmd runs "firmware-sim modem" (quectel, with a control API)
// with extra flags until the test ends, and opens its pseudo-terminal as
// the agent would. It returns the AT client and the control address.
func startModemCmd(t *testing.T, extra ...string) (*ptyClient, string) {
	t.Helper()
	link := filepath.Join(t.TempDir(), "ttyQ")
	ctl := freeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	var stderr bytes.Buffer
	args := append([]string{"modem", "--personality", "quectel", "--imei", "356938035643809",
		"--link", link, "--control", ctl, "--log-level", "warn"}, extra...)
	go func() { done <- run(ctx, args, &bytes.Buffer{}, &stderr) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("modem: %v", err)
		}
	})
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Readlink(link); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no link; stderr: %s", stderr.String())
		}
	}
	p, err := serial.Open(link, &serial.Mode{BaudRate: 115200})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.SetReadTimeout(20 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	return &ptyClient{t: t, port: p}, ctl
}

// The --cell flag on a real pseudo-terminal, and POST /cell moving the
// modem: the client in mode 2 gets the URC with the new location.
func TestModemCellOnPty(t *testing.T) {
	c, ctl := startModemCmd(t, "--iccid", "89860318640220133897", "--imsi", "460031234567890", "--cell", "460-11-6700-27446213")
	c.send("ATE0")
	c.readUntil("OK\r\n")
	c.send("AT+CEREG=2;+COPS=3,2")
	c.readUntil("OK\r\n")
	// Registration is asynchronous: ask until registered.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c.send("AT+CEREG?")
		if got := c.readUntil("OK\r\n"); strings.Contains(got, `+CEREG: 2,1,"1A2C","01A2CBC5",7`) {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("AT+CEREG? = %q", got)
		}
	}
	c.send("AT+COPS?")
	if got := c.readUntil("OK\r\n"); !strings.Contains(got, `+COPS: 0,2,"46011",7`) {
		t.Errorf("AT+COPS? = %q", got)
	}

	body := `{"mcc":"460","mnc":"11","tac":6701,"eci":27446214}`
	resp, err := http.Post("http://"+ctl+"/cell", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /cell: %s", resp.Status)
	}
	c.readUntil("+CEREG: 1,\"1A2D\",\"01A2CBC6\",7\r\n")
}

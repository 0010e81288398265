package ptyhost

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.bug.st/serial"

	"github.com/cardbind/cardbind/firmware-sim/modem"
)

const (
	testIMEI  = "356938035643809"
	testICCID = "89860318640220133897"
	testIMSI  = "460031234567890"
)

// client is a serial program on the pty, as the agent would be.
type client struct {
	t    *testing.T
	port serial.Port
	buf  string
}

func openClient(t *testing.T, path string) *client {
	t.Helper()
	// No InitialStatusBits: ptys reject the modem-bit ioctls.
	p, err := serial.Open(path, &serial.Mode{BaudRate: 115200})
	if err != nil {
		t.Fatalf("serial.Open(%s): %v", path, err)
	}
	if err := p.SetReadTimeout(20 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, port: p}
	t.Cleanup(func() { p.Close() })
	return c
}

// readUntil reads until the input contains want and returns everything up
// to and including it.
func (c *client) readUntil(want string, timeout time.Duration) string {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
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
		n, err := c.port.Read(b)
		c.buf += string(b[:n])
		if err != nil {
			c.t.Fatalf("read: %v (have %q)", err, c.buf)
		}
	}
}

func (c *client) write(s string) {
	c.t.Helper()
	if _, err := c.port.Write([]byte(s)); err != nil {
		c.t.Fatalf("write %q: %v", s, err)
	}
}

// waitLink waits until link exists and points somewhere other than old.
func waitLink(t *testing.T, link, old string) string {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if target, err := os.Readlink(link); err == nil && target != old {
			return target
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("link %s did not (re)appear", link)
	return ""
}

func TestSerialClient(t *testing.T) {
	link := filepath.Join(t.TempDir(), "ttyQ")
	m, err := modem.New(modem.Config{
		Personality: "quectel",
		IMEI:        testIMEI,
		SIM:         &modem.SIM{ICCID: testICCID, IMSI: testIMSI},
		// Long enough for the test to see the link gone.
		RebootDownFor: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, m, Config{Link: link}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if _, err := os.Lstat(link); !os.IsNotExist(err) {
			t.Errorf("link left behind: %v", err)
		}
	}()

	tty := waitLink(t, link, "")
	c := openClient(t, link)
	// The boot URCs were sent before the client opened; raw mode kept them
	// intact in the pty.
	c.readUntil("\r\nRDY\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n", 2*time.Second)

	c.write("AT+CGSN\r")
	if got, want := c.readUntil("OK\r\n", 2*time.Second), "AT+CGSN\r\r\n356938035643809\r\n\r\nOK\r\n"; got != want {
		t.Errorf("AT+CGSN: got %q, want %q", got, want)
	}

	// Swap the SIM while a slow command is pending.
	m.SetFaults(modem.Faults{Delay: 300 * time.Millisecond})
	c.write("AT+QCCID\r")
	c.readUntil("AT+QCCID\r", time.Second)
	other := modem.SIM{ICCID: "8910042348144559361", IMSI: "001010123456789"}
	if err := m.SwapSIM(t.Context(), other, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	got := c.readUntil("OK\r\n", 2*time.Second)
	want := "\r\n+CPIN: NOT READY\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n" +
		"\r\n+QCCID: 8910042348144559361F\r\n\r\nOK\r\n"
	if got != want {
		t.Errorf("swap mid-command: got %q, want %q", got, want)
	}
	m.SetFaults(modem.Faults{})

	// Reboot: the port hangs up, the link goes away and comes back with a
	// fresh pty.
	c.write("ATE0;+CFUN=1,1\r")
	c.readUntil("OK\r\n", 2*time.Second)
	gone := time.Now().Add(2 * time.Second)
	for {
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			break
		}
		if time.Now().After(gone) {
			t.Fatal("link still there after reboot")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.port.Close()
	// The kernel may hand out the same /dev/pts/N again.
	t.Logf("pty %s, after reboot %s", tty, waitLink(t, link, ""))
	c2 := openClient(t, link)
	c2.readUntil("\r\nRDY\r\n", 2*time.Second)
	c2.readUntil("+QIND: PB DONE\r\n", 2*time.Second)
	c2.write("AT+QCCID\r")
	// Echo is back on after the reboot; the swapped card stays in.
	if got, want := c2.readUntil("OK\r\n", 2*time.Second), "AT+QCCID\r\r\n+QCCID: 8910042348144559361F\r\n\r\nOK\r\n"; got != want {
		t.Errorf("after reboot: got %q, want %q", got, want)
	}
}

func TestRefusesRegularFile(t *testing.T) {
	link := filepath.Join(t.TempDir(), "ttyX")
	if err := os.WriteFile(link, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := modem.New(modem.Config{IMEI: testIMEI})
	if err != nil {
		t.Fatal(err)
	}
	if err := Run(t.Context(), m, Config{Link: link}); err == nil {
		t.Fatal("Run replaced a regular file")
	}
}

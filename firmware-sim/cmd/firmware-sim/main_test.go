package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHelp(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"help"}, "firmware-sim modem"},
		{[]string{"modem", "--help"}, "-personality"},
		{[]string{"network", "--help"}, "TEST DOUBLE"},
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), tc.args, &stdout, &stderr)
		if err != nil && !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%v: %v", tc.args, err)
		}
		if !strings.Contains(stdout.String(), tc.want) {
			t.Errorf("%v: stdout %q lacks %q", tc.args, stdout.String(), tc.want)
		}
	}
}

func TestBadUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"bogus"}, {"modem"}, {"modem", "--imei", "356938035643809"}, {"network", "extra"}} {
		var stdout, stderr bytes.Buffer
		if err := run(t.Context(), args, &stdout, &stderr); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want usage error", args, err)
		}
	}
}

// TestModemStops runs the modem subcommand and stops it as a signal would:
// the link must be gone afterwards.
func TestModemStops(t *testing.T) {
	link := filepath.Join(t.TempDir(), "ttyQ")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	var stderr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"modem", "--personality", "quectel", "--imei", "356938035643809",
			"--iccid", "89860318640220133897", "--imsi", "460031234567890", "--link", link,
			"--control", "127.0.0.1:0", "--log-level", "warn"}, &bytes.Buffer{}, &stderr)
	}()
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, err := os.Readlink(link); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no link; stderr: %s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("modem: %v", err)
	}
	if _, err := os.Lstat(link); !os.IsNotExist(err) {
		t.Errorf("link left behind: %v", err)
	}
}

func TestControlMustBeLoopback(t *testing.T) {
	if _, err := listenLoopback("0.0.0.0:0"); err == nil {
		t.Error("listenLoopback accepted 0.0.0.0")
	}
	ln, err := listenLoopback("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}

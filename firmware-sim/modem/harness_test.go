package modem

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Test identities (the IMEI and ICCID pass their Luhn check).
const (
	testIMEI  = "356938035643809"
	testICCID = "89860318640220133897"
	testIMSI  = "460031234567890"
)

func testSIM() *SIM { return &SIM{ICCID: testICCID, IMSI: testIMSI, MSISDN: "8613800000000"} }

// harness runs a Modem over net.Pipe and records everything it sends.
type harness struct {
	t      *testing.T
	m      *Modem
	conn   net.Conn
	cancel context.CancelFunc
	done   chan error

	mu  sync.Mutex
	buf bytes.Buffer
	eof bool
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	if cfg.IMEI == "" {
		cfg.IMEI = testIMEI
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return startHarness(t, m)
}

func startHarness(t *testing.T, m *Modem) *harness {
	t.Helper()
	client, dev := net.Pipe()
	ctx, cancel := context.WithCancel(t.Context())
	h := &harness{t: t, m: m, conn: client, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- m.Serve(ctx, dev) }()
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		p := make([]byte, 512)
		for {
			n, err := client.Read(p)
			h.mu.Lock()
			h.buf.Write(p[:n])
			if err != nil {
				h.eof = true
			}
			h.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			if err != nil && !errors.Is(err, context.Canceled) {
				var rb *RebootError
				if !errors.As(err, &rb) {
					t.Errorf("Serve: %v", err)
				}
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return")
		}
		client.Close()
		dev.Close()
		<-readerDone
	})
	return h
}

// settle waits until the modem has been quiet for a moment and returns (and
// clears) what it sent.
func (h *harness) settle() string {
	h.t.Helper()
	last, quiet := -1, 0
	for range 1000 {
		time.Sleep(2 * time.Millisecond)
		h.mu.Lock()
		n := h.buf.Len()
		h.mu.Unlock()
		if n != last {
			last, quiet = n, 0
			continue
		}
		if quiet++; quiet >= 5 {
			break
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.buf.String()
	h.buf.Reset()
	return s
}

// send writes in and returns what the modem answered once it is quiet.
func (h *harness) send(in string) string {
	h.t.Helper()
	if _, err := h.conn.Write([]byte(in)); err != nil {
		h.t.Fatalf("write %q: %v", in, err)
	}
	return h.settle()
}

// waitFor waits until the output contains want and returns (and clears)
// everything up to and including it.
func (h *harness) waitFor(want string, timeout time.Duration) string {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		s := h.buf.String()
		if i := strings.Index(s, want); i >= 0 {
			h.buf.Reset()
			h.buf.WriteString(s[i+len(want):])
			h.mu.Unlock()
			return s[:i+len(want)]
		}
		h.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.t.Fatalf("timed out waiting for %q; have %q", want, h.buf.String())
	return ""
}

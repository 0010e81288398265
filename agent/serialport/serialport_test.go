package serialport

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/term"

	"github.com/cardbind/cardbind/agent/at"
)

// ptyModem is a minimal modem on the master side of a pseudo-terminal, for
// this test only: echo on until ATE0, a handful of canned answers.
type ptyModem struct {
	master, slave *os.File
	wg            sync.WaitGroup

	mu   sync.Mutex
	seen []string
}

// startPTYModem opens a pty, puts the slave in raw mode at once, points link
// at it and serves commands until stop.
func startPTYModem(t *testing.T, link string) *ptyModem {
	t.Helper()
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatalf("pty.Open: %v", err)
	}
	if _, err := term.MakeRaw(int(slave.Fd())); err != nil {
		t.Fatalf("MakeRaw: %v", err)
	}
	master = pollable(t, master)
	tmp := link + ".new"
	_ = os.Remove(tmp)
	if err := os.Symlink(slave.Name(), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil { // atomic switch, like udev
		t.Fatal(err)
	}
	m := &ptyModem{master: master, slave: slave}
	m.wg.Add(1)
	go m.serve()
	t.Cleanup(m.stop)
	return m
}

// pollable returns f's descriptor as a non-blocking, poller-managed file,
// so that Close interrupts a pending Read (f.Fd() left f in blocking mode,
// where Close waits for the read to end, which it never does while the
// client holds the slave open).
func pollable(t *testing.T, f *os.File) *os.File {
	t.Helper()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	if err := syscall.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fd), f.Name())
}

func (m *ptyModem) serve() {
	defer m.wg.Done()
	echo := true
	var line []byte
	buf := make([]byte, 256)
	for {
		n, err := m.master.Read(buf)
		if err != nil {
			return // EIO once every slave fd is closed, or our own close
		}
		for _, b := range buf[:n] {
			if b == '\n' {
				continue
			}
			if b != '\r' {
				line = append(line, b)
				continue
			}
			cmd := string(line)
			line = line[:0]
			m.mu.Lock()
			m.seen = append(m.seen, cmd)
			m.mu.Unlock()
			var out string
			if echo {
				out = cmd + "\r"
			}
			switch strings.ToUpper(cmd) {
			case "ATE0":
				echo = false
				out += "\r\nOK\r\n"
			case "AT", "ATV1", "AT+CMEE=1", "AT+CREG=2":
				out += "\r\nOK\r\n"
			case "AT+CMEE?":
				out += "\r\n+CMEE: 1\r\n\r\nOK\r\n"
			case "AT+CGSN":
				out += "\r\n490154203237518\r\n\r\n+CREG: 1\r\n\r\nOK\r\n"
			default:
				out += "\r\nERROR\r\n"
			}
			if _, err := io.WriteString(m.master, out); err != nil {
				return
			}
		}
	}
}

// stop makes the device vanish: both ends closed.
func (m *ptyModem) stop() {
	_ = m.slave.Close()
	_ = m.master.Close()
	m.wg.Wait()
}

func (m *ptyModem) commands() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.seen)
}

func TestOpenRoundTrip(t *testing.T) {
	link := filepath.Join(t.TempDir(), "ttyMODEM")
	modem := startPTYModem(t, link)
	port, err := Open(link, 115200)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	e := at.New(port)
	defer e.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	resp, err := e.Command(ctx, "AT+CGSN") // echo is still on
	if err != nil || !slices.Equal(resp.Lines, []string{"490154203237518"}) {
		t.Fatalf("AT+CGSN = %q, %v", resp.Lines, err)
	}
	if got := modem.commands(); !slices.Equal(got, []string{"AT+CGSN"}) {
		t.Errorf("modem saw %q", got)
	}
}

func TestOpenMissing(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "nothing"), 0)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want not-exist", err)
	}
}

// The device disappears (modem reboot, USB re-enumeration) and comes back at
// the same path: the supervisor reopens it with backoff, re-runs init and
// reports it up again.
func TestSupervisorReopensPTY(t *testing.T) {
	link := filepath.Join(t.TempDir(), "ttyMODEM")
	first := startPTYModem(t, link)

	var opens, failures atomic.Int32
	open := Opener(link, 115200)
	up := make(chan *at.Engine, 4)
	down := make(chan error, 4)
	urcs := make(chan string, 16)
	sup, err := at.NewSupervisor(at.SupervisorConfig{
		Open: func(ctx context.Context) (io.ReadWriteCloser, error) {
			opens.Add(1)
			p, err := open(ctx)
			if err != nil {
				failures.Add(1)
			}
			return p, err
		},
		Init:       append(at.DefaultInit(), "AT+CREG=2"),
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 100 * time.Millisecond,
		Options:    []at.Option{at.WithDefaultTimeout(time.Second), at.WithResyncTimeout(200 * time.Millisecond)},
		OnUp:       func(_ context.Context, e *at.Engine) { up <- e },
		OnDown:     func(err error) { down <- err },
	})
	if err != nil {
		t.Fatal(err)
	}
	sup.Handle("+CREG:", func(line string) { urcs <- line })
	ctx, cancel := context.WithCancel(t.Context())
	runErr := make(chan error, 1)
	go func() { runErr <- sup.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runErr; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v", err)
		}
	}()

	wait := func(what string, ch any) {
		t.Helper()
		timeout := time.After(5 * time.Second)
		switch c := ch.(type) {
		case chan *at.Engine:
			select {
			case <-c:
			case <-timeout:
				t.Fatalf("no %s", what)
			}
		case chan error:
			select {
			case <-c:
			case <-timeout:
				t.Fatalf("no %s", what)
			}
		case chan string:
			select {
			case <-c:
			case <-timeout:
				t.Fatalf("no %s", what)
			}
		}
	}
	cmdCtx, cmdCancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cmdCancel()
	check := func() {
		t.Helper()
		resp, err := sup.Command(cmdCtx, "AT+CGSN")
		if err != nil || !slices.Equal(resp.Lines, []string{"490154203237518"}) {
			t.Fatalf("AT+CGSN = %q, %v", resp.Lines, err)
		}
		wait("+CREG URC", urcs) // the URC inside the reply went to the handler
	}

	wait("first up", up)
	check()
	if got, want := first.commands()[:4], []string{"AT+CMEE?", "ATE0", "ATV1", "AT+CMEE=1"}; !slices.Equal(got, want) {
		t.Errorf("first init = %q, want %q", got, want)
	}

	// The device vanishes.
	first.stop()
	_ = os.Remove(link)
	wait("down", down)
	if _, err := sup.Command(cmdCtx, "AT"); !errors.Is(err, at.ErrNotConnected) {
		t.Errorf("Command while down = %v, want ErrNotConnected", err)
	}
	// Let a few reopen attempts fail, then bring it back at the same path.
	deadline := time.Now().Add(5 * time.Second)
	for failures.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if failures.Load() < 2 {
		t.Fatalf("only %d failed reopen attempts", failures.Load())
	}
	second := startPTYModem(t, link)
	wait("second up", up)
	check()
	if got := second.commands(); !slices.Contains(got, "ATE0") || !slices.Contains(got, "AT+CREG=2") {
		t.Errorf("init not re-run on reopen: %q", got)
	}
	t.Logf("opens=%d failures=%d", opens.Load(), failures.Load())
}

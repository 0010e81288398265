package at

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newEngine(t *testing.T, m *fakeModem, opts ...Option) *Engine {
	t.Helper()
	opts = append([]Option{WithDefaultTimeout(time.Second), WithResyncTimeout(500 * time.Millisecond)}, opts...)
	e := New(m, opts...)
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// urcLog collects URCs delivered to a handler.
type urcLog struct {
	mu    sync.Mutex
	lines []string
	ch    chan string
}

func newURCLog() *urcLog { return &urcLog{ch: make(chan string, 100)} }

func (u *urcLog) handle(line string) {
	u.mu.Lock()
	u.lines = append(u.lines, line)
	u.mu.Unlock()
	u.ch <- line
}

func (u *urcLog) wait(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-u.ch:
		if got != want {
			t.Fatalf("URC = %q, want %q", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("URC %q not delivered", want)
	}
}

func TestCommandReplies(t *testing.T) {
	tests := []struct {
		name  string
		echo  bool
		reply string
		cmd   string
		want  []string
	}{
		{"echo off", false, "\r\n490154203237518\r\n\r\nOK\r\n", "AT+CGSN", []string{"490154203237518"}},
		{"echo on", true, "\r\n490154203237518\r\n\r\nOK\r\n", "AT+CGSN", []string{"490154203237518"}},
		{"echo lower case", false, "at+cgsn\r\r\n490154203237518\r\n\r\nOK\r\n", "AT+CGSN", []string{"490154203237518"}},
		{"doubled CR", true, "\r\r\n490154203237518\r\r\n\r\r\nOK\r\r\n", "AT+CGSN", []string{"490154203237518"}},
		{"bare LF framing", false, "\n+CSQ: 17,99\n\nOK\n", "AT+CSQ", []string{"+CSQ: 17,99"}},
		{"several info lines", false, "\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A06M4G\r\n\r\nOK\r\n", "ATI",
			[]string{"Quectel", "EC25", "Revision: EC25EFAR06A06M4G"}},
		{"leading space kept out", false, "\r\n WAVECOM MODEM\r\n\r\nOK\r\n", "AT+CGMI", []string{"WAVECOM MODEM"}},
		{"no info", false, "\r\nOK\r\n", "AT+CREG=2", nil},
		{"concatenated", false, "\r\n+COPS: 0,2,\"21401\",7\r\n\r\nOK\r\n", "AT+COPS=3,2;+COPS?", []string{`+COPS: 0,2,"21401",7`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newFakeModem(t, tt.echo, func(cmd string) []chunk {
				if cmd == tt.cmd {
					return say(tt.reply)
				}
				return nil
			})
			e := newEngine(t, m)
			resp, err := e.Command(ctxT(t), tt.cmd)
			if err != nil {
				t.Fatalf("Command: %v", err)
			}
			if !slices.Equal(resp.Lines, tt.want) {
				t.Errorf("Lines = %q, want %q", resp.Lines, tt.want)
			}
			if resp.Final != "OK" {
				t.Errorf("Final = %q, want OK", resp.Final)
			}
		})
	}
}

func TestFinalErrors(t *testing.T) {
	tests := []struct {
		final    string
		wantCME  *CMEError
		wantCMS  *CMSError
		wantRes  string
		wantBase error
	}{
		{final: "ERROR", wantBase: ErrError},
		{final: "+CME ERROR: 10", wantCME: &CMEError{10, "SIM not inserted"}},
		{final: "+CME ERROR: SIM not inserted", wantCME: &CMEError{10, "SIM not inserted"}},
		{final: "+CME ERROR: sim busy", wantCME: &CMEError{14, "SIM busy"}},
		{final: "+CME ERROR: 515", wantCME: &CMEError{515, "please wait, init in progress"}},
		{final: "+CME ERROR: 9999", wantCME: &CMEError{9999, "9999"}},
		{final: "+CME ERROR: vendor mystery", wantCME: &CMEError{-1, "vendor mystery"}},
		{final: "+CME ERROR:3", wantCME: &CMEError{3, "operation not allowed"}},
		{final: "+CMS ERROR: 310", wantCMS: &CMSError{310, "SIM not inserted"}},
		{final: "+CMS ERROR: SIM busy", wantCMS: &CMSError{314, "SIM busy"}},
		{final: "COMMAND NOT SUPPORT", wantRes: "COMMAND NOT SUPPORT"},
		{final: "NO CARRIER", wantRes: "NO CARRIER"},
		{final: "MODEM ERROR: 4", wantRes: "MODEM ERROR: 4"},
	}
	for _, tt := range tests {
		t.Run(tt.final, func(t *testing.T) {
			m := newFakeModem(t, false, func(cmd string) []chunk {
				if cmd == "AT+CPIN?" {
					return say("\r\n" + tt.final + "\r\n")
				}
				return nil
			})
			e := newEngine(t, m)
			_, err := e.Command(ctxT(t), "AT+CPIN?")
			if err == nil {
				t.Fatal("Command succeeded, want error")
			}
			if tt.wantBase != nil && !errors.Is(err, tt.wantBase) {
				t.Errorf("err = %v, want %v", err, tt.wantBase)
			}
			if tt.wantCME != nil {
				var ce *CMEError
				if !errors.As(err, &ce) || *ce != *tt.wantCME {
					t.Errorf("err = %#v, want %#v", err, tt.wantCME)
				}
			}
			if tt.wantCMS != nil {
				var ce *CMSError
				if !errors.As(err, &ce) || *ce != *tt.wantCMS {
					t.Errorf("err = %#v, want %#v", err, tt.wantCMS)
				}
			}
			if tt.wantRes != "" {
				var re *ResultError
				if !errors.As(err, &re) || re.Result != tt.wantRes {
					t.Errorf("err = %#v, want ResultError %q", err, tt.wantRes)
				}
			}
			// The engine stays usable.
			if _, err := e.Command(ctxT(t), "AT"); err != nil {
				t.Errorf("AT after error: %v", err)
			}
		})
	}
}

func TestURCsAreConsumed(t *testing.T) {
	m := newFakeModem(t, true, func(cmd string) []chunk {
		switch cmd {
		case "AT+CSQ":
			return say("\r\n+CREG: 1\r\n\r\n+CSQ: 17,99\r\n\r\n+QIND: SMS DONE\r\n\r\nRDY\r\n\r\nOK\r\n")
		case "AT+CPIN?":
			return say("\r\n+CREG: 5,\"1234\",\"001122BB\",7\r\n\r\n+CPIN: READY\r\n\r\nOK\r\n")
		case "AT+CREG?":
			return say("\r\n+CREG: 2,1,\"1234\",\"001122BB\",7\r\n\r\n+CPIN: NOT READY\r\n\r\nOK\r\n")
		}
		return nil
	})
	creg, cpin, all := newURCLog(), newURCLog(), newURCLog()
	e := newEngine(t, m, WithHandler("+CREG:", creg.handle))
	e.Handle("+CPIN:", cpin.handle)
	e.Handle("", all.handle)
	ctx := ctxT(t)

	// URC between info and OK, and known URCs without a handler.
	resp, err := e.Command(ctx, "AT+CSQ")
	if err != nil || !slices.Equal(resp.Lines, []string{"+CSQ: 17,99"}) {
		t.Fatalf("AT+CSQ = %q, %v", resp.Lines, err)
	}
	creg.wait(t, "+CREG: 1")

	// +CPIN: READY is info while AT+CPIN? is in flight; +CREG is a URC.
	resp, err = e.Command(ctx, "AT+CPIN?")
	if err != nil || !slices.Equal(resp.Lines, []string{"+CPIN: READY"}) {
		t.Fatalf("AT+CPIN? = %q, %v", resp.Lines, err)
	}
	creg.wait(t, `+CREG: 5,"1234","001122BB",7`)

	// +CREG: is info during AT+CREG?; +CPIN: NOT READY is a URC.
	resp, err = e.Command(ctx, "AT+CREG?")
	if err != nil || !slices.Equal(resp.Lines, []string{`+CREG: 2,1,"1234","001122BB",7`}) {
		t.Fatalf("AT+CREG? = %q, %v", resp.Lines, err)
	}
	cpin.wait(t, "+CPIN: NOT READY")

	// While idle, +CPIN: READY is a URC.
	m.emit("\r\n+CPIN: READY\r\n")
	cpin.wait(t, "+CPIN: READY")
	// An unknown line on a quiet port goes to the catch-all handler.
	m.emit("\r\n+KSIMDET: 1\r\n")
	want := []string{"+CREG: 1", "+QIND: SMS DONE", "RDY", `+CREG: 5,"1234","001122BB",7`,
		"+CPIN: NOT READY", "+CPIN: READY", "+KSIMDET: 1"}
	for _, w := range want {
		all.wait(t, w) // in arrival order
	}
}

func TestTimeoutThenResync(t *testing.T) {
	tests := []struct {
		name string
		late []chunk // what the abandoned AT+COPS? produces
	}{
		{"late info and OK", later(300*time.Millisecond, "\r\n+COPS: 0,0,\"late\",7\r\n\r\nOK\r\n")},
		{"late OK only", later(300*time.Millisecond, "\r\nOK\r\n")},
		{"late error", later(300*time.Millisecond, "\r\n+CME ERROR: 30\r\n")},
		{"never answers", []chunk{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newFakeModem(t, false, func(cmd string) []chunk {
				if cmd == "AT+COPS?" {
					return tt.late
				}
				return nil
			})
			e := newEngine(t, m)
			ctx := ctxT(t)
			resp, err := e.Command(ctx, "AT+COPS?", CommandTimeout(50*time.Millisecond))
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("AT+COPS? err = %v, want ErrTimeout", err)
			}
			if len(resp.Lines) != 0 {
				t.Errorf("timed-out lines = %q", resp.Lines)
			}
			// The next command must get its own reply, not the late one.
			resp, err = e.Command(ctx, "AT+CGSN")
			if err != nil || !slices.Equal(resp.Lines, []string{"490154203237518"}) {
				t.Fatalf("AT+CGSN after timeout = %q, %v", resp.Lines, err)
			}
			resp, err = e.Command(ctx, "AT+CSQ")
			if err != nil || !slices.Equal(resp.Lines, []string{"+CSQ: 17,99"}) {
				t.Fatalf("AT+CSQ = %q, %v", resp.Lines, err)
			}
			if got := m.sent(); !slices.Contains(got, "AT+CMEE?") {
				t.Errorf("no resync probe sent: %q", got)
			}
		})
	}
}

// A timed-out AT+CMEE? would answer the usual probe; the engine must use
// another one.
func TestResyncAfterAbandonedProbeCommand(t *testing.T) {
	first := true
	var mu sync.Mutex
	m := newFakeModem(t, false, func(cmd string) []chunk {
		mu.Lock()
		defer mu.Unlock()
		if cmd == "AT+CMEE?" && first {
			first = false
			return later(200*time.Millisecond, "\r\n+CMEE: 1\r\n\r\nOK\r\n")
		}
		return nil
	})
	e := newEngine(t, m)
	ctx := ctxT(t)
	if _, err := e.Command(ctx, "AT+CMEE?", CommandTimeout(30*time.Millisecond)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want timeout", err)
	}
	resp, err := e.Command(ctx, "AT+CSQ")
	if err != nil || !slices.Equal(resp.Lines, []string{"+CSQ: 17,99"}) {
		t.Fatalf("AT+CSQ = %q, %v", resp.Lines, err)
	}
	if got := m.sent(); !slices.Contains(got, "AT+CSCS?") {
		t.Errorf("alternative probe not used: %q", got)
	}
}

// A modem that answers neither probe with its marker is synchronised with a
// plain AT and a quiet period.
func TestResyncPlainAT(t *testing.T) {
	m := newFakeModem(t, true, func(cmd string) []chunk {
		switch cmd {
		case "AT+CMEE?", "AT+CSCS?":
			return say("\r\nERROR\r\n")
		case "AT+CGMI":
			return later(150*time.Millisecond, "\r\nhuawei\r\n\r\nOK\r\n")
		}
		return nil
	})
	e := newEngine(t, m, WithResyncTimeout(100*time.Millisecond))
	ctx := ctxT(t)
	if _, err := e.Command(ctx, "AT+CGMI", CommandTimeout(20*time.Millisecond)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want timeout", err)
	}
	resp, err := e.Command(ctx, "AT+CGSN")
	if err != nil || !slices.Equal(resp.Lines, []string{"490154203237518"}) {
		t.Fatalf("AT+CGSN = %q, %v", resp.Lines, err)
	}
}

func TestResyncFailsWhenModemIsMute(t *testing.T) {
	var mu sync.Mutex
	mute := false
	m := newFakeModem(t, false, func(cmd string) []chunk {
		mu.Lock()
		defer mu.Unlock()
		if mute {
			return []chunk{}
		}
		return nil
	})
	e := newEngine(t, m, WithResyncTimeout(20*time.Millisecond))
	ctx := ctxT(t)
	if _, err := e.Command(ctx, "AT"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	mute = true
	mu.Unlock()
	if err := e.Sync(ctx); !errors.Is(err, ErrNoResponse) {
		t.Fatalf("Sync = %v, want ErrNoResponse", err)
	}
	mu.Lock()
	mute = false
	mu.Unlock()
	if _, err := e.Command(ctx, "AT+CSQ"); err != nil {
		t.Fatalf("after the modem came back: %v", err)
	}
}

func TestGarbage(t *testing.T) {
	m := newFakeModem(t, false, func(cmd string) []chunk {
		if cmd == "AT+CGSN" {
			return say("\x00\xff\xfe\r\n490154203237518\r\n\x1b[0m\r\nOK\r\n")
		}
		return nil
	})
	urcs := newURCLog()
	e := newEngine(t, m, WithHandler("", urcs.handle))
	ctx := ctxT(t)
	// Garbage while idle: what follows it is not trusted as a URC.
	m.emit("\xff\xff\x00\x13\r\nnoise\r\n\r\nRDY\r\n")
	urcs.wait(t, "RDY")
	resp, err := e.Command(ctx, "AT+CGSN")
	if err != nil || !slices.Equal(resp.Lines, []string{"490154203237518"}) {
		t.Fatalf("AT+CGSN = %q, %v", resp.Lines, err)
	}
	if got := m.sent(); !slices.Equal(got, []string{"AT+CMEE?", "AT+CGSN"}) {
		t.Errorf("sent %q, want a resync before AT+CGSN", got)
	}
	// Garbage inside the reply forced another one.
	if _, err := e.Command(ctx, "AT+CSQ"); err != nil {
		t.Fatal(err)
	}
	if got := m.sent(); !slices.Equal(got, []string{"AT+CMEE?", "AT+CGSN", "AT+CMEE?", "AT+CSQ"}) {
		t.Errorf("sent %q, want a resync before AT+CSQ", got)
	}
}

func TestSlowAnswer(t *testing.T) {
	m := newFakeModem(t, true, func(cmd string) []chunk {
		if cmd == "AT+CRSM=176,12258,0,0,10" {
			var cs []chunk
			for _, s := range []string{"\r", "\n+CR", "SM: 144,0,\"98014032", "8441549563F1\"\r", "\n", "\r\nO", "K\r\n"} {
				cs = append(cs, chunk{delay: 40 * time.Millisecond, data: s})
			}
			return cs
		}
		return nil
	})
	e := newEngine(t, m, WithDefaultTimeout(100*time.Millisecond))
	// +CRSM has the long timeout by default.
	resp, err := e.Command(ctxT(t), "AT+CRSM=176,12258,0,0,10")
	if err != nil || !slices.Equal(resp.Lines, []string{`+CRSM: 144,0,"980140328441549563F1"`}) {
		t.Fatalf("CRSM = %q, %v", resp.Lines, err)
	}
}

func TestPortClosedMidCommand(t *testing.T) {
	m := newFakeModem(t, false, func(cmd string) []chunk {
		if cmd == "AT+COPS=?" {
			return []chunk{} // hangs
		}
		return nil
	})
	e := newEngine(t, m)
	ctx := ctxT(t)
	errc := make(chan error, 1)
	go func() {
		_, err := e.Command(ctx, "AT+COPS=?")
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the command be written
	m.hangup()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("err = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("command not failed after hangup")
	}
	select {
	case <-e.Closed():
	case <-time.After(5 * time.Second):
		t.Fatal("Closed not signalled")
	}
	if err := e.Err(); err == nil || !strings.Contains(err.Error(), "input/output error") {
		t.Errorf("Err = %v, want the read error", err)
	}
	if _, err := e.Command(ctx, "AT"); !errors.Is(err, ErrClosed) {
		t.Errorf("after close: %v, want ErrClosed", err)
	}
}

func TestCloseIdle(t *testing.T) {
	m := newFakeModem(t, false, nil)
	e := New(m)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(e.Err(), ErrClosed) {
		t.Errorf("Err = %v", e.Err())
	}
	if _, err := e.Command(t.Context(), "AT"); !errors.Is(err, ErrClosed) {
		t.Errorf("Command after Close = %v", err)
	}
	_ = e.Close() // idempotent
}

func TestCPINWithoutOK(t *testing.T) {
	m := newFakeModem(t, false, func(cmd string) []chunk {
		if cmd == "AT+CPIN?" {
			return say("\r\n+CPIN: READY\r\n")
		}
		return nil
	})
	e := newEngine(t, m)
	resp, err := e.Command(ctxT(t), "AT+CPIN?", CommandTimeout(100*time.Millisecond))
	if !errors.Is(err, ErrTimeout) || !slices.Equal(resp.Lines, []string{"+CPIN: READY"}) {
		t.Fatalf("got %q, %v; want the info line with ErrTimeout", resp.Lines, err)
	}
	if _, err := e.Command(ctxT(t), "AT+CSQ"); err != nil {
		t.Fatal(err)
	}
}

func TestCancelledCommand(t *testing.T) {
	m := newFakeModem(t, false, func(cmd string) []chunk {
		if cmd == "AT+CFUN=1" {
			return later(200*time.Millisecond, "\r\nOK\r\n")
		}
		return nil
	})
	e := newEngine(t, m)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	if _, err := e.Command(ctx, "AT+CFUN=1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	resp, err := e.Command(ctxT(t), "AT+CGSN")
	if err != nil || !slices.Equal(resp.Lines, []string{"490154203237518"}) {
		t.Fatalf("after cancel: %q, %v", resp.Lines, err)
	}
}

func TestBadCommand(t *testing.T) {
	e := newEngine(t, newFakeModem(t, false, nil))
	for _, c := range []string{"", "A", "+CGSN", "AT+CGSN\r", "AT\nATI"} {
		if _, err := e.Command(t.Context(), c); !errors.Is(err, ErrBadCommand) {
			t.Errorf("Command(%q) = %v, want ErrBadCommand", c, err)
		}
	}
}

func TestConcurrentCommands(t *testing.T) {
	m := newFakeModem(t, true, func(cmd string) []chunk {
		var n int
		if _, err := fmt.Sscanf(cmd, "AT+ECHO=%d", &n); err == nil {
			return say(fmt.Sprintf("\r\n+ECHO: %d\r\n\r\nOK\r\n", n))
		}
		return nil
	})
	e := newEngine(t, m)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			resp, err := e.Command(ctx, fmt.Sprintf("AT+ECHO=%d", i))
			want := fmt.Sprintf("+ECHO: %d", i)
			if err != nil || !slices.Equal(resp.Lines, []string{want}) {
				t.Errorf("command %d = %q, %v", i, resp.Lines, err)
			}
		})
	}
	wg.Wait()
}

// A handler may issue commands (e.g. re-read the SIM on a SIM event) without
// deadlocking the engine, even while more URCs arrive.
func TestHandlerIssuesCommand(t *testing.T) {
	// Only the first reply carries a URC: every URC makes the handler
	// send the command again, so a URC in every reply would never end.
	var replies atomic.Int32
	m := newFakeModem(t, false, func(cmd string) []chunk {
		if cmd != "AT+CPIN?" {
			return nil
		}
		if replies.Add(1) == 1 {
			return say("\r\n+QUSIM: 1\r\n\r\n+CPIN: READY\r\n\r\nOK\r\n")
		}
		return say("\r\n+CPIN: READY\r\n\r\nOK\r\n")
	})
	e := newEngine(t, m)
	got := make(chan string, 10)
	report := func(s string) {
		select {
		case got <- s:
		default: // never block the dispatcher, also not while the engine closes
		}
	}
	e.Handle("+QUSIM:", func(line string) {
		resp, err := e.Command(context.Background(), "AT+CPIN?")
		if err != nil {
			report(err.Error())
			return
		}
		report(strings.Join(resp.Lines, "|"))
	})
	m.emit("\r\n+QUSIM: 1\r\n")
	for range 2 { // the URC and the one inside the reply
		select {
		case g := <-got:
			if g != "+CPIN: READY" {
				t.Fatalf("handler got %q", g)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("handler did not complete")
		}
	}
}

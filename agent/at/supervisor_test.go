package at

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestNewSupervisorNeedsOpen(t *testing.T) {
	if _, err := NewSupervisor(SupervisorConfig{}); err == nil {
		t.Fatal("NewSupervisor without Open succeeded")
	}
}

func TestBackoff(t *testing.T) {
	s, err := NewSupervisor(SupervisorConfig{
		Open:       func(context.Context) (io.ReadWriteCloser, error) { return nil, errors.New("x") },
		MinBackoff: 100 * time.Millisecond,
		MaxBackoff: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		n      int
		jitter float64
		want   time.Duration
	}{
		{0, 0, 50 * time.Millisecond},
		{0, 0.999999, 99999950 * time.Nanosecond},
		{1, 0, 100 * time.Millisecond},
		{2, 0.5, 300 * time.Millisecond},
		{3, 0, 400 * time.Millisecond},
		{4, 0, 500 * time.Millisecond}, // capped at MaxBackoff
		{60, 1, time.Second},
	}
	for _, tt := range tests {
		s.jitter = func() float64 { return tt.jitter }
		if got := s.backoff(tt.n); got != tt.want {
			t.Errorf("backoff(%d, jitter %v) = %v, want %v", tt.n, tt.jitter, got, tt.want)
		}
	}
}

// flakyOpener fails a number of times, then hands out fake modems.
type flakyOpener struct {
	t     *testing.T
	mu    sync.Mutex
	fails int
	calls int
	mute  bool
	last  *fakeModem
}

func (o *flakyOpener) open(ctx context.Context) (io.ReadWriteCloser, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls++
	if o.fails > 0 {
		o.fails--
		return nil, errors.New("no such device")
	}
	var s script
	if o.mute {
		s = func(string) []chunk { return []chunk{} }
	}
	o.last = newFakeModem(o.t, false, s)
	return o.last, nil
}

func (o *flakyOpener) current() *fakeModem {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last
}

func TestSupervisorLifecycle(t *testing.T) {
	o := &flakyOpener{t: t, fails: 2}
	up := make(chan *Engine, 4)
	down := make(chan error, 4)
	s, err := NewSupervisor(SupervisorConfig{
		Open:       o.open,
		Init:       []string{"ATE0", "AT+CMEE=1", "AT+QSIMSTAT=1"}, // the last one gets ERROR: logged, not fatal
		MinBackoff: time.Millisecond,
		MaxBackoff: 5 * time.Millisecond,
		Options:    []Option{WithResyncTimeout(100 * time.Millisecond)},
		OnUp:       func(_ context.Context, e *Engine) { up <- e },
		OnDown:     func(err error) { down <- err },
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Command(t.Context(), "AT"); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("before Run: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	recv := func() {
		t.Helper()
		select {
		case <-up:
		case <-time.After(5 * time.Second):
			t.Fatal("not up")
		}
	}
	recv()
	if got := o.current().sent(); !slices.Equal(got, []string{"AT+CMEE?", "ATE0", "AT+CMEE=1", "AT+QSIMSTAT=1"}) {
		t.Errorf("init = %q", got)
	}
	if _, err := s.Command(ctx, "AT+CSQ"); err != nil {
		t.Fatal(err)
	}
	o.current().hangup()
	select {
	case err := <-down:
		if err == nil {
			t.Error("OnDown with nil error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not down")
	}
	recv()
	if _, err := s.Command(ctx, "AT+CSQ"); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
	if o.calls != 4 {
		t.Errorf("opened %d times, want 4 (2 failures, 2 successes)", o.calls)
	}
}

// A port that opens but never answers is closed and retried.
func TestSupervisorMuteModem(t *testing.T) {
	o := &flakyOpener{t: t, mute: true}
	s, err := NewSupervisor(SupervisorConfig{
		Open:       o.open,
		MinBackoff: time.Millisecond,
		MaxBackoff: 2 * time.Millisecond,
		Options:    []Option{WithResyncTimeout(5 * time.Millisecond)},
		OnUp:       func(context.Context, *Engine) { t.Error("up on a mute modem") },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := s.Run(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run = %v", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.calls < 2 {
		t.Errorf("opened %d times, want retries", o.calls)
	}
}

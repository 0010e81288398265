package dispatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cardbind/cardbind/verifier"
)

// memOutbox is an in-memory fake of the outbox part of the store.
type memOutbox struct {
	mu      sync.Mutex
	entries map[string]verifier.OutboxEntry
}

func newMemOutbox(entries ...verifier.OutboxEntry) *memOutbox {
	m := &memOutbox{entries: map[string]verifier.OutboxEntry{}}
	for _, e := range entries {
		m.entries[e.ID] = e
	}
	return m
}

func (m *memOutbox) PendingOutbox(_ context.Context, kind verifier.OutboxKind, now time.Time, limit int) ([]verifier.OutboxEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []verifier.OutboxEntry
	for _, e := range m.entries {
		if e.Kind == kind && !e.NotBefore.After(now) {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (m *memOutbox) RescheduleOutbox(_ context.Context, e verifier.OutboxEntry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.entries[e.ID]; !ok {
		return verifier.ErrNotFound
	}
	m.entries[e.ID] = e
	return nil
}

func (m *memOutbox) CompleteOutbox(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, id)
	return nil
}

func (m *memOutbox) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

func entry(id string, kind verifier.OutboxKind, age time.Duration) verifier.OutboxEntry {
	return verifier.OutboxEntry{ID: id, Kind: kind, Created: time.Now().Add(-age), Payload: []byte(id)}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func run(t *testing.T, d *Dispatcher) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestDrainsOnlyItsKind(t *testing.T) {
	store := newMemOutbox(entry("a1", verifier.OutboxAlert, 3*time.Second), entry("e1", verifier.OutboxEnforce, 2*time.Second),
		entry("a2", verifier.OutboxAlert, time.Second))
	var mu sync.Mutex
	var got []string
	d := New(store, verifier.OutboxAlert, func(_ context.Context, e verifier.OutboxEntry) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, e.ID)
		return nil
	}, Config{Workers: 1}, quiet(), time.Now)
	run(t, d)
	waitFor(t, "alerts drained", func() bool { return store.len() == 1 })
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != "[a1 a2]" {
		t.Errorf("handled %v, want [a1 a2] in age order", got)
	}
	if d.Stats().Done.Load() != 2 {
		t.Errorf("done = %d", d.Stats().Done.Load())
	}
}

func TestRetriesWithBackoffThenSucceeds(t *testing.T) {
	store := newMemOutbox(entry("e1", verifier.OutboxEnforce, 0))
	var calls atomic.Int32
	d := New(store, verifier.OutboxEnforce, func(context.Context, verifier.OutboxEntry) error {
		if calls.Add(1) < 3 {
			return errors.New("network down")
		}
		return nil
	}, Config{MinBackoff: 10 * time.Millisecond, Poll: 5 * time.Millisecond}, quiet(), time.Now)
	run(t, d)
	waitFor(t, "entry done", func() bool { return store.len() == 0 })
	if calls.Load() != 3 || d.Stats().Retried.Load() != 2 || d.Stats().Done.Load() != 1 {
		t.Errorf("calls %d retried %d done %d", calls.Load(), d.Stats().Retried.Load(), d.Stats().Done.Load())
	}
}

func TestRescheduleRecordsAttempts(t *testing.T) {
	store := newMemOutbox(entry("e1", verifier.OutboxEnforce, 0))
	d := New(store, verifier.OutboxEnforce, func(context.Context, verifier.OutboxEntry) error { return errors.New("down") },
		Config{MinBackoff: time.Hour, MaxBackoff: 2 * time.Hour}, quiet(), time.Now)
	run(t, d)
	waitFor(t, "rescheduled", func() bool { return d.Stats().Retried.Load() == 1 })
	store.mu.Lock()
	e := store.entries["e1"]
	store.mu.Unlock()
	if e.Attempts != 1 || time.Until(e.NotBefore) < 40*time.Minute {
		t.Errorf("attempts %d, not before in %v", e.Attempts, time.Until(e.NotBefore))
	}
}

func TestPermanentAndExpiredDropped(t *testing.T) {
	store := newMemOutbox(entry("bad", verifier.OutboxAlert, 0), entry("old", verifier.OutboxAlert, 48*time.Hour))
	d := New(store, verifier.OutboxAlert, func(_ context.Context, e verifier.OutboxEntry) error {
		if e.ID == "bad" {
			return fmt.Errorf("undecodable: %w", ErrPermanent)
		}
		return errors.New("sink down")
	}, Config{}, quiet(), time.Now)
	run(t, d)
	waitFor(t, "both dropped", func() bool { return store.len() == 0 })
	if d.Stats().Dropped.Load() != 2 {
		t.Errorf("dropped = %d", d.Stats().Dropped.Load())
	}
}

// An entry whose handler is slow is not handed to a second worker by the
// next poll.
func TestNoConcurrentRepeat(t *testing.T) {
	store := newMemOutbox(entry("slow", verifier.OutboxAlert, 0))
	var inFlight, maxInFlight, calls atomic.Int32
	release := make(chan struct{})
	d := New(store, verifier.OutboxAlert, func(context.Context, verifier.OutboxEntry) error {
		calls.Add(1)
		n := inFlight.Add(1)
		if n > maxInFlight.Load() {
			maxInFlight.Store(n)
		}
		<-release
		inFlight.Add(-1)
		return nil
	}, Config{Poll: time.Millisecond}, quiet(), time.Now)
	run(t, d)
	waitFor(t, "handler running", func() bool { return calls.Load() == 1 })
	time.Sleep(30 * time.Millisecond) // many polls happen meanwhile
	close(release)
	waitFor(t, "done", func() bool { return store.len() == 0 })
	if calls.Load() != 1 || maxInFlight.Load() != 1 {
		t.Errorf("calls %d, max in flight %d", calls.Load(), maxInFlight.Load())
	}
}

func TestWakeIsPrompt(t *testing.T) {
	store := newMemOutbox()
	handled := make(chan time.Time, 1)
	d := New(store, verifier.OutboxAlert, func(context.Context, verifier.OutboxEntry) error {
		handled <- time.Now()
		return nil
	}, Config{Poll: time.Hour}, quiet(), time.Now)
	run(t, d)
	time.Sleep(20 * time.Millisecond) // the first round found nothing
	store.mu.Lock()
	store.entries["x"] = entry("x", verifier.OutboxAlert, 0)
	store.mu.Unlock()
	start := time.Now()
	d.Wake()
	select {
	case at := <-handled:
		if at.Sub(start) > time.Second {
			t.Errorf("handled after %v", at.Sub(start))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wake did not trigger a round")
	}
}

func TestBackoff(t *testing.T) {
	min, max := 100*time.Millisecond, 10*time.Second
	tests := []struct {
		n      int
		lo, hi time.Duration
	}{
		{1, 75 * time.Millisecond, 100 * time.Millisecond},
		{2, 150 * time.Millisecond, 200 * time.Millisecond},
		{5, 1200 * time.Millisecond, 1600 * time.Millisecond},
		{50, 7500 * time.Millisecond, 10 * time.Second},
	}
	for _, tt := range tests {
		for i := 0; i < 100; i++ {
			if d := Backoff(tt.n, min, max); d < tt.lo || d > tt.hi {
				t.Fatalf("Backoff(%d) = %v, want %v..%v", tt.n, d, tt.lo, tt.hi)
			}
		}
	}
}

// With an OrderKey, a queue's entries are handled one at a time in outbox
// order, and a failing one holds back those behind it until it is retried
// and done; other queues go on meanwhile.
func TestOrderKeyKeepsEachQueueInOrder(t *testing.T) {
	store := newMemOutbox(
		entry("A-1-mismatch", verifier.OutboxAlert, 5*time.Second),
		entry("A-1-blocked", verifier.OutboxAlert, 4*time.Second),
		entry("B-1-mismatch", verifier.OutboxAlert, 3*time.Second),
		entry("A-2-resumed", verifier.OutboxAlert, 2*time.Second),
		entry("B-1-blocked", verifier.OutboxAlert, time.Second),
	)
	var mu sync.Mutex
	var got []string
	inA := 0
	failed := false
	d := New(store, verifier.OutboxAlert, func(_ context.Context, e verifier.OutboxEntry) error {
		q, _, _ := strings.Cut(e.ID, "-")
		mu.Lock()
		if q == "A" {
			inA++
			if inA > 1 {
				t.Errorf("two entries of queue A at once")
			}
		}
		fail := e.ID == "A-1-blocked" && !failed
		failed = failed || fail
		if !fail {
			got = append(got, e.ID)
		}
		mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		if q == "A" {
			inA--
		}
		mu.Unlock()
		if fail {
			return errors.New("broker unavailable")
		}
		return nil
	}, Config{Workers: 4, MinBackoff: 30 * time.Millisecond, MaxBackoff: 30 * time.Millisecond, Poll: 5 * time.Millisecond,
		OrderKey: func(e verifier.OutboxEntry) string { q, _, _ := strings.Cut(e.ID, "-"); return q }}, quiet(), time.Now)
	run(t, d)
	waitFor(t, "all handled", func() bool { return store.len() == 0 })
	mu.Lock()
	defer mu.Unlock()
	var a, b []string
	for _, id := range got {
		if strings.HasPrefix(id, "A") {
			a = append(a, id)
		} else {
			b = append(b, id)
		}
	}
	if fmt.Sprint(a) != "[A-1-mismatch A-1-blocked A-2-resumed]" || fmt.Sprint(b) != "[B-1-mismatch B-1-blocked]" {
		t.Errorf("queue A %v, queue B %v: each must keep its order, the retried entry included", a, b)
	}
	if d.Stats().Retried.Load() != 1 {
		t.Errorf("retried %d, want 1", d.Stats().Retried.Load())
	}
}

// slowScan is an outbox whose reads take a while after they looked: what
// they return may have been completed meanwhile.
type slowScan struct{ *memOutbox }

func (s slowScan) PendingOutbox(ctx context.Context, kind verifier.OutboxKind, now time.Time, limit int) ([]verifier.OutboxEntry, error) {
	out, err := s.memOutbox.PendingOutbox(ctx, kind, now, limit)
	time.Sleep(40 * time.Millisecond)
	return out, err
}

// An entry a read returned but a worker completed while the read was
// under way is not handled again.
func TestStaleReadNotRepeated(t *testing.T) {
	store := newMemOutbox(entry("x", verifier.OutboxAlert, time.Second))
	var calls atomic.Int32
	d := New(slowScan{store}, verifier.OutboxAlert, func(context.Context, verifier.OutboxEntry) error {
		calls.Add(1)
		time.Sleep(10 * time.Millisecond)
		return nil
	}, Config{Workers: 2, Poll: time.Millisecond}, quiet(), time.Now)
	run(t, d)
	waitFor(t, "entry done", func() bool { return store.len() == 0 })
	time.Sleep(150 * time.Millisecond) // the reads under way finish
	if n := calls.Load(); n != 1 {
		t.Errorf("handled %d times, want once", n)
	}
}

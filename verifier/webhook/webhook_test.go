package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/dispatch"
	"github.com/cardbind/cardbind/verifier/ingest"
)

// data decodes an event's data.
func data(t testing.TB, r received) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.event.Data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestSinkDownThenUp: every event queued while the sink answers 503 is
// delivered once it is back, once each and in order, and the outbox is
// empty afterwards.
func TestSinkDownThenUp(t *testing.T) {
	f := newFixture(t, Config{AllowPrivateSinks: true})
	f.sink.setStatus(http.StatusServiceUnavailable)
	s := f.subscribe(nil)
	var imeis []string
	for i := range 5 {
		m := imei(t, "8612345600000"+string(rune('0'+i)))
		imeis = append(imeis, m)
		f.alert(i+1, protocol.AlertMismatch, m)
		f.alert(i+1, protocol.AlertBlocked, "") // not an event
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.sink.count() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if f.sink.count() < 3 {
		t.Fatalf("sink was tried %d times while down, want retries", f.sink.count())
	}
	if got := f.n.Stats().Delivered.Load(); got != 0 {
		t.Fatalf("delivered %d while the sink was down", got)
	}
	f.sink.setStatus(http.StatusNoContent)
	got := f.sink.waitEvents(6, 10*time.Second)
	if got[0].event.Type != TypeStarted || data(t, got[0])["initiationReason"] != "SUBSCRIPTION_CREATED" {
		t.Errorf("first event %s, want subscription-started", got[0].raw)
	}
	ids := map[string]bool{}
	for i, r := range got {
		f.check(r)
		if ids[r.event.ID] {
			t.Errorf("event id %s delivered twice", r.event.ID)
		}
		ids[r.event.ID] = true
		if i == 0 {
			continue
		}
		d := data(t, r)
		if r.event.Type != TypeIMEIChange || d["imei"] != imeis[i-1] || d["subscriptionId"] != s.ID {
			t.Errorf("event %d: %s, want imei-change %s", i, r.raw, imeis[i-1])
		}
		if dev, _ := json.Marshal(d["device"]); string(dev) != `{"phoneNumber":"+8613900000001"}` {
			t.Errorf("event %d device %s", i, dev)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(f.sink.events()); n != 6 {
		t.Errorf("sink has %d events after settling, want 6", n)
	}
	if n := f.pending(); n != 0 {
		t.Errorf("%d webhook entries left in the outbox", n)
	}
}

// TestHandleAlertOnce: an alert handled again (the alert dispatcher's
// retry) is neither sent nor counted twice; alerts of other types,
// tenants and cards, and subscriptions of other types, get nothing.
func TestHandleAlertOnce(t *testing.T) {
	f := newFixture(t, Config{AllowPrivateSinks: true})
	s := f.subscribe(func(s *Subscription) { s.MaxEvents = 3 })
	f.subscribe(func(s *Subscription) { s.Type = TypeAreaChange })
	m := imei(t, "86123456000001")
	e := f.alert(1, protocol.AlertMismatch, m)
	if err := f.n.HandleAlert(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	f.alert(2, protocol.AlertResumed, "")
	f.alert(3, protocol.AlertLearned, m)
	other := protocol.Alert{Version: protocol.Version, ID: "x-1-mismatch", Type: protocol.AlertMismatch, Tenant: "other",
		ICCID: testICCID, ObservedIMEI: protocol.IMEI(m), Source: protocol.SourceAgent, Decision: protocol.DecisionMismatch,
		CardState: protocol.CardBlocked, Time: time.Now()}
	payload, _ := protocol.EncodeAlert(&other)
	if err := f.n.HandleAlert(context.Background(), verifier.OutboxEntry{ID: other.ID, Kind: verifier.OutboxAlert, Payload: payload}); err != nil {
		t.Fatal(err)
	}
	got := f.sink.waitEvents(3, 5*time.Second) // two started, one imei-change
	time.Sleep(100 * time.Millisecond)
	if n := len(f.sink.events()); n != 3 {
		t.Fatalf("sink got %d events, want 3: %v", n, types(f.sink.events()))
	}
	changes := 0
	for _, r := range got {
		f.check(r)
		if r.event.Type == TypeIMEIChange {
			changes++
		}
	}
	if changes != 1 {
		t.Errorf("%d imei-change events, want 1", changes)
	}
	stored, err := f.n.Get(context.Background(), testOwner, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Events != 1 {
		t.Errorf("events counted %d, want 1", stored.Events)
	}
	if err := f.n.HandleAlert(context.Background(), verifier.OutboxEntry{ID: "bad", Payload: []byte("{")}); err == nil {
		t.Error("undecodable alert: no error")
	}
}

// TestEnding: each way a subscription ends sends the right
// subscription-ended event last, removes the subscription, and nothing is
// sent for it afterwards.
func TestEnding(t *testing.T) {
	tests := []struct {
		name       string
		mod        func(*Subscription, *clock)
		act        func(*fixture, *Subscription)
		wantEvents int // imei-change events before the end
		wantReason string
	}{
		{"max events", func(s *Subscription, _ *clock) { s.MaxEvents = 2 }, func(f *fixture, _ *Subscription) {
			for i := range 3 {
				f.alert(i+1, protocol.AlertMismatch, imei(f.t, "8612345600000"+string(rune('1'+i))))
			}
		}, 2, ReasonMaxEvents},
		{"max events reached by the initial event", func(s *Subscription, _ *clock) { s.MaxEvents = 1; s.InitialEvent = true }, nil, 1, ReasonMaxEvents},
		{"delete", nil, func(f *fixture, s *Subscription) {
			f.alert(1, protocol.AlertMismatch, imei(f.t, "86123456000011"))
			f.sink.waitEvents(2, 5*time.Second)
			if err := f.n.Delete(context.Background(), "someone else", s.ID); !errors.Is(err, verifier.ErrNotFound) {
				f.t.Errorf("delete by another owner: %v, want ErrNotFound", err)
			}
			if err := f.n.Delete(context.Background(), testOwner, s.ID); err != nil {
				f.t.Fatal(err)
			}
			if err := f.n.Delete(context.Background(), testOwner, s.ID); !errors.Is(err, verifier.ErrNotFound) {
				f.t.Errorf("second delete: %v, want ErrNotFound", err)
			}
		}, 1, ReasonDeleted},
		{"expiry", func(s *Subscription, c *clock) { s.ExpiresAt = c.Now().Add(time.Hour) }, func(f *fixture, _ *Subscription) {
			f.alert(1, protocol.AlertMismatch, imei(f.t, "86123456000011"))
			f.sink.waitEvents(2, 5*time.Second)
			f.clk.Add(time.Hour)
		}, 1, ReasonExpired},
		{"access token expiry", func(s *Subscription, c *clock) { s.TokenExpires = c.Now().Add(2 * time.Hour) }, func(f *fixture, _ *Subscription) {
			f.sink.waitEvents(1, 5*time.Second)
			f.clk.Add(2*time.Hour - 20*time.Second) // within the 30s margin
		}, 0, ReasonTokenExpiry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Config{AllowPrivateSinks: true})
			if tt.name == "max events reached by the initial event" {
				m := protocol.IMEI(imei(t, "86123456000099"))
				card, err := f.store.Card(context.Background(), testICCID)
				if err != nil {
					t.Fatal(err)
				}
				card.Status = verifier.CardStatus{State: protocol.CardBlocked, Reason: protocol.DecisionMismatch, OffendingIMEI: m}
				if err := f.store.Commit(context.Background(), &verifier.Commit{Card: card}); err != nil {
					t.Fatal(err)
				}
			}
			s := f.subscribe(func(s *Subscription) {
				if tt.mod != nil {
					tt.mod(s, f.clk)
				}
			})
			if tt.act != nil {
				tt.act(f, s)
			}
			want := 2 + tt.wantEvents
			got := f.sink.waitEvents(want, 5*time.Second)
			f.alert(9, protocol.AlertMismatch, imei(t, "86123456000077"))
			time.Sleep(150 * time.Millisecond)
			if n := len(f.sink.events()); n != want {
				t.Errorf("sink got %d events after the end, want %d: %v", n, want, types(f.sink.events()))
			}
			for i, r := range got {
				f.check(r)
				wantType := TypeIMEIChange
				switch i {
				case 0:
					wantType = TypeStarted
				case want - 1:
					wantType = TypeEnded
				}
				if r.event.Type != wantType {
					t.Errorf("event %d is %s, want %s", i, r.event.Type, wantType)
				}
			}
			end := data(t, got[want-1])
			if end["terminationReason"] != tt.wantReason || end["subscriptionId"] != s.ID {
				t.Errorf("ended event %s, want reason %s", got[want-1].raw, tt.wantReason)
			}
			if _, err := f.n.Get(context.Background(), testOwner, s.ID); !errors.Is(err, verifier.ErrNotFound) {
				t.Errorf("Get after the end: %v, want ErrNotFound", err)
			}
			if l, err := f.n.List(context.Background(), testOwner); err != nil || len(l) != 0 {
				t.Errorf("List after the end: %v, %v", l, err)
			}
			if n := f.pending(); n != 0 {
				t.Errorf("%d entries left in the outbox", n)
			}
		})
	}
}

// TestGone: a sink answering 410 ends the subscription: the events behind
// the refused one are dropped and nothing more is tried.
func TestGone(t *testing.T) {
	f := newFixture(t, Config{AllowPrivateSinks: true})
	f.sink.setStatus(http.StatusGone)
	s := f.subscribe(nil)
	f.alert(1, protocol.AlertMismatch, imei(t, "86123456000011"))
	f.alert(2, protocol.AlertMismatch, imei(t, "86123456000022"))
	deadline := time.Now().Add(5 * time.Second)
	for f.n.Stats().Gone.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if f.n.Stats().Gone.Load() != 1 {
		t.Fatal("the subscription did not end on 410")
	}
	if _, err := f.n.Get(context.Background(), testOwner, s.ID); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("Get after 410: %v, want ErrNotFound", err)
	}
	tries := f.sink.count()
	f.alert(3, protocol.AlertMismatch, imei(t, "86123456000033"))
	time.Sleep(150 * time.Millisecond)
	if f.sink.count() != tries {
		t.Errorf("sink tried %d more times after 410", f.sink.count()-tries)
	}
	if tries != 1 {
		t.Errorf("sink tried %d times, want 1 (the 410)", tries)
	}
	if n := f.pending(); n != 0 {
		t.Errorf("%d entries left in the outbox", n)
	}
}

// TestGiveUp: an event the sink refuses for longer than MaxAge is dropped
// and the next one is delivered.
func TestGiveUp(t *testing.T) {
	f := newFixture(t, Config{AllowPrivateSinks: true, MaxAge: time.Minute})
	f.sink.setStatus(http.StatusInternalServerError)
	f.subscribe(nil)
	for f.sink.count() < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	f.clk.Add(2 * time.Minute)
	deadline := time.Now().Add(5 * time.Second)
	for f.n.Stats().Dropped.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	f.sink.setStatus(http.StatusNoContent)
	f.alert(1, protocol.AlertMismatch, imei(t, "86123456000011"))
	got := f.sink.waitEvents(1, 5*time.Second)
	if got[0].event.Type != TypeIMEIChange {
		t.Errorf("delivered %s, want the imei-change (the started event given up)", got[0].event.Type)
	}
	if f.n.Stats().Dropped.Load() != 1 {
		t.Errorf("dropped %d, want 1", f.n.Stats().Dropped.Load())
	}
}

// TestCheckSink covers the sink rules and the SSRF guard.
func TestCheckSink(t *testing.T) {
	tests := []struct {
		sink         string
		allowPrivate bool
		ok           bool
	}{
		{"https://8.8.8.8/events", false, true},
		{"https://[2001:4860:4860::8888]/x", false, true},
		{"http://8.8.8.8/events", false, false},
		{"https://", false, false},
		{"https://user:pw@8.8.8.8/", false, false},
		{"https:8.8.8.8", false, false},
		{"https://127.0.0.1:8443/", false, false},
		{"https://127.0.0.1:8443/", true, true},
		{"https://[::1]/", false, false},
		{"https://10.1.2.3/", false, false},
		{"https://172.16.0.1/", false, false},
		{"https://192.168.1.1/", false, false},
		{"https://169.254.169.254/latest/meta-data", false, false},
		{"https://169.254.169.254/latest/meta-data", true, true},
		{"https://100.64.0.1/", false, false},
		{"https://[fe80::1]/", false, false},
		{"https://[fc00::1]/", false, false},
		{"https://[::ffff:127.0.0.1]/", false, false},
		{"https://0.0.0.0/", true, false},
		{"https://224.0.0.1/", true, false},
		{"https://localhost/", false, false},
		{"https://localhost/", true, true},
		{"https://no-such-host.invalid/", true, false},
	}
	for _, tt := range tests {
		n, err := New(nil, Config{AllowPrivateSinks: tt.allowPrivate}, nil, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		err = n.CheckSink(context.Background(), tt.sink)
		if (err == nil) != tt.ok || err != nil && !errors.Is(err, ErrSink) {
			t.Errorf("CheckSink(%q, allowPrivate %v) = %v, want ok %v", tt.sink, tt.allowPrivate, err, tt.ok)
		}
	}
}

// TestDialGuard: a sink accepted earlier that now points at a refused
// address (DNS rebinding) is refused at connect time.
func TestDialGuard(t *testing.T) {
	f := newFixture(t, Config{}) // the loopback sink is refused at connect time
	f.subscribe(nil)
	deadline := time.Now().Add(3 * time.Second)
	for f.n.Stats().Retried.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if f.n.Stats().Retried.Load() == 0 || f.sink.count() != 0 {
		t.Errorf("retried %d, sink requests %d: want the dial refused", f.n.Stats().Retried.Load(), f.sink.count())
	}
}

// TestListOwners: List returns the owner's subscriptions only.
func TestListOwners(t *testing.T) {
	f := newFixture(t, Config{AllowPrivateSinks: true})
	a := f.subscribe(nil)
	b := f.subscribe(nil)
	f.subscribe(func(s *Subscription) { s.Owner = "https://verifier.test cb-2" })
	l, err := f.n.List(context.Background(), testOwner)
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 2 || !(l[0].ID == a.ID && l[1].ID == b.ID || l[0].ID == b.ID && l[1].ID == a.ID) {
		t.Errorf("List = %v, want %s and %s", l, a.ID, b.ID)
	}
}

// failingStore is the real store with writes of one record namespace
// failing while fail is set: a crash between the steps of a fan-out or
// an end, as the next attempt sees it.
type failingStore struct {
	Store
	mu   sync.Mutex
	fail string // namespace whose PutRecord and DeleteRecord fail
}

var errCrash = errors.New("simulated crash")

func (s *failingStore) set(ns string) { s.mu.Lock(); s.fail = ns; s.mu.Unlock() }
func (s *failingStore) failing(ns string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fail == ns
}

func (s *failingStore) PutRecord(ctx context.Context, ns, key string, v []byte) error {
	if s.failing(ns) {
		return errCrash
	}
	return s.Store.PutRecord(ctx, ns, key, v)
}

func (s *failingStore) DeleteRecord(ctx context.Context, ns, key string) error {
	if s.failing(ns) {
		return errCrash
	}
	return s.Store.DeleteRecord(ctx, ns, key)
}

// TestCrashBetweenSteps: when the step after queueing an event fails
// (counting it, or removing an ended subscription), doing it all again
// queues the same event id, so the sink gets each event once and the
// count is right.
func TestCrashBetweenSteps(t *testing.T) {
	var fs *failingStore
	f := newFixture(t, Config{AllowPrivateSinks: true}, func(s Store) Store { fs = &failingStore{Store: s}; return fs })
	f.sink.setStatus(http.StatusServiceUnavailable) // keep the entries queued
	s := f.subscribe(func(s *Subscription) { s.MaxEvents = 2 })

	fs.set(nsSub) // counting the event fails
	a := protocol.Alert{Version: protocol.Version, ID: string(testICCID) + "-1-mismatch", Type: protocol.AlertMismatch,
		Tenant: testTenant, ICCID: testICCID, ObservedIMEI: protocol.IMEI(imei(t, "86123456000011")), Source: protocol.SourceAgent,
		Decision: protocol.DecisionMismatch, CardState: protocol.CardBlocked, Time: f.clk.Now()}
	payload, _ := protocol.EncodeAlert(&a)
	e := verifier.OutboxEntry{ID: a.ID, Kind: verifier.OutboxAlert, Created: a.Time, Payload: payload}
	if err := f.n.HandleAlert(context.Background(), e); !errors.Is(err, errCrash) {
		t.Fatalf("HandleAlert with the count failing: %v", err)
	}
	fs.set("")
	for range 2 { // the alert dispatcher retries; a later retry finds it counted
		if err := f.n.HandleAlert(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := f.n.Get(context.Background(), testOwner, s.ID); got == nil || got.Events != 1 {
		t.Fatalf("counted %v, want 1", got)
	}

	fs.set(nsSub) // removing the record after subscription-ended was queued fails
	if err := f.n.Delete(context.Background(), testOwner, s.ID); !errors.Is(err, errCrash) {
		t.Fatalf("Delete with the removal failing: %v", err)
	}
	fs.set("")
	if err := f.n.Delete(context.Background(), testOwner, s.ID); err != nil {
		t.Fatal(err)
	}
	f.sink.setStatus(http.StatusNoContent)
	got := f.sink.waitEvents(2, 10*time.Second) // started, ended: the queued imei-change was dropped by the delete
	time.Sleep(100 * time.Millisecond)
	if n := len(f.sink.events()); n != 2 {
		t.Fatalf("sink got %d events: %v", n, types(f.sink.events()))
	}
	if got[1].event.Type != TypeEnded || data(t, got[1])["terminationReason"] != ReasonDeleted {
		t.Errorf("last event %s", got[1].raw)
	}
}

// TestThroughIngest: a mismatch decided by the real ingest, committed
// with its alert entries, and drained by the alert dispatcher with
// HandleAlert in its handler, reaches the sink as exactly one imei-change.
func TestThroughIngest(t *testing.T) {
	f := newFixture(t, Config{AllowPrivateSinks: true})
	ctx := context.Background()
	bound, foreign := imei(t, "35209900176148"), imei(t, "86123456000011")
	card, err := f.store.Card(ctx, testICCID)
	if err != nil {
		t.Fatal(err)
	}
	card.Binding = &verifier.Binding{IMEIs: []protocol.IMEI{protocol.IMEI(bound)}, Mode: verifier.ModeBlock, AutoResume: true}
	card.Status = verifier.CardStatus{State: protocol.CardActive, LastIMEI: protocol.IMEI(bound)}
	if err := f.store.Commit(ctx, &verifier.Commit{Card: card}); err != nil {
		t.Fatal(err)
	}
	s := f.subscribe(nil)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	in := ingest.New(f.store, log, time.Now)
	alerts := dispatch.New(f.store, verifier.OutboxAlert, f.n.HandleAlert, dispatch.Config{Poll: 20 * time.Millisecond}, log, time.Now)
	dctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = alerts.Run(dctx) }()
	defer func() { cancel(); <-done }()

	obs := verifier.Observation{Kind: verifier.ObservedIn, ICCID: testICCID, IMEI: protocol.IMEI(foreign),
		Source: protocol.SourceRADIUS, Time: time.Now(), Ref: "acct-1"}
	out, err := in.Observe(ctx, obs, testTenant)
	if err != nil || out.Decision != protocol.DecisionMismatch {
		t.Fatalf("observe: %v %v", out.Decision, err)
	}
	got := f.sink.waitEvents(2, 5*time.Second)
	time.Sleep(150 * time.Millisecond)
	if n := len(f.sink.events()); n != 2 {
		t.Fatalf("sink got %d events: %v", n, types(f.sink.events()))
	}
	f.check(got[1])
	if d := data(t, got[1]); got[1].event.Type != TypeIMEIChange || d["imei"] != foreign || d["subscriptionId"] != s.ID {
		t.Errorf("event %s, want imei-change %s", got[1].raw, foreign)
	}
}

// TestSinkDownHoldsBackItsOwnOnly: a subscription whose sink is down,
// with a backlog, does not delay another subscription's events.
func TestSinkDownHoldsBackItsOwnOnly(t *testing.T) {
	f := newFixture(t, Config{AllowPrivateSinks: true})
	f.sink.setStatus(http.StatusServiceUnavailable)
	f.subscribe(nil)
	healthy := newSink(t) // httptest servers share one certificate: the CA file trusts it too
	b := f.subscribe(func(s *Subscription) { s.Sink = healthy.srv.URL + "/b" })
	const alerts = 150
	for i := range alerts {
		f.alert(i+1, protocol.AlertMismatch, imei(t, fmt.Sprintf("86%012d", i)))
	}
	got := healthy.waitEvents(1+alerts, 20*time.Second)
	for i, r := range got[1:] {
		if d := data(t, r); d["subscriptionId"] != b.ID || d["imei"] != imei(t, fmt.Sprintf("86%012d", i)) {
			t.Fatalf("event %d out of order: %s", i, r.raw)
		}
	}
	if n := len(f.sink.events()); n != 0 {
		t.Errorf("the down sink accepted %d events", n)
	}
	if n := f.pending(); n != 1+alerts {
		t.Errorf("%d events pending, want the down sink's %d", n, 1+alerts)
	}
}

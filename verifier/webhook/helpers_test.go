package webhook

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/store/pebble"
)

// clock is a settable clock that otherwise follows real time, so that
// backoff runs for real while tests jump over expiry times.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return time.Now().Add(c.offset) }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// sink is an HTTPS CloudEvents receiver on loopback: it records every
// request it accepts, and answers status (204 by default).
type sink struct {
	t   testing.TB
	srv *httptest.Server
	ca  string // PEM file of its certificate

	mu       sync.Mutex
	status   int
	received []received
	requests int
}

type received struct {
	auth, contentType, correlator string
	event                         Event
	raw                           []byte
}

func newSink(t testing.TB) *sink {
	s := &sink{t: t, status: http.StatusNoContent}
	s.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.requests++
		if s.status != http.StatusNoContent {
			w.WriteHeader(s.status)
			return
		}
		var ev Event
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Errorf("sink: body %s: %v", raw, err)
		}
		s.received = append(s.received, received{auth: r.Header.Get("Authorization"),
			contentType: r.Header.Get("Content-Type"), correlator: r.Header.Get("x-correlator"), event: ev, raw: raw})
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.srv.Close)
	s.ca = filepath.Join(t.TempDir(), "ca.pem")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
	if err := os.WriteFile(s.ca, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *sink) setStatus(code int) { s.mu.Lock(); s.status = code; s.mu.Unlock() }

func (s *sink) events() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.received...)
}

// delivered returns how many events the sink accepted.
func (s *sink) delivered() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.received) }

func (s *sink) count() (requests int) { s.mu.Lock(); defer s.mu.Unlock(); return s.requests }

// waitEvents waits until the sink holds n events.
func (s *sink) waitEvents(n int, timeout time.Duration) []received {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := s.events()
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) != n {
				s.t.Fatalf("sink received %d events, want %d: %v", len(got), n, types(got))
			}
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func types(rs []received) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.event.Type)
	}
	return out
}

// fixture is a notifier over a real Pebble store, running, with a sink.
type fixture struct {
	t     testing.TB
	store *pebble.Store
	clk   *clock
	n     *Notifier
	sink  *sink
	doc   *openapi3.T
}

const (
	testICCID  = protocol.ICCID("89860000000000000011")
	testTenant = "acme"
	testOwner  = "https://verifier.test cb-1"
	testToken  = "sink-token-123"
)

// buildFixture returns a fixture whose notifier does not run yet; wrap,
// if given, wraps the store it uses.
func buildFixture(t testing.TB, cfg Config, wrap ...func(Store) Store) *fixture {
	t.Helper()
	st, err := pebble.Open(t.TempDir(), pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	f := &fixture{t: t, store: st, clk: &clock{}, sink: newSink(t)}
	if _, _, err := st.UpsertInventory(context.Background(), []verifier.Card{{ICCID: testICCID, Tenant: testTenant, MSISDN: "+8613900000001"}}); err != nil {
		t.Fatal(err)
	}
	cfg.CAFile = f.sink.ca
	cfg.Source = "https://verifier.test/iot-sim-fraud-prevention-subscriptions/v0.1"
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 20*time.Millisecond, 100*time.Millisecond
	}
	cfg.Poll = 20 * time.Millisecond
	cfg.Sweep = 20 * time.Millisecond
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var use Store = st
	for _, w := range wrap {
		use = w(use)
	}
	if f.n, err = New(use, cfg, log, f.clk.Now); err != nil {
		t.Fatal(err)
	}
	f.doc = loadDoc(t)
	return f
}

// newFixture returns a fixture whose notifier runs until the test ends.
func newFixture(t testing.TB, cfg Config, wrap ...func(Store) Store) *fixture {
	t.Helper()
	f := buildFixture(t, cfg, wrap...)
	f.run()
	return f
}

// run starts the notifier's deliverer until the test ends.
func (f *fixture) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.n.Run(ctx) }()
	f.t.Cleanup(func() { cancel(); <-done })
}

var (
	docOnce sync.Once
	docVal  *openapi3.T
	docErr  error
)

func loadDoc(t testing.TB) *openapi3.T {
	docOnce.Do(func() {
		loader := openapi3.NewLoader()
		docVal, docErr = loader.LoadFromFile("../camara/openapi/iot-sim-fraud-prevention-subscriptions.yaml")
		if docErr == nil {
			docErr = docVal.Validate(loader.Context)
		}
	})
	if docErr != nil {
		t.Fatal(docErr)
	}
	return docVal
}

// check validates a received event against the API's schemas: the
// callback union and the schema of its type; and the delivery headers.
func (f *fixture) check(r received) {
	f.t.Helper()
	if r.contentType != "application/cloudevents+json" {
		f.t.Errorf("Content-Type = %q", r.contentType)
	}
	if r.auth != "Bearer "+testToken {
		f.t.Errorf("Authorization = %q", r.auth)
	}
	if r.correlator != r.event.ID {
		f.t.Errorf("x-correlator %q, event id %q", r.correlator, r.event.ID)
	}
	var v any
	if err := json.Unmarshal(r.raw, &v); err != nil {
		f.t.Fatal(err)
	}
	schema := map[string]string{TypeIMEIChange: "ImeiChangeEvent", TypeAreaChange: "AreaChangeEvent",
		TypeStarted: "EventSubscriptionStarted", TypeEnded: "EventSubscriptionEnded"}[r.event.Type]
	for _, name := range []string{"NotificationEvent", schema} {
		if err := f.doc.Components.Schemas[name].Value.VisitJSON(v); err != nil {
			f.t.Errorf("event %s does not match %s: %v", r.raw, name, err)
		}
	}
}

// subscribe creates a subscription to imei-change of the test card.
func (f *fixture) subscribe(mod func(*Subscription)) *Subscription {
	f.t.Helper()
	now := f.clk.Now()
	s := &Subscription{ID: NewID(), Tenant: testTenant, Owner: testOwner, ICCID: testICCID,
		Device: json.RawMessage(`{"phoneNumber":"+8613900000001"}`), Type: TypeIMEIChange, Protocol: "HTTP",
		Sink: f.sink.srv.URL + "/events", Token: testToken, TokenExpires: now.Add(24 * time.Hour), StartsAt: now}
	if mod != nil {
		mod(s)
	}
	if err := f.n.Create(context.Background(), s); err != nil {
		f.t.Fatal(err)
	}
	return s
}

// alert runs an alert outbox entry through HandleAlert, as the alert
// dispatcher does.
func (f *fixture) alert(seq int, typ protocol.AlertType, imei string) verifier.OutboxEntry {
	f.t.Helper()
	a := protocol.Alert{Version: protocol.Version, ID: fmt.Sprintf("%s-%d-%s", testICCID, seq, typ), Type: typ,
		Tenant: testTenant, ICCID: testICCID, ObservedIMEI: protocol.IMEI(imei), Source: protocol.SourceAgent,
		Decision: protocol.DecisionMismatch, CardState: protocol.CardBlocked, Time: f.clk.Now()}
	payload, err := protocol.EncodeAlert(&a)
	if err != nil {
		f.t.Fatal(err)
	}
	e := verifier.OutboxEntry{ID: a.ID, Kind: verifier.OutboxAlert, Created: a.Time, Payload: payload}
	if err := f.n.HandleAlert(context.Background(), e); err != nil {
		f.t.Fatal(err)
	}
	return e
}

// pending returns the webhook outbox entries left.
func (f *fixture) pending() int {
	f.t.Helper()
	n, err := f.n.Pending(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

// imei returns a valid IMEI: 14 digits and their Luhn check digit.
func imei(t testing.TB, body string) string {
	t.Helper()
	for d := '0'; d <= '9'; d++ {
		if m, err := protocol.ParseIMEI(body + string(d)); err == nil {
			return string(m)
		}
	}
	t.Fatalf("no check digit for %s", body)
	return ""
}

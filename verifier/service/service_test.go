package service_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/ingest"
	"github.com/cardbind/cardbind/verifier/service"
	"github.com/cardbind/cardbind/verifier/store/pebble"
)

const (
	cardA  = protocol.ICCID("89860318640220133897")
	imeiGW = protocol.IMEI("356938035643809")
	imeiPh = protocol.IMEI("490154203237518")
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	svc   *service.Service
	in    *ingest.Ingest
	store *pebble.Store
	clock *clock
}

// newFixture runs the service over a real Pebble store and the real
// ingest, with tenants acme and other and card A of acme in the inventory.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	store, err := pebble.Open(t.TempDir(), pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := &clock{t: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
	in := ingest.New(store, log, c.now)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	svc := service.New(store, in, service.Config{CommandKey: key, BrokerURL: func() string { return "tcp://127.0.0.1:1883" }}, log, c.now)
	ctx := context.Background()
	for _, id := range []string{"acme", "other"} {
		if _, err := svc.CreateTenant(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := store.UpsertInventory(ctx, []verifier.Card{{ICCID: cardA, Tenant: "acme", IMSI: "460031234567890", MSISDN: "+8613912345678"}}); err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: svc, in: in, store: store, clock: c}
}

// seen feeds an observation of card A in imei, as RADIUS would.
func (f *fixture) seen(t *testing.T, imei protocol.IMEI) {
	t.Helper()
	obs := verifier.Observation{Kind: verifier.ObservedIn, ICCID: cardA, IMEI: imei, Source: protocol.SourceRADIUS, Time: f.clock.now()}
	if _, err := f.in.Observe(context.Background(), obs, "acme"); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) state(t *testing.T) protocol.CardState {
	t.Helper()
	c, err := f.svc.Card(context.Background(), "acme", cardA)
	if err != nil {
		t.Fatal(err)
	}
	return c.Status.State
}

func TestAuthenticate(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	user, pass, err := f.svc.CreateSubscriber(ctx, "acme", "ops")
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := f.svc.CreateEnrollToken(ctx, "acme", time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	dev, err := f.svc.Enroll(ctx, &protocol.EnrollRequest{Version: 1, Token: token, PublicKey: pub, IMEI: imeiGW})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, user, pass string
		want             service.Principal
		ok               bool
	}{
		{"subscriber", user, pass, service.Principal{Tenant: "acme"}, true},
		{"subscriber, wrong password", user, pass + "x", service.Principal{}, false},
		{"device", dev.Username, dev.Password, service.Principal{DeviceID: dev.DeviceID, Tenant: "acme"}, true},
		{"device, wrong password", dev.Username, "nope", service.Principal{}, false},
		{"device, another's password", dev.Username, pass, service.Principal{}, false},
		{"unknown user", "gw-0000000000000000", dev.Password, service.Principal{}, false},
		{"empty password", dev.Username, "", service.Principal{}, false},
		{"empty user", "", pass, service.Principal{}, false},
		{"malformed user", "a/b#", pass, service.Principal{}, false},
	}
	for _, tt := range tests {
		got, err := f.svc.Authenticate(ctx, tt.user, tt.pass)
		switch {
		case tt.ok && (err != nil || got != tt.want):
			t.Errorf("%s: %+v, %v; want %+v", tt.name, got, err, tt.want)
		case !tt.ok && !errors.Is(err, verifier.ErrNotFound):
			t.Errorf("%s: %+v, %v; want ErrNotFound", tt.name, got, err)
		}
	}
}

func TestEnrolmentTokens(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	enrol := func(token string) error {
		_, err := f.svc.Enroll(ctx, &protocol.EnrollRequest{Version: 1, Token: token, PublicKey: pub, IMEI: imeiGW})
		return err
	}
	for _, ttl := range []time.Duration{0, -time.Second, 91 * 24 * time.Hour} {
		if _, _, err := f.svc.CreateEnrollToken(ctx, "acme", ttl, "test"); !errors.Is(err, service.ErrInvalid) {
			t.Errorf("ttl %v: %v, want ErrInvalid", ttl, err)
		}
	}
	if _, _, err := f.svc.CreateEnrollToken(ctx, "nobody", time.Hour, "test"); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("unknown tenant: %v", err)
	}

	once, _, _ := f.svc.CreateEnrollToken(ctx, "acme", time.Hour, "test")
	// A key that is no point, or one of small order, is refused and does
	// not spend the token.
	for name, bad := range map[string][]byte{
		"not on the curve": append([]byte{2}, make([]byte, 31)...),
		"small order":      append([]byte{1}, make([]byte, 31)...), // the neutral element
	} {
		_, err := f.svc.Enroll(ctx, &protocol.EnrollRequest{Version: 1, Token: once, PublicKey: bad, IMEI: imeiGW})
		if !errors.Is(err, service.ErrInvalid) || !strings.Contains(err.Error(), "public_key") {
			t.Errorf("key %s: %v, want ErrInvalid naming public_key", name, err)
		}
	}
	if err := enrol(once); err != nil {
		t.Fatal(err)
	}
	if err := enrol(once); !errors.Is(err, service.ErrTokenInvalid) {
		t.Errorf("token used twice: %v", err)
	}

	late, exp, _ := f.svc.CreateEnrollToken(ctx, "acme", time.Minute, "test")
	if !exp.Equal(f.clock.now().Add(time.Minute)) {
		t.Errorf("expires %v", exp)
	}
	f.clock.advance(time.Minute)
	if err := enrol(late); !errors.Is(err, service.ErrTokenInvalid) {
		t.Errorf("expired token: %v", err)
	}
	if err := enrol("cbe_made-up"); !errors.Is(err, service.ErrTokenInvalid) {
		t.Errorf("unknown token: %v", err)
	}
}

func TestBindWithoutIMEI(t *testing.T) {
	ctx := context.Background()
	t.Run("locks to the device the card is in now", func(t *testing.T) {
		f := newFixture(t)
		f.seen(t, imeiGW)
		c, err := f.svc.Bind(ctx, "acme", cardA, service.BindSpec{}, "test")
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Binding.IMEIs) != 1 || c.Binding.IMEIs[0] != imeiGW || c.Status.State != protocol.CardActive {
			t.Errorf("binding %+v, state %s", c.Binding, c.Status.State)
		}
	})
	t.Run("learns the first device seen", func(t *testing.T) {
		f := newFixture(t)
		c, err := f.svc.Bind(ctx, "acme", cardA, service.BindSpec{}, "test")
		if err != nil {
			t.Fatal(err)
		}
		if !c.Binding.Learning() || c.Status.State != protocol.CardLearning {
			t.Fatalf("binding %+v, state %s", c.Binding, c.Status.State)
		}
		f.seen(t, imeiGW)
		f.seen(t, imeiPh)
		if got := f.state(t); got != protocol.CardBlocked {
			t.Errorf("after learning %s and seeing %s: %s, want blocked", imeiGW, imeiPh, got)
		}
	})
}

func TestRebindEndsBindingBlockButNotManualBlock(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	if _, err := f.svc.Bind(ctx, "acme", cardA, service.BindSpec{IMEIs: []protocol.IMEI{imeiGW}}, "test"); err != nil {
		t.Fatal(err)
	}
	f.seen(t, imeiPh)
	if got := f.state(t); got != protocol.CardBlocked {
		t.Fatalf("seen in a foreign device: %s", got)
	}
	// The customer says the phone is fine after all.
	c, err := f.svc.Bind(ctx, "acme", cardA, service.BindSpec{IMEIs: []protocol.IMEI{imeiPh}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	if c.Status.State != protocol.CardActive {
		t.Errorf("rebound to the device it is in: %s", c.Status.State)
	}
	due, err := f.store.PendingOutbox(ctx, verifier.OutboxEnforce, f.clock.now(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(due); n == 0 || !strings.Contains(string(due[n-1].Payload), `"resume"`) {
		t.Errorf("no resume queued for the network: %+v", due)
	}

	if _, err := f.svc.Block(ctx, "acme", cardA, "operator"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Bind(ctx, "acme", cardA, service.BindSpec{IMEIs: []protocol.IMEI{imeiGW, imeiPh}}, "test"); err != nil {
		t.Fatal(err)
	}
	f.seen(t, imeiPh)
	if got := f.state(t); got != protocol.CardBlocked {
		t.Errorf("a manual block ended by a rebind or a match: %s", got)
	}
	if _, err := f.svc.Resume(ctx, "acme", cardA, "operator"); err != nil {
		t.Fatal(err)
	}
	if got := f.state(t); got != protocol.CardActive {
		t.Errorf("after the operator's resume: %s", got)
	}
}

func TestTenantsSeeOnlyTheirCards(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	calls := map[string]func() error{
		"card": func() error { _, err := f.svc.Card(ctx, "other", cardA); return err },
		"bind": func() error {
			_, err := f.svc.Bind(ctx, "other", cardA, service.BindSpec{IMEIs: []protocol.IMEI{imeiPh}}, "test")
			return err
		},
		"unbind":  func() error { _, err := f.svc.Unbind(ctx, "other", cardA, "test"); return err },
		"block":   func() error { _, err := f.svc.Block(ctx, "other", cardA, "test"); return err },
		"resume":  func() error { _, err := f.svc.Resume(ctx, "other", cardA, "test"); return err },
		"history": func() error { _, err := f.svc.History(ctx, "other", cardA, 0, 10); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, verifier.ErrNotFound) {
			t.Errorf("%s of another tenant's card: %v, want ErrNotFound", name, err)
		}
	}
	if c, err := f.svc.Card(ctx, "acme", cardA); err != nil || c.Binding != nil {
		t.Errorf("the owner's card changed: %+v, %v", c, err)
	}
	if _, err := f.svc.Unbind(ctx, "acme", cardA, "test"); !errors.Is(err, service.ErrNotBound) {
		t.Errorf("unbind of an unbound card: %v", err)
	}
}

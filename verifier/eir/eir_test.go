package eir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/ingest"
	"github.com/cardbind/cardbind/verifier/store/pebble"
)

// The production implementations satisfy the consumer-side interfaces.
var (
	_ Cards    = verifier.Store(nil)
	_ Observer = (*ingest.Ingest)(nil)
)

const (
	own     = protocol.IMEI("356938035643809")
	foreign = protocol.IMEI("490154203237518")
)

type fixture struct {
	t     testing.TB
	store *pebble.Store
	srv   *httptest.Server
	h     *Handler
}

// newFixture serves the handler over a Pebble store in a temporary
// directory and the real ingest and engine, on loopback.
func newFixture(t testing.TB, opts Options, cards func(Cards) Cards) *fixture {
	t.Helper()
	st, err := pebble.Open(t.TempDir(), pebble.Options{CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	in := ingest.New(st, slog.New(slog.DiscardHandler), time.Now)
	var c Cards = st
	if cards != nil {
		c = cards(st)
	}
	h := New(c, in, opts, nil)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &fixture{t: t, store: st, srv: srv, h: h}
}

// card creates a card numbered i of tenant t1 with a binding (nil: none).
func (f *fixture) card(i int, b *verifier.Binding) *verifier.Card {
	f.t.Helper()
	ctx := context.Background()
	c := verifier.Card{ICCID: protocol.ICCID(fmt.Sprintf("8986031864022013%03d7", i)), Tenant: "t1",
		IMSI: protocol.IMSI(fmt.Sprintf("4600312345%03d90", i)), MSISDN: protocol.MSISDN(fmt.Sprintf("+8613912%05d", i))}
	if _, _, err := f.store.UpsertInventory(ctx, []verifier.Card{c}); err != nil {
		f.t.Fatal(err)
	}
	got, err := f.store.Card(ctx, c.ICCID)
	if err != nil {
		f.t.Fatal(err)
	}
	if b != nil {
		got.Binding = b
		state := protocol.CardActive
		if b.Learning() {
			state = protocol.CardLearning
		}
		got.Status.State = state
		if err := f.store.Commit(ctx, &verifier.Commit{Card: got}); err != nil {
			f.t.Fatal(err)
		}
		if got, err = f.store.Card(ctx, c.ICCID); err != nil {
			f.t.Fatal(err)
		}
	}
	return got
}

// get asks for the status and returns the HTTP status and the body.
func (f *fixture) get(query string) (int, string, http.Header) {
	f.t.Helper()
	resp, err := f.srv.Client().Get(f.srv.URL + Path + "?" + query)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), resp.Header
}

func pei(m protocol.IMEI) string   { return "imeisv-" + string(m[:14]) + "03" }
func supi(c *verifier.Card) string { return "imsi-" + string(c.IMSI) }
func gpsi(c *verifier.Card) string { return "msisdn-" + c.MSISDN.Digits() }
func q(pairs ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(pairs); i += 2 {
		v.Add(pairs[i], pairs[i+1])
	}
	return v.Encode()
}

func TestEquipmentStatus(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	block := &verifier.Binding{IMEIs: []protocol.IMEI{own}, Mode: verifier.ModeBlock, AutoResume: true}
	alert := &verifier.Binding{IMEIs: []protocol.IMEI{own}, Mode: verifier.ModeAlert}
	grace := &verifier.Binding{IMEIs: []protocol.IMEI{own}, Mode: verifier.ModeBlock, Grace: time.Hour}
	learn := &verifier.Binding{Mode: verifier.ModeBlock}

	blocked := f.card(1, block)
	unbound := f.card(2, nil)
	alerted := f.card(3, alert)
	graced := f.card(4, grace)
	learning := f.card(5, learn)

	tests := []struct {
		name      string
		card      *verifier.Card
		query     string
		want      string
		wantState protocol.CardState
	}{
		{"bound card in its device", blocked, q("pei", pei(own), "supi", supi(blocked)), Whitelisted, protocol.CardActive},
		{"bound card in a foreign device is blocked", blocked, q("pei", pei(foreign), "supi", supi(blocked)), Blacklisted, protocol.CardBlocked},
		{"blocked card, foreign device again", blocked, q("pei", "imei-"+string(foreign), "supi", supi(blocked)), Blacklisted, protocol.CardBlocked},
		{"blocked card back in its device resumes", blocked, q("pei", pei(own), "gpsi", gpsi(blocked)), Whitelisted, protocol.CardActive},
		{"unbound card anywhere", unbound, q("pei", pei(foreign), "supi", supi(unbound)), Whitelisted, protocol.CardUnbound},
		{"alert-only mismatch", alerted, q("pei", pei(foreign), "supi", supi(alerted)), Greylisted, protocol.CardAlerted},
		{"mismatch in grace", graced, q("pei", pei(foreign), "supi", supi(graced), "gpsi", gpsi(graced)), Greylisted, protocol.CardGrace},
		{"learning card learns and is greylisted", learning, q("pei", pei(foreign), "supi", supi(learning)), Greylisted, protocol.CardActive},
		{"learned card in the learned device", learning, q("pei", pei(foreign), "supi", supi(learning)), Whitelisted, protocol.CardActive},
		{"learned card elsewhere", learning, q("pei", pei(own), "supi", supi(learning)), Blacklisted, protocol.CardBlocked},
		{"unknown supi, known gpsi", alerted, q("pei", pei(own), "supi", "imsi-460039999999999", "gpsi", gpsi(alerted)), Whitelisted, protocol.CardActive},
	}
	for _, tt := range tests {
		code, body, hdr := f.get(tt.query)
		if code != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s %s", tt.name, code, hdr.Get("Content-Type"), body)
			continue
		}
		var got StatusResponse
		if err := json.Unmarshal([]byte(body), &got); err != nil || got.Status != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, body, tt.want)
		}
		c, err := f.store.Card(context.Background(), tt.card.ICCID)
		if err != nil {
			t.Fatal(err)
		}
		if c.Status.State != tt.wantState || c.Status.LastSource != protocol.SourceEIR {
			t.Errorf("%s: card state %s from %s, want %s from eir", tt.name, c.Status.State, c.Status.LastSource, tt.wantState)
		}
	}

	// The block and the resume went to the outbox for enforcement, with
	// the eir as the source in history.
	pending, err := f.store.PendingOutbox(context.Background(), verifier.OutboxEnforce, time.Now().Add(time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range pending {
		var task verifier.EnforceTask
		if err := json.Unmarshal(e.Payload, &task); err != nil {
			t.Fatal(err)
		}
		if task.ICCID == blocked.ICCID {
			actions = append(actions, string(task.Action))
		}
	}
	if strings.Join(actions, ",") != "block,resume" {
		t.Errorf("enforcement of the blocked card: %v, want block,resume", actions)
	}
	h, err := f.store.History(context.Background(), blocked.ICCID, 0, 10)
	if err != nil || len(h) == 0 || h[0].Observed.Source != protocol.SourceEIR || h[0].Observed.Ref != "eir:"+pei(foreign) {
		t.Errorf("history: %+v %v", h, err)
	}
	s := f.h.Stats()
	if s.Whitelisted.Load() != 5 || s.Blacklisted.Load() != 3 || s.Greylisted.Load() != 3 {
		t.Errorf("stats: white %d black %d grey %d", s.Whitelisted.Load(), s.Blacklisted.Load(), s.Greylisted.Load())
	}
}

func TestProblems(t *testing.T) {
	f := newFixture(t, Options{}, nil)
	c := f.card(1, &verifier.Binding{IMEIs: []protocol.IMEI{own}, Mode: verifier.ModeBlock})
	tests := []struct {
		name   string
		query  string
		status int
		cause  string
		param  string
	}{
		{"no pei", q("supi", supi(c)), 400, "MANDATORY_IE_MISSING", "pei"},
		{"empty pei", q("pei", "", "supi", supi(c)), 400, "MANDATORY_IE_MISSING", "pei"},
		{"bad check digit", q("pei", "imei-356938035643808", "supi", supi(c)), 400, "MANDATORY_IE_INCORRECT", "pei"},
		{"mac pei", q("pei", "mac-00-11-22-33-44-55", "supi", supi(c)), 400, "MANDATORY_IE_INCORRECT", "pei"},
		{"two peis", q("pei", pei(own), "pei", pei(foreign), "supi", supi(c)), 400, "MANDATORY_IE_INCORRECT", "pei"},
		{"nai supi", q("pei", pei(own), "supi", "nai-x@example.org"), 400, "OPTIONAL_IE_INCORRECT", "supi"},
		{"short imsi", q("pei", pei(own), "supi", "imsi-4600312"), 400, "OPTIONAL_IE_INCORRECT", "supi"},
		{"bad gpsi", q("pei", pei(own), "gpsi", "msisdn-+86139"), 400, "OPTIONAL_IE_INCORRECT", "gpsi"},
		{"unknown card", q("pei", pei(own), "supi", "imsi-460039999999999"), 404, "ERROR_EQUIPMENT_UNKNOWN", ""},
		{"no card named", q("pei", pei(own)), 404, "ERROR_EQUIPMENT_UNKNOWN", ""},
	}
	for _, tt := range tests {
		code, body, hdr := f.get(tt.query)
		var p Problem
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			t.Errorf("%s: %s: %v", tt.name, body, err)
			continue
		}
		if code != tt.status || p.Status != tt.status || p.Cause != tt.cause || hdr.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: %d %s %s, want %d %s", tt.name, code, hdr.Get("Content-Type"), body, tt.status, tt.cause)
		}
		if tt.param != "" && (len(p.InvalidParams) != 1 || p.InvalidParams[0].Param != tt.param) {
			t.Errorf("%s: invalidParams %+v, want %s", tt.name, p.InvalidParams, tt.param)
		}
	}
	// None of them touched the card.
	got, err := f.store.Card(context.Background(), c.ICCID)
	if err != nil || got.Status.LastSource != "" {
		t.Errorf("card after bad requests: %+v %v", got.Status, err)
	}

	resp, err := f.srv.Client().Post(f.srv.URL+Path, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}
}

// Only the configured networks may ask: a check can block a card.
func TestForbidden(t *testing.T) {
	f := newFixture(t, Options{Clients: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, nil)
	c := f.card(1, &verifier.Binding{IMEIs: []protocol.IMEI{own}, Mode: verifier.ModeBlock})
	code, body, _ := f.get(q("pei", pei(foreign), "supi", supi(c)))
	if code != http.StatusForbidden {
		t.Errorf("from loopback with clients 10/8: %d %s", code, body)
	}
	got, err := f.store.Card(context.Background(), c.ICCID)
	if err != nil || got.Status.State != protocol.CardActive {
		t.Errorf("card after a forbidden check: %+v %v", got.Status, err)
	}
	if f.h.Stats().Forbidden.Load() != 1 {
		t.Errorf("Forbidden = %d", f.h.Stats().Forbidden.Load())
	}
}

// failingCards fails every lookup, like a store that is down.
type failingCards struct{}

func (failingCards) FindCard(context.Context, verifier.IndexKind, string) (*verifier.Card, error) {
	return nil, errors.New("store down")
}

func TestStoreFailure(t *testing.T) {
	f := newFixture(t, Options{}, func(Cards) Cards { return failingCards{} })
	code, body, _ := f.get(q("pei", pei(own), "supi", "imsi-460031234567890"))
	if code != http.StatusInternalServerError || !strings.Contains(body, "SYSTEM_FAILURE") {
		t.Errorf("store down: %d %s", code, body)
	}
}

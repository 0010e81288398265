package camara

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/oauth"
	"github.com/cardbind/cardbind/verifier/service"
)

// spec is the OpenAPI document loaded once, with a router whose server is
// the host httptest requests use.
type spec struct {
	doc    *openapi3.T
	router routers.Router
}

var (
	specOnce sync.Once
	specVal  *spec
	specErr  error
)

func loadSpec(t testing.TB) *spec {
	t.Helper()
	specOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(OpenAPI())
		if err != nil {
			specErr = err
			return
		}
		if err = doc.Validate(loader.Context); err != nil {
			specErr = err
			return
		}
		doc.Servers = openapi3.Servers{{URL: "http://example.com" + BasePath}}
		r, err := gorillamux.NewRouter(doc)
		specVal, specErr = &spec{doc: doc, router: r}, err
	})
	if specErr != nil {
		t.Fatalf("openapi: %v", specErr)
	}
	return specVal
}

// validate checks a response against the OpenAPI document: through the
// operation when the request names one, else against the generic
// response component (405 and unknown paths). Every response must carry
// a valid x-correlator and, if it is an error, ErrorInfo.
func (s *spec) validate(t testing.TB, method, path string, status int, header http.Header, body []byte) {
	t.Helper()
	if ct := header.Get("Content-Type"); status != 200 || !strings.HasSuffix(path, ".yaml") {
		if ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
	}
	if c := header.Get("x-correlator"); c == "" || !correlatorPattern.MatchString(c) {
		t.Errorf("x-correlator = %q", c)
	}
	if strings.HasSuffix(path, ".yaml") && status == 200 {
		return // the document itself; checked by loadSpec
	}
	req := httptest.NewRequest(method, path, nil)
	route, params, err := s.router.FindRoute(req)
	if err != nil {
		name := map[int]string{405: "Generic405", 404: "Generic404"}[status]
		resp := s.doc.Components.Responses[name]
		if resp == nil {
			t.Fatalf("%s %s: no route (%v) and no generic response for %d", method, path, err, status)
		}
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("body %s: %v", body, err)
		}
		if err := resp.Value.Content.Get("application/json").Schema.Value.VisitJSON(v); err != nil {
			t.Errorf("%s %s %d: body %s does not match %s: %v", method, path, status, body, name, err)
		}
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
		Status: status, Header: header, Body: io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("%s %s %d: body %s does not validate: %v", method, path, status, body, err)
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

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

// env is a running API over the real service and OAuth server, with an
// in-memory store.
type env struct {
	t      testing.TB
	store  *memStore
	clk    *clock
	auth   *oauth.Server
	h      *Handler
	spec   *spec
	tokens map[string]string
	imeiA  string
}

// Test fixtures: tenant acme has cards A (seen in a device, location
// known) and B (never seen); tenant other has card C.
const (
	phoneA, phoneB, phoneC = "+8613900000001", "+8613900000002", "+8613900000003"
	naiA                   = "card-a@iot.example.com"
	ipv4A, ipv4PubA        = "10.20.0.1", "203.0.113.7"
	ipv6A                  = "2001:db8:1:2:aaaa:bbbb:cccc:dddd"
)

func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	e := &env{t: t, store: newMemStore(), clk: &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}, tokens: map[string]string{}}
	e.imeiA = imei(t, "35209900176148")
	dataDir := t.TempDir()
	ocfg := oauth.Config{Issuer: "https://verifier.test", DataDir: dataDir, Now: e.clk.Now, TokenTTL: 72 * time.Hour}
	var err error
	if e.auth, err = oauth.NewServer(e.store, ocfg, quietLog()); err != nil {
		t.Fatal(err)
	}
	_, _, _ = e.store.UpsertInventory(context.Background(), []verifier.Card{
		{ICCID: "89860000000000000011", Tenant: "acme", MSISDN: phoneA, NAI: naiA, IPv4: netip.MustParseAddr(ipv4A),
			IPv6: netip.MustParsePrefix("2001:db8:1:2::/64"),
			Status: verifier.CardStatus{State: protocol.CardUnbound, LastIMEI: protocol.IMEI(e.imeiA),
				LastLocation: &protocol.Location{Lat: 31.2304, Lon: 121.4737, AccuracyM: 800, Source: "cell"}}},
		{ICCID: "89860000000000000029", Tenant: "acme", MSISDN: phoneB},
		{ICCID: "89860000000000000037", Tenant: "other", MSISDN: phoneC, NAI: "card-c@iot.example.com"},
		{ICCID: "89860000000000000045", Tenant: "acme", MSISDN: "+8613900000004", IPv4: netip.MustParseAddr(ipv4PubA)},
	})
	svc := service.New(e.store, nil, service.Config{}, quietLog(), e.clk.Now)
	cfg.Now = e.clk.Now
	if e.h, err = New(e.store, svc, e.auth, cfg, quietLog()); err != nil {
		t.Fatal(err)
	}
	e.spec = loadSpec(t)
	ctx := context.Background()
	client := func(name string, spec oauth.ClientSpec) *oauth.Client {
		c, secret, err := e.auth.CreateClient(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[name] = e.clientToken(c.ID, secret)
		return c
	}
	all := []string{oauth.ScopeBind, oauth.ScopeUnbind, oauth.ScopeQuery}
	acme := client("acme", oauth.ClientSpec{Tenant: "acme", Scopes: all})
	client("other", oauth.ClientSpec{Tenant: "other", Scopes: all})
	client("queryOnly", oauth.ClientSpec{Tenant: "acme", Scopes: []string{oauth.ScopeQuery}})
	client("bindOnly", oauth.ClientSpec{Tenant: "acme", Scopes: []string{oauth.ScopeBind}})
	client("limited", oauth.ClientSpec{Tenant: "acme", Scopes: all, Rate: 2, Quota: 3})
	for name, phone := range map[string]string{"3leggedA": phoneA, "3leggedC": phoneC, "3leggedUnknown": "+8613999999999"} {
		tr, err := e.auth.MintDeviceToken(ctx, oauth.DeviceTokenSpec{Client: acme.ID, PhoneNumber: phone, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[name] = tr.AccessToken
	}
	// An expired token: the same key and issuer, minted two hours ago.
	past := &clock{t: e.clk.Now().Add(-2 * time.Hour)}
	ocfg.Now = past.Now
	old, err := oauth.NewServer(e.store, ocfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	tr, err := old.MintDeviceToken(ctx, oauth.DeviceTokenSpec{Client: acme.ID, PhoneNumber: phoneA, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e.tokens["expired"] = tr.AccessToken
	// A bad signature: token acme's header and claims with another token's signature.
	a, b := strings.Split(e.tokens["acme"], "."), strings.Split(e.tokens["other"], ".")
	e.tokens["badSignature"] = a[0] + "." + a[1] + "." + b[2]
	e.tokens["garbage"] = "not-a-jwt"
	return e
}

func (e *env) clientToken(id, secret string) string {
	req := httptest.NewRequest("POST", oauth.TokenPath, strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	rec := httptest.NewRecorder()
	e.auth.Handler().ServeHTTP(rec, req)
	var tr oauth.TokenResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &tr); err != nil || rec.Code != 200 {
		e.t.Fatalf("token: %d %s", rec.Code, rec.Body)
	}
	return tr.AccessToken
}

// call is one request.
type call struct {
	method string // default POST
	path   string // below BasePath
	token  string // env token name; "" for none
	header map[string]string
	body   string
}

// result is a validated response.
type result struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (e *env) do(c call) result {
	e.t.Helper()
	if c.method == "" {
		c.method = "POST"
	}
	path := BasePath + c.path
	req := httptest.NewRequest(c.method, path, strings.NewReader(c.body))
	if c.method == "POST" {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		tok, ok := e.tokens[c.token]
		if !ok {
			e.t.Fatalf("no token %q", c.token)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for k, v := range c.header {
		if v == "<none>" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	r := result{status: rec.Code, header: rec.Header(), raw: rec.Body.Bytes()}
	if !strings.HasSuffix(path, ".yaml") || rec.Code != 200 {
		if err := json.Unmarshal(r.raw, &r.body); err != nil {
			e.t.Fatalf("%s %s: body %q: %v", c.method, path, r.raw, err)
		}
	}
	e.spec.validate(e.t, c.method, path, r.status, r.header, r.raw)
	return r
}

package camara

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/cardbind/cardbind/verifier/oauth"
	"github.com/cardbind/cardbind/verifier/webhook"
)

var (
	subSpecOnce sync.Once
	subSpecVal  *spec
	subSpecErr  error
)

// loadSubSpec loads the subscriptions API's OpenAPI document.
func loadSubSpec(t testing.TB) *spec {
	t.Helper()
	subSpecOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(SubscriptionsOpenAPI())
		if err != nil {
			subSpecErr = err
			return
		}
		if err = doc.Validate(loader.Context); err != nil {
			subSpecErr = err
			return
		}
		doc.Servers = openapi3.Servers{{URL: "http://example.com" + SubscriptionsBasePath}}
		r, err := gorillamux.NewRouter(doc)
		subSpecVal, subSpecErr = &spec{doc: doc, router: r}, err
	})
	if subSpecErr != nil {
		t.Fatalf("openapi: %v", subSpecErr)
	}
	return subSpecVal
}

// subEnv is env plus the subscriptions API over a real webhook.Notifier
// (not running: these tests are about the API; package webhook tests
// delivery).
type subEnv struct {
	*env
	n  *webhook.Notifier
	sh *SubscriptionsHandler
	ss *spec
}

var subScopes = []string{oauth.ScopeSubscribe, oauth.ScopeSubRead, oauth.ScopeSubDelete}

func newSubEnv(t testing.TB, cfg Config) *subEnv {
	t.Helper()
	e := newEnv(t, cfg)
	n, err := webhook.New(e.store, webhook.Config{}, quietLog(), e.clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	s := &subEnv{env: e, n: n, sh: e.h.Subscriptions(n), ss: loadSubSpec(t)}
	ctx := context.Background()
	client := func(name string, spec oauth.ClientSpec) *oauth.Client {
		c, secret, err := e.auth.CreateClient(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[name] = e.clientToken(c.ID, secret)
		return c
	}
	sub := client("sub", oauth.ClientSpec{Tenant: "acme", Scopes: subScopes})
	client("sub2", oauth.ClientSpec{Tenant: "acme", Scopes: subScopes})
	client("subOther", oauth.ClientSpec{Tenant: "other", Scopes: subScopes})
	client("subReadOnly", oauth.ClientSpec{Tenant: "acme", Scopes: []string{oauth.ScopeSubRead}})
	client("subNoRead", oauth.ClientSpec{Tenant: "acme", Scopes: []string{oauth.ScopeSubscribe, oauth.ScopeSubDelete}})
	client("subRate", oauth.ClientSpec{Tenant: "acme", Scopes: subScopes, Rate: 0.001})
	client("subQuota", oauth.ClientSpec{Tenant: "acme", Scopes: subScopes, Quota: 1})
	for name, phone := range map[string]string{"sub3A": phoneA, "sub3B": phoneB, "sub3C": phoneC} {
		tr, err := e.auth.MintDeviceToken(ctx, oauth.DeviceTokenSpec{Client: sub.ID, PhoneNumber: phone, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[name] = tr.AccessToken
	}
	return s
}

// do sends one request to the subscriptions API (path below
// SubscriptionsBasePath) and validates the response against its
// OpenAPI document.
func (s *subEnv) do(c call) result {
	s.t.Helper()
	if c.method == "" {
		c.method = "POST"
	}
	path := SubscriptionsBasePath + c.path
	req := httptest.NewRequest(c.method, path, strings.NewReader(c.body))
	if c.method == "POST" {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		tok, ok := s.tokens[c.token]
		if !ok {
			s.t.Fatalf("no token %q", c.token)
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
	s.sh.ServeHTTP(rec, req)
	r := result{status: rec.Code, header: rec.Header(), raw: rec.Body.Bytes()}
	if r.status == http.StatusNoContent {
		s.validateNoContent(c.method, path, r)
		return r
	}
	if !strings.HasSuffix(path, ".yaml") || rec.Code != 200 {
		var v any
		if err := json.Unmarshal(r.raw, &v); err != nil {
			s.t.Fatalf("%s %s: body %q: %v", c.method, path, r.raw, err)
		}
		r.body, _ = v.(map[string]any)
	}
	s.ss.validate(s.t, c.method, path, r.status, r.header, r.raw)
	return r
}

func (s *subEnv) validateNoContent(method, path string, r result) {
	s.t.Helper()
	if len(r.raw) != 0 {
		s.t.Errorf("204 with a body: %s", r.raw)
	}
	if c := r.header.Get("x-correlator"); c == "" || !correlatorPattern.MatchString(c) {
		s.t.Errorf("x-correlator = %q", c)
	}
	req := httptest.NewRequest(method, path, nil)
	route, params, err := s.ss.router.FindRoute(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
		Status: r.status, Header: r.header, Body: io.NopCloser(bytes.NewReader(nil)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		s.t.Errorf("%s %s 204 does not validate: %v", method, path, err)
	}
}

const testSink = "https://8.8.8.8/cardbind-events"

// subBody returns a valid two-legged request for card A, changed by mod.
func subBody(t testing.TB, mod func(m map[string]any)) string {
	t.Helper()
	m := map[string]any{
		"protocol": "HTTP",
		"sink":     testSink,
		"types":    []string{webhook.TypeIMEIChange},
		"sinkCredential": map[string]any{"credentialType": "ACCESSTOKEN", "accessToken": "tok-123",
			"accessTokenExpiresUtc": "2026-05-02T12:00:00Z", "accessTokenType": "bearer"},
		"config": map[string]any{
			"subscriptionDetail":     map[string]any{"device": map[string]any{"phoneNumber": phoneA}},
			"subscriptionExpireTime": "2026-05-01T18:00:00Z",
			"subscriptionMaxEvents":  10,
			"initialEvent":           false,
		},
	}
	if mod != nil {
		mod(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func cfgOf(m map[string]any) map[string]any { return m["config"].(map[string]any) }
func credOf(m map[string]any) map[string]any {
	return m["sinkCredential"].(map[string]any)
}
func detailOf(m map[string]any) map[string]any {
	return cfgOf(m)["subscriptionDetail"].(map[string]any)
}

// TestSubscribe covers every status, code and message of POST
// /subscriptions.
func TestSubscribe(t *testing.T) {
	const (
		msgSink     = "The sink field must be an accessible client address in order to notify the other end when an event occurs"
		msgProtocol = "The value of Protocol can only be HTTP, MQTT3, MQTT5, AMQP, NATS, KAFKA"
		msgDenied   = "Client does not have sufficient permissions to perform this action."
	)
	dev := func(d any) func(map[string]any) {
		return func(m map[string]any) { detailOf(m)["device"] = d }
	}
	set := func(k string, v any) func(map[string]any) { return func(m map[string]any) { m[k] = v } }
	del := func(k string) func(map[string]any) { return func(m map[string]any) { delete(m, k) } }
	setCfg := func(k string, v any) func(map[string]any) { return func(m map[string]any) { cfgOf(m)[k] = v } }
	setCred := func(k string, v any) func(map[string]any) { return func(m map[string]any) { credOf(m)[k] = v } }
	tests := []struct {
		name       string
		token      string
		header     map[string]string
		body       string // raw; else subBody(mod)
		mod        func(map[string]any)
		wantStatus int
		wantCode   string
		wantMsg    string
	}{
		{name: "two-legged, phoneNumber", token: "sub", wantStatus: 201},
		{name: "two-legged, networkAccessIdentifier", token: "sub", mod: dev(map[string]any{"networkAccessIdentifier": naiA}), wantStatus: 201},
		{name: "two-legged, ipv4", token: "sub", mod: dev(map[string]any{"ipv4Address": map[string]any{"publicAddress": ipv4PubA, "privateAddress": ipv4A}}), wantStatus: 201},
		{name: "two-legged, ipv6", token: "sub", mod: dev(map[string]any{"ipv6Address": ipv6A}), wantStatus: 201},
		{name: "three-legged", token: "sub3A", mod: func(m map[string]any) { delete(detailOf(m), "device") }, wantStatus: 201},
		{name: "area-change", token: "sub", mod: set("types", []string{webhook.TypeAreaChange}), wantStatus: 201},
		{name: "no sink credential, no limits", token: "sub", mod: func(m map[string]any) {
			delete(m, "sinkCredential")
			m["config"] = map[string]any{"subscriptionDetail": detailOf(m)}
		}, wantStatus: 201},
		{name: "protocolSettings POST", token: "sub", mod: set("protocolSettings", map[string]any{"method": "POST"}), wantStatus: 201},

		{name: "no token", wantStatus: 401, wantCode: "UNAUTHENTICATED", wantMsg: msgInvalidToken},
		{name: "expired token", token: "expired", wantStatus: 401, wantCode: "UNAUTHENTICATED", wantMsg: msgInvalidToken},
		{name: "bad signature", token: "badSignature", wantStatus: 401, wantCode: "UNAUTHENTICATED", wantMsg: msgInvalidToken},
		{name: "not a JWT", token: "garbage", wantStatus: 401, wantCode: "UNAUTHENTICATED", wantMsg: msgInvalidToken},
		{name: "scope missing", token: "subReadOnly", wantStatus: 403, wantCode: "PERMISSION_DENIED", wantMsg: msgDenied},
		{name: "bind scopes only", token: "acme", wantStatus: 403, wantCode: "PERMISSION_DENIED", wantMsg: msgDenied},
		{name: "wrong content type", token: "sub", header: map[string]string{"Content-Type": "text/plain"}, wantStatus: 415,
			wantCode: "UNSUPPORTED_MEDIA_TYPE", wantMsg: "The server refuses to accept the request because the payload format is in an unsupported format."},
		{name: "x-correlator malformed", token: "sub", header: map[string]string{"x-correlator": "bad correlator!"}, wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "Invalid format: x-correlator"},

		{name: "malformed JSON", token: "sub", body: `{"types":`, wantStatus: 400, wantCode: "INVALID_ARGUMENT", wantMsg: "Request body is not a JSON object"},
		{name: "JSON array", token: "sub", body: `[]`, wantStatus: 400, wantCode: "INVALID_ARGUMENT", wantMsg: "Request body is not a JSON object"},
		{name: "body too large", token: "sub", mod: set("sink", "https://8.8.8.8/"+strings.Repeat("a", 20000)), wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "Request body too large or unreadable"},
		{name: "unknown property", token: "sub", mod: set("extra", 1), wantStatus: 400, wantCode: "INVALID_ARGUMENT", wantMsg: "Unknown property: extra"},
		{name: "types missing", token: "sub", mod: del("types"), wantStatus: 400, wantCode: "INVALID_ARGUMENT", wantMsg: "SubscriptionType must be specified"},
		{name: "two types", token: "sub", mod: set("types", []string{webhook.TypeIMEIChange, webhook.TypeAreaChange}), wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "Invalid value: types (exactly one event type)"},
		{name: "no type", token: "sub", mod: set("types", []string{}), wantStatus: 400, wantCode: "INVALID_ARGUMENT", wantMsg: "Invalid value: types (exactly one event type)"},
		{name: "types not an array", token: "sub", mod: set("types", webhook.TypeIMEIChange), wantStatus: 400, wantCode: "INVALID_ARGUMENT", wantMsg: "Invalid value: types (exactly one event type)"},
		{name: "unknown type", token: "sub", mod: set("types", []string{webhook.TypeStarted}), wantStatus: 400, wantCode: "INVALID_ARGUMENT",
			wantMsg: "The value of types can only be " + webhook.TypeIMEIChange + "," + webhook.TypeAreaChange},
		{name: "protocol missing", token: "sub", mod: del("protocol"), wantStatus: 400, wantCode: "INVALID_ARGUMENT", wantMsg: "Protocol must be specified"},
		{name: "protocol unknown", token: "sub", mod: set("protocol", "SMTP"), wantStatus: 400, wantCode: "INVALID_PROTOCOL", wantMsg: msgProtocol},
		{name: "protocol lower case", token: "sub", mod: set("protocol", "http"), wantStatus: 400, wantCode: "INVALID_PROTOCOL", wantMsg: msgProtocol},
		{name: "protocol MQTT3", token: "sub", mod: set("protocol", "MQTT3"), wantStatus: 400, wantCode: "INVALID_PROTOCOL", wantMsg: "Only HTTP is supported"},
		{name: "protocolSettings GET", token: "sub", mod: set("protocolSettings", map[string]any{"method": "GET"}), wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "Invalid value: protocolSettings.method"},
		{name: "protocolSettings headers", token: "sub", mod: set("protocolSettings", map[string]any{"headers": map[string]string{"a": "b"}}), wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "Unknown property: protocolSettings.headers"},
		{name: "sink missing", token: "sub", mod: del("sink"), wantStatus: 400, wantCode: "INVALID_ARGUMENT", wantMsg: "Sink must be specified"},
		{name: "sink http", token: "sub", mod: set("sink", "http://8.8.8.8/x"), wantStatus: 400, wantCode: "INVALID_SINK", wantMsg: msgSink},
		{name: "sink not a string", token: "sub", mod: set("sink", 42), wantStatus: 400, wantCode: "INVALID_SINK", wantMsg: msgSink},
		{name: "sink too long", token: "sub", mod: set("sink", "https://8.8.8.8/"+strings.Repeat("a", 2040)), wantStatus: 400, wantCode: "INVALID_SINK", wantMsg: msgSink},
		{name: "sink private address", token: "sub", mod: set("sink", "https://10.1.2.3/x"), wantStatus: 400, wantCode: "INVALID_SINK", wantMsg: msgSink},
		{name: "sink loopback", token: "sub", mod: set("sink", "https://127.0.0.1:8443/x"), wantStatus: 400, wantCode: "INVALID_SINK", wantMsg: msgSink},
		{name: "sink link-local", token: "sub", mod: set("sink", "https://169.254.169.254/"), wantStatus: 400, wantCode: "INVALID_SINK", wantMsg: msgSink},
		{name: "sink localhost", token: "sub", mod: set("sink", "https://localhost/x"), wantStatus: 400, wantCode: "INVALID_SINK", wantMsg: msgSink},
		{name: "credential PLAIN", token: "sub", mod: set("sinkCredential", map[string]any{"credentialType": "PLAIN", "identifier": "a", "secret": "b"}), wantStatus: 400,
			wantCode: "INVALID_CREDENTIAL", wantMsg: "Only Access token is supported"},
		{name: "credential PRIVATE_KEY_JWT", token: "sub", mod: set("sinkCredential", map[string]any{"credentialType": "PRIVATE_KEY_JWT"}), wantStatus: 400,
			wantCode: "INVALID_CREDENTIAL", wantMsg: "Only Access token is supported"},
		{name: "credential type unknown", token: "sub", mod: setCred("credentialType", "REFRESHTOKEN"), wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "The value of sinkCredential.credentialType can only be PLAIN, ACCESSTOKEN, PRIVATE_KEY_JWT"},
		{name: "credential not an object", token: "sub", mod: set("sinkCredential", "tok"), wantStatus: 400, wantCode: "INVALID_ARGUMENT", wantMsg: "Invalid format: sinkCredential"},
		{name: "access token missing", token: "sub", mod: func(m map[string]any) { delete(credOf(m), "accessToken") }, wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "accessToken, accessTokenExpiresUtc and accessTokenType must be specified"},
		{name: "access token expiry missing", token: "sub", mod: func(m map[string]any) { delete(credOf(m), "accessTokenExpiresUtc") }, wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "accessToken, accessTokenExpiresUtc and accessTokenType must be specified"},
		{name: "access token type mac", token: "sub", mod: setCred("accessTokenType", "mac"), wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "The value of sinkCredential.accessTokenType can only be bearer"},
		{name: "access token expiry malformed", token: "sub", mod: setCred("accessTokenExpiresUtc", "tomorrow"), wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "Invalid format: sinkCredential.accessTokenExpiresUtc"},
		{name: "access token expired", token: "sub", mod: setCred("accessTokenExpiresUtc", "2026-05-01T11:59:59Z"), wantStatus: 400,
			wantCode: "INVALID_CREDENTIAL", wantMsg: "The access token of sinkCredential has expired"},
		{name: "credential unknown property", token: "sub", mod: setCred("refreshToken", "r"), wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "Unknown property: sinkCredential.refreshToken"},
		{name: "config missing", token: "sub", mod: del("config"), wantStatus: 400, wantCode: "INVALID_ARGUMENT", wantMsg: "Config must be specified"},
		{name: "config not an object", token: "sub", mod: set("config", 1), wantStatus: 400, wantCode: "INVALID_ARGUMENT", wantMsg: "Invalid format: config"},
		{name: "config unknown property", token: "sub", mod: setCfg("foo", 1), wantStatus: 400, wantCode: "INVALID_ARGUMENT", wantMsg: "Unknown property: config.foo"},
		{name: "subscriptionDetail missing", token: "sub", mod: func(m map[string]any) { delete(cfgOf(m), "subscriptionDetail") }, wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "SubscriptionDetail must be specified"},
		{name: "subscriptionDetail unknown property", token: "sub", mod: func(m map[string]any) { detailOf(m)["iccid"] = "x" }, wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "Unknown property: config.subscriptionDetail.iccid"},
		{name: "expire time malformed", token: "sub", mod: setCfg("subscriptionExpireTime", "2026-05-01 18:00"), wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "Invalid format: subscriptionExpireTime"},
		{name: "expire time in the past", token: "sub", mod: setCfg("subscriptionExpireTime", "2026-05-01T11:00:00Z"), wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "Invalid value: subscriptionExpireTime is in the past"},
		{name: "max events 0", token: "sub", mod: setCfg("subscriptionMaxEvents", 0), wantStatus: 400,
			wantCode: "OUT_OF_RANGE", wantMsg: "Invalid value: subscriptionMaxEvents (1 to 1000000)"},
		{name: "max events too many", token: "sub", mod: setCfg("subscriptionMaxEvents", 1000001), wantStatus: 400,
			wantCode: "OUT_OF_RANGE", wantMsg: "Invalid value: subscriptionMaxEvents (1 to 1000000)"},
		{name: "max events a string", token: "sub", mod: setCfg("subscriptionMaxEvents", "5"), wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "Invalid format: subscriptionMaxEvents"},
		{name: "max events a fraction", token: "sub", mod: setCfg("subscriptionMaxEvents", 1.5), wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "Invalid format: subscriptionMaxEvents"},
		{name: "initialEvent not a boolean", token: "sub", mod: setCfg("initialEvent", "yes"), wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "Invalid format: initialEvent"},
		{name: "phoneNumber malformed", token: "sub", mod: dev(map[string]any{"phoneNumber": "8613900000001"}), wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "Invalid format: phoneNumber"},
		{name: "ipv4 without port or private", token: "sub", mod: dev(map[string]any{"ipv4Address": map[string]any{"publicAddress": ipv4PubA}}), wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "Invalid format: ipv4Address"},
		{name: "empty device", token: "sub", mod: dev(map[string]any{}), wantStatus: 400, wantCode: "INVALID_ARGUMENT", wantMsg: msgNoIdentifier},
		{name: "unknown device property", token: "sub", mod: dev(map[string]any{"imsi": "460001234567890"}), wantStatus: 400,
			wantCode: "INVALID_ARGUMENT", wantMsg: "Unknown property: device.imsi"},

		{name: "two-legged without device", token: "sub", mod: func(m map[string]any) { delete(detailOf(m), "device") }, wantStatus: 422,
			wantCode: "MISSING_IDENTIFIER", wantMsg: "The device cannot be identified."},
		{name: "three-legged with device", token: "sub3A", wantStatus: 422, wantCode: "UNNECESSARY_IDENTIFIER",
			wantMsg: "An explicit identifier has been provided for the device when this is already identified by the access token"},
		{name: "unknown phone", token: "sub", mod: dev(map[string]any{"phoneNumber": "+8613911111111"}), wantStatus: 404,
			wantCode: "IDENTIFIER_NOT_FOUND", wantMsg: "Device identifier not found."},
		{name: "other tenant's card", token: "sub", mod: dev(map[string]any{"phoneNumber": phoneC}), wantStatus: 404,
			wantCode: "IDENTIFIER_NOT_FOUND", wantMsg: "Device identifier not found."},
		{name: "three-legged, other tenant's card", token: "sub3C", mod: func(m map[string]any) { delete(detailOf(m), "device") }, wantStatus: 404,
			wantCode: "IDENTIFIER_NOT_FOUND", wantMsg: "Device identifier not found."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSubEnv(t, Config{})
			body := tt.body
			if body == "" {
				body = subBody(t, tt.mod)
			}
			if tt.header == nil {
				tt.header = map[string]string{}
			}
			corr, sent := tt.header["x-correlator"]
			if !sent {
				corr = "b4333c46-49c0-4f62-80d7-f0ef930f1c46"
				tt.header["x-correlator"] = corr
			}
			r := e.do(call{path: "/subscriptions", token: tt.token, header: tt.header, body: body})
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", r.status, tt.wantStatus, r.raw)
			}
			if got := r.header.Get("x-correlator"); sent != (got != corr) {
				t.Errorf("x-correlator = %q (sent %q)", got, corr)
			}
			if tt.wantCode != "" && (r.body["code"] != tt.wantCode || r.body["message"] != tt.wantMsg || r.body["status"] != float64(tt.wantStatus)) {
				t.Errorf("body = %s, want %d %s %q", r.raw, tt.wantStatus, tt.wantCode, tt.wantMsg)
			}
			if tt.wantStatus != 201 {
				if l, _ := e.n.List(context.Background(), "https://verifier.test "+clientOf(t, e, "sub")); len(l) != 0 {
					t.Errorf("refused request stored a subscription: %v", l)
				}
				return
			}
			if _, ok := r.body["sinkCredential"]; ok {
				t.Error("response carries sinkCredential")
			}
			device, hasDevice := detailOf(r.body)["device"]
			if tt.token == "sub3A" && hasDevice {
				t.Errorf("three-legged response names a device: %s", r.raw)
			}
			if d, _ := device.(map[string]any); tt.token == "sub" && len(d) != 1 {
				t.Errorf("device %v, want the one identifier used", device)
			}
			if r.body["status"] != "ACTIVE" || r.body["id"] == "" {
				t.Errorf("body %s", r.raw)
			}
			got := e.do(call{method: "GET", path: "/subscriptions/" + r.body["id"].(string), token: tt.token})
			if got.status != 200 || got.body["id"] != r.body["id"] || got.body["sink"] != r.body["sink"] {
				t.Errorf("GET after create: %d %s", got.status, got.raw)
			}
		})
	}
}

// clientOf returns the client id of an env token.
func clientOf(t testing.TB, e *subEnv, name string) string {
	t.Helper()
	p, err := e.auth.Authenticate(context.Background(), e.tokens[name])
	if err != nil {
		t.Fatal(err)
	}
	return p.Client
}

// TestSubscribeLimits: the rate and quota limits answer 429.
func TestSubscribeLimits(t *testing.T) {
	for _, tt := range []struct{ token, code, msg string }{
		{"subRate", "TOO_MANY_REQUESTS", "Rejected due to request rate limit overpassed."},
		{"subQuota", "QUOTA_EXCEEDED", "Rejected due to exceeding a business quota limit."},
	} {
		e := newSubEnv(t, Config{})
		if r := e.do(call{method: "GET", path: "/subscriptions", token: tt.token}); r.status != 200 {
			t.Fatalf("%s first request: %d %s", tt.token, r.status, r.raw)
		}
		for _, c := range []call{
			{path: "/subscriptions", token: tt.token, body: subBody(t, nil)},
			{method: "GET", path: "/subscriptions", token: tt.token},
			{method: "GET", path: "/subscriptions/x", token: tt.token},
			{method: "DELETE", path: "/subscriptions/x", token: tt.token},
		} {
			r := e.do(c)
			if r.status != 429 || r.body["code"] != tt.code || r.body["message"] != tt.msg {
				t.Errorf("%s %s: %d %s, want 429 %s", c.method, tt.token, r.status, r.raw, tt.code)
			}
		}
	}
}

// TestUnsupportedIdentifierSubscribe: identifiers the deployment
// disables are 422 UNSUPPORTED_IDENTIFIER.
func TestUnsupportedIdentifierSubscribe(t *testing.T) {
	e := newSubEnv(t, Config{DisabledIdentifiers: []string{IdentNAI}})
	r := e.do(call{path: "/subscriptions", token: "sub", body: subBody(t, func(m map[string]any) {
		detailOf(m)["device"] = map[string]any{"networkAccessIdentifier": naiA}
	})})
	if r.status != 422 || r.body["code"] != "UNSUPPORTED_IDENTIFIER" || r.body["message"] != "None of the provided identifiers is supported by the implementation." {
		t.Errorf("%d %s", r.status, r.raw)
	}
}

// TestSubscriptionAccess covers GET and DELETE: who sees which
// subscription, and every status, code and message.
func TestSubscriptionAccess(t *testing.T) {
	e := newSubEnv(t, Config{})
	create := func(token string, mod func(map[string]any)) string {
		r := e.do(call{path: "/subscriptions", token: token, body: subBody(t, mod)})
		if r.status != 201 {
			t.Fatalf("create: %d %s", r.status, r.raw)
		}
		return r.body["id"].(string)
	}
	noDevice := func(m map[string]any) { delete(detailOf(m), "device") }
	a2 := create("sub", nil)                                                                                      // card A, two-legged
	b2 := create("sub", func(m map[string]any) { detailOf(m)["device"] = map[string]any{"phoneNumber": phoneB} }) // card B
	a3 := create("sub3A", noDevice)                                                                               // card A, three-legged
	o2 := create("sub2", nil)                                                                                     // another client of acme

	ids := func(r result) []string {
		var l []map[string]any
		if err := json.Unmarshal(r.raw, &l); err != nil {
			t.Fatalf("list %s: %v", r.raw, err)
		}
		var out []string
		for _, s := range l {
			out = append(out, s["id"].(string))
		}
		return out
	}
	sameSet := func(got, want []string) bool {
		if len(got) != len(want) {
			return false
		}
		for _, w := range want {
			found := false
			for _, g := range got {
				found = found || g == w
			}
			if !found {
				return false
			}
		}
		return true
	}
	for _, tt := range []struct {
		token string
		want  []string
	}{
		{"sub", []string{a2, b2, a3}},
		{"sub3A", []string{a2, a3}},
		{"sub3B", []string{b2}},
		{"sub3C", []string{}},
		{"sub2", []string{o2}},
		{"subOther", []string{}},
	} {
		r := e.do(call{method: "GET", path: "/subscriptions", token: tt.token})
		if r.status != 200 || !sameSet(ids(r), tt.want) {
			t.Errorf("list as %s: %d %v, want %v", tt.token, r.status, ids(r), tt.want)
		}
	}
	r := e.do(call{method: "GET", path: "/subscriptions", token: "sub"})
	var l []map[string]any
	_ = json.Unmarshal(r.raw, &l)
	for _, s := range l {
		_, hasDevice := s["config"].(map[string]any)["subscriptionDetail"].(map[string]any)["device"]
		if hasDevice != (s["id"] != a3) {
			t.Errorf("subscription %s: device shown %v", s["id"], hasDevice)
		}
	}

	const notFound = "The specified resource is not found."
	for _, tt := range []struct {
		name, method, id, token string
		wantStatus              int
		wantCode, wantMsg       string
	}{
		{"get", "GET", a2, "sub", 200, "", ""},
		{"get three-legged, same device", "GET", a2, "sub3A", 200, "", ""},
		{"get three-legged, other device", "GET", a2, "sub3B", 404, "NOT_FOUND", notFound},
		{"get unknown", "GET", "no-such-subscription", "sub", 404, "NOT_FOUND", notFound},
		{"get another client's", "GET", o2, "sub", 404, "NOT_FOUND", notFound},
		{"get another tenant's", "GET", a2, "subOther", 404, "NOT_FOUND", notFound},
		{"get without read scope", "GET", a2, "subNoRead", 403, "PERMISSION_DENIED", "Client does not have sufficient permissions to perform this action."},
		{"get without token", "GET", a2, "", 401, "UNAUTHENTICATED", msgInvalidToken},
		{"get expired token", "GET", a2, "expired", 401, "UNAUTHENTICATED", msgInvalidToken},
		{"list without read scope", "GET", "", "subNoRead", 403, "PERMISSION_DENIED", "Client does not have sufficient permissions to perform this action."},
		{"list without token", "GET", "", "", 401, "UNAUTHENTICATED", msgInvalidToken},
		{"delete without delete scope", "DELETE", a2, "subReadOnly", 403, "PERMISSION_DENIED", "Client does not have sufficient permissions to perform this action."},
		{"delete without token", "DELETE", a2, "", 401, "UNAUTHENTICATED", msgInvalidToken},
		{"delete another tenant's", "DELETE", a2, "subOther", 404, "NOT_FOUND", notFound},
		{"delete another client's", "DELETE", o2, "sub", 404, "NOT_FOUND", notFound},
		{"delete three-legged, other device", "DELETE", a2, "sub3B", 404, "NOT_FOUND", notFound},
		{"delete", "DELETE", a2, "sub", 204, "", ""},
		{"get deleted", "GET", a2, "sub", 404, "NOT_FOUND", notFound},
		{"delete again", "DELETE", a2, "sub", 404, "NOT_FOUND", notFound},
		{"delete three-legged", "DELETE", a3, "sub3A", 204, "", ""},
		{"delete unknown", "DELETE", "no-such-subscription", "sub", 404, "NOT_FOUND", notFound},
	} {
		path := "/subscriptions"
		if tt.id != "" {
			path += "/" + tt.id
		}
		r := e.do(call{method: tt.method, path: path, token: tt.token, header: map[string]string{"x-correlator": "corr-1"}})
		if r.status != tt.wantStatus {
			t.Errorf("%s: status %d, want %d: %s", tt.name, r.status, tt.wantStatus, r.raw)
			continue
		}
		if r.header.Get("x-correlator") != "corr-1" {
			t.Errorf("%s: x-correlator %q", tt.name, r.header.Get("x-correlator"))
		}
		if tt.wantCode != "" && (r.body["code"] != tt.wantCode || r.body["message"] != tt.wantMsg) {
			t.Errorf("%s: %s, want %s %q", tt.name, r.raw, tt.wantCode, tt.wantMsg)
		}
	}
	if r := e.do(call{method: "GET", path: "/subscriptions", token: "sub"}); !sameSet(ids(r), []string{b2}) {
		t.Errorf("after deletes: %v", ids(r))
	}
}

// TestSubscriptionRouting: wrong methods, unknown paths and a malformed
// x-correlator answer ErrorInfo; the OpenAPI document is served.
func TestSubscriptionRouting(t *testing.T) {
	e := newSubEnv(t, Config{})
	for _, tt := range []struct {
		method, path string
		header       map[string]string
		status       int
		code, allow  string
	}{
		{"PUT", "/subscriptions", nil, 405, "METHOD_NOT_ALLOWED", "GET, POST"},
		{"PATCH", "/subscriptions/abc", nil, 405, "METHOD_NOT_ALLOWED", "GET, DELETE"},
		{"POST", "/subscriptions/abc", map[string]string{"Content-Type": "application/json"}, 405, "METHOD_NOT_ALLOWED", "GET, DELETE"},
		{"GET", "/subscriptions/abc/def", nil, 404, "NOT_FOUND", ""},
		{"GET", "/nothing", nil, 404, "NOT_FOUND", ""},
		{"GET", "/subscriptions", map[string]string{"x-correlator": "bad correlator!"}, 400, "INVALID_ARGUMENT", ""},
		{"DELETE", "/subscriptions/abc", map[string]string{"x-correlator": strings.Repeat("a", 257)}, 400, "INVALID_ARGUMENT", ""},
	} {
		r := e.do(call{method: tt.method, path: tt.path, token: "sub", header: tt.header})
		if r.status != tt.status || r.body["code"] != tt.code || r.header.Get("Allow") != tt.allow {
			t.Errorf("%s %s: %d %s Allow %q", tt.method, tt.path, r.status, r.raw, r.header.Get("Allow"))
		}
	}
	r := e.do(call{method: "GET", path: "/openapi.yaml"})
	if r.status != 200 || !bytes.Contains(r.raw, []byte("subscribeFraudPrevention")) || r.header.Get("Content-Type") != "application/yaml" {
		t.Errorf("openapi.yaml: %d %q", r.status, r.header.Get("Content-Type"))
	}
}

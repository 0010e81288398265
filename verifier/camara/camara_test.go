package camara

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The operations and the names their messages use.
var ops = []struct {
	path, typeField, typeName, valueName string
}{
	{"/bind", "bindType", "BindType", "bindType"},
	{"/unbind", "unBindType", "UnbindType", "unbindType"},
	{"/query", "queryType", "QueryType", "queryType"},
}

const msgInvalidToken = "Request not authenticated due to missing, invalid, or expired credentials."

// TestCommonRules covers, for each operation, every Commonalities rule:
// x-correlator, authentication, scope, media type, body, device object,
// two- and three-legged tokens, identifiers not found, tenant isolation.
func TestCommonRules(t *testing.T) {
	for _, op := range ops {
		t.Run(op.path, func(t *testing.T) {
			tf := op.typeField
			body := func(device string) string {
				if device == "" {
					return fmt.Sprintf(`{"%s":"IMEIBIND"}`, tf)
				}
				return fmt.Sprintf(`{"device":%s,"%s":"IMEIBIND"}`, device, tf)
			}
			// unbind of an unbound card is 422 UNNECESSARY_UNBIND_IMEI; a
			// found device reaches the operation either way.
			found := 200
			if op.path == "/unbind" {
				found = 422
			}
			tests := []struct {
				name       string
				c          call
				wantStatus int
				wantCode   string
				wantMsg    string
			}{
				{"phoneNumber", call{token: "acme", body: body(`{"phoneNumber":"` + phoneA + `"}`)}, found, "", ""},
				{"networkAccessIdentifier", call{token: "acme", body: body(`{"networkAccessIdentifier":"` + naiA + `"}`)}, found, "", ""},
				{"ipv4 private", call{token: "acme", body: body(`{"ipv4Address":{"publicAddress":"` + ipv4PubA + `","privateAddress":"` + ipv4A + `"}}`)}, found, "", ""},
				{"ipv4 public and port", call{token: "acme", body: body(`{"ipv4Address":{"publicAddress":"` + ipv4PubA + `","publicPort":59765}}`)}, found, "", ""},
				{"ipv6 in the /64", call{token: "acme", body: body(`{"ipv6Address":"` + ipv6A + `"}`)}, found, "", ""},
				{"several identifiers, first used", call{token: "acme", body: body(`{"phoneNumber":"` + phoneA + `","networkAccessIdentifier":"nobody@x.y"}`)}, found, "", ""},
				{"three-legged", call{token: "3leggedA", body: body("")}, found, "", ""},

				{"phoneNumber unknown", call{token: "acme", body: body(`{"phoneNumber":"+8613911111111"}`)}, 404, "IDENTIFIER_NOT_FOUND", "Device identifier not found."},
				{"networkAccessIdentifier unknown", call{token: "acme", body: body(`{"networkAccessIdentifier":"nobody@iot.example.com"}`)}, 404, "IDENTIFIER_NOT_FOUND", "Device identifier not found."},
				{"ipv4 unknown", call{token: "acme", body: body(`{"ipv4Address":{"publicAddress":"198.51.100.1","publicPort":1}}`)}, 404, "IDENTIFIER_NOT_FOUND", "Device identifier not found."},
				{"ipv6 other /64", call{token: "acme", body: body(`{"ipv6Address":"2001:db8:1:3::1"}`)}, 404, "IDENTIFIER_NOT_FOUND", "Device identifier not found."},
				{"other tenant's card", call{token: "acme", body: body(`{"phoneNumber":"` + phoneC + `"}`)}, 404, "IDENTIFIER_NOT_FOUND", "Device identifier not found."},
				{"other tenant's card by NAI", call{token: "acme", body: body(`{"networkAccessIdentifier":"card-c@iot.example.com"}`)}, 404, "IDENTIFIER_NOT_FOUND", "Device identifier not found."},
				{"three-legged, other tenant's card", call{token: "3leggedC", body: body("")}, 404, "IDENTIFIER_NOT_FOUND", "Device identifier not found."},
				{"three-legged, unknown phone", call{token: "3leggedUnknown", body: body("")}, 404, "IDENTIFIER_NOT_FOUND", "Device identifier not found."},

				{"phoneNumber malformed", call{token: "acme", body: body(`{"phoneNumber":"8613900000001"}`)}, 400, "INVALID_ARGUMENT", "Invalid format: phoneNumber"},
				{"phoneNumber too long", call{token: "acme", body: body(`{"phoneNumber":"+8613900000001234"}`)}, 400, "INVALID_ARGUMENT", "Invalid format: phoneNumber"},
				{"phoneNumber not a string", call{token: "acme", body: body(`{"phoneNumber":8613900000001}`)}, 400, "INVALID_ARGUMENT", "Invalid format: phoneNumber"},
				{"networkAccessIdentifier malformed", call{token: "acme", body: body(`{"networkAccessIdentifier":"no-at-sign"}`)}, 400, "INVALID_ARGUMENT", "Invalid format: networkAccessIdentifier"},
				{"networkAccessIdentifier empty domain", call{token: "acme", body: body(`{"networkAccessIdentifier":"abc@"}`)}, 400, "INVALID_ARGUMENT", "Invalid format: networkAccessIdentifier"},
				{"ipv4 address malformed", call{token: "acme", body: body(`{"ipv4Address":{"publicAddress":"203.0.113.300","publicPort":1}}`)}, 400, "INVALID_ARGUMENT", "Invalid format: ipv4Address"},
				{"ipv4 without port or private", call{token: "acme", body: body(`{"ipv4Address":{"publicAddress":"203.0.113.7"}}`)}, 400, "INVALID_ARGUMENT", "Invalid format: ipv4Address"},
				{"ipv4 without public", call{token: "acme", body: body(`{"ipv4Address":{"privateAddress":"10.20.0.1"}}`)}, 400, "INVALID_ARGUMENT", "Invalid format: ipv4Address"},
				{"ipv4 given as ipv6", call{token: "acme", body: body(`{"ipv4Address":{"publicAddress":"2001:db8::1","publicPort":1}}`)}, 400, "INVALID_ARGUMENT", "Invalid format: ipv4Address"},
				{"ipv4 port out of range", call{token: "acme", body: body(`{"ipv4Address":{"publicAddress":"203.0.113.7","publicPort":65536}}`)}, 400, "INVALID_ARGUMENT", "Invalid value: ipv4Address.publicPort"},
				{"ipv4 port not integer", call{token: "acme", body: body(`{"ipv4Address":{"publicAddress":"203.0.113.7","publicPort":"80"}}`)}, 400, "INVALID_ARGUMENT", "Invalid value: ipv4Address.publicPort"},
				{"ipv6 malformed", call{token: "acme", body: body(`{"ipv6Address":"2001:db8::zz"}`)}, 400, "INVALID_ARGUMENT", "Invalid format: ipv6Address"},
				{"ipv6 given an ipv4", call{token: "acme", body: body(`{"ipv6Address":"10.0.0.1"}`)}, 400, "INVALID_ARGUMENT", "Invalid format: ipv6Address"},
				{"malformed unused identifier", call{token: "acme", body: body(`{"phoneNumber":"` + phoneA + `","ipv6Address":"x"}`)}, 400, "INVALID_ARGUMENT", "Invalid format: ipv6Address"},
				{"empty device", call{token: "acme", body: body(`{}`)}, 400, "INVALID_ARGUMENT", msgNoIdentifier},
				{"device null", call{token: "acme", body: body(`null`)}, 400, "INVALID_ARGUMENT", "Invalid format: device"},
				{"unknown device property", call{token: "acme", body: body(`{"phoneNumber":"` + phoneA + `","imsi":"460001234567890"}`)}, 400, "INVALID_ARGUMENT", "Unknown property: device.imsi"},
				{"type missing", call{token: "acme", body: `{"device":{"phoneNumber":"` + phoneA + `"}}`}, 400, "INVALID_ARGUMENT", op.typeName + " must be specified"},
				{"type wrong value", call{token: "acme", body: fmt.Sprintf(`{"%s":"SIMSWAP"}`, tf)}, 400, "INVALID_ARGUMENT", "The value of " + op.valueName + " can only be IMEIBIND,AREALIMIT"},
				{"type not a string", call{token: "acme", body: fmt.Sprintf(`{"%s":1}`, tf)}, 400, "INVALID_ARGUMENT", "The value of " + op.valueName + " can only be IMEIBIND,AREALIMIT"},
				{"type lower case", call{token: "acme", body: fmt.Sprintf(`{"%s":"imeibind"}`, tf)}, 400, "INVALID_ARGUMENT", "The value of " + op.valueName + " can only be IMEIBIND,AREALIMIT"},
				{"malformed JSON", call{token: "acme", body: `{"device":`}, 400, "INVALID_ARGUMENT", "Request body is not a JSON object"},
				{"empty body", call{token: "acme", body: ``}, 400, "INVALID_ARGUMENT", "Request body is not a JSON object"},
				{"JSON array", call{token: "acme", body: `[]`}, 400, "INVALID_ARGUMENT", "Request body is not a JSON object"},
				{"unknown property", call{token: "acme", body: fmt.Sprintf(`{"%s":"IMEIBIND","extra":1}`, tf)}, 400, "INVALID_ARGUMENT", "Unknown property: extra"},
				{"body too large", call{token: "acme", body: fmt.Sprintf(`{"%s":"IMEIBIND","device":{"networkAccessIdentifier":"%s@x"}}`, tf, strings.Repeat("a", 20000))}, 400, "INVALID_ARGUMENT", "Request body too large or unreadable"},

				{"x-correlator malformed", call{token: "acme", header: map[string]string{"x-correlator": "bad correlator!"}, body: body(`{"phoneNumber":"` + phoneA + `"}`)}, 400, "INVALID_ARGUMENT", "Invalid format: x-correlator"},
				{"x-correlator too long", call{token: "acme", header: map[string]string{"x-correlator": strings.Repeat("a", 257)}, body: body(`{"phoneNumber":"` + phoneA + `"}`)}, 400, "INVALID_ARGUMENT", "Invalid format: x-correlator"},

				{"wrong content type", call{token: "acme", header: map[string]string{"Content-Type": "text/plain"}, body: body(`{"phoneNumber":"` + phoneA + `"}`)}, 415, "UNSUPPORTED_MEDIA_TYPE", "The server refuses to accept the request because the payload format is in an unsupported format."},
				{"no content type", call{token: "acme", header: map[string]string{"Content-Type": "<none>"}, body: body(`{"phoneNumber":"` + phoneA + `"}`)}, 415, "UNSUPPORTED_MEDIA_TYPE", "The server refuses to accept the request because the payload format is in an unsupported format."},
				{"json with charset", call{token: "acme", header: map[string]string{"Content-Type": "application/json; charset=UTF-8"}, body: body(`{"phoneNumber":"` + phoneA + `"}`)}, found, "", ""},

				{"no token", call{body: body(`{"phoneNumber":"` + phoneA + `"}`)}, 401, "UNAUTHENTICATED", msgInvalidToken},
				{"expired token", call{token: "expired", body: body("")}, 401, "UNAUTHENTICATED", msgInvalidToken},
				{"bad signature", call{token: "badSignature", body: body(`{"phoneNumber":"` + phoneA + `"}`)}, 401, "UNAUTHENTICATED", msgInvalidToken},
				{"not a JWT", call{token: "garbage", body: body(`{"phoneNumber":"` + phoneA + `"}`)}, 401, "UNAUTHENTICATED", msgInvalidToken},
				{"basic auth", call{header: map[string]string{"Authorization": "Basic YTpi"}, body: body(`{"phoneNumber":"` + phoneA + `"}`)}, 401, "UNAUTHENTICATED", msgInvalidToken},

				{"two-legged without device", call{token: "acme", body: body("")}, 422, "MISSING_IDENTIFIER", "The device cannot be identified."},
				{"three-legged with device", call{token: "3leggedA", body: body(`{"phoneNumber":"` + phoneA + `"}`)}, 422, "UNNECESSARY_IDENTIFIER",
					"An explicit identifier has been provided for the device when this is already identified by the access token"},
			}
			scopeless := map[string]string{"/bind": "queryOnly", "/unbind": "bindOnly", "/query": "bindOnly"}[op.path]
			tests = append(tests, struct {
				name       string
				c          call
				wantStatus int
				wantCode   string
				wantMsg    string
			}{"scope missing", call{token: scopeless, body: body(`{"phoneNumber":"` + phoneA + `"}`)}, 403, "PERMISSION_DENIED",
				"Client does not have sufficient permissions to perform this action."})
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					e := newEnv(t, Config{})
					tt.c.path = op.path
					if tt.c.header == nil {
						tt.c.header = map[string]string{}
					}
					corr, sent := tt.c.header["x-correlator"]
					if !sent {
						corr = "b4333c46-49c0-4f62-80d7-f0ef930f1c46"
						tt.c.header["x-correlator"] = corr
					}
					r := e.do(tt.c)
					if r.status != tt.wantStatus {
						t.Fatalf("status = %d, want %d; body %s", r.status, tt.wantStatus, r.raw)
					}
					if got := r.header.Get("x-correlator"); tt.wantStatus != 400 || tt.wantMsg != "Invalid format: x-correlator" {
						if got != corr {
							t.Errorf("x-correlator = %q, want %q echoed", got, corr)
						}
					} else if got == corr {
						t.Errorf("malformed x-correlator echoed")
					}
					if tt.wantCode != "" && (r.body["code"] != tt.wantCode || r.body["message"] != tt.wantMsg || r.body["status"] != float64(tt.wantStatus)) {
						t.Errorf("body = %s, want %d %s %q", r.raw, tt.wantStatus, tt.wantCode, tt.wantMsg)
					}
					if tt.wantStatus == 401 && r.header.Get("WWW-Authenticate") == "" {
						t.Error("401 without WWW-Authenticate")
					}
				})
			}
		})
	}
}

// TestDeviceResponse: two-legged answers name the one identifier used;
// three-legged answers name none.
func TestDeviceResponse(t *testing.T) {
	e := newEnv(t, Config{})
	r := e.do(call{path: "/query", token: "acme", body: `{"device":{"networkAccessIdentifier":"` + naiA + `","phoneNumber":"` + phoneA + `","ipv6Address":"` + ipv6A + `"},"queryType":"IMEIBIND"}`})
	dev, _ := r.body["device"].(map[string]any)
	if r.status != 200 || len(dev) != 1 || dev["phoneNumber"] != phoneA {
		t.Errorf("device = %v (%s)", dev, r.raw)
	}
	r = e.do(call{path: "/query", token: "3leggedA", body: `{"queryType":"IMEIBIND"}`})
	if _, ok := r.body["device"]; ok || r.status != 200 {
		t.Errorf("three-legged response names a device: %s", r.raw)
	}
}

// TestUnsupportedIdentifier: identifiers the deployment disables.
func TestUnsupportedIdentifier(t *testing.T) {
	e := newEnv(t, Config{DisabledIdentifiers: []string{IdentNAI, IdentIPv6}})
	for _, tt := range []struct {
		name, device string
		want         int
	}{
		{"only disabled", `{"networkAccessIdentifier":"` + naiA + `"}`, 422},
		{"two disabled", `{"networkAccessIdentifier":"` + naiA + `","ipv6Address":"` + ipv6A + `"}`, 422},
		{"disabled and supported", `{"networkAccessIdentifier":"` + naiA + `","phoneNumber":"` + phoneA + `"}`, 200},
		{"disabled but malformed", `{"networkAccessIdentifier":"x"}`, 400},
	} {
		for _, op := range []string{"/bind", "/query"} {
			tf := map[string]string{"/bind": "bindType", "/query": "queryType"}[op]
			r := e.do(call{path: op, token: "acme", body: `{"device":` + tt.device + `,"` + tf + `":"IMEIBIND"}`})
			if r.status != tt.want {
				t.Errorf("%s %s: %d %s", op, tt.name, r.status, r.raw)
			}
			if tt.want == 422 && (r.body["code"] != "UNSUPPORTED_IDENTIFIER" || r.body["message"] != "None of the provided identifiers is supported by the implementation.") {
				t.Errorf("%s %s: %s", op, tt.name, r.raw)
			}
		}
	}
	if _, err := New(nil, nil, nil, Config{DisabledIdentifiers: []string{"imsi"}}, quietLog()); err == nil {
		t.Error("unknown identifier name accepted")
	}
}

// TestRouting: wrong methods and unknown paths answer ErrorInfo too.
func TestRouting(t *testing.T) {
	e := newEnv(t, Config{})
	for _, tt := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/bind", 405, "METHOD_NOT_ALLOWED"},
		{"PUT", "/unbind", 405, "METHOD_NOT_ALLOWED"},
		{"DELETE", "/query", 405, "METHOD_NOT_ALLOWED"},
		{"POST", "/openapi.yaml", 405, "METHOD_NOT_ALLOWED"},
		{"POST", "/subscriptions", 404, "NOT_FOUND"},
		{"GET", "/", 404, "NOT_FOUND"},
	} {
		r := e.do(call{method: tt.method, path: tt.path, token: "acme", body: `{}`})
		if r.status != tt.status || r.body["code"] != tt.code {
			t.Errorf("%s %s: %d %s", tt.method, tt.path, r.status, r.raw)
		}
		if tt.status == 405 && r.header.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", tt.method, tt.path)
		}
	}
	r := e.do(call{method: "GET", path: "/openapi.yaml"})
	if r.status != 200 || !strings.Contains(string(r.raw), "x-cardbind-extension") || r.header.Get("Content-Type") != "application/yaml" {
		t.Errorf("openapi: %d %.80s", r.status, r.raw)
	}
	r = e.do(call{path: "/query", token: "acme", header: map[string]string{"x-correlator": "<none>"}, body: `{"device":{"phoneNumber":"` + phoneA + `"},"queryType":"IMEIBIND"}`})
	if c := r.header.Get("x-correlator"); len(c) != 36 {
		t.Errorf("generated x-correlator = %q", c)
	}
}

// TestRateAndQuota: a client limited to 2 requests/s and 3 requests a day.
func TestRateAndQuota(t *testing.T) {
	e := newEnv(t, Config{})
	q := call{path: "/query", token: "limited", body: `{"device":{"phoneNumber":"` + phoneA + `"},"queryType":"IMEIBIND"}`}
	want := []struct {
		advance time.Duration
		status  int
		code    string
		msg     string
	}{
		{0, 200, "", ""},
		{0, 200, "", ""},
		{0, 429, "TOO_MANY_REQUESTS", "Rejected due to request rate limit overpassed."},
		{time.Second, 200, "", ""}, // third of the quota
		{time.Second, 429, "QUOTA_EXCEEDED", "Rejected due to exceeding a business quota limit."},
		{time.Second, 429, "QUOTA_EXCEEDED", "Rejected due to exceeding a business quota limit."},
		{24 * time.Hour, 200, "", ""}, // a new day
	}
	for i, w := range want {
		e.clk.Add(w.advance)
		r := e.do(q)
		if r.status != w.status || w.code != "" && (r.body["code"] != w.code || r.body["message"] != w.msg) {
			t.Errorf("request %d: %d %s, want %d %s", i, r.status, r.raw, w.status, w.code)
		}
	}
	// Other clients are not affected.
	if r := e.do(call{path: "/query", token: "acme", body: q.body}); r.status != 200 {
		t.Errorf("unlimited client: %d", r.status)
	}
	// Default limits apply to clients without their own.
	e2 := newEnv(t, Config{DefaultRate: 1})
	e2.do(call{path: "/query", token: "acme", body: q.body})
	if r := e2.do(call{path: "/query", token: "acme", body: q.body}); r.status != 429 {
		t.Errorf("default rate: %d", r.status)
	}
}

// TestInternalError: a failing store is 500 INTERNAL, as ErrorInfo.
func TestInternalError(t *testing.T) {
	e := newEnv(t, Config{})
	e.store.failErr = errors.New("disk on fire")
	r := e.do(call{path: "/query", token: "acme", body: `{"device":{"phoneNumber":"` + phoneA + `"},"queryType":"IMEIBIND"}`})
	if r.status != 500 || r.body["code"] != "INTERNAL" || strings.Contains(string(r.raw), "fire") {
		t.Errorf("%d %s", r.status, r.raw)
	}
}

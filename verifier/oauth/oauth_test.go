package oauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cardbind/cardbind/verifier"
)

// memRecords is an in-memory Records.
type memRecords struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (f *memRecords) PutRecord(_ context.Context, ns, key string, v []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string][]byte{}
	}
	f.m[ns+"\x00"+key] = slices.Clone(v)
	return nil
}

func (f *memRecords) GetRecord(_ context.Context, ns, key string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.m[ns+"\x00"+key]
	if !ok {
		return nil, verifier.ErrNotFound
	}
	return slices.Clone(v), nil
}

func (f *memRecords) DeleteRecord(_ context.Context, ns, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, ns+"\x00"+key)
	return nil
}

func (f *memRecords) ListRecords(_ context.Context, ns, after string, limit int) ([]verifier.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []verifier.Record
	for k, v := range f.m {
		n, key, _ := strings.Cut(k, "\x00")
		if n == ns && key > after {
			out = append(out, verifier.Record{Key: key, Value: slices.Clone(v)})
		}
	}
	slices.SortFunc(out, func(a, b verifier.Record) int { return strings.Compare(a.Key, b.Key) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
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

func newTestServer(t *testing.T, mod func(*Config)) (*Server, *clock) {
	t.Helper()
	clk := &clock{t: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	cfg := Config{Issuer: "https://verifier.test", DataDir: t.TempDir(), Now: clk.Now}
	if mod != nil {
		mod(&cfg)
	}
	s, err := NewServer(&memRecords{}, cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	return s, clk
}

func tokenRequest(t *testing.T, h http.Handler, form url.Values, basicID, basicSecret string) (*httptest.ResponseRecorder, map[string]any) {
	t.Helper()
	req := httptest.NewRequest("POST", TokenPath, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicID != "" {
		req.SetBasicAuth(url.QueryEscape(basicID), url.QueryEscape(basicSecret))
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var body map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	return rec, body
}

func TestTokenEndpoint(t *testing.T) {
	s, _ := newTestServer(t, nil)
	ctx := context.Background()
	c, secret, err := s.CreateClient(ctx, ClientSpec{Tenant: "acme", Scopes: []string{ScopeBind + " " + ScopeQuery}})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	cc := "client_credentials"
	tests := []struct {
		name       string
		form       url.Values
		basic      bool
		wantStatus int
		wantError  string
		wantScope  string
	}{
		{"basic, all scopes", url.Values{"grant_type": {cc}}, true, 200, "", ScopeBind + " " + ScopeQuery},
		{"post, one scope", url.Values{"grant_type": {cc}, "client_id": {c.ID}, "client_secret": {secret}, "scope": {ScopeQuery}}, false, 200, "", ScopeQuery},
		{"scope not allowed", url.Values{"grant_type": {cc}, "scope": {ScopeUnbind}}, true, 400, "invalid_scope", ""},
		{"scope empty", url.Values{"grant_type": {cc}, "scope": {" "}}, true, 400, "invalid_scope", ""},
		{"wrong secret", url.Values{"grant_type": {cc}, "client_id": {c.ID}, "client_secret": {"nope"}}, false, 401, "invalid_client", ""},
		{"unknown client", url.Values{"grant_type": {cc}, "client_id": {"cb-x"}, "client_secret": {secret}}, false, 401, "invalid_client", ""},
		{"no client auth", url.Values{"grant_type": {cc}}, false, 401, "invalid_client", ""},
		{"no grant type", url.Values{}, true, 400, "invalid_request", ""},
		{"password grant", url.Values{"grant_type": {"password"}}, true, 400, "unsupported_grant_type", ""},
		{"repeated parameter", url.Values{"grant_type": {cc, cc}}, true, 400, "invalid_request", ""},
		{"two auth methods", url.Values{"grant_type": {cc}, "client_secret": {secret}}, true, 400, "invalid_request", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, sec := "", ""
			if tt.basic {
				id, sec = c.ID, secret
			}
			rec, body := tokenRequest(t, h, tt.form, id, sec)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if rec.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q", rec.Header().Get("Cache-Control"))
			}
			if tt.wantError != "" {
				if body["error"] != tt.wantError {
					t.Errorf("error = %v, want %s", body["error"], tt.wantError)
				}
				return
			}
			if body["token_type"] != "Bearer" || body["scope"] != tt.wantScope || body["expires_in"] != 3600.0 {
				t.Errorf("body = %v", body)
			}
			p, err := s.Authenticate(ctx, body["access_token"].(string))
			if err != nil {
				t.Fatal(err)
			}
			if p.Client != c.ID || p.Tenant != "acme" || strings.Join(p.Scopes, " ") != tt.wantScope || p.ThreeLegged() {
				t.Errorf("principal = %+v", p)
			}
		})
	}

	t.Run("form content type required", func(t *testing.T) {
		req := httptest.NewRequest("POST", TokenPath, strings.NewReader(`{"grant_type":"client_credentials"}`))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 400 || !strings.Contains(rec.Body.String(), "invalid_request") {
			t.Errorf("got %d %s", rec.Code, rec.Body)
		}
	})
	t.Run("basic auth failure has WWW-Authenticate", func(t *testing.T) {
		rec, _ := tokenRequest(t, h, url.Values{"grant_type": {cc}}, c.ID, "wrong")
		if rec.Code != 401 || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Basic") {
			t.Errorf("got %d, WWW-Authenticate %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
	})
}

func TestTokenClaims(t *testing.T) {
	s, _ := newTestServer(t, func(c *Config) { c.Audience = "camara" })
	c, _, err := s.CreateClient(context.Background(), ClientSpec{Tenant: "acme", Scopes: []string{ScopeQuery}})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := s.MintDeviceToken(context.Background(), DeviceTokenSpec{Client: c.ID, PhoneNumber: "+8613912345678", TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tr.AccessToken, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q", tr.AccessToken)
	}
	var hdr, claims map[string]any
	for i, v := range []*map[string]any{&hdr, &claims} {
		raw, _ := base64.RawURLEncoding.DecodeString(parts[i])
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatal(err)
		}
	}
	if hdr["alg"] != "ES256" || hdr["typ"] != "at+jwt" || hdr["kid"] != s.key.kid {
		t.Errorf("header = %v", hdr)
	}
	for _, k := range []string{"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "tenant", "phone_number"} {
		if _, ok := claims[k]; !ok {
			t.Errorf("claim %s missing: %v", k, claims)
		}
	}
	if claims["sub"] != c.ID || claims["tenant"] != "acme" || claims["exp"].(float64)-claims["iat"].(float64) != 30 {
		t.Errorf("claims = %v", claims)
	}
	p, err := s.Authenticate(context.Background(), tr.AccessToken)
	if err != nil || p.PhoneNumber != "+8613912345678" || !p.ThreeLegged() {
		t.Fatalf("principal %+v, %v", p, err)
	}
}

func TestAuthenticateFailures(t *testing.T) {
	s, clk := newTestServer(t, nil)
	ctx := context.Background()
	c, _, _ := s.CreateClient(ctx, ClientSpec{Tenant: "acme", Scopes: []string{ScopeQuery}})
	good, _ := s.mint(c, c.Scopes, "", time.Minute)
	other, _ := newTestServer(t, nil) // same issuer, different key
	oc, _, _ := other.CreateClient(ctx, ClientSpec{Tenant: "acme", Scopes: []string{ScopeQuery}})
	foreign, _ := other.mint(oc, oc.Scopes, "", time.Minute)

	// Same kid, forged signature: take our header and claims, other's signature.
	gp, fp := strings.Split(good.AccessToken, "."), strings.Split(foreign.AccessToken, ".")
	forged := gp[0] + "." + gp[1] + "." + fp[2]
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": "https://verifier.test"})
	hsToken, _ := hs.SignedString([]byte("k"))

	tests := []struct{ name, token string }{
		{"empty", ""},
		{"garbage", "abc.def.ghi"},
		{"other key", foreign.AccessToken},
		{"bad signature", forged},
		{"hs256", hsToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Authenticate(ctx, tt.token); !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("err = %v, want ErrUnauthenticated", err)
			}
		})
	}
	for range 2 { // the second call is answered from the verified-token cache
		if _, err := s.Authenticate(ctx, good.AccessToken); err != nil {
			t.Fatal(err)
		}
	}
	// A cached good token does not vouch for its claims with another signature.
	if _, err := s.Authenticate(ctx, forged); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("forged after the good one was cached: err = %v", err)
	}
	clk.Add(time.Minute + ownLeeway + time.Second)
	if _, err := s.Authenticate(ctx, good.AccessToken); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("expired: err = %v", err)
	}
	fresh, _ := s.mint(c, c.Scopes, "", time.Minute)
	if err := s.DeleteClient(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, fresh.AccessToken); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("deleted client: err = %v", err)
	}
}

func TestKeyFilePersists(t *testing.T) {
	dir := t.TempDir()
	k1, err := loadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	k2, err := loadOrCreateKey(dir)
	if err != nil || k2.kid != k1.kid {
		t.Fatalf("reload: kid %s vs %s, %v", k2.kid, k1.kid, err)
	}
	_ = os.Chmod(filepath.Join(dir, KeyFile), 0o644)
	if _, err := loadOrCreateKey(dir); err == nil {
		t.Error("world-readable key accepted")
	}
}

func TestDiscoveryAndJWKS(t *testing.T) {
	s, _ := newTestServer(t, nil)
	h := s.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", DiscoveryPath, nil))
	var d Discovery
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil || rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if d.Issuer != "https://verifier.test" || d.JWKSURI != "https://verifier.test"+JWKSPath || d.TokenEndpoint != "https://verifier.test"+TokenPath ||
		!slices.Contains(d.GrantTypesSupported, "client_credentials") {
		t.Errorf("discovery = %+v", d)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", JWKSPath, nil))
	var set JWKS
	if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("%s", rec.Body)
	}
	pub, algs, err := set.Keys[0].publicKey()
	if err != nil || !slices.Equal(algs, []string{"ES256"}) || !pub.(*ecdsa.PublicKey).Equal(&s.key.priv.PublicKey) {
		t.Errorf("jwks key: %v %v", algs, err)
	}
}

// provider is an external OpenID provider serving a JWKS from httptest.
type provider struct {
	priv    *ecdsa.PrivateKey
	kid     string
	srv     *httptest.Server
	mu      sync.Mutex
	fetches int
}

func newProvider(t *testing.T) *provider {
	p := &provider{kid: "k1"}
	p.priv, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.fetches++
		k, _ := newSigningKey(p.priv)
		k.jwk.Kid = p.kid
		_, _ = w.Write(marshalJWKS(k.jwk))
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *provider) rotate() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.priv, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.kid = "k2"
}

func (p *provider) token(t *testing.T, claims jwt.MapClaims) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = p.kid
	s, err := tok.SignedString(p.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestExternalProvider(t *testing.T) {
	idp := newProvider(t)
	s, clk := newTestServer(t, func(c *Config) {
		c.External = &ExternalConfig{Issuer: "https://idp.test", Audience: "cardbind", JWKSURL: idp.srv.URL, TenantClaim: "org"}
		c.HTTPClient = idp.srv.Client()
	})
	ctx := context.Background()
	now := clk.Now()
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		m := jwt.MapClaims{"iss": "https://idp.test", "aud": "cardbind", "sub": "user-1", "azp": "partner-app", "org": "acme",
			"scope": ScopeQuery + " " + ScopeBind, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "x1"}
		if mod != nil {
			mod(m)
		}
		return m
	}
	p, err := s.Authenticate(ctx, idp.token(t, claims(nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !p.External || p.Client != "partner-app" || p.Tenant != "acme" || !p.HasScope(ScopeBind) || p.ThreeLegged() {
		t.Errorf("principal = %+v", p)
	}
	p, err = s.Authenticate(ctx, idp.token(t, claims(func(m jwt.MapClaims) {
		m["phone_number"] = "+8613900000001"
		delete(m, "scope")
		m["scp"] = []any{ScopeQuery}
	})))
	if err != nil || p.PhoneNumber != "+8613900000001" || !slices.Equal(p.Scopes, []string{ScopeQuery}) {
		t.Errorf("three-legged: %+v, %v", p, err)
	}
	for name, mod := range map[string]func(jwt.MapClaims){
		"wrong audience": func(m jwt.MapClaims) { m["aud"] = "other" },
		"expired":        func(m jwt.MapClaims) { m["exp"] = now.Add(-time.Hour).Unix() },
		"no tenant":      func(m jwt.MapClaims) { delete(m, "org") },
		"bad phone":      func(m jwt.MapClaims) { m["phone_number"] = "12" },
	} {
		if _, err := s.Authenticate(ctx, idp.token(t, claims(mod))); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if idp.fetches != 1 {
		t.Errorf("fetches = %d, want 1 (cached)", idp.fetches)
	}
	// Key rotation: an unknown kid refetches, but not more than every 30s.
	idp.rotate()
	if _, err := s.Authenticate(ctx, idp.token(t, claims(nil))); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("rotated key before cooldown: err = %v", err)
	}
	clk.Add(minRefetch)
	if _, err := s.Authenticate(ctx, idp.token(t, claims(nil))); err != nil {
		t.Errorf("rotated key after cooldown: %v", err)
	}
	if idp.fetches != 2 {
		t.Errorf("fetches = %d, want 2", idp.fetches)
	}
	// A registered client with the same id gets its limits, and its tenant must match.
	c, _, _ := s.CreateClient(ctx, ClientSpec{Tenant: "acme", Scopes: []string{ScopeQuery}, Rate: 5, Quota: 100})
	p, err = s.Authenticate(ctx, idp.token(t, claims(func(m jwt.MapClaims) { m["azp"] = c.ID })))
	if err != nil || p.Rate != 5 || p.Quota != 100 {
		t.Errorf("registered external client: %+v, %v", p, err)
	}
}

func TestAdminHandler(t *testing.T) {
	s, _ := newTestServer(t, func(c *Config) {
		c.TenantExists = func(_ context.Context, id string) error {
			if id != "acme" {
				return verifier.ErrNotFound
			}
			return nil
		}
	})
	h := s.AdminHandler()
	do := func(method, path, body string) (*httptest.ResponseRecorder, map[string]any) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		var m map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &m)
		return rec, m
	}
	rec, m := do("POST", "/admin/v1/clients", `{"tenant":"acme","scopes":["iot-sim-fraud-prevention:query"],"rate":10,"quota":1000}`)
	if rec.Code != 201 || m["client_secret"] == nil || m["client_id"] == nil {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	id := m["client_id"].(string)
	for _, tt := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/admin/v1/clients", `{"tenant":"nobody","scopes":["iot-sim-fraud-prevention:query"]}`, 404},
		{"POST", "/admin/v1/clients", `{"tenant":"acme","scopes":["admin"]}`, 400},
		{"POST", "/admin/v1/clients", `{"tenant":"acme","scopes":[]}`, 400},
		{"POST", "/admin/v1/clients", `{"tenant":"acme","scopes":["x"],"bogus":1}`, 400},
		{"GET", "/admin/v1/clients/" + id, "", 200},
		{"GET", "/admin/v1/clients/cb-none", "", 404},
		{"POST", "/admin/v1/tokens", `{"client_id":"` + id + `","phone_number":"+8613912345678","ttl":"30s"}`, 201},
		{"POST", "/admin/v1/tokens", `{"client_id":"` + id + `","phone_number":"8613912345678"}`, 400},
		{"POST", "/admin/v1/tokens", `{"client_id":"` + id + `","phone_number":"+8613912345678","scopes":["iot-sim-fraud-prevention:bind"]}`, 400},
		{"POST", "/admin/v1/tokens", `{"client_id":"` + id + `","phone_number":"+8613912345678","ttl":"48h"}`, 400},
		{"POST", "/admin/v1/tokens", `{"client_id":"cb-none","phone_number":"+8613912345678"}`, 404},
	} {
		if rec, _ := do(tt.method, tt.path, tt.body); rec.Code != tt.want {
			t.Errorf("%s %s %s: %d, want %d: %s", tt.method, tt.path, tt.body, rec.Code, tt.want, rec.Body)
		}
	}
	rec, m = do("GET", "/admin/v1/clients", "")
	if rec.Code != 200 || strings.Contains(rec.Body.String(), "secret") || len(m["clients"].([]any)) != 1 {
		t.Errorf("list: %s", rec.Body)
	}
	if rec, _ := do("DELETE", "/admin/v1/clients/"+id, ""); rec.Code != 204 {
		t.Errorf("delete: %d", rec.Code)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{"100/s": 100, "60/m": 1, "7200/h": 2, "5": 5, "0.5/s": 0.5} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "x/s", "-1/s", "10/d"} {
		if _, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) accepted", in)
		}
	}
}

func TestMiddleware(t *testing.T) {
	s, _ := newTestServer(t, nil)
	c, _, _ := s.CreateClient(context.Background(), ClientSpec{Tenant: "acme", Scopes: []string{ScopeQuery}})
	tr, _ := s.mint(c, c.Scopes, "", time.Minute)
	h := s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := PrincipalFrom(r.Context())
		if !ok || p.Client != c.ID {
			t.Errorf("principal %+v", p)
		}
		w.WriteHeader(204)
	}), func(w http.ResponseWriter, _ *http.Request, err error) {
		if !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("err = %v", err)
		}
		w.WriteHeader(401)
	})
	for auth, want := range map[string]int{"Bearer " + tr.AccessToken: 204, "bearer " + tr.AccessToken: 204, "": 401, "Bearer x": 401} {
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("Authorization", auth)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("%.20q: %d, want %d", auth, rec.Code, want)
		}
	}
}

func TestTokenCacheBounded(t *testing.T) {
	c := newTokenCache(3)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	claims := Claims{RegisteredClaims: jwt.RegisteredClaims{ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))}}
	for i := range 10 {
		c.put(fmt.Sprint("token-", i), claims)
	}
	if len(c.entries) != 3 {
		t.Errorf("%d entries, want at most 3", len(c.entries))
	}
	c.put("t", claims)
	if _, ok := c.get("t", now, 0); !ok {
		t.Error("fresh entry not found")
	}
	if _, ok := c.get("t", now.Add(time.Minute), 0); ok {
		t.Error("expired entry returned")
	}
	if _, ok := c.get("t", now, 0); ok {
		t.Error("expired entry kept after it was found expired")
	}
	if _, ok := c.get("never-put", now, 0); ok {
		t.Error("unknown token found")
	}
}

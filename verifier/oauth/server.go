package oauth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cardbind/cardbind/protocol"
)

// Config configures the authorization server and validator.
type Config struct {
	// Issuer is the iss of the tokens issued and the base URL of the
	// discovery document: the verifier's public HTTPS URL, e.g.
	// "https://api.example.com". Required.
	Issuer string
	// Audience is the aud of the tokens issued and required of our own
	// tokens. Default: Issuer.
	Audience string
	// DataDir holds the signing key file (KeyFile, mode 0600), generated
	// on first start. Required.
	DataDir string
	// TokenTTL is the lifetime of client credentials tokens. Default 1h.
	TokenTTL time.Duration
	// DeviceTokenTTL is the default lifetime of three-legged tokens minted
	// by an operator, and MaxDeviceTokenTTL their upper bound. Defaults
	// 5m and 24h.
	DeviceTokenTTL    time.Duration
	MaxDeviceTokenTTL time.Duration
	// Scopes are the scopes clients may be granted. Default DefaultScopes().
	Scopes []string
	// ClientCacheTTL bounds how long a deleted client's tokens keep
	// working and a changed client's limits take to apply. Default 15s.
	ClientCacheTTL time.Duration
	// TenantExists, when set, is asked whether a new client's tenant
	// exists; an error wrapping verifier.ErrNotFound refuses the client.
	TenantExists func(ctx context.Context, tenant string) error
	// External, when set, also accepts tokens of an external OpenID
	// provider.
	External *ExternalConfig
	// HTTPClient fetches the external provider's JWKS. Default: a client
	// with a 10s timeout.
	HTTPClient *http.Client
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() error {
	if c.Issuer == "" {
		return errors.New("oauth: issuer not set")
	}
	if u, err := url.Parse(c.Issuer); err != nil || u.Scheme == "" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("oauth: issuer %q is not an absolute URL without query or fragment", c.Issuer)
	}
	c.Issuer = strings.TrimSuffix(c.Issuer, "/")
	if c.Audience == "" {
		c.Audience = c.Issuer
	}
	if c.TokenTTL <= 0 {
		c.TokenTTL = time.Hour
	}
	if c.DeviceTokenTTL <= 0 {
		c.DeviceTokenTTL = 5 * time.Minute
	}
	if c.MaxDeviceTokenTTL <= 0 {
		c.MaxDeviceTokenTTL = 24 * time.Hour
	}
	if len(c.Scopes) == 0 {
		c.Scopes = DefaultScopes()
	}
	if c.ClientCacheTTL <= 0 {
		c.ClientCacheTTL = 15 * time.Second
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.External != nil {
		return c.External.setDefaults()
	}
	return nil
}

// Server is the authorization server and token validator.
type Server struct {
	cfg     Config
	key     *signingKey
	clients *registry
	remote  *RemoteKeySet
	log     *slog.Logger
	// verified caches the claims of own tokens whose signature verified.
	verified *tokenCache
}

// NewServer loads (or, on first start, creates) the signing key and
// returns the server. Clients are kept in records.
func NewServer(records Records, cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	key, err := loadOrCreateKey(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, key: key, log: log, verified: newTokenCache(tokenCacheSize),
		clients: &registry{rec: records, allowed: cfg.Scopes, now: cfg.Now, ttl: cfg.ClientCacheTTL, cache: map[string]cachedClient{}}}
	if e := cfg.External; e != nil {
		s.remote = NewRemoteKeySet(e.JWKSURL, cfg.HTTPClient, e.RefreshInterval, cfg.Now, log)
	}
	return s, nil
}

// tokenCacheSize bounds the verified-token cache.
const tokenCacheSize = 16384

// TokenPath, JWKSPath and DiscoveryPath are where Handler serves.
const (
	TokenPath     = "/oauth2/token"
	JWKSPath      = "/.well-known/jwks.json"
	DiscoveryPath = "/.well-known/openid-configuration"
)

// Handler serves the public endpoints: POST TokenPath, GET JWKSPath and
// GET DiscoveryPath. Mount it at those three paths.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+TokenPath, s.token)
	mux.HandleFunc("GET "+JWKSPath, s.jwks)
	mux.HandleFunc("GET "+DiscoveryPath, s.discovery)
	return mux
}

// Claims are the claims of the access tokens the server issues (the JWT
// profile of RFC 9068).
type Claims struct {
	jwt.RegisteredClaims
	ClientID string `json:"client_id"`
	Scope    string `json:"scope"`
	Tenant   string `json:"tenant"`
	// PhoneNumber names the device of a three-legged token.
	PhoneNumber string `json:"phone_number,omitempty"`
}

// TokenResponse is a successful token response (RFC 6749 §5.1).
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
}

// mint signs a token for client with scopes and, for three-legged tokens,
// a phone number.
func (s *Server) mint(c *Client, scopes []string, phone string, ttl time.Duration) (*TokenResponse, error) {
	now := s.cfg.Now().UTC().Truncate(time.Second)
	jti := make([]byte, 16)
	_, _ = rand.Read(jti)
	claims := Claims{
		RegisteredClaims: jwt.RegisteredClaims{Issuer: s.cfg.Issuer, Subject: c.ID, Audience: jwt.ClaimStrings{s.cfg.Audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)), IssuedAt: jwt.NewNumericDate(now), ID: hex.EncodeToString(jti)},
		ClientID: c.ID, Scope: strings.Join(scopes, " "), Tenant: c.Tenant, PhoneNumber: phone,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	t.Header["kid"] = s.key.kid
	t.Header["typ"] = "at+jwt"
	signed, err := t.SignedString(s.key.priv)
	if err != nil {
		return nil, fmt.Errorf("oauth: sign token: %w", err)
	}
	return &TokenResponse{AccessToken: signed, TokenType: "Bearer", ExpiresIn: int64(ttl / time.Second), Scope: claims.Scope}, nil
}

// grantScopes resolves a requested scope parameter against what the
// client may have: empty means all of them (RFC 6749 §3.3 default).
func grantScopes(c *Client, requested []string) ([]string, error) {
	if len(requested) == 0 {
		return slices.Clone(c.Scopes), nil
	}
	for _, sc := range requested {
		if !slices.Contains(c.Scopes, sc) {
			return nil, fmt.Errorf("scope %q is not allowed to this client", sc)
		}
	}
	return requested, nil
}

// CreateClient registers a client and returns it with its secret, which
// is shown only this once.
func (s *Server) CreateClient(ctx context.Context, spec ClientSpec) (*Client, string, error) {
	if s.cfg.TenantExists != nil && protocol.ValidateID("tenant id", spec.Tenant) == nil {
		if err := s.cfg.TenantExists(ctx, spec.Tenant); err != nil {
			return nil, "", fmt.Errorf("tenant %s: %w", spec.Tenant, err)
		}
	}
	c, secret, err := s.clients.create(ctx, spec)
	if err != nil {
		return nil, "", err
	}
	s.log.Info("oauth client created", "client", c.ID, "tenant", c.Tenant, "scopes", strings.Join(c.Scopes, " "))
	return c, secret, nil
}

// Client returns a registered client (verifier.ErrNotFound when absent).
func (s *Server) Client(ctx context.Context, id string) (*Client, error) {
	return s.clients.get(ctx, id)
}

// Clients lists the registered clients.
func (s *Server) Clients(ctx context.Context) ([]*Client, error) { return s.clients.list(ctx) }

// DeleteClient deletes a client; its tokens stop working within
// Config.ClientCacheTTL.
func (s *Server) DeleteClient(ctx context.Context, id string) error {
	if err := s.clients.delete(ctx, id); err != nil {
		return err
	}
	s.log.Info("oauth client deleted", "client", id)
	return nil
}

// DeviceTokenSpec asks for a three-legged token: one device, identified by
// its phone number, on behalf of a client.
type DeviceTokenSpec struct {
	Client      string   `json:"client_id"`
	PhoneNumber string   `json:"phone_number"`
	Scopes      []string `json:"scopes,omitempty"`
	// TTL is the lifetime; 0: Config.DeviceTokenTTL.
	TTL time.Duration `json:"-"`
}

// MintDeviceToken mints a three-legged token for one device. Until a
// consent flow exists, an operator does this on the end user's behalf.
func (s *Server) MintDeviceToken(ctx context.Context, spec DeviceTokenSpec) (*TokenResponse, error) {
	phone, err := protocol.ParseMSISDN(spec.PhoneNumber)
	if err != nil {
		return nil, fmt.Errorf("%w: phone number: %w", ErrInvalid, err)
	}
	ttl := spec.TTL
	if ttl == 0 {
		ttl = s.cfg.DeviceTokenTTL
	}
	if ttl < time.Second || ttl > s.cfg.MaxDeviceTokenTTL {
		return nil, fmt.Errorf("%w: ttl %v is outside 1s..%v", ErrInvalid, ttl, s.cfg.MaxDeviceTokenTTL)
	}
	c, err := s.clients.get(ctx, spec.Client)
	if err != nil {
		return nil, err
	}
	var req []string
	for _, sc := range spec.Scopes {
		req = append(req, splitScopes(sc)...)
	}
	scopes, err := grantScopes(c, req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	t, err := s.mint(c, scopes, string(phone), ttl)
	if err != nil {
		return nil, err
	}
	s.log.Info("three-legged token minted", "client", c.ID, "tenant", c.Tenant, "ttl", ttl)
	return t, nil
}

// tokenError is an RFC 6749 §5.2 error response.
type tokenError struct {
	status int
	Code   string `json:"error"`
	Desc   string `json:"error_description,omitempty"`
}

func writeTokenError(w http.ResponseWriter, e tokenError, basic bool) {
	if e.status == http.StatusUnauthorized && basic {
		w.Header().Set("WWW-Authenticate", `Basic realm="cardbind", charset="UTF-8"`)
	}
	writeNoStore(w, e.status, e)
}

func writeNoStore(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// token is the token endpoint: the client credentials grant only.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	bad := func(code, desc string) {
		writeTokenError(w, tokenError{status: http.StatusBadRequest, Code: code, Desc: desc}, false)
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		bad("invalid_request", "the request body must be application/x-www-form-urlencoded")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		bad("invalid_request", "malformed form body")
		return
	}
	form := r.PostForm
	for k, v := range form {
		if len(v) > 1 {
			bad("invalid_request", "parameter "+k+" is repeated")
			return
		}
	}
	if len(r.URL.Query()) > 0 {
		bad("invalid_request", "parameters must be in the request body, not the URL")
		return
	}
	id, secret, basic := r.BasicAuth()
	if basic {
		// RFC 6749 §2.3.1: both are form-urlencoded before Basic encoding.
		var e1, e2 error
		id, e1 = url.QueryUnescape(id)
		secret, e2 = url.QueryUnescape(secret)
		if e1 != nil || e2 != nil {
			writeTokenError(w, tokenError{status: http.StatusUnauthorized, Code: "invalid_client", Desc: "malformed client credentials"}, true)
			return
		}
		if form.Has("client_secret") {
			bad("invalid_request", "use one client authentication method, not two")
			return
		}
		if form.Has("client_id") && form.Get("client_id") != id {
			bad("invalid_request", "client_id does not match the authenticated client")
			return
		}
	} else {
		id, secret = form.Get("client_id"), form.Get("client_secret")
		if id == "" || secret == "" {
			writeTokenError(w, tokenError{status: http.StatusUnauthorized, Code: "invalid_client", Desc: "client authentication is required"}, true)
			return
		}
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		bad("invalid_request", "grant_type is missing")
		return
	default:
		bad("unsupported_grant_type", "only client_credentials is supported")
		return
	}
	c, err := s.clients.authenticate(r.Context(), id, secret)
	if err != nil {
		if !errors.Is(err, ErrUnauthenticated) {
			s.log.Error("token endpoint", "err", err)
			writeNoStore(w, http.StatusInternalServerError, tokenError{Code: "server_error"})
			return
		}
		s.log.Info("client authentication failed", "client", id)
		writeTokenError(w, tokenError{status: http.StatusUnauthorized, Code: "invalid_client", Desc: "client authentication failed"}, basic)
		return
	}
	requested := splitScopes(form.Get("scope"))
	if form.Has("scope") && len(requested) == 0 {
		bad("invalid_scope", "scope is empty")
		return
	}
	for _, sc := range requested {
		if !validScopeToken(sc) {
			bad("invalid_scope", "malformed scope")
			return
		}
	}
	scopes, err := grantScopes(c, requested)
	if err != nil {
		bad("invalid_scope", err.Error())
		return
	}
	t, err := s.mint(c, scopes, "", s.cfg.TokenTTL)
	if err != nil {
		s.log.Error("token endpoint", "err", err)
		writeNoStore(w, http.StatusInternalServerError, tokenError{Code: "server_error"})
		return
	}
	writeNoStore(w, http.StatusOK, t)
}

func (s *Server) jwks(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(marshalJWKS(s.key.jwk))
}

// Discovery is the OpenID Provider metadata the server publishes
// (OpenID Connect Discovery 1.0, RFC 8414 fields).
type Discovery struct {
	Issuer                   string   `json:"issuer"`
	TokenEndpoint            string   `json:"token_endpoint"`
	JWKSURI                  string   `json:"jwks_uri"`
	ScopesSupported          []string `json:"scopes_supported"`
	GrantTypesSupported      []string `json:"grant_types_supported"`
	ResponseTypesSupported   []string `json:"response_types_supported"`
	SubjectTypesSupported    []string `json:"subject_types_supported"`
	TokenEndpointAuthMethods []string `json:"token_endpoint_auth_methods_supported"`
	IDTokenSigningAlgs       []string `json:"id_token_signing_alg_values_supported"`
	ClaimsSupported          []string `json:"claims_supported"`
	AccessTokenSigningAlgs   []string `json:"access_token_signing_alg_values_supported"`
}

func (s *Server) discovery(w http.ResponseWriter, _ *http.Request) {
	d := Discovery{
		Issuer: s.cfg.Issuer, TokenEndpoint: s.cfg.Issuer + TokenPath, JWKSURI: s.cfg.Issuer + JWKSPath,
		ScopesSupported: s.cfg.Scopes, GrantTypesSupported: []string{"client_credentials"},
		// No authorization endpoint yet: three-legged tokens are minted
		// by an operator until a consent flow exists.
		ResponseTypesSupported:   []string{},
		SubjectTypesSupported:    []string{"public"},
		TokenEndpointAuthMethods: []string{"client_secret_basic", "client_secret_post"},
		IDTokenSigningAlgs:       []string{"ES256"},
		AccessTokenSigningAlgs:   []string{"ES256"},
		ClaimsSupported:          []string{"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "tenant", "phone_number"},
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_ = json.NewEncoder(w).Encode(d)
}

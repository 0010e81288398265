package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// ExternalConfig names an external OpenID provider whose access tokens
// are accepted beside the server's own.
type ExternalConfig struct {
	// Issuer must equal the tokens' iss.
	Issuer string
	// Audience must be among the tokens' aud.
	Audience string
	// JWKSURL is where the provider publishes its keys (its discovery
	// document's jwks_uri).
	JWKSURL string
	// TenantClaim names the claim carrying the tenant. Default "tenant".
	TenantClaim string
	// PhoneClaim names the claim carrying the device's phone number in
	// three-legged tokens. Default "phone_number".
	PhoneClaim string
	// RefreshInterval is how long fetched keys are used before they are
	// fetched again. Default 10m.
	RefreshInterval time.Duration
	// Leeway allowed on exp, nbf and iat. Default 30s.
	Leeway time.Duration
}

func (e *ExternalConfig) setDefaults() error {
	if e.Issuer == "" || e.Audience == "" || e.JWKSURL == "" {
		return errors.New("oauth: external provider needs issuer, audience and jwks url")
	}
	if e.TenantClaim == "" {
		e.TenantClaim = "tenant"
	}
	if e.PhoneClaim == "" {
		e.PhoneClaim = "phone_number"
	}
	if e.RefreshInterval <= 0 {
		e.RefreshInterval = 10 * time.Minute
	}
	if e.Leeway <= 0 {
		e.Leeway = 30 * time.Second
	}
	return nil
}

// ownLeeway is the clock skew allowed on the server's own tokens.
const ownLeeway = 5 * time.Second

func unauth(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnauthenticated, fmt.Sprintf(format, args...))
}

// BearerToken returns the token of an "Authorization: Bearer" header.
func BearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "Bearer ") {
		return "", false
	}
	t := strings.TrimSpace(h[7:])
	return t, t != ""
}

// Authenticate validates a bearer token and returns its principal. Every
// failure wraps ErrUnauthenticated, except store failures looking the
// client up.
func (s *Server) Authenticate(ctx context.Context, token string) (*Principal, error) {
	if token == "" {
		return nil, unauth("no bearer token")
	}
	if len(token) > 8192 {
		return nil, unauth("token too long")
	}
	var peek jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &peek); err != nil {
		return nil, unauth("malformed token: %v", err)
	}
	switch {
	case peek.Issuer == s.cfg.Issuer:
		return s.authenticateOwn(ctx, token)
	case s.cfg.External != nil && peek.Issuer == s.cfg.External.Issuer:
		return s.authenticateExternal(ctx, token)
	}
	return nil, unauth("unknown issuer %q", peek.Issuer)
}

func (s *Server) authenticateOwn(ctx context.Context, token string) (*Principal, error) {
	c, ok := s.verified.get(token, s.cfg.Now(), ownLeeway)
	if !ok {
		var err error
		if c, err = s.verifyOwn(token); err != nil {
			return nil, err
		}
		s.verified.put(token, c)
	}
	p := &Principal{Client: c.ClientID, Tenant: c.Tenant, Scopes: splitScopes(c.Scope), PhoneNumber: c.PhoneNumber,
		Issuer: c.Issuer, TokenID: c.ID, ExpiresAt: c.ExpiresAt.Time}
	client, err := s.clients.cached(ctx, c.ClientID)
	if errors.Is(err, verifier.ErrNotFound) {
		return nil, unauth("client %s was deleted", c.ClientID)
	} else if err != nil {
		return nil, err
	}
	if client.Tenant != p.Tenant {
		return nil, unauth("client %s moved to another tenant", c.ClientID)
	}
	s.applyClient(p, client)
	return p, nil
}

// verifyOwn checks an own token's signature, header and claims.
func (s *Server) verifyOwn(token string) (Claims, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != s.key.kid {
			return nil, fmt.Errorf("unknown key id %q", kid)
		}
		if typ, _ := t.Header["typ"].(string); !strings.EqualFold(typ, "at+jwt") {
			return nil, fmt.Errorf("token type %q is not at+jwt", typ)
		}
		return &s.key.priv.PublicKey, nil
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(s.cfg.Issuer), jwt.WithAudience(s.cfg.Audience),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(ownLeeway), jwt.WithTimeFunc(s.cfg.Now))
	if err != nil {
		return Claims{}, unauth("%v", err)
	}
	if c.ClientID == "" || c.Tenant == "" || c.ID == "" {
		return Claims{}, unauth("token lacks client_id, tenant or jti")
	}
	if c.PhoneNumber != "" {
		if _, err := protocol.ParseMSISDN(c.PhoneNumber); err != nil {
			return Claims{}, unauth("phone_number claim: %v", err)
		}
	}
	return c, nil
}

// applyClient narrows the token's scopes to what the client may still
// have and takes its limits.
func (s *Server) applyClient(p *Principal, c *Client) {
	kept := p.Scopes[:0]
	for _, sc := range p.Scopes {
		if containsString(c.Scopes, sc) {
			kept = append(kept, sc)
		}
	}
	p.Scopes, p.Rate, p.Quota = kept, c.Rate, c.Quota
}

func (s *Server) authenticateExternal(ctx context.Context, token string) (*Principal, error) {
	e := s.cfg.External
	mc := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(token, mc, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		return s.remote.Key(ctx, kid, t.Method.Alg())
	}, jwt.WithValidMethods([]string{"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}),
		jwt.WithIssuer(e.Issuer), jwt.WithAudience(e.Audience), jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(), jwt.WithLeeway(e.Leeway), jwt.WithTimeFunc(s.cfg.Now))
	if err != nil {
		return nil, unauth("external token: %v", err)
	}
	str := func(name string) string { v, _ := mc[name].(string); return v }
	p := &Principal{Issuer: e.Issuer, External: true, TokenID: str("jti"), Tenant: str(e.TenantClaim), PhoneNumber: str(e.PhoneClaim)}
	if exp, err := mc.GetExpirationTime(); err == nil && exp != nil {
		p.ExpiresAt = exp.Time
	}
	for _, name := range []string{"client_id", "azp", "sub"} {
		if p.Client = str(name); p.Client != "" {
			break
		}
	}
	switch v := mc["scope"].(type) {
	case string:
		p.Scopes = splitScopes(v)
	}
	if p.Scopes == nil {
		switch v := mc["scp"].(type) {
		case string:
			p.Scopes = splitScopes(v)
		case []any:
			for _, x := range v {
				if sc, ok := x.(string); ok {
					p.Scopes = append(p.Scopes, sc)
				}
			}
		}
	}
	if p.Client == "" || p.Tenant == "" {
		return nil, unauth("external token lacks a client (client_id, azp or sub) or the %s claim", e.TenantClaim)
	}
	if p.PhoneNumber != "" {
		if _, err := protocol.ParseMSISDN(p.PhoneNumber); err != nil {
			return nil, unauth("external token %s claim: %v", e.PhoneClaim, err)
		}
	}
	// A client also registered here gets its limits; its tenant must agree.
	client, err := s.clients.cached(ctx, p.Client)
	switch {
	case err == nil:
		if client.Tenant != p.Tenant {
			return nil, unauth("external token's tenant differs from client %s's", p.Client)
		}
		p.Rate, p.Quota = client.Rate, client.Quota
	case !errors.Is(err, verifier.ErrNotFound):
		return nil, err
	}
	return p, nil
}

// Middleware authenticates requests by their bearer token and puts the
// Principal in the request context (PrincipalFrom). A request without a
// valid token goes to fail with an error wrapping ErrUnauthenticated, or
// another error when the store failed.
func (s *Server) Middleware(next http.Handler, fail func(w http.ResponseWriter, r *http.Request, err error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, _ := BearerToken(r)
		p, err := s.Authenticate(r.Context(), token)
		if err != nil {
			fail(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
	})
}

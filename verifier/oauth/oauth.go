// Package oauth is the verifier's OAuth 2.0 authorization server and
// access-token validator for the CAMARA API.
//
// It issues signed JWT access tokens (RFC 9068 profile, ES256) with the
// client credentials grant (RFC 6749 §4.4) at POST /oauth2/token, serves its
// keys at /.well-known/jwks.json and an OpenID discovery document at
// /.well-known/openid-configuration, keeps the registry of API clients
// (tenant, allowed scopes, rate and quota) in the store's record space, lets
// an operator mint three-legged tokens that name one device by its phone
// number, and validates bearer tokens — its own, and, when configured, those
// of an external OpenID provider — into a Principal.
//
// ES256 is the signing algorithm because it is the asymmetric algorithm
// external validators support most widely after RS256 (API gateways, Envoy,
// Nginx, Kong, every JOSE library and OpenID certified provider), with short
// keys and signatures; EdDSA is still missing from several gateways.
package oauth

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"
)

// Errors the package returns, checked with errors.Is.
var (
	// ErrUnauthenticated: the bearer token is missing, malformed, expired,
	// badly signed, from an unknown issuer, or its client was deleted. The
	// wrapped message says which, for logs; callers answer 401 whatever it is.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrInvalid: a request to create a client or mint a token is malformed.
	ErrInvalid = errors.New("invalid request")
)

// Scopes of the CAMARA IoT SIM Fraud Prevention APIs.
const (
	ScopeBind      = "iot-sim-fraud-prevention:bind"
	ScopeUnbind    = "iot-sim-fraud-prevention:unbind"
	ScopeQuery     = "iot-sim-fraud-prevention:query"
	ScopeSubscribe = "iot-sim-fraud-prevention-subscriptions:subscribe"
	ScopeSubRead   = "iot-sim-fraud-prevention-subscriptions:read"
	ScopeSubDelete = "iot-sim-fraud-prevention-subscriptions:delete"
)

// DefaultScopes returns the scopes clients may be granted unless
// Config.Scopes says otherwise.
func DefaultScopes() []string {
	return []string{ScopeBind, ScopeUnbind, ScopeQuery, ScopeSubscribe, ScopeSubRead, ScopeSubDelete}
}

// Principal is who an access token speaks for.
type Principal struct {
	// Client is the OAuth client id.
	Client string
	// Tenant owns the cards the client may see and change.
	Tenant string
	// Scopes granted by the token (and still allowed to the client).
	Scopes []string
	// PhoneNumber, set for three-legged tokens, is the E.164 number of the
	// one device the token is about.
	PhoneNumber string
	// Rate is the client's request rate limit per second and Quota its
	// request quota; 0 means the API's default applies.
	Rate  float64
	Quota int64
	// Issuer is the token's issuer; External reports an external provider.
	Issuer   string
	External bool
	// TokenID is the token's jti and ExpiresAt its expiry.
	TokenID   string
	ExpiresAt time.Time
}

// HasScope reports whether the principal was granted scope.
func (p *Principal) HasScope(scope string) bool { return slices.Contains(p.Scopes, scope) }

// ThreeLegged reports whether the token identifies one device.
func (p *Principal) ThreeLegged() bool { return p.PhoneNumber != "" }

type principalKey struct{}

// WithPrincipal returns a context carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal Middleware put in the context.
func PrincipalFrom(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok && p != nil
}

// splitScopes splits a space-delimited scope parameter (RFC 6749 §3.3),
// dropping duplicates and keeping order.
func splitScopes(s string) []string {
	var out []string
	for _, f := range strings.Fields(s) {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// validScopeToken reports whether s is a scope-token of RFC 6749 §3.3.
func validScopeToken(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c == 0x22 || c == 0x5c || c > 0x7e {
			return false
		}
	}
	return true
}

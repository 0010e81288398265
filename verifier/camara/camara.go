// Package camara serves the CAMARA IoT SIM Fraud Prevention API (v0.1):
// POST /bind, /unbind and /query for IMEIBIND and AREALIMIT, following the
// CAMARA specification and Commonalities rules (ErrorInfo bodies,
// x-correlator, device identification with two- and three-legged tokens,
// scopes, rate and quota), plus the extensions documented in its OpenAPI
// document, which it embeds and serves.
//
// Requests are authenticated by an Authenticator (package oauth's Server);
// cards are found through the store's indexes and bindings are changed
// through the service layer, both behind the small interfaces below.
package camara

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/oauth"
	"github.com/cardbind/cardbind/verifier/service"
)

// BasePath is where the API lives; mount the handler at BasePath + "/".
const BasePath = "/iot-sim-fraud-prevention/v0.1"

// OpenAPIPath is where the handler serves its OpenAPI document (no
// authentication needed).
const OpenAPIPath = BasePath + "/openapi.yaml"

//go:embed openapi/*.yaml
var openapiFS embed.FS

// OpenAPI returns the API's OpenAPI document: the CAMARA one plus
// cardbind's extensions, marked x-cardbind-extension.
func OpenAPI() []byte {
	data, err := openapiFS.ReadFile("openapi/iot-sim-fraud-prevention.yaml")
	if err != nil {
		panic(err) // embedded at build time
	}
	return data
}

// CardFinder finds a card by an index; verifier.Store implements it. A
// missing card is an error wrapping verifier.ErrNotFound.
type CardFinder interface {
	FindCard(ctx context.Context, by verifier.IndexKind, value string) (*verifier.Card, error)
}

// Binder changes bindings; *service.Service implements it. Errors:
// verifier.ErrNotFound (no such card in the tenant), service.ErrNotBound
// (Unbind of an unbound card), service.ErrInvalid.
type Binder interface {
	Card(ctx context.Context, tenant string, iccid protocol.ICCID) (*verifier.Card, error)
	Bind(ctx context.Context, tenant string, iccid protocol.ICCID, spec service.BindSpec, actor string) (*verifier.Card, error)
	Unbind(ctx context.Context, tenant string, iccid protocol.ICCID, actor string) (*verifier.Card, error)
}

// Authenticator turns a bearer token into a principal; *oauth.Server
// implements it. Invalid tokens are errors wrapping
// oauth.ErrUnauthenticated; other errors are the server's trouble.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (*oauth.Principal, error)
}

// Config configures the API.
type Config struct {
	// DisabledIdentifiers are device identifiers this deployment does not
	// support (IdentPhoneNumber, IdentNAI, IdentIPv4, IdentIPv6): a device
	// object carrying only those is 422 UNSUPPORTED_IDENTIFIER.
	DisabledIdentifiers []string
	// DefaultAreaRadius is the radius in metres of the circle an AREALIMIT
	// bind without limitArea restricts the card to, around its last known
	// location. Default 5000; 1..200000.
	DefaultAreaRadius int
	// DefaultRate (requests/s) and DefaultQuota (requests per
	// QuotaWindow) apply to clients that have none; 0 means unlimited.
	DefaultRate  float64
	DefaultQuota int64
	// QuotaWindow is the quota period. Default 24h (UTC days).
	QuotaWindow time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Handler serves the API.
type Handler struct {
	cards    CardFinder
	binder   Binder
	auth     Authenticator
	cfg      Config
	disabled map[string]bool
	limits   *limiter
	log      *slog.Logger
	mux      *http.ServeMux
}

// New returns the API handler.
func New(cards CardFinder, binder Binder, auth Authenticator, cfg Config, log *slog.Logger) (*Handler, error) {
	if cfg.DefaultAreaRadius == 0 {
		cfg.DefaultAreaRadius = 5000
	}
	if cfg.DefaultAreaRadius < 1 || cfg.DefaultAreaRadius > maxRadius {
		return nil, fmt.Errorf("camara: default area radius %d m is outside 1..%d", cfg.DefaultAreaRadius, maxRadius)
	}
	if cfg.DefaultRate < 0 || cfg.DefaultQuota < 0 {
		return nil, errors.New("camara: default rate and quota must not be negative")
	}
	if cfg.QuotaWindow <= 0 {
		cfg.QuotaWindow = 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{cards: cards, binder: binder, auth: auth, cfg: cfg, disabled: map[string]bool{},
		limits: newLimiter(cfg.QuotaWindow), log: log, mux: http.NewServeMux()}
	for _, id := range cfg.DisabledIdentifiers {
		if err := validIdentifier(id); err != nil {
			return nil, err
		}
		h.disabled[id] = true
	}
	h.mux.Handle("POST "+BasePath+"/bind", h.operation(opBind))
	h.mux.Handle("POST "+BasePath+"/unbind", h.operation(opUnbind))
	h.mux.Handle("POST "+BasePath+"/query", h.operation(opQuery))
	h.mux.HandleFunc("GET "+OpenAPIPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(OpenAPI())
	})
	return h, nil
}

var correlatorPattern = regexp.MustCompile(`^[a-zA-Z0-9-_:;.\/<>{}]{0,256}$`)

// ServeHTTP checks the x-correlator, echoes it (or a new one) on every
// response, and routes; wrong methods are 405 and unknown paths 404, both
// as ErrorInfo.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	corr := r.Header.Get("x-correlator")
	valid := correlatorPattern.MatchString(corr)
	if corr == "" || !valid {
		corr = newCorrelator()
	}
	w.Header().Set("x-correlator", corr)
	if !valid {
		writeError(w, errInvalidArgument("Invalid format: x-correlator"))
		return
	}
	_, pattern := h.mux.Handler(r)
	if pattern != "" {
		h.mux.ServeHTTP(w, r)
		return
	}
	switch r.URL.Path {
	case BasePath + "/bind", BasePath + "/unbind", BasePath + "/query":
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, errMethodNotAllowed)
	case OpenAPIPath:
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, errMethodNotAllowed)
	default:
		writeError(w, errNotFound)
	}
}

func newCorrelator() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80 // UUID v4
	s := hex.EncodeToString(b)
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}

// maxBody bounds request bodies.
const maxBody = 16 << 10

// authorize authenticates the request, checks the scope and charges the
// client's rate and quota.
func (h *Handler) authorize(r *http.Request, scope string) (*oauth.Principal, *apiError) {
	token, _ := oauth.BearerToken(r)
	p, err := h.auth.Authenticate(r.Context(), token)
	if err != nil {
		if errors.Is(err, oauth.ErrUnauthenticated) {
			h.log.Debug("camara: unauthenticated", "err", err)
			return nil, errUnauthenticated
		}
		h.log.Error("camara: authenticate", "err", err)
		return nil, errInternal
	}
	if !p.HasScope(scope) {
		return nil, errPermissionDenied
	}
	rate, quota := p.Rate, p.Quota
	if rate == 0 {
		rate = h.cfg.DefaultRate
	}
	if quota == 0 {
		quota = h.cfg.DefaultQuota
	}
	if e := h.limits.allow(p.Issuer+" "+p.Client, rate, quota, h.cfg.Now()); e != nil {
		return nil, e
	}
	return p, nil
}

// checkJSON requires an application/json body.
func checkJSON(r *http.Request) *apiError {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return errUnsupportedMedia
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return errUnsupportedMedia
	}
	return nil
}

// resolve finds the card a request is about: from the device object
// (two-legged) or the token (three-legged). A card of another tenant is
// not found, exactly like a missing one. It returns the DeviceResponse to
// echo (nil for three-legged calls).
func (h *Handler) resolve(ctx context.Context, p *oauth.Principal, d *device) (*verifier.Card, any, *apiError) {
	var l lookup
	var resp any
	switch {
	case p.ThreeLegged() && d != nil:
		return nil, nil, errUnnecessaryIdent
	case p.ThreeLegged():
		l = lookup{verifier.ByMSISDN, p.PhoneNumber}
	case d == nil:
		return nil, nil, errMissingIdentifier
	default:
		ident, lk, e := d.pick(h.disabled)
		if e != nil {
			return nil, nil, e
		}
		l, resp = lk, d.response(ident)
	}
	c, err := h.cards.FindCard(ctx, l.by, l.value)
	switch {
	case errors.Is(err, verifier.ErrNotFound):
		return nil, nil, errIdentifierNotFound
	case err != nil:
		h.log.Error("camara: find card", "by", l.by, "err", err)
		return nil, nil, errInternal
	case c.Tenant != p.Tenant:
		return nil, nil, errIdentifierNotFound
	}
	return c, resp, nil
}

// actor names the principal in the card's history.
func actor(p *oauth.Principal) string { return "camara:" + p.Client }

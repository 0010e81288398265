package camara

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/oauth"
	"github.com/cardbind/cardbind/verifier/webhook"
)

// SubscriptionsBasePath is where the subscriptions API lives; mount the
// handler at SubscriptionsBasePath + "/".
const SubscriptionsBasePath = "/iot-sim-fraud-prevention-subscriptions/v0.1"

// SubscriptionsOpenAPIPath is where the subscriptions handler serves its
// OpenAPI document (no authentication needed).
const SubscriptionsOpenAPIPath = SubscriptionsBasePath + "/openapi.yaml"

// SubscriptionsOpenAPI returns the subscriptions API's OpenAPI document:
// the CAMARA one plus cardbind's extensions, marked x-cardbind-extension.
func SubscriptionsOpenAPI() []byte {
	data, err := openapiFS.ReadFile("openapi/iot-sim-fraud-prevention-subscriptions.yaml")
	if err != nil {
		panic(err) // embedded at build time
	}
	return data
}

// Subscriber keeps subscriptions and sends their events;
// *webhook.Notifier implements it. Get, List and Delete see only the
// owner's subscriptions: another's is verifier.ErrNotFound. CheckSink
// errors wrap webhook.ErrSink.
type Subscriber interface {
	CheckSink(ctx context.Context, sink string) error
	Create(ctx context.Context, s *webhook.Subscription) error
	Get(ctx context.Context, owner, id string) (*webhook.Subscription, error)
	List(ctx context.Context, owner string) ([]webhook.Subscription, error)
	Delete(ctx context.Context, owner, id string) error
}

// SubscriptionsHandler serves the CAMARA IoT SIM Fraud Prevention
// Subscriptions API (v0.1): POST and GET /subscriptions, GET and DELETE
// /subscriptions/{subscriptionId}. It shares its Handler's
// authentication, rate and quota limits and device rules.
type SubscriptionsHandler struct {
	h    *Handler
	subs Subscriber
	mux  *http.ServeMux
}

// Subscriptions returns the subscriptions API handler, which keeps
// subscriptions in subs.
func (h *Handler) Subscriptions(subs Subscriber) *SubscriptionsHandler {
	s := &SubscriptionsHandler{h: h, subs: subs, mux: http.NewServeMux()}
	base := SubscriptionsBasePath + "/subscriptions"
	s.mux.HandleFunc("POST "+base, s.create)
	s.mux.HandleFunc("GET "+base, s.list)
	s.mux.HandleFunc("GET "+base+"/{id}", s.get)
	s.mux.HandleFunc("DELETE "+base+"/{id}", s.delete)
	s.mux.HandleFunc("GET "+SubscriptionsOpenAPIPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(SubscriptionsOpenAPI())
	})
	return s
}

// ServeHTTP checks the x-correlator, echoes it (or a new one) on every
// response, and routes; wrong methods are 405 and unknown paths 404, both
// as ErrorInfo.
func (s *SubscriptionsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	if _, pattern := s.mux.Handler(r); pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	base := SubscriptionsBasePath + "/subscriptions"
	rest, isItem := strings.CutPrefix(r.URL.Path, base+"/")
	switch {
	case r.URL.Path == base:
		w.Header().Set("Allow", "GET, POST")
		writeError(w, errMethodNotAllowed)
	case isItem && rest != "" && !strings.Contains(rest, "/"):
		w.Header().Set("Allow", "GET, DELETE")
		writeError(w, errMethodNotAllowed)
	case r.URL.Path == SubscriptionsOpenAPIPath:
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, errMethodNotAllowed)
	default:
		writeError(w, errNotFound)
	}
}

// Subscription API errors with the messages of the spec's examples.
var (
	errInvalidSink = newErr(400, "INVALID_SINK",
		"The sink field must be an accessible client address in order to notify the other end when an event occurs")
	errInvalidProtocol = newErr(400, "INVALID_PROTOCOL",
		"The value of Protocol can only be HTTP, MQTT3, MQTT5, AMQP, NATS, KAFKA")
	errOnlyHTTP          = newErr(400, "INVALID_PROTOCOL", "Only HTTP is supported")
	errInvalidCredential = newErr(400, "INVALID_CREDENTIAL", "Only Access token is supported")
	errTokenExpired      = newErr(400, "INVALID_CREDENTIAL", "The access token of sinkCredential has expired")
)

var (
	sinkPattern = regexp.MustCompile(`^https://.+$`)
	protocols   = []string{"HTTP", "MQTT3", "MQTT5", "AMQP", "NATS", "KAFKA"}
	eventTypes  = []string{webhook.TypeIMEIChange, webhook.TypeAreaChange}
)

// owner names the API client a subscription belongs to.
func owner(p *oauth.Principal) string { return p.Issuer + " " + p.Client }

// subRequest is a validated subscription request.
type subRequest struct {
	typ, sink    string
	token        string
	tokenExpires time.Time
	device       *device
	expires      time.Time
	maxEvents    int
	initialEvent *bool
}

// strict decodes a JSON object, refusing properties not in allowed; it
// names them with prefix in its messages.
func strict(raw json.RawMessage, prefix string, allowed ...string) (map[string]json.RawMessage, *apiError) {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || m == nil {
		if prefix == "" {
			return nil, errInvalidArgument("Request body is not a JSON object")
		}
		return nil, errInvalidArgument("Invalid format: " + strings.TrimSuffix(prefix, "."))
	}
	for k := range m {
		if !contains(allowed, k) {
			return nil, errInvalidArgument("Unknown property: " + prefix + k)
		}
	}
	return m, nil
}

// parseSubRequest validates a subscription request body. Checks run in
// the order of the fields' importance: types, protocol, sink, credential,
// config.
func parseSubRequest(data []byte, now time.Time) (*subRequest, *apiError) {
	f, e := strict(data, "", "protocol", "sink", "sinkCredential", "types", "config", "protocolSettings")
	if e != nil {
		return nil, e
	}
	req := &subRequest{}
	raw, ok := f["types"]
	if !ok {
		return nil, errInvalidArgument("SubscriptionType must be specified")
	}
	var types []string
	if json.Unmarshal(raw, &types) != nil || len(types) != 1 {
		return nil, errInvalidArgument("Invalid value: types (exactly one event type)")
	}
	if !contains(eventTypes, types[0]) {
		return nil, errInvalidArgument("The value of types can only be " + strings.Join(eventTypes, ","))
	}
	req.typ = types[0]

	raw, ok = f["protocol"]
	if !ok {
		return nil, errInvalidArgument("Protocol must be specified")
	}
	proto, _ := jsonString(raw)
	if !contains(protocols, proto) {
		return nil, errInvalidProtocol
	}
	if proto != "HTTP" {
		return nil, errOnlyHTTP
	}
	if raw, ok := f["protocolSettings"]; ok {
		ps, e := strict(raw, "protocolSettings.", "method")
		if e != nil {
			return nil, e
		}
		if m, ok := ps["method"]; ok {
			if s, _ := jsonString(m); s != http.MethodPost {
				return nil, errInvalidArgument("Invalid value: protocolSettings.method")
			}
		}
	}

	raw, ok = f["sink"]
	if !ok {
		return nil, errInvalidArgument("Sink must be specified")
	}
	req.sink, _ = jsonString(raw)
	if len(req.sink) > 2048 || !sinkPattern.MatchString(req.sink) {
		return nil, errInvalidSink
	}

	if raw, ok := f["sinkCredential"]; ok {
		if e := req.parseCredential(raw, now); e != nil {
			return nil, e
		}
	}

	raw, ok = f["config"]
	if !ok {
		return nil, errInvalidArgument("Config must be specified")
	}
	if e := req.parseConfig(raw, now); e != nil {
		return nil, e
	}
	return req, nil
}

func (req *subRequest) parseCredential(raw json.RawMessage, now time.Time) *apiError {
	var probe map[string]json.RawMessage
	if json.Unmarshal(raw, &probe) != nil || probe == nil {
		return errInvalidArgument("Invalid format: sinkCredential")
	}
	ct, _ := jsonString(probe["credentialType"])
	switch ct {
	case "ACCESSTOKEN":
	case "PLAIN", "PRIVATE_KEY_JWT":
		return errInvalidCredential
	default:
		return errInvalidArgument("The value of sinkCredential.credentialType can only be PLAIN, ACCESSTOKEN, PRIVATE_KEY_JWT")
	}
	c, e := strict(raw, "sinkCredential.", "credentialType", "accessToken", "accessTokenExpiresUtc", "accessTokenType")
	if e != nil {
		return e
	}
	tok, ok1 := jsonString(c["accessToken"])
	exp, ok2 := jsonString(c["accessTokenExpiresUtc"])
	typ, ok3 := jsonString(c["accessTokenType"])
	if !ok1 || !ok2 || !ok3 || tok == "" || len(tok) > 4096 {
		return errInvalidArgument("accessToken, accessTokenExpiresUtc and accessTokenType must be specified")
	}
	if typ != "bearer" {
		return errInvalidArgument("The value of sinkCredential.accessTokenType can only be bearer")
	}
	t, err := time.Parse(time.RFC3339Nano, exp)
	if err != nil {
		return errInvalidArgument("Invalid format: sinkCredential.accessTokenExpiresUtc")
	}
	if !t.After(now) {
		return errTokenExpired
	}
	req.token, req.tokenExpires = tok, t
	return nil
}

func (req *subRequest) parseConfig(raw json.RawMessage, now time.Time) *apiError {
	c, e := strict(raw, "config.", "subscriptionDetail", "subscriptionExpireTime", "subscriptionMaxEvents", "initialEvent")
	if e != nil {
		return e
	}
	raw, ok := c["subscriptionDetail"]
	if !ok {
		return errInvalidArgument("SubscriptionDetail must be specified")
	}
	d, e := strict(raw, "config.subscriptionDetail.", "device")
	if e != nil {
		return e
	}
	if dev, ok := d["device"]; ok {
		if req.device, e = parseDevice(dev); e != nil {
			return e
		}
	}
	if raw, ok := c["subscriptionExpireTime"]; ok {
		s, _ := jsonString(raw)
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil || len(s) > 64 {
			return errInvalidArgument("Invalid format: subscriptionExpireTime")
		}
		if !t.After(now) {
			return errInvalidArgument("Invalid value: subscriptionExpireTime is in the past")
		}
		req.expires = t
	}
	if raw, ok := c["subscriptionMaxEvents"]; ok {
		n, isInt := intValue(raw)
		if !isInt {
			return errInvalidArgument("Invalid format: subscriptionMaxEvents")
		}
		if n < 1 || n > 1000000 {
			return errOutOfRange("Invalid value: subscriptionMaxEvents (1 to 1000000)")
		}
		req.maxEvents = int(n)
	}
	if raw, ok := c["initialEvent"]; ok {
		var b bool
		if json.Unmarshal(raw, &b) != nil {
			return errInvalidArgument("Invalid format: initialEvent")
		}
		req.initialEvent = &b
	}
	return nil
}

// create handles POST /subscriptions. Checks run in this order:
// authentication (401), scope (403), rate and quota (429), media type
// (415), body (400), sink reachability rules (400 INVALID_SINK), device
// identification (422, 404).
func (s *SubscriptionsHandler) create(w http.ResponseWriter, r *http.Request) {
	h := s.h
	p, e := h.authorize(r, oauth.ScopeSubscribe)
	if e == nil {
		e = checkJSON(r)
	}
	var req *subRequest
	if e == nil {
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			e = errInvalidArgument("Request body too large or unreadable")
		} else {
			req, e = parseSubRequest(data, h.cfg.Now())
		}
	}
	if e == nil {
		if err := s.subs.CheckSink(r.Context(), req.sink); err != nil {
			h.log.Info("camara: sink refused", "client", p.Client, "err", err)
			e = errInvalidSink
		}
	}
	var card *verifier.Card
	var dev any
	if e == nil {
		card, dev, e = h.resolve(r.Context(), p, req.device)
	}
	if e != nil {
		writeError(w, e)
		return
	}
	now := h.cfg.Now().UTC()
	sub := &webhook.Subscription{ID: webhook.NewID(), Tenant: p.Tenant, Owner: owner(p), ICCID: card.ICCID,
		ThreeLegged: p.ThreeLegged(), Type: req.typ, Protocol: "HTTP", Sink: req.sink,
		Token: req.token, TokenExpires: req.tokenExpires, StartsAt: now, ExpiresAt: req.expires,
		MaxEvents: req.maxEvents, InitialEvent: req.initialEvent != nil && *req.initialEvent}
	if dev != nil {
		sub.Device, _ = json.Marshal(dev)
	} else {
		sub.Device, _ = json.Marshal(map[string]string{IdentPhoneNumber: p.PhoneNumber})
	}
	if err := s.subs.Create(r.Context(), sub); err != nil {
		h.log.Error("camara: create subscription", "err", err)
		writeError(w, errInternal)
		return
	}
	h.log.Info("camara: subscription created", "subscription", sub.ID, "tenant", sub.Tenant, "client", p.Client,
		"iccid", sub.ICCID, "type", sub.Type)
	writeJSON(w, http.StatusCreated, subscriptionView(sub, req.initialEvent))
}

// subscriptionView is the Subscription response body. Three-legged
// subscriptions carry no device.
func subscriptionView(s *webhook.Subscription, initialEvent *bool) map[string]any {
	detail := map[string]any{}
	if !s.ThreeLegged {
		detail["device"] = s.Device
	}
	cfg := map[string]any{"subscriptionDetail": detail}
	if !s.ExpiresAt.IsZero() {
		cfg["subscriptionExpireTime"] = s.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	if s.MaxEvents > 0 {
		cfg["subscriptionMaxEvents"] = s.MaxEvents
	}
	if initialEvent != nil {
		cfg["initialEvent"] = *initialEvent
	} else if s.InitialEvent {
		cfg["initialEvent"] = true
	}
	v := map[string]any{"protocol": s.Protocol, "sink": s.Sink, "types": []string{s.Type}, "config": cfg,
		"id": s.ID, "startsAt": s.StartsAt.UTC().Format(time.RFC3339Nano), "status": "ACTIVE"}
	if !s.ExpiresAt.IsZero() {
		v["expiresAt"] = s.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	return v
}

// visible reports whether principal p may see subscription s: its
// owner, and for three-legged tokens only for the token's own device.
func visible(p *oauth.Principal, sub *webhook.Subscription, own *verifier.Card) bool {
	if !p.ThreeLegged() {
		return true
	}
	return own != nil && own.ICCID == sub.ICCID
}

// principal authorizes a read or delete and, for three-legged tokens,
// finds the token's card (nil if there is none: nothing is visible).
func (s *SubscriptionsHandler) principal(r *http.Request, scope string) (*oauth.Principal, *verifier.Card, *apiError) {
	p, e := s.h.authorize(r, scope)
	if e != nil {
		return nil, nil, e
	}
	if !p.ThreeLegged() {
		return p, nil, nil
	}
	card, _, e := s.h.resolve(r.Context(), p, nil)
	if e != nil && e != errIdentifierNotFound {
		return nil, nil, e
	}
	return p, card, nil
}

// list handles GET /subscriptions.
func (s *SubscriptionsHandler) list(w http.ResponseWriter, r *http.Request) {
	p, own, e := s.principal(r, oauth.ScopeSubRead)
	if e != nil {
		writeError(w, e)
		return
	}
	subs, err := s.subs.List(r.Context(), owner(p))
	if err != nil {
		s.h.log.Error("camara: list subscriptions", "err", err)
		writeError(w, errInternal)
		return
	}
	out := []map[string]any{}
	for i := range subs {
		if visible(p, &subs[i], own) {
			out = append(out, subscriptionView(&subs[i], nil))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// find returns the subscription named in the path, if p may see it.
func (s *SubscriptionsHandler) find(r *http.Request, scope string) (*oauth.Principal, *webhook.Subscription, *apiError) {
	p, own, e := s.principal(r, scope)
	if e != nil {
		return nil, nil, e
	}
	sub, err := s.subs.Get(r.Context(), owner(p), r.PathValue("id"))
	switch {
	case errors.Is(err, verifier.ErrNotFound):
		return nil, nil, errNotFound
	case err != nil:
		s.h.log.Error("camara: read subscription", "err", err)
		return nil, nil, errInternal
	case !visible(p, sub, own):
		return nil, nil, errNotFound
	}
	return p, sub, nil
}

// get handles GET /subscriptions/{id}.
func (s *SubscriptionsHandler) get(w http.ResponseWriter, r *http.Request) {
	_, sub, e := s.find(r, oauth.ScopeSubRead)
	if e != nil {
		writeError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, subscriptionView(sub, nil))
}

// delete handles DELETE /subscriptions/{id}: 204, and the subscription
// ends with SUBSCRIPTION_DELETED.
func (s *SubscriptionsHandler) delete(w http.ResponseWriter, r *http.Request) {
	p, sub, e := s.find(r, oauth.ScopeSubDelete)
	if e == nil {
		err := s.subs.Delete(r.Context(), owner(p), sub.ID)
		switch {
		case errors.Is(err, verifier.ErrNotFound):
			e = errNotFound // ended meanwhile
		case err != nil:
			s.h.log.Error("camara: delete subscription", "err", err)
			e = errInternal
		}
	}
	if e != nil {
		writeError(w, e)
		return
	}
	s.h.log.Info("camara: subscription deleted", "subscription", sub.ID, "client", p.Client)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// Package api serves the verifier's operator-facing HTTP surface: the
// admin API (operator credential), the device enrolment endpoint, health
// and readiness, and Prometheus metrics. The CAMARA API for customers is
// mounted beside it by its own package.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/inventory"
	"github.com/cardbind/cardbind/verifier/service"
)

// maxBody bounds JSON request bodies (imports stream and are not bounded).
const maxBody = 1 << 20

// Options configures the handler.
type Options struct {
	// OperatorTokenHash is the SHA-256 of the operator's bearer token.
	OperatorTokenHash []byte
	// Ready reports whether the verifier can serve (store open, broker up).
	Ready func() error
	// Metrics serves /metrics; nil serves 404.
	Metrics http.Handler
	// BrokerURL is the MQTT address given to new alert subscribers.
	BrokerURL string
	// Routes are mounted beside the built-in ones: the CAMARA API, the
	// token endpoint, the operator's client administration.
	Routes []Route
}

// Route is a handler mounted on the API's mux.
type Route struct {
	// Pattern is an http.ServeMux pattern, e.g. "/iot-sim-fraud-prevention/v0.1/".
	Pattern string
	Handler http.Handler
	// Operator routes require the operator credential.
	Operator bool
}

// Handler returns the HTTP handler.
func Handler(svc *service.Service, opts Options, log *slog.Logger) http.Handler {
	a := &api{svc: svc, opts: opts, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	mux.HandleFunc("GET /readyz", a.ready)
	if opts.Metrics != nil {
		mux.Handle("GET /metrics", opts.Metrics)
	}
	mux.HandleFunc("POST "+protocol.EnrollPath, a.enroll)

	admin := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, a.operator(h)) }
	admin("POST /admin/v1/tenants", a.createTenant)
	admin("GET /admin/v1/tenants", a.listTenants)
	admin("POST /admin/v1/tenants/{tenant}/subscribers", a.createSubscriber)
	admin("POST /admin/v1/tenants/{tenant}/enrollment-tokens", a.createToken)
	admin("POST /admin/v1/cards/import", a.importCards)
	admin("GET /admin/v1/cards/{iccid}", a.getCard)
	admin("PUT /admin/v1/cards/{iccid}/binding", a.bind)
	admin("DELETE /admin/v1/cards/{iccid}/binding", a.unbind)
	admin("POST /admin/v1/cards/{iccid}/block", a.block)
	admin("POST /admin/v1/cards/{iccid}/resume", a.resume)
	admin("GET /admin/v1/cards/{iccid}/history", a.history)
	admin("GET /admin/v1/devices/{id}", a.getDevice)
	admin("POST /admin/v1/devices/{id}/commands", a.sendCommand)
	for _, r := range opts.Routes {
		h := r.Handler
		if r.Operator {
			h = a.operator(h.ServeHTTP)
		}
		mux.Handle(r.Pattern, h)
	}
	return mux
}

type api struct {
	svc  *service.Service
	opts Options
	log  *slog.Logger
}

// HashToken returns the hash Options.OperatorTokenHash holds.
func HashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

func (a *api) operator(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || len(a.opts.OperatorTokenHash) == 0 || subtle.ConstantTimeCompare(HashToken(token), a.opts.OperatorTokenHash) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="cardbind-admin"`)
			writeError(w, http.StatusUnauthorized, "operator credential missing or wrong")
			return
		}
		next(w, r)
	})
}

func (a *api) ready(w http.ResponseWriter, _ *http.Request) {
	if a.opts.Ready != nil {
		if err := a.opts.Ready(); err != nil {
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
	}
	writeJSON(w, 200, map[string]string{"status": "ready"})
}

func (a *api) enroll(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, protocol.MaxMessageSize+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	req, err := protocol.DecodeEnrollRequest(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	resp, err := a.svc.Enroll(r.Context(), req)
	if err != nil {
		a.fail(w, err)
		return
	}
	data, err := protocol.EncodeEnrollResponse(resp)
	if err != nil {
		a.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(data)
}

func (a *api) createTenant(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	t, err := a.svc.CreateTenant(r.Context(), req.ID, req.Name)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, t)
}

func (a *api) listTenants(w http.ResponseWriter, r *http.Request) {
	ts, err := a.svc.Tenants(r.Context())
	if err != nil {
		a.fail(w, err)
		return
	}
	if ts == nil {
		ts = []service.Tenant{}
	}
	writeJSON(w, 200, ts)
}

func (a *api) createSubscriber(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	tenant := r.PathValue("tenant")
	user, pass, err := a.svc.CreateSubscriber(r.Context(), tenant, req.Name)
	if err != nil {
		a.fail(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, map[string]string{"username": user, "password": pass,
		"topic_filter": protocol.AlertFilter(tenant), "broker_url": a.opts.BrokerURL})
}

func (a *api) createToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		TTL string `json:"ttl"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	ttl := 24 * time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("ttl %q: want a duration such as 24h", req.TTL))
			return
		}
		ttl = d
	}
	token, exp, err := a.svc.CreateEnrollToken(r.Context(), r.PathValue("tenant"), ttl, "operator")
	if err != nil {
		a.fail(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, map[string]any{"token": token, "expires": exp})
}

// importCards streams NDJSON back: one line per bad input line, a progress
// line per batch, and the summary last.
func (a *api) importCards(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	format := inventory.Format(q.Get("format"))
	if format == "" {
		format = inventory.CSV
	}
	if format != inventory.CSV && format != inventory.NDJSON {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("format %q: want csv or ndjson", format))
		return
	}
	dry := q.Get("dry_run") == "true" || q.Get("dry_run") == "1"
	// The upload is read while progress is written: without full duplex,
	// the HTTP/1 server discards up to 256 KiB of the unread body when the
	// first progress line goes out, silently losing those lines.
	if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
		a.log.Warn("import: no full duplex; large uploads may be cut", "err", err)
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	emit := func(v any) {
		_ = enc.Encode(v)
		if flusher != nil {
			flusher.Flush()
		}
	}
	sum, err := a.svc.Import(r.Context(), r.Body, format, q.Get("tenant"), dry, func(e service.ImportEvent) { emit(e) })
	out := map[string]any{"summary": sum}
	if err != nil {
		out["error"] = err.Error()
		a.log.Error("import failed", "err", err)
	}
	emit(out)
}

func (a *api) iccid(w http.ResponseWriter, r *http.Request) (protocol.ICCID, bool) {
	c, err := protocol.ParseICCID(r.PathValue("iccid"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	return c, true
}

func (a *api) getCard(w http.ResponseWriter, r *http.Request) {
	iccid, ok := a.iccid(w, r)
	if !ok {
		return
	}
	c, err := a.svc.Card(r.Context(), "", iccid)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, c)
}

// BindRequest is the admin API's binding body.
type BindRequest struct {
	IMEIs      []string       `json:"imeis"`
	TAC        string         `json:"tac"`
	Mode       string         `json:"mode"`
	Grace      string         `json:"grace"`
	AutoResume *bool          `json:"auto_resume"`
	Area       *verifier.Area `json:"area"`
}

func (a *api) bind(w http.ResponseWriter, r *http.Request) {
	iccid, ok := a.iccid(w, r)
	if !ok {
		return
	}
	var req BindRequest
	if !readJSON(w, r, &req) {
		return
	}
	spec := service.BindSpec{TAC: req.TAC, AutoResume: req.AutoResume, Area: req.Area}
	for _, s := range req.IMEIs {
		m, err := protocol.ParseIMEI(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		spec.IMEIs = append(spec.IMEIs, m)
	}
	switch req.Mode {
	case "", "block":
	case "alert":
		spec.AlertOnly = true
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("mode %q: want block or alert", req.Mode))
		return
	}
	if req.Grace != "" {
		d, err := time.ParseDuration(req.Grace)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("grace %q: want a duration such as 30s", req.Grace))
			return
		}
		spec.Grace = d
	}
	c, err := a.svc.Bind(r.Context(), "", iccid, spec, "operator")
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, c)
}

func (a *api) unbind(w http.ResponseWriter, r *http.Request) {
	a.cardAction(w, r, a.svc.Unbind)
}

func (a *api) block(w http.ResponseWriter, r *http.Request) { a.cardAction(w, r, a.svc.Block) }

func (a *api) resume(w http.ResponseWriter, r *http.Request) { a.cardAction(w, r, a.svc.Resume) }

func (a *api) cardAction(w http.ResponseWriter, r *http.Request,
	do func(ctx context.Context, tenant string, iccid protocol.ICCID, actor string) (*verifier.Card, error)) {
	iccid, ok := a.iccid(w, r)
	if !ok {
		return
	}
	c, err := do(r.Context(), "", iccid, "operator")
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, c)
}

func (a *api) history(w http.ResponseWriter, r *http.Request) {
	iccid, ok := a.iccid(w, r)
	if !ok {
		return
	}
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	h, err := a.svc.History(r.Context(), "", iccid, after, limit)
	if err != nil {
		a.fail(w, err)
		return
	}
	if h == nil {
		h = []verifier.HistoryEntry{}
	}
	writeJSON(w, 200, h)
}

func (a *api) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := a.svc.Device(r.Context(), "", r.PathValue("id"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, 200, d)
}

// sendCommand signs and publishes a command: {"kind": "report_now" |
// "radio_off" | "radio_on", "ttl": "5m"}.
func (a *api) sendCommand(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Kind protocol.CommandKind `json:"kind"`
		TTL  string               `json:"ttl"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("ttl %q: want a duration such as 5m", req.TTL))
			return
		}
		ttl = d
	}
	c, err := a.svc.SendCommand(r.Context(), "", r.PathValue("id"), req.Kind, ttl, "operator")
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, c)
}

// fail maps service errors to status codes.
func (a *api) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, service.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, service.ErrTokenInvalid):
		writeError(w, http.StatusUnauthorized, err.Error())
	case errors.Is(err, verifier.ErrNotFound):
		writeError(w, http.StatusNotFound, "not found")
	case errors.Is(err, verifier.ErrExists), errors.Is(err, service.ErrNotBound):
		writeError(w, http.StatusConflict, err.Error())
	default:
		a.log.Error("request failed", "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

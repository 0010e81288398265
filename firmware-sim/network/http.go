package network

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Watch long-poll limits.
const (
	defaultWatchWait = 25 * time.Second
	maxWatchWait     = 60 * time.Second
)

// maxBody bounds request bodies.
const maxBody = 1 << 16

// maxIdempotencyKeys bounds the remembered Idempotency-Key answers; the
// oldest are forgotten first.
const maxIdempotencyKeys = 10000

// ErrorBody is the JSON body of every error answer.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Handler serves a Network over HTTP JSON. See docs/firmware-sim.md for the
// API.
type Handler struct {
	net *Network
	log *slog.Logger
	mux *http.ServeMux

	idemMu sync.Mutex
	idem   map[string]idemEntry
	order  []string
}

type idemEntry struct {
	fingerprint [32]byte // method, path and body of the first request
	status      int
	body        []byte
}

// NewHandler returns the HTTP API of n. A nil logger discards logs.
func NewHandler(n *Network, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{net: n, log: log, mux: http.NewServeMux(), idem: map[string]idemEntry{}}
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	h.mux.HandleFunc("POST /v1/cards", h.idempotent(h.register))
	h.mux.HandleFunc("GET /v1/cards", h.list)
	h.mux.HandleFunc("GET /v1/cards/{iccid}", h.card)
	h.mux.HandleFunc("POST /v1/cards/{iccid}/block", h.idempotent(h.block))
	h.mux.HandleFunc("POST /v1/cards/{iccid}/resume", h.idempotent(h.resume))
	h.mux.HandleFunc("GET /v1/cards/{iccid}/watch", h.watch)
	h.mux.HandleFunc("POST /v1/cards/{iccid}/attach", h.attachCard)
	h.mux.HandleFunc("POST /v1/attach", h.attach)
	h.mux.HandleFunc("POST /v1/detach", h.detach)
	h.mux.HandleFunc("POST /v1/location", h.location)
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

type apiFunc func(r *http.Request, body []byte) (int, any)

// idempotent reads the body, runs fn and, when the request carries an
// Idempotency-Key, remembers the answer: a repeat with the same key gets the
// same answer (and the header Idempotent-Replayed: true) without running fn
// again; the same key on a different request is refused with 422.
func (h *Handler) idempotent(fn apiFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, "TOO_LARGE", err.Error())
			return
		}
		key := r.Header.Get("Idempotency-Key")
		if key == "" {
			status, v := fn(r, body)
			writeJSON(w, status, v)
			return
		}
		fp := sha256.Sum256(append([]byte(r.Method+" "+r.URL.Path+"\n"), body...))
		h.idemMu.Lock()
		defer h.idemMu.Unlock()
		if e, ok := h.idem[key]; ok {
			if e.fingerprint != fp {
				writeError(w, http.StatusUnprocessableEntity, "IDEMPOTENCY_KEY_REUSED",
					"Idempotency-Key was used for a different request")
				return
			}
			w.Header().Set("Idempotent-Replayed", "true")
			writeRaw(w, e.status, e.body)
			return
		}
		status, v := fn(r, body)
		raw, err := json.Marshal(v)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "INTERNAL", err.Error())
			return
		}
		if status < 500 {
			h.idem[key] = idemEntry{fingerprint: fp, status: status, body: raw}
			h.order = append(h.order, key)
			if len(h.order) > maxIdempotencyKeys {
				delete(h.idem, h.order[0])
				h.order = h.order[1:]
			}
		}
		writeRaw(w, status, raw)
	}
}

func (h *Handler) register(r *http.Request, body []byte) (int, any) {
	var spec CardSpec
	if err := decode(body, &spec); err != nil {
		return errorAnswer(err)
	}
	card, created, err := h.net.Register(r.Context(), spec)
	if err != nil {
		return errorAnswer(err)
	}
	if created {
		h.log.Info("card registered", "iccid", card.ICCID, "imsi", card.IMSI, "ip", card.IP)
		return http.StatusCreated, card
	}
	return http.StatusOK, card
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := Filter{IMSI: q.Get("imsi"), MSISDN: q.Get("msisdn")}
	if b := q.Get("blocked"); b != "" {
		v, err := strconv.ParseBool(b)
		if err != nil {
			writeError(w, http.StatusBadRequest, "INVALID", "blocked: want true or false")
			return
		}
		f.Blocked = &v
	}
	cards, err := h.net.Cards(r.Context(), f)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"cards": cards})
}

func (h *Handler) card(w http.ResponseWriter, r *http.Request) {
	card, err := h.net.Card(r.Context(), r.PathValue("iccid"))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, card)
}

// BlockRequest is the optional body of a block call.
type BlockRequest struct {
	Reason string `json:"reason,omitempty"`
}

func (h *Handler) block(r *http.Request, body []byte) (int, any) {
	var req BlockRequest
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decode(body, &req); err != nil {
			return errorAnswer(err)
		}
	}
	card, err := h.net.Block(r.Context(), r.PathValue("iccid"), req.Reason)
	if err != nil {
		return errorAnswer(err)
	}
	h.log.Info("card blocked", "iccid", card.ICCID, "reason", req.Reason)
	return http.StatusOK, card
}

func (h *Handler) resume(r *http.Request, _ []byte) (int, any) {
	card, err := h.net.Resume(r.Context(), r.PathValue("iccid"))
	if err != nil {
		return errorAnswer(err)
	}
	h.log.Info("card resumed", "iccid", card.ICCID)
	return http.StatusOK, card
}

func (h *Handler) watch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after uint64
	if s := q.Get("after"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "INVALID", "after: want a version number")
			return
		}
		after = v
	}
	wait := defaultWatchWait
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, "INVALID", "wait: want a duration such as 25s")
			return
		}
		wait = min(d, maxWatchWait)
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	card, err := h.net.Watch(ctx, r.PathValue("iccid"), after)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		if r.Context().Err() != nil {
			return // the caller went away
		}
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, card)
}

func (h *Handler) attach(w http.ResponseWriter, r *http.Request) {
	var req AttachRequest
	if !readRequest(w, r, &req) {
		return
	}
	res, err := h.net.Attach(r.Context(), req)
	if err != nil {
		fail(w, err)
		return
	}
	h.log.Info("attach", "iccid", req.ICCID, "imei", req.IMEI, "result", res.Result, "cause", res.Cause,
		"eir", res.EquipmentStatus)
	writeJSON(w, http.StatusOK, res)
}

// DeviceAttach is the body of POST /v1/cards/{iccid}/attach: a device
// with no simulated modem (a thief's phone, say) attaches with a card the
// network knows, so tests can move a card into foreign equipment.
type DeviceAttach struct {
	IMEI string `json:"imei"`
	Cell *Cell  `json:"cell,omitempty"`
}

func (h *Handler) attachCard(w http.ResponseWriter, r *http.Request) {
	var req DeviceAttach
	if !readRequest(w, r, &req) {
		return
	}
	res, err := h.net.AttachCard(r.Context(), r.PathValue("iccid"), req)
	if err != nil {
		fail(w, err)
		return
	}
	h.log.Info("attach", "iccid", res.Card.ICCID, "imei", req.IMEI, "result", res.Result, "cause", res.Cause,
		"eir", res.EquipmentStatus, "device", "foreign")
	writeJSON(w, http.StatusOK, res)
}

// DetachRequest is the body of a detach call.
type DetachRequest struct {
	ICCID string `json:"iccid"`
	IMEI  string `json:"imei,omitempty"`
}

func (h *Handler) detach(w http.ResponseWriter, r *http.Request) {
	var req DetachRequest
	if !readRequest(w, r, &req) {
		return
	}
	card, err := h.net.Detach(r.Context(), req.ICCID, req.IMEI)
	if err != nil {
		fail(w, err)
		return
	}
	h.log.Info("detach", "iccid", req.ICCID, "imei", req.IMEI)
	writeJSON(w, http.StatusOK, card)
}

// location answers POST /v1/location: a LocationUpdate, answered with
// the card.
func (h *Handler) location(w http.ResponseWriter, r *http.Request) {
	var req LocationUpdate
	if !readRequest(w, r, &req) {
		return
	}
	card, err := h.net.UpdateLocation(r.Context(), req)
	if err != nil {
		fail(w, err)
		return
	}
	h.log.Info("location update", "iccid", req.ICCID, "imei", req.IMEI, "cell", req.Cell.String())
	writeJSON(w, http.StatusOK, card)
}

// readRequest decodes the request body into v; when it cannot, it
// answers the error and returns false.
func readRequest(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err == nil {
		err = decode(body, v)
	}
	if err != nil {
		fail(w, err)
		return false
	}
	return true
}

// fail answers err with its status and problem body.
func fail(w http.ResponseWriter, err error) {
	status, v := errorAnswer(err)
	writeJSON(w, status, v)
}

func decode(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.Join(ErrInvalid, err)
	}
	return nil
}

// errorAnswer maps an error to a status and an ErrorBody.
func errorAnswer(err error) (int, any) {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound, ErrorBody{"NOT_FOUND", err.Error()}
	case errors.Is(err, ErrConflict):
		return http.StatusConflict, ErrorBody{"CONFLICT", err.Error()}
	case errors.Is(err, ErrNotAttached):
		return http.StatusConflict, ErrorBody{"NOT_ATTACHED", err.Error()}
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest, ErrorBody{"INVALID", err.Error()}
	}
	return http.StatusInternalServerError, ErrorBody{"INTERNAL", err.Error()}
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, ErrorBody{code, msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		raw = []byte(`{"code":"INTERNAL","message":"encoding failed"}`)
	}
	writeRaw(w, status, raw)
}

func writeRaw(w http.ResponseWriter, status int, raw []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(raw, '\n'))
}

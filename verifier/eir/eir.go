// Package eir answers equipment identity checks from the operator's
// network in the style of 3GPP TS 29.511 (N5g-eir_EquipmentIdentityCheck):
// an AMF or MME asks, on a card's attach, whether the equipment may use the
// network with that subscription,
//
//	GET /n5g-eir-eic/v1/equipment-status?pei=imeisv-...&supi=imsi-...&gpsi=msisdn-...
//
// and gets {"status": "WHITELISTED" | "BLACKLISTED" | "GREYLISTED"}. The
// answer comes from the card's binding and state, after the check itself
// went through the engine as an observation (source eir) of the card in
// that equipment: the network's door is also one of its eyes.
//
// The status, for the card the supi (else the gpsi) names:
//
//   - WHITELISTED: the card has no binding, or its binding allows the
//     equipment;
//   - BLACKLISTED: the binding does not allow the equipment and the card
//     is blocked (a blocking binding with no grace left, or an operator's
//     block), so the network refuses the attach;
//   - GREYLISTED: the binding does not allow the equipment but does not
//     block yet (alert-only binding, grace period running), or the card was
//     still learning its device (the check made it learn this one).
//
// Errors are RFC 7807 ProblemDetails (application/problem+json) with the
// TS 29.500 and TS 29.511 causes: 400 MANDATORY_IE_MISSING or
// MANDATORY_IE_INCORRECT for a missing or malformed pei, 400
// OPTIONAL_IE_INCORRECT for a malformed supi or gpsi, 404
// ERROR_EQUIPMENT_UNKNOWN when no card in the inventory has that supi or
// gpsi (or neither is given: cardbind judges equipment per card), 403 for
// callers outside the allowed networks, 500 SYSTEM_FAILURE when the
// observation could not be stored. A check moves cards (it can block
// one), so only the configured network addresses may ask.
package eir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/engine"
)

// Path is the resource the handler serves.
const Path = "/n5g-eir-eic/v1/equipment-status"

// Equipment statuses (TS 29.511 EquipmentStatus).
const (
	Whitelisted = "WHITELISTED"
	Blacklisted = "BLACKLISTED"
	Greylisted  = "GREYLISTED"
)

// Cards finds the card a subscription identifier names. verifier.Store
// satisfies it.
type Cards interface {
	// FindCard returns the card an IMSI or E.164 MSISDN names, or an
	// error wrapping verifier.ErrNotFound.
	FindCard(ctx context.Context, by verifier.IndexKind, value string) (*verifier.Card, error)
}

// Observer applies an observation through the engine and commits its
// outcome durably before returning nil; an error wrapping
// verifier.ErrRefused means it was refused for good. *ingest.Ingest
// satisfies it.
type Observer interface {
	Observe(ctx context.Context, obs verifier.Observation, tenant string) (engine.Outcome, error)
}

// Options configure a Handler.
type Options struct {
	// Clients are the networks allowed to ask; empty means loopback only.
	Clients []netip.Prefix
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Stats counts checks by answer.
type Stats struct {
	Whitelisted, Blacklisted, Greylisted atomic.Uint64
	// Invalid counts 400 answers, Unknown 404, Forbidden 403, Failed 500.
	Invalid, Unknown, Forbidden, Failed atomic.Uint64
}

// Handler serves equipment identity checks. It is safe for concurrent
// use.
type Handler struct {
	cards   Cards
	obs     Observer
	log     *slog.Logger
	now     func() time.Time
	clients []netip.Prefix
	stats   Stats
}

// New returns the handler. A nil logger discards logs.
func New(cards Cards, obs Observer, opts Options, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cards: cards, obs: obs, log: log, now: opts.Now, clients: opts.Clients}
	if h.now == nil {
		h.now = time.Now
	}
	if len(h.clients) == 0 {
		h.clients = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	return h
}

// Stats returns the live counters.
func (h *Handler) Stats() *Stats { return &h.stats }

// StatusResponse is the body of a 200 answer (TS 29.511
// EirResponseData).
type StatusResponse struct {
	Status string `json:"status"`
}

// ServeHTTP answers GET Path.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != Path {
		h.problem(w, r, &Problem{Status: http.StatusNotFound, Title: "Not Found", Cause: "RESOURCE_URI_STRUCTURE_NOT_FOUND"})
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		h.problem(w, r, &Problem{Status: http.StatusMethodNotAllowed, Title: "Method Not Allowed"})
		return
	}
	if !h.allowed(r.RemoteAddr) {
		h.stats.Forbidden.Add(1)
		h.log.Warn("equipment check from an address not allowed", "remote", r.RemoteAddr)
		h.problem(w, r, &Problem{Status: http.StatusForbidden, Title: "Forbidden",
			Detail: "this address may not ask for equipment status"})
		return
	}
	q, perr := ParseQuery(r.URL.Query())
	if perr != nil {
		h.stats.Invalid.Add(1)
		h.problem(w, r, perr)
		return
	}
	status, perr := h.check(r.Context(), q)
	if perr != nil {
		h.problem(w, r, perr)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(StatusResponse{Status: status})
}

func (h *Handler) allowed(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	for _, p := range h.clients {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// check finds the card, observes it in the equipment and answers the
// status.
func (h *Handler) check(ctx context.Context, q Query) (string, *Problem) {
	card, perr := h.findCard(ctx, q)
	if perr != nil {
		return "", perr
	}
	obs := verifier.Observation{
		Kind: verifier.ObservedIn, ICCID: card.ICCID, IMEI: q.IMEI, Source: protocol.SourceEIR,
		Time: h.now(), Ref: "eir:" + q.PEI,
	}
	out, err := h.obs.Observe(ctx, obs, card.Tenant)
	switch {
	case errors.Is(err, verifier.ErrRefused):
		// Not applied (the card went away meanwhile): judge the card as
		// read, without storing anything.
		h.log.Info("eir observation refused", "iccid", card.ICCID, "err", err)
		out = engine.Decide(card, obs, obs.Time)
	case err != nil:
		h.stats.Failed.Add(1)
		h.log.Error("eir observation failed", "iccid", card.ICCID, "imei", q.IMEI, "err", err)
		return "", &Problem{Status: http.StatusInternalServerError, Title: "Internal Server Error",
			Cause: "SYSTEM_FAILURE", Detail: "the observation could not be stored"}
	}
	status := Status(out, q.IMEI)
	switch status {
	case Whitelisted:
		h.stats.Whitelisted.Add(1)
	case Blacklisted:
		h.stats.Blacklisted.Add(1)
	case Greylisted:
		h.stats.Greylisted.Add(1)
	}
	h.log.Debug("equipment check", "iccid", card.ICCID, "imei", q.IMEI, "decision", out.Decision, "status", status)
	return status, nil
}

func (h *Handler) findCard(ctx context.Context, q Query) (*verifier.Card, *Problem) {
	type key struct {
		by    verifier.IndexKind
		value string
	}
	var keys []key
	if q.IMSI != "" {
		keys = append(keys, key{verifier.ByIMSI, string(q.IMSI)})
	}
	if q.MSISDN != "" {
		keys = append(keys, key{verifier.ByMSISDN, string(q.MSISDN)})
	}
	if len(keys) == 0 {
		h.stats.Unknown.Add(1)
		return nil, &Problem{Status: http.StatusNotFound, Title: "Equipment unknown", Cause: "ERROR_EQUIPMENT_UNKNOWN",
			Detail: "cardbind judges equipment per card: name the card with supi or gpsi"}
	}
	for _, k := range keys {
		c, err := h.cards.FindCard(ctx, k.by, k.value)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, verifier.ErrNotFound) {
			h.stats.Failed.Add(1)
			h.log.Error("eir: find card", "by", k.by, "value", k.value, "err", err)
			return nil, &Problem{Status: http.StatusInternalServerError, Title: "Internal Server Error", Cause: "SYSTEM_FAILURE"}
		}
	}
	h.stats.Unknown.Add(1)
	return nil, &Problem{Status: http.StatusNotFound, Title: "Equipment unknown", Cause: "ERROR_EQUIPMENT_UNKNOWN",
		Detail: "no card in the inventory has this supi or gpsi"}
}

// Status is the equipment status of imei for the card an outcome left:
// see the package documentation.
func Status(out engine.Outcome, imei protocol.IMEI) string {
	c := out.Card
	switch {
	case c == nil || c.Binding == nil:
		return Whitelisted
	case out.Decision == protocol.DecisionLearned || c.Binding.Learning():
		return Greylisted
	case c.Binding.Allows(imei):
		return Whitelisted
	case c.Status.State == protocol.CardBlocked:
		return Blacklisted
	}
	return Greylisted
}

// Problem is an RFC 7807 ProblemDetails body with the 3GPP cause (TS
// 29.571 ProblemDetails).
type Problem struct {
	Type          string         `json:"type,omitempty"`
	Title         string         `json:"title,omitempty"`
	Status        int            `json:"status"`
	Detail        string         `json:"detail,omitempty"`
	Instance      string         `json:"instance,omitempty"`
	Cause         string         `json:"cause,omitempty"`
	InvalidParams []InvalidParam `json:"invalidParams,omitempty"`
}

// InvalidParam names a query parameter at fault.
type InvalidParam struct {
	Param  string `json:"param"`
	Reason string `json:"reason,omitempty"`
}

// Error describes the problem.
func (p *Problem) Error() string {
	return fmt.Sprintf("eir: %d %s: %s", p.Status, p.Cause, p.Detail)
}

func (h *Handler) problem(w http.ResponseWriter, r *http.Request, p *Problem) {
	p.Instance = r.URL.Path
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

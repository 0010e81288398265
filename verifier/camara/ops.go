package camara

import (
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/oauth"
	"github.com/cardbind/cardbind/verifier/service"
)

// op describes one operation: its scope and the request's type field,
// with the names the spec's error messages use for it.
type op struct {
	scope     string
	typeField string // JSON name
	typeName  string // in "... must be specified"
	valueName string // in "The value of ... can only be"
	extra     []string
}

var (
	opBind = op{scope: oauth.ScopeBind, typeField: "bindType", typeName: "BindType", valueName: "bindType",
		extra: []string{"bindImei", "bindPolicy", "limitArea"}}
	opUnbind = op{scope: oauth.ScopeUnbind, typeField: "unBindType", typeName: "UnbindType", valueName: "unbindType"}
	opQuery  = op{scope: oauth.ScopeQuery, typeField: "queryType", typeName: "QueryType", valueName: "queryType"}
)

// Binding types.
const (
	typeIMEI = "IMEIBIND"
	typeArea = "AREALIMIT"
)

// request is a parsed request body.
type request struct {
	kind   string // typeIMEI or typeArea
	device *device
	fields map[string]json.RawMessage
}

// operation returns the handler of one operation. Checks run in this
// order: authentication (401), scope (403), rate and quota (429), media
// type (415), body (400), device identification (422, 404), the
// operation itself.
func (h *Handler) operation(o op) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, e := h.authorize(r, o.scope)
		if e == nil {
			e = checkJSON(r)
		}
		var req *request
		if e == nil {
			req, e = parseRequest(w, r, o)
		}
		var card *verifier.Card
		var dev any
		if e == nil {
			card, dev, e = h.resolve(r.Context(), p, req.device)
		}
		var body any
		if e == nil {
			switch o.typeField {
			case opBind.typeField:
				body, e = h.bind(r, p, card, req)
			case opUnbind.typeField:
				body, e = h.unbind(r, p, card, req)
			default:
				body = h.query(card, req)
			}
		}
		if e != nil {
			writeError(w, e)
			return
		}
		if dev != nil {
			body.(map[string]any)["device"] = dev
		}
		writeJSON(w, http.StatusOK, body)
	})
}

// parseRequest reads and validates the body. Properties the API does not
// define are refused (request body strictness).
func parseRequest(w http.ResponseWriter, r *http.Request, o op) (*request, *apiError) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return nil, errInvalidArgument("Request body too large or unreadable")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return nil, errInvalidArgument("Request body is not a JSON object")
	}
	for k := range fields {
		if k != "device" && k != o.typeField && !contains(o.extra, k) {
			return nil, errInvalidArgument("Unknown property: " + k)
		}
	}
	req := &request{fields: fields}
	t, ok := fields[o.typeField]
	if !ok {
		return nil, errInvalidArgument(o.typeName + " must be specified")
	}
	if s, _ := jsonString(t); s == typeIMEI || s == typeArea {
		req.kind = s
	} else {
		return nil, errInvalidArgument("The value of " + o.valueName + " can only be IMEIBIND,AREALIMIT")
	}
	if d, ok := fields["device"]; ok {
		var e *apiError
		if req.device, e = parseDevice(d); e != nil {
			return nil, e
		}
	}
	return req, nil
}

func contains(ss []string, s string) bool {
	for _, v := range ss {
		if v == s {
			return true
		}
	}
	return false
}

// fail maps a service error; not-found is 404 like any unknown device.
func (h *Handler) fail(err error) *apiError {
	switch {
	case errors.Is(err, verifier.ErrNotFound):
		return errIdentifierNotFound
	case errors.Is(err, service.ErrInvalid):
		return errInvalidArgument(err.Error())
	}
	h.log.Error("camara: binding change", "err", err)
	return errInternal
}

func (h *Handler) bind(r *http.Request, p *oauth.Principal, c *verifier.Card, req *request) (any, *apiError) {
	ctx := r.Context()
	if req.kind == typeIMEI {
		if _, ok := req.fields["limitArea"]; ok {
			return nil, errInvalidArgument("limitArea applies to bindType AREALIMIT only")
		}
		spec, e := parseIMEISpec(req.fields)
		if e != nil {
			return nil, e
		}
		if b := c.Binding; b != nil && b.Area != nil { // keep the area half
			a := *b.Area
			spec.Area = &a
		}
		if _, err := h.binder.Bind(ctx, p.Tenant, c.ICCID, spec, actor(p)); err != nil {
			return nil, h.fail(err)
		}
		return map[string]any{"bound": true}, nil
	}
	for _, k := range []string{"bindImei", "bindPolicy"} {
		if _, ok := req.fields[k]; ok {
			return nil, errInvalidArgument(k + " applies to bindType IMEIBIND only")
		}
	}
	var area *verifier.Area
	if raw, ok := req.fields["limitArea"]; ok {
		a, e := parseArea(raw)
		if e != nil {
			return nil, e
		}
		area = a
	} else if loc := c.Status.LastLocation; loc != nil {
		radius := math.Max(float64(h.cfg.DefaultAreaRadius), math.Ceil(2*loc.AccuracyM))
		area = &verifier.Area{Lat: loc.Lat, Lon: loc.Lon, RadiusM: math.Min(radius, maxRadius)}
	} else {
		h.log.Info("camara: area limit not bound: location unknown", "iccid", c.ICCID, "client", p.Client)
		return map[string]any{"bound": false}, nil
	}
	b := c.Binding
	if b == nil {
		// The binding model has no area-only binding yet: binding here
		// would also lock the IMEI. Refuse rather than lock what was not
		// asked for.
		h.log.Info("camara: area limit not bound: card has no IMEI binding", "iccid", c.ICCID, "client", p.Client)
		return map[string]any{"bound": false}, nil
	}
	spec := specOf(b)
	spec.Area = area
	if _, err := h.binder.Bind(ctx, p.Tenant, c.ICCID, spec, actor(p)); err != nil {
		return nil, h.fail(err)
	}
	return map[string]any{"bound": true}, nil
}

// specOf returns the spec that recreates binding b.
func specOf(b *verifier.Binding) service.BindSpec {
	ar := b.AutoResume
	spec := service.BindSpec{IMEIs: b.IMEIs, TAC: b.TAC, AlertOnly: b.Mode == verifier.ModeAlert, Grace: b.Grace, AutoResume: &ar}
	if b.Area != nil {
		a := *b.Area
		spec.Area = &a
	}
	return spec
}

func (h *Handler) unbind(r *http.Request, p *oauth.Principal, c *verifier.Card, req *request) (any, *apiError) {
	ctx := r.Context()
	b := c.Binding
	if req.kind == typeIMEI {
		if b == nil {
			return nil, errUnnecessaryUnbindIMEI
		}
		if b.Area != nil {
			// No area-only binding yet: removing the IMEI half would
			// remove the area too.
			h.log.Info("camara: imei not unbound: card has an area limit", "iccid", c.ICCID, "client", p.Client)
			return map[string]any{"unbound": false}, nil
		}
		if _, err := h.binder.Unbind(ctx, p.Tenant, c.ICCID, actor(p)); err != nil {
			if errors.Is(err, service.ErrNotBound) {
				return nil, errUnnecessaryUnbindIMEI
			}
			return nil, h.fail(err)
		}
		return map[string]any{"unbound": true}, nil
	}
	if b == nil || b.Area == nil {
		return nil, errUnnecessaryUnbindArea
	}
	spec := specOf(b)
	spec.Area = nil
	if _, err := h.binder.Bind(ctx, p.Tenant, c.ICCID, spec, actor(p)); err != nil {
		return nil, h.fail(err)
	}
	return map[string]any{"unbound": true}, nil
}

// query answers from the card as found; a binding without IMEIs (waiting
// for the first one) is BOUND without bindImei.
func (h *Handler) query(c *verifier.Card, req *request) any {
	b := c.Binding
	if req.kind == typeArea {
		if b == nil || b.Area == nil {
			return map[string]any{"areaLimit": areaLimit{Status: "UNRESTRICTED"}}
		}
		return map[string]any{"areaLimit": areaLimit{Status: "RESTRICTED", Area: circleOf(b.Area)}}
	}
	if b == nil {
		return map[string]any{"imeiBind": imeiBind{Status: "UNBOUND"}}
	}
	ib := imeiBind{Status: "BOUND", Policy: &bindPolicy{TAC: b.TAC, AlertOnly: b.Mode == verifier.ModeAlert,
		GracePeriod: int64(b.Grace / time.Second), AutoResume: b.AutoResume}}
	if len(b.IMEIs) > 0 {
		ib.IMEI = string(b.IMEIs[0])
		for _, m := range b.IMEIs[1:] {
			ib.Policy.IMEIs = append(ib.Policy.IMEIs, string(m))
		}
	}
	return map[string]any{"imeiBind": ib}
}

type imeiBind struct {
	IMEI   string      `json:"bindImei,omitempty"`
	Status string      `json:"bindStatus"`
	Policy *bindPolicy `json:"bindPolicy,omitempty"`
}

type areaLimit struct {
	Area   *circle `json:"limitArea,omitempty"`
	Status string  `json:"areaLimitStatus"`
}

// bindPolicy is the bindPolicy extension object.
type bindPolicy struct {
	IMEIs       []string `json:"imeis,omitempty"`
	TAC         string   `json:"tac,omitempty"`
	AlertOnly   bool     `json:"alertOnly"`
	GracePeriod int64    `json:"gracePeriod"`
	AutoResume  bool     `json:"autoResume"`
}

// parseIMEISpec reads the bindImei and bindPolicy extensions.
func parseIMEISpec(fields map[string]json.RawMessage) (service.BindSpec, *apiError) {
	var spec service.BindSpec
	if raw, ok := fields["bindImei"]; ok {
		s, _ := jsonString(raw)
		m, err := protocol.ParseIMEI(s)
		if err != nil || len(s) > 32 {
			return spec, errInvalidArgument("Invalid format: bindImei")
		}
		spec.IMEIs = append(spec.IMEIs, m)
	}
	raw, ok := fields["bindPolicy"]
	if !ok {
		return spec, nil
	}
	var pol struct {
		IMEIs       *[]json.RawMessage `json:"imeis"`
		TAC         *json.RawMessage   `json:"tac"`
		AlertOnly   *bool              `json:"alertOnly"`
		GracePeriod *json.RawMessage   `json:"gracePeriod"`
		AutoResume  *bool              `json:"autoResume"`
	}
	dec := json.NewDecoder(bytesReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pol); err != nil {
		return spec, errInvalidArgument("Invalid format: bindPolicy")
	}
	if pol.IMEIs != nil {
		if len(*pol.IMEIs) > 63 {
			return spec, errOutOfRange("Invalid value: bindPolicy.imeis (at most 63)")
		}
		for _, r := range *pol.IMEIs {
			s, _ := jsonString(r)
			m, err := protocol.ParseIMEI(s)
			if err != nil || len(s) > 32 {
				return spec, errInvalidArgument("Invalid format: bindPolicy.imeis")
			}
			if !contains(imeiStrings(spec.IMEIs), string(m)) {
				spec.IMEIs = append(spec.IMEIs, m)
			}
		}
	}
	if pol.TAC != nil {
		s, _ := jsonString(*pol.TAC)
		if len(s) < 6 || len(s) > 8 || !allDigits(s) {
			return spec, errInvalidArgument("Invalid format: bindPolicy.tac")
		}
		spec.TAC = s
	}
	if pol.AlertOnly != nil {
		spec.AlertOnly = *pol.AlertOnly
	}
	if pol.GracePeriod != nil {
		g, ok := intValue(*pol.GracePeriod)
		if !ok {
			return spec, errInvalidArgument("Invalid format: bindPolicy.gracePeriod")
		}
		if g < 0 || g > 604800 {
			return spec, errOutOfRange("Invalid value: bindPolicy.gracePeriod")
		}
		spec.Grace = time.Duration(g) * time.Second
	}
	spec.AutoResume = pol.AutoResume
	return spec, nil
}

func imeiStrings(ms []protocol.IMEI) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m)
	}
	return out
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Package control is the HTTP JSON control API of a simulated modem: the
// test's hand on the device, separate from the AT port. It reads the state,
// inserts, removes and swaps SIM cards, changes the IMEI, moves the modem to
// another serving cell, gives its GNSS receiver a fix or takes it away, reboots the modem, pins the registration status and
// injects faults. docs/firmware-sim.md
// describes it with curl examples.
package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/cardbind/cardbind/firmware-sim/modem"
	"github.com/cardbind/cardbind/firmware-sim/network"
)

// Duration is a time.Duration that reads and writes JSON as "1.5s".
type Duration time.Duration

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string ("250ms") or a number of
// milliseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var ms int64
		if err2 := json.Unmarshal(b, &ms); err2 != nil {
			return fmt.Errorf("duration: want a string such as \"500ms\" or milliseconds: %w", err)
		}
		*d = Duration(time.Duration(ms) * time.Millisecond)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// SIMRequest is the body of insert and swap.
type SIMRequest struct {
	ICCID  string `json:"iccid"`
	IMSI   string `json:"imsi"`
	MSISDN string `json:"msisdn,omitempty"`
	PIN    string `json:"pin,omitempty"`
	// Gap is how long a swap leaves the slot empty; default 200ms.
	Gap Duration `json:"gap,omitempty"`
}

// IMEIRequest is the body of an IMEI change.
type IMEIRequest struct {
	IMEI string `json:"imei"`
}

// RebootRequest is the optional body of a reboot.
type RebootRequest struct {
	// DownFor is how long the port stays away; 0 means the modem's default.
	DownFor Duration `json:"downFor,omitempty"`
}

// RegistrationRequest pins the registration status.
type RegistrationRequest struct {
	Stat int `json:"stat"`
}

// Faults is the JSON form of modem.Faults.
type Faults struct {
	Delay        Duration `json:"delay,omitempty"`
	NoResponse   int      `json:"noResponse,omitempty"`
	Garble       int      `json:"garble,omitempty"`
	SpuriousURCs int      `json:"spuriousURCs,omitempty"`
	SpuriousURC  string   `json:"spuriousURC,omitempty"`
	Errors       int      `json:"errors,omitempty"`
	ErrorCode    int      `json:"errorCode,omitempty"`
}

func faultsFrom(f modem.Faults) Faults {
	return Faults{Duration(f.Delay), f.NoResponse, f.Garble, f.SpuriousURCs, f.SpuriousURC, f.Errors, f.ErrorCode}
}

func (f Faults) toModem() modem.Faults {
	return modem.Faults{
		Delay: time.Duration(f.Delay), NoResponse: f.NoResponse, Garble: f.Garble,
		SpuriousURCs: f.SpuriousURCs, SpuriousURC: f.SpuriousURC, Errors: f.Errors, ErrorCode: f.ErrorCode,
	}
}

// StateResponse is the answer of GET /state.
type StateResponse struct {
	modem.State
	Faults Faults `json:"faults"`
}

// ErrorBody is the JSON body of every error answer.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// defaultGap is the time a swap leaves the slot empty.
const defaultGap = 200 * time.Millisecond

// NewHandler returns the control API of m. A nil logger discards logs.
func NewHandler(m *modem.Modem, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &handler{m: m, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /state", h.state)
	mux.HandleFunc("POST /sim/insert", h.insert)
	mux.HandleFunc("POST /sim/remove", h.remove)
	mux.HandleFunc("POST /sim/swap", h.swap)
	mux.HandleFunc("POST /imei", h.imei)
	mux.HandleFunc("GET /cell", h.getCell)
	mux.HandleFunc("POST /cell", h.setCell)
	mux.HandleFunc("GET /gnss", h.getGNSS)
	mux.HandleFunc("POST /gnss", h.setGNSS)
	mux.HandleFunc("POST /reboot", h.reboot)
	mux.HandleFunc("GET /faults", h.getFaults)
	mux.HandleFunc("PUT /faults", h.setFaults)
	mux.HandleFunc("POST /faults", h.setFaults)
	mux.HandleFunc("DELETE /faults", h.clearFaults)
	mux.HandleFunc("PUT /registration", h.forceRegistration)
	mux.HandleFunc("DELETE /registration", h.followNetwork)
	return mux
}

type handler struct {
	m   *modem.Modem
	log *slog.Logger
}

func (h *handler) state(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, StateResponse{State: h.m.State(), Faults: faultsFrom(h.m.Faults())})
}

func (h *handler) insert(w http.ResponseWriter, r *http.Request) {
	var req SIMRequest
	if !decode(w, r, &req, false) {
		return
	}
	err := h.m.InsertSIM(modem.SIM{ICCID: req.ICCID, IMSI: req.IMSI, MSISDN: req.MSISDN, PIN: req.PIN})
	h.answer(w, err)
}

func (h *handler) remove(w http.ResponseWriter, _ *http.Request) {
	h.answer(w, h.m.RemoveSIM())
}

func (h *handler) swap(w http.ResponseWriter, r *http.Request) {
	req := SIMRequest{Gap: Duration(defaultGap)}
	if !decode(w, r, &req, false) {
		return
	}
	err := h.m.SwapSIM(r.Context(), modem.SIM{ICCID: req.ICCID, IMSI: req.IMSI, MSISDN: req.MSISDN, PIN: req.PIN}, time.Duration(req.Gap))
	h.answer(w, err)
}

func (h *handler) imei(w http.ResponseWriter, r *http.Request) {
	var req IMEIRequest
	if !decode(w, r, &req, false) {
		return
	}
	h.answer(w, h.m.SetIMEI(req.IMEI))
}

// CellRequest is the body of POST /cell: the serving cell to move to, as
// {"mcc":"460","mnc":"03","tac":6699,"eci":27446212}.
type CellRequest = network.Cell

func (h *handler) getCell(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.m.Cell())
}

func (h *handler) setCell(w http.ResponseWriter, r *http.Request) {
	var req CellRequest
	if !decode(w, r, &req, false) {
		return
	}
	h.answer(w, h.m.SetCell(req))
}

// GNSSRequest is the body of POST /gnss: {"lat":31.231,"lon":121.474,
// "hdop":1.1} gives the receiver a fix there (hdop optional, default
// modem.DefaultHDOP); {"fix":false} takes the fix away.
type GNSSRequest struct {
	// Fix false loses the fix; absent or true sets one at Lat, Lon.
	Fix  *bool    `json:"fix,omitempty"`
	Lat  *float64 `json:"lat,omitempty"`
	Lon  *float64 `json:"lon,omitempty"`
	HDOP float64  `json:"hdop,omitempty"`
}

func (h *handler) getGNSS(w http.ResponseWriter, _ *http.Request) {
	if !h.m.HasGNSS() {
		writeJSON(w, http.StatusNotFound, ErrorBody{"NO_GNSS", modem.ErrNoGNSS.Error()})
		return
	}
	writeJSON(w, http.StatusOK, h.m.GNSS())
}

func (h *handler) setGNSS(w http.ResponseWriter, r *http.Request) {
	var req GNSSRequest
	if !decode(w, r, &req, false) {
		return
	}
	if !h.m.HasGNSS() {
		writeJSON(w, http.StatusNotFound, ErrorBody{"NO_GNSS", modem.ErrNoGNSS.Error()})
		return
	}
	if req.Fix != nil && !*req.Fix {
		if req.Lat != nil || req.Lon != nil {
			writeJSON(w, http.StatusBadRequest, ErrorBody{"INVALID", `"fix": false takes no lat or lon`})
			return
		}
		h.answer(w, h.m.SetGNSS(nil))
		return
	}
	if req.Lat == nil || req.Lon == nil {
		writeJSON(w, http.StatusBadRequest, ErrorBody{"INVALID", `want "lat" and "lon", or "fix": false`})
		return
	}
	h.answer(w, h.m.SetGNSS(&modem.GNSSFix{Lat: *req.Lat, Lon: *req.Lon, HDOP: req.HDOP}))
}

func (h *handler) reboot(w http.ResponseWriter, r *http.Request) {
	var req RebootRequest
	if !decode(w, r, &req, true) {
		return
	}
	if !h.m.Reboot(time.Duration(req.DownFor)) {
		writeJSON(w, http.StatusConflict, ErrorBody{"OFFLINE", "the modem is not running (already rebooting?)"})
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"rebooting": true})
}

func (h *handler) getFaults(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, faultsFrom(h.m.Faults()))
}

func (h *handler) setFaults(w http.ResponseWriter, r *http.Request) {
	var f Faults
	if !decode(w, r, &f, false) {
		return
	}
	h.m.SetFaults(f.toModem())
	writeJSON(w, http.StatusOK, faultsFrom(h.m.Faults()))
}

func (h *handler) clearFaults(w http.ResponseWriter, _ *http.Request) {
	h.m.SetFaults(modem.Faults{})
	writeJSON(w, http.StatusOK, faultsFrom(h.m.Faults()))
}

func (h *handler) forceRegistration(w http.ResponseWriter, r *http.Request) {
	var req RegistrationRequest
	if !decode(w, r, &req, false) {
		return
	}
	if req.Stat < 0 {
		writeJSON(w, http.StatusBadRequest, ErrorBody{"INVALID", "stat: want 0..11"})
		return
	}
	h.answer(w, h.m.ForceRegistration(req.Stat))
}

func (h *handler) followNetwork(w http.ResponseWriter, _ *http.Request) {
	h.answer(w, h.m.ForceRegistration(-1))
}

// answer writes the state after a successful change, or the error.
func (h *handler) answer(w http.ResponseWriter, err error) {
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, StateResponse{State: h.m.State(), Faults: faultsFrom(h.m.Faults())})
	case errors.Is(err, modem.ErrSIMPresent), errors.Is(err, modem.ErrNoSIM):
		writeJSON(w, http.StatusConflict, ErrorBody{"CONFLICT", err.Error()})
	default:
		writeJSON(w, http.StatusBadRequest, ErrorBody{"INVALID", err.Error()})
	}
}

// decode reads a JSON body into v; an empty body is allowed when optional.
func decode(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<16))
	if err == nil && optional && len(bytes.TrimSpace(body)) == 0 {
		return true
	}
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		err = dec.Decode(v)
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, ErrorBody{"INVALID", "body: " + err.Error()})
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status = http.StatusInternalServerError
		raw = []byte(`{"code":"INTERNAL","message":"encoding failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(raw, '\n'))
}

package protocol

import (
	"encoding/json"
	"math"
	"time"
)

const reportMsg = "report"

// Report is what an agent publishes on its report topic: the identity of
// the modem and of the SIM in it, at one moment, signed with the device's
// key.
type Report struct {
	Version  int          `json:"v"`
	DeviceID string       `json:"device_id"`
	Seq      uint64       `json:"seq"` // strictly increasing per device, across restarts
	Time     time.Time    `json:"time"`
	Reason   ReportReason `json:"reason"`

	IMEI   IMEI     `json:"imei"`
	IMEISV IMEISV   `json:"imeisv,omitempty"`
	SIM    SIMState `json:"sim_state"`
	ICCID  ICCID    `json:"iccid,omitempty"`
	IMSI   IMSI     `json:"imsi,omitempty"`

	Registration Registration `json:"registration"`
	Location     *Location    `json:"location,omitempty"`
	Signal       *Signal      `json:"signal,omitempty"`

	// Acks lists the ids of verifier commands carried out since the last
	// report.
	Acks []string `json:"acks,omitempty"`
	// Dropped counts reports the agent's outbox discarded while offline
	// (heartbeats only; change reports are never dropped).
	Dropped uint64 `json:"dropped,omitempty"`

	// Sig is the Ed25519 signature over the report's canonical encoding
	// (see SignReport); base64 in JSON.
	Sig []byte `json:"sig"`
}

// Registration is the modem's network registration.
type Registration struct {
	State RegState `json:"state"`
	// Stat is the raw 27.007 <stat> value, or -1 when unknown.
	Stat int `json:"stat"`
	// Tech is the access technology: "gsm", "utran", "eutran", "nbiot",
	// "nr", or empty when unknown.
	Tech string `json:"tech,omitempty"`
	// Cell identifies the serving cell, when the modem told.
	Cell *Cell `json:"cell,omitempty"`
}

// Cell identifies a serving cell.
type Cell struct {
	MCC string `json:"mcc,omitempty"`
	MNC string `json:"mnc,omitempty"`
	// Area is the location or tracking area code (LAC or TAC).
	Area uint32 `json:"area"`
	// ID is the cell identity (E-UTRAN cell id, UTRAN or GSM cell id).
	ID uint64 `json:"id"`
}

// Location is a position fix.
type Location struct {
	Lat       float64 `json:"lat"`
	Lon       float64 `json:"lon"`
	AccuracyM float64 `json:"accuracy_m,omitempty"`
	Source    string  `json:"source"` // "gnss" or "cell"
}

// Signal is the received signal quality.
type Signal struct {
	RSSIdBm int `json:"rssi_dbm"`
}

// Tech values for Registration.Tech.
var techs = map[string]bool{"": true, "gsm": true, "utran": true, "eutran": true, "nbiot": true, "nr": true, "catm": true}

// EncodeReport returns the JSON wire form of r.
func EncodeReport(r *Report) ([]byte, error) {
	return json.Marshal(r)
}

// DecodeReport parses and validates a report. It does not check the
// signature; see VerifyReport.
func DecodeReport(data []byte) (*Report, error) {
	var r Report
	if len(data) > MaxMessageSize || !decodeReportFast(data, &r) {
		r = Report{}
		if err := decodeStrict(reportMsg, data, &r, &r.Version); err != nil {
			return nil, err
		}
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// Validate checks every field of the report and names the first one at
// fault. Required: v, device_id, seq (> 0), time, reason, imei, sim_state,
// registration, sig; iccid when a SIM is present; no iccid or imsi when the
// slot is empty.
func (r *Report) Validate() error {
	const m = reportMsg
	if r.Version != Version {
		return fieldErr(m, "v", "version %d is not supported (want %d)", r.Version, Version)
	}
	if r.DeviceID == "" {
		return fieldErr(m, "device_id", "required")
	}
	if !validID(r.DeviceID) {
		return fieldErr(m, "device_id", "want 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	}
	if r.Seq == 0 {
		return fieldErr(m, "seq", "required and must be at least 1")
	}
	if r.Time.IsZero() {
		return fieldErr(m, "time", "required")
	}
	if r.Reason == "" {
		return fieldErr(m, "reason", "required")
	}
	if !r.Reason.valid() {
		return fieldErr(m, "reason", "%q is not one of start, change, heartbeat, requested", r.Reason)
	}
	if err := checkIdent(m, "imei", r.IMEI, ParseIMEI, true); err != nil {
		return err
	}
	if err := checkIdent(m, "imeisv", r.IMEISV, ParseIMEISV, false); err != nil {
		return err
	}
	if r.IMEISV != "" && r.IMEISV.IMEI() != r.IMEI {
		return fieldErr(m, "imeisv", "belongs to IMEI %s, not %s", r.IMEISV.IMEI(), r.IMEI)
	}
	if r.SIM == "" {
		return fieldErr(m, "sim_state", "required")
	}
	if !r.SIM.valid() {
		return fieldErr(m, "sim_state", "%q is not one of present, absent, not_ready, pin_required", r.SIM)
	}
	if err := checkIdent(m, "iccid", r.ICCID, ParseICCID, r.SIM == SIMPresent); err != nil {
		return err
	}
	if err := checkIdent(m, "imsi", r.IMSI, ParseIMSI, false); err != nil {
		return err
	}
	if r.SIM == SIMAbsent && (r.ICCID != "" || r.IMSI != "") {
		field := "iccid"
		if r.ICCID == "" {
			field = "imsi"
		}
		return fieldErr(m, field, "must be empty when sim_state is absent")
	}
	if err := r.Registration.validate(); err != nil {
		return err
	}
	if r.Location != nil {
		if err := r.Location.validate(); err != nil {
			return err
		}
	}
	if r.Signal != nil && (r.Signal.RSSIdBm < -150 || r.Signal.RSSIdBm > 0) {
		return fieldErr(m, "signal.rssi_dbm", "%d is outside -150..0", r.Signal.RSSIdBm)
	}
	if len(r.Acks) > 32 {
		return fieldErr(m, "acks", "%d entries is over the limit of 32", len(r.Acks))
	}
	for _, a := range r.Acks {
		if !validID(a) {
			return fieldErr(m, "acks", "command id %q is malformed", truncate(a, 70))
		}
	}
	if len(r.Sig) == 0 {
		return fieldErr(m, "sig", "required")
	}
	if len(r.Sig) != SignatureSize {
		return fieldErr(m, "sig", "has %d bytes, want %d", len(r.Sig), SignatureSize)
	}
	return nil
}

func (g *Registration) validate() error {
	const m = reportMsg
	if g.State == "" {
		return fieldErr(m, "registration.state", "required")
	}
	if !g.State.valid() {
		return fieldErr(m, "registration.state", "%q is not a registration state", g.State)
	}
	if g.Stat < -1 || g.Stat > 11 {
		return fieldErr(m, "registration.stat", "%d is outside -1..11", g.Stat)
	}
	if !techs[g.Tech] {
		return fieldErr(m, "registration.tech", "%q is not one of gsm, utran, eutran, catm, nbiot, nr", g.Tech)
	}
	if c := g.Cell; c != nil {
		if c.MCC != "" && (len(c.MCC) != 3 || !isDigits(c.MCC)) {
			return fieldErr(m, "registration.cell.mcc", "want 3 digits")
		}
		if c.MNC != "" && (len(c.MNC) < 2 || len(c.MNC) > 3 || !isDigits(c.MNC)) {
			return fieldErr(m, "registration.cell.mnc", "want 2 or 3 digits")
		}
	}
	return nil
}

func (l *Location) validate() error {
	const m = reportMsg
	if math.IsNaN(l.Lat) || l.Lat < -90 || l.Lat > 90 {
		return fieldErr(m, "location.lat", "must be within -90..90")
	}
	if math.IsNaN(l.Lon) || l.Lon < -180 || l.Lon > 180 {
		return fieldErr(m, "location.lon", "must be within -180..180")
	}
	if math.IsNaN(l.AccuracyM) || l.AccuracyM < 0 || l.AccuracyM > 1e7 {
		return fieldErr(m, "location.accuracy_m", "must be within 0..10000000")
	}
	if l.Source != "gnss" && l.Source != "cell" {
		return fieldErr(m, "location.source", "%q is not one of gnss, cell", l.Source)
	}
	return nil
}

package protocol

import (
	"encoding/json"
	"time"
)

const alertMsg = "alert"

// Alert is what the verifier publishes on a tenant's alert topics when
// something happens to one of its cards.
type Alert struct {
	Version int       `json:"v"`
	ID      string    `json:"id"` // stable: a redelivered alert keeps its id
	Type    AlertType `json:"type"`
	Tenant  string    `json:"tenant"`
	ICCID   ICCID     `json:"iccid"`
	// BoundIMEIs are the IMEIs the card's binding allows (empty while
	// learning or when the binding allows a TAC prefix only).
	BoundIMEIs []IMEI `json:"bound_imeis,omitempty"`
	// BoundTAC is the "same model" TAC prefix of the binding, if any.
	BoundTAC     string    `json:"bound_tac,omitempty"`
	ObservedIMEI IMEI      `json:"observed_imei,omitempty"`
	Source       Source    `json:"source"`
	Decision     Decision  `json:"decision"`
	CardState    CardState `json:"card_state"`
	Time         time.Time `json:"time"`
	DeviceID     string    `json:"device_id,omitempty"`
	Detail       string    `json:"detail,omitempty"`
}

// EncodeAlert returns the JSON wire form of a.
func EncodeAlert(a *Alert) ([]byte, error) { return json.Marshal(a) }

// DecodeAlert parses and validates an alert.
func DecodeAlert(data []byte) (*Alert, error) {
	var a Alert
	if err := decodeStrict(alertMsg, data, &a, &a.Version); err != nil {
		return nil, err
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return &a, nil
}

// Validate checks every field of the alert.
func (a *Alert) Validate() error {
	const m = alertMsg
	switch {
	case a.Version != Version:
		return fieldErr(m, "v", "version %d is not supported (want %d)", a.Version, Version)
	case a.ID == "":
		return fieldErr(m, "id", "required")
	case len(a.ID) > 128:
		return fieldErr(m, "id", "longer than 128 characters")
	case a.Type == "":
		return fieldErr(m, "type", "required")
	case !a.Type.valid():
		return fieldErr(m, "type", "%q is not an alert type", a.Type)
	case a.Tenant == "":
		return fieldErr(m, "tenant", "required")
	case !validID(a.Tenant):
		return fieldErr(m, "tenant", "want 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	}
	if err := checkIdent(m, "iccid", a.ICCID, ParseICCID, true); err != nil {
		return err
	}
	for _, b := range a.BoundIMEIs {
		if err := checkIdent(m, "bound_imeis", b, ParseIMEI, true); err != nil {
			return err
		}
	}
	if a.BoundTAC != "" && (len(a.BoundTAC) > 8 || !isDigits(a.BoundTAC)) {
		return fieldErr(m, "bound_tac", "want 1 to 8 digits")
	}
	if err := checkIdent(m, "observed_imei", a.ObservedIMEI, ParseIMEI, false); err != nil {
		return err
	}
	switch {
	case a.Source == "":
		return fieldErr(m, "source", "required")
	case !a.Source.valid():
		return fieldErr(m, "source", "%q is not one of agent, radius, eir, admin, api", a.Source)
	case a.Decision == "":
		return fieldErr(m, "decision", "required")
	case !a.Decision.valid():
		return fieldErr(m, "decision", "%q is not a decision", a.Decision)
	case a.CardState == "":
		return fieldErr(m, "card_state", "required")
	case !a.CardState.valid():
		return fieldErr(m, "card_state", "%q is not a card state", a.CardState)
	case a.Time.IsZero():
		return fieldErr(m, "time", "required")
	case a.DeviceID != "" && !validID(a.DeviceID):
		return fieldErr(m, "device_id", "want 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")
	case len(a.Detail) > 1024:
		return fieldErr(m, "detail", "longer than 1024 characters")
	}
	return nil
}

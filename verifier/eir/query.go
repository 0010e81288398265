package eir

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/cardbind/cardbind/protocol"
)

// Query is a parsed equipment-status request.
type Query struct {
	// PEI is the pei parameter as given.
	PEI string
	// IMEI is the equipment's IMEI (derived from an IMEISV PEI).
	IMEI protocol.IMEI
	// IMEISV is set for an imeisv- PEI.
	IMEISV protocol.IMEISV
	// IMSI is from supi=imsi-..., when given.
	IMSI protocol.IMSI
	// MSISDN is from gpsi=msisdn-..., when given.
	MSISDN protocol.MSISDN
}

// ParseQuery parses the query parameters of an equipment-status request:
// pei (mandatory: imei-<15 digits> or imeisv-<16 digits>), supi (optional:
// imsi-<digits>) and gpsi (optional: msisdn-<digits>). Other PEI, SUPI and
// GPSI types of TS 29.571 (mac-, eui-, nai-, extid-) are refused: cards
// are named by IMSI and MSISDN. The error is the ProblemDetails to answer.
func ParseQuery(v url.Values) (Query, *Problem) {
	var q Query
	pei, ok, p := single(v, "pei", "MANDATORY_IE_INCORRECT")
	if p != nil {
		return q, p
	}
	if !ok || pei == "" {
		return q, invalid("MANDATORY_IE_MISSING", "pei", "required")
	}
	q.PEI = pei
	switch {
	case strings.HasPrefix(pei, "imei-"):
		m, err := protocol.ParseIMEI(strings.TrimPrefix(pei, "imei-"))
		if err != nil || len(pei) != len("imei-")+15 {
			return q, invalid("MANDATORY_IE_INCORRECT", "pei", "want imei- and 15 digits with a valid check digit")
		}
		q.IMEI = m
	case strings.HasPrefix(pei, "imeisv-"):
		sv, err := protocol.ParseIMEISV(strings.TrimPrefix(pei, "imeisv-"))
		if err != nil || len(pei) != len("imeisv-")+16 {
			return q, invalid("MANDATORY_IE_INCORRECT", "pei", "want imeisv- and 16 digits")
		}
		q.IMEISV, q.IMEI = sv, sv.IMEI()
	default:
		return q, invalid("MANDATORY_IE_INCORRECT", "pei", "want imei-<15 digits> or imeisv-<16 digits>")
	}

	supi, ok, p := single(v, "supi", "OPTIONAL_IE_INCORRECT")
	if p != nil {
		return q, p
	}
	if ok {
		d, found := strings.CutPrefix(supi, "imsi-")
		imsi, err := protocol.ParseIMSI(d)
		if !found || err != nil || strings.TrimSpace(d) != d {
			return q, invalid("OPTIONAL_IE_INCORRECT", "supi", "want imsi- and 14 or 15 digits")
		}
		q.IMSI = imsi
	}

	gpsi, ok, p := single(v, "gpsi", "OPTIONAL_IE_INCORRECT")
	if p != nil {
		return q, p
	}
	if ok {
		d, found := strings.CutPrefix(gpsi, "msisdn-")
		m, err := protocol.ParseMSISDN("+" + d)
		if !found || err != nil {
			return q, invalid("OPTIONAL_IE_INCORRECT", "gpsi", "want msisdn- and 5 to 15 digits")
		}
		q.MSISDN = m
	}
	return q, nil
}

// single returns the one value of a parameter; a repeated parameter is a
// problem.
func single(v url.Values, name, cause string) (string, bool, *Problem) {
	vals, ok := v[name]
	switch {
	case !ok:
		return "", false, nil
	case len(vals) > 1:
		return "", true, invalid(cause, name, "given more than once")
	}
	return vals[0], true, nil
}

func invalid(cause, param, reason string) *Problem {
	return &Problem{Status: http.StatusBadRequest, Title: "Bad Request", Cause: cause,
		Detail:        param + ": " + reason,
		InvalidParams: []InvalidParam{{Param: param, Reason: reason}}}
}

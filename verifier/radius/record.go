package radius

import (
	"errors"
	"net/netip"
	"strconv"
	"time"

	"github.com/cardbind/cardbind/protocol"
)

// ErrMalformed is wrapped by every error Decode returns: the packet, or
// one of the attributes cardbind acts on, cannot be decoded.
var ErrMalformed = errors.New("radius: malformed accounting request")

// AttributeError says which attribute of an accounting request is
// malformed and why. Decode returns it for attributes the record cannot do
// without; Record.Skipped lists it for attributes the decoder left out.
type AttributeError struct {
	// Attribute is the attribute's dictionary name, e.g. "3GPP-IMEISV".
	Attribute string
	// Reason says what is wrong with it.
	Reason string
}

// Error names the attribute and the reason.
func (e *AttributeError) Error() string {
	return "radius: attribute " + e.Attribute + ": " + e.Reason
}

// Unwrap returns ErrMalformed, so that errors.Is(err, ErrMalformed) holds.
func (e *AttributeError) Unwrap() error { return ErrMalformed }

// StatusType is the Acct-Status-Type of an accounting request (RFC 2866
// section 5.1).
type StatusType uint32

// Acct-Status-Type values. The server acts on Start, InterimUpdate and
// Stop; it answers the others without acting on them.
const (
	Start         StatusType = 1
	Stop          StatusType = 2
	InterimUpdate StatusType = 3
	AccountingOn  StatusType = 7
	AccountingOff StatusType = 8
)

// String returns the RFC 2866 name of the status, or its number.
func (s StatusType) String() string {
	switch s {
	case Start:
		return "Start"
	case Stop:
		return "Stop"
	case InterimUpdate:
		return "Interim-Update"
	case AccountingOn:
		return "Accounting-On"
	case AccountingOff:
		return "Accounting-Off"
	}
	return strconv.FormatUint(uint64(s), 10)
}

// Record is what one Accounting-Request says about a data session. Zero
// fields were absent from the request.
type Record struct {
	// Status is the Acct-Status-Type (always present in a decoded record).
	Status StatusType
	// SessionID is the Acct-Session-Id.
	SessionID string
	// NASIdentifier is the NAS-Identifier.
	NASIdentifier string

	// IMSI is from 3GPP-IMSI.
	IMSI protocol.IMSI
	// MSISDN is from Calling-Station-Id, in E.164 form.
	MSISDN protocol.MSISDN
	// IMEI is the equipment's IMEI, from 3GPP-IMEISV (which carries
	// either an IMEISV or an IMEI).
	IMEI protocol.IMEI
	// IMEISV is set when 3GPP-IMEISV carried a 16-digit IMEISV.
	IMEISV protocol.IMEISV

	// IPv4 is the Framed-IP-Address.
	IPv4 netip.Addr
	// IPv6 is the Framed-IPv6-Prefix.
	IPv6 netip.Prefix

	// SGSNPLMN is from 3GPP-SGSN-MCC-MNC: the network serving the session
	// (a visited network when roaming).
	SGSNPLMN *PLMN
	// Location is the decoded 3GPP-User-Location-Info.
	Location *UserLocation

	// EventTime is the Event-Timestamp (RFC 2869), when the NAS sent one.
	EventTime time.Time
	// Delay is the Acct-Delay-Time: how long the NAS held the record.
	Delay time.Duration

	// Skipped lists the optional attributes (location, serving network,
	// session id, NAS identifier, times) that were malformed and left
	// out of the record.
	Skipped []AttributeError
}

// Attribute names, as the FreeRADIUS dictionaries spell them.
const (
	attrStatusType   = "Acct-Status-Type"
	attrSessionID    = "Acct-Session-Id"
	attrDelayTime    = "Acct-Delay-Time"
	attrCallingID    = "Calling-Station-Id"
	attrFramedIP     = "Framed-IP-Address"
	attrFramedIPv6   = "Framed-IPv6-Prefix"
	attrNASID        = "NAS-Identifier"
	attrEventTime    = "Event-Timestamp"
	attrVendor       = "Vendor-Specific"
	attr3GPP         = "Vendor-Specific(3GPP)"
	attrIMSI         = "3GPP-IMSI"
	attrIMEISV       = "3GPP-IMEISV"
	attrSGSNMCCMNC   = "3GPP-SGSN-MCC-MNC"
	attrUserLocation = "3GPP-User-Location-Info"
)

package protocol

// SIMState says whether the device's modem has a usable SIM.
type SIMState string

// SIM states an agent reports.
const (
	SIMPresent     SIMState = "present"      // a SIM is in and ready
	SIMAbsent      SIMState = "absent"       // the slot is empty
	SIMNotReady    SIMState = "not_ready"    // a SIM is initialising, busy or failing
	SIMPINRequired SIMState = "pin_required" // a SIM is in and locked by PIN or PUK
)

func (s SIMState) valid() bool {
	switch s {
	case SIMPresent, SIMAbsent, SIMNotReady, SIMPINRequired:
		return true
	}
	return false
}

// RegState is the network registration state of the modem, after 3GPP TS
// 27.007 +CREG/+CEREG <stat>.
type RegState string

// Registration states.
const (
	RegNotRegistered RegState = "not_registered" // stat 0: not registered, not searching
	RegHome          RegState = "home"           // stat 1 (and 6, 9): registered, home network
	RegSearching     RegState = "searching"      // stat 2: searching
	RegDenied        RegState = "denied"         // stat 3: registration denied
	RegUnknown       RegState = "unknown"        // stat 4 and anything unrecognised
	RegRoaming       RegState = "roaming"        // stat 5 (and 7, 10): registered, roaming
	RegEmergency     RegState = "emergency"      // stat 8: emergency services only
)

func (s RegState) valid() bool {
	switch s {
	case RegNotRegistered, RegHome, RegSearching, RegDenied, RegUnknown, RegRoaming, RegEmergency:
		return true
	}
	return false
}

// RegStateFromStat maps a 27.007 <stat> value to a RegState.
func RegStateFromStat(stat int) RegState {
	switch stat {
	case 0:
		return RegNotRegistered
	case 1, 6, 9:
		return RegHome
	case 2:
		return RegSearching
	case 3:
		return RegDenied
	case 5, 7, 10:
		return RegRoaming
	case 8:
		return RegEmergency
	}
	return RegUnknown
}

// ReportReason says why the agent sent a report.
type ReportReason string

// Report reasons.
const (
	ReasonStart     ReportReason = "start"     // the agent started or reconnected its modem
	ReasonChange    ReportReason = "change"    // the SIM, the IMEI or the registration changed
	ReasonHeartbeat ReportReason = "heartbeat" // periodic report, nothing changed
	ReasonRequested ReportReason = "requested" // the verifier asked for a report
)

func (r ReportReason) valid() bool {
	switch r {
	case ReasonStart, ReasonChange, ReasonHeartbeat, ReasonRequested:
		return true
	}
	return false
}

// CommandKind is what the verifier asks a device to do.
type CommandKind string

// Command kinds.
const (
	CommandReportNow CommandKind = "report_now" // send a report at once
	CommandRadioOff  CommandKind = "radio_off"  // take the radio down (+CFUN=4), if the device allows it
	CommandRadioOn   CommandKind = "radio_on"   // bring the radio back up (+CFUN=1)
)

func (k CommandKind) valid() bool {
	switch k {
	case CommandReportNow, CommandRadioOff, CommandRadioOn:
		return true
	}
	return false
}

// Source says where an observation came from.
type Source string

// Observation sources.
const (
	SourceAgent  Source = "agent"  // a signed agent report
	SourceRADIUS Source = "radius" // RADIUS accounting from the operator's network
	SourceEIR    Source = "eir"    // an equipment identity check from the network
	SourceAdmin  Source = "admin"  // an operator's action
	SourceAPI    Source = "api"    // a customer's API call
)

func (s Source) valid() bool {
	switch s {
	case SourceAgent, SourceRADIUS, SourceEIR, SourceAdmin, SourceAPI:
		return true
	}
	return false
}

// Decision is the verifier's verdict on one observation of a card.
type Decision string

// Decisions.
const (
	DecisionMatch       Decision = "match"        // the card is in an allowed device
	DecisionMismatch    Decision = "mismatch"     // the card is in a device its binding does not allow
	DecisionSeparated   Decision = "separated"    // the card's own device reports it gone or replaced
	DecisionUnknownCard Decision = "unknown_card" // the card is not in the inventory
	DecisionNotBound    Decision = "not_bound"    // the card has no binding
	DecisionLearned     Decision = "learned"      // a learn-first binding took the device seen now
	DecisionOutsideArea Decision = "outside_area" // the card is outside its area limit
	DecisionAdmin       Decision = "admin"        // an operator blocked or resumed the card by hand
)

func (d Decision) valid() bool {
	switch d {
	case DecisionMatch, DecisionMismatch, DecisionSeparated, DecisionUnknownCard,
		DecisionNotBound, DecisionLearned, DecisionOutsideArea, DecisionAdmin:
		return true
	}
	return false
}

// CardState is the state of a card in the verifier's state machine.
type CardState string

// Card states.
const (
	CardUnbound  CardState = "unbound"  // no binding; nothing is enforced
	CardLearning CardState = "learning" // bound without an IMEI, waiting for the first one seen
	CardActive   CardState = "active"   // bound and in an allowed device (or resumed)
	CardGrace    CardState = "grace"    // a mismatch was seen; the grace period runs before blocking
	CardAlerted  CardState = "alerted"  // a mismatch was seen on an alert-only binding
	CardBlocked  CardState = "blocked"  // service is blocked at the network
)

func (s CardState) valid() bool {
	switch s {
	case CardUnbound, CardLearning, CardActive, CardGrace, CardAlerted, CardBlocked:
		return true
	}
	return false
}

// AlertType is the kind of event an alert announces. It is also the last
// level of the alert's MQTT topic.
type AlertType string

// Alert types.
const (
	AlertMismatch      AlertType = "mismatch"       // the card was seen in a device its binding does not allow
	AlertBlocked       AlertType = "blocked"        // the card's service was blocked
	AlertResumed       AlertType = "resumed"        // the card's service was resumed
	AlertSeparated     AlertType = "separated"      // the card left the device it is bound to
	AlertLearned       AlertType = "learned"        // a learn-first binding locked to a device
	AlertAreaExit      AlertType = "area_exit"      // the card left its permitted area
	AlertDeviceFlagged AlertType = "device_flagged" // a device reports an IMEI other than the one it enrolled with
)

// AlertTypes lists every alert type, in a stable order.
func AlertTypes() []AlertType {
	return []AlertType{AlertMismatch, AlertBlocked, AlertResumed, AlertSeparated,
		AlertLearned, AlertAreaExit, AlertDeviceFlagged}
}

func (t AlertType) valid() bool {
	for _, v := range AlertTypes() {
		if t == v {
			return true
		}
	}
	return false
}

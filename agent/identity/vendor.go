package identity

import "strings"

// Vendor is a modem maker family; it selects the ICCID command and the SIM
// hot-swap indications.
type Vendor string

// Known vendors. Anything else is VendorGeneric.
const (
	VendorGeneric Vendor = "generic"
	VendorQuectel Vendor = "quectel"
	VendorSIMCom  Vendor = "simcom"
	VendorUblox   Vendor = "ublox"
	VendorTelit   Vendor = "telit"
	VendorHuawei  Vendor = "huawei"
	VendorSierra  Vendor = "sierra"
)

// VendorOf picks the vendor from a +CGMI answer (and the model, which
// some modems report more helpfully, e.g. "SIMCOM_SIM7600E-H").
func VendorOf(manufacturer, model string) Vendor {
	s := strings.ToLower(manufacturer + " " + model)
	switch {
	case strings.Contains(s, "quectel"):
		return VendorQuectel
	case strings.Contains(s, "simcom"):
		return VendorSIMCom
	case strings.Contains(s, "u-blox"), strings.Contains(s, "ublox"):
		return VendorUblox
	case strings.Contains(s, "telit"):
		return VendorTelit
	case strings.Contains(s, "huawei"):
		return VendorHuawei
	case strings.Contains(s, "sierra"):
		return VendorSierra
	}
	return VendorGeneric
}

// ICCIDCommand returns the vendor's own ICCID command; AT+CRSM on EF_ICCID
// is the fallback for all of them.
func (v Vendor) ICCIDCommand() string {
	switch v {
	case VendorQuectel:
		return "AT+QCCID"
	case VendorSIMCom:
		return "AT+CICCID"
	case VendorHuawei:
		return "AT^ICCID?"
	case VendorTelit:
		return "AT#CCID"
	case VendorSierra:
		return "AT!ICCID?"
	}
	return "AT+CCID" // generic and u-blox
}

// CRSMReadICCID reads EF_ICCID (0x2FE2) with READ BINARY, 10 bytes.
const CRSMReadICCID = "AT+CRSM=176,12258,0,0,10"

// URCEnables returns the commands that turn on the vendor's SIM hot-swap and
// registration indications, for the engine's init list. None of them change
// hardware configuration (AT+QSIMDET is left alone).
func (v Vendor) URCEnables() []string {
	cmds := []string{"AT+CREG=2", "AT+CGREG=2", "AT+CEREG=2"}
	switch v {
	case VendorQuectel:
		cmds = append(cmds, "AT+QSIMSTAT=1")
	case VendorUblox:
		cmds = append(cmds, "AT+USIMSTAT=1")
	case VendorTelit:
		cmds = append(cmds, "AT#QSS=2")
	}
	return cmds
}

// Event is what a URC means for the identity.
type Event int

// Events.
const (
	EventNone         Event = iota // not about identity
	EventSIM                       // SIM inserted, removed, re-initialised: re-read SIM identity now
	EventBoot                      // the modem (re)started: re-read everything
	EventRegistration              // registration changed: re-read registration
)

// String names the event.
func (e Event) String() string {
	switch e {
	case EventSIM:
		return "sim"
	case EventBoot:
		return "boot"
	case EventRegistration:
		return "registration"
	}
	return "none"
}

// simEventPrefixes are SIM hot-swap indications per vendor: generic +CPIN;
// Quectel +QSIMSTAT, +QUSIM; SIMCom +SIMCARD; u-blox +UUSIMSTAT; Telit #QSS
// (#USS on old GM862); Huawei ^SIMST; Cinterion ^SCKS; Sierra HL +SIM, +KSUP.
var simEventPrefixes = []string{"+CPIN:", "+QSIMSTAT:", "+QUSIM:", "+SIMCARD:", "+UUSIMSTAT:",
	"#QSS:", "#USS:", "^SIMST:", "^SCKS:", "+SIM:", "+KSUP:"}

// simReadyWords are phonebook/SMS-ready indications sent once a SIM has
// been initialised (after insertion or boot).
var simReadyWords = []string{"PB DONE", "SMS DONE", "+QIND: PB DONE", "+QIND: SMS DONE",
	"+QIND: \"PB DONE\"", "+QIND: \"SMS DONE\""}

var bootWords = []string{"RDY", "^SYSSTART"}

var regPrefixes = []string{"+CREG:", "+CGREG:", "+CEREG:", "+C5GREG:"}

// ClassifyURC says what an unsolicited line means for the identity.
func ClassifyURC(line string) Event {
	line = strings.TrimSpace(line)
	for _, w := range bootWords {
		if strings.EqualFold(line, w) {
			return EventBoot
		}
	}
	for _, p := range simEventPrefixes {
		if hasPrefixFold(line, p) {
			return EventSIM
		}
	}
	for _, w := range simReadyWords {
		if strings.EqualFold(line, w) {
			return EventSIM
		}
	}
	for _, p := range regPrefixes {
		if hasPrefixFold(line, p) {
			return EventRegistration
		}
	}
	return EventNone
}

// IsSIMEvent reports whether line should trigger an immediate re-read of the
// SIM identity (a hot-swap indication or a modem restart).
func IsSIMEvent(line string) bool {
	e := ClassifyURC(line)
	return e == EventSIM || e == EventBoot
}

// URCPrefixes returns the line prefixes of the indications ClassifyURC
// knows, to register with the engine (at.WithURCPrefixes) so that vendor
// URCs outside its built-in table are never taken as a command's reply.
func URCPrefixes() []string {
	return append(append([]string(nil), simEventPrefixes...), regPrefixes...)
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

package modemmanager

import (
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"

	"github.com/cardbind/cardbind/agent/identity"
)

// D-Bus names of ModemManager's API (ModemManager 1.x, introspection files
// org.freedesktop.ModemManager1*.xml).
const (
	busName     = "org.freedesktop.ModemManager1"
	rootPath    = dbus.ObjectPath("/org/freedesktop/ModemManager1")
	ifModem     = "org.freedesktop.ModemManager1.Modem"
	ifModem3gpp = "org.freedesktop.ModemManager1.Modem.Modem3gpp"
	ifSim       = "org.freedesktop.ModemManager1.Sim"

	ifProperties    = "org.freedesktop.DBus.Properties"
	ifObjectManager = "org.freedesktop.DBus.ObjectManager"
)

// MMModemState values (ModemManager-enums.h).
const (
	stateFailed       int32 = -1
	stateUnknown      int32 = 0
	stateInitializing int32 = 1
	stateLocked       int32 = 2
	stateDisabled     int32 = 3
	stateDisabling    int32 = 4
)

// MMModemStateFailedReason values.
const (
	failedSIMMissing uint32 = 2
	failedSIMError   uint32 = 3
)

// MMModemPowerState values.
const (
	powerOff uint32 = 1
	powerLow uint32 = 2
)

// MMModemLock values from MM_MODEM_LOCK_SIM_PIN on; UNKNOWN (0) and NONE
// (1) mean no lock is pending. The names are +CPIN?'s, so a locked SIM
// reads the same through either source.
var lockNames = [...]string{
	2: "SIM PIN", 3: "SIM PIN2", 4: "SIM PUK", 5: "SIM PUK2",
	6: "PH-SP PIN", 7: "PH-SP PUK", 8: "PH-NET PIN", 9: "PH-NET PUK",
	10: "PH-SIM PIN", 11: "PH-CORP PIN", 12: "PH-CORP PUK",
	13: "PH-FSIM PIN", 14: "PH-FSIM PUK", 15: "PH-NETSUB PIN", 16: "PH-NETSUB PUK",
}

// lockName returns the +CPIN? name of an MMModemLock, or "" for none.
func lockName(lock uint32) string {
	if int(lock) < len(lockNames) {
		return lockNames[lock]
	}
	return ""
}

// MMModemAccessTechnology bits, best first, with the 27.007 <AcT> each
// maps to. Cat-M has no <AcT> of its own: modules report E-UTRAN (7).
var accessTechs = [...]struct {
	bit uint32
	act int
}{
	{1 << 15, 12}, // 5GNR: NG-RAN
	{1 << 14, 7},  // LTE: E-UTRAN
	{1 << 16, 7},  // LTE Cat-M
	{1 << 17, 9},  // LTE NB-IoT: E-UTRAN (NB-S1)
	{1 << 9, 6},   // HSPA+
	{1 << 8, 6},   // HSPA: UTRAN w/HSDPA and HSUPA
	{1 << 7, 5},   // HSUPA
	{1 << 6, 4},   // HSDPA
	{1 << 5, 2},   // UMTS: UTRAN
	{1 << 4, 3},   // EDGE: GSM w/EGPRS
	{1 << 3, 0},   // GPRS
	{1 << 2, 1},   // GSM Compact
	{1 << 1, 0},   // GSM
}

// RegistrationKind is identity.Registration.Kind for a registration read
// from ModemManager: its Modem3gpp.RegistrationState, which folds the
// CS, PS, EPS and 5GS registrations into one MMModem3gppRegistrationState
// whose values are 27.007's <stat>.
const RegistrationKind = "MM"

// ICCIDSource is identity.Identity.ICCIDSource for an ICCID read from
// ModemManager.
const ICCIDSource = "ModemManager Sim.SimIdentifier"

// props is one interface's properties as D-Bus gives them.
type props map[string]dbus.Variant

func (p props) str(name string) string {
	s, _ := p[name].Value().(string)
	return strings.TrimSpace(s)
}

func (p props) u32(name string) (uint32, bool) {
	v, ok := p[name].Value().(uint32)
	return v, ok
}

func (p props) i32(name string) (int32, bool) {
	v, ok := p[name].Value().(int32)
	return v, ok
}

func (p props) path(name string) dbus.ObjectPath {
	v, _ := p[name].Value().(dbus.ObjectPath)
	return v
}

// modemObject is a modem as GetManagedObjects lists it: interface name to
// properties.
type modemObject map[string]map[string]dbus.Variant

func (o modemObject) iface(name string) (props, bool) {
	p, ok := o[name]
	return props(p), ok
}

// simPath returns the modem's SIM object path, or "" when it has none
// ("/" is ModemManager's "no SIM").
func (o modemObject) simPath() dbus.ObjectPath {
	m, _ := o.iface(ifModem)
	p := m.path("Sim")
	if p == "/" || !p.IsValid() {
		return ""
	}
	return p
}

// toIdentity turns a modem's properties and its SIM's (nil when the modem
// has no SIM object; simErr when the SIM object could not be read) into
// an Identity. It is pure: tested without a bus.
func toIdentity(modem modemObject, sim props, simErr error) identity.Identity {
	m, _ := modem.iface(ifModem)
	g, has3gpp := modem.iface(ifModem3gpp)
	var id identity.Identity
	problem := func(format string, args ...any) {
		id.Problems = append(id.Problems, fmt.Sprintf(format, args...))
	}

	id.Manufacturer = m.str("Manufacturer")
	id.Model = m.str("Model")
	id.Revision = m.str("Revision")
	id.Vendor = identity.VendorOf(id.Manufacturer, id.Model)
	id.IMEI = m.str("EquipmentIdentifier")
	if imei := g.str("Imei"); imei != "" && (id.IMEI == "" || !allDigits(id.IMEI)) {
		// EquipmentIdentifier is the ESN/MEID on CDMA-capable modems.
		id.IMEI = imei
	}
	if id.IMEI == "" {
		problem("imei: ModemManager gives no EquipmentIdentifier")
	}

	state, _ := m.i32("State")
	reason, _ := m.u32("StateFailedReason")
	lock, _ := m.u32("UnlockRequired")
	switch {
	case modem.simPath() == "" && (state == stateUnknown || state == stateInitializing):
		// ModemManager has not loaded the SIM yet.
		id.SIM.State = identity.SIMNotReady
	case modem.simPath() == "":
		id.SIM.State = identity.SIMAbsent
	case lockName(lock) != "":
		id.SIM = identity.SIMStatus{State: identity.SIMLocked, Lock: lockName(lock)}
	case state == stateLocked:
		id.SIM.State = identity.SIMLocked
	case state == stateFailed && reason == failedSIMMissing:
		id.SIM.State = identity.SIMAbsent
	case state == stateFailed && reason == failedSIMError:
		id.SIM.State = identity.SIMFailure
	case simErr != nil:
		id.SIM.State = identity.SIMUnknown
		problem("sim: %v", simErr)
	case sim.str("SimIdentifier") == "":
		id.SIM.State = identity.SIMNotReady
	default:
		id.SIM.State = identity.SIMReady
	}
	if state == stateFailed {
		problem("modem: ModemManager state failed (reason %d)", reason)
	}

	if id.SIM.State != identity.SIMAbsent && sim != nil {
		if raw := sim.str("SimIdentifier"); raw != "" {
			iccid, err := identity.NormalizeICCID(raw)
			if err != nil {
				problem("iccid: %v", err)
			} else {
				id.ICCID, id.ICCIDSource = iccid, ICCIDSource
			}
		}
		id.IMSI = sim.str("Imsi")
	}

	if has3gpp {
		if stat, ok := g.u32("RegistrationState"); ok {
			r := &identity.Registration{Kind: RegistrationKind, N: -1, Stat: identity.RegStat(stat), AcT: -1}
			power, _ := m.u32("PowerState")
			if state == stateDisabled || state == stateDisabling || power == powerLow || power == powerOff {
				// The radio is down (what +CFUN=4 leaves): not registered,
				// not searching, whatever was last cached.
				r.Stat = identity.RegNotRegistered
			} else {
				r.AcT = accessTech(m)
				id.PLMN = operator(g, r.Stat)
			}
			id.Registration = r
		}
	}
	return id
}

// operator returns the serving network from Modem3gpp.OperatorCode
// ("MCCMNC") while registered, or nil.
func operator(g props, stat identity.RegStat) *identity.PLMN {
	if !stat.Registered() {
		return nil
	}
	p, err := identity.ParsePLMN(g.str("OperatorCode"))
	if err != nil {
		return nil
	}
	return &p
}

// accessTech maps the best of the modem's AccessTechnologies to a 27.007
// <AcT>, or -1.
func accessTech(m props) int {
	bits, _ := m.u32("AccessTechnologies")
	for _, t := range accessTechs {
		if bits&t.bit != 0 {
			return t.act
		}
	}
	return -1
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

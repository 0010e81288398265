package modemmanager

import (
	"errors"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/cardbind/cardbind/agent/identity"
)

func TestToIdentity(t *testing.T) {
	type change struct {
		iface string
		name  string
		value any
	}
	tests := []struct {
		name       string
		modem      []change
		no3gpp     bool
		sim        map[string]dbus.Variant // nil: SIM A
		simErr     error
		wantIMEI   string
		wantSIM    identity.SIMStatus
		wantICCID  string
		wantIMSI   string
		wantStat   identity.RegStat // -1: no registration
		wantAcT    int
		wantProblm string
	}{
		{name: "registered on LTE", wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMReady},
			wantICCID: iccidA, wantIMSI: imsiA, wantStat: identity.RegHome, wantAcT: 7},
		{name: "no SIM object", modem: []change{{ifModem, "Sim", dbus.ObjectPath("/")}},
			wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMAbsent}, wantStat: identity.RegHome, wantAcT: 7},
		{name: "no SIM yet while initializing",
			modem:    []change{{ifModem, "Sim", dbus.ObjectPath("/")}, {ifModem, "State", int32(1)}},
			wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMNotReady}, wantStat: identity.RegHome, wantAcT: 7},
		{name: "PUK required", modem: []change{{ifModem, "State", int32(2)}, {ifModem, "UnlockRequired", uint32(4)}},
			wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMLocked, Lock: "SIM PUK"},
			wantICCID: iccidA, wantIMSI: imsiA, wantStat: identity.RegHome, wantAcT: 7},
		{name: "locked, lock unknown", modem: []change{{ifModem, "State", int32(2)}, {ifModem, "UnlockRequired", uint32(0)}},
			wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMLocked},
			wantICCID: iccidA, wantIMSI: imsiA, wantStat: identity.RegHome, wantAcT: 7},
		{name: "failed: SIM missing", modem: []change{{ifModem, "State", int32(-1)}, {ifModem, "StateFailedReason", uint32(2)}},
			wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMAbsent},
			wantStat: identity.RegHome, wantAcT: 7, wantProblm: "state failed (reason 2)"},
		{name: "failed: SIM error", modem: []change{{ifModem, "State", int32(-1)}, {ifModem, "StateFailedReason", uint32(3)}},
			wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMFailure},
			wantICCID: iccidA, wantIMSI: imsiA, wantStat: identity.RegHome, wantAcT: 7, wantProblm: "state failed"},
		{name: "SIM unreadable", simErr: errors.New("timeout"),
			sim: map[string]dbus.Variant{}, wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMUnknown},
			wantStat: identity.RegHome, wantAcT: 7, wantProblm: "sim: timeout"},
		{name: "SIM without ICCID yet", sim: map[string]dbus.Variant{"Imsi": dbus.MakeVariant("")},
			wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMNotReady}, wantStat: identity.RegHome, wantAcT: 7},
		{name: "ICCID with hex and padding", sim: map[string]dbus.Variant{"SimIdentifier": dbus.MakeVariant("89860318640220133A9F")},
			wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMReady}, wantICCID: "89860318640220133A9",
			wantStat: identity.RegHome, wantAcT: 7},
		{name: "ICCID malformed", sim: map[string]dbus.Variant{"SimIdentifier": dbus.MakeVariant("1234")},
			wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMReady},
			wantStat: identity.RegHome, wantAcT: 7, wantProblm: "iccid:"},
		{name: "CDMA MEID, IMEI from Modem3gpp",
			modem:    []change{{ifModem, "EquipmentIdentifier", "A1000049B7E2C1"}},
			wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMReady},
			wantICCID: iccidA, wantIMSI: imsiA, wantStat: identity.RegHome, wantAcT: 7},
		{name: "no IMEI", modem: []change{{ifModem, "EquipmentIdentifier", ""}, {ifModem3gpp, "Imei", ""}},
			wantSIM: identity.SIMStatus{State: identity.SIMReady}, wantICCID: iccidA, wantIMSI: imsiA,
			wantStat: identity.RegHome, wantAcT: 7, wantProblm: "imei:"},
		{name: "disabled: radio down", modem: []change{{ifModem, "State", int32(3)}, {ifModem, "PowerState", uint32(2)}},
			wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMReady}, wantICCID: iccidA, wantIMSI: imsiA,
			wantStat: identity.RegNotRegistered, wantAcT: -1},
		{name: "denied", modem: []change{{ifModem3gpp, "RegistrationState", uint32(3)}, {ifModem, "AccessTechnologies", uint32(0)}},
			wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMReady}, wantICCID: iccidA, wantIMSI: imsiA,
			wantStat: identity.RegDenied, wantAcT: -1},
		{name: "NB-IoT", modem: []change{{ifModem, "AccessTechnologies", uint32(1 << 17)}},
			wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMReady}, wantICCID: iccidA, wantIMSI: imsiA,
			wantStat: identity.RegHome, wantAcT: 9},
		{name: "5G NR with LTE anchor", modem: []change{{ifModem, "AccessTechnologies", uint32(1<<15 | 1<<14)}},
			wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMReady}, wantICCID: iccidA, wantIMSI: imsiA,
			wantStat: identity.RegHome, wantAcT: 12},
		{name: "HSPA+", modem: []change{{ifModem, "AccessTechnologies", uint32(1 << 9)}, {ifModem3gpp, "RegistrationState", uint32(5)}},
			wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMReady}, wantICCID: iccidA, wantIMSI: imsiA,
			wantStat: identity.RegRoaming, wantAcT: 6},
		{name: "no Modem3gpp interface", no3gpp: true,
			wantIMEI: imeiA, wantSIM: identity.SIMStatus{State: identity.SIMReady}, wantICCID: iccidA, wantIMSI: imsiA,
			wantStat: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			modem := modemObject(modemProps(imeiA, sim0))
			for _, c := range tt.modem {
				modem[c.iface][c.name] = dbus.MakeVariant(c.value)
			}
			if tt.no3gpp {
				delete(modem, ifModem3gpp)
			}
			sim := tt.sim
			if sim == nil {
				sim = simProps(iccidA, imsiA)
			}
			if modem.simPath() == "" {
				sim = nil
			}
			id := toIdentity(modem, sim, tt.simErr)
			if id.IMEI != tt.wantIMEI || id.SIM != tt.wantSIM || id.ICCID != tt.wantICCID || id.IMSI != tt.wantIMSI {
				t.Errorf("got imei=%q sim=%+v iccid=%q imsi=%q; want imei=%q sim=%+v iccid=%q imsi=%q",
					id.IMEI, id.SIM, id.ICCID, id.IMSI, tt.wantIMEI, tt.wantSIM, tt.wantICCID, tt.wantIMSI)
			}
			switch {
			case tt.wantStat == -1 && id.Registration != nil:
				t.Errorf("registration = %+v, want none", id.Registration)
			case tt.wantStat == -1:
			case id.Registration == nil:
				t.Errorf("no registration, want stat %v", tt.wantStat)
			case id.Registration.Stat != tt.wantStat || id.Registration.AcT != tt.wantAcT:
				t.Errorf("registration = %+v, want stat %v act %d", id.Registration, tt.wantStat, tt.wantAcT)
			}
			problems := strings.Join(id.Problems, "; ")
			if (tt.wantProblm == "") != (problems == "") || !strings.Contains(problems, tt.wantProblm) {
				t.Errorf("problems = %q, want %q", problems, tt.wantProblm)
			}
		})
	}
}

func TestToIdentityOperator(t *testing.T) {
	tests := []struct {
		name string
		code any    // Modem3gpp.OperatorCode; nil: absent
		stat uint32 // Modem3gpp.RegistrationState
		off  bool   // modem disabled (radio down)
		want *identity.PLMN
	}{
		{"3-digit MNC", "310260", 1, false, &identity.PLMN{MCC: "310", MNC: "260"}},
		{"2-digit MNC, roaming", "46003", 5, false, &identity.PLMN{MCC: "460", MNC: "03"}},
		{"empty while searching", "", 2, false, nil},
		{"stale code while searching", "46003", 2, false, nil},
		{"radio down", "46003", 1, true, nil},
		{"absent", nil, 1, false, nil},
		{"not numeric", "T-Mobile", 1, false, nil},
		{"wrong type", uint32(46003), 1, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			modem := modemObject(modemProps(imeiA, sim0))
			delete(modem[ifModem3gpp], "OperatorCode")
			if tt.code != nil {
				modem[ifModem3gpp]["OperatorCode"] = dbus.MakeVariant(tt.code)
			}
			modem[ifModem3gpp]["RegistrationState"] = dbus.MakeVariant(tt.stat)
			if tt.off {
				modem[ifModem]["State"] = dbus.MakeVariant(int32(3))
			}
			got := toIdentity(modem, simProps(iccidA, imsiA), nil).PLMN
			if (got == nil) != (tt.want == nil) || (got != nil && *got != *tt.want) {
				t.Errorf("PLMN = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRelevant(t *testing.T) {
	changed := func(iface string, names ...string) *dbus.Signal {
		m := map[string]dbus.Variant{}
		for _, n := range names {
			m[n] = dbus.MakeVariant(uint32(1))
		}
		return &dbus.Signal{Path: modem0, Name: ifProperties + ".PropertiesChanged", Body: []any{iface, m, []string{}}}
	}
	tests := []struct {
		name string
		sig  *dbus.Signal
		want bool
	}{
		{"SIM path", changed(ifModem, "Sim"), true},
		{"state among others", changed(ifModem, "SignalQuality", "State"), true},
		{"signal quality only", changed(ifModem, "SignalQuality", "AccessTechnologies"), false},
		{"registration", changed(ifModem3gpp, "RegistrationState"), true},
		{"operator name", changed(ifModem3gpp, "OperatorName"), false},
		{"operator code", changed(ifModem3gpp, "OperatorCode"), true},
		{"ICCID", changed(ifSim, "SimIdentifier"), true},
		{"other interface", changed("org.freedesktop.ModemManager1.Modem.Location", "Location"), false},
		{"invalidated IMSI", &dbus.Signal{Path: sim0, Name: ifProperties + ".PropertiesChanged",
			Body: []any{ifSim, map[string]dbus.Variant{}, []string{"Imsi"}}}, true},
		{"short body", &dbus.Signal{Path: sim0, Name: ifProperties + ".PropertiesChanged", Body: []any{ifSim}}, false},
		{"modem added", &dbus.Signal{Path: rootPath, Name: ifObjectManager + ".InterfacesAdded"}, true},
		{"modem removed", &dbus.Signal{Path: rootPath, Name: ifObjectManager + ".InterfacesRemoved"}, true},
		{"ModemManager owner changed", &dbus.Signal{Name: "org.freedesktop.DBus.NameOwnerChanged", Body: []any{busName, ":1.4", ""}}, true},
		{"another name owner changed", &dbus.Signal{Name: "org.freedesktop.DBus.NameOwnerChanged", Body: []any{"org.example", ":1.4", ""}}, false},
		{"name acquired", &dbus.Signal{Name: "org.freedesktop.DBus.NameAcquired", Body: []any{":1.9"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := relevant(tt.sig); got != tt.want {
				t.Errorf("relevant = %v, want %v", got, tt.want)
			}
		})
	}
}

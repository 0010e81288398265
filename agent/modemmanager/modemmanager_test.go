package modemmanager

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/cardbind/cardbind/agent/identity"
)

const (
	modem0 = dbus.ObjectPath("/org/freedesktop/ModemManager1/Modem/0")
	modem1 = dbus.ObjectPath("/org/freedesktop/ModemManager1/Modem/1")
	sim0   = dbus.ObjectPath("/org/freedesktop/ModemManager1/SIM/0")
	sim1   = dbus.ObjectPath("/org/freedesktop/ModemManager1/SIM/1")

	imeiA  = "356938035643809"
	imeiB  = "352656100367872"
	iccidA = "8901260886258128535"
	imsiA  = "310260886258128"
	iccidB = "8939107800023416395"
	imsiB  = "222107701772423"
)

// oneModem starts a bus, a fake ModemManager with modem 0 holding SIM A,
// and a Modem reading it.
func oneModem(t *testing.T) (*testBus, *fakeMM, *Modem) {
	t.Helper()
	b := startBus(t)
	f := startFake(t, b)
	f.setSIM(sim0, simProps(iccidA, imsiA))
	f.addModem(modem0, modemProps(imeiA, sim0))
	m := runModem(t, b, Config{})
	return b, f, m
}

func TestIdentify(t *testing.T) {
	_, _, m := oneModem(t)
	got, err := m.Identify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := identity.Identity{
		Manufacturer: "Quectel", Model: "EC25", Revision: "EC25EFAR06A06M4G", Vendor: identity.VendorQuectel,
		IMEI: imeiA, SIM: identity.SIMStatus{State: identity.SIMReady},
		ICCID: iccidA, ICCIDSource: ICCIDSource, IMSI: imsiA,
	}
	reg := got.Registration
	got.Registration = nil
	if got.Manufacturer != want.Manufacturer || got.Model != want.Model || got.Revision != want.Revision ||
		got.Vendor != want.Vendor || got.IMEI != want.IMEI || got.SIM != want.SIM || got.ICCID != want.ICCID ||
		got.ICCIDSource != want.ICCIDSource || got.IMSI != want.IMSI || len(got.Problems) != 0 || got.Signal != nil {
		t.Errorf("Identify = %+v, want %+v", got, want)
	}
	if reg == nil || *reg != (identity.Registration{Kind: RegistrationKind, N: -1, Stat: identity.RegHome, AcT: 7}) {
		t.Errorf("registration = %+v, want home on E-UTRAN", reg)
	}
}

// TestEvents changes what ModemManager shows and checks that an event
// arrives within a second and Identify then reads the change.
func TestEvents(t *testing.T) {
	tests := []struct {
		name    string
		change  func(f *fakeMM)
		want    identityResult
		wantErr error
		check   func(t *testing.T, id identity.Identity)
	}{
		{
			name: "SIM swapped, same SIM object",
			change: func(f *fakeMM) {
				f.setSIM(sim0, simProps(iccidB, imsiB))
			},
			want: identityResult{imeiA, "ready", iccidB, imsiB},
		},
		{
			name: "SIM swapped, new SIM object",
			change: func(f *fakeMM) {
				f.setSIM(sim1, simProps(iccidB, imsiB))
				f.setModem(modem0, ifModem, map[string]any{"Sim": sim1})
			},
			want: identityResult{imeiA, "ready", iccidB, imsiB},
		},
		{
			name: "SIM removed",
			change: func(f *fakeMM) {
				f.setModem(modem0, ifModem, map[string]any{"Sim": dbus.ObjectPath("/"), "State": int32(-1), "StateFailedReason": uint32(2)})
			},
			want: identityResult{imeiA, "absent", "", ""},
		},
		{
			name: "SIM PIN required",
			change: func(f *fakeMM) {
				f.setModem(modem0, ifModem, map[string]any{"State": int32(2), "UnlockRequired": uint32(2)})
			},
			want: identityResult{imeiA, "locked", iccidA, imsiA},
			check: func(t *testing.T, id identity.Identity) {
				if id.SIM.Lock != "SIM PIN" {
					t.Errorf("lock = %q, want SIM PIN", id.SIM.Lock)
				}
			},
		},
		{
			name: "registration denied",
			change: func(f *fakeMM) {
				f.setModem(modem0, ifModem3gpp, map[string]any{"RegistrationState": uint32(3)})
			},
			want: identityResult{imeiA, "ready", iccidA, imsiA},
			check: func(t *testing.T, id identity.Identity) {
				if id.Registration == nil || id.Registration.Stat != identity.RegDenied {
					t.Errorf("registration = %+v, want denied", id.Registration)
				}
			},
		},
		{
			name: "serving network changed",
			change: func(f *fakeMM) {
				f.setModem(modem0, ifModem3gpp, map[string]any{"OperatorCode": "46003", "RegistrationState": uint32(5)})
			},
			want: identityResult{imeiA, "ready", iccidA, imsiA},
			check: func(t *testing.T, id identity.Identity) {
				if id.PLMN == nil || *id.PLMN != (identity.PLMN{MCC: "460", MNC: "03"}) {
					t.Errorf("PLMN = %+v, want 460-03", id.PLMN)
				}
			},
		},
		{
			name:    "modem removed",
			change:  func(f *fakeMM) { f.removeModem(modem0) },
			wantErr: ErrNoModem,
		},
		{
			name: "modem replaced by another",
			change: func(f *fakeMM) {
				f.removeModem(modem0)
				f.setSIM(sim1, simProps(iccidA, imsiA))
				f.addModem(modem1, modemProps(imeiB, sim1))
			},
			want: identityResult{imeiB, "ready", iccidA, imsiA},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, f, m := oneModem(t)
			tt.change(f)
			took := waitEvent(t, m, tt.name)
			t.Logf("event after %v", took)
			got, err := identify(t, m)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Identify error = %v, want %v", err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Errorf("Identify = %+v, want %+v", got, tt.want)
			}
			if tt.check != nil {
				id, _ := m.Identify(context.Background())
				tt.check(t, id)
			}
		})
	}
}

// TestQuietChanges: properties that do not bear on identity change often
// (signal quality every few seconds) and must not wake the agent.
func TestQuietChanges(t *testing.T) {
	_, f, m := oneModem(t)
	f.setModem(modem0, ifModem, map[string]any{"SignalQuality": []any{uint32(40), true}, "AccessTechnologies": uint32(1 << 5)})
	noEvent(t, m, 300*time.Millisecond, "signal quality change")
	f.setModem(modem0, ifModem3gpp, map[string]any{"RegistrationState": uint32(5)})
	waitEvent(t, m, "roaming")
}

func TestModemRemovedAndReadded(t *testing.T) {
	_, f, m := oneModem(t)
	f.removeModem(modem0)
	waitEvent(t, m, "modem removed")
	if _, err := identify(t, m); !isNoModem(err) {
		t.Fatalf("Identify after removal: %v, want ErrNoModem", err)
	}
	// ModemManager re-probes a modem after a SIM hot swap: it comes back
	// under a new path with the new SIM.
	f.setSIM(sim1, simProps(iccidB, imsiB))
	f.addModem(modem1, modemProps(imeiA, sim1))
	waitEvent(t, m, "modem re-added")
	got, err := identify(t, m)
	if err != nil {
		t.Fatal(err)
	}
	if want := (identityResult{imeiA, "ready", iccidB, imsiB}); got != want {
		t.Errorf("Identify = %+v, want %+v", got, want)
	}
}

func TestNoSIM(t *testing.T) {
	b := startBus(t)
	f := startFake(t, b)
	f.addModem(modem0, modemProps(imeiA, "/"))
	m := runModem(t, b, Config{})
	got, err := identify(t, m)
	if err != nil {
		t.Fatal(err)
	}
	if want := (identityResult{imeiA, "absent", "", ""}); got != want {
		t.Errorf("Identify = %+v, want %+v", got, want)
	}
}

func TestSetRadio(t *testing.T) {
	_, f, m := oneModem(t)
	ctx := context.Background()
	if err := m.SetRadio(ctx, false); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, m, "disabled")
	id, err := m.Identify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id.Registration == nil || id.Registration.Stat != identity.RegNotRegistered {
		t.Errorf("registration with the radio down = %+v, want stat 0", id.Registration)
	}
	if id.ICCID != iccidA {
		t.Errorf("ICCID with the radio down = %q, want %q", id.ICCID, iccidA)
	}
	if err := m.SetRadio(ctx, true); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, m, "enabled")
	id, err = m.Identify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id.Registration == nil || id.Registration.Stat != identity.RegHome {
		t.Errorf("registration with the radio up = %+v, want home", id.Registration)
	}
	if got := f.enableCalls(); len(got) != 2 || got[0] || !got[1] {
		t.Errorf("Enable calls = %v, want [false true]", got)
	}
}

func TestModemManagerRestart(t *testing.T) {
	b, f, m := oneModem(t)
	f.conn.Close()
	waitEvent(t, m, "ModemManager gone")
	if _, err := identify(t, m); err == nil || isNoModem(err) {
		t.Fatalf("Identify without ModemManager: %v, want a D-Bus error", err)
	}
	f2 := startFake(t, b)
	waitEvent(t, m, "ModemManager back")
	f2.setSIM(sim0, simProps(iccidB, imsiB))
	f2.addModem(modem0, modemProps(imeiA, sim0))
	waitEvent(t, m, "modem added")
	got, err := identify(t, m)
	if err != nil {
		t.Fatal(err)
	}
	if want := (identityResult{imeiA, "ready", iccidB, imsiB}); got != want {
		t.Errorf("Identify = %+v, want %+v", got, want)
	}
}

// TestBusRestart: the system bus going away (dbus-daemon restarted) must
// not end Run; the Modem reconnects and reads again.
func TestBusRestart(t *testing.T) {
	b, _, m := oneModem(t)
	b.stop()
	waitEvent(t, m, "bus lost")
	if _, err := identify(t, m); err == nil {
		t.Fatal("Identify with the bus down succeeded")
	}
	b.start(t)
	f := startFake(t, b)
	f.setSIM(sim0, simProps(iccidA, imsiA))
	f.addModem(modem0, modemProps(imeiA, sim0))
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := identify(t, m)
		if err == nil {
			if want := (identityResult{imeiA, "ready", iccidA, imsiA}); got != want {
				t.Errorf("Identify = %+v, want %+v", got, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no identity within 5 s of the bus coming back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSelectModem(t *testing.T) {
	b := startBus(t)
	f := startFake(t, b)
	f.setSIM(sim0, simProps(iccidA, imsiA))
	f.setSIM(sim1, simProps(iccidB, imsiB))
	f.addModem(modem0, modemProps(imeiA, sim0))
	second := modemProps(imeiB, sim1)
	second[ifModem]["PrimaryPort"] = dbus.MakeVariant("cdc-wdm1")
	second[ifModem]["Device"] = dbus.MakeVariant("/sys/devices/platform/usb/1-2")
	f.addModem(modem1, second)

	tests := []struct {
		sel      string
		wantIMEI string
		wantErr  error
	}{
		{"", imeiA, nil},
		{string(modem1), imeiB, nil},
		{imeiB, imeiB, nil},
		{"cdc-wdm1", imeiB, nil},
		{"/sys/devices/platform/usb/1-1", imeiA, nil},
		{"cdc-wdm7", "", ErrNoModem},
	}
	for _, tt := range tests {
		t.Run(tt.sel, func(t *testing.T) {
			m := runModem(t, b, Config{Modem: tt.sel})
			got, err := identify(t, m)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Identify error = %v, want %v", err, tt.wantErr)
			}
			if got.imei != tt.wantIMEI {
				t.Errorf("IMEI = %q, want %q", got.imei, tt.wantIMEI)
			}
		})
	}
}

func TestNotConnected(t *testing.T) {
	m, err := New(Config{Address: "unix:path=/nonexistent/bus"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Identify(context.Background()); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Identify before Run: %v, want ErrNotConnected", err)
	}
	if err := m.SetRadio(context.Background(), false); !errors.Is(err, ErrNotConnected) {
		t.Errorf("SetRadio before Run: %v, want ErrNotConnected", err)
	}
}

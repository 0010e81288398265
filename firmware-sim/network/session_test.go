package network

import (
	"errors"
	"testing"
)

func TestParseCell(t *testing.T) {
	tests := []struct {
		in   string
		want Cell
		err  bool
	}{
		{"460-03-6699-27446212", Cell{MCC: "460", MNC: "03", TAC: 6699, ECI: 27446212}, false},
		{"310-410-65535-268435455", Cell{MCC: "310", MNC: "410", TAC: 65535, ECI: 268435455}, false},
		{"460-03-6699", Cell{}, true},
		{"460-03-65536-1", Cell{}, true},
		{"460-03-1-268435456", Cell{}, true},
		{"46-03-1-1", Cell{}, true},
		{"460-3-1-1", Cell{}, true},
		{"460-03-x-1", Cell{}, true},
	}
	for _, tt := range tests {
		got, err := ParseCell(tt.in)
		if tt.err {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseCell(%q) = %v, %v; want ErrInvalid", tt.in, got, err)
			}
			continue
		}
		if err != nil || *got != tt.want {
			t.Errorf("ParseCell(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

// The network's default cell goes into the location of attaches that name
// none; an attach's own cell wins.
func TestDefaultCell(t *testing.T) {
	srv := newAcctServer(t, 0)
	acct := newAccounting(t, srv.addr(), AccountingConfig{})
	n := New(Options{Sessions: acct, Cell: &Cell{MCC: "001", MNC: "01", TAC: 1, ECI: 2}})
	ctx := t.Context()
	if _, err := n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: imei(1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Attach(ctx, AttachRequest{ICCID: iccid(2), IMSI: imsi(2), IMEI: imei(2),
		Cell: &Cell{MCC: "460", MNC: "03", TAC: 3, ECI: 4}}); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for range 2 {
		p := srv.next(t)
		v := vsas(t, p)
		got[string(v[vsaIMSI])] = string(v[vsaSGSNMCCMNC]) + "/" + string(v[vsaUserLocation][4:6]) + "/" + string(v[vsaUserLocation][9:13])
	}
	if got[imsi(1)] != "00101/\x00\x01/\x00\x00\x00\x02" || got[imsi(2)] != "46003/\x00\x03/\x00\x00\x00\x04" {
		t.Errorf("serving network/TAC/ECI by IMSI: %q", got)
	}
}

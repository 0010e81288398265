package network

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"

	"layeh.com/radius/rfc2866"
)

// A location update of an attached card sends an Interim-Update with the
// new 3GPP-User-Location-Info, in order with the card's other requests.
func TestUpdateLocationAccounting(t *testing.T) {
	srv := newAcctServer(t, 0)
	acct := newAccounting(t, srv.addr(), AccountingConfig{})
	n := New(Options{Sessions: acct})
	ctx := t.Context()
	a := Cell{MCC: "460", MNC: "03", TAC: 0x1a2b, ECI: 0x01a2b3c4}
	b := Cell{MCC: "460", MNC: "11", TAC: 0x1a2c, ECI: 0x01a2b3c5}
	if _, err := n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: imei(1), Cell: &a}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Cell{b, b} { // the second is no change
		if _, err := n.UpdateLocation(ctx, LocationUpdate{ICCID: iccid(1), IMEI: imei(1), Cell: c}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.Detach(ctx, iccid(1), imei(1)); err != nil {
		t.Fatal(err)
	}
	uli := func(c Cell) string {
		b, err := encodeULI(&c)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	want := []struct {
		status rfc2866.AcctStatusType
		plmn   string
		uli    string
	}{
		{rfc2866.AcctStatusType_Value_Start, "46003", uli(a)},
		{rfc2866.AcctStatusType_Value_InterimUpdate, "46011", uli(b)},
		{rfc2866.AcctStatusType_Value_Stop, "46011", uli(b)},
	}
	var id string
	for i, w := range want {
		p := srv.next(t)
		v := vsas(t, p)
		if status(p) != w.status || string(v[vsaSGSNMCCMNC]) != w.plmn || string(v[vsaUserLocation]) != w.uli {
			t.Errorf("request %d: %v %q %x, want %v %q %x", i, status(p), v[vsaSGSNMCCMNC], v[vsaUserLocation],
				w.status, w.plmn, w.uli)
		}
		sid := rfc2866.AcctSessionID_GetString(p)
		if id == "" {
			id = sid
		} else if sid != id {
			t.Errorf("request %d: session %s, want %s", i, sid, id)
		}
	}
	select {
	case p := <-srv.got:
		t.Errorf("unexpected request %v", status(p))
	default:
	}
}

func TestUpdateLocationRefused(t *testing.T) {
	srv := httptest.NewServer(NewHandler(New(Options{}), nil))
	t.Cleanup(srv.Close)
	net := New(Options{})
	for name, n := range map[string]interface {
		api
		UpdateLocation(ctx context.Context, u LocationUpdate) (Card, error)
	}{"memory": net, "http": NewClient(srv.URL, srv.Client())} {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			cell := Cell{MCC: "460", MNC: "03", TAC: 1, ECI: 2}
			if _, err := n.UpdateLocation(ctx, LocationUpdate{ICCID: iccid(1), IMEI: imei(1), Cell: cell}); !errors.Is(err, ErrNotFound) {
				t.Errorf("unknown card: %v, want ErrNotFound", err)
			}
			if _, err := n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: imei(1)}); err != nil {
				t.Fatal(err)
			}
			if _, err := n.UpdateLocation(ctx, LocationUpdate{ICCID: iccid(1), IMEI: imei(2), Cell: cell}); !errors.Is(err, ErrNotAttached) {
				t.Errorf("another device: %v, want ErrNotAttached", err)
			}
			bad := Cell{MCC: "46", MNC: "03", TAC: 1, ECI: 2}
			if _, err := n.UpdateLocation(ctx, LocationUpdate{ICCID: iccid(1), IMEI: imei(1), Cell: bad}); !errors.Is(err, ErrInvalid) {
				t.Errorf("bad cell: %v, want ErrInvalid", err)
			}
			if _, err := n.UpdateLocation(ctx, LocationUpdate{ICCID: iccid(1), IMEI: imei(1), Cell: cell}); err != nil {
				t.Errorf("attached card: %v", err)
			}
			if _, err := n.Detach(ctx, iccid(1), ""); err != nil {
				t.Fatal(err)
			}
			if _, err := n.UpdateLocation(ctx, LocationUpdate{ICCID: iccid(1), IMEI: imei(1), Cell: cell}); !errors.Is(err, ErrNotAttached) {
				t.Errorf("detached card: %v, want ErrNotAttached", err)
			}
		})
	}
}

package network

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// fakeEIR answers equipment-status by the IMEI's last digit of the TAC and
// serial number: 1 WHITELISTED, 2 BLACKLISTED, 3 GREYLISTED, 4 an HTTP 500
// ProblemDetails, 5 an unknown status. It records the queries.
type fakeEIR struct {
	mu      sync.Mutex
	queries []url.Values
}

func (f *fakeEIR) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/n5g-eir-eic/v1/equipment-status" {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	f.mu.Lock()
	f.queries = append(f.queries, q)
	f.mu.Unlock()
	pei := q.Get("pei")
	w.Header().Set("Content-Type", "application/json")
	switch pei[len(pei)-3] {
	case '1':
		_, _ = w.Write([]byte(`{"status":"WHITELISTED"}`))
	case '2':
		_, _ = w.Write([]byte(`{"status":"BLACKLISTED"}`))
	case '3':
		_, _ = w.Write([]byte(`{"status":"GREYLISTED"}`))
	case '4':
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(`{"status":500,"cause":"SYSTEM_FAILURE","title":"store down"}`))
	default:
		_, _ = w.Write([]byte(`{"status":"PURPLE"}`))
	}
}

func (f *fakeEIR) last() url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries[len(f.queries)-1]
}

func TestEIROnAttach(t *testing.T) {
	eir := &fakeEIR{}
	eirSrv := httptest.NewServer(eir)
	t.Cleanup(eirSrv.Close)
	opts := Options{EIR: NewEIRClient(eirSrv.URL, eirSrv.Client())}
	// dev returns an IMEI whose 14th digit selects the fake's answer.
	dev := func(d byte) string { return "35693803564" + "00" + string(d) + "9" }

	tests := []struct {
		name       string
		imei       string
		wantResult string
		wantStatus string
	}{
		{"whitelisted", dev('1'), ResultRegistered, EquipmentWhitelisted},
		{"greylisted is let in", dev('3'), ResultRegistered, EquipmentGreylisted},
		{"blacklisted is refused", dev('2'), ResultDenied, EquipmentBlacklisted},
		{"EIR failure fails open", dev('4'), ResultRegistered, ""},
		{"unknown status fails open", dev('5'), ResultRegistered, ""},
	}
	for name, n := range backends(t, opts) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			for i, tt := range tests {
				id := iccid(100 + i)
				if _, _, err := n.Register(ctx, CardSpec{ICCID: id, IMSI: imsi(100 + i), MSISDN: "+8613800000100"}); err != nil {
					t.Fatal(err)
				}
				res, err := n.Attach(ctx, AttachRequest{ICCID: id, IMSI: imsi(100 + i), IMEI: tt.imei})
				if err != nil {
					t.Fatalf("%s: %v", tt.name, err)
				}
				if res.Result != tt.wantResult || res.EquipmentStatus != tt.wantStatus {
					t.Errorf("%s: result %s (%s), EIR %q; want %s, EIR %q", tt.name, res.Result, res.Cause,
						res.EquipmentStatus, tt.wantResult, tt.wantStatus)
				}
				if res.Card.Attached != (tt.wantResult == ResultRegistered) || res.Card.IMEI != tt.imei {
					t.Errorf("%s: card %+v", tt.name, res.Card)
				}
				q := eir.last()
				if q.Get("pei") != "imeisv-"+tt.imei[:14]+"01" || q.Get("supi") != "imsi-"+imsi(100+i) || q.Get("gpsi") != "msisdn-8613800000100" {
					t.Errorf("%s: EIR asked %v", tt.name, q)
				}
			}
		})
	}
}

// A card attached in its device and then refused in a blacklisted one is
// no longer attached anywhere, and its session ends.
func TestEIRRefusalEndsSession(t *testing.T) {
	eirSrv := httptest.NewServer(&fakeEIR{})
	t.Cleanup(eirSrv.Close)
	rec := &sessionRecorder{}
	n := New(Options{EIR: NewEIRClient(eirSrv.URL, nil), Sessions: rec})
	ctx := t.Context()
	good, bad := "356938035640019", "356938035640029"
	if res, err := n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: good}); err != nil || res.Result != ResultRegistered {
		t.Fatalf("attach in a whitelisted device: %+v %v", res, err)
	}
	res, err := n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: bad})
	if err != nil || res.Result != ResultDenied || !strings.Contains(res.Cause, "blacklisted") {
		t.Fatalf("attach in a blacklisted device: %+v %v", res, err)
	}
	if res.Card.Attached || res.Card.IMEI != bad {
		t.Errorf("card after refusal: %+v", res.Card)
	}
	if got := rec.events(); strings.Join(got, ",") != "start "+good+",stop "+good+" moved" {
		t.Errorf("sessions: %v", got)
	}
}

func TestAttachCard(t *testing.T) {
	for name, n := range backends(t, Options{}) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			var attach func(iccid string, d DeviceAttach) (AttachResult, error)
			switch b := n.(type) {
			case *Network:
				attach = func(id string, d DeviceAttach) (AttachResult, error) { return b.AttachCard(ctx, id, d) }
			case *Client:
				attach = func(id string, d DeviceAttach) (AttachResult, error) { return b.AttachCard(ctx, id, d) }
			}
			if _, err := attach(iccid(1), DeviceAttach{IMEI: imei(1)}); !errors.Is(err, ErrNotFound) {
				t.Errorf("unknown card: %v, want ErrNotFound", err)
			}
			if _, _, err := n.Register(ctx, CardSpec{ICCID: iccid(1), IMSI: imsi(1), MSISDN: "8613800000001"}); err != nil {
				t.Fatal(err)
			}
			res, err := attach(iccid(1), DeviceAttach{IMEI: imei(7), Cell: &Cell{MCC: "460", MNC: "03", TAC: 1, ECI: 2}})
			if err != nil || res.Result != ResultRegistered || res.Card.IMEI != imei(7) || !res.Card.Attached {
				t.Errorf("attach: %+v %v", res, err)
			}
			if _, err := attach(iccid(1), DeviceAttach{IMEI: imei(7), Cell: &Cell{MCC: "46", MNC: "03"}}); !errors.Is(err, ErrInvalid) {
				t.Errorf("bad cell: %v, want ErrInvalid", err)
			}
			if _, err := attach(iccid(1), DeviceAttach{IMEI: "12"}); !errors.Is(err, ErrInvalid) {
				t.Errorf("bad IMEI: %v, want ErrInvalid", err)
			}
		})
	}
}

// sessionRecorder records session events as "start IMEI" and
// "stop IMEI cause".
type sessionRecorder struct {
	mu  sync.Mutex
	log []string
}

func (r *sessionRecorder) SessionStarted(s Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, "start "+s.IMEI)
}

func (r *sessionRecorder) SessionStopped(s Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, "stop "+s.IMEI+" "+string(s.EndCause))
}

func (r *sessionRecorder) events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...)
}

// Sessions start and stop with attachments, in order.
func TestSessionEvents(t *testing.T) {
	rec := &sessionRecorder{}
	n := New(Options{Sessions: rec})
	ctx := t.Context()
	a, b := imei(1), imei(2)
	steps := []struct {
		name string
		do   func() error
		want []string // events this step adds
	}{
		{"attach in A", func() error { return attachErr(n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: a})) },
			[]string{"start " + a}},
		{"attach in A again", func() error { return attachErr(n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: a})) },
			nil},
		{"moved to B", func() error { return attachErr(n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: b})) },
			[]string{"stop " + a + " moved", "start " + b}},
		{"late detach from A", func() error { _, err := n.Detach(ctx, iccid(1), a); return err }, nil},
		{"blocked", func() error { _, err := n.Block(ctx, iccid(1), "x"); return err }, []string{"stop " + b + " blocked"}},
		{"attach while blocked", func() error { return attachErr(n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: b})) },
			nil},
		{"resumed", func() error { _, err := n.Resume(ctx, iccid(1)); return err }, nil},
		{"attach after resume", func() error { return attachErr(n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: b})) },
			[]string{"start " + b}},
		{"detach", func() error { _, err := n.Detach(ctx, iccid(1), ""); return err }, []string{"stop " + b + " detach"}},
	}
	var want []string
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		want = append(want, st.want...)
		if got := rec.events(); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("after %s: events %q, want %q", st.name, got, want)
		}
	}
}

func attachErr(_ AttachResult, err error) error { return err }

// A device the EIR turns away while the card is attached in it (the card
// was blocked meanwhile) loses its session as refused.
func TestEIRRefusesAttachedDevice(t *testing.T) {
	var black atomic.Bool
	eirSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if black.Load() {
			_, _ = w.Write([]byte(`{"status":"BLACKLISTED"}`))
			return
		}
		_, _ = w.Write([]byte(`{"status":"WHITELISTED"}`))
	}))
	t.Cleanup(eirSrv.Close)
	rec := &sessionRecorder{}
	n := New(Options{EIR: NewEIRClient(eirSrv.URL, nil), Sessions: rec})
	ctx := t.Context()
	for _, b := range []bool{false, true} {
		black.Store(b)
		if _, err := n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: imei(1)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(rec.events(), ","); got != "start "+imei(1)+",stop "+imei(1)+" refused" {
		t.Errorf("sessions: %s", got)
	}
}

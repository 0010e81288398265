package modem

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cardbind/cardbind/firmware-sim/network"
)

func TestSIMHotSwapURCs(t *testing.T) {
	other := SIM{ICCID: "8910042348144559361", IMSI: "001010123456789"}
	tests := []struct {
		personality string
		setup       []string
		remove      string
		insert      string
	}{
		{"generic", nil, info("+CPIN: NOT READY"), info("+CPIN: READY")},
		{"quectel", nil, info("+CPIN: NOT READY"),
			info("+CPIN: READY") + info("+QUSIM: 1") + info("+QIND: SMS DONE") + info("+QIND: PB DONE")},
		{"quectel", []string{"AT+QSIMSTAT=1\r"}, info("+QSIMSTAT: 1,0") + info("+CPIN: NOT READY"),
			info("+QSIMSTAT: 1,1") + info("+CPIN: READY") + info("+QUSIM: 1") + info("+QIND: SMS DONE") + info("+QIND: PB DONE")},
		{"simcom", nil, info("+SIMCARD: NOT AVAILABLE"), info("+CPIN: READY") + info("SMS DONE") + info("PB DONE")},
		{"ublox", nil, "", ""},
		{"ublox", []string{"AT+USIMSTAT=1\r"}, info("+UUSIMSTAT: 0"), info("+UUSIMSTAT: 6")},
		{"generic", []string{"AT+CREG=1\r"}, info("+CPIN: NOT READY") + info("+CREG: 0"), info("+CPIN: READY") + info("+CREG: 1")},
	}
	for _, tc := range tests {
		t.Run(tc.personality+strings.Join(tc.setup, ""), func(t *testing.T) {
			h := newHarness(t, Config{Personality: tc.personality, SIM: testSIM()})
			h.settle()
			h.send("ATE0\r")
			for _, s := range tc.setup {
				h.send(s)
			}
			if err := h.m.RemoveSIM(); err != nil {
				t.Fatal(err)
			}
			if got := h.settle(); got != tc.remove {
				t.Errorf("remove: got %q, want %q", got, tc.remove)
			}
			if err := h.m.RemoveSIM(); !errors.Is(err, ErrNoSIM) {
				t.Errorf("second remove: %v, want ErrNoSIM", err)
			}
			if err := h.m.InsertSIM(other); err != nil {
				t.Fatal(err)
			}
			if got := h.settle(); got != tc.insert {
				t.Errorf("insert: got %q, want %q", got, tc.insert)
			}
			if err := h.m.InsertSIM(other); !errors.Is(err, ErrSIMPresent) {
				t.Errorf("second insert: %v, want ErrSIMPresent", err)
			}
			if got, want := h.send("AT+CRSM=176,12258,0,0,10\r"), info(`+CRSM: 144,0,"980140328441549563F1"`)+ok; got != want {
				t.Errorf("CRSM after swap: got %q, want %q", got, want)
			}
		})
	}
}

func TestSetIMEI(t *testing.T) {
	h := newHarness(t, Config{SIM: testSIM()})
	h.settle()
	if err := h.m.SetIMEI("490154203237518"); err != nil {
		t.Fatal(err)
	}
	if err := h.m.SetIMEI("12"); err == nil {
		t.Error("SetIMEI accepted a short IMEI")
	}
	if got, want := h.send("AT+CGSN\r"), "AT+CGSN\r"+info("490154203237518")+ok; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestFaults(t *testing.T) {
	h := newHarness(t, Config{Personality: "quectel", SIM: testSIM()})
	h.settle()
	h.send("ATE0\r")

	h.m.SetFaults(Faults{Errors: 2, ErrorCode: 14})
	for range 2 {
		if got, want := h.send("AT+CIMI\r"), info("+CME ERROR: 14"); got != want {
			t.Errorf("error fault: got %q, want %q", got, want)
		}
	}
	if got, want := h.send("AT+CIMI\r"), info(testIMSI)+ok; got != want {
		t.Errorf("after error fault: got %q, want %q", got, want)
	}

	h.m.SetFaults(Faults{NoResponse: 1})
	if got := h.send("AT+CIMI\r"); got != "" {
		t.Errorf("no-response fault: got %q", got)
	}
	if got, want := h.send("AT\r"), ok; got != want {
		t.Errorf("after no-response: got %q, want %q", got, want)
	}

	h.m.SetFaults(Faults{SpuriousURCs: 1, SpuriousURC: "+QIND: \"csq\",20,99"})
	if got, want := h.send("AT+CIMI\r"), info(`+QIND: "csq",20,99`)+info(testIMSI)+ok; got != want {
		t.Errorf("spurious URC: got %q, want %q", got, want)
	}

	h.m.SetFaults(Faults{Garble: 1})
	if got, clean := h.send("AT+CGSN\r"), info(testIMEI)+ok; len(got) != len(clean) || got == clean {
		t.Errorf("garble: got %q from %q", got, clean)
	}

	h.m.SetFaults(Faults{Delay: 150 * time.Millisecond})
	start := time.Now()
	h.conn.Write([]byte("AT\r"))
	h.waitFor(ok, 2*time.Second)
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("delay fault: answered after %s", d)
	}
	h.m.SetFaults(Faults{})
	if f := h.m.Faults(); f != (Faults{}) {
		t.Errorf("faults not cleared: %+v", f)
	}
}

// TestSwapMidCommand swaps the SIM while a delayed command is pending: the
// client sees the URCs between the echo and the answer, which reflects the
// new card.
func TestSwapMidCommand(t *testing.T) {
	h := newHarness(t, Config{Personality: "quectel", SIM: testSIM()})
	h.settle()
	h.m.SetFaults(Faults{Delay: 300 * time.Millisecond})
	other := SIM{ICCID: "8910042348144559361", IMSI: "001010123456789"}
	if _, err := h.conn.Write([]byte("AT+QCCID\r")); err != nil {
		t.Fatal(err)
	}
	h.waitFor("AT+QCCID\r", time.Second)
	if err := h.m.SwapSIM(t.Context(), other, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	got := h.waitFor(ok, 2*time.Second)
	want := info("+CPIN: NOT READY") + info("+CPIN: READY") + info("+QUSIM: 1") + info("+QIND: SMS DONE") +
		info("+QIND: PB DONE") + info("+QCCID: 8910042348144559361F") + ok
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestRebootCommand(t *testing.T) {
	h := newHarness(t, Config{Personality: "quectel", SIM: testSIM(), RebootDownFor: 10 * time.Millisecond})
	h.settle()
	h.send("ATE0\r")
	if got, want := h.send("AT+CFUN=1,1\r"), ok; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	select {
	case err := <-h.done:
		var rb *RebootError
		if !errors.As(err, &rb) || rb.DownFor != 10*time.Millisecond {
			t.Fatalf("Serve returned %v, want a RebootError", err)
		}
		h.done <- nil // for the cleanup
	case <-time.After(2 * time.Second):
		t.Fatal("Serve did not return after AT+CFUN=1,1")
	}
	// Booting again on a fresh stream resets the settings.
	h2 := startHarness(t, h.m)
	if got := h2.settle(); !strings.HasPrefix(got, info("RDY")) {
		t.Errorf("second boot: %q", got)
	}
	if got, want := h2.send("AT\r"), "AT\r"+ok; got != want {
		t.Errorf("echo after reboot: got %q, want %q", got, want)
	}
	if st := h.m.State(); st.Boots != 2 {
		t.Errorf("boots = %d, want 2", st.Boots)
	}
}

// TestBlockResume runs a modem against the simulated network over HTTP:
// a block shows as registration denied, a resume as registered again.
func TestBlockResume(t *testing.T) {
	n := network.New(network.Options{})
	srv := httptest.NewServer(network.NewHandler(n, nil))
	defer srv.Close()
	client := network.NewClient(srv.URL, srv.Client())
	client.WatchWait = time.Second

	h := newHarness(t, Config{Personality: "quectel", SIM: testSIM(), Network: client})
	h.settle()
	h.send("ATE0\r")
	h.send("AT+CEREG=1\r")
	waitStat(t, h.m, 1)
	if got, want := h.send("AT+CEREG?;+CGPADDR=1\r"), info("+CEREG: 1,1")+info(`+CGPADDR: 1,"10.64.0.1"`)+ok; got != want {
		t.Errorf("registered: got %q, want %q", got, want)
	}
	card, err := client.Card(t.Context(), testICCID)
	if err != nil || !card.Attached || card.IMEI != testIMEI {
		t.Fatalf("network card: %+v, %v", card, err)
	}

	start := time.Now()
	if _, err := client.Block(t.Context(), testICCID, "IMEI mismatch"); err != nil {
		t.Fatal(err)
	}
	h.waitFor(info("+CEREG: 3"), 2*time.Second)
	if d := time.Since(start); d > time.Second {
		t.Errorf("block took %s to reach the modem", d)
	}
	if got, want := h.send("AT+CEREG?;+CGPADDR=1;+CGATT?\r"), info("+CEREG: 1,3")+info(`+CGPADDR: 1,"0.0.0.0"`)+info("+CGATT: 0")+ok; got != want {
		t.Errorf("blocked: got %q, want %q", got, want)
	}

	if _, err := client.Resume(t.Context(), testICCID); err != nil {
		t.Fatal(err)
	}
	h.waitFor(info("+CEREG: 1"), 2*time.Second)
	if got, want := h.send("AT+CEREG?\r"), info("+CEREG: 1,1")+ok; got != want {
		t.Errorf("resumed: got %q, want %q", got, want)
	}

	// A swap to a blocked card is denied at once.
	other := SIM{ICCID: "8910042348144559361", IMSI: "001010123456789"}
	if _, _, err := n.Register(t.Context(), network.CardSpec{ICCID: other.ICCID, IMSI: other.IMSI}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Block(t.Context(), other.ICCID, "stolen"); err != nil {
		t.Fatal(err)
	}
	if err := h.m.SwapSIM(t.Context(), other, 0); err != nil {
		t.Fatal(err)
	}
	waitStat(t, h.m, 3)
	if c, _ := n.Card(t.Context(), testICCID); c.Attached {
		t.Error("old card still attached after the swap")
	}
}

func TestForceRegistration(t *testing.T) {
	h := newHarness(t, Config{SIM: testSIM()})
	h.settle()
	h.send("ATE0\r")
	h.send("AT+CREG=1\r")
	if err := h.m.ForceRegistration(3); err != nil {
		t.Fatal(err)
	}
	h.waitFor(info("+CREG: 3"), time.Second)
	if err := h.m.ForceRegistration(-1); err != nil {
		t.Fatal(err)
	}
	h.waitFor(info("+CREG: 1"), time.Second)
}

func waitStat(t *testing.T, m *Modem, want int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if m.State().Registration.Stat == want {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("registration stat = %d, want %d", m.State().Registration.Stat, want)
}

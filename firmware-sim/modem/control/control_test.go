package control

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/firmware-sim/modem"
)

// served starts m on an in-memory stream and returns a function that
// reports what the modem has sent so far.
func served(t *testing.T, m *modem.Modem) func() string {
	t.Helper()
	client, dev := net.Pipe()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.Serve(ctx, dev)
	}()
	var mu sync.Mutex
	var out strings.Builder
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		b := make([]byte, 256)
		for {
			n, err := client.Read(b)
			mu.Lock()
			out.Write(b[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		client.Close()
		dev.Close()
		<-readDone
	})
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		return out.String()
	}
}

func TestControlAPI(t *testing.T) {
	m, err := modem.New(modem.Config{
		Personality:   "quectel",
		IMEI:          "356938035643809",
		SIM:           &modem.SIM{ICCID: "89860318640220133897", IMSI: "460031234567890"},
		RebootDownFor: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	output := served(t, m)
	srv := httptest.NewServer(NewHandler(m, nil))
	defer srv.Close()

	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}

	steps := []struct {
		method, path, body string
		status             int
		contains           string
	}{
		{"GET", "/state", "", 200, `"simStatus": "ready"`},
		{"POST", "/sim/insert", `{"iccid":"8910042348144559361","imsi":"001010123456789"}`, 409, "already inserted"},
		{"POST", "/sim/swap", `{"iccid":"8910042348144559361","imsi":"001010123456789","gap":"10ms"}`, 200, `"iccid": "8910042348144559361"`},
		{"POST", "/sim/remove", "", 200, `"simStatus": "absent"`},
		{"POST", "/sim/remove", "", 409, "no SIM"},
		{"POST", "/sim/insert", `{"iccid":"12","imsi":"001010123456789"}`, 400, "ICCID"},
		{"POST", "/sim/insert", `{"iccid":"89860318640220133897","imsi":"460031234567890","msisdn":"8613800000000"}`, 200, `"msisdn": "8613800000000"`},
		{"POST", "/imei", `{"imei":"490154203237518"}`, 200, `"imei": "490154203237518"`},
		{"POST", "/imei", `{"imei":"4901"}`, 400, "IMEI"},
		{"GET", "/cell", "", 200, `"tac": 6699`},
		{"GET", "/state", "", 200, `"mcc": "460"`},
		{"POST", "/cell", `{"mcc":"460","mnc":"11","tac":6700,"eci":27446213}`, 200, `"eci": 27446213`},
		{"GET", "/cell", "", 200, `"mnc": "11"`},
		{"POST", "/cell", `{"mcc":"46","mnc":"11","tac":6700,"eci":1}`, 400, "PLMN"},
		{"POST", "/cell", `{"mcc":"460","mnc":"11","tac":70000,"eci":1}`, 400, "body"},
		{"POST", "/cell", `{"mcc":"460","mnc":"11","tac":1,"eci":268435456}`, 400, "ECI"},
		{"PUT", "/faults", `{"delay":"250ms","errors":2,"errorCode":14}`, 200, `"delay": "250ms"`},
		{"GET", "/faults", "", 200, `"errorCode": 14`},
		{"DELETE", "/faults", "", 200, "{}"},
		{"PUT", "/faults", `{"bogus":1}`, 400, "unknown field"},
		{"PUT", "/registration", `{"stat":3}`, 200, `"forced": true`},
		{"DELETE", "/registration", "", 200, `"forced": false`},
		{"POST", "/reboot", `{"downFor":"1h"}`, 202, "rebooting"},
	}
	for _, s := range steps {
		status, body := do(s.method, s.path, s.body)
		if status != s.status || !strings.Contains(body, s.contains) {
			t.Errorf("%s %s %s: %d %s; want %d containing %q", s.method, s.path, s.body, status, body, s.status, s.contains)
		}
	}
	out := output()
	for _, urc := range []string{"+CPIN: NOT READY", "+QUSIM: 1"} {
		if !strings.Contains(out, urc) {
			t.Errorf("modem output lacks %q: %q", urc, out)
		}
	}
	// After the reboot the modem is away.
	deadline := time.Now().Add(2 * time.Second)
	for m.State().Online && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if status, _ := do("POST", "/reboot", ""); status != http.StatusConflict {
		t.Errorf("reboot while down: %d, want 409", status)
	}
	var st StateResponse
	_, body := do("GET", "/state", "")
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Online {
		t.Errorf("state after reboot: %+v, %v", st, err)
	}
}

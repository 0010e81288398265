package control

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cardbind/cardbind/firmware-sim/modem"
)

func TestControlGNSS(t *testing.T) {
	newServer := func(personality string) *httptest.Server {
		m, err := modem.New(modem.Config{Personality: personality, IMEI: "356938035643809"})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(NewHandler(m, nil))
		t.Cleanup(srv.Close)
		return srv
	}
	do := func(srv *httptest.Server, method, path, body string) (int, string) {
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
	quectel, ublox := newServer("quectel"), newServer("ublox")
	steps := []struct {
		srv                *httptest.Server
		method, path, body string
		status             int
		contains           string
	}{
		{quectel, "GET", "/gnss", "", 200, `"on": false`},
		{quectel, "POST", "/gnss", `{"lat":31.231,"lon":121.474}`, 200, `"hdop": 1.1`},
		{quectel, "GET", "/gnss", "", 200, `"lat": 31.231`},
		{quectel, "GET", "/state", "", 200, `"lon": 121.474`},
		{quectel, "POST", "/gnss", `{"lat":-33.5,"lon":-70.25,"hdop":2.5}`, 200, `"hdop": 2.5`},
		{quectel, "POST", "/gnss", `{"fix":true,"lat":1,"lon":2}`, 200, `"lon": 2`},
		{quectel, "POST", "/gnss", `{"fix":false}`, 200, `"gnss": {`},
		{quectel, "GET", "/gnss", "", 200, "{\n  \"on\": false\n}"},
		{quectel, "POST", "/gnss", `{"lat":91,"lon":0}`, 400, "lat"},
		{quectel, "POST", "/gnss", `{"lat":10}`, 400, "want"},
		{quectel, "POST", "/gnss", `{"fix":false,"lat":10}`, 400, "takes no lat"},
		{quectel, "POST", "/gnss", `{"alt":10}`, 400, "unknown field"},
		{ublox, "GET", "/gnss", "", 404, "no GNSS"},
		{ublox, "POST", "/gnss", `{"lat":1,"lon":2}`, 404, "no GNSS"},
	}
	for _, s := range steps {
		status, body := do(s.srv, s.method, s.path, s.body)
		if status != s.status || !strings.Contains(body, s.contains) {
			t.Errorf("%s %s %s: %d %s; want %d containing %q", s.method, s.path, s.body, status, body, s.status, s.contains)
		}
	}
}

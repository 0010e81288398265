package sink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
)

func TestSinkChecksAndKeepsEvents(t *testing.T) {
	var got []string
	s, err := Start("127.0.0.1:0", Config{Token: "tok", OnEvent: func(e Event) { got = append(got, e.ID) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.CertPEM()) {
		t.Fatal("certificate PEM does not parse")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	const ev = `{"id":"e1","source":"https://cardbind","type":"org.camaraproject.iot-sim-fraud-prevention.v0.imei-change","specversion":"1.0","time":"2026-11-26T00:00:00Z","data":{}}`
	post := func(token, ctype, body string) int {
		req, _ := http.NewRequest("POST", s.URL(), strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		req.Header.Set("Content-Type", ctype)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	const ce = "application/cloudevents+json"
	tests := []struct {
		name, token, ctype, body string
		want                     int
	}{
		{"no token", "", ce, ev, 401},
		{"wrong token", "nope", ce, ev, 401},
		{"plain json", "tok", "application/json", ev, 415},
		{"not json", "tok", ce, "{", 400},
		{"old specversion", "tok", ce, strings.Replace(ev, `"1.0"`, `"0.3"`, 1), 400},
		{"no id", "tok", ce, strings.Replace(ev, `"id":"e1",`, "", 1), 400},
		{"accepted", "tok", ce, ev, 204},
	}
	for _, tt := range tests {
		if code := post(tt.token, tt.ctype, tt.body); code != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, code, tt.want)
		}
	}
	s.SetStatus(http.StatusServiceUnavailable)
	if code := post("tok", ce, ev); code != 503 {
		t.Errorf("down sink answered %d", code)
	}
	if evs := s.Events(); len(evs) != 1 || evs[0].ID != "e1" || len(got) != 1 || len(evs[0].Raw) == 0 {
		t.Errorf("kept %+v, callback saw %v", evs, got)
	}
}

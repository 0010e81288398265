package e2e

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// cloudSink is the customer's HTTPS endpoint: a TLS server in the test
// process that keeps every CloudEvent it is sent, with its headers.
type cloudSink struct {
	srv    *httptest.Server
	caFile string

	mu     sync.Mutex
	down   bool // answer 503 and keep nothing
	events []sinkEvent
}

type sinkEvent struct {
	Path, Auth, ContentType string
	ID                      string         `json:"id"`
	Type                    string         `json:"type"`
	Source                  string         `json:"source"`
	SpecVersion             string         `json:"specversion"`
	Time                    string         `json:"time"`
	Data                    map[string]any `json:"data"`
}

func newCloudSink(t *testing.T) *cloudSink {
	s := &cloudSink{}
	s.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		down := s.down
		s.mu.Unlock()
		if down {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var ev sinkEvent
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("sink: %v: %s", err, body)
		}
		ev.Path, ev.Auth, ev.ContentType = r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		s.mu.Lock()
		s.events = append(s.events, ev)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.srv.Close)
	s.caFile = filepath.Join(t.TempDir(), "sink-ca.pem")
	if err := os.WriteFile(s.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *cloudSink) received() []sinkEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinkEvent(nil), s.events...)
}

func (s *cloudSink) setDown(down bool) { s.mu.Lock(); s.down = down; s.mu.Unlock() }

// ofType returns the events of a type (by suffix) sent to path.
func (s *cloudSink) ofType(path, suffix string) []sinkEvent {
	var out []sinkEvent
	for _, e := range s.received() {
		if e.Path == path && strings.HasSuffix(e.Type, suffix) {
			out = append(out, e)
		}
	}
	return out
}

// startCAMARAVerifier starts the verifier with a config file that lets
// subscription sinks be on loopback and trusts the sink's CA.
func startCAMARAVerifier(t *testing.T, netURL, caFile string) *verifier {
	v := &verifier{dataDir: t.TempDir(), netURL: netURL, httpAddr: freeAddr(t), mqttAddr: freeAddr(t)}
	cfg := filepath.Join(t.TempDir(), "verifier.toml")
	conf := "[camara.webhook]\nallow_private_sinks = true\nca_file = \"" + caFile + "\"\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	v.proc = start(t, "cardbind-verifier", "serve", "--config", cfg, "--data-dir", v.dataDir, "--http", v.httpAddr,
		"--mqtt", v.mqttAddr, "--enforce", "simnet", "--simnet-url", v.netURL)
	waitHTTP(t, "http://"+v.httpAddr+"/readyz", v.proc)
	v.admin = api{t: t, base: "http://" + v.httpAddr, token: strings.TrimSpace(readFile(t, v.dataDir+"/operator-token"))}
	return v
}

// clientToken gets an access token with the client credentials grant.
func clientToken(t *testing.T, v *verifier, id, secret string) string {
	form := url.Values{"grant_type": {"client_credentials"}}
	req, err := http.NewRequest("POST", "http://"+v.httpAddr+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || resp.StatusCode != 200 || tr.AccessToken == "" {
		t.Fatalf("token: %d %v", resp.StatusCode, err)
	}
	return tr.AccessToken
}

// The story of issue 6's notifications: a customer gets a token, binds a
// card and subscribes to imei-change with an HTTPS sink, twice (the second
// time with subscriptionMaxEvents 1). The sink is down when a signed
// report from a foreign IMEI arrives; once it is back it receives, for each
// subscription, exactly one imei-change CloudEvent carrying the sink's
// bearer token; the second subscription then ends with MAX_EVENTS_REACHED,
// and deleting the first ends it with SUBSCRIPTION_DELETED.
func TestCAMARASubscriptionDeliversIMEIChange(t *testing.T) {
	sink := newCloudSink(t)
	network, netURL := startNetwork(t)
	const msisdn = "+8613912345678"
	network.must("POST", "/v1/cards", map[string]string{"iccid": cardA, "imsi": cardAIMS, "msisdn": msisdn}, nil)
	v := startCAMARAVerifier(t, netURL, sink.caFile)
	v.admin.must("POST", "/admin/v1/tenants", map[string]string{"id": "acme"}, nil)
	v.admin.do("POST", "/admin/v1/cards/import?format=csv", "iccid,tenant,imsi,msisdn\n"+cardA+",acme,"+cardAIMS+","+msisdn+"\n", nil)

	var client struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	v.admin.must("POST", "/admin/v1/clients", map[string]any{"tenant": "acme", "scopes": []string{
		"iot-sim-fraud-prevention:bind", "iot-sim-fraud-prevention-subscriptions:subscribe",
		"iot-sim-fraud-prevention-subscriptions:read", "iot-sim-fraud-prevention-subscriptions:delete"}}, &client)
	customer := api{t: t, base: "http://" + v.httpAddr, token: clientToken(t, v, client.ID, client.Secret)}

	device := map[string]string{"phoneNumber": msisdn}
	var bound map[string]any
	if code := customer.do("POST", "/iot-sim-fraud-prevention/v0.1/bind",
		map[string]any{"device": device, "bindType": "IMEIBIND", "bindImei": gw1IMEI}, &bound); code != 200 || bound["bound"] != true {
		t.Fatalf("bind: %d %v", code, bound)
	}
	const sinkToken = "customer-sink-token"
	subscribe := func(path string, config map[string]any) string {
		config["subscriptionDetail"] = map[string]any{"device": device}
		var sub map[string]any
		code := customer.do("POST", "/iot-sim-fraud-prevention-subscriptions/v0.1/subscriptions", map[string]any{
			"protocol": "HTTP", "sink": sink.srv.URL + path,
			"sinkCredential": map[string]any{"credentialType": "ACCESSTOKEN", "accessToken": sinkToken,
				"accessTokenExpiresUtc": time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339), "accessTokenType": "bearer"},
			"types":  []string{"org.camaraproject.iot-sim-fraud-prevention.v0.imei-change"},
			"config": config,
		}, &sub)
		if code != 201 || sub["status"] != "ACTIVE" {
			t.Fatalf("subscribe: %d %v", code, sub)
		}
		return sub["id"].(string)
	}
	id := subscribe("/all", map[string]any{"initialEvent": true})
	maxID := subscribe("/max", map[string]any{"subscriptionMaxEvents": 1})
	eventually(t, 10*time.Second, "subscription-started at the sink", func() bool {
		return len(sink.ofType("/all", ".subscription-started")) == 1 && len(sink.ofType("/max", ".subscription-started")) == 1
	})

	gw := enroll(t, v, "acme", gw1IMEI)
	gw.publish(gw.report(gw1IMEI, cardA))
	sink.setDown(true)
	gw.publish(gw.report(phone, cardA)) // the card in a foreign device
	eventually(t, 5*time.Second, "card blocked at the network", func() bool { return blockedAtNetwork(t, network, cardA) })
	time.Sleep(1500 * time.Millisecond) // the sink is down: delivery fails and backs off
	if n := len(sink.ofType("/all", ".imei-change")); n != 0 {
		t.Fatalf("%d events delivered while the sink was down", n)
	}
	sink.setDown(false)
	back := time.Now()
	eventually(t, 15*time.Second, "imei-change and subscription-ended after the sink is back", func() bool {
		return len(sink.ofType("/all", ".imei-change")) > 0 && len(sink.ofType("/max", ".subscription-ended")) > 0
	})
	t.Logf("sink back → events delivered in %v", time.Since(back).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond) // anything else would have arrived by now
	for _, path := range []string{"/all", "/max"} {
		changes := sink.ofType(path, ".imei-change")
		if len(changes) != 1 {
			t.Fatalf("%s: %d imei-change events, want exactly 1: %+v", path, len(changes), changes)
		}
		ev := changes[0]
		if ev.Auth != "Bearer "+sinkToken || ev.ContentType != "application/cloudevents+json" || ev.SpecVersion != "1.0" {
			t.Errorf("%s: Authorization %q, Content-Type %q, specversion %q", path, ev.Auth, ev.ContentType, ev.SpecVersion)
		}
		wantID := map[string]string{"/all": id, "/max": maxID}[path]
		dev, _ := ev.Data["device"].(map[string]any)
		if ev.Data["imei"] != phone || ev.Data["subscriptionId"] != wantID || dev["phoneNumber"] != msisdn || ev.ID == "" || ev.Time == "" {
			t.Errorf("%s: imei-change event = %+v", path, ev)
		}
	}
	var order []string
	for _, e := range sink.received() {
		if e.Path == "/max" {
			order = append(order, e.Type[strings.LastIndex(e.Type, ".")+1:]+":"+fmt.Sprint(e.Data["terminationReason"]))
		}
	}
	if want := "[subscription-started:<nil> imei-change:<nil> subscription-ended:MAX_EVENTS_REACHED]"; fmt.Sprint(order) != want {
		t.Errorf("max-events subscription got %v, want %s", order, want)
	}
	if code := customer.do("GET", "/iot-sim-fraud-prevention-subscriptions/v0.1/subscriptions/"+maxID, nil, nil); code != 404 {
		t.Errorf("GET after max events: %d, want 404", code)
	}

	if code := customer.do("DELETE", "/iot-sim-fraud-prevention-subscriptions/v0.1/subscriptions/"+id, nil, nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	eventually(t, 10*time.Second, "subscription-ended at the sink", func() bool { return len(sink.ofType("/all", ".subscription-ended")) == 1 })
	if end := sink.ofType("/all", ".subscription-ended")[0]; end.Data["terminationReason"] != "SUBSCRIPTION_DELETED" || end.Data["subscriptionId"] != id {
		t.Errorf("subscription-ended = %+v", end)
	}
	if code := customer.do("GET", "/iot-sim-fraud-prevention-subscriptions/v0.1/subscriptions/"+id, nil, nil); code != 404 {
		t.Errorf("GET after delete: %d, want 404", code)
	}
	if got := len(sink.received()); got != 6 {
		t.Errorf("sink got %d events, want 6 (started, imei-change and ended, twice)", got)
	}
	m := metrics(t, v)
	for _, series := range []string{`cardbind_webhook_events_total{result="delivered"} 6`, `cardbind_webhook_events_total{result="retried"} `} {
		if !strings.Contains(m, series) {
			t.Errorf("/metrics has no %s", series)
		}
	}
}

package api_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier/api"
	"github.com/cardbind/cardbind/verifier/ingest"
	"github.com/cardbind/cardbind/verifier/service"
	"github.com/cardbind/cardbind/verifier/store/pebble"
)

const (
	operatorToken = "cbo_test-operator"
	cardA         = "89860318640220133897"
	cardB         = "89860318640220133905"
	imeiA         = "356938035643809"
)

// server runs the admin API over a real Pebble store.
type server struct {
	t      *testing.T
	url    string
	ready  error
	cmdKey ed25519.PublicKey

	mu        sync.Mutex
	published map[string][][]byte // device → command payloads
}

func newServer(t *testing.T, routes ...api.Route) *server {
	t.Helper()
	store, err := pebble.Open(t.TempDir(), pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	in := ingest.New(store, log, time.Now)
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	s := &server{t: t, cmdKey: pub, published: map[string][][]byte{}}
	publish := func(_ context.Context, device string, payload []byte) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.published[device] = append(s.published[device], payload)
		return nil
	}
	svc := service.New(store, in, service.Config{CommandKey: key, BrokerURL: func() string { return "tcp://127.0.0.1:1883" },
		PublishCommand: publish}, log, time.Now)
	h := api.Handler(svc, api.Options{OperatorTokenHash: api.HashToken(operatorToken), BrokerURL: "tcp://127.0.0.1:1883",
		Ready: func() error { return s.ready }, Routes: routes}, log)
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	s.url = hs.URL
	return s
}

// call sends body (a string as is, anything else as JSON) and decodes a
// JSON answer into out.
func (s *server) call(method, path, token string, body any, out any) int {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			s.t.Fatalf("%s %s: %d %v: %s", method, path, resp.StatusCode, err, data)
		}
	}
	return resp.StatusCode
}

func (s *server) op(method, path string, body any, out any) int {
	s.t.Helper()
	return s.call(method, path, operatorToken, body, out)
}

func TestOperatorCredentialGuardsAdminRoutes(t *testing.T) {
	extra := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	s := newServer(t, api.Route{Pattern: "/admin/v1/clients", Handler: extra, Operator: true},
		api.Route{Pattern: "/public", Handler: extra})
	routes := []struct{ method, path string }{
		{"POST", "/admin/v1/tenants"}, {"GET", "/admin/v1/tenants"},
		{"POST", "/admin/v1/tenants/acme/subscribers"}, {"POST", "/admin/v1/tenants/acme/enrollment-tokens"},
		{"POST", "/admin/v1/cards/import"}, {"GET", "/admin/v1/cards/" + cardA},
		{"PUT", "/admin/v1/cards/" + cardA + "/binding"}, {"DELETE", "/admin/v1/cards/" + cardA + "/binding"},
		{"POST", "/admin/v1/cards/" + cardA + "/block"}, {"POST", "/admin/v1/cards/" + cardA + "/resume"},
		{"GET", "/admin/v1/cards/" + cardA + "/history"}, {"GET", "/admin/v1/clients"},
	}
	for _, r := range routes {
		for _, token := range []string{"", "wrong", operatorToken + "x"} {
			var e struct{ Error string }
			if code := s.call(r.method, r.path, token, nil, &e); code != http.StatusUnauthorized || e.Error == "" {
				t.Errorf("%s %s with token %q: %d %q, want 401 with a message", r.method, r.path, token, code, e.Error)
			}
		}
	}
	if code := s.op("GET", "/admin/v1/clients", nil, nil); code != http.StatusTeapot {
		t.Errorf("operator route with the credential: %d", code)
	}
	if code := s.call("GET", "/public", "", nil, nil); code != http.StatusTeapot {
		t.Errorf("public route: %d", code)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code := s.call("GET", path, "", nil, nil); code != http.StatusOK {
			t.Errorf("GET %s: %d", path, code)
		}
	}
	s.ready = errors.New("store not open")
	var e struct{ Error string }
	if code := s.call("GET", "/readyz", "", nil, &e); code != http.StatusServiceUnavailable || e.Error != "store not open" {
		t.Errorf("readyz when not ready: %d %q", code, e.Error)
	}
}

type card struct {
	ICCID   string `json:"iccid"`
	Tenant  string `json:"tenant"`
	Binding *struct {
		IMEIs []string `json:"imeis"`
	} `json:"binding"`
	Status struct {
		State string `json:"state"`
	} `json:"status"`
}

// readImport decodes the NDJSON an import answers: line errors, then the
// summary.
func readImport(t *testing.T, s *server, query, body string) (service.ImportSummary, []service.ImportEvent) {
	t.Helper()
	req, _ := http.NewRequest("POST", s.url+"/admin/v1/cards/import"+query, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+operatorToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var events []service.ImportEvent
	var final struct {
		Summary *service.ImportSummary `json:"summary"`
		Error   string                 `json:"error"`
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.Contains(line, []byte(`"summary"`)) {
			if err := json.Unmarshal(line, &final); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var e service.ImportEvent
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("import line %q: %v", line, err)
		}
		if e.Progress == nil {
			events = append(events, e)
		}
	}
	if final.Summary == nil || final.Error != "" {
		t.Fatalf("import %s: summary %+v, error %q", query, final.Summary, final.Error)
	}
	return *final.Summary, events
}

func TestTenantsImportAndCards(t *testing.T) {
	s := newServer(t)
	tenantCases := []struct {
		body any
		want int
	}{
		{map[string]string{"id": "acme", "name": "ACME Metering"}, http.StatusCreated},
		{map[string]string{"id": "acme"}, http.StatusConflict},
		{map[string]string{"id": ""}, http.StatusBadRequest},
		{map[string]string{"id": "has space"}, http.StatusBadRequest},
		{`{"id": "x", "unknown": 1}`, http.StatusBadRequest},
		{`not json`, http.StatusBadRequest},
	}
	for _, tc := range tenantCases {
		if code := s.op("POST", "/admin/v1/tenants", tc.body, nil); code != tc.want {
			t.Errorf("create tenant %v: %d, want %d", tc.body, code, tc.want)
		}
	}
	var tenants []struct{ ID string }
	if s.op("GET", "/admin/v1/tenants", nil, &tenants); len(tenants) != 1 || tenants[0].ID != "acme" {
		t.Errorf("tenants = %+v", tenants)
	}

	file := "iccid,tenant,imsi,msisdn,imei\n" +
		cardA + ",acme,460031234567890,+8613912345678," + imeiA + "\n" +
		"8986031864022013389,acme,460031234567891,+8613912345679,\n" + // 19 digits, fine
		"12345,acme,460031234567892,,\n" + // not an ICCID
		cardB + ",nobody,460031234567893,,\n" // unknown tenant
	sum, events := readImport(t, s, "?format=csv&dry_run=true", file)
	if sum.Created != 2 || sum.Bound != 1 || sum.Errors != 2 || !sum.DryRun {
		t.Errorf("dry run summary %+v", sum)
	}
	var changes []string
	for _, e := range events {
		if e.Change != "" {
			changes = append(changes, fmt.Sprintf("%d %s %s", e.Line, e.Change, e.ICCID))
		}
	}
	if want := []string{"2 create " + cardA, "3 create 8986031864022013389", "2 bind " + cardA}; !slices.Equal(changes, want) {
		t.Errorf("dry run changes %q, want %q", changes, want)
	}
	if code := s.op("GET", "/admin/v1/cards/"+cardA, nil, nil); code != http.StatusNotFound {
		t.Errorf("dry run created a card: GET %d", code)
	}
	sum, events = readImport(t, s, "?format=csv", file)
	if sum.Created != 2 || sum.Bound != 1 || sum.Errors != 2 || sum.DryRun {
		t.Errorf("import summary %+v", sum)
	}
	if len(events) != 2 || events[0].Line != 4 || events[1].Line != 5 || events[0].Error == "" {
		t.Errorf("import line errors %+v, want lines 4 and 5", events)
	}
	if sum, _ = readImport(t, s, "?format=csv", file); sum.Created != 0 || sum.Unchanged != 2 {
		t.Errorf("second import of the same file: %+v", sum)
	}
	var c card
	if code := s.op("GET", "/admin/v1/cards/"+cardA, nil, &c); code != 200 || c.Tenant != "acme" ||
		c.Binding == nil || len(c.Binding.IMEIs) != 1 || c.Binding.IMEIs[0] != imeiA {
		t.Errorf("card after import: %d %+v", code, c)
	}

	cardCases := []struct {
		name, method, path string
		body               any
		want               int
	}{
		{"malformed iccid", "GET", "/admin/v1/cards/12345", nil, http.StatusBadRequest},
		{"unknown card", "GET", "/admin/v1/cards/" + cardB, nil, http.StatusNotFound},
		{"bind bad imei", "PUT", "/admin/v1/cards/" + cardA + "/binding", map[string]any{"imeis": []string{"356938035643808"}}, http.StatusBadRequest},
		{"bind bad mode", "PUT", "/admin/v1/cards/" + cardA + "/binding", map[string]any{"mode": "maybe"}, http.StatusBadRequest},
		{"bind bad grace", "PUT", "/admin/v1/cards/" + cardA + "/binding", map[string]any{"grace": "soon"}, http.StatusBadRequest},
		{"bind bad tac", "PUT", "/admin/v1/cards/" + cardA + "/binding", map[string]any{"tac": "35a"}, http.StatusBadRequest},
		{"bind unknown card", "PUT", "/admin/v1/cards/" + cardB + "/binding", map[string]any{}, http.StatusNotFound},
		{"bind dashed imei", "PUT", "/admin/v1/cards/" + cardA + "/binding", map[string]any{"imeis": []string{"35-693803-564380-9"}, "grace": "30s"}, http.StatusOK},
		{"unbind", "DELETE", "/admin/v1/cards/" + cardA + "/binding", nil, http.StatusOK},
		{"unbind again", "DELETE", "/admin/v1/cards/" + cardA + "/binding", nil, http.StatusConflict},
		{"block", "POST", "/admin/v1/cards/" + cardA + "/block", nil, http.StatusOK},
		{"resume", "POST", "/admin/v1/cards/" + cardA + "/resume", nil, http.StatusOK},
		{"block unknown", "POST", "/admin/v1/cards/" + cardB + "/block", nil, http.StatusNotFound},
		{"history unknown", "GET", "/admin/v1/cards/" + cardB + "/history", nil, http.StatusNotFound},
	}
	for _, tc := range cardCases {
		if code := s.op(tc.method, tc.path, tc.body, nil); code != tc.want {
			t.Errorf("%s: %s %s: %d, want %d", tc.name, tc.method, tc.path, code, tc.want)
		}
	}

	var hist []struct {
		Seq uint64 `json:"seq"`
		To  string `json:"to"`
	}
	s.op("GET", "/admin/v1/cards/"+cardA+"/history", nil, &hist)
	if len(hist) < 4 {
		t.Fatalf("history has %d entries, want at least bind, unbind, block, resume", len(hist))
	}
	if n := len(hist); hist[n-2].To != string(protocol.CardBlocked) || hist[n-1].To == string(protocol.CardBlocked) {
		t.Errorf("last history entries %+v, want the block and the resume", hist[n-2:])
	}
	var page []struct {
		Seq uint64 `json:"seq"`
	}
	s.op("GET", "/admin/v1/cards/"+cardA+"/history?after="+strconv.FormatUint(hist[1].Seq, 10)+"&limit=1", nil, &page)
	if len(page) != 1 || page[0].Seq != hist[2].Seq {
		t.Errorf("history page after %d = %+v, want entry %d", hist[1].Seq, page, hist[2].Seq)
	}
}

func TestEnrolmentAndSubscribers(t *testing.T) {
	s := newServer(t)
	s.op("POST", "/admin/v1/tenants", map[string]string{"id": "acme"}, nil)

	var sub struct {
		Username, Password string
		TopicFilter        string `json:"topic_filter"`
		BrokerURL          string `json:"broker_url"`
	}
	if code := s.op("POST", "/admin/v1/tenants/acme/subscribers", map[string]string{"name": "ops"}, &sub); code != http.StatusCreated ||
		sub.Username == "" || sub.Password == "" || sub.TopicFilter != protocol.AlertFilter("acme") || sub.BrokerURL == "" {
		t.Errorf("subscriber: %d %+v", code, sub)
	}
	if code := s.op("POST", "/admin/v1/tenants/nobody/subscribers", map[string]string{}, nil); code != http.StatusNotFound {
		t.Errorf("subscriber of an unknown tenant: %d", code)
	}
	if code := s.op("POST", "/admin/v1/tenants/acme/enrollment-tokens", map[string]string{"ttl": "a while"}, nil); code != http.StatusBadRequest {
		t.Errorf("token with a bad ttl: %d", code)
	}
	var tok struct{ Token string }
	if code := s.op("POST", "/admin/v1/tenants/acme/enrollment-tokens", map[string]string{"ttl": "1h"}, &tok); code != http.StatusCreated || tok.Token == "" {
		t.Fatalf("token: %d %+v", code, tok)
	}

	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	req := protocol.EnrollRequest{Version: 1, Token: tok.Token, PublicKey: pub, IMEI: imeiA}
	cases := []struct {
		name string
		body any
		want int
	}{
		{"malformed", `{"v":1}`, http.StatusBadRequest},
		{"unknown token", protocol.EnrollRequest{Version: 1, Token: "cbe_nope", PublicKey: pub, IMEI: imeiA}, http.StatusUnauthorized},
		{"valid", req, http.StatusCreated},
		{"token used twice", req, http.StatusUnauthorized},
	}
	for _, tc := range cases {
		var resp protocol.EnrollResponse
		code := s.call("POST", protocol.EnrollPath, "", tc.body, &resp)
		if code != tc.want {
			t.Errorf("enrol %s: %d, want %d", tc.name, code, tc.want)
		}
		if code == http.StatusCreated && (resp.DeviceID == "" || resp.Username == "" || resp.Password == "" || resp.BrokerURL == "" ||
			len(resp.CommandKey) != ed25519.PublicKeySize) {
			t.Errorf("enrol response %+v", resp)
		}
	}
}

func TestDevicesAndCommands(t *testing.T) {
	s := newServer(t)
	s.op("POST", "/admin/v1/tenants", map[string]string{"id": "acme"}, nil)
	var tok struct{ Token string }
	s.op("POST", "/admin/v1/tenants/acme/enrollment-tokens", map[string]string{}, &tok)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	var creds protocol.EnrollResponse
	if code := s.call("POST", protocol.EnrollPath, "", protocol.EnrollRequest{Version: 1, Token: tok.Token, PublicKey: pub, IMEI: imeiA}, &creds); code != http.StatusCreated {
		t.Fatalf("enrol: %d", code)
	}
	var dev service.DeviceView
	if code := s.op("GET", "/admin/v1/devices/"+creds.DeviceID, nil, &dev); code != 200 || dev.Tenant != "acme" || dev.IMEI != imeiA || dev.Flagged {
		t.Errorf("device: %d %+v", code, dev)
	}
	base := "/admin/v1/devices/" + creds.DeviceID + "/commands"
	cases := []struct {
		name, path string
		body       any
		want       int
	}{
		{"unknown device", "/admin/v1/devices/gw-0000000000000000/commands", map[string]string{"kind": "report_now"}, http.StatusNotFound},
		{"malformed device id", "/admin/v1/devices/a.b/commands", map[string]string{"kind": "report_now"}, http.StatusNotFound},
		{"unknown kind", base, map[string]string{"kind": "self_destruct"}, http.StatusBadRequest},
		{"bad ttl", base, map[string]string{"kind": "report_now", "ttl": "later"}, http.StatusBadRequest},
		{"ttl too long", base, map[string]string{"kind": "report_now", "ttl": "48h"}, http.StatusBadRequest},
		{"report now", base, map[string]string{"kind": "report_now"}, http.StatusAccepted},
		{"radio off", base, map[string]string{"kind": "radio_off", "ttl": "30s"}, http.StatusAccepted},
	}
	for _, tc := range cases {
		if code := s.op("POST", tc.path, tc.body, nil); code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.want)
		}
	}
	s.mu.Lock()
	sent := s.published[creds.DeviceID]
	s.mu.Unlock()
	if len(sent) != 2 {
		t.Fatalf("%d commands published, want 2", len(sent))
	}
	for i, kind := range []protocol.CommandKind{protocol.CommandReportNow, protocol.CommandRadioOff} {
		c, err := protocol.DecodeCommand(sent[i])
		if err != nil {
			t.Fatal(err)
		}
		if c.Kind != kind || c.DeviceID != creds.DeviceID || !c.Expires.After(c.Issued) {
			t.Errorf("command %d: %+v", i, c)
		}
		if err := protocol.VerifyCommand(creds.CommandKey, c); err != nil {
			t.Errorf("command %d does not verify with the key given at enrolment: %v", i, err)
		}
	}
}

// An upload streamed with no length (as the CLI sends a file) is read in
// full while progress lines go out: none of it is discarded when the
// first progress line is written.
func TestImportStreamedUploadIsReadWhole(t *testing.T) {
	s := newServer(t)
	if code := s.op("POST", "/admin/v1/tenants", map[string]string{"id": "acme"}, nil); code != http.StatusCreated {
		t.Fatalf("create tenant: %d", code)
	}
	const n = 6000 // about 400 KiB, over the server's 256 KiB post-handler read
	pr, pw := io.Pipe()
	go func() {
		w := bufio.NewWriter(pw)
		fmt.Fprintln(w, "iccid,tenant,imsi,imei")
		for i := range n {
			fmt.Fprintf(w, "%s,acme,46003%010d,%s\n", protocol.WithCheckDigit(fmt.Sprintf("8986031%012d", i)), i,
				protocol.WithCheckDigit(fmt.Sprintf("35693803%06d", i)))
		}
		pw.CloseWithError(w.Flush())
	}()
	req, _ := http.NewRequest("POST", s.url+"/admin/v1/cards/import?format=csv", pr)
	req.Header.Set("Authorization", "Bearer "+operatorToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var last struct {
		Summary *service.ImportSummary `json:"summary"`
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		_ = json.Unmarshal(sc.Bytes(), &last)
	}
	if last.Summary == nil || last.Summary.Lines != n || last.Summary.Created != n || last.Summary.Bound != n || last.Summary.Errors != 0 {
		t.Fatalf("import summary %+v, want %d lines created and bound", last.Summary, n)
	}
}

package protocol

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// testKey is a fixed device key, so tests are repeatable.
func testKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed([]byte("cardbind-test-device-key-seed-32"))
}

func sampleReport() *Report {
	r := &Report{
		Version:  Version,
		DeviceID: "gw-0001",
		Seq:      42,
		Time:     time.Date(2026, 11, 26, 20, 0, 0, 123456789, time.UTC),
		Reason:   ReasonChange,
		IMEI:     "356938035643809",
		IMEISV:   "3569380356438012",
		SIM:      SIMPresent,
		ICCID:    "89860318640220133897",
		IMSI:     "460031234567890",
		Registration: Registration{State: RegHome, Stat: 1, Tech: "eutran",
			Cell: &Cell{MCC: "460", MNC: "03", Area: 0x31C5, ID: 0x0083F7CD}},
		Location: &Location{Lat: 31.2304, Lon: 121.4737, AccuracyM: 15, Source: "gnss"},
		Signal:   &Signal{RSSIdBm: -79},
		Acks:     []string{"cmd-1"},
		Dropped:  3,
	}
	SignReport(testKey(), r)
	return r
}

func TestReportRoundTrip(t *testing.T) {
	r := sampleReport()
	data, err := EncodeReport(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeReport(data)
	if err != nil {
		t.Fatalf("DecodeReport: %v\n%s", err, data)
	}
	if !got.Time.Equal(r.Time) {
		t.Errorf("time %v, want %v", got.Time, r.Time)
	}
	again, _ := EncodeReport(got)
	if string(again) != string(data) {
		t.Errorf("re-encoding differs:\n%s\n%s", again, data)
	}
	if err := VerifyReport(testKey().Public().(ed25519.PublicKey), got); err != nil {
		t.Errorf("decoded report does not verify: %v", err)
	}
}

func TestReportMinimal(t *testing.T) {
	r := &Report{Version: 1, DeviceID: "d", Seq: 1, Time: time.Unix(1, 0), Reason: ReasonStart,
		IMEI: "490154203237518", SIM: SIMAbsent, Registration: Registration{State: RegSearching, Stat: 2}}
	SignReport(testKey(), r)
	data, _ := EncodeReport(r)
	if _, err := DecodeReport(data); err != nil {
		t.Fatalf("minimal report refused: %v\n%s", err, data)
	}
}

// mutate decodes the sample report into a generic map, applies f, and
// encodes it again.
func mutate(t *testing.T, f func(m map[string]any)) []byte {
	t.Helper()
	data, _ := EncodeReport(sampleReport())
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDecodeReportErrors(t *testing.T) {
	tests := []struct {
		name      string
		data      []byte
		wantField string
		wantText  string
	}{
		{"missing version", mutate(t, func(m map[string]any) { delete(m, "v") }), "v", "required"},
		{"version 2", mutate(t, func(m map[string]any) { m["v"] = 2 }), "v", "not supported"},
		{"version string", mutate(t, func(m map[string]any) { m["v"] = "1" }), "v", "integer"},
		{"missing device", mutate(t, func(m map[string]any) { delete(m, "device_id") }), "device_id", "required"},
		{"device with dot", mutate(t, func(m map[string]any) { m["device_id"] = "gw.1" }), "device_id", "characters"},
		{"seq zero", mutate(t, func(m map[string]any) { m["seq"] = 0 }), "seq", "at least 1"},
		{"seq negative", mutate(t, func(m map[string]any) { m["seq"] = -1 }), "seq", "integer"},
		{"seq string", mutate(t, func(m map[string]any) { m["seq"] = "42" }), "seq", "integer"},
		{"bad time", mutate(t, func(m map[string]any) { m["time"] = "yesterday" }), "", "time"},
		{"missing time", mutate(t, func(m map[string]any) { delete(m, "time") }), "time", "required"},
		{"bad reason", mutate(t, func(m map[string]any) { m["reason"] = "boredom" }), "reason", "not one of"},
		{"missing imei", mutate(t, func(m map[string]any) { delete(m, "imei") }), "imei", "required"},
		{"bad imei luhn", mutate(t, func(m map[string]any) { m["imei"] = "356938035643808" }), "imei", "check digit"},
		{"dashed imei", mutate(t, func(m map[string]any) { m["imei"] = "35-693803-564380-9" }), "imei", "normalised"},
		{"imei number", mutate(t, func(m map[string]any) { m["imei"] = 356938035643809 }), "imei", "string"},
		{"imeisv of other imei", mutate(t, func(m map[string]any) { m["imeisv"] = "4901542032375180" }), "imeisv", "belongs to"},
		{"bad sim state", mutate(t, func(m map[string]any) { m["sim_state"] = "gone" }), "sim_state", "not one of"},
		{"present without iccid", mutate(t, func(m map[string]any) { delete(m, "iccid") }), "iccid", "required"},
		{"absent with iccid", mutate(t, func(m map[string]any) { m["sim_state"] = "absent" }), "iccid", "must be empty"},
		{"padded iccid", mutate(t, func(m map[string]any) { m["iccid"] = "8901260886258128535F" }), "iccid", "normalised"},
		{"bad imsi", mutate(t, func(m map[string]any) { m["imsi"] = "46003" }), "imsi", "digits"},
		{"missing registration", mutate(t, func(m map[string]any) { delete(m, "registration") }), "registration.state", "required"},
		{"bad stat", mutate(t, func(m map[string]any) { m["registration"].(map[string]any)["stat"] = 12 }), "registration.stat", "outside"},
		{"bad tech", mutate(t, func(m map[string]any) { m["registration"].(map[string]any)["tech"] = "6g" }), "registration.tech", "not one of"},
		{"bad mcc", mutate(t, func(m map[string]any) {
			m["registration"].(map[string]any)["cell"].(map[string]any)["mcc"] = "46"
		}), "registration.cell.mcc", "3 digits"},
		{"cell area string", mutate(t, func(m map[string]any) {
			m["registration"].(map[string]any)["cell"].(map[string]any)["area"] = "31C5"
		}), "registration.cell.area", "integer"},
		{"lat out of range", mutate(t, func(m map[string]any) { m["location"].(map[string]any)["lat"] = 91 }), "location.lat", "-90..90"},
		{"bad location source", mutate(t, func(m map[string]any) { m["location"].(map[string]any)["source"] = "wifi" }), "location.source", "not one of"},
		{"rssi positive", mutate(t, func(m map[string]any) { m["signal"].(map[string]any)["rssi_dbm"] = 5 }), "signal.rssi_dbm", "outside"},
		{"bad ack", mutate(t, func(m map[string]any) { m["acks"] = []string{"a b"} }), "acks", "malformed"},
		{"missing sig", mutate(t, func(m map[string]any) { delete(m, "sig") }), "sig", "required"},
		{"short sig", mutate(t, func(m map[string]any) { m["sig"] = "AAAA" }), "sig", "want 64"},
		{"sig not base64", mutate(t, func(m map[string]any) { m["sig"] = "!!!" }), "", "illegal base64"},
		{"unknown field", mutate(t, func(m map[string]any) { m["extra"] = true }), "extra", "unknown field"},
		{"not an object", []byte(`[1,2,3]`), "", "array"},
		{"truncated", []byte(`{"v":1,"device_id":"gw`), "", ""},
		{"trailing data", append(mutate(t, func(map[string]any) {}), []byte(` {}`)...), "", "trailing"},
		{"oversized", []byte(`{"v":1,"detail":"` + strings.Repeat("x", MaxMessageSize) + `"}`), "", "limit"},
		{"empty", []byte{}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeReport(tt.data)
			if err == nil {
				t.Fatalf("accepted: %s", tt.data)
			}
			if !errors.Is(err, ErrInvalidMessage) {
				t.Errorf("error %v does not wrap ErrInvalidMessage", err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %T is not a *FieldError", err)
			}
			if fe.Field != tt.wantField {
				t.Errorf("field = %q, want %q (%v)", fe.Field, tt.wantField, err)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not contain %q", err, tt.wantText)
			}
		})
	}
}

func sampleCommand() *Command {
	c := &Command{Version: 1, ID: "cmd-7", DeviceID: "gw-0001", Kind: CommandRadioOff,
		Issued: time.Unix(1_800_000_000, 0).UTC(), Expires: time.Unix(1_800_000_060, 0).UTC()}
	SignCommand(testKey(), c)
	return c
}

func TestCommandRoundTrip(t *testing.T) {
	c := sampleCommand()
	data, _ := EncodeCommand(c)
	got, err := DecodeCommand(data)
	if err != nil {
		t.Fatalf("DecodeCommand: %v", err)
	}
	if err := VerifyCommand(testKey().Public().(ed25519.PublicKey), got); err != nil {
		t.Fatal(err)
	}
	got.Kind = CommandRadioOn
	if err := VerifyCommand(testKey().Public().(ed25519.PublicKey), got); !errors.Is(err, ErrBadSignature) {
		t.Errorf("changed command verified: %v", err)
	}
}

func TestDecodeCommandErrors(t *testing.T) {
	base := sampleCommand()
	tests := []struct {
		name, field string
		change      func(c *Command)
	}{
		{"no id", "id", func(c *Command) { c.ID = "" }},
		{"bad kind", "kind", func(c *Command) { c.Kind = "self_destruct" }},
		{"no device", "device_id", func(c *Command) { c.DeviceID = "" }},
		{"expired before issued", "expires", func(c *Command) { c.Expires = c.Issued }},
		{"no sig", "sig", func(c *Command) { c.Sig = nil }},
	}
	for _, tt := range tests {
		c := *base
		tt.change(&c)
		data, _ := EncodeCommand(&c)
		_, err := DecodeCommand(data)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%s: error %v, want field %q", tt.name, err, tt.field)
		}
	}
}

func sampleAlert() *Alert {
	return &Alert{Version: 1, ID: "89860318640220133897-17", Type: AlertBlocked, Tenant: "acme",
		ICCID: "89860318640220133897", BoundIMEIs: []IMEI{"356938035643809"}, ObservedIMEI: "490154203237518",
		Source: SourceAgent, Decision: DecisionMismatch, CardState: CardBlocked,
		Time: time.Date(2026, 11, 26, 20, 0, 0, 0, time.UTC), DeviceID: "gw-0002"}
}

func TestAlertRoundTrip(t *testing.T) {
	a := sampleAlert()
	data, _ := EncodeAlert(a)
	got, err := DecodeAlert(data)
	if err != nil {
		t.Fatalf("DecodeAlert: %v\n%s", err, data)
	}
	if got.ID != a.ID || got.ObservedIMEI != a.ObservedIMEI || len(got.BoundIMEIs) != 1 {
		t.Errorf("round trip lost data: %+v", got)
	}
}

func TestDecodeAlertErrors(t *testing.T) {
	tests := []struct {
		field  string
		change func(a *Alert)
	}{
		{"type", func(a *Alert) { a.Type = "party" }},
		{"tenant", func(a *Alert) { a.Tenant = "a/b" }},
		{"iccid", func(a *Alert) { a.ICCID = "123" }},
		{"bound_imeis", func(a *Alert) { a.BoundIMEIs = []IMEI{"356938035643808"} }},
		{"observed_imei", func(a *Alert) { a.ObservedIMEI = "1" }},
		{"source", func(a *Alert) { a.Source = "" }},
		{"decision", func(a *Alert) { a.Decision = "maybe" }},
		{"card_state", func(a *Alert) { a.CardState = "lost" }},
		{"time", func(a *Alert) { a.Time = time.Time{} }},
		{"bound_tac", func(a *Alert) { a.BoundTAC = "123456789" }},
	}
	for _, tt := range tests {
		a := sampleAlert()
		tt.change(a)
		data, _ := EncodeAlert(a)
		_, err := DecodeAlert(data)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("change of %s: error %v", tt.field, err)
		}
	}
}

func TestEnrollRoundTrip(t *testing.T) {
	pub := testKey().Public().(ed25519.PublicKey)
	req := &EnrollRequest{Version: 1, Token: "tok-123", PublicKey: pub, IMEI: "356938035643809", Hostname: "gw1"}
	data, _ := EncodeEnrollRequest(req)
	if _, err := DecodeEnrollRequest(data); err != nil {
		t.Fatalf("DecodeEnrollRequest: %v", err)
	}
	req.PublicKey = pub[:31]
	data, _ = EncodeEnrollRequest(req)
	if _, err := DecodeEnrollRequest(data); err == nil || !strings.Contains(err.Error(), "public_key") {
		t.Errorf("short key: %v", err)
	}

	resp := &EnrollResponse{Version: 1, DeviceID: "gw-0001", Tenant: "acme", BrokerURL: "tcp://127.0.0.1:1883",
		Username: "gw-0001", Password: "secret", ReportTopic: ReportTopic("gw-0001"),
		CommandTopic: CommandTopic("gw-0001"), CommandKey: pub}
	data, _ = EncodeEnrollResponse(resp)
	if _, err := DecodeEnrollResponse(data); err != nil {
		t.Fatalf("DecodeEnrollResponse: %v", err)
	}
	resp.ReportTopic = ReportTopic("other")
	data, _ = EncodeEnrollResponse(resp)
	if _, err := DecodeEnrollResponse(data); err == nil || !strings.Contains(err.Error(), "report_topic") {
		t.Errorf("foreign report topic: %v", err)
	}
	resp.ReportTopic = ReportTopic("gw-0001")
	resp.BrokerURL = "http://x"
	data, _ = EncodeEnrollResponse(resp)
	if _, err := DecodeEnrollResponse(data); err == nil || !strings.Contains(err.Error(), "broker_url") {
		t.Errorf("http broker url: %v", err)
	}
}

package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestParseViolation(t *testing.T) {
	tests := []struct {
		line string
		want violation
		ok   bool
	}{
		{`127.0.0.1:5555 - mid:12 - Publish Violation - Subject "cardbind.v1.devices.d2.report"`,
			violation{violationPublish, 12, "cardbind.v1.devices.d2.report"}, true},
		{`[::1]:5555 - mid:7 - Subscription Violation - Subject "cardbind.v1.devices.d2.command", SID 1`,
			violation{violationSubscribe, 7, "cardbind.v1.devices.d2.command"}, true},
		{`pipe - cid:3 - Subscription Violation - Subject "a.b", Queue: "q", SID 4`,
			violation{violationSubscribe, 3, "a.b"}, true},
		{`127.0.0.1:5555 - mid:12 - "d1-client" - Publish Violation - Subject "cardbind.v1.devices.d2.report"`,
			violation{violationPublish, 12, "cardbind.v1.devices.d2.report"}, true},
		{`127.0.0.1:5555 - mid:12 - "x - Publish Violation - Subject \"a\"" - Some other error`, violation{}, false},
		{`Publish Violation - Subject "x"`, violation{}, false}, // no label: not from a client
		{`127.0.0.1:5555 - mid:12 - Publish Violation - Reply "x"`, violation{}, false},
		{`Listening for MQTT clients on mqtt://127.0.0.1:1883`, violation{}, false},
	}
	for _, tt := range tests {
		got, ok := parseViolation(tt.line)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseViolation(%q) = %+v, %v; want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}

func TestReportDevice(t *testing.T) {
	tests := []struct {
		subject, want string
		ok            bool
	}{
		{"$MQTT.msgs.cardbind.v1.devices.d-1_X.report", "d-1_X", true},
		{"cardbind.v1.devices.d1.report", "", false},
		{"$MQTT.msgs.cardbind.v1.devices.d1.command", "", false},
		{"$MQTT.msgs.cardbind.v1.devices.d1.x.report", "", false},
		{"$MQTT.msgs.cardbind.v1.devices..report", "", false},
		{"$MQTT.msgs.cardbind.v1.devices.*.report", "", false},
		{"$MQTT.msgs.cardbind.v2.devices.d1.report", "", false},
		{"$MQTT.msgs.cardbind.v1.devices.d1.reports", "", false},
	}
	for _, tt := range tests {
		got, err := reportDevice(tt.subject)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("reportDevice(%q) = %q, %v; want %q, ok=%v", tt.subject, got, err, tt.want, tt.ok)
		}
	}
}

func TestMemAuthenticator(t *testing.T) {
	a := NewMemAuthenticator()
	secret := NewSecret()
	if err := a.Add("dev", secret, Device("dev-1")); err != nil {
		t.Fatal(err)
	}
	addErrs := []struct {
		name, user, secret string
		p                  Principal
	}{
		{"short secret", "u", "short", Device("d")},
		{"empty user", "", secret, Device("d")},
		{"reserved user", internalUser, secret, Device("d")},
		{"wildcard id", "u", secret, Device("d.*")},
		{"bad role", "u", secret, Principal{ID: "d"}},
		{"empty tenant", "u", secret, AlertSubscriber("")},
	}
	for _, tt := range addErrs {
		if err := a.Add(tt.user, tt.secret, tt.p); err == nil {
			t.Errorf("%s: Add accepted", tt.name)
		}
	}
	ctx := context.Background()
	tests := []struct {
		user, pass string
		want       Principal
		ok         bool
	}{
		{"dev", secret, Device("dev-1"), true},
		{"dev", secret + "x", Principal{}, false},
		{"dev", "", Principal{}, false},
		{"nobody", secret, Principal{}, false},
	}
	for _, tt := range tests {
		got, err := a.Authenticate(ctx, tt.user, tt.pass)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("Authenticate(%q, %q) = %v, %v; want %v, ok=%v", tt.user, tt.pass, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrUnauthorized) {
			t.Errorf("error %v is not ErrUnauthorized", err)
		}
	}
	a.Remove("dev")
	if _, err := a.Authenticate(ctx, "dev", secret); err == nil {
		t.Error("removed user still authenticates")
	}
}

func TestPermissions(t *testing.T) {
	dev := permissions(Device("d1"))
	if got := strings.Join(dev.Publish.Allow, ","); got != "cardbind.v1.devices.d1.report,cardbind.v1.devices.d1.status" {
		t.Errorf("device publish = %s", got)
	}
	if got := strings.Join(dev.Subscribe.Allow, ","); got != "cardbind.v1.devices.d1.command,$MQTT.sub.>" {
		t.Errorf("device subscribe = %s", got)
	}
	ten := permissions(AlertSubscriber("t1"))
	if ten.Publish.Allow != nil || strings.Join(ten.Publish.Deny, ",") != ">" {
		t.Errorf("tenant publish = %+v", ten.Publish)
	}
	if got := strings.Join(ten.Subscribe.Allow, ","); got != "cardbind.v1.tenants.t1.alerts.*,$MQTT.sub.>" {
		t.Errorf("tenant subscribe = %s", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		key  string // "" = valid
	}{
		{"minimal", Config{DataDir: "d"}, ""},
		{"no data dir", Config{}, "DataDir"},
		{"bad mqtt port", Config{DataDir: "d", MQTTPort: 70000}, "MQTTPort"},
		{"bad nats port", Config{DataDir: "d", NATSPort: -5}, "NATSPort"},
		{"cert without key", Config{DataDir: "d", TLSCertFile: "c"}, "TLSCertFile"},
		{"negative ack wait", Config{DataDir: "d", ReportAckWait: -1}, "ReportAckWait"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		switch {
		case tt.key == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.key != "" && (err == nil || !strings.Contains(err.Error(), tt.key)):
			t.Errorf("%s: err = %v, want one naming %s", tt.name, err, tt.key)
		}
	}
	if _, err := New(Config{}, NewMemAuthenticator(), discardLogger()); err == nil {
		t.Error("New accepted a config without DataDir")
	}
	if _, err := New(Config{DataDir: t.TempDir()}, nil, discardLogger()); err == nil {
		t.Error("New accepted a nil Authenticator")
	}
}

package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

func TestParseMQTTLabel(t *testing.T) {
	tests := []struct {
		label string
		cid   uint64
		want  string // "" = error
	}{
		{`127.0.0.1:5555 - mid:12 - "d1"`, 12, "d1"},
		{`[::1]:5555 - mid:7 - "gw-0123456789abcdef"`, 7, "gw-0123456789abcdef"},
		{`10.0.0.1/127.0.0.1:5555 - mid:3 - "a\"b - mid:4 - \"c"`, 3, `a"b - mid:4 - "c`},
		{`127.0.0.1:5555 - mid:12 - "d1"`, 13, ""},         // another connection's label
		{`127.0.0.1:5555 - mid:12`, 12, ""},                // CONNECT not parsed yet
		{`127.0.0.1:5555 - mid:12 - "d1" - extra`, 12, ""}, // trailing text
		{`127.0.0.1:5555 - mid:12 - d1`, 12, ""},           // not quoted
		{`127.0.0.1:5555 - mid:12 - ""`, 12, ""},           // empty id
		{`127.0.0.1:5555 - cid:12 - "d1"`, 12, ""},         // NATS client
		{`127.0.0.1:5555 - mid_ws:12 - "d1"`, 12, ""},      // MQTT over websocket
		{`127.0.0.1:5555 - mid:12 - "d1\x"`, 12, ""},       // bad quoting
		{``, 0, ""},
	}
	for _, tt := range tests {
		got, err := parseMQTTLabel(tt.label, tt.cid)
		if got != tt.want || (err == nil) != (tt.want != "") {
			t.Errorf("parseMQTTLabel(%q, %d) = %q, %v; want %q", tt.label, tt.cid, got, err, tt.want)
		}
	}
}

// fakeRegistry: open connections by id (connection id → principal, ""
// for one not authenticated yet) and claims by id.
type fakeRegistry struct {
	open   map[string]map[uint64]string
	claims map[string]string
	err    error
}

func (f *fakeRegistry) holders(id string, self uint64) ([]string, error) {
	if f.err != nil {
		return nil, f.err
	}
	var out []string
	for cid, p := range f.open[id] {
		if cid != self && p != "" {
			out = append(out, p)
		}
	}
	return out, nil
}

func (f *fakeRegistry) claim(_ context.Context, id, owner string) (string, error) {
	if f.err != nil {
		return "", f.err
	}
	if o, ok := f.claims[id]; ok {
		return o, nil
	}
	f.claims[id] = owner
	return owner, nil
}

func TestCheckClientID(t *testing.T) {
	reg := func() *fakeRegistry {
		return &fakeRegistry{
			open: map[string]map[uint64]string{
				"d1":         {1: "device:d1"},
				"t1-console": {2: "tenant:t1"},
				"fresh":      {3: ""},
			},
			claims: map[string]string{"t1-console": "tenant:t1", "t1-offline": "tenant:t1"},
		}
	}
	broken := &fakeRegistry{err: errors.New("server unreachable")}
	tests := []struct {
		name string
		p    Principal
		id   string
		reg  *fakeRegistry
		ok   bool
	}{
		{"device, own id", Device("d1"), "d1", reg(), true},
		{"device, own id, registry broken", Device("d1"), "d1", broken, true},
		{"device, another device's id", Device("d2"), "d1", reg(), false},
		{"device, an unused id", Device("d1"), "d1-status", reg(), false},
		{"device, a subscriber's id", Device("d1"), "t1-console", reg(), false},
		{"device, a server-assigned id", Device("d1"), "Zq3Xo5yWrNuLjXg1n0P2Rk", reg(), false},
		{"tenant, a new id", AlertSubscriber("t1"), "t1-ops", reg(), true},
		{"tenant, its tenant's open id", AlertSubscriber("t1"), "t1-console", reg(), true},
		{"tenant, its tenant's offline id", AlertSubscriber("t1"), "t1-offline", reg(), true},
		{"tenant, another tenant's open id", AlertSubscriber("t2"), "t1-console", reg(), false},
		{"tenant, another tenant's offline id", AlertSubscriber("t2"), "t1-offline", reg(), false},
		{"tenant, a connected device's id", AlertSubscriber("t1"), "d1", reg(), false},
		{"tenant, an id mid-connect elsewhere", AlertSubscriber("t2"), "fresh", reg(), true},
		{"tenant, the broker's prefix", AlertSubscriber("t1"), internalClientIDPrefix + "x", reg(), false},
		{"tenant, registry broken", AlertSubscriber("t1"), "t1-ops", broken, false},
		{"unknown role", Principal{Role: 9, ID: "x"}, "x", reg(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkClientID(t.Context(), tt.p, tt.id, 99, tt.reg)
			if (err == nil) != tt.ok {
				t.Fatalf("checkClientID(%s, %q) = %v, want ok=%v", tt.p, tt.id, err, tt.ok)
			}
			if err != nil && !errors.Is(err, errClientID) {
				t.Fatalf("error %v does not wrap errClientID", err)
			}
			if err == nil && tt.p.Role == RoleAlertSubscriber && tt.reg.claims[tt.id] != tt.p.String() {
				t.Fatalf("claim of %q = %q, want %s", tt.id, tt.reg.claims[tt.id], tt.p)
			}
		})
	}
}

// TestClientIDTakeoverRefused: with the genuine device d1 and the tenant
// t1's console connected, connections that present their client ids
// under other credentials are refused, counted and logged, and the
// genuine connections stay up and keep working.
func TestClientIDTakeoverRefused(t *testing.T) {
	b := startBroker(t, Config{}, testAuth(t))
	addr := b.MQTTAddr()
	reports, _ := collectReports(t, b, true)

	lost := make(chan string, 4)
	watch := func(name string) func(mqtt.Client, error) {
		return func(mqtt.Client, error) { lost <- name }
	}
	d1 := dialWatched(t, addr, clientOpts{id: "d1", user: "d1", pass: secretD1}, watch("d1"))
	console := dialWatched(t, addr, clientOpts{id: "t1-console", user: "t1-watch", pass: secretT1, persist: true}, watch("t1-console"))
	alerts := make(chan string, 10)
	subscribe(t, console, protocol.AlertFilter("t1"), 1, func(_ mqtt.Client, m mqtt.Message) { alerts <- string(m.Payload()) })

	tests := []struct {
		name, id, user, pass string
	}{
		{"device d2 as d1", "d1", "d2", secretD2},
		{"device d1 under another id", "d1-second", "d1", secretD1},
		{"tenant t2 as device d1", "d1", "t2-watch", secretT2},
		{"tenant t2 as t1's console", "t1-console", "t2-watch", secretT2},
		{"device d2 as t1's console", "t1-console", "d2", secretD2},
		{"tenant t2 as the broker", internalClientIDPrefix + "x", "t2-watch", secretT2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := b.Stats()
			if c, err := dial(t, addr, clientOpts{id: tt.id, user: tt.user, pass: tt.pass}); err == nil {
				c.Disconnect(50)
				t.Fatalf("%s connected with client id %q", tt.user, tt.id)
			}
			after := b.Stats()
			if after.ClientIDRefused != before.ClientIDRefused+1 || after.AuthRefused != before.AuthRefused+1 {
				t.Errorf("ClientIDRefused %d→%d, AuthRefused %d→%d; want each +1",
					before.ClientIDRefused, after.ClientIDRefused, before.AuthRefused, after.AuthRefused)
			}
		})
	}
	if logs := b.logs.String(); !strings.Contains(logs, "MQTT client id refused") || !strings.Contains(logs, `client_id=t1-console`) {
		t.Errorf("refusals not logged with the client id:\n%s", logs)
	}

	// The genuine connections were not touched.
	noMore(t, lost, 300*time.Millisecond)
	if !d1.IsConnectionOpen() || !console.IsConnectionOpen() {
		t.Fatal("a genuine connection was closed")
	}
	mustPublish(t, d1, protocol.ReportTopic("d1"), 1, []byte("still here"))
	if r := waitReport(t, reports); r != (report{"d1", "still here"}) {
		t.Fatalf("got %+v", r)
	}
	if err := b.PublishAlert(t.Context(), "t1", protocol.AlertBlocked, "a1", []byte("alert")); err != nil {
		t.Fatal(err)
	}
	if p := receive(t, alerts, "alert at the console after the attempts"); p != "alert" {
		t.Fatalf("got %q", p)
	}

	// The owner itself may take its id over (a reconnect while the old
	// connection is half-open), and so may another connection of the
	// same tenant.
	mustDial(t, addr, clientOpts{id: "d1", user: "d1", pass: secretD1})
	mustDial(t, addr, clientOpts{id: "t1-console", user: "t1-watch", pass: secretT1, persist: true})
	got := map[string]bool{}
	for range 2 {
		select {
		case name := <-lost:
			got[name] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("the old connections were not replaced: lost %v", got)
		}
	}
}

// dialWatched is dial with a connection-lost handler.
func dialWatched(t *testing.T, addr string, o clientOpts, onLost func(mqtt.Client, error)) mqtt.Client {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(o.id).
		SetUsername(o.user).SetPassword(o.pass).SetProtocolVersion(4).
		SetCleanSession(!o.persist).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetConnectionLostHandler(onLost)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s as %q: %v", o.user, o.id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// TestOfflineSessionKeptFromOtherTenant: tenant t1's persistent session is
// offline with alerts queued. Tenant t2's subscriber presenting its client
// id (with a clean session, which would wipe it) is refused, also after a
// broker restart, and t1 then gets every queued alert.
func TestOfflineSessionKeptFromOtherTenant(t *testing.T) {
	dir := t.TempDir()
	auth := testAuth(t)
	b := startBroker(t, Config{DataDir: dir}, auth)
	owner := clientOpts{id: "t1-console", user: "t1-watch", pass: secretT1, persist: true}
	before := b.Connections()
	c := mustDial(t, b.MQTTAddr(), owner)
	subscribe(t, c, protocol.AlertFilter("t1"), 1, func(mqtt.Client, mqtt.Message) {})
	c.Disconnect(50)
	eventually(t, "the session to go offline", func() bool { return b.Connections() <= before })
	for i := range 3 {
		if err := b.PublishAlert(t.Context(), "t1", protocol.AlertBlocked, fmt.Sprint("a", i), fmt.Appendf(nil, "alert %d", i)); err != nil {
			t.Fatal(err)
		}
	}

	attacker := clientOpts{id: "t1-console", user: "t2-watch", pass: secretT2}
	if _, err := dial(t, b.MQTTAddr(), attacker); err == nil {
		t.Fatal("tenant t2 connected with t1's offline session's client id")
	}
	if n := b.Stats().ClientIDRefused; n != 1 {
		t.Fatalf("ClientIDRefused = %d, want 1", n)
	}
	b.stop(t)

	b = startBroker(t, Config{DataDir: dir}, auth)
	if _, err := dial(t, b.MQTTAddr(), attacker); err == nil {
		t.Fatal("after a restart, tenant t2 connected with t1's offline session's client id")
	}
	if n := b.Stats().ClientIDRefused; n != 1 {
		t.Fatalf("after a restart, ClientIDRefused = %d, want 1", n)
	}

	got := make(chan string, 10)
	owner.onMsg = func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) }
	mustDial(t, b.MQTTAddr(), owner)
	for i := range 3 {
		if p, want := receive(t, got, fmt.Sprint("alert ", i)), fmt.Sprint("alert ", i); p != want {
			t.Errorf("got %q, want %q", p, want)
		}
	}
}

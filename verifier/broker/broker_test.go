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
	"github.com/nats-io/nats.go"
)

func TestDeviceReportReachesVerifier(t *testing.T) {
	b := startBroker(t, Config{}, testAuth(t))
	reports, _ := collectReports(t, b, true)
	d1 := mustDial(t, b.MQTTAddr(), clientOpts{user: "d1", pass: secretD1})

	mustPublish(t, d1, protocol.ReportTopic("d1"), 1, []byte(`{"hello":1}`))
	if got, want := waitReport(t, reports), (report{"d1", `{"hello":1}`}); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	eventually(t, "ack counted", func() bool { return b.Stats().ReportsAcked == 1 })
}

func TestSpoofedReportIsRefusedAndCounted(t *testing.T) {
	b := startBroker(t, Config{}, testAuth(t))
	reports, _ := collectReports(t, b, true)
	d1 := mustDial(t, b.MQTTAddr(), clientOpts{user: "d1", pass: secretD1})

	// The spoofed publish still gets its PUBACK (nats-server does not tell
	// the client), but it is dropped and counted before the PUBACK.
	mustPublish(t, d1, protocol.ReportTopic("d2"), 1, []byte("spoof"))
	if got := b.Stats().PublishRefused; got != 1 {
		t.Fatalf("PublishRefused = %d, want 1", got)
	}
	// Reports of one connection arrive in order: the next real one is
	// the first to arrive.
	mustPublish(t, d1, protocol.ReportTopic("d1"), 1, []byte("real"))
	if got, want := waitReport(t, reports), (report{"d1", "real"}); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	noMore(t, reports, 300*time.Millisecond)
	eventually(t, "violation logged with the device", func() bool {
		l := b.logs.String()
		return strings.Contains(l, "refused publish") && strings.Contains(l, "principal=device:d1") &&
			strings.Contains(l, "subject=cardbind.v1.devices.d2.report")
	})
	// The connection stays up.
	if !d1.IsConnectionOpen() {
		t.Fatal("device connection closed")
	}
}

func TestSubscribePermissions(t *testing.T) {
	b := startBroker(t, Config{}, testAuth(t))
	d1 := mustDial(t, b.MQTTAddr(), clientOpts{user: "d1", pass: secretD1})
	t1 := mustDial(t, b.MQTTAddr(), clientOpts{user: "t1-watch", pass: secretT1})
	const refused = 0x80
	tests := []struct {
		name   string
		c      mqtt.Client
		filter string
		qos    byte
		want   byte
	}{
		{"device own command qos0", d1, protocol.CommandTopic("d1"), 0, 0},
		{"device own command qos1", d1, protocol.CommandTopic("d1"), 1, 1},
		{"device other command", d1, protocol.CommandTopic("d2"), 1, refused},
		{"device all commands", d1, "cardbind/v1/devices/+/command", 0, refused},
		{"device own report", d1, protocol.ReportTopic("d1"), 0, refused},
		{"device tenant alerts", d1, protocol.AlertFilter("t1"), 1, refused},
		{"device everything", d1, "#", 0, refused},
		{"tenant own alerts", t1, protocol.AlertFilter("t1"), 1, 1},
		{"tenant own alert type", t1, protocol.AlertTopic("t1", protocol.AlertBlocked), 1, 1},
		{"tenant other tenant", t1, protocol.AlertFilter("t2"), 1, refused},
		{"tenant all tenants", t1, "cardbind/v1/tenants/+/alerts/+", 1, refused},
		{"tenant device reports", t1, protocol.ReportFilter, 1, refused},
		{"tenant internal subjects", t1, "$MQTT/sub/#", 1, refused},
	}
	before := b.Stats().SubscribeRefused
	var nRefused uint64
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := subscribe(t, tt.c, tt.filter, tt.qos, func(mqtt.Client, mqtt.Message) {}); got != tt.want {
				t.Errorf("SUBACK for %q = %#x, want %#x", tt.filter, got, tt.want)
			}
		})
		if tt.want == refused && !strings.HasPrefix(tt.filter, "$") {
			nRefused++ // "$MQTT/..." is refused before the permission check
		}
	}
	if got := b.Stats().SubscribeRefused - before; got != nRefused {
		t.Errorf("SubscribeRefused grew by %d, want %d", got, nRefused)
	}
}

func TestTenantCannotPublish(t *testing.T) {
	b := startBroker(t, Config{}, testAuth(t))
	t1 := mustDial(t, b.MQTTAddr(), clientOpts{user: "t1-watch", pass: secretT1})
	got := make(chan string, 10)
	t1b := mustDial(t, b.MQTTAddr(), clientOpts{id: "t1-watch-2", user: "t1-watch", pass: secretT1})
	subscribe(t, t1b, protocol.AlertFilter("t1"), 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) })
	mustPublish(t, t1, protocol.AlertTopic("t1", protocol.AlertBlocked), 1, []byte("forged alert"))
	if n := b.Stats().PublishRefused; n != 1 {
		t.Fatalf("PublishRefused = %d, want 1", n)
	}
	noMore(t, got, 300*time.Millisecond)
}

func TestAuthentication(t *testing.T) {
	b := startBroker(t, Config{}, testAuth(t))
	tests := []struct {
		name, user, pass string
		ok               bool
	}{
		{"device", "d1", secretD1, true},
		{"tenant", "t1-watch", secretT1, true},
		{"wrong password", "d1", secretD2, false},
		{"unknown user", "d9", secretD1, false},
		{"empty password", "d1", "", false},
		{"internal user with a guess", internalUser, secretD1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := b.Stats().AuthRefused
			_, err := dial(t, b.MQTTAddr(), clientOpts{user: tt.user, pass: tt.pass})
			if (err == nil) != tt.ok {
				t.Fatalf("connect err = %v, want ok=%v", err, tt.ok)
			}
			if !tt.ok && b.Stats().AuthRefused == before {
				t.Error("refusal not counted")
			}
		})
	}
}

// TestPlainNATSRefused: a NATS listener, when configured, admits only the
// broker's own credential; device credentials do not work there.
func TestPlainNATSRefused(t *testing.T) {
	b := startBroker(t, Config{NATSHost: "127.0.0.1", NATSPort: -1}, testAuth(t))
	url := b.srv.ClientURL()
	if nc, err := nats.Connect(url, nats.UserInfo("d1", secretD1), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("device credentials accepted over plain NATS")
	}
	nc, err := nats.Connect(url, nats.UserInfo(internalUser, b.secret))
	if err != nil {
		t.Fatalf("internal credential over NATS: %v", err)
	}
	nc.Close()
}

func TestTenantGetsOnlyItsAlerts(t *testing.T) {
	b := startBroker(t, Config{}, testAuth(t))
	ctx := context.Background()
	got1, got2 := make(chan string, 10), make(chan string, 10)
	t1 := mustDial(t, b.MQTTAddr(), clientOpts{user: "t1-watch", pass: secretT1})
	t2 := mustDial(t, b.MQTTAddr(), clientOpts{user: "t2-watch", pass: secretT2})
	subscribe(t, t1, protocol.AlertFilter("t1"), 1, func(_ mqtt.Client, m mqtt.Message) { got1 <- m.Topic() + " " + string(m.Payload()) })
	subscribe(t, t2, protocol.AlertFilter("t2"), 1, func(_ mqtt.Client, m mqtt.Message) { got2 <- m.Topic() + " " + string(m.Payload()) })

	if err := b.PublishAlert(ctx, "t1", protocol.AlertBlocked, "a1", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishAlert(ctx, "t2", protocol.AlertMismatch, "a2", []byte("two")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		ch   chan string
		want string
	}{{got1, "cardbind/v1/tenants/t1/alerts/blocked one"}, {got2, "cardbind/v1/tenants/t2/alerts/mismatch two"}} {
		if got := receive(t, c.ch, "alert "+c.want); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
	noMore(t, got1, 200*time.Millisecond)
	noMore(t, got2, 10*time.Millisecond)

	if err := b.PublishAlert(ctx, "t1", "no-such-type", "a3", nil); err == nil {
		t.Error("alert of unknown type published")
	}
	if err := b.PublishAlert(ctx, "t1.>", protocol.AlertBlocked, "a4", nil); err == nil {
		t.Error("alert for malformed tenant published")
	}
}

// TestOfflinePersistentSessionGetsAlerts: a QoS 1 subscriber with a
// persistent session that is offline while alerts are published gets
// them when it reconnects. A message published over plain NATS is not
// kept for it (nats-server's QoS 0 limitation), which is why PublishAlert
// goes through MQTT.
func TestOfflinePersistentSessionGetsAlerts(t *testing.T) {
	b := startBroker(t, Config{}, testAuth(t))
	ctx := context.Background()
	o := clientOpts{id: "t1-console", user: "t1-watch", pass: secretT1, persist: true}
	before := b.Connections()
	c := mustDial(t, b.MQTTAddr(), o)
	subscribe(t, c, protocol.AlertFilter("t1"), 1, func(mqtt.Client, mqtt.Message) {})
	c.Disconnect(50)
	// Publish only once the broker has seen the session go offline: an
	// alert sent while the connection is still closing would reach the
	// old client, which acks it and then is gone.
	deadline := time.Now().Add(5 * time.Second)
	for b.Connections() > before {
		if time.Now().After(deadline) {
			t.Fatalf("the broker still counts %d connections, %d before the subscriber", b.Connections(), before)
		}
		time.Sleep(5 * time.Millisecond)
	}

	for i := range 3 {
		if err := b.PublishAlert(ctx, "t1", protocol.AlertBlocked, fmt.Sprint("a", i), fmt.Appendf(nil, "alert %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// The same over plain NATS: not kept for the offline session.
	if err := b.nc.Publish(subjectOf(protocol.AlertTopic("t1", protocol.AlertBlocked)), []byte("over nats")); err != nil {
		t.Fatal(err)
	}
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	got := make(chan string, 10)
	o.onMsg = func(_ mqtt.Client, m mqtt.Message) {
		if m.Qos() != 1 {
			t.Errorf("alert %q delivered at QoS %d", m.Payload(), m.Qos())
		}
		got <- string(m.Payload())
	}
	mustDial(t, b.MQTTAddr(), o)
	for i := range 3 {
		if p, want := receive(t, got, fmt.Sprint("alert ", i)), fmt.Sprint("alert ", i); p != want {
			t.Errorf("got %q, want %q", p, want)
		}
	}
	noMore(t, got, 300*time.Millisecond)
}

func TestCommandReachesDevice(t *testing.T) {
	b := startBroker(t, Config{}, testAuth(t))
	got := make(chan string, 1)
	d1 := mustDial(t, b.MQTTAddr(), clientOpts{user: "d1", pass: secretD1})
	subscribe(t, d1, protocol.CommandTopic("d1"), 0, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) })
	if err := b.PublishCommand(context.Background(), "d1", []byte("report now")); err != nil {
		t.Fatal(err)
	}
	if p := receive(t, got, "command"); p != "report now" {
		t.Fatalf("got %q", p)
	}
	if err := b.PublishCommand(context.Background(), "d1.*", nil); err == nil {
		t.Error("command to malformed device id published")
	}
}

// TestReportsWaitForTheVerifier is the crash case in one process: reports
// PUBACKed while no verifier consumes, or handed to one that stopped
// before acking, are delivered when a verifier consumes again.
func TestReportsWaitForTheVerifier(t *testing.T) {
	b := startBroker(t, Config{ReportAckWait: time.Second}, testAuth(t))
	d1 := mustDial(t, b.MQTTAddr(), clientOpts{user: "d1", pass: secretD1})

	// A verifier takes one report and dies before acking.
	first, sub := collectReports(t, b, false)
	mustPublish(t, d1, protocol.ReportTopic("d1"), 1, []byte("r0"))
	if r := waitReport(t, first); r.payload != "r0" {
		t.Fatalf("got %+v", r)
	}
	sub.Stop()

	// More reports while nobody consumes.
	for i := 1; i <= 5; i++ {
		mustPublish(t, d1, protocol.ReportTopic("d1"), 1, fmt.Appendf(nil, "r%d", i))
	}

	second, _ := collectReports(t, b, true)
	seen := map[string]bool{}
	for len(seen) < 6 {
		r := waitReport(t, second)
		seen[r.payload] = true
	}
}

// TestRestartKeepsReports: reports PUBACKed before a broker shutdown are
// delivered by a new broker on the same data directory.
func TestRestartKeepsReports(t *testing.T) {
	dir := t.TempDir()
	auth := testAuth(t)
	b1 := startBroker(t, Config{DataDir: dir}, auth)
	d1 := mustDial(t, b1.MQTTAddr(), clientOpts{user: "d1", pass: secretD1})
	publishNumbered(t, d1, 5)
	d1.Disconnect(50)
	b1.stop(t)

	b2 := startBroker(t, Config{DataDir: dir}, auth)
	reports, _ := collectReports(t, b2, true)
	expectNumbered(t, reports, 5)
}

// TestOneReportSubscription: the consumer acks with AckAll, so a second
// subscription is refused while the first runs, and allowed after it
// stopped.
func TestOneReportSubscription(t *testing.T) {
	b := startBroker(t, Config{}, testAuth(t))
	_, first := collectReports(t, b, true)
	if _, err := b.SubscribeReports(context.Background(), func(string, []byte, func()) {}); !errors.Is(err, ErrSubscribed) {
		t.Fatalf("second subscription: got %v, want ErrSubscribed", err)
	}
	first.Stop()
	second, _ := collectReports(t, b, true)
	d1 := mustDial(t, b.MQTTAddr(), clientOpts{user: "d1", pass: secretD1})
	mustPublish(t, d1, protocol.ReportTopic("d1"), 1, []byte("r0"))
	if r := waitReport(t, second); r.payload != "r0" {
		t.Fatalf("got %+v", r)
	}
}

func TestNotStarted(t *testing.T) {
	b, err := New(Config{DataDir: t.TempDir()}, NewMemAuthenticator(), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.PublishCommand(ctx, "d1", nil); err == nil {
		t.Error("PublishCommand before Start succeeded")
	}
	if err := b.PublishAlert(ctx, "t1", protocol.AlertBlocked, "a", nil); err == nil {
		t.Error("PublishAlert before Start succeeded")
	}
	if _, err := b.SubscribeReports(ctx, func(string, []byte, func()) {}); err == nil {
		t.Error("SubscribeReports before Start succeeded")
	}
	if err := b.Shutdown(ctx); err != nil {
		t.Error(err)
	}
}

// TestDeviceStatus: a device may publish its own status topic (retained
// "online", and "offline" as its will), no other device's.
func TestDeviceStatus(t *testing.T) {
	b := startBroker(t, Config{}, testAuth(t))
	got := make(chan string, 10)
	sub, err := b.nc.Subscribe("cardbind.v1.devices.*.status", func(m *nats.Msg) { got <- m.Subject + " " + string(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	opts := mqtt.NewClientOptions().AddBroker("tcp://"+b.MQTTAddr()).
		SetClientID("d1").SetUsername("d1").SetPassword(secretD1).
		SetProtocolVersion(4).SetAutoReconnect(false).
		SetWill(protocol.StatusTopic("d1"), protocol.StatusOffline, 1, true)
	d1 := mqtt.NewClient(opts)
	if tok := d1.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect with will: %v", tok.Error())
	}
	defer d1.Disconnect(50)
	if tok := d1.Publish(protocol.StatusTopic("d1"), 1, true, protocol.StatusOnline); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish status: %v", tok.Error())
	}
	if s := receive(t, got, "status"); s != "cardbind.v1.devices.d1.status online" {
		t.Fatalf("got %q", s)
	}
	mustPublish(t, d1, protocol.StatusTopic("d2"), 1, []byte(protocol.StatusOffline))
	if n := b.Stats().PublishRefused; n != 1 {
		t.Fatalf("PublishRefused = %d, want 1", n)
	}
	noMore(t, got, 200*time.Millisecond)
}

// A watcher sees each device's reports at once, also while the consumer
// is stopped, and the consumer still delivers every one of them.
func TestWatchReports(t *testing.T) {
	b := startBroker(t, Config{}, testAuth(t))
	if _, err := b.WatchReports(nil); err == nil {
		t.Error("nil watcher accepted")
	}
	watched := make(chan report, 100)
	stop, err := b.WatchReports(func(device string, payload []byte) {
		watched <- report{device, string(payload)}
	})
	if err != nil {
		t.Fatal(err)
	}
	d1 := mustDial(t, b.MQTTAddr(), clientOpts{user: "d1", pass: secretD1})
	for i := range 3 {
		mustPublish(t, d1, protocol.ReportTopic("d1"), 1, fmt.Appendf(nil, "r%d", i))
	}
	for i := range 3 {
		if r, want := waitReport(t, watched), (report{"d1", fmt.Sprint("r", i)}); r != want {
			t.Fatalf("watched %+v, want %+v", r, want)
		}
	}
	consumed, _ := collectReports(t, b, true)
	for i := range 3 {
		if r, want := waitReport(t, consumed), (report{"d1", fmt.Sprint("r", i)}); r != want {
			t.Fatalf("consumed %+v, want %+v", r, want)
		}
	}
	stop()
	mustPublish(t, d1, protocol.ReportTopic("d1"), 1, []byte("after"))
	waitReport(t, consumed)
	noMore(t, watched, 200*time.Millisecond)

	// A watch never stopped ends with the broker, its connection closed.
	if _, err := b.WatchReports(func(string, []byte) {}); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	nc := b.watchNC
	b.mu.Unlock()
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !nc.IsClosed() {
		t.Error("the watch's connection is open after Shutdown")
	}
	if _, err := b.WatchReports(func(string, []byte) {}); !errors.Is(err, ErrNotStarted) {
		t.Errorf("WatchReports after Shutdown: %v, want ErrNotStarted", err)
	}
}

// TestPendingReports: a device's reports the verifier has not acked are
// read back from the stream, oldest first, without the other devices';
// acked ones are gone.
func TestPendingReports(t *testing.T) {
	b := startBroker(t, Config{}, testAuth(t))
	ctx := context.Background()
	if got, err := b.PendingReports(ctx, "d1", 10); err != nil || len(got) != 0 {
		t.Fatalf("before any report: %q, %v", got, err)
	}
	d1 := mustDial(t, b.MQTTAddr(), clientOpts{user: "d1", pass: secretD1})
	d2 := mustDial(t, b.MQTTAddr(), clientOpts{user: "d2", pass: secretD2})
	for i := range 4 {
		mustPublish(t, d1, protocol.ReportTopic("d1"), 1, fmt.Appendf(nil, "d1-%d", i))
		mustPublish(t, d2, protocol.ReportTopic("d2"), 1, fmt.Appendf(nil, "d2-%d", i))
	}
	got, err := b.PendingReports(ctx, "d1", 10)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"d1-0", "d1-1", "d1-2", "d1-3"}; fmt.Sprintf("%s", got) != fmt.Sprintf("%s", want) {
		t.Errorf("pending of d1 = %s, want %s", got, want)
	}
	if got, _ := b.PendingReports(ctx, "d1", 2); len(got) != 2 || string(got[1]) != "d1-1" {
		t.Errorf("pending of d1, at most 2 = %s", got)
	}
	// A verifier acks every report: nothing is pending any more.
	reports, _ := collectReports(t, b, true)
	for range 8 {
		waitReport(t, reports)
	}
	eventually(t, "no report of d1 pending", func() bool {
		got, err := b.PendingReports(ctx, "d1", 10)
		return err == nil && len(got) == 0
	})
}

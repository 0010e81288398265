package broker

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/cardbind/cardbind/protocol"
)

// logBuffer collects the broker's logs for assertions and for failure
// output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Test credentials.
const (
	secretD1 = "secret-of-device-d1"
	secretD2 = "secret-of-device-d2"
	secretT1 = "secret-of-tenant-t1"
	secretT2 = "secret-of-tenant-t2"
)

func testAuth(t testing.TB) *MemAuthenticator {
	t.Helper()
	a := NewMemAuthenticator()
	for _, u := range []struct {
		user, secret string
		p            Principal
	}{
		{"d1", secretD1, Device("d1")},
		{"d2", secretD2, Device("d2")},
		{"t1-watch", secretT1, AlertSubscriber("t1")},
		{"t2-watch", secretT2, AlertSubscriber("t2")},
	} {
		if err := a.Add(u.user, u.secret, u.p); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

type testBroker struct {
	*Broker
	logs *logBuffer
	cfg  Config
}

// startBroker starts a broker on cfg (DataDir defaults to a temp dir,
// MQTT to a random loopback port) and shuts it down at the end of the
// test.
func startBroker(t testing.TB, cfg Config, auth Authenticator) *testBroker {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.MQTTHost == "" {
		cfg.MQTTHost = "127.0.0.1"
	}
	logs := &logBuffer{}
	b, err := New(cfg, auth, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatalf("start: %v\nlogs:\n%s", err, logs)
	}
	tb := &testBroker{Broker: b, logs: logs, cfg: cfg}
	t.Cleanup(func() { tb.stop(t) })
	return tb
}

func (b *testBroker) stop(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if t.Failed() {
		t.Logf("broker logs:\n%s", b.logs)
	}
}

type clientOpts struct {
	id      string // MQTT client id; default user
	user    string
	pass    string
	persist bool // CleanSession=false
	onMsg   mqtt.MessageHandler
}

// dial connects a paho client (MQTT 3.1.1) and disconnects it at the end
// of the test.
func dial(t testing.TB, addr string, o clientOpts) (mqtt.Client, error) {
	t.Helper()
	if o.id == "" {
		// A device must use its device id (= its username here).
		o.id = o.user
	}
	opts := mqtt.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(o.id).
		SetUsername(o.user).
		SetPassword(o.pass).
		SetProtocolVersion(4).
		SetCleanSession(!o.persist).
		SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second)
	if o.onMsg != nil {
		opts.SetDefaultPublishHandler(o.onMsg)
	}
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, nil
}

func mustDial(t testing.TB, addr string, o clientOpts) mqtt.Client {
	t.Helper()
	c, err := dial(t, addr, o)
	if err != nil {
		t.Fatalf("connect %s: %v", o.user, err)
	}
	return c
}

func mustPublish(t testing.TB, c mqtt.Client, topic string, qos byte, payload []byte) {
	t.Helper()
	tok := c.Publish(topic, qos, false, payload)
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("publish %s: timed out", topic)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

// subscribe returns the SUBACK code for filter (0x80 = refused).
func subscribe(t testing.TB, c mqtt.Client, filter string, qos byte, h mqtt.MessageHandler) byte {
	t.Helper()
	tok := c.Subscribe(filter, qos, h)
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("subscribe %s: timed out", filter)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	return tok.(*mqtt.SubscribeToken).Result()[filter]
}

type report struct {
	device  string
	payload string
}

// collectReports subscribes to reports and sends each, acked or not, on the
// returned channel.
func collectReports(t testing.TB, b *testBroker, ack bool) (<-chan report, *Subscription) {
	t.Helper()
	ch := make(chan report, 1000)
	sub, err := b.SubscribeReports(context.Background(), func(device string, payload []byte, a func()) {
		ch <- report{device, string(payload)}
		if ack {
			a()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Stop)
	return ch, sub
}

// publishNumbered publishes n reports "r0", "r1"... on device d1's topic
// at QoS 1.
func publishNumbered(t testing.TB, d1 mqtt.Client, n int) {
	t.Helper()
	for i := range n {
		mustPublish(t, d1, protocol.ReportTopic("d1"), 1, fmt.Appendf(nil, "r%d", i))
	}
}

// expectNumbered waits for d1's reports "r0".."r<n-1>" in order, then
// for nothing more.
func expectNumbered(t testing.TB, reports <-chan report, n int) {
	t.Helper()
	for i := range n {
		if r, want := waitReport(t, reports), (report{"d1", fmt.Sprint("r", i)}); r != want {
			t.Fatalf("got %+v, want %+v", r, want)
		}
	}
	noMore(t, reports, 300*time.Millisecond)
}

func waitReport(t testing.TB, ch <-chan report) report {
	t.Helper()
	return receive(t, ch, "report")
}

// receive returns the next value from ch, failing if none comes within
// 10 s; what names it in the failure.
func receive[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10s", what)
	}
	var zero T
	return zero
}

// noMore fails if ch yields something within d.
func noMore[T any](t testing.TB, ch <-chan T, d time.Duration) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %v", v)
	case <-time.After(d):
	}
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

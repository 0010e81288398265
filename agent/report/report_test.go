package report

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/agent/outbox"
	"github.com/cardbind/cardbind/verifier/broker"
)

// The agent's link is tested against the verifier's real embedded broker
// (nats-server with its MQTT listener), as in the field.

const secret = "a-device-secret-long-enough-for-the-broker"

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type received struct {
	mu   sync.Mutex
	seqs []string
}

func (r *received) add(p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seqs = append(r.seqs, string(p))
}

func (r *received) get() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprint(r.seqs)
}

func startBroker(t *testing.T, dir string, port int, got *received) *broker.Broker {
	t.Helper()
	auth := broker.NewMemAuthenticator()
	if err := auth.Add("gw-1", secret, broker.Device("gw-1")); err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Config{DataDir: dir, MQTTHost: "127.0.0.1", MQTTPort: port}, auth, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.SubscribeReports(context.Background(), func(dev string, payload []byte, ack func()) {
		if dev == "gw-1" {
			got.add(payload)
		}
		ack()
	}); err != nil {
		t.Fatal(err)
	}
	return b
}

func stopBroker(t *testing.T, b *broker.Broker) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Error(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Reports queued while the broker is down are delivered, in order, once
// it is back; nothing is lost and the outbox ends empty.
func TestDeliversInOrderAcrossBrokerOutage(t *testing.T) {
	dir, port := t.TempDir(), freePort(t)
	got := &received{}
	b := startBroker(t, dir, port, got)

	box, err := outbox.Open(t.TempDir(), 100)
	if err != nil {
		t.Fatal(err)
	}
	var acked []uint64
	var mu sync.Mutex
	link, err := New(Config{BrokerURL: "tcp://127.0.0.1:" + strconv.Itoa(port), DeviceID: "gw-1", Username: "gw-1",
		Password: secret, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}, box, quiet(), nil,
		func(e outbox.Entry) { mu.Lock(); acked = append(acked, e.Seq); mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = link.Run(ctx) }()
	defer func() { cancel(); <-done }()

	add := func(seq uint64) {
		if err := box.Add(outbox.Entry{Seq: seq, Kind: outbox.Change, Payload: []byte(strconv.FormatUint(seq, 10))}); err != nil {
			t.Fatal(err)
		}
		link.Kick()
	}
	add(1)
	add(2)
	waitFor(t, "first reports", func() bool { return got.get() == "[1 2]" })

	stopBroker(t, b)
	waitFor(t, "link down", func() bool { return !link.Connected() })
	for seq := uint64(3); seq <= 6; seq++ {
		add(seq)
	}
	time.Sleep(300 * time.Millisecond) // several failed reconnects
	if box.Len() != 4 {
		t.Fatalf("outbox holds %d entries while the broker is down, want 4", box.Len())
	}

	b = startBroker(t, dir, port, got)
	defer stopBroker(t, b)
	waitFor(t, "reports after the outage", func() bool { return got.get() == "[1 2 3 4 5 6]" })
	waitFor(t, "outbox empty", func() bool { return box.Len() == 0 })
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(acked) != "[1 2 3 4 5 6]" {
		t.Errorf("acked %v", acked)
	}
}

func TestWrongPasswordKeepsRetrying(t *testing.T) {
	dir, port := t.TempDir(), freePort(t)
	b := startBroker(t, dir, port, &received{})
	defer stopBroker(t, b)
	box, _ := outbox.Open(t.TempDir(), 10)
	_ = box.Add(outbox.Entry{Seq: 1, Kind: outbox.Change, Payload: []byte("x")})
	link, _ := New(Config{BrokerURL: "tcp://127.0.0.1:" + strconv.Itoa(port), DeviceID: "gw-1", Username: "gw-1",
		Password: "wrong-password-of-sufficient-length", MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}, box, quiet(), nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_ = link.Run(ctx)
	if link.Connected() || box.Len() != 1 {
		t.Errorf("connected %v, outbox %d", link.Connected(), box.Len())
	}
}

func TestConfigErrors(t *testing.T) {
	box, _ := outbox.Open(t.TempDir(), 10)
	for _, c := range []Config{
		{BrokerURL: "http://x:1", DeviceID: "d"},
		{BrokerURL: "tcp://", DeviceID: "d"},
		{BrokerURL: "tcp://x:1", DeviceID: "a.b"},
	} {
		if _, err := New(c, box, quiet(), nil, nil); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

func TestBackoff(t *testing.T) {
	for n := 1; n < 20; n++ {
		d := backoff(n, time.Second, time.Minute)
		want := time.Second << (n - 1)
		if want > time.Minute || want <= 0 {
			want = time.Minute
		}
		if d < want/2 || d > want {
			t.Fatalf("backoff(%d) = %v, want %v..%v", n, d, want/2, want)
		}
	}
}

// With Config.Dial the link connects through the given dialer (here from
// another loopback source address), and when that connection is shut
// down under it (as a NAT or a load balancer drops it), it dials again and
// goes on delivering.
func TestDialHookAndDroppedConnection(t *testing.T) {
	dir, port := t.TempDir(), freePort(t)
	got := &received{}
	b := startBroker(t, dir, port, got)
	defer stopBroker(t, b)

	var mu sync.Mutex
	var conns []net.Conn
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		return c, err
	}
	box, err := outbox.Open(t.TempDir(), 100)
	if err != nil {
		t.Fatal(err)
	}
	link, err := New(Config{BrokerURL: "tcp://127.0.0.1:" + strconv.Itoa(port), DeviceID: "gw-1", Username: "gw-1",
		Password: secret, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Dial: dial}, box, quiet(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = link.Run(ctx) }()
	defer func() { cancel(); <-done }()

	add := func(seq uint64) {
		if err := box.Add(outbox.Entry{Seq: seq, Kind: outbox.Change, Payload: []byte(strconv.FormatUint(seq, 10))}); err != nil {
			t.Fatal(err)
		}
		link.Kick()
	}
	add(1)
	waitFor(t, "first report", func() bool { return got.get() == "[1]" })
	mu.Lock()
	first := conns[0]
	mu.Unlock()
	if src := first.LocalAddr().(*net.TCPAddr).IP; !src.Equal(net.IPv4(127, 0, 0, 2)) {
		t.Errorf("connected from %v, want 127.0.0.2", src)
	}
	tcp := first.(*net.TCPConn)
	_ = tcp.CloseWrite()
	_ = tcp.CloseRead()
	waitFor(t, "link down", func() bool { return !link.Connected() })
	add(2)
	waitFor(t, "report after the reconnect", func() bool { return got.get() == "[1 2]" })
	mu.Lock()
	n := len(conns)
	mu.Unlock()
	if n < 2 {
		t.Errorf("dialled %d times, want a second connection", n)
	}
}

package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// fakeMsg is a delivery whose Ack records its stream sequence.
type fakeMsg struct {
	jetstream.Msg
	sseq  uint64
	acked *[]uint64
	fail  *bool
}

func (m *fakeMsg) Ack() error {
	if *m.fail {
		return errors.New("connection closed")
	}
	*m.acked = append(*m.acked, m.sseq)
	return nil
}

// ackOp is one step of TestAcks: a delivery (sseq, dseq) that is taken
// or not, the handler's ack of delivery idx, or a flush that sends the
// acks in want (stream sequences).
type ackOp struct {
	op         string // "add", "done", "flush", "fail"
	sseq, dseq uint64
	ok         bool
	idx        uint64
	want       []uint64
}

func add(sseq, dseq uint64, ok bool) ackOp { return ackOp{op: "add", sseq: sseq, dseq: dseq, ok: ok} }
func done(idx uint64) ackOp                { return ackOp{op: "done", idx: idx} }
func flush(want ...uint64) ackOp           { return ackOp{op: "flush", want: want} }

func TestAcks(t *testing.T) {
	tests := []struct {
		name string
		ops  []ackOp
	}{
		{"in order, one ack for all", []ackOp{
			add(1, 1, true), add(2, 2, true), add(3, 3, true),
			done(0), done(1), done(2), flush(3), flush(),
		}},
		{"a hole holds the ack back", []ackOp{
			add(1, 1, true), add(2, 2, true), add(3, 3, true),
			done(2), flush(), done(0), flush(1), done(1), flush(3),
		}},
		{"redelivered report below the others", []ackOp{
			add(5, 1, true), add(6, 2, true), add(5, 3, true),
			done(2), done(1), done(0), flush(6),
		}},
		{"stream sequences with gaps (other subjects)", []ackOp{
			add(10, 1, true), add(40, 2, true), done(0), done(1), flush(40),
		}},
		{"lost delivery: no more taken, the prefix still acked", []ackOp{
			add(1, 1, true), add(2, 2, true), add(4, 4, false), add(5, 5, false),
			done(1), flush(), done(0), flush(2),
		}},
		{"failed ack sent again with the next", []ackOp{
			add(1, 1, true), add(2, 2, true), done(0),
			{op: "fail"}, flush(), {op: "fail"}, done(1), flush(2),
		}},
		{"first delivery may start anywhere", []ackOp{
			add(7, 9, true), add(8, 10, true), done(0), done(1), flush(8),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var acked atomic.Uint64
			a := newAcks(slog.New(slog.NewTextHandler(io.Discard, nil)), &acked)
			var sent []uint64
			failing := false
			for i, op := range tt.ops {
				switch op.op {
				case "add":
					_, ok := a.add(&fakeMsg{sseq: op.sseq, acked: &sent, fail: &failing}, op.sseq, op.dseq)
					if ok != op.ok {
						t.Fatalf("step %d: add(%d, %d) took it: %v, want %v", i, op.sseq, op.dseq, ok, op.ok)
					}
				case "done":
					a.done(op.idx)
				case "fail":
					failing = !failing
				case "flush":
					sent = nil
					a.flush()
					if !slices.Equal(sent, op.want) {
						t.Fatalf("step %d: flush acked %v, want %v", i, sent, op.want)
					}
				}
			}
		})
	}
}

// TestAcksCountAndCompact: many deliveries acked in reverse order are
// covered by one ack, counted once each, and leave no slots behind.
func TestAcksCountAndCompact(t *testing.T) {
	var acked atomic.Uint64
	a := newAcks(slog.New(slog.NewTextHandler(io.Discard, nil)), &acked)
	var sent []uint64
	failing := false
	const n = 5000
	for i := range uint64(n) {
		if _, ok := a.add(&fakeMsg{sseq: i + 1, acked: &sent, fail: &failing}, i+1, i+1); !ok {
			t.Fatal("delivery refused")
		}
	}
	for i := n - 1; i >= 0; i-- {
		a.done(uint64(i))
	}
	a.flush()
	if !slices.Equal(sent, []uint64{n}) || acked.Load() != n {
		t.Fatalf("acks sent %v covering %d reports, want [%d] covering %d", sent, acked.Load(), n, n)
	}
	if len(a.slots) != 0 || a.base != n {
		t.Fatalf("%d slots left, base %d", len(a.slots), a.base)
	}
}

// consumerInfo returns the report consumer's state.
func consumerInfo(t testing.TB, b *testBroker) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := b.js.Consumer(context.Background(), mqttMsgsStream, b.Broker.cfg.ReportConsumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// TestAcksFollowTheHandledPrefix: reports acked out of order are acked
// to the server only up to the first one not yet handled.
func TestAcksFollowTheHandledPrefix(t *testing.T) {
	b := startBroker(t, Config{}, testAuth(t))
	type delivery struct {
		payload string
		ack     func()
	}
	ch := make(chan delivery, 100)
	sub, err := b.SubscribeReports(context.Background(), func(_ string, p []byte, ack func()) { ch <- delivery{string(p), ack} })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Stop)
	d1 := mustDial(t, b.MQTTAddr(), clientOpts{user: "d1", pass: secretD1})
	const n = 10
	publishNumbered(t, d1, n)
	got := make([]delivery, n)
	for i := range got {
		got[i] = receive(t, ch, "report")
		if want := fmt.Sprint("r", i); got[i].payload != want {
			t.Fatalf("delivery %d is %s, want %s", i, got[i].payload, want)
		}
	}
	for i := n - 1; i >= 0; i-- {
		if i != 3 {
			got[i].ack()
		}
	}
	eventually(t, "r0-r2 acked", func() bool { return b.Stats().ReportsAcked == 3 })
	time.Sleep(100 * time.Millisecond)
	if info := consumerInfo(t, b); info.NumAckPending != n-3 {
		t.Fatalf("%d reports wait for an ack, want %d (r3-r9)", info.NumAckPending, n-3)
	}
	got[3].ack()
	eventually(t, "all acked", func() bool {
		return b.Stats().ReportsAcked == n && consumerInfo(t, b).NumAckPending == 0
	})
}

// TestLostDeliveryStartsOver: when a delivery never reaches the handler,
// the ones after it are not handed on, and the subscription starts over
// from the last ack, so the lost report comes ahead of the later ones
// and every report is handled and acked.
func TestLostDeliveryStartsOver(t *testing.T) {
	b := startBroker(t, Config{}, testAuth(t))
	var lost atomic.Bool
	b.hookDeliver = func(m jetstream.Msg) bool {
		return string(m.Data()) != "r3" || lost.Swap(true)
	}
	reports, _ := collectReports(t, b, true)
	d1 := mustDial(t, b.MQTTAddr(), clientOpts{user: "d1", pass: secretD1})
	const n = 10
	publishNumbered(t, d1, n)
	var firsts []string
	for len(firsts) < n {
		r := waitReport(t, reports)
		if !slices.Contains(firsts, r.payload) {
			firsts = append(firsts, r.payload)
		}
	}
	for i, p := range firsts {
		if want := fmt.Sprint("r", i); p != want {
			t.Fatalf("reports first handled in the order %v", firsts)
		}
	}
	if !lost.Load() || !strings.Contains(b.logs.String(), "delivery was lost") {
		t.Fatalf("no delivery was lost; logs:\n%s", b.logs)
	}
	eventually(t, "all acked", func() bool {
		info := consumerInfo(t, b)
		return info.NumAckPending == 0 && info.NumPending == 0
	})
}

// TestOlderReportConsumerReplaced: a report consumer with explicit acks,
// as an older cardbind created it, or a replacement a crash interrupted,
// becomes an AckAll one at the next start, and every report it held is
// still delivered.
func TestOlderReportConsumerReplaced(t *testing.T) {
	ctx := context.Background()
	older := func(name string, policy jetstream.AckPolicy) jetstream.ConsumerConfig {
		return jetstream.ConsumerConfig{Durable: name, FilterSubject: reportStoreFilter,
			DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: policy, MaxDeliver: -1}
	}
	tests := []struct {
		name  string
		leave func(t *testing.T, b *testBroker)
	}{
		{"explicit acks", func(t *testing.T, b *testBroker) {
			if err := b.js.DeleteConsumer(ctx, mqttMsgsStream, b.Broker.cfg.ReportConsumer); err != nil {
				t.Fatal(err)
			}
			if _, err := b.js.CreateConsumer(ctx, mqttMsgsStream, older(b.Broker.cfg.ReportConsumer, jetstream.AckExplicitPolicy)); err != nil {
				t.Fatal(err)
			}
		}},
		{"replacement interrupted", func(t *testing.T, b *testBroker) {
			if _, err := b.js.CreateConsumer(ctx, mqttMsgsStream, older(b.Broker.cfg.ReportConsumer+"-interim", jetstream.AckAllPolicy)); err != nil {
				t.Fatal(err)
			}
			if err := b.js.DeleteConsumer(ctx, mqttMsgsStream, b.Broker.cfg.ReportConsumer); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, auth := t.TempDir(), testAuth(t)
			b1 := startBroker(t, Config{DataDir: dir}, auth)
			tt.leave(t, b1)
			d1 := mustDial(t, b1.MQTTAddr(), clientOpts{user: "d1", pass: secretD1})
			publishNumbered(t, d1, 5)
			d1.Disconnect(50)
			b1.stop(t)

			b2 := startBroker(t, Config{DataDir: dir}, auth)
			if p := consumerInfo(t, b2).Config.AckPolicy; p != jetstream.AckAllPolicy {
				t.Fatalf("ack policy %v", p)
			}
			if _, err := b2.js.Consumer(ctx, mqttMsgsStream, b2.Broker.cfg.ReportConsumer+"-interim"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
				t.Fatalf("interim consumer: %v", err)
			}
			reports, _ := collectReports(t, b2, true)
			expectNumbered(t, reports, 5)
		})
	}
}

// TestAcksAfterStop: reports acked after their subscription stopped, just
// before the broker shuts down, are acked to the server: a new broker on
// the same data directory delivers none of them again.
func TestAcksAfterStop(t *testing.T) {
	dir, auth := t.TempDir(), testAuth(t)
	b1 := startBroker(t, Config{DataDir: dir}, auth)
	acks := make(chan func(), 10)
	sub, err := b1.SubscribeReports(context.Background(), func(_ string, _ []byte, ack func()) { acks <- ack })
	if err != nil {
		t.Fatal(err)
	}
	d1 := mustDial(t, b1.MQTTAddr(), clientOpts{user: "d1", pass: secretD1})
	publishNumbered(t, d1, 5)
	var handled []func()
	for range 5 {
		handled = append(handled, receive(t, acks, "report"))
	}
	d1.Disconnect(50)
	sub.Stop()
	for _, ack := range handled {
		ack()
	}
	b1.stop(t)

	b2 := startBroker(t, Config{DataDir: dir}, auth)
	reports, _ := collectReports(t, b2, true)
	noMore(t, reports, 300*time.Millisecond)
}

package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The stream nats-server keeps MQTT QoS 1/2 messages in, and the subject
// prefix it stores them under (server/mqtt.go mqttStreamName,
// mqttStreamSubjectPrefix): a QoS 1 PUBLISH on topic a/b is stored as
// "$MQTT.msgs.a.b" before the PUBACK. The stream has interest retention:
// a message is kept until every consumer whose filter matches it acked it,
// and dropped at once when no consumer matches.
const (
	mqttMsgsStream    = "$MQTT_msgs"
	mqttMsgsPrefix    = "$MQTT.msgs."
	reportFilterNATS  = "cardbind.v1.devices.*.report"
	reportStoreFilter = mqttMsgsPrefix + reportFilterNATS
)

// ReportHandler receives one report: the device id from the topic it was
// published on (the broker only lets a device publish on its own), and the
// payload as sent. The handler calls ack once the report's effect is
// durable; until then, and if ack is never called, the report is
// delivered again after Config.ReportAckWait, also to another replica or
// after a restart. ack may be called from any goroutine, later. A report
// the handler rejects (bad signature, garbage) should be acked too, after
// it was counted, or it comes back forever.
type ReportHandler func(deviceID string, payload []byte, ack func())

// Subscription is a running report subscription.
type Subscription struct {
	b   *Broker
	h   ReportHandler
	ctx context.Context

	mu      sync.Mutex
	cc      jetstream.ConsumeContext // the current consume
	stopped bool
	done    chan struct{} // closed by Stop
}

// Stop ends the subscription and waits until no handler runs. Reports
// handed out and acked afterwards are still acknowledged to the server;
// those never acked are delivered again to the next subscription.
func (s *Subscription) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	close(s.done)
	s.cc.Stop()
	<-s.cc.Closed()
	s.b.mu.Lock()
	if s.b.reportSub == s {
		s.b.reportSub = nil
	}
	s.b.mu.Unlock()
}

// ErrSubscribed is returned by SubscribeReports while another
// subscription runs: the report consumer acks with AckAll, so one
// subscription must see every report.
var ErrSubscribed = errors.New("broker: reports already subscribed")

// ensureReportConsumer creates, or updates, the durable pull consumer on
// $MQTT_msgs that holds every device report. It exists from Start on,
// whether a verifier consumes or not, so $MQTT_msgs keeps every PUBACKed
// report until a verifier acks it.
//
// A consumer left by an older cardbind acks explicitly, and a consumer's
// ack policy cannot be changed in place. It is replaced without losing a
// report: a second consumer takes over the interest in the stream, the
// old one is deleted and created anew, then the second one goes. Each
// step is repeated at the next start if a crash comes between them.
func (b *Broker) ensureReportConsumer(ctx context.Context) error {
	name, interim := b.cfg.ReportConsumer, b.cfg.ReportConsumer+"-interim"
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "cardbind device reports (MQTT QoS 1) for the verifier",
		FilterSubject: reportStoreFilter,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       b.cfg.ReportAckWait,
		MaxAckPending: b.cfg.ReportMaxAckPending,
		MaxDeliver:    -1,
	}
	old, err := b.js.Consumer(ctx, mqttMsgsStream, name)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
	case err != nil:
		return fmt.Errorf("report consumer %s on %s: %w", name, mqttMsgsStream, err)
	case old.CachedInfo().Config.AckPolicy != jetstream.AckAllPolicy:
		hold := cfg
		hold.Durable, hold.Description = interim, "holds the reports while "+name+" is created anew"
		if _, err := b.js.CreateOrUpdateConsumer(ctx, mqttMsgsStream, hold); err != nil {
			return fmt.Errorf("report consumer %s: replace: %w", name, err)
		}
		if err := b.js.DeleteConsumer(ctx, mqttMsgsStream, name); err != nil {
			return fmt.Errorf("report consumer %s: replace: %w", name, err)
		}
		b.log.Info("broker: report consumer replaced to ack with AckAll", "consumer", name)
	}
	if _, err := b.js.CreateOrUpdateConsumer(ctx, mqttMsgsStream, cfg); err != nil {
		return fmt.Errorf("report consumer %s on %s: %w", name, mqttMsgsStream, err)
	}
	err = b.js.DeleteConsumer(ctx, mqttMsgsStream, interim)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("report consumer %s: drop %s: %w", name, interim, err)
	}
	return nil
}

// How long a pull request of the report consumer lasts, and how often
// the server says it still holds it. Under load nats-server sometimes
// loses a pull request: the consumer then delivers nothing, though
// reports wait, until the client misses two heartbeats and asks again
// (nats.go issue 1622). With nats.go's defaults (30 s, 15 s) that
// stalled the verifier for 30 s: in 2 of 36 bench rounds it processed
// about 2,500 reports/s instead of 12,000, and logged "no heartbeat
// received" at the end of the stall. With these a lost pull
// request costs at most two seconds; the extra pull requests, one every
// few seconds when idle, cost nothing that shows.
const (
	ReportPullExpiry    = 5 * time.Second
	ReportPullHeartbeat = time.Second
)

// SubscribeReports feeds the devices' QoS 1 reports to h, at least once
// each, until ctx ends or Stop is called. Every report that got a PUBACK
// is delivered, also those published while no verifier was consuming or
// before a crash. One subscription runs at a time (ErrSubscribed): the
// consumer acks with AckAll (acks.go). h runs on one goroutine; a slow
// handler should hand reports on and ack later, in any order. QoS 0
// reports are not stored by nats-server and never arrive here.
//
// It first resets the consumer to its ack floor. Reports handed out
// before a crash and never acked would otherwise come again only after
// the ack wait, behind the same device's later reports, which the
// verifier would then refuse as replays: after the reset they come again
// at once and in stream order, ahead of later ones. Reports handled
// above the floor but not yet acked come again too, and are refused as
// already seen. The subscription starts over the same way when a
// delivery was lost on the way (acks.go).
func (b *Broker) SubscribeReports(ctx context.Context, h ReportHandler) (*Subscription, error) {
	if h == nil {
		return nil, errors.New("broker: subscribe reports: nil handler")
	}
	if _, _, _, err := b.conn(); err != nil {
		return nil, fmt.Errorf("broker: subscribe reports: %w", err)
	}
	s := &Subscription{b: b, h: h, ctx: ctx, done: make(chan struct{})}
	b.mu.Lock()
	if b.reportSub != nil {
		b.mu.Unlock()
		return nil, ErrSubscribed
	}
	b.reportSub = s
	b.mu.Unlock()
	s.mu.Lock()
	err := s.consume(ctx)
	if err != nil {
		s.stopped = true
		close(s.done)
	}
	s.mu.Unlock()
	if err != nil {
		b.mu.Lock()
		b.reportSub = nil
		b.mu.Unlock()
		return nil, fmt.Errorf("broker: subscribe reports: %w", err)
	}
	go func() {
		select {
		case <-ctx.Done():
			s.Stop()
		case <-s.done:
		}
	}()
	return s, nil
}

// consume resets the consumer to its ack floor and starts consuming with
// a new ack tracker. s.mu is held.
func (s *Subscription) consume(ctx context.Context) error {
	b := s.b
	_, js, _, err := b.conn()
	if err != nil {
		return err
	}
	if _, err := js.ResetConsumer(ctx, mqttMsgsStream, b.cfg.ReportConsumer); err != nil {
		return fmt.Errorf("reset to the ack floor: %w", err)
	}
	cons, err := js.Consumer(ctx, mqttMsgsStream, b.cfg.ReportConsumer)
	if err != nil {
		return err
	}
	a := b.newAcks()
	batch := min(b.cfg.ReportMaxAckPending, 1000)
	cc, err := cons.Consume(func(m jetstream.Msg) { s.deliver(m, a) },
		jetstream.PullMaxMessages(batch),
		jetstream.PullExpiry(ReportPullExpiry),
		jetstream.PullHeartbeat(ReportPullHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) || ctx.Err() == nil {
				b.log.Warn("broker: report consumer", "err", err)
			}
		}),
	)
	if err != nil {
		return err
	}
	s.cc = cc
	return nil
}

// deliver hands one delivery to the handler, unless it comes after a lost
// one: then it starts the subscription over.
func (s *Subscription) deliver(m jetstream.Msg, a *acks) {
	b := s.b
	if b.hookDeliver != nil && !b.hookDeliver(m) {
		return // lost on the way, for a test
	}
	md, err := m.Metadata()
	if err != nil {
		b.log.Error("broker: report without delivery metadata", "subject", m.Subject(), "err", err)
		return // not taken: the next delivery shows the gap, and the consume starts over
	}
	idx, ok := a.add(m, md.Sequence.Stream, md.Sequence.Consumer)
	if !ok {
		if a.startOver() {
			b.log.Warn("broker: a report delivery was lost; consuming again from the last ack",
				"consumer_seq", md.Sequence.Consumer)
			go s.restart()
		}
		return
	}
	ack := func() { a.done(idx) }
	device, err := reportDevice(m.Subject())
	if err != nil {
		// Cannot happen for what the consumer's filter lets through;
		// passed over for good rather than looped on.
		b.log.Error("broker: report on an unexpected subject", "subject", m.Subject(), "err", err)
		ack()
		return
	}
	b.stats.reportsDelivered.Add(1)
	s.h(device, m.Data(), ack)
}

// restart starts the subscription over after a lost delivery, retrying
// until it succeeds or the subscription ends.
func (s *Subscription) restart() {
	for attempt := 1; ; attempt++ {
		s.mu.Lock()
		if s.stopped || s.ctx.Err() != nil {
			s.mu.Unlock()
			return
		}
		s.cc.Stop()
		<-s.cc.Closed()
		err := s.consume(s.ctx)
		s.mu.Unlock()
		if err == nil {
			return
		}
		s.b.log.Error("broker: consume reports again", "attempt", attempt, "err", err)
		select {
		case <-s.ctx.Done():
			return
		case <-s.b.baseCtx.Done():
			return
		case <-time.After(min(time.Duration(attempt)*100*time.Millisecond, 5*time.Second)):
		}
	}
}

// reportDevice returns the device id of a stored report's subject,
// "$MQTT.msgs.cardbind.v1.devices.<id>.report".
func reportDevice(subject string) (string, error) {
	rest, ok := strings.CutPrefix(subject, mqttMsgsPrefix)
	if !ok {
		return "", fmt.Errorf("no %s prefix", mqttMsgsPrefix)
	}
	return reportSubjectDevice(rest)
}

// reportSubjectDevice returns the device id of a report's NATS subject,
// "cardbind.v1.devices.<id>.report" (its MQTT topic with '/' as '.'),
// without building the topic: it runs twice for every report.
func reportSubjectDevice(subject string) (string, error) {
	const prefix, suffix = "cardbind.v1.devices.", ".report"
	id, ok := strings.CutPrefix(subject, prefix)
	if ok {
		id, ok = strings.CutSuffix(id, suffix)
	}
	if !ok {
		return "", fmt.Errorf("subject %q is no report's", subject)
	}
	if err := protocol.ValidateID("device id", id); err != nil { // no '.' either
		return "", fmt.Errorf("subject %q: %w", subject, err)
	}
	return id, nil
}

// PendingReports returns the payloads of a device's reports that the
// stream still holds (published, not yet acked by the verifier), oldest
// first, at most max. The verifier applies them before a later report of
// the same device that it takes early (WatchReports), so that none is
// overtaken. It reads them by subject from the stream, one request each.
func (b *Broker) PendingReports(ctx context.Context, device string, max int) ([][]byte, error) {
	st, err := b.backlogStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("broker: pending reports: %w", err)
	}
	subject := mqttMsgsPrefix + subjectOf(protocol.ReportTopic(device))
	var out [][]byte
	for seq := uint64(1); len(out) < max; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("broker: pending reports of %s: %w", device, err)
		}
		out = append(out, m.Data)
		seq = m.Sequence + 1
	}
	return out, nil
}

// backlogStream returns $MQTT_msgs on PendingReports' own connection.
func (b *Broker) backlogStream(ctx context.Context) (jetstream.Stream, error) {
	b.mu.Lock()
	nc, st := b.backlogNC, b.msgs
	b.mu.Unlock()
	if nc == nil {
		return nil, ErrNotStarted
	}
	if st != nil {
		return st, nil
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if st, err = js.Stream(ctx, mqttMsgsStream); err != nil {
		return nil, err
	}
	b.mu.Lock()
	if b.backlogNC == nc {
		b.msgs = st
	}
	b.mu.Unlock()
	return st, nil
}

// ReportWatcher is told of every report as the broker takes it, before it
// waits its turn in the durable consumer: the device id from the topic and
// the payload as sent. It runs on the connection's delivery goroutine and
// must not block.
type ReportWatcher func(deviceID string, payload []byte)

// WatchReports calls w with every device report published from now on, at
// once, without acks and without durability: a report w misses, or that
// is lost in a crash, still comes through SubscribeReports, which
// delivers every report as well. It lets the verifier take a report that
// matters (a SIM change) ahead of the reports queued in the consumer. The
// returned stop ends the watch.
//
// Watches use an in-process connection of their own, opened by Start
// before any device may connect (so a fleet reconnecting at the
// connection limit cannot keep it out). On the shared one, each report
// would wait behind the consumer's deliveries (up to a pull of a thousand
// reports) in the same stream of bytes, read by the same goroutine: under
// load that put 60-70 ms between a report's PUBACK and its copy here.
func (b *Broker) WatchReports(w ReportWatcher) (stop func(), err error) {
	if w == nil {
		return nil, errors.New("broker: watch reports: nil watcher")
	}
	b.mu.Lock()
	nc := b.watchNC
	b.mu.Unlock()
	if nc == nil {
		return nil, fmt.Errorf("broker: watch reports: %w", ErrNotStarted)
	}
	sub, err := nc.Subscribe(reportFilterNATS, func(m *nats.Msg) {
		device, err := reportSubjectDevice(m.Subject)
		if err != nil {
			return // the filter lets nothing else through
		}
		w(device, m.Data)
	})
	if err != nil {
		return nil, fmt.Errorf("broker: watch reports: %w", err)
	}
	// Never a slow consumer: the watcher does not block, and a report
	// dropped here still comes through the consumer.
	err = sub.SetPendingLimits(64*1024, 64<<20)
	if err == nil {
		err = nc.Flush() // the subscription is in place when this returns
	}
	if err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("broker: watch reports: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

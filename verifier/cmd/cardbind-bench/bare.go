package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cardbind/cardbind/verifier/broker"
)

// bareReportFilter is where nats-server stores QoS 1 publishes on the
// devices' report topics (cardbind/v1/devices/+/report) in $MQTT_msgs.
const bareReportFilter = "$MQTT.msgs.cardbind.v1.devices.*.report"

// bareBroker is "cardbind-bench bare-broker", the baseline: a plain
// embedded nats-server with JetStream on disk and the MQTT listener, no
// authentication, and a durable JetStream consumer on the MQTT message
// stream that acks every report it is handed and counts it. GET /count
// on -http answers the count. It runs until SIGTERM.
func bareBroker(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("bare-broker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "JetStream store directory (required)")
	mqttAddr := fs.String("mqtt", "127.0.0.1:1883", "MQTT listen address")
	httpAddr := fs.String("http", "127.0.0.1:0", "HTTP listen address of GET /count")
	profile := fs.String("cpuprofile", "", "CPU profile of the whole run to write")
	ackAll := fs.Bool("ack-all", false, "ack with AckAll, once per 64 reports and every 10 ms, as the verifier acks in rounds (default: each report, explicitly)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("bare-broker: -dir is required")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if *profile != "" {
		stop, err := startCPUProfile(*profile)
		if err != nil {
			return fmt.Errorf("bare-broker: %w", err)
		}
		defer stop()
	}
	host, p, err := net.SplitHostPort(*mqttAddr)
	if err != nil {
		return fmt.Errorf("bare-broker: -mqtt: %w", err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return fmt.Errorf("bare-broker: -mqtt: %w", err)
	}
	// The same server options as verifier/broker, less the authentication
	// hook.
	s, err := server.NewServer(&server.Options{
		ServerName: "bare", DontListen: true, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: *dir, MaxConn: 200_000,
		MQTT: server.MQTTOpts{Host: host, Port: port},
	})
	if err != nil {
		return fmt.Errorf("bare-broker: %w", err)
	}
	s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(20 * time.Second) {
		return errors.New("bare-broker: nats-server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(s))
	if err != nil {
		return fmt.Errorf("bare-broker: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("bare-broker: %w", err)
	}
	// The first MQTT CONNECT creates the account's MQTT streams.
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + *mqttAddr).
		SetClientID("bare-init").SetProtocolVersion(4).SetCleanSession(true))
	if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		return fmt.Errorf("bare-broker: first MQTT connect: %v", tok.Error())
	}
	c.Disconnect(50)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	policy := jetstream.AckExplicitPolicy
	if *ackAll {
		policy = jetstream.AckAllPolicy
	}
	cons, err := js.CreateOrUpdateConsumer(cctx, "$MQTT_msgs", jetstream.ConsumerConfig{
		Durable: "bare-reports", FilterSubject: bareReportFilter,
		DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: policy,
		AckWait: 30 * time.Second, MaxAckPending: 20_000, MaxDeliver: -1,
	})
	if err != nil {
		return fmt.Errorf("bare-broker: consumer: %w", err)
	}
	var count atomic.Int64
	handle := func(m jetstream.Msg) {
		if err := m.Ack(); err == nil {
			count.Add(1)
		}
	}
	if *ackAll {
		handle = batchAcks(ctx, &count)
	}
	cc, err := cons.Consume(handle, jetstream.PullMaxMessages(1000),
		// The verifier's settings, so that a pull request the server
		// loses stalls both for the same two seconds at most.
		jetstream.PullExpiry(broker.ReportPullExpiry), jetstream.PullHeartbeat(broker.ReportPullHeartbeat))
	if err != nil {
		return fmt.Errorf("bare-broker: consume: %w", err)
	}
	defer cc.Stop()

	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return fmt.Errorf("bare-broker: -http: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /count", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, count.Load())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("bare broker running", "mqtt", *mqttAddr, "http", ln.Addr().String())
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = srv.Shutdown(sctx)
	return nil
}

// batchAcks returns a consume handler that acks under AckAll: the
// latest report every 64 reports and every 10 ms, each ack covering
// all before it. Reports count when taken: acks are the server's work.
func batchAcks(ctx context.Context, count *atomic.Int64) func(jetstream.Msg) {
	var mu sync.Mutex
	var last jetstream.Msg // not yet acked
	ack := func() {
		mu.Lock()
		m := last
		last = nil
		mu.Unlock()
		if m != nil {
			_ = m.Ack()
		}
	}
	go func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				ack()
			case <-ctx.Done():
				return
			}
		}
	}()
	return func(m jetstream.Msg) {
		mu.Lock()
		last = m
		mu.Unlock()
		if count.Add(1)%64 == 0 {
			ack()
		}
	}
}

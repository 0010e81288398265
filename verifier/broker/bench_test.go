package broker

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// BenchmarkIngestQoS1 measures device reports per second, MQTT QoS 1 from
// pubs paho publishers (256 in flight each), in two setups side by side:
//
//	broker: this package, reports consumed and acked through the durable
//	        report consumer (SubscribeReports)
//	bare:   a bare embedded nats-server (JetStream, MQTT, no auth hook),
//	        reports received by a plain NATS subscription
//
// The ratio broker/bare is the cost of durable, authenticated ingest.
//
//	go test -run '^$' -bench IngestQoS1 -benchtime 20000x ./verifier/broker/
func BenchmarkIngestQoS1(b *testing.B) {
	payload := make([]byte, 200) // about a signed report
	for _, pubs := range []int{1, 8} {
		b.Run(fmt.Sprintf("broker/pubs=%d", pubs), func(b *testing.B) {
			benchBroker(b, pubs, payload)
		})
		b.Run(fmt.Sprintf("bare/pubs=%d", pubs), func(b *testing.B) {
			benchBare(b, pubs, payload)
		})
	}
}

func benchBroker(b *testing.B, pubs int, payload []byte) {
	auth := NewMemAuthenticator()
	for i := range pubs {
		if err := auth.Add(fmt.Sprint("d", i), secretD1, Device(fmt.Sprint("d", i))); err != nil {
			b.Fatal(err)
		}
	}
	brk := startBroker(b, Config{}, auth)
	var got atomic.Int64
	done := make(chan struct{})
	n := int64(b.N)
	sub, err := brk.SubscribeReports(context.Background(), func(_ string, _ []byte, ack func()) {
		ack()
		if got.Add(1) == n {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Stop()
	clients := make([]mqtt.Client, pubs)
	topics := make([]string, pubs)
	for i := range pubs {
		clients[i] = mustDial(b, brk.MQTTAddr(), clientOpts{user: fmt.Sprint("d", i), pass: secretD1})
		topics[i] = protocol.ReportTopic(fmt.Sprint("d", i))
	}
	runPublishers(b, clients, topics, payload, done)
}

func benchBare(b *testing.B, pubs int, payload []byte) {
	opts := &server.Options{
		ServerName: "bare", DontListen: true, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: b.TempDir(), MaxConn: 1000,
		MQTT: server.MQTTOpts{Host: "127.0.0.1", Port: -1},
	}
	s, err := server.NewServer(opts)
	if err != nil {
		b.Fatal(err)
	}
	s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(10 * time.Second) {
		b.Fatal("bare server not ready")
	}
	vz, err := s.Varz(nil)
	if err != nil {
		b.Fatal(err)
	}
	addr := net.JoinHostPort(vz.MQTT.Host, strconv.Itoa(vz.MQTT.Port))
	nc, err := nats.Connect("", nats.InProcessServer(s))
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	var got atomic.Int64
	done := make(chan struct{})
	n := int64(b.N)
	if _, err := nc.Subscribe(subjectOf(protocol.ReportFilter), func(*nats.Msg) {
		if got.Add(1) == n {
			close(done)
		}
	}); err != nil {
		b.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	clients := make([]mqtt.Client, pubs)
	topics := make([]string, pubs)
	for i := range pubs {
		clients[i] = mustDial(b, addr, clientOpts{user: fmt.Sprint("d", i)})
		topics[i] = protocol.ReportTopic(fmt.Sprint("d", i))
	}
	runPublishers(b, clients, topics, payload, done)
}

// runPublishers publishes b.N reports split over clients, each keeping up
// to 256 QoS 1 publishes in flight, and waits until done closes.
func runPublishers(b *testing.B, clients []mqtt.Client, topics []string, payload []byte, done <-chan struct{}) {
	const window = 256
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range clients {
		count := b.N / len(clients)
		if i < b.N%len(clients) {
			count++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			inflight := make([]mqtt.Token, 0, window)
			for range count {
				if len(inflight) == window {
					if err := waitTok(inflight[0]); err != nil {
						b.Error(err)
						return
					}
					inflight = inflight[1:]
				}
				inflight = append(inflight, c.Publish(topics[i], 1, false, payload))
			}
			for _, t := range inflight {
				if err := waitTok(t); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	acked := time.Since(start)
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		b.Fatal("not every report arrived within 60s")
	}
	b.StopTimer()
	total := time.Since(start)
	b.ReportMetric(float64(b.N)/total.Seconds(), "reports/s")
	// How long the last report took to arrive after the last PUBACK.
	b.ReportMetric(float64((total - acked).Milliseconds()), "drain-ms")
}

func waitTok(t mqtt.Token) error {
	if !t.WaitTimeout(30 * time.Second) {
		return fmt.Errorf("no PUBACK within 30s")
	}
	return t.Error()
}

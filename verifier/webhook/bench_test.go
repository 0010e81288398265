package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
)

// BenchmarkDelivery measures events delivered per second to a local TLS
// sink through the outbox (read, POST, synced completion), with the
// events queued beforehand, next to the baseline: the same sink and
// bodies POSTed by a bare http.Client loop, from one goroutine (as one
// subscription is served) and from 8 (the notifier's default workers).
// Events are spread over subs subscriptions (one subscription's events go
// one at a time, in order).
func BenchmarkDelivery(b *testing.B) {
	for _, subs := range []int{1, 64} {
		b.Run(fmt.Sprintf("notifier/subs=%d", subs), func(b *testing.B) { benchNotifier(b, subs) })
	}
	for _, workers := range []int{1, 8} {
		b.Run(fmt.Sprintf("baseline/http-client-loop/workers=%d", workers), func(b *testing.B) { benchBaseline(b, workers) })
	}
}

func benchNotifier(b *testing.B, subs int) {
	f := buildFixture(b, Config{AllowPrivateSinks: true})
	for range subs {
		f.subscribe(nil)
	}
	alerts := (b.N + subs - 1) / subs
	for i := range alerts {
		f.alert(i+1, protocol.AlertMismatch, imei(b, fmt.Sprintf("86%012d", i%1000000)))
	}
	want := subs + alerts*subs // the started events, then the imei-changes
	b.ResetTimer()
	f.run()
	deadline := time.Now().Add(5 * time.Minute)
	for f.sink.delivered() < want {
		if time.Now().After(deadline) {
			b.Fatalf("sink has %d of %d events", f.sink.delivered(), want)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(want)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(0, "ns/op")
}

func benchBaseline(b *testing.B, workers int) {
	s := newSink(b)
	pem, err := os.ReadFile(s.ca)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool},
		MaxIdleConnsPerHost: workers, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	body := []byte(`{"id":"7b0d9d3e-4a57-8f5e-a5b1-0c2a6f0d2b11","source":"https://verifier.test/iot-sim-fraud-prevention-subscriptions/v0.1",` +
		`"type":"org.camaraproject.iot-sim-fraud-prevention.v0.imei-change","specversion":"1.0","datacontenttype":"application/json",` +
		`"time":"2026-11-27T00:00:00.000Z","data":{"device":{"phoneNumber":"+8613900000001"},"imei":"861234560000115","subscriptionId":"0123456789abcdef0123456789abcdef"}}`)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, s.srv.URL+"/events", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/cloudevents+json")
				req.Header.Set("Authorization", "Bearer "+testToken)
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if n := len(s.events()); n != b.N {
		b.Fatalf("sink has %d of %d events", n, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(0, "ns/op")
}

package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cardbind/cardbind/verifier/app"
	"github.com/cardbind/cardbind/verifier/config"
	"github.com/cardbind/cardbind/verifier/store/pebble"
)

// verifierUnderTest is a whole verifier (app.Run) on loopback over a
// Pebble store on disk, with tenant acme, cards imported and a CAMARA
// client's token.
type verifierUnderTest struct {
	base, operator, token string
	client                *http.Client
}

func startVerifier(tb testing.TB, cards int) *verifierUnderTest {
	tb.Helper()
	cfg := config.Default()
	cfg.DataDir = tb.TempDir()
	cfg.HTTP.Listen, cfg.MQTT.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Log.Level = "error"
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan app.Ready, 1)
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		done <- app.Run(ctx, cfg, pebble.OpenConfigured, log, io.Discard, func(r app.Ready) { ready <- r })
	}()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("verifier: %v", err)
		}
	})
	var r app.Ready
	select {
	case r = <-ready:
	case err := <-done:
		tb.Fatalf("verifier did not start: %v", err)
	}
	token, err := os.ReadFile(filepath.Join(cfg.DataDir, "operator-token"))
	if err != nil {
		tb.Fatal(err)
	}
	v := &verifierUnderTest{base: "http://" + r.HTTPAddr, operator: strings.TrimSpace(string(token)),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}}
	v.admin(tb, "POST", "/admin/v1/tenants", `{"id":"acme"}`, nil)
	var csv bytes.Buffer
	csv.WriteString("iccid,tenant,imsi,msisdn\n")
	for i := range cards {
		fmt.Fprintf(&csv, "8986%016d,acme,46003%010d,+86139%08d\n", i, i, i)
	}
	v.admin(tb, "POST", "/admin/v1/cards/import?format=csv", csv.String(), nil)
	var cl struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	v.admin(tb, "POST", "/admin/v1/clients", `{"tenant":"acme","scopes":["iot-sim-fraud-prevention:bind","iot-sim-fraud-prevention:query"]}`, &cl)
	form := url.Values{"grant_type": {"client_credentials"}}
	req, _ := http.NewRequest("POST", v.base+"/oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(cl.ID, cl.Secret)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	v.do(tb, req, &tok)
	v.token = tok.AccessToken
	return v
}

func (v *verifierUnderTest) admin(tb testing.TB, method, path, body string, out any) {
	tb.Helper()
	req, _ := http.NewRequest(method, v.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+v.operator)
	req.Header.Set("Content-Type", "application/json")
	v.do(tb, req, out)
}

func (v *verifierUnderTest) do(tb testing.TB, req *http.Request, out any) {
	tb.Helper()
	resp, err := v.client.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		tb.Fatalf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			tb.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
		}
	}
}

// camara builds a CAMARA request for card i.
func (v *verifierUnderTest) camara(op string, i int) *http.Request {
	var body string
	switch op {
	case "query":
		body = fmt.Sprintf(`{"device":{"phoneNumber":"+86139%08d"},"queryType":"IMEIBIND"}`, i)
	case "bind":
		body = fmt.Sprintf(`{"device":{"phoneNumber":"+86139%08d"},"bindType":"IMEIBIND"}`, i)
	}
	req, _ := http.NewRequest("POST", v.base+"/iot-sim-fraud-prevention/v0.1/"+op, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+v.token)
	req.Header.Set("x-correlator", "b4333c46-49c0-4f62-80d7-f0ef930f1c46")
	return req
}

// paced sends requests at rate per second for d, open loop: each request
// has a scheduled time, and its latency counts from then, so a stalled
// server is charged for the requests queued behind it. It returns the
// sorted latencies and the number of failures.
func paced(client *http.Client, rate int, d time.Duration, next func(i int) *http.Request) ([]time.Duration, int64) {
	n := int(float64(rate) * d.Seconds())
	interval := time.Second / time.Duration(rate)
	lat := make([]time.Duration, n)
	var failed atomic.Int64
	jobs := make(chan int, 1024)
	var wg sync.WaitGroup
	start := time.Now()
	for range 128 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				due := start.Add(time.Duration(i) * interval)
				if wait := time.Until(due); wait > 0 {
					time.Sleep(wait)
				}
				resp, err := client.Do(next(i))
				if err != nil {
					failed.Add(1)
					lat[i] = time.Since(due)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
				lat[i] = time.Since(due)
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	slices.Sort(lat)
	return lat, failed.Load()
}

func quantile(lat []time.Duration, q float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	return lat[min(len(lat)-1, int(float64(len(lat))*q))]
}

// BenchmarkCAMARAQueryPaced measures CAMARA IMEIBIND queries over real
// HTTP on loopback against the whole verifier (OAuth2 token validation,
// Pebble lookup by phone number among 100,000 cards) at a paced 2,000
// requests/s, and the same run's /healthz (a handler that does nothing)
// at the same rate as the baseline. Latency counts from each request's
// scheduled time.
//
//	go test -run '^$' -bench CAMARAQueryPaced -benchtime 1x ./verifier/app/
func BenchmarkCAMARAQueryPaced(b *testing.B) {
	const cards, rate, dur = 100_000, 2000, 10 * time.Second
	v := startVerifier(b, cards)
	health := func(int) *http.Request { r, _ := http.NewRequest("GET", v.base+"/healthz", nil); return r }
	paced(v.client, rate, time.Second, func(i int) *http.Request { return v.camara("query", i%cards) }) // warm up
	for b.Loop() {
		base, bfail := paced(v.client, rate, dur, health)
		lat, fail := paced(v.client, rate, dur, func(i int) *http.Request { return v.camara("query", (i*7919)%cards) })
		b.ReportMetric(float64(quantile(lat, 0.5).Microseconds()), "query-p50-us")
		b.ReportMetric(float64(quantile(lat, 0.99).Microseconds()), "query-p99-us")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "query-max-us")
		b.ReportMetric(float64(quantile(base, 0.5).Microseconds()), "healthz-p50-us")
		b.ReportMetric(float64(quantile(base, 0.99).Microseconds()), "healthz-p99-us")
		b.ReportMetric(float64(fail+bfail), "failed")
	}
}

// BenchmarkCAMARABind measures bind throughput over real HTTP (each bind
// is a synced Pebble batch with its history entry), 32 clients in a
// closed loop, against the same run's /healthz throughput.
//
//	go test -run '^$' -bench CAMARABind -benchtime 1x ./verifier/app/
func BenchmarkCAMARABind(b *testing.B) {
	const cards, dur = 100_000, 10 * time.Second
	v := startVerifier(b, cards)
	closed := func(next func(i int) *http.Request) (float64, int64) {
		var n, failed atomic.Int64
		var wg sync.WaitGroup
		stop := time.Now().Add(dur)
		start := time.Now()
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					i := int(n.Add(1))
					resp, err := v.client.Do(next(i))
					if err != nil {
						failed.Add(1)
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						failed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		return float64(n.Load()) / time.Since(start).Seconds(), failed.Load()
	}
	for b.Loop() {
		base, bfail := closed(func(int) *http.Request { r, _ := http.NewRequest("GET", v.base+"/healthz", nil); return r })
		binds, fail := closed(func(i int) *http.Request { return v.camara("bind", i%cards) })
		b.ReportMetric(binds, "binds/s")
		b.ReportMetric(base, "healthz/s")
		b.ReportMetric(binds/base, "ratio")
		b.ReportMetric(float64(fail+bfail), "failed")
	}
}

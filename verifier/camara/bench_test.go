package camara

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// BenchmarkQuery measures a two-legged IMEIBIND query through the whole
// handler (x-correlator, ES256 token validation, scope, rate, body,
// device lookup, answer) against the in-memory store holding 100,000
// cards, and reports p50 and p99 latency besides ns/op.
//
//	go test -run '^$' -bench Query -benchtime 20000x ./verifier/camara/
func BenchmarkQuery(b *testing.B) {
	e := newEnv(b, Config{})
	cards := make([]verifier.Card, 100_000)
	for i := range cards {
		cards[i] = verifier.Card{ICCID: protocol.ICCID(fmt.Sprintf("8986%016d", i)), Tenant: "acme", MSISDN: protocol.MSISDN(fmt.Sprintf("+86139%08d", i)),
			IPv4: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})}
	}
	if _, _, err := e.store.UpsertInventory(context.Background(), cards); err != nil {
		b.Fatal(err)
	}
	token := "Bearer " + e.tokens["acme"]
	request := func(i int) time.Duration {
		body := `{"device":{"phoneNumber":"+86139` + fmt.Sprintf("%08d", i%len(cards)) + `"},"queryType":"IMEIBIND"}`
		req := httptest.NewRequest("POST", BasePath+"/query", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", token)
		req.Header.Set("x-correlator", "b4333c46-49c0-4f62-80d7-f0ef930f1c46")
		rec := httptest.NewRecorder()
		start := time.Now()
		e.h.ServeHTTP(rec, req)
		d := time.Since(start)
		if rec.Code != 200 {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		return d
	}
	report := func(b *testing.B, lat []time.Duration) {
		slices.Sort(lat)
		if len(lat) > 0 {
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-us")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
		}
	}
	b.Run("serial", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			lat = append(lat, request(i))
		}
		report(b, lat)
	})
	b.Run("parallel", func(b *testing.B) {
		var mu sync.Mutex
		var lat []time.Duration
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var mine []time.Duration
			for i := 0; pb.Next(); i++ {
				mine = append(mine, request(i))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
		report(b, lat)
	})
}

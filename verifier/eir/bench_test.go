package eir

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// BenchmarkEquipmentStatus measures equipment checks answered per second
// through the handler, the real ingest and engine and a Pebble store
// (each check is a synced commit of the card), spread over 1000 bound
// cards seen in their own devices, 32 concurrent callers on 2 cores; no
// HTTP transport.
func BenchmarkEquipmentStatus(b *testing.B) {
	f := newFixture(b, Options{}, nil)
	const n = 1000
	queries := make([]string, n)
	for i := range n {
		c := f.card(i, &verifier.Binding{IMEIs: []protocol.IMEI{own}, Mode: verifier.ModeBlock})
		queries[i] = q("pei", pei(own), "supi", supi(c))
	}
	b.SetParallelism(16) // many AMFs asking at once, as on a busy HTTP listener
	var next atomic.Uint64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) % n
			req := httptest.NewRequest(http.MethodGet, Path+"?"+queries[i], nil)
			req.RemoteAddr = "127.0.0.1:5000"
			w := httptest.NewRecorder()
			f.h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				panic(fmt.Sprintf("status %d: %s", w.Code, w.Body))
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
}

package fleet

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cardbind/cardbind/firmware-sim/network"
	"github.com/cardbind/cardbind/verifier/app"
	"github.com/cardbind/cardbind/verifier/config"
	"github.com/cardbind/cardbind/verifier/store/pebble"
)

// startVerifier runs a whole verifier (app.Run: Pebble store, embedded
// broker, enforcement into net) on loopback and returns its HTTP base URL
// and operator token.
func startVerifier(t *testing.T, simnetURL string) (base, token string) {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Listen, cfg.MQTT.Listen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Log.Level = "error"
	cfg.Enforce.Adapter, cfg.Enforce.SimnetURL = "simnet", simnetURL
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan app.Ready, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, cfg, pebble.OpenConfigured, slog.New(slog.DiscardHandler), io.Discard, func(r app.Ready) { ready <- r })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("verifier: %v", err)
		}
	})
	var r app.Ready
	select {
	case r = <-ready:
	case err := <-done:
		t.Fatalf("verifier did not start: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(cfg.DataDir, "operator-token"))
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + r.HTTPAddr, strings.TrimSpace(string(b))
}

// reportCounts reads cardbind_reports_total by outcome from /metrics.
func reportCounts(t *testing.T, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), `cardbind_reports_total{outcome="`)
		if !ok {
			continue
		}
		name, val, _ := strings.Cut(rest, `"} `)
		v, _ := strconv.ParseFloat(val, 64)
		out[name] = v
	}
	return out
}

// A fleet of 50 gateways (real agent code on firmware-sim modems) against
// a real verifier that enforces into a simulated network: reports arrive,
// swapped cards are blocked at the network and resumed when back, storms
// reconnect, the counts agree with each other and with the verifier's;
// a second run reuses the enrolment.
func TestFleetAgainstVerifier(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a verifier and 50 gateways")
	}
	operator := network.New(network.Options{})
	netSrv := httptest.NewServer(network.NewHandler(operator, slog.New(slog.DiscardHandler)))
	defer netSrv.Close()
	base, token := startVerifier(t, netSrv.URL)
	stateDir := t.TempDir()

	var lines []Progress
	cfg := Config{
		Devices: 50, VerifierURL: base, OperatorToken: token, Tenant: "fleet-test", StateDir: stateDir,
		Network: operator, Heartbeat: time.Second, Poll: 2 * time.Second,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, RebootDownFor: 300 * time.Millisecond,
		Duration: 8 * time.Second, SourceAddrs: LoopbackSources(2),
		SwapRate: 1.5, SwapHold: 2 * time.Second, SwapGap: 50 * time.Millisecond,
		FaultRate: 2, MoveRate: 2, CellChangeInterval: time.Second, StormEvery: 3 * time.Second, StormPercent: 20, Seed: 1,
		Progress: func(p Progress) { lines = append(lines, p) },
	}
	sum, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("summary: %+v", *sum)
	if sum.Enrolment.Enrolled != 50 || sum.Enrolment.Imported != 50 || !sum.Enrolment.TenantCreated {
		t.Errorf("first run enrolment %+v, want 50 imported and enrolled, tenant created", sum.Enrolment)
	}
	if sum.Peak != 50 || sum.ConnectAll <= 0 {
		t.Errorf("peak %d sessions, all connected after %v; want 50", sum.Peak, sum.ConnectAll)
	}
	if sum.Acked == 0 || sum.Queued < 50 {
		t.Errorf("queued %d, acked %d reports", sum.Queued, sum.Acked)
	}
	// Every queued report is acked or still waits (nothing is dropped
	// below the outbox limit).
	if got := int64(sum.PendingStart) + sum.Queued - sum.Acked; got != int64(sum.PendingEnd) {
		t.Errorf("pending at start %d + queued %d - acked %d = %d, but %d wait in the outboxes",
			sum.PendingStart, sum.Queued, sum.Acked, got, sum.PendingEnd)
	}
	if sum.Swaps == 0 || sum.SwapsBack != sum.Swaps {
		t.Errorf("swaps %d, back %d", sum.Swaps, sum.SwapsBack)
	}
	if sum.BlocksObserved == 0 || sum.BlocksObserved > sum.Swaps || sum.BlockLatency.N != int(sum.BlocksObserved) {
		t.Errorf("blocks observed %d (latencies %d) for %d swaps", sum.BlocksObserved, sum.BlockLatency.N, sum.Swaps)
	}
	if sum.ResumesObserved > sum.SwapsBack {
		t.Errorf("resumes observed %d for %d swaps back", sum.ResumesObserved, sum.SwapsBack)
	}
	if len(sum.Storms) == 0 || sum.Storms[0].Dropped == 0 || sum.Storms[0].Recovered == 0 {
		t.Errorf("storms %+v: want one that dropped sessions and recovered", sum.Storms)
	}
	if sum.Dials < 50+int64(sum.Storms[0].Dropped) {
		t.Errorf("%d dials for 50 gateways and %d dropped sessions", sum.Dials, sum.Storms[0].Dropped)
	}
	if sum.Reboots+sum.Garbles+sum.Timeouts+sum.Errors == 0 {
		t.Error("no modem faults injected")
	}
	if sum.Moves == 0 {
		t.Error("no gateway moved")
	}
	if len(lines) < 5 {
		t.Errorf("%d progress lines in a 8s run", len(lines))
	}
	// The verifier processed every acknowledged report, none refused as
	// forged or from an unknown device (a report resent after a dropped
	// session may count as replayed; a heartbeat queued behind a change
	// that was taken early counts as overtaken, as does the change's own
	// queued copy).
	handled := func(c map[string]float64) float64 { return c["accepted"] + c["replayed"] + c["overtaken"] }
	deadline := time.Now().Add(10 * time.Second)
	var counts map[string]float64
	for {
		counts = reportCounts(t, base)
		if handled(counts) >= float64(sum.Acked) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if handled(counts) < float64(sum.Acked) {
		t.Errorf("verifier counts %v, fleet acked %d", counts, sum.Acked)
	}
	for _, bad := range []string{"forged", "malformed", "unknown_device", "topic_mismatch", "unknown_card", "cross_tenant"} {
		if counts[bad] != 0 {
			t.Errorf("verifier counted %v %s reports", counts[bad], bad)
		}
	}

	// A second run reuses the enrolment.
	cfg.Duration, cfg.SwapRate, cfg.FaultRate, cfg.StormEvery, cfg.Progress = 2*time.Second, 0, 0, 0, nil
	sum2, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if e := sum2.Enrolment; e.Reused != 50 || e.Enrolled != 0 || e.Imported != 0 || e.TenantCreated {
		t.Errorf("second run enrolment %+v, want all 50 reused", e)
	}
	if sum2.Peak != 50 || sum2.Acked == 0 {
		t.Errorf("second run: peak %d, acked %d", sum2.Peak, sum2.Acked)
	}
}

package e2e

import (
	"testing"
	"time"
)

// Failure cases of the whole system with real processes: the SIM is
// swapped while the modem is rebooting (its port gone), and the verifier
// restarts while a swap happens. Each time the agent catches up and the
// network ends up right.
func TestSwapDuringRebootAndVerifierRestart(t *testing.T) {
	network, netURL := startNetwork(t)
	v := startVerifier(t, t.TempDir(), netURL)
	v.admin.must("POST", "/admin/v1/tenants", map[string]string{"id": "fleet"}, nil)
	r := newRig(t, v, network, "simcom", 7)
	r.enroll()
	begin := time.Now()
	r.run()
	r.seenAfter(r.home, begin, 20*time.Second)
	r.waitModemReady(1)

	// The modem reboots and, while its port is away, the SIM is swapped:
	// no URC can tell the agent; it must re-read the modem when the port
	// comes back.
	t0 := time.Now()
	r.control.must("POST", "/reboot", map[string]string{"downFor": "2s"}, nil)
	time.Sleep(300 * time.Millisecond)
	r.swap(r.other)
	r.waitModemReady(2)
	r.seenAfter(r.other, t0, 15*time.Second)
	eventually(t, 10*time.Second, "home card blocked after a swap during a reboot", func() bool { return r.blocked(r.home) })
	t.Logf("swap during a reboot → blocked at the network %v after the reboot began", time.Since(t0).Round(time.Millisecond))

	// The verifier stops (SIGTERM) and the card goes home while it is
	// away; when it is back, the agent's queued report resumes the card.
	v.proc.stop(15 * time.Second)
	if code := v.proc.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("verifier exit code %d after SIGTERM", code)
	}
	t1 := time.Now()
	r.swap(r.home)
	r.queuedAfter(r.home, t1, 5*time.Second)
	time.Sleep(time.Second) // the agent retries against a broker that is gone
	if !r.blocked(r.home) {
		t.Fatal("home card resumed while the verifier was down")
	}
	v.restart(t)
	r.seenAfter(r.home, t1, 20*time.Second)
	eventually(t, 10*time.Second, "home card resumed after the verifier came back", func() bool { return !r.blocked(r.home) })
	t.Logf("swap while the verifier was down → resumed at the network %v after the swap (1s of it with no verifier)", time.Since(t1).Round(time.Millisecond))
}

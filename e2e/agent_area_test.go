package e2e

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
)

// The story of area limits from the agent: the real agent on a Quectel
// firmware-sim modem (on a pseudo-terminal, attached to the simulated
// network) reports its serving cell and, with gnss.enabled, its GNSS fix.
// The card is bound to its gateway and to a 5 km circle around its home
// cell. The gateway is carried 30 km away: the modem reselects a far cell,
// the agent reports the cell change, and the verifier blocks the card at
// the network and alerts area_exit. The modem's GNSS then gets a fix back
// inside the circle while the serving cell is still the far one: the
// agent reports the fix, the verifier takes the report's location over
// its cell, and the card resumes. The agent's MQTT session runs over
// loopback, so its reports still arrive while the card is blocked.
func TestAgentAreaLimitCellAndGNSS(t *testing.T) {
	network, netURL := startNetwork(t)
	v := startVerifier(t, t.TempDir(), netURL)
	v.admin.must("POST", "/admin/v1/tenants", map[string]string{"id": "fleet"}, nil)

	cells := filepath.Join(t.TempDir(), "cells.csv")
	if err := os.WriteFile(cells, []byte(areaCells), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin["cardbind-verifier"], "admin", "--url", "http://"+v.httpAddr,
		"--token-file", filepath.Join(v.dataDir, "operator-token"), "cells", "import", "--file", cells).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "3 cells imported") {
		t.Fatalf("cells import: %v\n%s", err, out)
	}

	// The modem starts in the home cell (the default: 460-03, TAC 0x1A2B,
	// ECI 0x01A2B3C4, in the table at 31.2310, 121.4740).
	r := newRig(t, v, network, "quectel", 7)
	cfg := fmt.Sprintf(`state_dir = %q
[modem]
port = %q
reopen_max = "500ms"
[report]
heartbeat = "10m"
poll = "1s"
cell_change_interval = "1s"
min_backoff = "100ms"
max_backoff = "500ms"
flush_timeout = "2s"
[gnss]
enabled = true
[log]
level = "debug"
`, r.stateDir, r.link)
	if err := os.WriteFile(r.configPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r.admin.must("PUT", "/admin/v1/cards/"+r.home.iccid+"/binding", map[string]any{
		"imeis": []string{r.imei}, "mode": "block", "auto_resume": true,
		"area": map[string]any{"lat": 31.2310, "lon": 121.4740, "radius_m": 5000},
	}, nil)
	alerts := watchAlerts(t, v, "fleet")
	r.enroll()
	r.run()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s\nmodem log:\n%s", r.log(), r.modem.output())
		}
	})

	type cardView struct {
		Status struct {
			State        string             `json:"state"`
			LastLocation *protocol.Location `json:"last_location"`
		} `json:"status"`
	}
	card := func() cardView {
		var c cardView
		r.admin.must("GET", "/admin/v1/cards/"+r.home.iccid, nil, &c)
		return c
	}
	begin := time.Now()
	eventually(t, 20*time.Second, "the agent's report placing the card in its home cell", func() bool {
		l := card().Status.LastLocation
		return l != nil && l.Source == "cell" && math.Abs(l.Lat-31.2310) < 1e-6
	})
	t.Logf("agent started → card placed in its home cell in %v", time.Since(begin).Round(time.Millisecond))
	if c := card(); c.Status.State != string(protocol.CardActive) || r.blocked(r.home) {
		t.Fatalf("card at home: %s, blocked at the network %v", c.Status.State, r.blocked(r.home))
	}
	var gnss struct {
		On bool `json:"on"`
	}
	eventually(t, 10*time.Second, "the agent to turn the modem's GNSS on", func() bool {
		r.control.must("GET", "/gnss", nil, &gnss)
		return gnss.On
	})

	// (a) The gateway is carried 30 km north: the modem reselects a far
	// cell; GNSS is on but has no fix, so the cell decides.
	begin = time.Now()
	r.control.must("POST", "/cell", map[string]any{"mcc": "460", "mnc": "03", "tac": 6699, "eci": farECI}, nil)
	eventually(t, 15*time.Second, "card blocked at the network", func() bool { return r.blocked(r.home) })
	t.Logf("(a) modem moved 30 km → card blocked at the network in %v", time.Since(begin).Round(time.Millisecond))
	eventually(t, 10*time.Second, "area_exit alert", func() bool { return alerts.has(protocol.AlertAreaExit) })
	t.Logf("(a) modem moved 30 km → area_exit alert in %v (alerts via %s)", time.Since(begin).Round(time.Millisecond), alerts.via)
	if l := card().Status.LastLocation; l == nil || l.Source != "cell" || math.Abs(l.Lat-31.5) > 1e-6 {
		t.Errorf("last location after the move: %+v, want the far cell", l)
	}

	// (b) GNSS gets a fix back inside the circle, 60 m from home, while
	// the serving cell is still the far one: the fix wins.
	begin = time.Now()
	r.control.must("POST", "/gnss", map[string]any{"lat": 31.2315, "lon": 121.4742, "hdop": 1.1}, nil)
	eventually(t, 15*time.Second, "card resumed at the network", func() bool { return !r.blocked(r.home) })
	t.Logf("(b) GNSS fix inside the area → card resumed at the network in %v", time.Since(begin).Round(time.Millisecond))
	eventually(t, 10*time.Second, "resumed alert", func() bool { return alerts.has(protocol.AlertResumed) })
	t.Logf("(b) GNSS fix inside the area → resumed alert in %v", time.Since(begin).Round(time.Millisecond))
	c := card()
	if l := c.Status.LastLocation; l == nil || l.Source != "gnss" || math.Abs(l.Lat-31.2315) > 1e-6 || l.AccuracyM != 5.5 {
		t.Errorf("last location after the fix: %+v, want the GNSS fix ±5.5 m", l)
	}
	if c.Status.State != string(protocol.CardActive) {
		t.Errorf("card state %s after the fix, want active", c.Status.State)
	}
	var cur struct {
		ECI int `json:"eci"`
	}
	if r.control.must("GET", "/cell", nil, &cur); cur.ECI != farECI {
		t.Errorf("the modem left the far cell (ECI %d)", cur.ECI)
	}
	// The modem registers again in the far cell; its reports keep the fix,
	// and the card stays active.
	time.Sleep(2 * time.Second)
	if c := card(); c.Status.State != string(protocol.CardActive) || r.blocked(r.home) {
		t.Errorf("after the modem registered again in the far cell: %s, blocked %v", c.Status.State, r.blocked(r.home))
	}
	t.Logf("alerts: %v", alerts.types())
}

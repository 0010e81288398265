package e2e

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
)

// Cells of the area test, in 460-03 TAC 0x1a2b (6699): the card's home
// cell, a cell 30 km north, and one 4.4 km north whose 1.5 km range
// straddles the edge of a 5 km circle around home.
const (
	homeECI = 0x01a2b3c4 // 27440068
	farECI  = 27446300
	edgeECI = 27446301
)

const areaCells = `radio,mcc,net,area,cell,unit,lon,lat,range,samples,changeable,created,updated,averageSignal
LTE,460,3,6699,27440068,0,121.4740,31.2310,300,41,1,1700000000,1710000000,0
LTE,460,3,6699,27446300,0,121.4740,31.5000,500,12,1,1700000000,1710000000,0
LTE,460,3,6699,27446301,0,121.4740,31.2710,1500,4,1,1700000000,1710000000,0
LTE,460,3,6699,27446302,0,200.0,31.2,300,1,1,1700000000,1710000000,0
`

// The story of area limits, from both location sources. The operator
// imports the cell table with the admin CLI. The network's RADIUS
// accounting names the card's serving cell, which places the card; the
// customer binds it to its area through CAMARA (AREALIMIT without
// limitArea: 5 km around where it was last seen) and subscribes to
// area-change at its HTTPS sink. The card attaches in a cell 30 km away:
// it is blocked at the network, the tenant gets an area_exit alert over
// MQTT and the sink an area-change CloudEvent. Blocked, it opens no data
// session, so the gateway's agent (on another uplink) tells where it is:
// from a cell whose range straddles the edge nothing changes (too coarse
// to tell), from its home cell it resumes.
func TestAreaLimitAcrossTheEdge(t *testing.T) {
	sink := newCloudSink(t)
	n := startNetworkSideConf(t, false, "[camara]\ndefault_area_radius_m = 5000\n"+
		"[camara.webhook]\nallow_private_sinks = true\nca_file = \""+sink.caFile+"\"\n")
	v := n.v

	// The operator imports the cell table with the CLI; the bad row is
	// reported and skipped.
	cells := filepath.Join(t.TempDir(), "cells.csv")
	if err := os.WriteFile(cells, []byte(areaCells), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin["cardbind-verifier"], "admin", "--url", "http://"+v.httpAddr,
		"--token-file", filepath.Join(v.dataDir, "operator-token"), "cells", "import", "--file", cells).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "4 rows: 3 cells imported, 1 malformed rows skipped") || !strings.Contains(string(out), "line 5:") {
		t.Fatalf("cells import: %v\n%s", err, out)
	}

	// The card attaches in its home cell: the verifier places it there.
	if res := n.attachIn(gw1IMEI, homeECI); res.Result != "registered" {
		t.Fatalf("attach at home: %+v", res)
	}
	var card struct {
		Status struct {
			State        string             `json:"state"`
			LastLocation *protocol.Location `json:"last_location"`
		} `json:"status"`
	}
	eventually(t, 10*time.Second, "the card placed in its home cell", func() bool {
		v.admin.must("GET", "/admin/v1/cards/"+cardA, nil, &card)
		l := card.Status.LastLocation
		return l != nil && math.Abs(l.Lat-31.2310) < 1e-6 && l.Source == "cell"
	})

	// The customer binds the card to where it is and subscribes.
	var client struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	v.admin.must("POST", "/admin/v1/clients", map[string]any{"tenant": "acme", "scopes": []string{
		"iot-sim-fraud-prevention:bind", "iot-sim-fraud-prevention:query", "iot-sim-fraud-prevention-subscriptions:subscribe"}}, &client)
	customer := api{t: t, base: "http://" + v.httpAddr, token: clientToken(t, v, client.ID, client.Secret)}
	device := map[string]string{"phoneNumber": cardAMSISDN}
	var bound map[string]any
	if code := customer.do("POST", "/iot-sim-fraud-prevention/v0.1/bind", map[string]any{"device": device, "bindType": "AREALIMIT"}, &bound); code != 200 || bound["bound"] != true {
		t.Fatalf("bind AREALIMIT: %d %v", code, bound)
	}
	var q struct {
		AreaLimit struct {
			Status string `json:"areaLimitStatus"`
			Area   struct {
				Center struct{ Latitude, Longitude float64 } `json:"center"`
				Radius int                                   `json:"radius"`
			} `json:"limitArea"`
		} `json:"areaLimit"`
	}
	if code := customer.do("POST", "/iot-sim-fraud-prevention/v0.1/query", map[string]any{"device": device, "queryType": "AREALIMIT"}, &q); code != 200 ||
		q.AreaLimit.Status != "RESTRICTED" || q.AreaLimit.Area.Radius != 5000 || math.Abs(q.AreaLimit.Area.Center.Latitude-31.2310) > 1e-6 {
		t.Fatalf("query AREALIMIT: %d %+v", code, q)
	}
	var sub map[string]any
	if code := customer.do("POST", "/iot-sim-fraud-prevention-subscriptions/v0.1/subscriptions", map[string]any{
		"protocol": "HTTP", "sink": sink.srv.URL + "/area",
		"types":  []string{"org.camaraproject.iot-sim-fraud-prevention.v0.area-change"},
		"config": map[string]any{"subscriptionDetail": map[string]any{"device": device}},
	}, &sub); code != 201 {
		t.Fatalf("subscribe area-change: %d %v", code, sub)
	}
	alerts := watchAlerts(t, v, "acme")

	// The gateway is carried off with the card in it: it leaves the
	// network and turns up 30 km away. RADIUS alone gives it away.
	n.network.must("POST", "/v1/detach", map[string]string{"iccid": cardA, "imei": gw1IMEI}, nil)
	begin := time.Now()
	if res := n.attachIn(gw1IMEI, farECI); res.Result != "registered" {
		t.Fatalf("attach 30 km away: %+v", res)
	}
	eventually(t, 10*time.Second, "card blocked at the network", func() bool { return blockedAtNetwork(t, n.network, cardA) })
	t.Logf("attach outside the area → blocked at the network in %v", time.Since(begin).Round(time.Millisecond))
	eventually(t, 10*time.Second, "area_exit and blocked alerts", func() bool {
		return alerts.has(protocol.AlertAreaExit) && alerts.has(protocol.AlertBlocked)
	})
	eventually(t, 10*time.Second, "area-change CloudEvent", func() bool { return len(sink.ofType("/area", ".area-change")) == 1 })
	t.Logf("attach outside the area → area-change CloudEvent in %v", time.Since(begin).Round(time.Millisecond))
	ev := sink.ofType("/area", ".area-change")[0]
	if dev, _ := ev.Data["device"].(map[string]any); dev["phoneNumber"] != cardAMSISDN || ev.Data["subscriptionId"] != sub["id"] {
		t.Errorf("area-change event = %+v", ev)
	}
	if len(sink.ofType("/area", ".imei-change")) != 0 {
		t.Error("an imei-change event for an area exit")
	}

	// The gateway's agent reports from the straddling cell, then home.
	gw := enroll(t, v, "acme", gw1IMEI)
	cell := func(eci uint64) *protocol.Cell { return &protocol.Cell{MCC: "460", MNC: "03", Area: 6699, ID: eci} }
	gw.publish(gw.reportIn(gw1IMEI, cardA, cell(edgeECI)))
	eventually(t, 10*time.Second, "the edge report processed", func() bool {
		v.admin.must("GET", "/admin/v1/cards/"+cardA, nil, &card)
		l := card.Status.LastLocation
		return l != nil && math.Abs(l.Lat-31.2710) < 1e-6
	})
	if card.Status.State != string(protocol.CardBlocked) || !blockedAtNetwork(t, n.network, cardA) {
		t.Errorf("a location too coarse to tell changed the card: %s", card.Status.State)
	}
	begin = time.Now()
	gw.publish(gw.reportIn(gw1IMEI, cardA, cell(homeECI)))
	eventually(t, 10*time.Second, "card resumed at the network", func() bool { return !blockedAtNetwork(t, n.network, cardA) })
	t.Logf("report from the home cell → resumed at the network in %v", time.Since(begin).Round(time.Millisecond))
	eventually(t, 10*time.Second, "resumed alert", func() bool { return alerts.has(protocol.AlertResumed) })
	time.Sleep(300 * time.Millisecond)
	if got := len(sink.ofType("/area", ".area-change")); got != 1 {
		t.Errorf("%d area-change events, want 1 (the exit; a return is not an area change event)", got)
	}
}

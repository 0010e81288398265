package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
)

const (
	radiusSecret = "e2e-radius-secret"
	cardAMSISDN  = "+8613912345678"
)

// freeUDPAddr returns a loopback UDP address nobody listens on now.
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// networkSide is a verifier listening for RADIUS accounting and a
// simulated network that sends it (and, with eir, asks the verifier's
// EIR endpoint on every attach). No agent runs anywhere.
type networkSide struct {
	v       *verifier
	network api
}

func startNetworkSide(t *testing.T, eir bool) *networkSide {
	t.Helper()
	return startNetworkSideConf(t, eir, "")
}

// startNetworkSideConf is startNetworkSide with more verifier
// configuration (TOML tables) after the defaults.
func startNetworkSideConf(t *testing.T, eir bool, extraTOML string) *networkSide {
	t.Helper()
	netAddr, radiusAddr := freeAddr(t), freeUDPAddr(t)
	v := &verifier{dataDir: t.TempDir(), netURL: "http://" + netAddr, httpAddr: freeAddr(t), mqttAddr: freeAddr(t)}

	args := []string{"network", "--listen", netAddr, "--radius", radiusAddr, "--radius-secret", radiusSecret,
		"--interim", "1h", "--nas-id", "e2e-pgw"}
	if eir {
		args = append(args, "--eir", "http://"+v.httpAddr)
	}
	np := start(t, "firmware-sim", args...)
	waitHTTP(t, v.netURL+"/healthz", np)
	network := api{t: t, base: v.netURL}

	conf := filepath.Join(t.TempDir(), "verifier.toml")
	toml := fmt.Sprintf(`data_dir = %q
[http]
listen = %q
[mqtt]
listen = %q
[enforce]
adapter = "simnet"
simnet_url = %q
[radius]
listen = %q
clients = [{ address = "127.0.0.1", secret = %q }]
`, v.dataDir, v.httpAddr, v.mqttAddr, v.netURL, radiusAddr, radiusSecret) + extraTOML
	if err := os.WriteFile(conf, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	v.proc = start(t, "cardbind-verifier", "serve", "--config", conf)
	waitHTTP(t, "http://"+v.httpAddr+"/readyz", v.proc)
	v.admin = api{t: t, base: "http://" + v.httpAddr, token: strings.TrimSpace(readFile(t, v.dataDir+"/operator-token"))}

	// Card A: in the operator's network and in tenant acme's inventory,
	// bound to gateway 1 (block, auto-resume).
	network.must("POST", "/v1/cards", map[string]string{"iccid": cardA, "imsi": cardAIMS, "msisdn": cardAMSISDN}, nil)
	v.admin.must("POST", "/admin/v1/tenants", map[string]string{"id": "acme"}, nil)
	v.admin.must("POST", "/admin/v1/cards/import?format=csv", "iccid,tenant,imsi,msisdn\n"+cardA+",acme,"+cardAIMS+","+cardAMSISDN+"\n", nil)
	v.admin.must("PUT", "/admin/v1/cards/"+cardA+"/binding", map[string]any{"imeis": []string{gw1IMEI}}, nil)
	return &networkSide{v: v, network: network}
}

// attachResult is the network's answer to an attach.
type attachResult struct {
	Result          string `json:"result"`
	Cause           string `json:"cause"`
	IP              string `json:"ip"`
	EquipmentStatus string `json:"equipmentStatus"`
}

// attach puts card A in a device with the given IMEI, in a cell: no modem,
// no agent, only the network sees it.
func (n *networkSide) attach(imei string) attachResult {
	return n.attachIn(imei, 0x01a2b3c4)
}

// attachIn is attach in the E-UTRAN cell 460-03, TAC 0x1a2b, with this ECI.
func (n *networkSide) attachIn(imei string, eci int) attachResult {
	var res attachResult
	n.network.must("POST", "/v1/cards/"+cardA+"/attach", map[string]any{"imei": imei,
		"cell": map[string]any{"mcc": "460", "mnc": "03", "tac": 0x1a2b, "eci": eci}}, &res)
	return res
}

// verifierCard is the part of the verifier's card the tests read.
type verifierCard struct {
	IPv4   string `json:"ipv4"`
	Status struct {
		State         string `json:"state"`
		LastIMEI      string `json:"last_imei"`
		LastSource    string `json:"last_source"`
		OffendingIMEI string `json:"offending_imei"`
	} `json:"status"`
}

func (n *networkSide) card() verifierCard {
	var c verifierCard
	n.v.admin.must("GET", "/admin/v1/cards/"+cardA, nil, &c)
	return c
}

// The story of issue 7: a card moved into a foreign device that runs no
// agent is blocked through the network's RADIUS accounting alone, and the
// tenant is alerted.
func TestRADIUSAloneBlocksCardInForeignDevice(t *testing.T) {
	n := startNetworkSide(t, false)
	alerts := watchAlerts(t, n.v, "acme")

	// In its own gateway: the Start's 3GPP-IMEISV matches, and the
	// verifier learns the address the network assigned.
	res := n.attach(gw1IMEI)
	if res.Result != "registered" {
		t.Fatalf("attach in the gateway: %+v", res)
	}
	eventually(t, 10*time.Second, "the gateway's session seen by the verifier", func() bool {
		c := n.card()
		return c.IPv4 == res.IP && c.Status.LastSource == "radius" && c.Status.LastIMEI == gw1IMEI
	})
	if c := n.card(); c.Status.State != string(protocol.CardActive) {
		t.Fatalf("card in its own gateway: state %s", c.Status.State)
	}

	// A thief puts the card in a phone.
	begin := time.Now()
	if res := n.attach(phone); res.Result != "registered" {
		t.Fatalf("attach in the phone: %+v", res)
	}
	eventually(t, 10*time.Second, "card blocked at the network", func() bool { return blockedAtNetwork(t, n.network, cardA) })
	t.Logf("attach in a foreign device → blocked at the network in %v (RADIUS only)", time.Since(begin).Round(time.Millisecond))
	eventually(t, 10*time.Second, "mismatch and blocked alerts", func() bool {
		return alerts.has(protocol.AlertMismatch) && alerts.has(protocol.AlertBlocked)
	})
	t.Logf("attach in a foreign device → alert at %s in %v", alerts.via, time.Since(begin).Round(time.Millisecond))
	alerts.mu.Lock()
	for _, a := range alerts.alerts {
		if a.Source != protocol.SourceRADIUS || a.ObservedIMEI != phone {
			t.Errorf("alert %s: source %s, IMEI %s; want radius, %s", a.Type, a.Source, a.ObservedIMEI, phone)
		}
	}
	alerts.mu.Unlock()
	c := n.card()
	if c.Status.State != string(protocol.CardBlocked) || c.Status.OffendingIMEI != phone {
		t.Errorf("verifier card: %+v", c.Status)
	}
	// The block detached the card, and the network's Stop cleared its
	// address at the verifier.
	eventually(t, 10*time.Second, "the Stop clears the card's address", func() bool { return n.card().IPv4 == "" })

	// With RADIUS alone, the card back in its gateway is not seen: a
	// blocked card opens no data session, so it sends no accounting.
	if res := n.attach(gw1IMEI); res.Result != "denied" {
		t.Errorf("blocked card attached in the gateway: %+v", res)
	}
	if m := metrics(t, n.v); !strings.Contains(m, "cardbind_radius") {
		t.Errorf("no RADIUS metrics:\n%s", m)
	}
	var acct map[string]uint64
	n.network.must("GET", "/v1/accounting", nil, &acct)
	if acct["answered"] < 4 || acct["dropped"] != 0 {
		t.Errorf("network's accounting: %v; want Start, Stop, Start, Stop answered, none dropped", acct)
	}
	t.Logf("network's accounting: %v", acct)
}

// The network's door: with the simulated network asking the verifier's
// EIR endpoint on every attach, the attach in a foreign device is refused
// (BLACKLISTED) and the card blocked and alerted; back in its gateway the
// check sees the right equipment, the card resumes, and the device
// attaches again, its RADIUS Start giving the verifier its address. No
// agent anywhere.
func TestEIRRefusesForeignDeviceAndResumes(t *testing.T) {
	n := startNetworkSide(t, true)
	alerts := watchAlerts(t, n.v, "acme")

	res := n.attach(gw1IMEI)
	if res.Result != "registered" || res.EquipmentStatus != "WHITELISTED" {
		t.Fatalf("attach in the gateway: %+v", res)
	}
	eventually(t, 10*time.Second, "the gateway's session at the verifier", func() bool { return n.card().IPv4 == res.IP })

	begin := time.Now()
	res = n.attach(phone)
	if res.Result != "denied" || res.EquipmentStatus != "BLACKLISTED" {
		t.Fatalf("attach in the phone: %+v, want denied by the EIR", res)
	}
	t.Logf("attach in a foreign device refused at the door in %v", time.Since(begin).Round(time.Millisecond))
	if c := n.card(); c.Status.State != string(protocol.CardBlocked) || c.Status.LastSource != "eir" || c.Status.OffendingIMEI != phone {
		t.Errorf("verifier card after the refused attach: %+v", c.Status)
	}
	eventually(t, 10*time.Second, "card blocked at the network", func() bool { return blockedAtNetwork(t, n.network, cardA) })
	eventually(t, 10*time.Second, "mismatch and blocked alerts", func() bool {
		return alerts.has(protocol.AlertMismatch) && alerts.has(protocol.AlertBlocked)
	})
	t.Logf("attach in a foreign device → alert at %s in %v", alerts.via, time.Since(begin).Round(time.Millisecond))

	// Back in the gateway: the first attempt resumes the card at the
	// verifier (the EIR says WHITELISTED) but may still meet the
	// network's block until the enforcement lifts it; the device retries.
	begin = time.Now()
	eventually(t, 10*time.Second, "the gateway attaches again", func() bool {
		r := n.attach(gw1IMEI)
		if r.EquipmentStatus != "WHITELISTED" {
			t.Fatalf("gateway attach: %+v", r)
		}
		res = r
		return r.Result == "registered"
	})
	t.Logf("back in the gateway → attached again in %v", time.Since(begin).Round(time.Millisecond))
	eventually(t, 10*time.Second, "resumed alert", func() bool { return alerts.has(protocol.AlertResumed) })
	eventually(t, 10*time.Second, "the new session's address at the verifier", func() bool {
		c := n.card()
		return c.IPv4 == res.IP && c.Status.State == string(protocol.CardActive)
	})
	want := []protocol.AlertType{protocol.AlertMismatch, protocol.AlertBlocked, protocol.AlertResumed}
	if got := alerts.types(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("alerts = %v, want %v", got, want)
	}
}

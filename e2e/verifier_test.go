package e2e

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/cardbind/cardbind/protocol"
)

const (
	cardA    = "89860318640220133897"
	cardAIMS = "460031234567890"
	gw1IMEI  = "356938035643809"
	phone    = "490154203237518"
)

// verifier is a running cardbind-verifier with its simulated network.
type verifier struct {
	proc     *proc
	admin    api
	network  api
	mqttAddr string
	httpAddr string
	dataDir  string
	netURL   string
}

func startNetwork(t *testing.T) (api, string) {
	addr := freeAddr(t)
	p := start(t, "firmware-sim", "network", "--listen", addr)
	waitHTTP(t, "http://"+addr+"/healthz", p)
	return api{t: t, base: "http://" + addr}, "http://" + addr
}

func startVerifier(t *testing.T, dataDir, netURL string) *verifier {
	v := &verifier{dataDir: dataDir, netURL: netURL, httpAddr: freeAddr(t), mqttAddr: freeAddr(t)}
	v.restart(t)
	return v
}

func (v *verifier) restart(t *testing.T) {
	v.proc = start(t, "cardbind-verifier", "serve", "--data-dir", v.dataDir, "--http", v.httpAddr,
		"--mqtt", v.mqttAddr, "--enforce", "simnet", "--simnet-url", v.netURL)
	waitHTTP(t, "http://"+v.httpAddr+"/readyz", v.proc)
	token := readFile(t, v.dataDir+"/operator-token")
	v.admin = api{t: t, base: "http://" + v.httpAddr, token: strings.TrimSpace(token)}
}

// device is a gateway enrolled with the verifier, played by a paho client
// that signs its own reports.
type device struct {
	t      *testing.T
	id     string
	key    ed25519.PrivateKey
	client mqtt.Client
	seq    uint64
	creds  protocol.EnrollResponse
}

func enroll(t *testing.T, v *verifier, tenant, imei string) *device {
	var tok struct{ Token string }
	v.admin.must("POST", "/admin/v1/tenants/"+tenant+"/enrollment-tokens", map[string]string{"ttl": "1h"}, &tok)
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	req := protocol.EnrollRequest{Version: 1, Token: tok.Token, PublicKey: pub, IMEI: protocol.IMEI(imei)}
	d := &device{t: t, key: key}
	v.admin.must("POST", protocol.EnrollPath, req, &d.creds)
	d.id = d.creds.DeviceID
	d.connect(v.mqttAddr)
	return d
}

func (d *device) connect(addr string) {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(d.id).
		SetUsername(d.creds.Username).SetPassword(d.creds.Password).SetProtocolVersion(4).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	d.client = mqtt.NewClient(opts)
	if tok := d.client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		d.t.Fatalf("device %s connect: %v", d.id, tok.Error())
	}
	d.t.Cleanup(func() { d.client.Disconnect(100) })
}

// report builds a signed report of the device holding card in imei.
func (d *device) report(imei, iccid string) []byte { return d.reportIn(imei, iccid, nil) }

// reportIn is report with the modem's serving cell.
func (d *device) reportIn(imei, iccid string, cell *protocol.Cell) []byte {
	d.seq++
	r := &protocol.Report{Version: 1, DeviceID: d.id, Seq: d.seq, Time: time.Now().UTC(), Reason: protocol.ReasonChange,
		IMEI: protocol.IMEI(imei), SIM: protocol.SIMPresent, ICCID: protocol.ICCID(iccid),
		Registration: protocol.Registration{State: protocol.RegHome, Stat: 1, Cell: cell}}
	if iccid == "" {
		r.SIM = protocol.SIMAbsent
	}
	protocol.SignReport(d.key, r)
	b, err := protocol.EncodeReport(r)
	if err != nil {
		d.t.Fatal(err)
	}
	return b
}

// publish sends a payload at QoS 1 on the device's report topic and waits
// for the PUBACK.
func (d *device) publish(payload []byte) {
	d.t.Helper()
	tok := d.client.Publish(protocol.ReportTopic(d.id), 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		d.t.Fatalf("publish: %v", tok.Error())
	}
}

// alertWatcher collects alerts a tenant subscriber receives: through
// mosquitto_sub when it is installed (the interoperability the design
// promises), else through paho.
type alertWatcher struct {
	mu     sync.Mutex
	alerts []*protocol.Alert
	via    string
}

func watchAlerts(t *testing.T, v *verifier, tenant string) *alertWatcher {
	var sub struct {
		Username    string `json:"username"`
		Password    string `json:"password"`
		TopicFilter string `json:"topic_filter"`
	}
	v.admin.must("POST", "/admin/v1/tenants/"+tenant+"/subscribers", map[string]string{"name": "e2e"}, &sub)
	w := &alertWatcher{}
	host, port, _ := net.SplitHostPort(v.mqttAddr)
	if path, err := exec.LookPath("mosquitto_sub"); err == nil {
		w.via = "mosquitto_sub"
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, path, "-h", host, "-p", port, "-u", sub.Username, "-P", sub.Password,
			"-q", "1", "-i", "e2e-"+tenant, "-c", "-t", sub.TopicFilter)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); _ = cmd.Wait() })
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				w.add(t, sc.Bytes())
			}
		}()
		time.Sleep(500 * time.Millisecond) // let it subscribe
		return w
	}
	w.via = "paho (mosquitto_sub not installed)"
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + v.mqttAddr).SetClientID("e2e-" + tenant).
		SetUsername(sub.Username).SetPassword(sub.Password).SetProtocolVersion(4)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	if tok := c.Subscribe(sub.TopicFilter, 1, func(_ mqtt.Client, m mqtt.Message) { w.add(t, m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return w
}

func (w *alertWatcher) add(t *testing.T, payload []byte) {
	a, err := protocol.DecodeAlert(payload)
	if err != nil {
		t.Errorf("alert does not decode: %v: %s", err, payload)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.alerts = append(w.alerts, a)
}

func (w *alertWatcher) types() []protocol.AlertType {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []protocol.AlertType
	for _, a := range w.alerts {
		out = append(out, a.Type)
	}
	return out
}

func (w *alertWatcher) has(t protocol.AlertType) bool {
	for _, x := range w.types() {
		if x == t {
			return true
		}
	}
	return false
}

type netCard struct {
	Blocked bool `json:"blocked"`
}

func blockedAtNetwork(t *testing.T, n api, iccid string) bool {
	var c netCard
	n.must("GET", "/v1/cards/"+iccid, nil, &c)
	return c.Blocked
}

// setup starts the network and the verifier, creates tenant acme with
// card A bound to gateway 1, and enrols gateway 1.
func setup(t *testing.T) (*verifier, api, *device) {
	network, netURL := startNetwork(t)
	network.must("POST", "/v1/cards", map[string]string{"iccid": cardA, "imsi": cardAIMS, "msisdn": "+8613912345678"}, nil)
	v := startVerifier(t, t.TempDir(), netURL)
	v.admin.must("POST", "/admin/v1/tenants", map[string]string{"id": "acme"}, nil)
	var sum map[string]any
	v.admin.do("POST", "/admin/v1/cards/import?format=csv", "iccid,tenant,imsi,msisdn\n"+cardA+",acme,"+cardAIMS+",+8613912345678\n", nil)
	v.admin.must("GET", "/admin/v1/cards/"+cardA, nil, &sum)
	v.admin.must("PUT", "/admin/v1/cards/"+cardA+"/binding", map[string]any{"imeis": []string{gw1IMEI}}, nil)
	return v, network, enroll(t, v, "acme", gw1IMEI)
}

// The story of issue "verifier core": a signed report with a foreign IMEI
// blocks the card at the network and alerts the tenant; the right IMEI
// resumes it; a forged and a replayed report change nothing.
func TestSwapBlocksAtNetworkAndAlerts(t *testing.T) {
	v, network, gw := setup(t)
	alerts := watchAlerts(t, v, "acme")
	t.Logf("alerts watched through %s", alerts.via)

	gw.publish(gw.report(gw1IMEI, cardA))
	eventually(t, 5*time.Second, "first report processed", func() bool {
		var c struct {
			Status struct {
				LastIMEI string `json:"last_imei"`
			}
		}
		v.admin.must("GET", "/admin/v1/cards/"+cardA, nil, &c)
		return c.Status.LastIMEI == gw1IMEI
	})
	if blockedAtNetwork(t, network, cardA) {
		t.Fatal("card blocked while in its own gateway")
	}

	// The card is put into another device: the gateway's modem now
	// reports a foreign IMEI (module swapped), signed and genuine.
	start := time.Now()
	foreign := gw.report(phone, cardA)
	gw.publish(foreign)
	eventually(t, 5*time.Second, "card blocked at the network", func() bool { return blockedAtNetwork(t, network, cardA) })
	t.Logf("swap → blocked at the network in %v", time.Since(start).Round(time.Millisecond))
	eventually(t, 5*time.Second, "blocked alert at the subscriber", func() bool { return alerts.has(protocol.AlertBlocked) })
	t.Logf("swap → alert at %s in %v", alerts.via, time.Since(start).Round(time.Millisecond))

	gw.publish(gw.report(gw1IMEI, cardA))
	eventually(t, 5*time.Second, "card resumed at the network", func() bool { return !blockedAtNetwork(t, network, cardA) })
	eventually(t, 5*time.Second, "resumed alert", func() bool { return alerts.has(protocol.AlertResumed) })
	before := len(fullHistory(t, v, cardA))

	// Replayed: the genuine foreign-IMEI report, published again.
	gw.publish(foreign)
	// Forged: a report in the gateway's name signed with another key.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	forger := &device{t: t, id: gw.id, key: other, seq: gw.seq}
	gw.publish(forger.report(phone, cardA))
	gw.seq = forger.seq

	// A genuine report after them shows they were processed (in order) and
	// ignored.
	gw.publish(gw.report(gw1IMEI, cardA))
	eventually(t, 5*time.Second, "metrics show the refused reports", func() bool {
		m := metrics(t, v)
		return strings.Contains(m, `cardbind_reports_total{outcome="replayed"} 1`) && strings.Contains(m, `cardbind_reports_total{outcome="forged"} 1`)
	})
	if blockedAtNetwork(t, network, cardA) {
		t.Error("forged or replayed report blocked the card")
	}
	m := metrics(t, v)
	for _, series := range []string{`cardbind_decisions_total{decision="mismatch"} 1`, `cardbind_mqtt_connections `,
		`cardbind_outbox_due{outbox="enforce"}`, `cardbind_enforcement_seconds_count{action="block",result="ok"} 1`} {
		if !strings.Contains(m, series) {
			t.Errorf("/metrics has no %s", series)
		}
	}
	if after := len(fullHistory(t, v, cardA)); after != before {
		t.Errorf("history grew from %d to %d entries after forged and replayed reports", before, after)
	}
	// The module swap also flags the gateway: it enrolled with another IMEI.
	want := []protocol.AlertType{protocol.AlertMismatch, protocol.AlertBlocked, protocol.AlertDeviceFlagged, protocol.AlertResumed}
	if got := alerts.types(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("alerts = %v, want %v", got, want)
	}
}

// An operator's command reaches the device on its command topic, signed
// with the key the device got at enrolment.
func TestCommandReachesDevice(t *testing.T) {
	v, _, gw := setup(t)
	got := make(chan []byte, 1)
	tok := gw.client.Subscribe(protocol.CommandTopic(gw.id), 1, func(_ mqtt.Client, m mqtt.Message) {
		select {
		case got <- m.Payload():
		default:
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe to the command topic: %v", tok.Error())
	}
	v.admin.must("POST", "/admin/v1/devices/"+gw.id+"/commands", map[string]string{"kind": "report_now"}, nil)
	select {
	case payload := <-got:
		c, err := protocol.DecodeCommand(payload)
		if err != nil {
			t.Fatal(err)
		}
		if err := protocol.VerifyCommand(gw.creds.CommandKey, c); err != nil || c.Kind != protocol.CommandReportNow {
			t.Errorf("command %+v: %v", c, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no command on the device's topic")
	}
	// Another device's command topic is not this device's to read.
	other := protocol.CommandTopic("gw-someone-else")
	st := gw.client.Subscribe(other, 1, func(mqtt.Client, mqtt.Message) {}).(*mqtt.SubscribeToken)
	if !st.WaitTimeout(10 * time.Second) {
		t.Fatal("no SUBACK for another device's command topic")
	}
	if code, ok := st.Result()[other]; st.Error() == nil && (!ok || code != 0x80) {
		t.Errorf("subscription to another device's command topic answered %d (present %v), want 0x80 refused", code, ok)
	}
}

func metrics(t *testing.T, v *verifier) string {
	resp, err := httpGet("http://" + v.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/cardbind/cardbind/protocol"
)

// admin calls the verifier's HTTP API with the operator credential.
type admin struct {
	base  string
	token string
	hc    *http.Client
}

// do sends body (a string as is, anything else as JSON) and decodes a JSON
// answer into out. Answers of 300 and above are errors.
func (a *admin) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: status %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(data))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}

// Identifiers of simulated gateway i and of the card that lives in it.
func gatewayIMEI(i int) string { return protocol.WithCheckDigit(fmt.Sprintf("35693803%06d", i)) }
func cardICCID(i int) string   { return protocol.WithCheckDigit(fmt.Sprintf("898603%013d", i)) }
func cardIMSI(i int) string    { return fmt.Sprintf("46003%010d", i) }
func cardMSISDN(i int) string  { return fmt.Sprintf("+86139%08d", i) }

// gateway is a simulated gateway: an enrolled device with its own key
// and MQTT connection, holding one card.
type gateway struct {
	id    string
	imei  string
	iccid string
	key   ed25519.PrivateKey
	creds protocol.EnrollResponse
	seq   uint64 // last sequence number used

	client mqtt.Client
}

// report returns a new signed report of the gateway's modem (imei)
// holding card iccid.
func (g *gateway) report(imei, iccid string, reason protocol.ReportReason, now time.Time) ([]byte, error) {
	g.seq++
	r := &protocol.Report{Version: protocol.Version, DeviceID: g.id, Seq: g.seq, Time: now.UTC(), Reason: reason,
		IMEI: protocol.IMEI(imei), SIM: protocol.SIMPresent, ICCID: protocol.ICCID(iccid),
		Registration: protocol.Registration{State: protocol.RegHome, Stat: 1, Tech: "eutran"},
		Signal:       &protocol.Signal{RSSIdBm: -71}}
	protocol.SignReport(g.key, r)
	b, err := protocol.EncodeReport(r)
	if err != nil {
		return nil, fmt.Errorf("gateway %s: encode report: %w", g.id, err)
	}
	return b, nil
}

// heartbeats returns n signed heartbeats of the gateway in its own card,
// with consecutive sequence numbers.
func (g *gateway) heartbeats(n int) ([][]byte, error) {
	out := make([][]byte, n)
	now := time.Now()
	for i := range out {
		b, err := g.report(g.imei, g.iccid, protocol.ReasonHeartbeat, now)
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

// fleet is the tenant's gateways: load gateways, each in its own bound
// card, and a swap pair: card swapCard bound to home, reported by foreign.
type fleet struct {
	tenant  string
	load    []*gateway
	home    *gateway
	foreign *gateway
}

// setupFleet creates a tenant with n+1 cards, each bound to its gateway's
// IMEI (inventory import with bindings), and enrols n+2 gateways through
// one-time tokens and the enrolment endpoint, as agents do.
func setupFleet(ctx context.Context, a *admin, tenant string, n int) (*fleet, error) {
	if err := a.do(ctx, http.MethodPost, "/admin/v1/tenants", map[string]string{"id": tenant}, nil); err != nil {
		return nil, err
	}
	var csv strings.Builder
	csv.WriteString("iccid,tenant,imsi,msisdn,imei\n")
	for i := range n + 1 {
		fmt.Fprintf(&csv, "%s,%s,%s,%s,%s\n", cardICCID(i), tenant, cardIMSI(i), cardMSISDN(i), gatewayIMEI(i))
	}
	if err := importCards(ctx, a, csv.String(), n+1); err != nil {
		return nil, err
	}
	f := &fleet{tenant: tenant}
	gws := make([]*gateway, n+2)
	errs := make(chan error, len(gws))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i := range gws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			g, err := enroll(ctx, a, tenant, gatewayIMEI(i))
			if err != nil {
				errs <- err
				return
			}
			g.iccid = cardICCID(min(i, n)) // the foreign gateway (n+1) reports the swap card
			gws[i] = g
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	f.load, f.home, f.foreign = gws[:n], gws[n], gws[n+1]
	return f, nil
}

func importCards(ctx context.Context, a *admin, csv string, want int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/admin/v1/cards/import?format=csv", strings.NewReader(csv))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("import: status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var line struct {
			Summary *struct {
				Bound  int `json:"bound"`
				Errors int `json:"errors"`
			} `json:"summary"`
			Error string `json:"error"`
			Line  int    `json:"line"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("import: %w", err)
		}
		if line.Error != "" {
			return fmt.Errorf("import: line %d: %s", line.Line, line.Error)
		}
		if line.Summary != nil {
			if line.Summary.Errors > 0 || line.Summary.Bound != want {
				return fmt.Errorf("import: %d bound of %d, %d errors", line.Summary.Bound, want, line.Summary.Errors)
			}
			return nil
		}
	}
	return fmt.Errorf("import: no summary: %v", sc.Err())
}

// enroll enrols a gateway with the given IMEI: an operator issues a
// one-time token, the gateway makes its key and calls the enrolment
// endpoint.
func enroll(ctx context.Context, a *admin, tenant, imei string) (*gateway, error) {
	var tok struct{ Token string }
	if err := a.do(ctx, http.MethodPost, "/admin/v1/tenants/"+tenant+"/enrollment-tokens", map[string]string{"ttl": "1h"}, &tok); err != nil {
		return nil, err
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	g := &gateway{imei: imei, key: key}
	dev := &admin{base: a.base, hc: a.hc} // the enrolment endpoint takes no operator credential
	req := protocol.EnrollRequest{Version: protocol.Version, Token: tok.Token, PublicKey: pub, IMEI: protocol.IMEI(imei)}
	if err := dev.do(ctx, http.MethodPost, protocol.EnrollPath, req, &g.creds); err != nil {
		return nil, err
	}
	g.id = g.creds.DeviceID
	return g, nil
}

// connect opens an MQTT 3.1.1 connection with the agent's settings (clean
// session, no ordering of callbacks) and the given credentials.
func connect(addr, clientID, user, pass string) (mqtt.Client, error) {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetUsername(user).SetPassword(pass).SetProtocolVersion(4).
		SetCleanSession(true).SetOrderMatters(false).SetAutoReconnect(false).
		SetConnectTimeout(10 * time.Second).SetKeepAlive(60 * time.Second).
		SetWriteTimeout(30 * time.Second)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(20 * time.Second) {
		return nil, fmt.Errorf("mqtt connect %s: timeout", clientID)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("mqtt connect %s: %w", clientID, err)
	}
	return c, nil
}

// connectAll connects every gateway to addr with its own credentials (the
// bare broker takes any).
func connectAll(ctx context.Context, addr string, gws []*gateway) error {
	sem := make(chan struct{}, 8)
	errs := make(chan error, len(gws))
	var wg sync.WaitGroup
	for _, g := range gws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if ctx.Err() != nil {
				errs <- ctx.Err()
				return
			}
			c, err := connect(addr, g.id, g.creds.Username, g.creds.Password)
			if err != nil {
				errs <- err
				return
			}
			g.client = c
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func disconnectAll(gws []*gateway) {
	var wg sync.WaitGroup
	for _, g := range gws {
		if g.client == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.client.Disconnect(200)
			g.client = nil
		}()
	}
	wg.Wait()
}

// waitToken waits for a publish's PUBACK.
func waitToken(t mqtt.Token) error {
	if !t.WaitTimeout(60 * time.Second) {
		return fmt.Errorf("no PUBACK within 60s")
	}
	return t.Error()
}

// publishAll publishes each gateway's payloads in order at QoS 1 on its
// report topic, keeping at most window publishes without PUBACK per
// connection, and returns when every publish has its PUBACK.
func publishAll(ctx context.Context, gws []*gateway, payloads [][][]byte, window int) error {
	errs := make(chan error, len(gws))
	var wg sync.WaitGroup
	for i, g := range gws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := protocol.ReportTopic(g.id)
			inflight := make([]mqtt.Token, 0, window)
			for _, p := range payloads[i] {
				if len(inflight) == window {
					if err := waitToken(inflight[0]); err != nil {
						errs <- fmt.Errorf("gateway %s: %w", g.id, err)
						return
					}
					inflight = inflight[1:]
				}
				if ctx.Err() != nil {
					errs <- ctx.Err()
					return
				}
				inflight = append(inflight, g.client.Publish(topic, 1, false, p))
			}
			for _, t := range inflight {
				if err := waitToken(t); err != nil {
					errs <- fmt.Errorf("gateway %s: %w", g.id, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// signHeartbeats makes perGateway heartbeats for every gateway, signing on
// all cores.
func signHeartbeats(gws []*gateway, perGateway int) ([][][]byte, int, error) {
	out := make([][][]byte, len(gws))
	errs := make(chan error, len(gws))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, g := range gws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			p, err := g.heartbeats(perGateway)
			if err != nil {
				errs <- err
				return
			}
			out[i] = p
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, 0, err
	}
	size := 0
	if len(out) > 0 && len(out[0]) > 0 {
		size = len(out[0][0])
	}
	return out, size, nil
}

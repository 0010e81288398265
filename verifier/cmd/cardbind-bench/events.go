package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cardbind/cardbind/firmware-sim/sink"
)

// The CAMARA subscription API's paths and names the bench uses (see
// docs/camara-api.md).
const (
	subscriptionsPath = "/iot-sim-fraud-prevention-subscriptions/v0.1/subscriptions"
	imeiChangeType    = "org.camaraproject.iot-sim-fraud-prevention.v0.imei-change"
	scopeSubscribe    = "iot-sim-fraud-prevention-subscriptions:subscribe"
	scopeSubRead      = "iot-sim-fraud-prevention-subscriptions:read"
	sinkToken         = "bench-sink-token"
)

// sinkEvents is a customer's HTTPS CloudEvents endpoint (firmware-sim
// sink) that notes when each IMEI-change event arrives.
type sinkEvents struct {
	s  *sink.Sink
	ch chan time.Time
}

func startSink() (*sinkEvents, error) {
	se := &sinkEvents{ch: make(chan time.Time, 4096)}
	s, err := sink.Start("127.0.0.1:0", sink.Config{Token: sinkToken, OnEvent: func(e sink.Event) {
		at := time.Now()
		if e.Type != imeiChangeType {
			return
		}
		select {
		case se.ch <- at:
		default:
		}
	}})
	if err != nil {
		return nil, err
	}
	se.s = s
	return se, nil
}

func (se *sinkEvents) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = se.s.Close(ctx)
}

// drain forgets events that arrived so far.
func (se *sinkEvents) drain() {
	for {
		select {
		case <-se.ch:
		default:
			return
		}
	}
}

// waitEvent waits for the next IMEI-change event.
func (se *sinkEvents) waitEvent(ctx context.Context) (time.Time, error) {
	select {
	case at := <-se.ch:
		return at, nil
	case <-ctx.Done():
		return time.Time{}, fmt.Errorf("imei-change CloudEvent: %w", ctx.Err())
	}
}

// errNoSubscriptions means the verifier does not serve the CAMARA
// subscriptions API.
var errNoSubscriptions = fmt.Errorf("the verifier does not serve %s", subscriptionsPath)

// subscribeIMEIChange subscribes the sink to IMEI changes of the card
// with phone number msisdn, as a tenant's backend would: an API client
// made by the operator, a client-credentials token, a subscription.
func subscribeIMEIChange(ctx context.Context, a *admin, tenant, msisdn string, se *sinkEvents) error {
	var client struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	if err := a.do(ctx, http.MethodPost, "/admin/v1/clients", map[string]any{"tenant": tenant, "name": "bench",
		"scopes": []string{scopeSubscribe, scopeSubRead}}, &client); err != nil {
		return err
	}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {scopeSubscribe}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.SetBasicAuth(client.ID, client.Secret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("token: status %d: %s", resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		return fmt.Errorf("token: %w", err)
	}
	body := map[string]any{
		"protocol": "HTTP",
		"sink":     se.s.URL(),
		"types":    []string{imeiChangeType},
		"sinkCredential": map[string]string{"credentialType": "ACCESSTOKEN", "accessToken": sinkToken,
			"accessTokenExpiresUtc": time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339), "accessTokenType": "bearer"},
		"config": map[string]any{"subscriptionDetail": map[string]any{"device": map[string]string{"phoneNumber": msisdn}},
			"initialEvent": false},
	}
	api := &admin{base: a.base, token: tok.AccessToken, hc: a.hc}
	err = api.do(ctx, http.MethodPost, subscriptionsPath, body, nil)
	if err != nil && strings.Contains(err.Error(), "404 page not found") {
		return fmt.Errorf("%w: %w", errNoSubscriptions, err)
	}
	return err
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/cardbind/cardbind/protocol"
)

// alerts watches a tenant's alerts over MQTT, as a subscriber would: it
// creates an alert-subscriber credential through the admin API (or uses
// the one given) and prints each alert on one line until interrupted.
func (c *adminClient) alerts(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("alerts", flag.ContinueOnError)
	tenant := fs.String("tenant", "", "tenant whose alerts to watch (required)")
	user := fs.String("username", "", "existing subscriber credential (default: create one)")
	pass := fs.String("password", "", "its password")
	broker := fs.String("broker", "", "MQTT broker URL (default: the one the verifier names)")
	clientID := fs.String("client-id", "", "MQTT client id; with a fixed id the session persists and missed alerts arrive on return")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tenant == "" {
		return errors.New("alerts: --tenant is required")
	}
	var sub struct {
		Username    string `json:"username"`
		Password    string `json:"password"`
		TopicFilter string `json:"topic_filter"`
		BrokerURL   string `json:"broker_url"`
	}
	if *user == "" {
		path := "/admin/v1/tenants/" + url.PathEscape(*tenant) + "/subscribers"
		if err := c.do(ctx, "POST", path, map[string]string{"name": "admin-alerts"}, &sub); err != nil {
			return err
		}
	} else {
		sub.Username, sub.Password = *user, *pass
	}
	if sub.TopicFilter == "" {
		sub.TopicFilter = protocol.AlertFilter(*tenant)
	}
	if *broker != "" {
		sub.BrokerURL = *broker
	}
	if sub.BrokerURL == "" {
		return errors.New("alerts: --broker is required with --username")
	}
	clean := *clientID == ""
	if clean {
		*clientID = "cardbind-admin-alerts-" + fmt.Sprint(time.Now().UnixNano()%1e9)
	}
	var mu sync.Mutex
	show := func(m mqtt.Message) {
		mu.Lock()
		defer mu.Unlock()
		a, err := protocol.DecodeAlert(m.Payload())
		if err != nil {
			fmt.Fprintf(c.out, "%s undecodable alert on %s: %v\n", time.Now().Format("15:04:05.000"), m.Topic(), err)
			return
		}
		fmt.Fprintln(c.out, alertLine(a))
	}
	opts := mqtt.NewClientOptions().AddBroker(sub.BrokerURL).SetClientID(*clientID).SetProtocolVersion(4).
		SetUsername(sub.Username).SetPassword(sub.Password).SetCleanSession(clean).SetAutoReconnect(true).
		SetConnectRetry(true).SetConnectRetryInterval(time.Second).SetOrderMatters(true)
	opts.SetOnConnectHandler(func(cl mqtt.Client) {
		cl.Subscribe(sub.TopicFilter, 1, func(_ mqtt.Client, m mqtt.Message) { show(m) })
	})
	cl := mqtt.NewClient(opts)
	tok := cl.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("alerts: connect to %s: %w", sub.BrokerURL, err)
		}
	case <-ctx.Done():
		return nil
	}
	fmt.Fprintf(c.errw, "watching %s on %s as %s (Ctrl-C ends)\n", sub.TopicFilter, sub.BrokerURL, sub.Username)
	<-ctx.Done()
	cl.Disconnect(250)
	return nil
}

// alertLine is one alert in one line: time, type, card, what was seen.
func alertLine(a *protocol.Alert) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-14s card=%s state=%s decision=%s source=%s", a.Time.Local().Format("15:04:05.000"), a.Type,
		a.ICCID, a.CardState, a.Decision, a.Source)
	if a.ObservedIMEI != "" {
		fmt.Fprintf(&b, " seen_in=%s", a.ObservedIMEI)
	}
	if len(a.BoundIMEIs) > 0 {
		imeis := make([]string, len(a.BoundIMEIs))
		for i, m := range a.BoundIMEIs {
			imeis[i] = string(m)
		}
		fmt.Fprintf(&b, " bound_to=%s", strings.Join(imeis, ","))
	}
	if a.DeviceID != "" {
		fmt.Fprintf(&b, " device=%s", a.DeviceID)
	}
	return b.String()
}

package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/cardbind/cardbind/protocol"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// connectPublisher connects the broker's own MQTT client to its listener.
// Alerts go out through it because nats-server hands messages published
// over NATS to MQTT subscribers at QoS 0 only, and a QoS 0 message is
// never kept for an offline persistent session. A QoS 1 PUBLISH over MQTT
// is stored in $MQTT_msgs before the PUBACK, so every QoS 1 subscription
// (online or in an offline persistent session) gets it.
func (b *Broker) connectPublisher(ctx context.Context) (mqtt.Client, error) {
	scheme := "tcp://"
	o := mqtt.NewClientOptions().
		SetClientID("cardbind-internal-" + NewSecret()[:16]).
		SetUsername(internalUser).
		SetPassword(b.secret).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetOrderMatters(false).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(2 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetKeepAlive(30 * time.Second)
	if b.tlsCfg != nil {
		scheme = "ssl://"
		o.SetTLSConfig(pinnedTLS(b.tlsCfg))
	}
	o.AddBroker(scheme + dialAddr(b.mqttAddr))
	c := mqtt.NewClient(o)
	if err := wait(ctx, c.Connect()); err != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("internal MQTT publisher: connect %s: %w", b.mqttAddr, err)
	}
	return c, nil
}

// wait waits for a paho token or the end of ctx.
func wait(ctx context.Context, t mqtt.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PublishAlert publishes an alert on the tenant's alert topic for
// alertType, at QoS 1 through MQTT, and returns once the broker has stored
// it (PUBACK): from then on every QoS 1 subscription of the topic gets it,
// including persistent sessions that are offline now. id is the alert's
// stable id (logged); subscribers deduplicate on the id inside payload,
// since a retried PublishAlert delivers the alert again.
func (b *Broker) PublishAlert(ctx context.Context, tenant string, alertType protocol.AlertType, id string, payload []byte) error {
	topic := protocol.AlertTopic(tenant, alertType)
	if _, _, err := protocol.ParseAlertTopic(topic); err != nil {
		return fmt.Errorf("broker: publish alert %s: %w", id, err)
	}
	_, _, pub, err := b.conn()
	if err != nil {
		return fmt.Errorf("broker: publish alert %s: %w", id, err)
	}
	if err := wait(ctx, pub.Publish(topic, 1, false, payload)); err != nil {
		return fmt.Errorf("broker: publish alert %s to %s: %w", id, topic, err)
	}
	b.stats.alerts.Add(1)
	b.log.Debug("broker: alert published", "alert", id, "topic", topic)
	return nil
}

// PublishCommand sends payload to the device's command topic. It goes out
// over the in-process NATS connection, so MQTT subscribers get it at QoS 0
// and a device that is offline misses it; commands are advisory and the
// agent reports again on reconnect.
func (b *Broker) PublishCommand(ctx context.Context, deviceID string, payload []byte) error {
	if err := protocol.ValidateID("device id", deviceID); err != nil {
		return fmt.Errorf("broker: publish command: %w", err)
	}
	nc, _, _, err := b.conn()
	if err != nil {
		return fmt.Errorf("broker: publish command to %s: %w", deviceID, err)
	}
	if err := nc.Publish(subjectOf(protocol.CommandTopic(deviceID)), payload); err != nil {
		return fmt.Errorf("broker: publish command to %s: %w", deviceID, err)
	}
	// Flush so the command has reached the server when we return.
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("broker: publish command to %s: %w", deviceID, err)
	}
	b.stats.commands.Add(1)
	return nil
}

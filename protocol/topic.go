package protocol

import (
	"fmt"
	"strings"
)

// The MQTT topic layout. Every level is a fixed word or an id from
// [A-Za-z0-9_-], so topics never hold the characters nats-server maps
// specially ('.', spaces) and map one-to-one onto NATS subjects.
//
//	cardbind/v1/devices/{device}/report        agent → verifier (QoS 1)
//	cardbind/v1/devices/{device}/command       verifier → agent
//	cardbind/v1/devices/{device}/status        agent's will: "online" / "offline" (retained)
//	cardbind/v1/tenants/{tenant}/alerts/{type} verifier → subscribers (QoS 1)
const (
	topicRoot = "cardbind/v1"
	// ReportFilter matches every device's report topic.
	ReportFilter = topicRoot + "/devices/+/report"
)

// ReportTopic returns the topic a device publishes its reports on.
func ReportTopic(deviceID string) string {
	return topicRoot + "/devices/" + deviceID + "/report"
}

// CommandTopic returns the topic a device receives commands on.
func CommandTopic(deviceID string) string {
	return topicRoot + "/devices/" + deviceID + "/command"
}

// StatusTopic returns the topic of a device's connection status: the
// agent publishes "online" (retained) when it connects and leaves
// "offline" as its will, which the broker publishes if the connection
// drops without a goodbye.
func StatusTopic(deviceID string) string {
	return topicRoot + "/devices/" + deviceID + "/status"
}

// Status payloads.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
)

// AlertTopic returns the topic alerts of one type for one tenant go to.
func AlertTopic(tenant string, t AlertType) string {
	return topicRoot + "/tenants/" + tenant + "/alerts/" + string(t)
}

// AlertFilter returns the subscription filter that matches every alert of
// one tenant. It uses '+' rather than '#' because nats-server turns '#'
// into two subscriptions.
func AlertFilter(tenant string) string {
	return topicRoot + "/tenants/" + tenant + "/alerts/+"
}

// ParseReportTopic returns the device id of a report topic.
func ParseReportTopic(topic string) (string, error) {
	return parseDeviceTopic(topic, "report")
}

// ParseCommandTopic returns the device id of a command topic.
func ParseCommandTopic(topic string) (string, error) {
	return parseDeviceTopic(topic, "command")
}

func parseDeviceTopic(topic, last string) (string, error) {
	id, ok := strings.CutPrefix(topic, topicRoot+"/devices/")
	if ok {
		id, ok = strings.CutSuffix(id, "/"+last)
	}
	if !ok || strings.Contains(id, "/") {
		return "", fmt.Errorf("topic %q: want %s/devices/{device}/%s: %w", truncate(topic, 120), topicRoot, last, ErrInvalidMessage)
	}
	if !validID(id) {
		return "", fmt.Errorf("topic %q: device id is malformed: %w", truncate(topic, 120), ErrInvalidMessage)
	}
	return id, nil
}

// ParseAlertTopic returns the tenant and alert type of an alert topic.
func ParseAlertTopic(topic string) (string, AlertType, error) {
	parts := strings.Split(topic, "/")
	if len(parts) != 6 || parts[0] != "cardbind" || parts[1] != "v1" || parts[2] != "tenants" || parts[4] != "alerts" {
		return "", "", fmt.Errorf("topic %q: want %s/tenants/{tenant}/alerts/{type}: %w", truncate(topic, 120), topicRoot, ErrInvalidMessage)
	}
	if !validID(parts[3]) {
		return "", "", fmt.Errorf("topic %q: tenant id is malformed: %w", truncate(topic, 120), ErrInvalidMessage)
	}
	t := AlertType(parts[5])
	if !t.valid() {
		return "", "", fmt.Errorf("topic %q: %q is not an alert type: %w", truncate(topic, 120), parts[5], ErrInvalidMessage)
	}
	return parts[3], t, nil
}

package broker

import (
	"errors"
	"fmt"
	"time"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultServerName          = "cardbind"
	DefaultMQTTHost            = "0.0.0.0"
	DefaultMaxConnections      = 200_000
	DefaultAuthTimeout         = 5 * time.Second
	DefaultReportConsumer      = "cardbind-reports"
	DefaultReportAckWait       = 30 * time.Second
	DefaultReportMaxAckPending = 20_000
)

// Config configures the embedded broker. The zero value, plus DataDir,
// runs an MQTT listener on a random port; the service's own configuration
// layer supplies the documented port (1883, or 8883 with TLS).
type Config struct {
	// DataDir holds the broker's JetStream store (in DataDir/nats).
	// Required.
	DataDir string
	// ServerName names this nats-server; it must be unique in a cluster.
	ServerName string

	// MQTTHost and MQTTPort are where the MQTT listener binds. Port 0 or
	// -1 picks a free port (see Broker.MQTTAddr).
	MQTTHost string
	MQTTPort int
	// TLSCertFile and TLSKeyFile, both set, make the MQTT listener speak
	// TLS only.
	TLSCertFile string
	TLSKeyFile  string

	// NATSHost and NATSPort open a plain NATS listener, for tooling and
	// future cluster use. NATSPort 0 (the default) opens none: the
	// verifier talks to the broker in-process. Only the broker's own
	// internal credential may connect over NATS.
	NATSHost string
	NATSPort int

	// MaxConnections caps client connections (MQTT included).
	MaxConnections int
	// SyncAlways makes JetStream fsync every write. Without it a PUBACKed
	// report survives a crash of the process but not of the machine
	// (nats-server syncs every two minutes by default).
	SyncAlways bool
	// AuthTimeout bounds one Authenticator call.
	AuthTimeout time.Duration

	// ReportConsumer names the durable JetStream consumer that feeds
	// SubscribeReports.
	ReportConsumer string
	// ReportAckWait is how long a report handed to a ReportHandler may
	// stay unacknowledged before it is delivered again.
	ReportAckWait time.Duration
	// ReportMaxAckPending caps reports handed out and not yet acked.
	ReportMaxAckPending int
}

func (c *Config) setDefaults() {
	if c.ServerName == "" {
		c.ServerName = DefaultServerName
	}
	if c.MQTTHost == "" {
		c.MQTTHost = DefaultMQTTHost
	}
	if c.MQTTPort == 0 {
		c.MQTTPort = -1
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = DefaultAuthTimeout
	}
	if c.ReportConsumer == "" {
		c.ReportConsumer = DefaultReportConsumer
	}
	if c.ReportAckWait == 0 {
		c.ReportAckWait = DefaultReportAckWait
	}
	if c.ReportMaxAckPending == 0 {
		c.ReportMaxAckPending = DefaultReportMaxAckPending
	}
}

// Validate reports the first unusable field, by name.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, v ...any) {
		errs = append(errs, fmt.Errorf("broker: config %s: "+format, append([]any{key}, v...)...))
	}
	if c.DataDir == "" {
		bad("DataDir", "required")
	}
	if c.MQTTPort < -1 || c.MQTTPort > 65535 {
		bad("MQTTPort", "%d is not a port", c.MQTTPort)
	}
	if c.NATSPort < -1 || c.NATSPort > 65535 {
		bad("NATSPort", "%d is not a port", c.NATSPort)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("TLSCertFile", "TLSCertFile and TLSKeyFile go together")
	}
	if c.MaxConnections < 0 {
		bad("MaxConnections", "must not be negative")
	}
	if c.AuthTimeout < 0 {
		bad("AuthTimeout", "must not be negative")
	}
	if c.ReportAckWait < 0 {
		bad("ReportAckWait", "must not be negative")
	}
	if c.ReportMaxAckPending < 0 {
		bad("ReportMaxAckPending", "must not be negative")
	}
	return errors.Join(errs...)
}

// Package report is the agent's link to the verifier: an MQTT 3.1.1
// connection (paho) with the device's own credentials, TLS with a
// configured CA, a will that marks the device offline, reconnection with
// exponential backoff and jitter, and delivery of the outbox at QoS 1 in
// order: an entry leaves the outbox only when the broker acknowledged it.
package report

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/cardbind/cardbind/agent/outbox"
	"github.com/cardbind/cardbind/protocol"
)

// Config says where and how to connect.
type Config struct {
	// BrokerURL is tcp://host:port or ssl://host:port.
	BrokerURL string
	DeviceID  string
	Username  string
	Password  string
	// CACertPEM, when set, is the only CA trusted for the broker's
	// certificate; otherwise the system roots are.
	CACertPEM []byte
	// KeepAlive is the MQTT keep-alive (default 60s).
	KeepAlive time.Duration
	// MinBackoff and MaxBackoff bound the delay between connection
	// attempts (defaults 1s and 2 minutes); each delay has jitter.
	MinBackoff, MaxBackoff time.Duration
	// PublishTimeout bounds the wait for one PUBACK (default 15s).
	PublishTimeout time.Duration
	// Dial, when set, opens the TCP connection to the broker in place of
	// paho's dialer (the fleet simulator binds source addresses with it and
	// closes connections to simulate outages). With an ssl:// URL, TLS runs
	// over the connection it returns.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// Link keeps the connection and delivers the outbox.
type Link struct {
	cfg       Config
	box       *outbox.Outbox
	log       *slog.Logger
	onCommand func(payload []byte)
	onAcked   func(e outbox.Entry)

	kick      chan struct{}
	connected atomic.Bool
	mu        sync.Mutex
	client    mqtt.Client
}

// New returns a link delivering box. onCommand receives every message on
// the device's command topic; onAcked is told of every delivered entry.
// Either may be nil.
func New(cfg Config, box *outbox.Outbox, log *slog.Logger, onCommand func([]byte), onAcked func(outbox.Entry)) (*Link, error) {
	u, err := url.Parse(cfg.BrokerURL)
	if err != nil || (u.Scheme != "tcp" && u.Scheme != "ssl" && u.Scheme != "tls" && u.Scheme != "mqtt" && u.Scheme != "mqtts") || u.Host == "" {
		return nil, fmt.Errorf("report: broker url %q: want tcp://host:port or ssl://host:port", cfg.BrokerURL)
	}
	if err := protocol.ValidateID("device id", cfg.DeviceID); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 60 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 2 * time.Minute
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 15 * time.Second
	}
	return &Link{cfg: cfg, box: box, log: log, onCommand: onCommand, onAcked: onAcked, kick: make(chan struct{}, 1)}, nil
}

// Kick tells the link the outbox has something new. It never blocks.
func (l *Link) Kick() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Connected reports whether the link is up now.
func (l *Link) Connected() bool { return l.connected.Load() }

// Run connects, delivers, and reconnects until ctx ends; then it says
// goodbye (so the will is not published) and returns.
func (l *Link) Run(ctx context.Context) error {
	failures := 0
	for ctx.Err() == nil {
		lost, err := l.connect(ctx)
		if err != nil {
			failures++
			delay := backoff(failures, l.cfg.MinBackoff, l.cfg.MaxBackoff)
			l.log.Warn("broker connection failed", "err", err, "retry_in", delay.Round(time.Millisecond))
			if !sleep(ctx, delay) {
				break
			}
			continue
		}
		failures = 0
		l.connected.Store(true)
		l.log.Info("connected to broker", "broker", l.cfg.BrokerURL)
		l.serve(ctx, lost)
		l.connected.Store(false)
		l.mu.Lock()
		c := l.client
		l.mu.Unlock()
		if ctx.Err() != nil {
			publishStatus(c, l.cfg.DeviceID, protocol.StatusOffline, time.Second)
			c.Disconnect(250)
			break
		}
		c.Disconnect(0)
		l.log.Warn("broker connection lost; reconnecting")
		if !sleep(ctx, backoff(1, l.cfg.MinBackoff, l.cfg.MaxBackoff)) {
			break
		}
	}
	return nil
}

// serve delivers the outbox whenever kicked, until the connection is lost
// or ctx ends.
func (l *Link) serve(ctx context.Context, lost <-chan error) {
	for {
		if err := l.drain(ctx); err != nil {
			l.log.Warn("delivering reports", "err", err)
			return // treat as a lost connection: reconnect and retry
		}
		select {
		case <-ctx.Done():
			return
		case err := <-lost:
			l.log.Warn("connection lost", "err", err)
			return
		case <-l.kick:
		}
	}
}

// drain publishes outbox entries oldest first, each at QoS 1, removing
// each once acknowledged. It stops at the first failure, keeping order.
func (l *Link) drain(ctx context.Context) error {
	l.mu.Lock()
	c := l.client
	l.mu.Unlock()
	topic := protocol.ReportTopic(l.cfg.DeviceID)
	for ctx.Err() == nil {
		entries, err := l.box.Peek(16)
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			return nil
		}
		for _, e := range entries {
			tok := c.Publish(topic, 1, false, e.Payload)
			if !tok.WaitTimeout(l.cfg.PublishTimeout) {
				return fmt.Errorf("report %d: no PUBACK within %v", e.Seq, l.cfg.PublishTimeout)
			}
			if err := tok.Error(); err != nil {
				return fmt.Errorf("report %d: %w", e.Seq, err)
			}
			l.log.Debug("delivered", "seq", e.Seq)
			if err := l.box.Ack(e.Seq); err != nil {
				return err
			}
			if l.onAcked != nil {
				l.onAcked(e)
			}
		}
	}
	return nil
}

// connect opens one MQTT connection and subscribes to the command topic.
// The returned channel gets the error when the connection is lost.
func (l *Link) connect(ctx context.Context) (<-chan error, error) {
	lost := make(chan error, 1)
	opts := mqtt.NewClientOptions().
		AddBroker(l.cfg.BrokerURL).
		SetClientID(l.cfg.DeviceID).
		SetUsername(l.cfg.Username).
		SetPassword(l.cfg.Password).
		SetProtocolVersion(4). // MQTT 3.1.1; nats-server refuses 3.1
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(l.cfg.KeepAlive).
		SetConnectTimeout(15*time.Second).
		SetOrderMatters(false).
		SetBinaryWill(protocol.StatusTopic(l.cfg.DeviceID), []byte(protocol.StatusOffline), 1, true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	if len(l.cfg.CACertPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(l.cfg.CACertPEM) {
			return nil, errors.New("report: CA certificate: no PEM certificate found")
		}
		opts.SetTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	}
	if l.cfg.Dial != nil {
		opts.SetCustomOpenConnectionFn(l.open)
	}
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		c.Disconnect(0)
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect %s: %w", l.cfg.BrokerURL, err)
	}
	if l.onCommand != nil {
		st := c.Subscribe(protocol.CommandTopic(l.cfg.DeviceID), 1, func(_ mqtt.Client, m mqtt.Message) {
			l.onCommand(m.Payload())
		})
		if !st.WaitTimeout(15*time.Second) || st.Error() != nil {
			c.Disconnect(0)
			return nil, fmt.Errorf("subscribe to commands: %v", st.Error())
		}
	}
	publishStatus(c, l.cfg.DeviceID, protocol.StatusOnline, 5*time.Second)
	l.mu.Lock()
	l.client = c
	l.mu.Unlock()
	return lost, nil
}

// open connects to the broker with Config.Dial, adding TLS for ssl://.
func (l *Link) open(u *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.ConnectTimeout)
	defer cancel()
	conn, err := l.cfg.Dial(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("report: dial %s: %w", u.Host, err)
	}
	if u.Scheme == "tcp" || u.Scheme == "mqtt" {
		return conn, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.TLSConfig != nil {
		cfg = o.TLSConfig.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("report: TLS with %s: %w", u.Host, err)
	}
	return tc, nil
}

func publishStatus(c mqtt.Client, device, status string, wait time.Duration) {
	if c == nil {
		return
	}
	c.Publish(protocol.StatusTopic(device), 1, true, []byte(status)).WaitTimeout(wait)
}

// backoff returns the delay before attempt n+1: exponential from min,
// capped at max, with "full jitter" in its upper half so that a fleet
// reconnecting after an outage spreads out.
func backoff(n int, min, max time.Duration) time.Duration {
	d := min
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

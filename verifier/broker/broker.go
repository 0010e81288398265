package broker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotStarted is returned by the publishing and subscribing methods
// before Start succeeded or after Shutdown.
var ErrNotStarted = errors.New("broker: not started")

// internalUser is the username of the broker's own connections (the
// verifier's in-process NATS connection and the alert publisher's MQTT
// connection). It holds a character ids cannot, so no Authenticator user
// can take it; its password is random per Broker and never leaves the
// process.
const internalUser = "$cardbind-internal"

// Stats are the broker's counters since New.
type Stats struct {
	// AuthAccepted and AuthRefused count client authentications.
	AuthAccepted, AuthRefused uint64
	// PublishRefused counts publishes the broker dropped because the
	// client may not publish there (a device publishing to another
	// device's topic). The client still got its PUBACK.
	PublishRefused uint64
	// SubscribeRefused counts refused subscriptions (SUBACK 0x80).
	SubscribeRefused uint64
	// ClientIDRefused counts connections refused for their MQTT client
	// id (a device presenting an id other than its own, a subscriber one
	// that another principal's connection holds or another tenant owns);
	// AuthRefused counts them too.
	ClientIDRefused uint64
	// ReportsDelivered counts reports handed to a ReportHandler,
	// redeliveries included; ReportsAcked counts their acks.
	ReportsDelivered, ReportsAcked uint64
	// CommandsPublished and AlertsPublished count successful publishes.
	CommandsPublished, AlertsPublished uint64
}

// Connections is the number of client connections the broker holds now
// (MQTT sessions and the verifier's own).
func (b *Broker) Connections() int {
	if b.srv == nil {
		return 0
	}
	return b.srv.NumClients()
}

type counters struct {
	authAccepted, authRefused        atomic.Uint64
	publishRefused, subscribeRefused atomic.Uint64
	clientIDRefused                  atomic.Uint64
	reportsDelivered, reportsAcked   atomic.Uint64
	commands, alerts                 atomic.Uint64
}

// Broker is the embedded nats-server with its MQTT listener, plus the
// verifier's own connections to it.
type Broker struct {
	cfg    Config
	log    *slog.Logger
	srv    *server.Server
	slog   *serverLog
	hook   *authHook
	ids    *serverRegistry
	secret string      // internal password
	tlsCfg *tls.Config // MQTT listener TLS, nil without
	stats  counters

	violations chan violation
	stop       context.CancelFunc // stops the broker's goroutines
	baseCtx    context.Context
	wg         sync.WaitGroup

	mu      sync.Mutex
	started bool
	nc      *nats.Conn
	js      jetstream.JetStream
	pub     mqtt.Client
	watchNC *nats.Conn // WatchReports' connection
	// backlogNC is PendingReports' connection: on the verifier's own,
	// its requests would wait behind the consumer's deliveries.
	backlogNC *nats.Conn
	msgs      jetstream.Stream // $MQTT_msgs on backlogNC, once looked up
	mqttAddr  string
	reportSub *Subscription // the running report subscription, nil without
	ackers    []*acks       // every report consume's ack tracker, until the broker stops

	// hookDeliver, when set (by tests), sees each report delivery
	// first and drops it when it returns false, as if lost on the way.
	hookDeliver func(jetstream.Msg) bool
}

// New prepares a broker; Start runs it. auth decides who MQTT clients
// are; logger receives the broker's and nats-server's logs.
func New(cfg Config, auth Authenticator, logger *slog.Logger) (*Broker, error) {
	if auth == nil {
		return nil, errors.New("broker: nil Authenticator")
	}
	if logger == nil {
		return nil, errors.New("broker: nil logger")
	}
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Broker{
		cfg:        cfg,
		log:        logger,
		secret:     NewSecret(),
		violations: make(chan violation, 64),
	}
	b.baseCtx, b.stop = context.WithCancel(context.Background())
	b.hook = &authHook{
		auth:       auth,
		secretHash: sha256.Sum256([]byte(b.secret)),
		timeout:    cfg.AuthTimeout,
		baseCtx:    b.baseCtx,
		stats:      &b.stats,
		log:        logger,
	}
	b.slog = &serverLog{log: logger, onViolation: b.noteViolation}

	opts := &server.Options{
		ServerName:                 cfg.ServerName,
		DontListen:                 cfg.NATSPort == 0,
		Host:                       cfg.NATSHost,
		Port:                       cfg.NATSPort,
		NoSigs:                     true,
		MaxConn:                    cfg.MaxConnections,
		JetStream:                  true,
		StoreDir:                   filepath.Join(cfg.DataDir, "nats"),
		SyncAlways:                 cfg.SyncAlways,
		CustomClientAuthentication: b.hook,
		MQTT: server.MQTTOpts{
			Host: cfg.MQTTHost,
			Port: cfg.MQTTPort,
		},
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("broker: config TLSCertFile/TLSKeyFile: %w", err)
		}
		b.tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		opts.MQTT.TLSConfig = b.tlsCfg
		opts.MQTT.TLSTimeout = 5
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("broker: new nats-server: %w", err)
	}
	ctx := context.Background()
	srv.SetLoggerV2(b.slog, logger.Enabled(ctx, slog.LevelDebug), logger.Enabled(ctx, levelTrace), false)
	b.srv = srv
	b.ids = &serverRegistry{srv: srv}
	b.hook.ids = b.ids
	return b, nil
}

// Start runs the server and waits until it accepts MQTT clients, the
// verifier's connections are up and the durable report consumer exists.
// Until then, MQTT clients other than the broker's own are refused, so no
// report can be PUBACKed before the consumer that keeps it exists. Start
// gives up when ctx ends.
func (b *Broker) Start(ctx context.Context) (err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started {
		return errors.New("broker: already started")
	}
	defer func() {
		if err != nil {
			b.closeLocked()
		}
	}()
	b.srv.Start()
	for !b.srv.ReadyForConnections(100 * time.Millisecond) {
		if ferr := b.slog.fatalErr(); ferr != nil {
			return fmt.Errorf("broker: start: %w", ferr)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("broker: start: waiting for nats-server: %w", ctx.Err())
		}
	}
	vz, err := b.srv.Varz(nil)
	if err != nil {
		return fmt.Errorf("broker: start: %w", err)
	}
	b.mqttAddr = net.JoinHostPort(vz.MQTT.Host, strconv.Itoa(vz.MQTT.Port))

	nc, err := b.connectInProcess("cardbind-verifier")
	if err != nil {
		return fmt.Errorf("broker: start: %w", err)
	}
	b.nc = nc
	if b.watchNC, err = b.connectInProcess("cardbind-verifier-watch"); err != nil {
		return fmt.Errorf("broker: start: %w", err)
	}
	if b.backlogNC, err = b.connectInProcess("cardbind-verifier-backlog"); err != nil {
		return fmt.Errorf("broker: start: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("broker: start: jetstream: %w", err)
	}
	b.js = js

	// The first MQTT CONNECT creates the account's MQTT streams
	// ($MQTT_msgs among them), which the report consumer needs.
	if b.pub, err = b.connectPublisher(ctx); err != nil {
		return fmt.Errorf("broker: start: %w", err)
	}
	if err := b.ensureReportConsumer(ctx); err != nil {
		return fmt.Errorf("broker: start: %w", err)
	}
	if b.ids.kv, err = b.ensureClientIDBucket(ctx); err != nil {
		return fmt.Errorf("broker: start: %w", err)
	}

	b.wg.Add(1)
	go b.logViolations()
	b.started = true
	b.hook.ready.Store(true)
	b.log.Info("broker started", "mqtt", b.mqttAddr, "tls", b.tlsCfg != nil, "server_name", b.cfg.ServerName)
	return nil
}

// MQTTAddr returns the host:port the MQTT listener is bound to, or "" before
// Start.
func (b *Broker) MQTTAddr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mqttAddr
}

// Stats returns the current counters.
func (b *Broker) Stats() Stats {
	s := &b.stats
	return Stats{
		AuthAccepted:      s.authAccepted.Load(),
		AuthRefused:       s.authRefused.Load(),
		PublishRefused:    s.publishRefused.Load(),
		SubscribeRefused:  s.subscribeRefused.Load(),
		ClientIDRefused:   s.clientIDRefused.Load(),
		ReportsDelivered:  s.reportsDelivered.Load(),
		ReportsAcked:      s.reportsAcked.Load(),
		CommandsPublished: s.commands.Load(),
		AlertsPublished:   s.alerts.Load(),
	}
}

// Shutdown closes the verifier's connections and stops the server,
// waiting for it until ctx ends. Report subscriptions end with it.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	b.closeLocked()
	b.mu.Unlock()

	done := make(chan struct{})
	go func() {
		b.srv.WaitForShutdown()
		b.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("broker: shutdown: %w", ctx.Err())
	}
}

// closeLocked stops everything Start started. b.mu is held.
func (b *Broker) closeLocked() {
	b.hook.ready.Store(false)
	b.started = false
	if b.pub != nil {
		b.pub.Disconnect(100)
		b.pub = nil
	}
	if b.nc != nil {
		// Acks of reports handled before the stop, so that a clean stop
		// sends nothing round again.
		for _, a := range b.ackers {
			a.flush()
		}
		b.ackers = nil
		_ = b.nc.FlushTimeout(time.Second)
		b.nc.Close()
		b.nc = nil
		b.js = nil
	}
	if b.watchNC != nil {
		b.watchNC.Close()
		b.watchNC = nil
	}
	if b.backlogNC != nil {
		b.backlogNC.Close()
		b.backlogNC = nil
		b.msgs = nil
	}
	b.stop()
	b.srv.Shutdown()
}

// connectInProcess opens a NATS connection of the verifier's own to the
// embedded server, through memory rather than a socket.
func (b *Broker) connectInProcess(name string) (*nats.Conn, error) {
	nc, err := nats.Connect("",
		nats.InProcessServer(b.srv),
		nats.UserInfo(internalUser, b.secret),
		nats.Name(name),
		nats.MaxReconnects(-1),
	)
	if err != nil {
		return nil, fmt.Errorf("in-process connection %s: %w", name, err)
	}
	return nc, nil
}

// conn returns the in-process connection, or ErrNotStarted.
func (b *Broker) conn() (*nats.Conn, jetstream.JetStream, mqtt.Client, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		return nil, nil, nil, ErrNotStarted
	}
	return b.nc, b.js, b.pub, nil
}

// noteViolation counts a permission violation and queues it for logging.
// It runs on the offending client's goroutine, so it never blocks: when
// the queue is full the violation is counted but not logged.
func (b *Broker) noteViolation(v violation) {
	switch v.kind {
	case violationPublish:
		b.stats.publishRefused.Add(1)
	case violationSubscribe:
		b.stats.subscribeRefused.Add(1)
	}
	select {
	case b.violations <- v:
	default:
	}
}

// logViolations logs queued violations with the principal that caused
// them. Looking the connection up is O(connections) in nats-server
// (Connz copies the client map), so at most one lookup runs per
// violationLookupEvery; the rest are logged without the principal.
func (b *Broker) logViolations() {
	defer b.wg.Done()
	const violationLookupEvery = 50 * time.Millisecond
	var last time.Time
	for {
		select {
		case <-b.baseCtx.Done():
			return
		case v := <-b.violations:
			who := ""
			if v.cid != 0 && time.Since(last) >= violationLookupEvery {
				last = time.Now()
				who = b.principalOf(v.cid)
			}
			what := "publish"
			if v.kind == violationSubscribe {
				what = "subscribe"
			}
			b.log.Warn("broker: refused "+what, "principal", who, "subject", v.subject, "conn", v.cid)
		}
	}
}

// principalOf returns the principal label of connection cid, or "".
func (b *Broker) principalOf(cid uint64) string {
	cz, err := b.srv.Connz(&server.ConnzOptions{CID: cid, Username: true, State: server.ConnAll})
	if err != nil || len(cz.Conns) == 0 {
		return ""
	}
	return cz.Conns[0].AuthorizedUser
}

// dialAddr returns the address the broker's own MQTT client dials: the
// listener's, with an unspecified host replaced by loopback.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

// pinnedTLS returns a client TLS config that accepts exactly the
// certificate the listener serves: the broker dials itself, so the
// certificate's names and issuer do not matter, its identity does.
func pinnedTLS(listener *tls.Config) *tls.Config {
	want := listener.Certificates[0].Certificate[0]
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], want) {
				return errors.New("broker: MQTT listener presented an unexpected certificate")
			}
			return nil
		},
	}
}

// Package app assembles the cardbind verifier from its parts — store,
// embedded broker, ingest, outbox dispatchers, enforcement adapter, HTTP
// API — and runs it until its context ends, then drains and stops it in
// order.
package app

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/api"
	"github.com/cardbind/cardbind/verifier/broker"
	"github.com/cardbind/cardbind/verifier/camara"
	"github.com/cardbind/cardbind/verifier/config"
	"github.com/cardbind/cardbind/verifier/dispatch"
	"github.com/cardbind/cardbind/verifier/eir"
	"github.com/cardbind/cardbind/verifier/enforce"
	"github.com/cardbind/cardbind/verifier/geo"
	"github.com/cardbind/cardbind/verifier/ingest"
	"github.com/cardbind/cardbind/verifier/oauth"
	"github.com/cardbind/cardbind/verifier/radius"
	"github.com/cardbind/cardbind/verifier/service"
	"github.com/cardbind/cardbind/verifier/webhook"
)

// SetGCPercent sets the process's garbage collector target to the
// gc_percent key, unless the GOGC environment variable is set. It changes
// the whole process, so only a main package calls it, before Run. At the
// default 200 the verifier spends about 15 % less CPU per report than at
// Go's 100 (docs/benchmarks.md), for a larger heap.
func SetGCPercent(cfg config.Config, log *slog.Logger) {
	if env := os.Getenv("GOGC"); env != "" {
		log.Debug("GOGC set in the environment; gc_percent not applied", "GOGC", env)
		return
	}
	debug.SetGCPercent(cfg.GCPercent)
}

// OpenStore opens the store in dir as the store.* keys say; the store
// logs to log.
type OpenStore func(dir string, c config.StoreConf, log *slog.Logger) (verifier.Store, error)

// Ready is closed-over state a caller (tests, the demo) can read once the
// verifier listens.
type Ready struct {
	HTTPAddr string
	MQTTAddr string
}

// Run starts the verifier and blocks until ctx ends. out receives the
// operator credential on first start (and nothing else). ready, if not
// nil, is called once everything listens.
func Run(ctx context.Context, cfg config.Config, openStore OpenStore, log *slog.Logger, out io.Writer, ready func(Ready)) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	opToken, created, err := operatorToken(cfg.DataDir)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(out, "cardbind: operator credential created and saved to %s (mode 0600):\n  %s\n",
			filepath.Join(cfg.DataDir, "operator-token"), opToken)
	}
	cmdKey, err := commandKey(cfg.DataDir)
	if err != nil {
		return err
	}

	store, err := openStore(filepath.Join(cfg.DataDir, "store"), cfg.Store, log.With("part", "store"))
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	}()

	now := time.Now
	in := ingest.New(store, log.With("part", "ingest"), now)
	cells := geo.New(store)
	in.SetLocator(cells)
	var brk *broker.Broker
	brokerURL := func() string { return cfg.BrokerURL(brk.MQTTAddr()) }
	publishCommand := func(ctx context.Context, device string, payload []byte) error {
		return brk.PublishCommand(ctx, device, payload)
	}
	var caPEM string
	if cfg.MQTT.CAFile != "" {
		b, err := os.ReadFile(cfg.MQTT.CAFile)
		if err != nil {
			return fmt.Errorf("mqtt.ca_file: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(b) {
			return fmt.Errorf("mqtt.ca_file: %s holds no PEM certificate", cfg.MQTT.CAFile)
		}
		caPEM = string(b)
	}
	svc := service.New(store, in, service.Config{CommandKey: cmdKey, BrokerURL: brokerURL, PublishCommand: publishCommand,
		CACertPEM: caPEM}, log.With("part", "service"), now)

	mqttHost, mqttPort, err := splitHostPort(cfg.MQTT.Listen)
	if err != nil {
		return fmt.Errorf("mqtt.listen: %w", err)
	}
	brk, err = broker.New(broker.Config{DataDir: cfg.DataDir, MQTTHost: mqttHost, MQTTPort: mqttPort,
		TLSCertFile: cfg.MQTT.TLSCert, TLSKeyFile: cfg.MQTT.TLSKey, MaxConnections: cfg.MQTT.MaxConnections,
		SyncAlways: cfg.MQTT.SyncAlways},
		authenticator{svc}, log.With("part", "broker"))
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	if err := brk.Start(ctx); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := brk.Shutdown(sctx); err != nil {
			log.Error("broker shutdown", "err", err)
		}
	}()

	enforcer, err := newEnforcer(cfg.Enforce)
	if err != nil {
		return err
	}
	metrics := newMetrics(in, brk)
	enfDispatch := dispatch.New(store, verifier.OutboxEnforce,
		enforce.Handler(enforcer, store, log.With("part", "enforce"), metrics.observeEnforcement),
		dispatch.Config{OrderKey: cardOfEntry}, log, now)
	var notifier *webhook.Notifier // CAMARA subscriptions; nil when the CAMARA API is off
	if !cfg.CAMARA.Disabled {
		if notifier, err = newNotifier(cfg, store, log.With("part", "webhook")); err != nil {
			return err
		}
	}
	alertDispatch := dispatch.New(store, verifier.OutboxAlert, alertHandler(brk, notifier), dispatch.Config{OrderKey: cardOfEntry}, log, now)
	metrics.dispatchers(enfDispatch, alertDispatch)
	in.SetHooks(ingest.Hooks{Outbox: func() { enfDispatch.Wake(); alertDispatch.Wake() }, Decision: metrics.decision})
	// A report taken early first applies its device's queued ones.
	in.SetBacklog(brk)

	// Everything that runs in the background, stopped in reverse order.
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { stop(); wg.Wait() }()
	goRun := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(runCtx); err != nil && runCtx.Err() == nil {
				log.Error("background task failed", "task", name, "err", err)
			}
		}()
	}
	goRun("enforce dispatcher", enfDispatch.Run)
	goRun("alert dispatcher", alertDispatch.Run)
	if notifier != nil {
		metrics.notifier(notifier)
		goRun("webhook notifier", notifier.Run)
	}
	goRun("grace timer", func(ctx context.Context) error { return graceLoop(ctx, store, in, log) })

	pool := newPool(runCtx, checkersFor(runtime.GOMAXPROCS(0)), cfg.Ingest.Workers, in, log, metrics.synced)
	defer pool.close()
	sub, err := brk.SubscribeReports(ctx, pool.handle)
	if err != nil {
		return fmt.Errorf("subscribe to reports: %w", err)
	}
	defer sub.Stop()
	if cfg.Ingest.EarlyChanges {
		stopWatch, err := brk.WatchReports(pool.handleEarly)
		if err != nil {
			return fmt.Errorf("watch reports: %w", err)
		}
		defer stopWatch()
	}

	if cfg.RADIUS.Listen != "" {
		rs, err := newRADIUS(cfg.RADIUS, store, in, log.With("part", "radius"))
		if err != nil {
			return err
		}
		metrics.radius(rs)
		conn, err := listenUDP(cfg.RADIUS.Listen)
		if err != nil {
			return fmt.Errorf("radius.listen: %w", err)
		}
		goRun("radius", func(ctx context.Context) error { return rs.Serve(ctx, conn) })
		log.Info("radius accounting listening", "addr", conn.LocalAddr().String(), "clients", len(cfg.RADIUS.Clients))
	}

	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen: %w", err)
	}
	var routes []api.Route
	if !cfg.CAMARA.Disabled {
		if routes, err = camaraRoutes(cfg, ln.Addr().String(), store, svc, notifier, log); err != nil {
			return err
		}
	}
	routes = append(routes, api.Route{Pattern: geo.ImportPath, Handler: cells.ImportHandler(log.With("part", "geo")), Operator: true})
	if cfg.EIR.Enabled {
		eirHandler := eir.New(store, in, eir.Options{Clients: cfg.EIR.ClientPrefixes()}, log.With("part", "eir"))
		routes = append(routes, api.Route{Pattern: eir.Path, Handler: eirHandler})
		metrics.eir(eirHandler)
	}
	handler := api.Handler(svc, api.Options{OperatorTokenHash: api.HashToken(opToken), BrokerURL: brokerURL(),
		Metrics: metrics.handler(), Ready: func() error { return nil }, Routes: routes}, log.With("part", "api"))
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() {
		if cfg.HTTP.TLSCert != "" {
			serveErr <- srv.ServeTLS(ln, cfg.HTTP.TLSCert, cfg.HTTP.TLSKey)
		} else {
			serveErr <- srv.Serve(ln)
		}
	}()
	log.Info("cardbind verifier running", "http", ln.Addr().String(), "mqtt", brk.MQTTAddr(),
		"data_dir", cfg.DataDir, "enforce", cfg.Enforce.Adapter)
	if ready != nil {
		ready(Ready{HTTPAddr: ln.Addr().String(), MQTTAddr: brk.MQTTAddr()})
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
	}
	log.Info("cardbind verifier stopping")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}

// camaraRoutes builds the OAuth2 authorization server and the CAMARA API
// and returns their routes: the API, the token endpoint, JWKS and
// discovery, and the operator's client and token administration.
func camaraRoutes(cfg config.Config, httpAddr string, store verifier.Store, svc *service.Service, notifier *webhook.Notifier, log *slog.Logger) ([]api.Route, error) {
	c := cfg.CAMARA
	issuer := c.Issuer
	if issuer == "" {
		scheme := "http"
		if cfg.HTTP.TLSCert != "" {
			scheme = "https"
		}
		issuer = scheme + "://" + httpAddr
	}
	ocfg := oauth.Config{Issuer: issuer, DataDir: cfg.DataDir, TokenTTL: c.TokenTTL,
		TenantExists: func(ctx context.Context, tenant string) error {
			_, err := svc.Tenant(ctx, tenant)
			return err
		}}
	if c.External.Issuer != "" {
		ocfg.External = &oauth.ExternalConfig{Issuer: c.External.Issuer, Audience: c.External.Audience, JWKSURL: c.External.JWKSURL}
	}
	auth, err := oauth.NewServer(store, ocfg, log.With("part", "oauth"))
	if err != nil {
		return nil, fmt.Errorf("camara: %w", err)
	}
	h, err := camara.New(store, svc, auth, camara.Config{DisabledIdentifiers: c.DisabledIdentifiers,
		DefaultAreaRadius: c.DefaultAreaRadius, DefaultRate: c.DefaultRate, DefaultQuota: c.DefaultQuota},
		log.With("part", "camara"))
	if err != nil {
		return nil, fmt.Errorf("camara: %w", err)
	}
	tokens := auth.Handler()
	admin := auth.AdminHandler()
	return []api.Route{
		{Pattern: camara.BasePath + "/", Handler: h},
		{Pattern: camara.SubscriptionsBasePath + "/", Handler: h.Subscriptions(notifier)},
		{Pattern: oauth.TokenPath, Handler: tokens},
		{Pattern: oauth.JWKSPath, Handler: tokens},
		{Pattern: oauth.DiscoveryPath, Handler: tokens},
		{Pattern: "/admin/v1/clients", Handler: admin, Operator: true},
		{Pattern: "/admin/v1/clients/", Handler: admin, Operator: true},
		{Pattern: "/admin/v1/tokens", Handler: admin, Operator: true},
	}, nil
}

// cardOfEntry is the card an enforcement or alert outbox entry is about:
// their ids start with the ICCID ("ICCID-SEQ-WHAT", see ingest and
// service), so a card's entries are carried out one at a time, in order
// (mismatch before blocked before resumed).
func cardOfEntry(e verifier.OutboxEntry) string {
	iccid, _, _ := strings.Cut(e.ID, "-")
	return iccid
}

// newRADIUS returns the accounting server for the configured clients.
func newRADIUS(c config.RADIUS, store verifier.Store, in *ingest.Ingest, log *slog.Logger) (*radius.Server, error) {
	rc := radius.Config{Addr: c.Listen, Workers: c.Workers}
	for i, cl := range c.Clients {
		client, err := radius.ParseClient(cl.Address, cl.Secret)
		if err != nil {
			return nil, fmt.Errorf("config: radius.clients[%d]: %w", i, err)
		}
		rc.Clients = append(rc.Clients, client)
	}
	rs, err := radius.New(rc, store, in, log)
	if err != nil {
		return nil, fmt.Errorf("radius: %w", err)
	}
	return rs, nil
}

func listenUDP(addr string) (*net.UDPConn, error) {
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	return net.ListenUDP("udp", a)
}

// authenticator adapts the service's credential check to the broker.
type authenticator struct{ svc *service.Service }

func (a authenticator) Authenticate(ctx context.Context, username, password string) (broker.Principal, error) {
	p, err := a.svc.Authenticate(ctx, username, password)
	switch {
	case errors.Is(err, verifier.ErrNotFound):
		return broker.Principal{}, broker.ErrUnauthorized
	case err != nil:
		return broker.Principal{}, err
	case p.DeviceID != "":
		return broker.Device(p.DeviceID), nil
	}
	return broker.AlertSubscriber(p.Tenant), nil
}

// alertHandler publishes an alert over MQTT and, when n is not nil, first
// fans it out to the CAMARA subscriptions (idempotent: a retry after a
// failed publish queues no event twice).
func alertHandler(brk *broker.Broker, n *webhook.Notifier) dispatch.Handler {
	return func(ctx context.Context, e verifier.OutboxEntry) error {
		a, err := protocol.DecodeAlert(e.Payload)
		if err != nil {
			return fmt.Errorf("alert %s: %v: %w", e.ID, err, dispatch.ErrPermanent)
		}
		if n != nil {
			if err := n.HandleAlert(ctx, e); err != nil {
				return err
			}
		}
		return brk.PublishAlert(ctx, a.Tenant, a.Type, a.ID, e.Payload)
	}
}

// newNotifier returns the CAMARA subscriptions' notifier.
func newNotifier(cfg config.Config, store verifier.Store, log *slog.Logger) (*webhook.Notifier, error) {
	w := cfg.CAMARA.Webhook
	source := w.Source
	if source == "" && cfg.CAMARA.Issuer != "" {
		source = strings.TrimSuffix(cfg.CAMARA.Issuer, "/") + camara.SubscriptionsBasePath
	}
	n, err := webhook.New(store, webhook.Config{Source: source, AllowPrivateSinks: w.AllowPrivateSinks, CAFile: w.CAFile,
		Workers: w.Workers, Timeout: w.Timeout, MaxAge: w.MaxAge}, log, time.Now)
	if err != nil {
		return nil, fmt.Errorf("camara.webhook: %w", err)
	}
	return n, nil
}

func newEnforcer(c config.Enforce) (enforce.Enforcer, error) {
	switch c.Adapter {
	case "simnet":
		return enforce.NewHTTP(enforce.SimNetwork(c.SimnetURL), nil)
	case "http":
		return enforce.NewHTTP(c.HTTP, nil)
	}
	return enforce.None{}, nil
}

// graceLoop blocks cards whose grace period ran out.
func graceLoop(ctx context.Context, store verifier.Store, in *ingest.Ingest, log *slog.Logger) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		due, err := store.GraceDue(ctx, time.Now(), 1000)
		if err != nil {
			log.Error("grace: read due cards", "err", err)
			continue
		}
		for _, iccid := range due {
			if err := in.ExpireGrace(ctx, iccid); err != nil {
				log.Error("grace: expire", "iccid", iccid, "err", err)
			}
		}
	}
}

// operatorToken reads the operator credential, creating it on first
// start in a 0600 file.
func operatorToken(dir string) (token string, created bool, err error) {
	path := filepath.Join(dir, "operator-token")
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("operator credential: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", false, err
	}
	token = "cbo_" + base64.RawURLEncoding.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("operator credential: %w", err)
	}
	return token, true, nil
}

// commandKey reads the key that signs commands to devices, creating it on
// first start.
func commandKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, "command-key")
	b, err := os.ReadFile(path)
	if err == nil {
		seed, derr := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if derr != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("command key %s: malformed", path)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("command key: %w", err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key.Seed())+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("command key: %w", err)
	}
	return key, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, err
	}
	if port == 0 {
		port = -1
	}
	return host, port, nil
}

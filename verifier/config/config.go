// Package config is the cardbind verifier's configuration: defaults that
// run out of the box, a TOML file that overrides them, and validation that
// names the key at fault. docs/configuration.md documents every key.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/cardbind/cardbind/verifier/enforce"
)

// Config is the verifier's whole configuration.
type Config struct {
	// DataDir holds the store, the broker's JetStream files, keys and the
	// operator credential.
	DataDir string    `toml:"data_dir"`
	HTTP    HTTP      `toml:"http"`
	MQTT    MQTT      `toml:"mqtt"`
	Enforce Enforce   `toml:"enforce"`
	Ingest  Ingest    `toml:"ingest"`
	Log     Log       `toml:"log"`
	Store   StoreConf `toml:"store"`
	CAMARA  CAMARA    `toml:"camara"`
	RADIUS  RADIUS    `toml:"radius"`
	EIR     EIR       `toml:"eir"`
	// GCPercent is the Go garbage collector's target (GOGC): the heap may
	// grow by this percentage of the live heap before a collection; -1
	// turns collection off. The GOGC environment variable, when set, wins.
	GCPercent int `toml:"gc_percent"`
}

// EIR configures the equipment identity check endpoint (3GPP TS 29.511
// style, GET /n5g-eir-eic/v1/equipment-status) on the HTTP listener.
type EIR struct {
	// Enabled serves the endpoint (default on).
	Enabled bool `toml:"enabled"`
	// Clients are the AMF/MME addresses or CIDR networks allowed to ask;
	// empty means loopback only (a check can block a card).
	Clients []string `toml:"clients"`
}

// ClientPrefixes returns Clients as prefixes (an address is a /32 or
// /128); Validate has checked them.
func (e *EIR) ClientPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, c := range e.Clients {
		if p, err := parseAddrOrPrefix(c); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func parseAddrOrPrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// CAMARA configures the CAMARA API for enterprise customers and the OAuth2
// authorization server that issues its tokens.
type CAMARA struct {
	// Disabled turns the CAMARA API and the token endpoint off.
	Disabled bool `toml:"disabled"`
	// Issuer is the iss of issued tokens and the base of the discovery
	// document: the verifier's public URL. Default: http(s)://http.listen.
	Issuer string `toml:"issuer"`
	// TokenTTL is the lifetime of client-credentials tokens.
	TokenTTL time.Duration `toml:"token_ttl"`
	// DefaultAreaRadius (metres) is the circle an AREALIMIT bind without
	// limitArea restricts a card to.
	DefaultAreaRadius int `toml:"default_area_radius_m"`
	// DefaultRate (requests/s) and DefaultQuota (requests a day) apply to
	// clients created without their own; 0 is unlimited.
	DefaultRate  float64 `toml:"default_rate"`
	DefaultQuota int64   `toml:"default_quota"`
	// DisabledIdentifiers are device identifiers this deployment does not
	// resolve: phoneNumber, networkAccessIdentifier, ipv4Address,
	// ipv6Address.
	DisabledIdentifiers []string `toml:"disabled_identifiers"`
	// External, when its issuer is set, also accepts tokens of an
	// external OpenID provider.
	External ExternalIdP `toml:"external"`
	// Webhook configures the delivery of subscription events
	// (CloudEvents) to the customers' HTTPS sinks.
	Webhook Webhook `toml:"webhook"`
}

// Webhook configures the delivery of CAMARA subscription events.
type Webhook struct {
	// AllowPrivateSinks lets sinks resolve to loopback, private,
	// link-local and other non-public addresses (tests, private
	// networks). Off, such sinks are refused (SSRF guard).
	AllowPrivateSinks bool `toml:"allow_private_sinks"`
	// CAFile is a PEM file of certificate authorities trusted for sinks,
	// besides the system's.
	CAFile string `toml:"ca_file"`
	// Source is the CloudEvents source of every event. Default: the
	// issuer plus the subscriptions API path when camara.issuer is set,
	// else "urn:cardbind:verifier".
	Source string `toml:"source"`
	// Workers deliver to that many subscriptions at once (each
	// subscription's events go one at a time, in order).
	Workers int `toml:"workers"`
	// Timeout bounds one delivery attempt; MaxAge is how long an event
	// is retried before it is dropped.
	Timeout time.Duration `toml:"timeout"`
	MaxAge  time.Duration `toml:"max_age"`
}

// ExternalIdP is an external OpenID provider whose tokens are accepted.
type ExternalIdP struct {
	Issuer   string `toml:"issuer"`
	Audience string `toml:"audience"`
	JWKSURL  string `toml:"jwks_url"`
}

// RADIUS configures the RADIUS accounting listener (off unless listen is
// set).
type RADIUS struct {
	// Listen is the UDP address, e.g. "0.0.0.0:1813"; empty is off.
	Listen string `toml:"listen"`
	// Clients are the NAS addresses (or CIDR networks) allowed to send
	// accounting, each with its shared secret.
	Clients []RADIUSClient `toml:"clients"`
	// Workers is how many requests are processed at once (0: the
	// server's default, 64).
	Workers int `toml:"workers"`
}

// RADIUSClient is one NAS (or network of them) and its shared secret.
type RADIUSClient struct {
	Address string `toml:"address"`
	Secret  string `toml:"secret"`
}

// HTTP configures the HTTP listener (admin API, enrolment, CAMARA API,
// metrics, health).
type HTTP struct {
	Listen string `toml:"listen"`
	// TLSCert and TLSKey enable HTTPS when both are set.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
}

// MQTT configures the embedded broker's MQTT listener.
type MQTT struct {
	Listen  string `toml:"listen"`
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// CAFile is the PEM CA certificate that signed TLSCert, given to
	// devices at enrolment so that they trust the broker; empty: devices
	// use their system roots.
	CAFile string `toml:"ca_file"`
	// PublicURL is the address devices are told to connect to at
	// enrolment; default derived from Listen.
	PublicURL string `toml:"public_url"`
	// MaxConnections bounds concurrent MQTT sessions.
	MaxConnections int `toml:"max_connections"`
	// SyncAlways makes the broker fsync every stored message before its
	// PUBACK: a PUBACKed report then survives a crash of the machine, not
	// only of the process, at a cost in throughput.
	SyncAlways bool `toml:"sync_always"`
}

// Enforce chooses how cards are blocked and resumed.
type Enforce struct {
	// Adapter is "none" (alert only), "simnet" (the firmware-sim operator
	// network at SimnetURL) or "http" (an operator OSS, see HTTP).
	Adapter   string             `toml:"adapter"`
	SimnetURL string             `toml:"simnet_url"`
	HTTP      enforce.HTTPConfig `toml:"http"`
}

// Ingest tunes report processing.
type Ingest struct {
	// Workers process reports in parallel; one device's reports always go
	// to the same worker, in order. Each waits for its synced commit, so
	// it takes many to keep the CPU busy.
	Workers int `toml:"workers"`
	// EarlyChanges takes reports that say something changed (a SIM
	// swapped, removed, inserted) as the broker receives them, ahead of
	// the heartbeats queued before them.
	EarlyChanges bool `toml:"early_changes"`
}

// StoreConf tunes the store.
type StoreConf struct {
	CacheMB int `toml:"cache_mb"`
	// IMSIInMemory keeps the IMSI index in memory too, so that a RADIUS
	// record finds its card with one read of the store instead of two.
	IMSIInMemory bool `toml:"imsi_in_memory"`
}

// Log configures logging.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text or json
}

// Default returns the configuration that runs out of the box: data under
// ./data, HTTP on 127.0.0.1:8080, MQTT on 127.0.0.1:1883, alert-only
// enforcement.
func Default() Config {
	return Config{
		DataDir: "./data",
		HTTP:    HTTP{Listen: "127.0.0.1:8080"},
		MQTT:    MQTT{Listen: "127.0.0.1:1883", MaxConnections: 200_000},
		Enforce: Enforce{Adapter: "none"},
		Ingest:  Ingest{Workers: 256, EarlyChanges: true},
		Log:     Log{Level: "info", Format: "text"},
		Store:   StoreConf{CacheMB: 64, IMSIInMemory: true},
		CAMARA: CAMARA{TokenTTL: time.Hour, DefaultAreaRadius: 5000,
			Webhook: Webhook{Workers: 8, Timeout: 10 * time.Second, MaxAge: 24 * time.Hour}},
		EIR:       EIR{Enabled: true},
		GCPercent: 200,
	}
}

// Load reads a TOML file over the defaults. Unknown keys are errors, so a
// typo does not silently keep a default.
func Load(path string) (Config, error) {
	cfg := Default()
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&cfg)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return cfg, fmt.Errorf("config %s: %s", path, perr.ErrorWithPosition())
		}
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return cfg, fmt.Errorf("config %s: unknown key %s", path, strings.Join(keys, ", "))
	}
	return cfg, nil
}

// Validate checks the configuration and names the first key at fault.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("config: data_dir: required")
	}
	if err := checkListen("http.listen", c.HTTP.Listen); err != nil {
		return err
	}
	if (c.HTTP.TLSCert == "") != (c.HTTP.TLSKey == "") {
		return errors.New("config: http.tls_cert and http.tls_key: set both or neither")
	}
	if err := checkListen("mqtt.listen", c.MQTT.Listen); err != nil {
		return err
	}
	if (c.MQTT.TLSCert == "") != (c.MQTT.TLSKey == "") {
		return errors.New("config: mqtt.tls_cert and mqtt.tls_key: set both or neither")
	}
	if c.MQTT.CAFile != "" && c.MQTT.TLSCert == "" {
		return errors.New("config: mqtt.ca_file: only meaningful with mqtt.tls_cert and mqtt.tls_key")
	}
	if c.MQTT.PublicURL != "" {
		u, err := url.Parse(c.MQTT.PublicURL)
		if err != nil || (u.Scheme != "tcp" && u.Scheme != "ssl") || u.Host == "" {
			return fmt.Errorf("config: mqtt.public_url: %q: want tcp://host:port or ssl://host:port", c.MQTT.PublicURL)
		}
	}
	if c.MQTT.MaxConnections < 1 {
		return errors.New("config: mqtt.max_connections: must be at least 1")
	}
	switch c.Enforce.Adapter {
	case "none":
	case "simnet":
		u, err := url.Parse(c.Enforce.SimnetURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("config: enforce.simnet_url: %q: want http(s)://host:port", c.Enforce.SimnetURL)
		}
	case "http":
		if _, err := enforce.NewHTTP(c.Enforce.HTTP, nil); err != nil {
			return fmt.Errorf("config: enforce.http: %w", err)
		}
	default:
		return fmt.Errorf("config: enforce.adapter: %q: want none, simnet or http", c.Enforce.Adapter)
	}
	if c.Ingest.Workers < 1 || c.Ingest.Workers > 1024 {
		return errors.New("config: ingest.workers: want 1 to 1024")
	}
	if c.GCPercent != -1 && (c.GCPercent < 25 || c.GCPercent > 10_000) {
		return errors.New("config: gc_percent: want 25 to 10000, or -1 for off")
	}
	if c.Store.CacheMB < 8 {
		return errors.New("config: store.cache_mb: want at least 8")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("config: log.level: %q: want debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return fmt.Errorf("config: log.format: %q: want text or json", c.Log.Format)
	}
	if err := c.CAMARA.validate(); err != nil {
		return err
	}
	if err := c.RADIUS.validate(); err != nil {
		return err
	}
	for i, cl := range c.EIR.Clients {
		if _, err := parseAddrOrPrefix(cl); err != nil {
			return fmt.Errorf("config: eir.clients[%d]: %q: want an IP address or CIDR network", i, cl)
		}
	}
	return nil
}

func (c *CAMARA) validate() error {
	if c.Issuer != "" {
		if u, err := url.Parse(c.Issuer); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("config: camara.issuer: %q: want the verifier's public http(s) URL", c.Issuer)
		}
	}
	if c.TokenTTL < time.Minute || c.TokenTTL > 24*time.Hour {
		return errors.New("config: camara.token_ttl: want 1m to 24h")
	}
	if c.DefaultAreaRadius < 1 || c.DefaultAreaRadius > 200_000 {
		return errors.New("config: camara.default_area_radius_m: want 1 to 200000")
	}
	if c.DefaultRate < 0 {
		return errors.New("config: camara.default_rate: must not be negative")
	}
	if c.DefaultQuota < 0 {
		return errors.New("config: camara.default_quota: must not be negative")
	}
	for _, id := range c.DisabledIdentifiers {
		switch id {
		case "phoneNumber", "networkAccessIdentifier", "ipv4Address", "ipv6Address":
		default:
			return fmt.Errorf("config: camara.disabled_identifiers: %q: want phoneNumber, networkAccessIdentifier, ipv4Address or ipv6Address", id)
		}
	}
	if e := c.External; e.Issuer != "" || e.JWKSURL != "" || e.Audience != "" {
		if e.Issuer == "" || e.JWKSURL == "" || e.Audience == "" {
			return errors.New("config: camara.external: issuer, audience and jwks_url: set all three or none")
		}
		if u, err := url.Parse(e.JWKSURL); err != nil || u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("config: camara.external.jwks_url: %q: want an https URL", e.JWKSURL)
		}
	}
	return c.Webhook.validate()
}

func (w *Webhook) validate() error {
	if w.Workers < 1 || w.Workers > 1024 {
		return errors.New("config: camara.webhook.workers: want 1 to 1024")
	}
	if w.Timeout < time.Second || w.Timeout > 5*time.Minute {
		return errors.New("config: camara.webhook.timeout: want 1s to 5m")
	}
	if w.MaxAge < time.Minute || w.MaxAge > 7*24*time.Hour {
		return errors.New("config: camara.webhook.max_age: want 1m to 168h")
	}
	if w.CAFile != "" {
		if _, err := os.Stat(w.CAFile); err != nil {
			return fmt.Errorf("config: camara.webhook.ca_file: %w", err)
		}
	}
	if w.Source != "" {
		if _, err := url.Parse(w.Source); err != nil || len(w.Source) > 2048 {
			return fmt.Errorf("config: camara.webhook.source: %q: want a URI reference", w.Source)
		}
	}
	return nil
}

func (r *RADIUS) validate() error {
	if r.Workers < 0 || r.Workers > 4096 {
		return fmt.Errorf("config: radius.workers: %d: want 0 (the default) to 4096", r.Workers)
	}
	if r.Listen == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(r.Listen)
	if err != nil || (host != "" && net.ParseIP(host) == nil && host != "localhost") {
		return fmt.Errorf("config: radius.listen: %q: want host:port", r.Listen)
	}
	if _, err := net.LookupPort("udp", port); err != nil {
		return fmt.Errorf("config: radius.listen: %q: bad port", r.Listen)
	}
	if len(r.Clients) == 0 {
		return errors.New("config: radius.clients: at least one client (address and secret) when radius.listen is set")
	}
	for i, cl := range r.Clients {
		if cl.Secret == "" {
			return fmt.Errorf("config: radius.clients[%d].secret: required", i)
		}
		if _, err := netip.ParsePrefix(cl.Address); err != nil {
			if _, err := netip.ParseAddr(cl.Address); err != nil {
				return fmt.Errorf("config: radius.clients[%d].address: %q: want an IP address or CIDR network", i, cl.Address)
			}
		}
	}
	return nil
}

// BrokerURL is the MQTT address devices are told at enrolment.
func (c *Config) BrokerURL(actual string) string {
	if c.MQTT.PublicURL != "" {
		return c.MQTT.PublicURL
	}
	scheme := "tcp"
	if c.MQTT.TLSCert != "" {
		scheme = "ssl"
	}
	return scheme + "://" + actual
}

func checkListen(key, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("config: %s: %q: want host:port", key, addr)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return fmt.Errorf("config: %s: %q: host must be an IP address or empty", key, addr)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("config: %s: %q: bad port", key, addr)
	}
	return nil
}

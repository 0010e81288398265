package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "verifier.toml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := c.BrokerURL("127.0.0.1:1883"); got != "tcp://127.0.0.1:1883" {
		t.Errorf("BrokerURL = %q", got)
	}
}

func TestLoad(t *testing.T) {
	c, err := Load(write(t, `
data_dir = "/var/lib/cardbind"
[mqtt]
listen = "0.0.0.0:8883"
tls_cert = "c.pem"
tls_key = "k.pem"
[enforce]
adapter = "http"
[enforce.http]
block_url = "https://oss.example/cards/{{.ICCID}}/suspend"
resume_url = "https://oss.example/cards/{{.ICCID}}/restore"
timeout = "3s"
headers = { Authorization = "Bearer x" }
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/var/lib/cardbind" || c.HTTP.Listen != "127.0.0.1:8080" || c.Enforce.HTTP.Timeout != 3*time.Second ||
		c.Enforce.HTTP.Headers["Authorization"] != "Bearer x" {
		t.Errorf("loaded %+v", c)
	}
	if got := c.BrokerURL("0.0.0.0:8883"); got != "ssl://0.0.0.0:8883" {
		t.Errorf("BrokerURL = %q", got)
	}
}

func TestLoadCAMARAAndRADIUS(t *testing.T) {
	c, err := Load(write(t, `
[camara]
issuer = "https://api.example.com"
token_ttl = "30m"
disabled_identifiers = ["networkAccessIdentifier"]
[camara.webhook]
allow_private_sinks = true
max_age = "2h"
[radius]
listen = "0.0.0.0:1813"
clients = [
  { address = "10.20.0.0/16", secret = "pgw-secret" },
  { address = "192.0.2.7", secret = "ggsn-secret" },
]
workers = 128
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.CAMARA.TokenTTL != 30*time.Minute || c.CAMARA.DefaultAreaRadius != 5000 || len(c.RADIUS.Clients) != 2 ||
		!c.CAMARA.Webhook.AllowPrivateSinks || c.CAMARA.Webhook.MaxAge != 2*time.Hour || c.CAMARA.Webhook.Workers != 8 ||
		c.RADIUS.Clients[1].Secret != "ggsn-secret" || c.RADIUS.Workers != 128 {
		t.Errorf("loaded %+v", c)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := map[string]string{
		`data_dirr = "x"`:                   "unknown key data_dirr",
		"[mqtt]\nlisten = 1883":             "mqtt.listen",
		`data_dir = "x`:                     "line 1",
		"[enforce.http]\ntimeout = \"3 s\"": "timeout",
	}
	for in, want := range tests {
		if _, err := Load(write(t, in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load(%q) = %v, want error containing %q", in, err, want)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		change func(c *Config)
		want   string
	}{
		{func(c *Config) { c.DataDir = "" }, "data_dir"},
		{func(c *Config) { c.HTTP.Listen = "8080" }, "http.listen"},
		{func(c *Config) { c.HTTP.Listen = "example.com:80" }, "http.listen"},
		{func(c *Config) { c.HTTP.TLSCert = "c.pem" }, "http.tls_cert"},
		{func(c *Config) { c.MQTT.Listen = "127.0.0.1:port" }, "mqtt.listen"},
		{func(c *Config) { c.MQTT.TLSKey = "k.pem" }, "mqtt.tls_cert"},
		{func(c *Config) { c.MQTT.PublicURL = "http://x" }, "mqtt.public_url"},
		{func(c *Config) { c.MQTT.MaxConnections = 0 }, "mqtt.max_connections"},
		{func(c *Config) { c.Enforce.Adapter = "carrier-pigeon" }, "enforce.adapter"},
		{func(c *Config) { c.Enforce.Adapter = "simnet" }, "enforce.simnet_url"},
		{func(c *Config) { c.Enforce.Adapter = "http" }, "enforce.http"},
		{func(c *Config) { c.Ingest.Workers = 0 }, "ingest.workers"},
		{func(c *Config) { c.Store.CacheMB = 1 }, "store.cache_mb"},
		{func(c *Config) { c.GCPercent = 0 }, "gc_percent"},
		{func(c *Config) { c.Log.Level = "loud" }, "log.level"},
		{func(c *Config) { c.Log.Format = "xml" }, "log.format"},
		{func(c *Config) { c.CAMARA.Issuer = "api.example.com" }, "camara.issuer"},
		{func(c *Config) { c.CAMARA.TokenTTL = time.Second }, "camara.token_ttl"},
		{func(c *Config) { c.CAMARA.DefaultAreaRadius = 0 }, "camara.default_area_radius_m"},
		{func(c *Config) { c.CAMARA.DefaultRate = -1 }, "camara.default_rate"},
		{func(c *Config) { c.CAMARA.DefaultQuota = -1 }, "camara.default_quota"},
		{func(c *Config) { c.CAMARA.DisabledIdentifiers = []string{"imei"} }, "camara.disabled_identifiers"},
		{func(c *Config) { c.CAMARA.External.Issuer = "https://idp.example" }, "camara.external"},
		{func(c *Config) {
			c.CAMARA.External = ExternalIdP{Issuer: "https://idp", Audience: "a", JWKSURL: "http://idp/jwks"}
		}, "camara.external.jwks_url"},
		{func(c *Config) { c.CAMARA.Webhook.Workers = 0 }, "camara.webhook.workers"},
		{func(c *Config) { c.CAMARA.Webhook.Timeout = 0 }, "camara.webhook.timeout"},
		{func(c *Config) { c.CAMARA.Webhook.MaxAge = time.Second }, "camara.webhook.max_age"},
		{func(c *Config) { c.CAMARA.Webhook.CAFile = "/no/such/ca.pem" }, "camara.webhook.ca_file"},
		{func(c *Config) { c.RADIUS.Listen = ":1813" }, "radius.clients"},
		{func(c *Config) { c.RADIUS.Listen = "1813" }, "radius.listen"},
		{func(c *Config) { c.RADIUS.Workers = -1 }, "radius.workers"},
		{func(c *Config) {
			c.RADIUS = RADIUS{Listen: ":1813", Clients: []RADIUSClient{{Address: "10.0.0.0/8"}}}
		}, "radius.clients[0].secret"},
		{func(c *Config) {
			c.RADIUS = RADIUS{Listen: ":1813", Clients: []RADIUSClient{{Address: "pgw-1", Secret: "s"}}}
		}, "radius.clients[0].address"},
		{func(c *Config) { c.EIR.Clients = []string{"10.0.0.0/8", "amf-1"} }, "eir.clients[1]"},
	}
	for _, tt := range tests {
		c := Default()
		tt.change(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("want error naming %s, got %v", tt.want, err)
		}
	}
}

func TestLoadEIR(t *testing.T) {
	if d := Default(); !d.EIR.Enabled || len(d.EIR.ClientPrefixes()) != 0 {
		t.Errorf("default eir = %+v, want enabled for loopback only", d.EIR)
	}
	c, err := Load(write(t, "[eir]\nenabled = false\nclients = [\"10.30.0.0/16\", \"192.0.2.9\", \"2001:db8::1\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range c.EIR.ClientPrefixes() {
		got = append(got, p.String())
	}
	if c.EIR.Enabled || strings.Join(got, " ") != "10.30.0.0/16 192.0.2.9/32 2001:db8::1/128" {
		t.Errorf("eir = %+v, prefixes %v", c.EIR, got)
	}
}

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
		{func(c *Config) { c.Log.Level = "loud" }, "log.level"},
		{func(c *Config) { c.Log.Format = "xml" }, "log.format"},
	}
	for _, tt := range tests {
		c := Default()
		tt.change(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("want error naming %s, got %v", tt.want, err)
		}
	}
}

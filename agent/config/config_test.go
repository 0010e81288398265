package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		check   func(c Config) bool
		wantErr string // substring naming the key; "" for success
	}{
		{name: "empty keeps defaults", toml: "", check: func(c Config) bool { return c.Report.Heartbeat == 5*time.Minute && c.Modem.Baud == 115200 }},
		{name: "full", toml: `
state_dir = "/tmp/s"
[modem]
source = "modemmanager"
dbus_address = "unix:path=/run/dbus/system_bus_socket"
select = "cdc-wdm0"
port = "/dev/ttyQ"
baud = 9600
radio_timeout = "45s"
allow_radio = true
reopen_max = "5s"
[report]
heartbeat = "1m"
poll = "10s"
cell_change_interval = "0s"
broker_url = "ssl://iot.example.net:8883"
keepalive = "30s"
min_backoff = "200ms"
max_backoff = "10s"
flush_timeout = "1s"
[outbox]
limit = 50
[log]
level = "debug"
format = "json"
`, check: func(c Config) bool {
			return c.StateDir == "/tmp/s" && c.Modem.Source == "modemmanager" && c.Modem.Select == "cdc-wdm0" &&
				c.Modem.DBusAddress == "unix:path=/run/dbus/system_bus_socket" && c.Modem.Port == "/dev/ttyQ" && c.Modem.Baud == 9600 &&
				c.Modem.RadioTimeout == 45*time.Second && c.Modem.AllowRadio && c.Modem.ReopenMax == 5*time.Second &&
				c.Report.Heartbeat == time.Minute && c.Report.Poll == 10*time.Second && c.Report.CellChangeInterval == 0 &&
				c.Report.BrokerURL == "ssl://iot.example.net:8883" && c.Report.KeepAlive == 30*time.Second &&
				c.Report.MinBackoff == 200*time.Millisecond && c.Report.MaxBackoff == 10*time.Second &&
				c.Report.FlushTimeout == time.Second && c.Outbox.Limit == 50 && c.Log.Level == "debug" && c.Log.Format == "json"
		}},
		{name: "unknown key", toml: "[report]\nheartbeet = \"1m\"\n", wantErr: "unknown key report.heartbeet"},
		{name: "bad duration", toml: "[report]\nheartbeat = \"soon\"\n", wantErr: "heartbeat"},
		{name: "syntax", toml: "[report\n", wantErr: "At line 2"},
		{name: "wrong type", toml: "[modem]\nbaud = \"fast\"\n", wantErr: "baud"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("agent.toml", []byte(tc.toml))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse = %v, want an error mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("parsed %+v", c)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestValidateNamesTheKey(t *testing.T) {
	tests := []struct {
		key    string
		mutate func(c *Config)
	}{
		{"state_dir", func(c *Config) { c.StateDir = "" }},
		{"modem.port", func(c *Config) { c.Modem.Port = "" }},
		{"modem.source", func(c *Config) { c.Modem.Source = "qmi" }},
		{"modem.baud", func(c *Config) { c.Modem.Baud = 7 }},
		{"modem.radio_timeout", func(c *Config) { c.Modem.RadioTimeout = 0 }},
		{"modem.reopen_max", func(c *Config) { c.Modem.ReopenMax = time.Nanosecond }},
		{"report.heartbeat", func(c *Config) { c.Report.Heartbeat = 0 }},
		{"report.poll", func(c *Config) { c.Report.Poll = -time.Second }},
		{"report.cell_change_interval", func(c *Config) { c.Report.CellChangeInterval = -time.Second }},
		{"report.broker_url", func(c *Config) { c.Report.BrokerURL = "http://x" }},
		{"report.keepalive", func(c *Config) { c.Report.KeepAlive = time.Second }},
		{"report.min_backoff", func(c *Config) { c.Report.MinBackoff = 0 }},
		{"report.max_backoff", func(c *Config) { c.Report.MaxBackoff = time.Millisecond * 500 }},
		{"report.flush_timeout", func(c *Config) { c.Report.FlushTimeout = time.Hour }},
		{"outbox.limit", func(c *Config) { c.Outbox.Limit = 0 }},
		{"log.level", func(c *Config) { c.Log.Level = "verbose" }},
		{"log.format", func(c *Config) { c.Log.Format = "xml" }},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			c := Default()
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), "config: "+tc.key+":") {
				t.Errorf("Validate = %v, want an error naming %s", err, tc.key)
			}
		})
	}
}

// The modemmanager source needs no AT port.
func TestModemManagerNeedsNoPort(t *testing.T) {
	c := Default()
	c.Modem.Source, c.Modem.Port = "modemmanager", ""
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(path, []byte("[modem]\nport = \"/dev/ttyACM0\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil || c.Modem.Port != "/dev/ttyACM0" {
		t.Fatalf("Load = %+v, %v", c.Modem, err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); err == nil {
		t.Error("Load of a missing file succeeded")
	}
	c.Report.CAFile = filepath.Join(dir, "missing.pem")
	if _, err := c.CACert(); err == nil || !strings.Contains(err.Error(), "report.ca_file") {
		t.Errorf("CACert = %v, want an error naming report.ca_file", err)
	}
}

// FuzzParse: any input either fails to parse or gives a configuration
// whose validation does not panic; parsing never panics.
func FuzzParse(f *testing.F) {
	f.Add([]byte("[report]\nheartbeat = \"1m\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data)
		if err != nil {
			if c != Default() {
				t.Fatalf("failed Parse returned a changed config")
			}
			return
		}
		_ = c.Validate()
	})
}

// Package packaging holds the files that install cardbind-agent on a
// gateway: the systemd unit, the sysusers file, the OpenWrt procd script
// and the example configuration. The tests keep them consistent with the
// agent's configuration keys and with each other.
package packaging

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/cardbind/cardbind/agent/config"
)

// unitDirectives returns the unit's "Key=value" lines, keyed by Key.
func unitDirectives(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open("cardbind-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("unit line %q is not Key=value", line)
		}
		out[k] = append(out[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestExampleConfig: the example loads and validates with the agent's own
// configuration code, and its state directory is the one the unit lets
// the agent write.
func TestExampleConfig(t *testing.T) {
	cfg, err := config.Load("agent.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	u := unitDirectives(t)
	rw := u["ReadWritePaths"]
	if len(rw) != 1 || rw[0] != cfg.StateDir {
		t.Errorf("unit ReadWritePaths = %v, example state_dir = %q", rw, cfg.StateDir)
	}
	if sd := u["StateDirectory"]; len(sd) != 1 || "/var/lib/"+sd[0] != cfg.StateDir {
		t.Errorf("unit StateDirectory = %v, example state_dir = %q", sd, cfg.StateDir)
	}
	// The example claims to show the defaults.
	if !reflect.DeepEqual(cfg, config.Default()) {
		t.Errorf("example differs from the defaults:\n got %+v\nwant %+v", cfg, config.Default())
	}
}

// TestExampleShowsEveryKey: every key agent/config knows is in the example,
// set or commented out, so the example documents them all; a key added to
// agent/config fails here until the example shows it.
func TestExampleShowsEveryKey(t *testing.T) {
	data, err := os.ReadFile("agent.toml")
	if err != nil {
		t.Fatal(err)
	}
	var set map[string]any
	if _, err := toml.Decode(string(data), &set); err != nil {
		t.Fatal(err)
	}
	shown := map[string]bool{}
	var flatten func(prefix string, m map[string]any)
	flatten = func(prefix string, m map[string]any) {
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				flatten(prefix+k+".", sub)
				continue
			}
			shown[prefix+k] = true
		}
	}
	flatten("", set)
	for _, key := range tomlKeys("", reflect.TypeFor[config.Config]()) {
		if shown[key] {
			continue
		}
		// A commented-out key ("# broker_url = ...") in its table counts.
		name := key[strings.LastIndex(key, ".")+1:]
		if !strings.Contains(string(data), "# "+name+" = ") {
			t.Errorf("key %s is not in the example", key)
		}
	}
}

// tomlKeys lists the dotted TOML keys of a configuration struct.
func tomlKeys(prefix string, typ reflect.Type) []string {
	var keys []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == typ.PkgPath() {
			keys = append(keys, tomlKeys(prefix+name+".", f.Type)...)
			continue
		}
		keys = append(keys, prefix+name)
	}
	return keys
}

// TestUnitHardening checks the settings issue 4 asks for, so an edit that
// drops one fails.
func TestUnitHardening(t *testing.T) {
	u := unitDirectives(t)
	want := map[string]string{
		"User":                    "cardbind",
		"SupplementaryGroups":     "dialout",
		"Restart":                 "always",
		"Wants":                   "network-online.target",
		"ProtectSystem":           "strict",
		"NoNewPrivileges":         "yes",
		"PrivateTmp":              "yes",
		"ProtectHome":             "yes",
		"CapabilityBoundingSet":   "",
		"StartLimitIntervalSec":   "0",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
	}
	for k, v := range want {
		if got := u[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %v, want %q", k, got, v)
		}
	}
	if after := strings.Join(u["After"], " "); !strings.Contains(after, "network-online.target") {
		t.Errorf("After = %q, want network-online.target in it", after)
	}
	if es := strings.Join(u["ExecStart"], ""); !strings.Contains(es, " run --config /etc/cardbind/agent.toml") {
		t.Errorf("ExecStart = %q", es)
	}
}

// TestUnitVerifies runs systemd-analyze verify on the unit when systemd is
// installed, with a stand-in executable (verify checks that it exists).
func TestUnitVerifies(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	unit, err := os.ReadFile("cardbind-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "cardbind-agent")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit = []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/cardbind-agent", bin))
	path := filepath.Join(dir, "cardbind-agent.service")
	if err := os.WriteFile(path, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", path).CombinedOutput()
	// Lines about units other than ours come from the host's own units.
	var ours []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(line, "cardbind-agent") {
			ours = append(ours, line)
		}
	}
	if err != nil || len(ours) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, strings.Join(ours, "\n"))
	}
}

// TestInitScript runs the procd script's start_service under sh with
// procd's functions stubbed: what it hands procd, and that it refuses to
// start without a configuration or without its user (procd would then run
// the agent as root).
func TestInitScript(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (start_service chowns the state directory)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(conf, []byte("state_dir = \"/x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const harness = `procd_open_instance() { echo open; }
procd_close_instance() { echo close; }
procd_set_param() { echo "param $*"; }
. ./cardbind-agent.init
CONF=$1 STATE=$2 AGENT_USER=$3
start_service`
	tests := []struct {
		name, conf, user string
		wantOK           bool
		want             []string
	}{
		{"starts", conf, "root", true, []string{
			"open",
			"param command /usr/bin/cardbind-agent run --config " + conf,
			"param respawn 3600 5 0",
			"param user root",
			"param reload_signal HUP",
			"param file " + conf,
			"close",
		}},
		{"no configuration", filepath.Join(dir, "missing.toml"), "root", false, nil},
		{"no user", conf, "cardbind-no-such-user", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			out, err := exec.Command("sh", "-c", harness, "sh", tt.conf, state, tt.user).CombinedOutput()
			if (err == nil) != tt.wantOK {
				t.Fatalf("start_service: err %v, want ok %v\n%s", err, tt.wantOK, out)
			}
			if !tt.wantOK {
				if strings.Contains(string(out), "open") {
					t.Errorf("refused, yet opened an instance:\n%s", out)
				}
				return
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w+"\n") {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			fi, err := os.Stat(state)
			if err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("state directory: %v %v, want mode 0700", fi, err)
			}
		})
	}
}

// TestInitScriptSyntax checks the procd script with sh -n.
func TestInitScriptSyntax(t *testing.T) {
	out, err := exec.Command("sh", "-n", "cardbind-agent.init").CombinedOutput()
	if err != nil {
		t.Fatalf("sh -n: %v\n%s", err, out)
	}
}

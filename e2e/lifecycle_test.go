package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The verifier starts on its defaults with data in ./data, prints the
// operator credential once (mode 0600 file), and ends cleanly on SIGTERM.
func TestVerifierDefaultsAndCleanStop(t *testing.T) {
	httpAddr, mqttAddr := freeAddr(t), freeAddr(t)
	p := start(t, "cardbind-verifier", "serve", "--http", httpAddr, "--mqtt", mqttAddr)
	waitHTTP(t, "http://"+httpAddr+"/readyz", p)
	tokenFile := filepath.Join(p.cmd.Dir, "data", "operator-token")
	st, err := os.Stat(tokenFile)
	if err != nil {
		t.Fatalf("no operator credential in ./data: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("operator-token mode %v, want 0600", st.Mode().Perm())
	}
	token := strings.TrimSpace(readFile(t, tokenFile))
	if !strings.Contains(p.output(), token) {
		t.Error("the operator credential was not printed on first start")
	}

	begin := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatal("verifier did not stop within 15s of SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	t.Logf("stopped %v after SIGTERM", time.Since(begin).Round(time.Millisecond))

	// Second start on the same data: the credential is kept, not printed.
	again := &proc{name: "cardbind-verifier", done: make(chan struct{})}
	again.cmd = exec.Command(bin["cardbind-verifier"], "serve", "--http", httpAddr, "--mqtt", mqttAddr)
	again.cmd.Dir = p.cmd.Dir
	again.cmd.Stdout, again.cmd.Stderr = again, again
	if err := again.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = again.cmd.Wait(); close(again.done) }()
	defer again.stop(5 * time.Second)
	waitHTTP(t, "http://"+httpAddr+"/readyz", again)
	if strings.Contains(again.output(), token) || strings.TrimSpace(readFile(t, tokenFile)) != token {
		t.Error("restart printed or replaced the operator credential")
	}
}

// A bad configuration stops the verifier at start with the key named.
func TestVerifierRefusesBadConfig(t *testing.T) {
	tests := map[string]string{
		"data_dirr = \"x\"\n":                        "data_dirr",
		"[enforce]\nadapter = \"carrier-pigeon\"\n":  "enforce.adapter",
		"[radius]\nlisten = \"127.0.0.1:0\"\n":       "radius.clients",
		"[camara]\ntoken_ttl = \"1s\"\n":             "camara.token_ttl",
		"[http]\nlisten = \"not an address\"\n":      "http.listen",
		"[mqtt]\ntls_cert = \"only-the-cert.pem\"\n": "mqtt.tls_cert",
		"[store]\ncache_mb = 1\n":                    "store.cache_mb",
		"[log]\nlevel = \"chatty\"\n":                "log.level",
	}
	for body, key := range tests {
		dir := t.TempDir()
		file := filepath.Join(dir, "verifier.toml")
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin["cardbind-verifier"], "serve", "--config", file)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("config %q: exit %v, want a failure", body, err)
			continue
		}
		if !strings.Contains(string(out), key) {
			t.Errorf("config %q: output %q does not name %s", body, out, key)
		}
		if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
			t.Errorf("config %q: a data directory was created before the config was checked", body)
		}
	}
}

package broker

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// TestMosquittoSubSeesAlerts runs the Debian mosquitto_sub as a tenant's
// alert subscriber (scripts/install-test-deps.sh installs it).
func TestMosquittoSubSeesAlerts(t *testing.T) {
	bin, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		t.Skip("mosquitto_sub not installed (Debian package mosquitto-clients; scripts/install-test-deps.sh)")
	}
	b := startBroker(t, Config{}, testAuth(t))
	host, port, _ := net.SplitHostPort(b.MQTTAddr())

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-V", "mqttv311", "-h", host, "-p", port,
		"-u", "t1-watch", "-P", secretT1, "-q", "1", "-t", protocol.AlertFilter("t1"),
		"-C", "1", "-v")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	// mosquitto_sub subscribes some time after it starts; publish until it
	// has seen one (alerts are at-least-once anyway).
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("mosquitto_sub: %v\n%s", err, out.String())
			}
			if want := "cardbind/v1/tenants/t1/alerts/blocked {\"id\":\"a1\"}"; !strings.Contains(out.String(), want) {
				t.Fatalf("mosquitto_sub printed %q, want %q", out.String(), want)
			}
			return
		case <-tick.C:
			if err := b.PublishAlert(ctx, "t1", protocol.AlertBlocked, "a1", []byte(`{"id":"a1"}`)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// writeSelfSigned writes a certificate for 127.0.0.1 and its key into dir.
func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "cardbind test broker"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTLSListener: with a certificate the listener speaks TLS only; a
// device's report and the broker's own alert publisher both work over it.
func TestTLSListener(t *testing.T) {
	certFile, keyFile, pool := writeSelfSigned(t, t.TempDir())
	b := startBroker(t, Config{TLSCertFile: certFile, TLSKeyFile: keyFile}, testAuth(t))
	reports, _ := collectReports(t, b, true)

	tlsDial := func(user, pass string) mqtt.Client {
		o := mqtt.NewClientOptions().AddBroker("ssl://" + b.MQTTAddr()).
			SetClientID(user).SetUsername(user).SetPassword(pass).
			SetProtocolVersion(4).SetAutoReconnect(false).
			SetTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
		c := mqtt.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("TLS connect: %v", tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(50) })
		return c
	}
	d1 := tlsDial("d1", secretD1)
	mustPublish(t, d1, protocol.ReportTopic("d1"), 1, []byte("over tls"))
	if r := waitReport(t, reports); r != (report{"d1", "over tls"}) {
		t.Fatalf("got %+v", r)
	}

	got := make(chan string, 1)
	t1 := tlsDial("t1-watch", secretT1)
	subscribe(t, t1, protocol.AlertFilter("t1"), 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) })
	if err := b.PublishAlert(context.Background(), "t1", protocol.AlertBlocked, "a1", []byte("tls alert")); err != nil {
		t.Fatal(err)
	}
	if p := receive(t, got, "alert over TLS"); p != "tls alert" {
		t.Fatalf("got %q", p)
	}

	// Plain MQTT is not served.
	if _, err := dial(t, b.MQTTAddr(), clientOpts{user: "d1", pass: secretD1}); err == nil {
		t.Fatal("plain MQTT accepted on the TLS listener")
	}
}

// TestMosquittoSubClientIDRefused: mosquitto_sub with tenant t2's
// credential and the client id of t1's console is refused with "not
// authorised" (what docs/operations.md quotes), and the console stays.
func TestMosquittoSubClientIDRefused(t *testing.T) {
	bin, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		t.Skip("mosquitto_sub not installed (Debian package mosquitto-clients; scripts/install-test-deps.sh)")
	}
	b := startBroker(t, Config{}, testAuth(t))
	host, port, _ := net.SplitHostPort(b.MQTTAddr())
	lost := make(chan string, 1)
	console := dialWatched(t, b.MQTTAddr(), clientOpts{id: "t1-console", user: "t1-watch", pass: secretT1, persist: true},
		func(mqtt.Client, error) { lost <- "t1-console" })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-V", "mqttv311", "-h", host, "-p", port,
		"-u", "t2-watch", "-P", secretT2, "-q", "1", "-c", "-i", "t1-console",
		"-t", protocol.AlertFilter("t2"), "-C", "1").CombinedOutput()
	if err == nil {
		t.Fatalf("mosquitto_sub connected with another tenant's client id:\n%s", out)
	}
	t.Logf("mosquitto_sub: %s", bytes.TrimSpace(out))
	if !strings.Contains(string(out), "not authorised") {
		t.Errorf("mosquitto_sub said %q, want it to say \"not authorised\"", out)
	}
	if n := b.Stats().ClientIDRefused; n != 1 {
		t.Errorf("ClientIDRefused = %d, want 1", n)
	}
	noMore(t, lost, 200*time.Millisecond)
	if !console.IsConnectionOpen() {
		t.Fatal("the console was disconnected")
	}
}

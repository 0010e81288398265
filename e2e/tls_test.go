package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and its
// key, PEM, into dir.
func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cardbind e2e broker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "broker.pem"), filepath.Join(dir, "broker-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// The agent reports over MQTT with TLS: the verifier's broker listens with
// a private certificate, hands its CA to the device at enrolment, and the
// agent verifies the broker with it. A plain-TCP client gets nowhere.
func TestAgentReportsOverTLS(t *testing.T) {
	network, netURL := startNetwork(t)
	dir := t.TempDir()
	certFile, keyFile := writeSelfSigned(t, dir)
	v := &verifier{dataDir: filepath.Join(dir, "data"), netURL: netURL, httpAddr: freeAddr(t), mqttAddr: freeAddr(t)}
	cfgFile := filepath.Join(dir, "verifier.toml")
	cfg := fmt.Sprintf(`data_dir = %q
[http]
listen = %q
[mqtt]
listen = %q
tls_cert = %q
tls_key = %q
ca_file = %q
[enforce]
adapter = "simnet"
simnet_url = %q
`, v.dataDir, v.httpAddr, v.mqttAddr, certFile, keyFile, certFile, netURL)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	v.proc = start(t, "cardbind-verifier", "serve", "--config", cfgFile)
	waitHTTP(t, "http://"+v.httpAddr+"/readyz", v.proc)
	v.admin = api{t: t, base: "http://" + v.httpAddr, token: strings.TrimSpace(readFile(t, filepath.Join(v.dataDir, "operator-token")))}
	v.admin.must("POST", "/admin/v1/tenants", map[string]string{"id": "fleet"}, nil)

	r := newRig(t, v, network, "ublox", 8)
	r.enroll()
	creds := readFile(t, filepath.Join(r.stateDir, "credentials.json"))
	if !strings.Contains(creds, "ssl://") || !strings.Contains(creds, "BEGIN CERTIFICATE") {
		t.Fatalf("enrolment did not hand out an ssl:// broker and its CA:\n%s", creds)
	}
	begin := time.Now()
	r.run()
	r.seenAfter(r.home, begin, 20*time.Second)
	t0 := time.Now()
	r.swap(r.other)
	r.seenAfter(r.other, t0, 10*time.Second)
	eventually(t, 10*time.Second, "home card blocked", func() bool { return r.blocked(r.home) })

	// The listener speaks TLS only.
	conn, err := net.DialTimeout("tcp", v.mqttAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// An MQTT 3.1.1 CONNECT in the clear gets no CONNACK.
	_, _ = conn.Write([]byte{0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x04, 'e', '2', 'e', 'x'})
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4)
	if n, _ := conn.Read(buf); n >= 2 && buf[0] == 0x20 {
		t.Error("plain-TCP MQTT CONNECT got a CONNACK from the TLS listener")
	}
	// And TLS with the wrong trust fails the handshake.
	_, err = tls.Dial("tcp", v.mqttAddr, &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12})
	if err == nil {
		t.Error("TLS handshake succeeded without trusting the broker's CA")
	}
}

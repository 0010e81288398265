// Package sink is a customer's CloudEvents webhook endpoint, for tests and
// demos of cardbind's CAMARA subscriptions: an HTTPS server with a
// self-signed certificate made at start, which checks the bearer token the
// subscription's sink credential names, keeps every event it receives and
// hands each to a callback.
package sink

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"net"
	"net/http"
	"sync"
	"time"
)

// Event is a received CloudEvent (structured mode), with the fields a
// reader of the demo wants and the raw body.
type Event struct {
	ID          string          `json:"id"`
	Source      string          `json:"source"`
	Type        string          `json:"type"`
	SpecVersion string          `json:"specversion"`
	Time        string          `json:"time"`
	Data        json.RawMessage `json:"data"`
	Raw         json.RawMessage `json:"-"`
}

// Config configures a Sink.
type Config struct {
	// Token is the bearer token requests must carry; empty accepts any.
	Token string
	// Status is what the sink answers to accepted events (default 204);
	// 410 tells cardbind to end the subscription.
	Status int
	// OnEvent, if set, is called for every accepted event.
	OnEvent func(Event)
}

// Sink is a running HTTPS CloudEvents receiver.
type Sink struct {
	cfg     Config
	certPEM []byte
	srv     *http.Server
	ln      net.Listener

	mu     sync.Mutex
	events []Event
	status int
}

// Start listens on addr (HTTPS, certificate for 127.0.0.1, ::1 and
// localhost) and serves until Close.
func Start(addr string, cfg Config) (*Sink, error) {
	if cfg.Status == 0 {
		cfg.Status = http.StatusNoContent
	}
	cert, certPEM, err := selfSigned()
	if err != nil {
		return nil, fmt.Errorf("sink: certificate: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sink: listen: %w", err)
	}
	s := &Sink{cfg: cfg, certPEM: certPEM, ln: ln, status: cfg.Status}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() { _ = s.srv.ServeTLS(ln, "", "") }()
	return s, nil
}

// URL is the sink's https URL.
func (s *Sink) URL() string { return "https://" + s.ln.Addr().String() }

// CertPEM is the sink's certificate, for the verifier to trust.
func (s *Sink) CertPEM() []byte { return s.certPEM }

// SetStatus changes what accepted events are answered with, e.g. 503 to
// play a sink that is down, or 410 to end the subscription.
func (s *Sink) SetStatus(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = code
}

// Events returns the events accepted so far.
func (s *Sink) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.events...)
}

// Close stops the server.
func (s *Sink) Close(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// maxEvent bounds a request body.
const maxEvent = 256 << 10

// ServeHTTP accepts POSTed structured-mode CloudEvents.
func (s *Sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST CloudEvents here", http.StatusMethodNotAllowed)
		return
	}
	if s.cfg.Token != "" && r.Header.Get("Authorization") != "Bearer "+s.cfg.Token {
		http.Error(w, "bearer token missing or wrong", http.StatusUnauthorized)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/cloudevents+json" {
		http.Error(w, "want Content-Type application/cloudevents+json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxEvent+1))
	if err != nil || len(body) > maxEvent {
		http.Error(w, "body unreadable or too large", http.StatusBadRequest)
		return
	}
	ev, err := parse(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	status := s.status
	if status < 300 {
		s.events = append(s.events, ev)
	}
	s.mu.Unlock()
	if status < 300 && s.cfg.OnEvent != nil {
		s.cfg.OnEvent(ev)
	}
	w.WriteHeader(status)
}

// parse decodes a CloudEvent and checks its required attributes.
func parse(body []byte) (Event, error) {
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil {
		return ev, fmt.Errorf("not a JSON CloudEvent: %w", err)
	}
	switch {
	case ev.SpecVersion != "1.0":
		return ev, fmt.Errorf("specversion %q: want 1.0", ev.SpecVersion)
	case ev.ID == "", ev.Source == "", ev.Type == "":
		return ev, errors.New("id, source and type are required")
	}
	ev.Raw = append(json.RawMessage(nil), body...)
	return ev, nil
}

// selfSigned makes an ECDSA P-256 certificate for the loopback names.
func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "firmware-sim sink"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, certPEM, nil
}

// Package service is the verifier's application layer: what operators (the
// admin API and CLI) and customers (the CAMARA API) can do — tenants,
// alert-subscriber credentials, device enrolment, bindings, manual blocks,
// card history — on top of the store and the ingest path. It knows nothing
// of HTTP; the API packages map its errors to status codes.
package service

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/engine"
	"github.com/cardbind/cardbind/verifier/sigcheck"
)

// Errors the service returns besides verifier.ErrNotFound and
// verifier.ErrExists.
var (
	// ErrNotBound: unbinding a card that has no binding.
	ErrNotBound = errors.New("card is not bound")
	// ErrInvalid: the request is malformed; the message says why.
	ErrInvalid = errors.New("invalid request")
	// ErrTokenInvalid: an enrolment token is unknown, used or expired.
	ErrTokenInvalid = errors.New("enrolment token is unknown, used or expired")
)

// Observer applies an operator's observation (manual block or resume)
// through the ingest path; *ingest.Ingest implements it.
type Observer interface {
	Observe(ctx context.Context, obs verifier.Observation, tenant string) (engine.Outcome, error)
}

// Config is what the service tells enrolling devices.
type Config struct {
	// BrokerURL returns the MQTT address devices connect to.
	BrokerURL func() string
	// CACertPEM is given to devices when the broker uses a private CA.
	CACertPEM string
	// CommandKey signs commands to devices.
	CommandKey ed25519.PrivateKey
	// PublishCommand sends a signed command to a device's command topic.
	PublishCommand func(ctx context.Context, deviceID string, payload []byte) error
}

// Service is the verifier's application layer.
type Service struct {
	store   verifier.Store
	observe Observer
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
}

// New returns a Service.
func New(store verifier.Store, observe Observer, cfg Config, log *slog.Logger, now func() time.Time) *Service {
	return &Service{store: store, observe: observe, cfg: cfg, log: log, now: now}
}

// Record namespaces.
const (
	nsTenant     = "tenant"
	nsSubscriber = "subscriber"
	nsToken      = "enroll-token"
)

// Tenant is a customer owning cards.
type Tenant struct {
	ID      string    `json:"id"`
	Name    string    `json:"name,omitempty"`
	Created time.Time `json:"created"`
}

// CreateTenant creates a tenant; ErrExists when the id is taken.
func (s *Service) CreateTenant(ctx context.Context, id, name string) (*Tenant, error) {
	if err := protocol.ValidateID("tenant id", id); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(name) > 200 {
		return nil, fmt.Errorf("%w: tenant name longer than 200 characters", ErrInvalid)
	}
	if _, err := s.store.GetRecord(ctx, nsTenant, id); err == nil {
		return nil, fmt.Errorf("tenant %s: %w", id, verifier.ErrExists)
	} else if !errors.Is(err, verifier.ErrNotFound) {
		return nil, err
	}
	t := &Tenant{ID: id, Name: name, Created: s.now().UTC()}
	if err := s.putJSON(ctx, nsTenant, id, t); err != nil {
		return nil, err
	}
	s.log.Info("tenant created", "tenant", id)
	return t, nil
}

// Tenant returns a tenant.
func (s *Service) Tenant(ctx context.Context, id string) (*Tenant, error) {
	var t Tenant
	if err := s.getJSON(ctx, nsTenant, id, &t); err != nil {
		return nil, fmt.Errorf("tenant %s: %w", id, err)
	}
	return &t, nil
}

// Tenants lists tenants in id order.
func (s *Service) Tenants(ctx context.Context) ([]Tenant, error) {
	var out []Tenant
	after := ""
	for {
		recs, err := s.store.ListRecords(ctx, nsTenant, after, 500)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			var t Tenant
			if err := json.Unmarshal(r.Value, &t); err != nil {
				return nil, fmt.Errorf("tenant %s: %w", r.Key, err)
			}
			out = append(out, t)
		}
		if len(recs) < 500 {
			return out, nil
		}
		after = recs[len(recs)-1].Key
	}
}

// Subscriber is an MQTT credential that may watch one tenant's alerts.
type Subscriber struct {
	Username   string    `json:"username"`
	Tenant     string    `json:"tenant"`
	SecretHash []byte    `json:"secret_hash"`
	Created    time.Time `json:"created"`
}

// CreateSubscriber issues an MQTT credential for a tenant's alerts. The
// password is returned once and only its hash is kept.
func (s *Service) CreateSubscriber(ctx context.Context, tenant, name string) (username, password string, err error) {
	if _, err := s.Tenant(ctx, tenant); err != nil {
		return "", "", err
	}
	if name == "" {
		name = "sub"
	}
	if err := protocol.ValidateID("subscriber name", name); err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	username = tenant + "." + name + "." + randomHex(4)
	password = randomSecret()
	sub := Subscriber{Username: username, Tenant: tenant, SecretHash: hashSecret(password), Created: s.now().UTC()}
	if err := s.putJSON(ctx, nsSubscriber, username, &sub); err != nil {
		return "", "", err
	}
	s.log.Info("alert subscriber created", "tenant", tenant, "username", username)
	return username, password, nil
}

// Principal is who an MQTT client authenticated as.
type Principal struct {
	// DeviceID is set for an enrolled device.
	DeviceID string
	// Tenant is the device's or the subscriber's tenant.
	Tenant string
}

// Authenticate checks MQTT credentials: a device (username = device id)
// or an alert subscriber. It returns verifier.ErrNotFound for any failure,
// so callers cannot tell a wrong password from an unknown user.
func (s *Service) Authenticate(ctx context.Context, username, password string) (Principal, error) {
	if username == "" || password == "" {
		return Principal{}, verifier.ErrNotFound
	}
	given := hashSecret(password)
	var sub Subscriber
	if err := s.getJSON(ctx, nsSubscriber, username, &sub); err == nil {
		if subtle.ConstantTimeCompare(given, sub.SecretHash) == 1 {
			return Principal{Tenant: sub.Tenant}, nil
		}
		return Principal{}, verifier.ErrNotFound
	}
	if protocol.ValidateID("device id", username) != nil {
		return Principal{}, verifier.ErrNotFound
	}
	dev, err := s.store.Device(ctx, username)
	if err != nil {
		if errors.Is(err, verifier.ErrNotFound) {
			return Principal{}, verifier.ErrNotFound
		}
		return Principal{}, err
	}
	if subtle.ConstantTimeCompare(given, dev.SecretHash) != 1 {
		return Principal{}, verifier.ErrNotFound
	}
	return Principal{DeviceID: dev.ID, Tenant: dev.Tenant}, nil
}

type enrollToken struct {
	Tenant    string    `json:"tenant"`
	Expires   time.Time `json:"expires"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// CreateEnrollToken issues a one-time enrolment token for a tenant, valid
// for ttl.
func (s *Service) CreateEnrollToken(ctx context.Context, tenant string, ttl time.Duration, actor string) (string, time.Time, error) {
	if _, err := s.Tenant(ctx, tenant); err != nil {
		return "", time.Time{}, err
	}
	if ttl <= 0 || ttl > 90*24*time.Hour {
		return "", time.Time{}, fmt.Errorf("%w: ttl must be between 1s and 90 days", ErrInvalid)
	}
	token := "cbe_" + randomSecret()
	exp := s.now().Add(ttl).UTC()
	if err := s.putJSON(ctx, nsToken, hex.EncodeToString(hashSecret(token)), &enrollToken{Tenant: tenant, Expires: exp, CreatedBy: actor}); err != nil {
		return "", time.Time{}, err
	}
	return token, exp, nil
}

// Enroll registers a device: it spends the one-time token, stores the
// device's public key and IMEI, and returns the device's identity and MQTT
// credentials.
func (s *Service) Enroll(ctx context.Context, req *protocol.EnrollRequest) (*protocol.EnrollResponse, error) {
	// Before the token is spent, so that a bad key costs the agent
	// nothing but a clear error.
	if err := sigcheck.CheckKey(req.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: public_key: %w", ErrInvalid, err)
	}
	raw, err := s.store.TakeRecord(ctx, nsToken, hex.EncodeToString(hashSecret(req.Token)))
	if errors.Is(err, verifier.ErrNotFound) {
		return nil, ErrTokenInvalid
	}
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	var tok enrollToken
	if err := json.Unmarshal(raw, &tok); err != nil {
		return nil, fmt.Errorf("enroll: token record: %w", err)
	}
	if !s.now().Before(tok.Expires) {
		return nil, ErrTokenInvalid
	}
	password := randomSecret()
	dev := &verifier.Device{ID: "gw-" + randomHex(8), Tenant: tok.Tenant, PublicKey: req.PublicKey,
		SecretHash: hashSecret(password), IMEI: req.IMEI, LastIMEI: req.IMEI, Enrolled: s.now().UTC()}
	if err := s.store.Commit(ctx, &verifier.Commit{Device: dev}); err != nil {
		return nil, fmt.Errorf("enroll: store device: %w", err)
	}
	s.log.Info("device enrolled", "device", dev.ID, "tenant", dev.Tenant, "imei", req.IMEI, "hostname", req.Hostname)
	resp := &protocol.EnrollResponse{Version: protocol.Version, DeviceID: dev.ID, Tenant: dev.Tenant,
		BrokerURL: s.cfg.BrokerURL(), Username: dev.ID, Password: password,
		ReportTopic: protocol.ReportTopic(dev.ID), CommandTopic: protocol.CommandTopic(dev.ID),
		CACertPEM: s.cfg.CACertPEM}
	if s.cfg.CommandKey != nil {
		resp.CommandKey = s.cfg.CommandKey.Public().(ed25519.PublicKey)
	}
	return resp, nil
}

func (s *Service) putJSON(ctx context.Context, ns, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", ns, key, err)
	}
	if err := s.store.PutRecord(ctx, ns, key, b); err != nil {
		return fmt.Errorf("store %s %s: %w", ns, key, err)
	}
	return nil
}

func (s *Service) getJSON(ctx context.Context, ns, key string, v any) error {
	b, err := s.store.GetRecord(ctx, ns, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s %s: %w", ns, key, err)
	}
	return nil
}

// hashSecret hashes a random secret. Secrets are 32 random bytes, so a
// plain SHA-256 is enough: there is nothing to guess.
func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

func randomSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/cardbind/cardbind/protocol"
	"github.com/nats-io/nats-server/v2/server"
)

// ErrUnauthorized is returned by an Authenticator for an unknown username
// or a wrong password. The broker refuses the connection either way.
var ErrUnauthorized = errors.New("broker: unauthorized")

// Role is what an authenticated MQTT client is allowed to be.
type Role int

// Roles a Principal can have.
const (
	// RoleDevice is an enrolled device: it publishes its own reports and
	// receives its own commands.
	RoleDevice Role = iota + 1
	// RoleAlertSubscriber watches one tenant's alert topics.
	RoleAlertSubscriber
)

// String returns the role's name as used in logs and connection labels.
func (r Role) String() string {
	switch r {
	case RoleDevice:
		return "device"
	case RoleAlertSubscriber:
		return "tenant"
	default:
		return fmt.Sprintf("role(%d)", int(r))
	}
}

// Principal is who an MQTT client authenticated as.
type Principal struct {
	Role Role
	// ID is the device id for RoleDevice and the tenant id for
	// RoleAlertSubscriber: 1 to 64 characters from [A-Za-z0-9_-].
	ID string
}

// Device returns the principal of the device with the given id.
func Device(id string) Principal { return Principal{Role: RoleDevice, ID: id} }

// AlertSubscriber returns the principal of an alert subscriber of tenant.
func AlertSubscriber(tenant string) Principal {
	return Principal{Role: RoleAlertSubscriber, ID: tenant}
}

// String returns "device:<id>" or "tenant:<id>". The ':' cannot occur in an
// id, so labels never collide.
func (p Principal) String() string { return p.Role.String() + ":" + p.ID }

// Validate reports whether p has a known role and a well-formed id. The id
// becomes part of the subject permissions, so a malformed one (holding '.',
// '*' or '>') would widen them; the broker refuses such principals.
func (p Principal) Validate() error {
	switch p.Role {
	case RoleDevice:
		return protocol.ValidateID("device id", p.ID)
	case RoleAlertSubscriber:
		return protocol.ValidateID("tenant id", p.ID)
	default:
		return fmt.Errorf("broker: principal %q: unknown role", p)
	}
}

// Authenticator checks the username and password an MQTT client sent in
// CONNECT. It returns ErrUnauthorized (possibly wrapped) when they do not
// match, and another error when it could not decide (the connection is
// refused then too). It is called on the connecting client's goroutine,
// once per CONNECT, so it must be safe for concurrent use and fast; ctx
// carries the broker's authentication timeout.
type Authenticator interface {
	Authenticate(ctx context.Context, username, password string) (Principal, error)
}

// subjectOf returns the NATS form of one of the protocol's MQTT topics or
// filters: nats-server maps '/' to '.' and '+' to '*' ('#' is not used),
// and ids hold no character it maps any other way.
func subjectOf(topic string) string {
	return strings.NewReplacer("/", ".", "+", "*").Replace(topic)
}

// mqttSubPrefix is where nats-server delivers a QoS 1/2 MQTT subscription's
// JetStream consumer ("$MQTT.sub.<nuid>", server/mqtt.go mqttSubPrefix).
// The subscribing client itself subscribes to it, so its permissions must
// allow it. MQTT clients cannot subscribe to "$MQTT." subjects themselves
// (mqttProcessSubs refuses filters with that prefix), so allowing it opens
// nothing else.
const mqttSubPrefix = "$MQTT.sub.>"

// permissions returns the NATS permissions of p.
func permissions(p Principal) *server.Permissions {
	switch p.Role {
	case RoleDevice:
		return &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{
				subjectOf(protocol.ReportTopic(p.ID)),
				subjectOf(protocol.StatusTopic(p.ID)), // "online", and the will "offline"
			}},
			Subscribe: &server.SubjectPermission{Allow: []string{subjectOf(protocol.CommandTopic(p.ID)), mqttSubPrefix}},
		}
	case RoleAlertSubscriber:
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Deny: []string{">"}},
			Subscribe: &server.SubjectPermission{Allow: []string{subjectOf(protocol.AlertFilter(p.ID)), mqttSubPrefix}},
		}
	}
	// Unreachable for a validated principal; deny everything regardless.
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Deny: []string{">"}},
		Subscribe: &server.SubjectPermission{Deny: []string{">"}},
	}
}

// MemAuthenticator is an in-memory Authenticator for tests and small
// embedded setups. It keeps the SHA-256 of each secret, never the secret.
//
// SHA-256 rather than bcrypt: the secrets are random tokens issued by
// cardbind (NewSecret makes 256-bit ones), so there is nothing to guess
// and a slow hash buys no security; it would only cap the reconnect rate
// of a large fleet (bcrypt at cost 10 is ~50 ms of CPU per CONNECT).
// Add refuses short secrets for that reason.
type MemAuthenticator struct {
	mu    sync.RWMutex
	users map[string]memUser
}

type memUser struct {
	principal Principal
	hash      [sha256.Size]byte
}

// MinSecretLen is the shortest secret MemAuthenticator accepts.
const MinSecretLen = 16

// NewMemAuthenticator returns an empty MemAuthenticator.
func NewMemAuthenticator() *MemAuthenticator {
	return &MemAuthenticator{users: make(map[string]memUser)}
}

// Add lets username log in with secret as p, replacing any earlier entry
// for username.
func (m *MemAuthenticator) Add(username, secret string, p Principal) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("broker: add user %q: %w", username, err)
	}
	if username == "" || username == internalUser {
		return fmt.Errorf("broker: add user %q: username is empty or reserved", username)
	}
	if len(secret) < MinSecretLen {
		return fmt.Errorf("broker: add user %q: secret shorter than %d bytes", username, MinSecretLen)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.users[username] = memUser{principal: p, hash: sha256.Sum256([]byte(secret))}
	return nil
}

// Remove deletes username; its open connections stay until they close.
func (m *MemAuthenticator) Remove(username string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.users, username)
}

// Authenticate implements Authenticator.
func (m *MemAuthenticator) Authenticate(_ context.Context, username, password string) (Principal, error) {
	m.mu.RLock()
	u, ok := m.users[username]
	m.mu.RUnlock()
	got := sha256.Sum256([]byte(password))
	if !ok {
		// Compare anyway so unknown and known users take the same time.
		u.hash = [sha256.Size]byte{}
	}
	if subtle.ConstantTimeCompare(got[:], u.hash[:]) != 1 || !ok {
		return Principal{}, ErrUnauthorized
	}
	return u.principal, nil
}

// NewSecret returns a new random 256-bit secret, base64url-encoded, for a
// device or subscriber credential.
func NewSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// errClientID marks a connection refused for its MQTT client id, not for
// its credentials: a device presenting an id other than its own, or a
// subscriber presenting one that another principal's connection holds or
// another tenant owns.
var errClientID = errors.New("MQTT client id refused")

// internalClientIDPrefix starts the MQTT client id of the broker's own
// alert publisher. No outside principal may use an id with it.
const internalClientIDPrefix = "cardbind-internal-"

// mqttLabelTag is what nats-server puts between the remote address and the
// connection id in the label of an MQTT connection (server/client.go
// initClient: "<addr> - mid:<cid>"; "mid_ws:" over websocket, which the
// broker does not serve).
const mqttLabelTag = " - mid:"

// mqttClientID returns the MQTT client id c presented in its CONNECT.
//
// nats-server has no accessor for it in ClientAuthentication (ClientOpts
// carries no MQTT field; client.getMQTTClientID is unexported), but
// mqttParse appends it, quoted, to the connection's label right after
// parsing CONNECT and before mqttProcessConnect calls the authenticator
// (server/mqtt.go: c.ncs.Store(fmt.Sprintf("%s - %q", c, c.mqtt.cid))),
// and the label is what the client's String method returns. An empty
// client id has been replaced by a random one by then.
//
// It fails when the label does not have that shape (another nats-server
// version, say); the caller refuses the connection then, so such a change
// shows up in the broker's tests instead of silently disabling the check.
func mqttClientID(c server.ClientAuthentication) (string, error) {
	s, ok := c.(fmt.Stringer)
	if !ok {
		return "", errors.New("connection has no label")
	}
	return parseMQTTLabel(s.String(), c.GetID())
}

// parseMQTTLabel extracts the client id from an MQTT connection label of
// the form `<addr> - mid:<connID> - "<client id>"`. The connection id must
// be connID, and nothing may follow the quoted id.
func parseMQTTLabel(label string, connID uint64) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("unexpected MQTT connection label %q: %s", truncate(label, 200), why)
	}
	i := strings.Index(label, mqttLabelTag)
	if i < 0 {
		return bad("no " + strings.TrimSpace(mqttLabelTag))
	}
	rest := label[i+len(mqttLabelTag):]
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if id, err := strconv.ParseUint(rest[:n], 10, 64); err != nil || id != connID {
		return bad(fmt.Sprintf("connection id is not %d", connID))
	}
	q, ok := strings.CutPrefix(rest[n:], " - ")
	if !ok {
		return bad("no client id")
	}
	quoted, err := strconv.QuotedPrefix(q)
	if err != nil || len(quoted) != len(q) {
		return bad("client id is not one quoted string")
	}
	id, err := strconv.Unquote(quoted)
	if err != nil || id == "" {
		return bad("client id is not one quoted string")
	}
	return id, nil
}

// idRegistry is what checkClientID asks about client ids held by others.
type idRegistry interface {
	// holders returns the principal labels of the open connections other
	// than self that use client id id.
	holders(id string, self uint64) ([]string, error)
	// claim records owner as the owner of client id id unless another
	// owner is on record, and returns the owner on record afterwards.
	claim(ctx context.Context, id, owner string) (string, error)
}

// checkClientID decides whether principal p, connecting as connection
// self, may use MQTT client id id. It returns an error wrapping
// errClientID when not.
//
//   - A device uses exactly its device id, as cardbind's agent does. No
//     device can then present another device's id, and a device's id is
//     its own whether or not it is connected.
//   - An alert subscriber may not use an id that an open connection of
//     another principal holds (a device's, say), nor one that starts with
//     internalClientIDPrefix, nor one that another tenant has claimed:
//     the first tenant whose subscriber connects with an id owns it from
//     then on, across restarts, so its persistent session cannot be taken
//     over or wiped while it is offline. Subscribers of the same tenant
//     share the tenant's ids, so one with a rotated credential resumes
//     the session.
func checkClientID(ctx context.Context, p Principal, id string, self uint64, reg idRegistry) error {
	switch p.Role {
	case RoleDevice:
		if id != p.ID {
			return fmt.Errorf("%w: device %s must connect with client id %q, not %q", errClientID, p.ID, p.ID, truncate(id, 80))
		}
		return nil
	case RoleAlertSubscriber:
		if strings.HasPrefix(id, internalClientIDPrefix) {
			return fmt.Errorf("%w: %q is reserved for the broker", errClientID, truncate(id, 80))
		}
		holders, err := reg.holders(id, self)
		if err != nil {
			return fmt.Errorf("%w: cannot tell who holds %q: %w", errClientID, truncate(id, 80), err)
		}
		for _, h := range holders {
			if h != p.String() {
				return fmt.Errorf("%w: %q is held by a connection of %s", errClientID, truncate(id, 80), h)
			}
		}
		owner, err := reg.claim(ctx, id, p.String())
		if err != nil {
			return fmt.Errorf("%w: cannot claim %q: %w", errClientID, truncate(id, 80), err)
		}
		if owner != p.String() {
			return fmt.Errorf("%w: %q belongs to %s", errClientID, truncate(id, 80), owner)
		}
		return nil
	}
	return fmt.Errorf("%w: principal %s has no client id rule", errClientID, p)
}

// clientIDBucket is the JetStream key-value bucket that records which
// tenant owns which alert-subscriber client id.
const clientIDBucket = "cardbind_mqtt_client_ids"

// serverRegistry is the broker's idRegistry: open connections from the
// server's connection list, claims in clientIDBucket.
type serverRegistry struct {
	srv *server.Server
	// kv is set by Start before outside clients may connect.
	kv jetstream.KeyValue
}

// holders implements idRegistry. Connz walks every connection under its
// lock (O(connections)); only subscriber CONNECTs ask, and they are few.
// Connections that have not authenticated yet have no label and are
// left out.
func (r *serverRegistry) holders(id string, self uint64) ([]string, error) {
	cz, err := r.srv.Connz(&server.ConnzOptions{MQTTClient: id, Username: true, State: server.ConnOpen})
	if err != nil {
		return nil, fmt.Errorf("connz: %w", err)
	}
	var out []string
	for _, ci := range cz.Conns {
		if ci.Cid != self && ci.AuthorizedUser != "" {
			out = append(out, ci.AuthorizedUser)
		}
	}
	return out, nil
}

// claim implements idRegistry. The key is the SHA-256 of the id, since
// client ids may hold characters keys may not.
func (r *serverRegistry) claim(ctx context.Context, id, owner string) (string, error) {
	if r.kv == nil {
		return "", errors.New("no client id bucket")
	}
	sum := sha256.Sum256([]byte(id))
	key := hex.EncodeToString(sum[:])
	for range 2 {
		e, err := r.kv.Get(ctx, key)
		if err == nil {
			return string(e.Value()), nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return "", fmt.Errorf("get %s: %w", key, err)
		}
		_, err = r.kv.Create(ctx, key, []byte(owner))
		if err == nil {
			return owner, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return "", fmt.Errorf("create %s: %w", key, err)
		}
		// Another connection claimed it just now; read its claim.
	}
	return "", fmt.Errorf("claim %s: lost the race twice", key)
}

// ensureClientIDBucket creates (or opens) clientIDBucket.
func (b *Broker) ensureClientIDBucket(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      clientIDBucket,
		Description: "cardbind: tenant owning each MQTT client id alert subscribers use",
		History:     1,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("client id bucket %s: %w", clientIDBucket, err)
	}
	return kv, nil
}

package broker

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// authHook is the server's CustomClientAuthentication. nats-server calls
// Check for every client connection (MQTT, NATS and in-process alike) on
// the connecting client's goroutine, and uses no other mechanism.
type authHook struct {
	auth       Authenticator
	secretHash [sha256.Size]byte
	timeout    time.Duration
	baseCtx    context.Context
	stats      *counters
	log        *slog.Logger
	// ids answers who holds and who owns an MQTT client id.
	ids idRegistry
	// ready opens the door to outside clients once Start has set up what
	// a PUBACKed report needs (the durable report consumer).
	ready atomic.Bool
}

var _ server.Authentication = (*authHook)(nil)

// Check implements server.Authentication.
func (h *authHook) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if c.Kind() != server.CLIENT {
		return h.refuse(c, o.Username, errors.New("not a client connection"))
	}
	if o.Username == internalUser {
		got := sha256.Sum256([]byte(o.Password))
		if subtle.ConstantTimeCompare(got[:], h.secretHash[:]) != 1 {
			return h.refuse(c, o.Username, ErrUnauthorized)
		}
		// No permissions: the broker's own connections may do anything.
		c.RegisterUser(&server.User{Username: internalUser})
		h.stats.authAccepted.Add(1)
		return true
	}
	if !isMQTT(c) {
		return h.refuse(c, o.Username, errors.New("only MQTT clients may connect from outside"))
	}
	if !h.ready.Load() {
		return h.refuse(c, o.Username, errors.New("broker is not ready"))
	}
	ctx, cancel := context.WithTimeout(h.baseCtx, h.timeout)
	defer cancel()
	p, err := h.auth.Authenticate(ctx, o.Username, o.Password)
	if err != nil {
		return h.refuse(c, o.Username, err)
	}
	if err := p.Validate(); err != nil {
		return h.refuse(c, o.Username, fmt.Errorf("authenticator returned a bad principal: %w", err))
	}
	// Before nats-server binds the client id to this connection (and
	// closes the connection that holds it, taking its session over).
	clientID, err := mqttClientID(c)
	if err != nil {
		// Fail closed: without the id the takeover guard cannot run.
		return h.refuse(c, o.Username, fmt.Errorf("%w: %w", errClientID, err), "principal", p.String())
	}
	if err := checkClientID(ctx, p, clientID, c.GetID(), h.ids); err != nil {
		return h.refuse(c, o.Username, err, "principal", p.String(), "client_id", truncate(clientID, 80))
	}
	c.RegisterUser(&server.User{Username: p.String(), Permissions: permissions(p)})
	h.stats.authAccepted.Add(1)
	return true
}

// refuse counts and logs a refused connection; attrs are extra log
// attributes. Wrong credentials are logged at debug level (an internet-
// facing listener sees plenty), everything else, a refused client id
// among it, at warn.
func (h *authHook) refuse(c server.ClientAuthentication, username string, err error, attrs ...any) bool {
	h.stats.authRefused.Add(1)
	if errors.Is(err, errClientID) {
		h.stats.clientIDRefused.Add(1)
	}
	level := slog.LevelDebug
	if !errors.Is(err, ErrUnauthorized) {
		level = slog.LevelWarn
	}
	h.log.Log(h.baseCtx, level, "broker: connection refused",
		append([]any{"username", truncate(username, 80), "remote", remoteOf(c), "err", err}, attrs...)...)
	return false
}

// isMQTT reports whether c came in through the MQTT listener. The
// ClientAuthentication interface does not say; the connection's label
// does ("<addr> - mid:<cid>" for MQTT, "cid:" for NATS, "wid:" for
// websocket; server/client.go initClient).
func isMQTT(c server.ClientAuthentication) bool {
	s, ok := c.(fmt.Stringer)
	return ok && strings.Contains(s.String(), " - mid:")
}

func remoteOf(c server.ClientAuthentication) string {
	if a := c.RemoteAddress(); a != nil {
		return a.String()
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

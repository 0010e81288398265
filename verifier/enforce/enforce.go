// Package enforce carries out decisions at the operator's network: it
// blocks and resumes cards through an adapter. Adapters: HTTP (a
// configurable call to an operator's OSS or provisioning system; the
// firmware-sim network is one such system, see SimNetwork) and None (alert
// only). Handler turns an adapter into an outbox handler that skips tasks
// a later decision has superseded, so the network always ends in the state
// the verifier last decided, whatever order retries finish in.
package enforce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/dispatch"
)

// Enforcer blocks or resumes one card at the network. key is a stable
// idempotency key: calling again with the same key must do no harm.
type Enforcer interface {
	Enforce(ctx context.Context, task verifier.EnforceTask, key string) error
}

// CardReader reads a card's current state.
type CardReader interface {
	Card(ctx context.Context, iccid protocol.ICCID) (*verifier.Card, error)
}

// None is the alert-only adapter: it enforces nothing.
type None struct{}

// Enforce does nothing.
func (None) Enforce(context.Context, verifier.EnforceTask, string) error { return nil }

// Observer is told how each enforcement went and how long the adapter
// took, for metrics.
type Observer func(task verifier.EnforceTask, err error, took time.Duration)

// Handler returns an outbox handler that decodes an enforcement task,
// skips it when the card's current state no longer calls for it (a resume
// committed after a block that is still being retried, say), and otherwise
// hands it to e with the entry id as idempotency key.
func Handler(e Enforcer, cards CardReader, log *slog.Logger, observe Observer) dispatch.Handler {
	return func(ctx context.Context, entry verifier.OutboxEntry) error {
		var task verifier.EnforceTask
		if err := json.Unmarshal(entry.Payload, &task); err != nil {
			return fmt.Errorf("enforce: decode task %s: %v: %w", entry.ID, err, dispatch.ErrPermanent)
		}
		card, err := cards.Card(ctx, task.ICCID)
		switch {
		case errors.Is(err, verifier.ErrNotFound):
			return fmt.Errorf("enforce: card %s is gone: %w", task.ICCID, dispatch.ErrPermanent)
		case err != nil:
			return fmt.Errorf("enforce: read card %s: %w", task.ICCID, err)
		}
		if !wanted(card, task.Action) {
			log.Info("enforcement superseded by a later decision", "id", entry.ID, "iccid", task.ICCID,
				"action", task.Action, "state", card.Status.State)
			return nil
		}
		start := time.Now()
		err = e.Enforce(ctx, task, entry.ID)
		if observe != nil {
			observe(task, err, time.Since(start))
		}
		if err != nil {
			return fmt.Errorf("enforce %s %s: %w", task.Action, task.ICCID, err)
		}
		log.Info("enforced", "iccid", task.ICCID, "action", task.Action, "reason", task.Reason, "id", entry.ID)
		return nil
	}
}

// wanted reports whether the card's current state still calls for action.
func wanted(c *verifier.Card, action verifier.Enforcement) bool {
	blocked := c.Status.State == protocol.CardBlocked
	switch action {
	case verifier.EnforceBlock:
		return blocked
	case verifier.EnforceResume:
		return !blocked
	}
	return false
}

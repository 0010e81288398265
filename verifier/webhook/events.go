package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/dispatch"
)

// Event is a CloudEvents 1.0 event in its structured JSON form, as CAMARA
// profiles it (time mandatory, datacontenttype application/json).
type Event struct {
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	SpecVersion     string          `json:"specversion"`
	DataContentType string          `json:"datacontenttype"`
	Time            string          `json:"time"`
	Data            json.RawMessage `json:"data"`
}

// delivery is the payload of a webhook outbox entry: everything needed
// to deliver the event, so that delivery never depends on the
// subscription record (which is gone once the subscription ended).
type delivery struct {
	Subscription string          `json:"sub"`
	Sink         string          `json:"sink"`
	Token        string          `json:"token,omitempty"`
	Lifecycle    bool            `json:"lifecycle,omitempty"`
	Event        json.RawMessage `json:"event"`
}

// eventID turns an entry id into the CloudEvent id: a UUID-shaped hash,
// the same every time the entry is built.
func eventID(entryID string) string {
	h := sha256.Sum256([]byte(entryID))
	h[6], h[8] = h[6]&0x0f|0x80, h[8]&0x3f|0x80 // UUID version 8, RFC 9562 variant
	s := hex.EncodeToString(h[:16])
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}

// entry builds the outbox entry that delivers one event of subscription s.
func (n *Notifier) entry(s *Subscription, id, typ string, at time.Time, data any) (verifier.OutboxEntry, error) {
	id = "wh-" + id
	d, err := json.Marshal(data)
	if err != nil {
		return verifier.OutboxEntry{}, fmt.Errorf("webhook: event %s: %w", id, err)
	}
	ev, err := json.Marshal(Event{ID: eventID(id), Source: n.cfg.Source, Type: typ, SpecVersion: "1.0",
		DataContentType: "application/json", Time: at.UTC().Format("2006-01-02T15:04:05.000Z07:00"), Data: d})
	if err != nil {
		return verifier.OutboxEntry{}, fmt.Errorf("webhook: event %s: %w", id, err)
	}
	p, err := json.Marshal(delivery{Subscription: s.ID, Sink: s.Sink, Token: s.Token,
		Lifecycle: typ == TypeStarted || typ == TypeEnded, Event: ev})
	if err != nil {
		return verifier.OutboxEntry{}, fmt.Errorf("webhook: event %s: %w", id, err)
	}
	return verifier.OutboxEntry{ID: id, Kind: queueKind(s.ID), Created: at, Payload: p}, nil
}

// eventType returns the subscription event type an alert is, if any: a
// mismatch (the card in a device its binding does not allow) is an
// imei-change with the new IMEI, leaving the permitted area an
// area-change.
func eventType(a *protocol.Alert) string {
	switch {
	case a.Type == protocol.AlertMismatch && a.ObservedIMEI != "":
		return TypeIMEIChange
	case a.Type == protocol.AlertAreaExit:
		return TypeAreaChange
	}
	return ""
}

// HandleAlert fans an alert outbox entry (payload protocol.Alert) out to
// the active subscriptions of its card and tenant that want its event
// type: for each, it queues the event (and subscription-ended when the
// event is the subscription's last), then counts it. It is safe to call
// again for the same entry (a retry after a crash or a failed publish):
// an alert already counted is skipped, and one queued but not counted is
// queued again under the same id. Compose it with the MQTT alert handler
// in the alert dispatcher.
func (n *Notifier) HandleAlert(ctx context.Context, e verifier.OutboxEntry) error {
	a, err := protocol.DecodeAlert(e.Payload)
	if err != nil {
		return fmt.Errorf("webhook: alert %s: %v: %w", e.ID, err, dispatch.ErrPermanent)
	}
	typ := eventType(a)
	if typ == "" {
		return nil
	}
	prefix := string(a.ICCID) + "/"
	after := prefix
	queued := false
	for {
		recs, err := n.store.ListRecords(ctx, nsCard, after, 256)
		if err != nil {
			return fmt.Errorf("webhook: subscriptions of %s: %w", a.ICCID, err)
		}
		for _, r := range recs {
			if len(r.Key) < len(prefix) || r.Key[:len(prefix)] != prefix {
				recs = nil
				break
			}
			q, err := n.fanout(ctx, r.Key[len(prefix):], typ, a)
			if err != nil {
				return err
			}
			queued = queued || q
			after = r.Key
		}
		if len(recs) < 256 {
			break
		}
	}
	if queued {
		n.Wake()
	}
	return nil
}

// fanout queues alert a's event for subscription id, if it wants it.
func (n *Notifier) fanout(ctx context.Context, id, typ string, a *protocol.Alert) (bool, error) {
	defer n.lock(id)()
	s, err := n.get(ctx, id)
	switch {
	case errors.Is(err, verifier.ErrNotFound):
		return false, nil // ended; its index entry is being removed
	case err != nil:
		return false, err
	}
	now := n.now()
	if s.Tenant != a.Tenant || s.Type != typ || slices.Contains(s.Recent, a.ID) ||
		!s.ExpiresAt.IsZero() && !now.Before(s.ExpiresAt) {
		return false, nil
	}
	data := map[string]any{"subscriptionId": s.ID, "device": s.Device}
	if typ == TypeIMEIChange {
		data["imei"] = string(a.ObservedIMEI)
	} else {
		card, err := n.store.Card(ctx, a.ICCID)
		if err != nil {
			return false, fmt.Errorf("webhook: card %s: %w", a.ICCID, err)
		}
		if card.Binding == nil || card.Binding.Area == nil {
			return false, nil // the area limit was removed since
		}
		data["area"] = circleOf(card.Binding.Area)
	}
	// Events are ordered by the time of the decision that caused them.
	at := a.Time
	ev, err := n.entry(s, s.ID+"-"+a.ID, typ, at, data)
	if err != nil {
		return false, err
	}
	entries := []verifier.OutboxEntry{ev}
	s.Events++
	last := s.MaxEvents > 0 && s.Events >= s.MaxEvents
	if last {
		end, err := n.endedEntry(s, ReasonMaxEvents, at.Add(time.Nanosecond))
		if err != nil {
			return false, err
		}
		entries = append(entries, end)
	}
	if err := n.enqueue(ctx, s.ID, entries); err != nil {
		return false, fmt.Errorf("webhook: subscription %s: %w", s.ID, err)
	}
	if last {
		return true, n.remove(ctx, s)
	}
	s.Recent = append(s.Recent, a.ID)
	if len(s.Recent) > recentAlerts {
		s.Recent = s.Recent[len(s.Recent)-recentAlerts:]
	}
	return true, n.put(ctx, s)
}

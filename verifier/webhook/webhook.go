// Package webhook keeps the CAMARA IoT SIM Fraud Prevention subscriptions
// and delivers their notifications as CloudEvents 1.0 (structured mode,
// application/cloudevents+json) to the subscribers' HTTPS sinks, with the
// sink credential's bearer token.
//
// Subscriptions live in the store's record space. Events go through the
// store's durable outbox, one queue (outbox kind) per subscription,
// verifier.OutboxWebhook + "/" + id, so that a sink that is down holds back
// its own events only: an alert the ingest committed (a protocol.Alert
// outbox entry) is fanned out by HandleAlert into one webhook entry per
// matching subscription, and Run delivers them, in order per
// subscription, retrying with exponential backoff for a bounded time. Every entry id, and the CloudEvent id derived from it, is
// stable, so a repeat after a crash is a duplicate the sink can recognise
// (at-least-once), never a different event.
//
// A subscription ends when it is deleted, when it reaches
// subscriptionMaxEvents or subscriptionExpireTime, shortly before its
// access token expires, or when its sink answers 410 Gone; all but the
// last send a subscription-ended event with the termination reason.
// Ended subscriptions are removed: reading them is ErrNotFound.
package webhook

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// CloudEvent types of the IoT SIM Fraud Prevention subscriptions API.
const (
	TypeIMEIChange = "org.camaraproject.iot-sim-fraud-prevention.v0.imei-change"
	TypeAreaChange = "org.camaraproject.iot-sim-fraud-prevention.v0.area-change"
	TypeStarted    = "org.camaraproject.iot-sim-fraud-prevention.v0.subscription-started"
	TypeEnded      = "org.camaraproject.iot-sim-fraud-prevention.v0.subscription-ended"
)

// Termination reasons of subscription-ended events.
const (
	ReasonDeleted     = "SUBSCRIPTION_DELETED"
	ReasonExpired     = "SUBSCRIPTION_EXPIRED"
	ReasonMaxEvents   = "MAX_EVENTS_REACHED"
	ReasonTokenExpiry = "ACCESS_TOKEN_EXPIRED"
)

// Record namespaces.
const (
	nsSub    = "webhook-sub"    // id -> Subscription JSON
	nsOwner  = "webhook-owner"  // ownerKey/id -> ""
	nsCard   = "webhook-card"   // iccid/id -> ""
	nsExpiry = "webhook-expiry" // 20-digit unix nanos/id -> ""
	nsQueue  = "webhook-queue"  // id -> "": the subscription's queue may hold entries
)

// maxList bounds List, as the API's response does.
const maxList = 1000

// recentAlerts is how many counted alert ids a subscription remembers, so
// that an alert handled again (a retry of the alert entry) is not counted
// or sent twice.
const recentAlerts = 32

// Subscription is one CAMARA subscription as stored.
type Subscription struct {
	ID string `json:"id"`
	// Tenant owns the card; Owner is the API client that created the
	// subscription (issuer and client id), the only one that sees it.
	Tenant string `json:"tenant"`
	Owner  string `json:"owner"`
	// ICCID is the card the subscription watches.
	ICCID protocol.ICCID `json:"iccid"`
	// Device is the device object events carry: the identifier used, as
	// the subscriber sent it (for three-legged tokens, the token's phone
	// number).
	Device json.RawMessage `json:"device"`
	// ThreeLegged subscriptions never show a device in responses.
	ThreeLegged bool   `json:"three_legged,omitempty"`
	Type        string `json:"type"`
	Protocol    string `json:"protocol"`
	Sink        string `json:"sink"`
	// Token is the sink credential's access token (ACCESSTOKEN), sent as
	// a bearer token; TokenExpires is when it expires.
	Token        string    `json:"token,omitempty"`
	TokenExpires time.Time `json:"token_expires,omitzero"`

	StartsAt     time.Time `json:"starts_at"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"`
	MaxEvents    int       `json:"max_events,omitempty"`
	InitialEvent bool      `json:"initial_event,omitempty"`

	// Events counts the events generated (lifecycle events excluded).
	Events int `json:"events"`
	// Recent holds the ids of the last alerts counted.
	Recent []string `json:"recent,omitempty"`
}

// endsAt is when the sweeper ends the subscription: its expiry, or margin
// before its access token expires; zero for never.
func (s *Subscription) endsAt(margin time.Duration) time.Time {
	t := s.ExpiresAt
	if !s.TokenExpires.IsZero() {
		if te := s.TokenExpires.Add(-margin); t.IsZero() || te.Before(t) {
			t = te
		}
	}
	return t
}

// Store is what the package needs of the verifier's store.
type Store interface {
	Card(ctx context.Context, iccid protocol.ICCID) (*verifier.Card, error)
	Commit(ctx context.Context, c *verifier.Commit) error
	PendingOutbox(ctx context.Context, kind verifier.OutboxKind, now time.Time, limit int) ([]verifier.OutboxEntry, error)
	RescheduleOutbox(ctx context.Context, e verifier.OutboxEntry) error
	CompleteOutbox(ctx context.Context, id string) error
	PutRecord(ctx context.Context, ns, key string, value []byte) error
	GetRecord(ctx context.Context, ns, key string) ([]byte, error)
	DeleteRecord(ctx context.Context, ns, key string) error
	ListRecords(ctx context.Context, ns, after string, limit int) ([]verifier.Record, error)
}

// Config configures subscriptions and delivery. Zero values take the
// defaults.
type Config struct {
	// Source is the CloudEvents source of every event (a URI reference),
	// e.g. the API root. Default "urn:cardbind:verifier".
	Source string
	// AllowPrivateSinks lets sinks resolve to loopback, link-local,
	// private and other non-public addresses (tests, private networks).
	AllowPrivateSinks bool
	// CAFile is a PEM file of certificate authorities trusted for sinks,
	// in addition to the system's.
	CAFile string
	// Timeout bounds one delivery attempt (default 10s).
	Timeout time.Duration
	// Workers is how many subscriptions are delivered to at once
	// (default 8); each subscription's events go one at a time, in order.
	Workers int
	// MinBackoff and MaxBackoff bound the delay between attempts
	// (defaults 1s and 5m).
	MinBackoff, MaxBackoff time.Duration
	// MaxAge gives up on an event this long after it was created
	// (default 24h).
	MaxAge time.Duration
	// Poll is how often the outbox is read when nothing wakes the
	// deliverer (default 250ms), and Sweep how often expired
	// subscriptions are looked for (default 1s).
	Poll, Sweep time.Duration
	// TokenMargin ends a subscription this long before its access token
	// expires, so that subscription-ended still reaches the sink with a
	// valid token (default 30s).
	TokenMargin time.Duration
}

func (c *Config) defaults() {
	if c.Source == "" {
		c.Source = "urn:cardbind:verifier"
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Minute
	}
	if c.MaxAge <= 0 {
		c.MaxAge = 24 * time.Hour
	}
	if c.Poll <= 0 {
		c.Poll = 250 * time.Millisecond
	}
	if c.Sweep <= 0 {
		c.Sweep = time.Second
	}
	if c.TokenMargin <= 0 {
		c.TokenMargin = 30 * time.Second
	}
}

// Stats counts what the notifier did.
type Stats struct {
	// Delivered events, Retried attempts, Dropped events (too old, or
	// their subscription gone), Gone subscriptions (sink answered 410).
	Delivered, Retried, Dropped, Gone atomic.Uint64
}

// Notifier keeps subscriptions and delivers their events.
type Notifier struct {
	store  Store
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	client *http.Client
	guard  *guard
	locks  [64]sync.Mutex
	wake   chan struct{}
	stats  Stats
	// purges counts purges of queued events (delete, 410): entries read
	// before one may be gone from the outbox.
	purges atomic.Uint64
	queues queues
}

// New returns a notifier. now is the clock (time.Now in production).
func New(store Store, cfg Config, log *slog.Logger, now func() time.Time) (*Notifier, error) {
	cfg.defaults()
	g := &guard{allowPrivate: cfg.AllowPrivateSinks}
	client, err := newClient(cfg, g)
	if err != nil {
		return nil, err
	}
	return &Notifier{store: store, cfg: cfg, log: log, now: now, client: client, guard: g,
		wake: make(chan struct{}, 1), queues: queues{busy: map[string]bool{}, hint: map[string]time.Time{}}}, nil
}

// Stats returns the live counters.
func (n *Notifier) Stats() *Stats { return &n.stats }

// Wake makes the deliverer read the outbox now. It never blocks.
func (n *Notifier) Wake() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// lock serialises the writers of one subscription's record (fan-out,
// delete, sweep) within this process.
func (n *Notifier) lock(id string) func() {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	m := &n.locks[h.Sum32()%uint32(len(n.locks))]
	m.Lock()
	return m.Unlock
}

// NewID returns a new subscription id.
func NewID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Create stores a new subscription and queues its subscription-started
// event and, when asked for and the card is in a mismatch now, an initial
// imei-change event. The caller fills in everything but the counters.
func (n *Notifier) Create(ctx context.Context, s *Subscription) error {
	if s.ID == "" || strings.Contains(s.ID, "-") || s.ICCID == "" || s.Owner == "" {
		return errors.New("webhook: create: subscription without id (or with a '-' in it), card or owner")
	}
	defer n.lock(s.ID)()
	now := n.now()
	entries := []verifier.OutboxEntry{}
	started, err := n.entry(s, s.ID+"-started", TypeStarted, now,
		map[string]any{"subscriptionId": s.ID, "initiationReason": "SUBSCRIPTION_CREATED"})
	if err != nil {
		return err
	}
	entries = append(entries, started)
	if s.InitialEvent {
		card, err := n.store.Card(ctx, s.ICCID)
		if err != nil {
			return fmt.Errorf("webhook: create: card %s: %w", s.ICCID, err)
		}
		if data, ok := initialData(s, card); ok {
			e, err := n.entry(s, s.ID+"-initial", s.Type, now.Add(time.Nanosecond), data)
			if err != nil {
				return err
			}
			entries = append(entries, e)
			s.Events = 1
		}
	}
	ended := s.MaxEvents > 0 && s.Events >= s.MaxEvents
	if ended {
		e, err := n.endedEntry(s, ReasonMaxEvents, now.Add(2*time.Nanosecond))
		if err != nil {
			return err
		}
		entries = append(entries, e)
	} else {
		// Indexes first, the record last: a crash in between leaves
		// index entries without a record, which readers skip and clean.
		if err := n.putIndexes(ctx, s); err != nil {
			return err
		}
		if err := n.put(ctx, s); err != nil {
			return err
		}
	}
	if err := n.enqueue(ctx, s.ID, entries); err != nil {
		return fmt.Errorf("webhook: create %s: %w", s.ID, err)
	}
	n.Wake()
	return nil
}

// initialData returns the data of the initial event: an imei-change when
// the card is in a mismatch now, an area-change when it is outside its
// area now.
func initialData(s *Subscription, c *verifier.Card) (map[string]any, bool) {
	st := c.Status
	if st.State != protocol.CardBlocked && st.State != protocol.CardGrace && st.State != protocol.CardAlerted {
		return nil, false
	}
	switch {
	case s.Type == TypeIMEIChange && st.Reason == protocol.DecisionMismatch && st.OffendingIMEI != "":
		return map[string]any{"subscriptionId": s.ID, "imei": string(st.OffendingIMEI), "device": s.Device}, true
	case s.Type == TypeAreaChange && st.Reason == protocol.DecisionOutsideArea && c.Binding != nil && c.Binding.Area != nil:
		return map[string]any{"subscriptionId": s.ID, "area": circleOf(c.Binding.Area), "device": s.Device}, true
	}
	return nil, false
}

// Get returns the owner's subscription id; another owner's is
// verifier.ErrNotFound, like a missing one.
func (n *Notifier) Get(ctx context.Context, owner, id string) (*Subscription, error) {
	s, err := n.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if s.Owner != owner {
		return nil, fmt.Errorf("webhook: subscription %s: %w", id, verifier.ErrNotFound)
	}
	return s, nil
}

// List returns up to 1000 of the owner's subscriptions, oldest id first.
func (n *Notifier) List(ctx context.Context, owner string) ([]Subscription, error) {
	prefix := ownerKey(owner) + "/"
	recs, err := n.store.ListRecords(ctx, nsOwner, prefix, maxList)
	if err != nil {
		return nil, fmt.Errorf("webhook: list: %w", err)
	}
	out := []Subscription{}
	for _, r := range recs {
		if len(r.Key) < len(prefix) || r.Key[:len(prefix)] != prefix {
			break
		}
		s, err := n.get(ctx, r.Key[len(prefix):])
		if errors.Is(err, verifier.ErrNotFound) {
			continue // index without record: a crash during create or end
		}
		if err != nil {
			return nil, err
		}
		if s.Owner == owner {
			out = append(out, *s)
		}
	}
	return out, nil
}

// Delete ends the owner's subscription id with SUBSCRIPTION_DELETED: its
// events not yet delivered are dropped and subscription-ended is sent.
func (n *Notifier) Delete(ctx context.Context, owner, id string) error {
	defer n.lock(id)()
	s, err := n.Get(ctx, owner, id)
	if err != nil {
		return err
	}
	if err := n.purge(ctx, id, false); err != nil {
		return err
	}
	return n.end(ctx, s, ReasonDeleted, n.now())
}

func (n *Notifier) get(ctx context.Context, id string) (*Subscription, error) {
	v, err := n.store.GetRecord(ctx, nsSub, id)
	if err != nil {
		return nil, fmt.Errorf("webhook: subscription %s: %w", id, err)
	}
	var s Subscription
	if err := json.Unmarshal(v, &s); err != nil {
		return nil, fmt.Errorf("webhook: subscription %s: %w", id, err)
	}
	return &s, nil
}

func (n *Notifier) put(ctx context.Context, s *Subscription) error {
	v, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("webhook: subscription %s: %w", s.ID, err)
	}
	if err := n.store.PutRecord(ctx, nsSub, s.ID, v); err != nil {
		return fmt.Errorf("webhook: subscription %s: %w", s.ID, err)
	}
	return nil
}

func (n *Notifier) indexKeys(s *Subscription) [][2]string {
	keys := [][2]string{{nsOwner, ownerKey(s.Owner) + "/" + s.ID}, {nsCard, string(s.ICCID) + "/" + s.ID}}
	if t := s.endsAt(n.cfg.TokenMargin); !t.IsZero() {
		keys = append(keys, [2]string{nsExpiry, fmt.Sprintf("%020d/%s", max(t.UnixNano(), 0), s.ID)})
	}
	return keys
}

func (n *Notifier) putIndexes(ctx context.Context, s *Subscription) error {
	for _, k := range n.indexKeys(s) {
		if err := n.store.PutRecord(ctx, k[0], k[1], nil); err != nil {
			return fmt.Errorf("webhook: subscription %s: index: %w", s.ID, err)
		}
	}
	return nil
}

// end queues subscription-ended with reason and removes the subscription:
// record first, then its indexes. The caller holds the lock. Running it
// again after a crash queues the same event id again (kept once while
// pending).
func (n *Notifier) end(ctx context.Context, s *Subscription, reason string, at time.Time) error {
	e, err := n.endedEntry(s, reason, at)
	if err != nil {
		return err
	}
	if err := n.enqueue(ctx, s.ID, []verifier.OutboxEntry{e}); err != nil {
		return fmt.Errorf("webhook: end %s: %w", s.ID, err)
	}
	n.Wake()
	return n.remove(ctx, s)
}

// remove deletes the subscription's record and then its indexes.
func (n *Notifier) remove(ctx context.Context, s *Subscription) error {
	if err := n.store.DeleteRecord(ctx, nsSub, s.ID); err != nil {
		return fmt.Errorf("webhook: remove %s: %w", s.ID, err)
	}
	for _, k := range n.indexKeys(s) {
		if err := n.store.DeleteRecord(ctx, k[0], k[1]); err != nil {
			return fmt.Errorf("webhook: remove %s: index: %w", s.ID, err)
		}
	}
	n.log.Info("subscription ended", "subscription", s.ID, "tenant", s.Tenant, "events", s.Events)
	return nil
}

func (n *Notifier) endedEntry(s *Subscription, reason string, at time.Time) (verifier.OutboxEntry, error) {
	return n.entry(s, s.ID+"-ended", TypeEnded, at, map[string]any{"subscriptionId": s.ID, "terminationReason": reason})
}

// queueKind is the outbox kind of subscription id's queue.
func queueKind(id string) verifier.OutboxKind {
	return verifier.OutboxWebhook + verifier.OutboxKind("/"+id)
}

// enqueue adds entries to subscription id's queue: first the queue's
// registration (which the deliverer reads to find queues), then the
// entries, in one atomic commit. The caller holds the subscription's
// lock, which the deliverer takes to retire an empty queue.
func (n *Notifier) enqueue(ctx context.Context, id string, entries []verifier.OutboxEntry) error {
	if err := n.store.PutRecord(ctx, nsQueue, id, nil); err != nil {
		return fmt.Errorf("register queue: %w", err)
	}
	if err := n.store.Commit(ctx, &verifier.Commit{Outbox: entries}); err != nil {
		return fmt.Errorf("queue events: %w", err)
	}
	return nil
}

// ownerKey turns an owner (issuer and client id, any characters) into an
// index key part.
func ownerKey(owner string) string {
	h := sha256.Sum256([]byte(owner))
	return hex.EncodeToString(h[:12])
}

// circle is the spec's Circle area.
type circle struct {
	AreaType string `json:"areaType"`
	Center   point  `json:"center"`
	Radius   int    `json:"radius"`
}

type point struct {
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
}

func circleOf(a *verifier.Area) circle {
	r := max(1, min(int(a.RadiusM+0.5), 200000))
	return circle{AreaType: "CIRCLE", Center: point{a.Lat, a.Lon}, Radius: r}
}

// Package verifier holds the cardbind verifier's domain: cards and their
// bindings, observations, the per-card state, history and outbox records,
// and the Store contract that storage backends (Pebble today, PostgreSQL
// later) implement. The decision logic lives in package engine; adapters
// (broker, store, API, enforcement, notification) live in their own
// packages below this one.
package verifier

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"time"

	"github.com/cardbind/cardbind/protocol"
)

// Errors every Store and service returns, checked with errors.Is.
var (
	// ErrNotFound means the card, device, tenant or record does not exist
	// (or belongs to another tenant, which to the caller is the same).
	ErrNotFound = errors.New("not found")
	// ErrConflict means a write lost a race: the record changed since it
	// was read. The caller reads again and retries.
	ErrConflict = errors.New("conflict: record changed since it was read")
	// ErrExists means a create met an existing record.
	ErrExists = errors.New("already exists")
	// ErrRefused marks an observation or report refused for good
	// (malformed, forged, replayed, unknown card, another tenant's card):
	// it is counted and logged, and the caller acknowledges it so that it
	// is not delivered again. Errors without it are transient.
	ErrRefused = errors.New("refused")
)

// Mode says what a binding does on a mismatch.
type Mode string

// Binding modes.
const (
	ModeBlock Mode = "block" // block the card at the network, and alert
	ModeAlert Mode = "alert" // alert only
)

// Binding locks one card to the devices it may be used in.
type Binding struct {
	// IMEIs the card may be used in. Empty with an empty TAC means
	// learn-first: the first IMEI seen becomes the binding.
	IMEIs []protocol.IMEI `json:"imeis,omitempty"`
	// TAC, when set, also allows any device of the same model: any IMEI
	// whose first digits are this prefix (8 digits for one model).
	TAC  string `json:"tac,omitempty"`
	Mode Mode   `json:"mode"`
	// Grace is how long a mismatch may last before the card is blocked.
	Grace time.Duration `json:"grace,omitempty"`
	// AutoResume resumes a card blocked by the binding when it is seen in
	// an allowed device again.
	AutoResume bool `json:"auto_resume"`
	// Area, when set, restricts where the card may be used.
	Area *Area `json:"area,omitempty"`

	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// Learning reports whether the binding waits for the first IMEI seen.
func (b *Binding) Learning() bool { return len(b.IMEIs) == 0 && b.TAC == "" }

// Allows reports whether the binding allows the card in the device with
// this IMEI.
func (b *Binding) Allows(imei protocol.IMEI) bool {
	for _, m := range b.IMEIs {
		if m == imei {
			return true
		}
	}
	return b.TAC != "" && len(imei) >= len(b.TAC) && string(imei[:len(b.TAC)]) == b.TAC
}

// Area is a circle on the earth's surface.
type Area struct {
	Lat     float64 `json:"lat"`
	Lon     float64 `json:"lon"`
	RadiusM float64 `json:"radius_m"`
}

// Card is one SIM card as the verifier knows it: inventory, owner,
// binding and state.
type Card struct {
	ICCID  protocol.ICCID  `json:"iccid"`
	Tenant string          `json:"tenant"`
	IMSI   protocol.IMSI   `json:"imsi,omitempty"`
	MSISDN protocol.MSISDN `json:"msisdn,omitempty"`
	// NAI is the network access identifier, if the operator assigns one.
	NAI string `json:"nai,omitempty"`
	// IPv4 and IPv6 are the card's current addresses, from the network's
	// accounting records; CAMARA device objects resolve through them.
	IPv4 netip.Addr   `json:"ipv4,omitzero"`
	IPv6 netip.Prefix `json:"ipv6,omitzero"`

	Binding *Binding   `json:"binding,omitempty"`
	Status  CardStatus `json:"status"`

	// Version increases with every write; Store.Commit refuses a write
	// whose expected version is stale (ErrConflict).
	Version uint64 `json:"version"`
}

// Clone returns a deep copy of c: changing either never changes the
// other.
func (c *Card) Clone() *Card {
	cp := *c
	if c.Binding != nil {
		b := *c.Binding
		b.IMEIs = slices.Clone(c.Binding.IMEIs)
		if c.Binding.Area != nil {
			a := *c.Binding.Area
			b.Area = &a
		}
		cp.Binding = &b
	}
	if c.Status.LastLocation != nil {
		l := *c.Status.LastLocation
		cp.Status.LastLocation = &l
	}
	return &cp
}

// CardStatus is the mutable per-card state the engine keeps.
type CardStatus struct {
	State protocol.CardState `json:"state"`
	// Reason is the decision that put the card in its state.
	Reason protocol.Decision `json:"reason,omitempty"`
	// Manual is set when an operator blocked the card by hand: only an
	// operator resumes it.
	Manual bool `json:"manual,omitempty"`
	// GraceUntil is when a card in grace is blocked if nothing changes.
	GraceUntil time.Time `json:"grace_until,omitzero"`
	// OffendingIMEI is the IMEI of the mismatch that caused the state.
	OffendingIMEI protocol.IMEI `json:"offending_imei,omitempty"`

	LastIMEI     protocol.IMEI      `json:"last_imei,omitempty"`
	LastSource   protocol.Source    `json:"last_source,omitempty"`
	LastSeen     time.Time          `json:"last_seen,omitzero"`
	LastLocation *protocol.Location `json:"last_location,omitempty"`

	// Seq counts the card's history entries; the next entry gets Seq+1.
	Seq uint64 `json:"seq"`
}

// ObservationKind says what an observation tells about a card.
type ObservationKind string

// Observation kinds.
const (
	// ObservedIn: the card was seen in the equipment with the observation's IMEI.
	ObservedIn ObservationKind = "seen"
	// ObservedSeparated: the device the card was in reports it gone or
	// replaced by another card.
	ObservedSeparated ObservationKind = "separated"
	// ObservedAdminBlock and ObservedAdminResume are an operator's hand.
	ObservedAdminBlock  ObservationKind = "admin_block"
	ObservedAdminResume ObservationKind = "admin_resume"
	// ObservedBindingChange: a binding was set or removed (history only;
	// never given to the engine).
	ObservedBindingChange ObservationKind = "binding"
)

// Observation is one fact about a card: it was seen in equipment IMEI at
// Time, from Source; or it left its device; or an operator acted on it.
type Observation struct {
	Kind   ObservationKind `json:"kind"`
	ICCID  protocol.ICCID  `json:"iccid"`
	IMEI   protocol.IMEI   `json:"imei,omitempty"`
	Source protocol.Source `json:"source"`
	Time   time.Time       `json:"time"`
	// DeviceID is the enrolled device that reported, for agent reports.
	DeviceID string `json:"device_id,omitempty"`
	// Location, when the source knew it.
	Location *protocol.Location `json:"location,omitempty"`
	// Cell is the serving cell, when the source named one; ingest places
	// it on the map (Location) through the cell table when the source gave
	// no position of its own.
	Cell *protocol.Cell `json:"cell,omitempty"`
	// Actor names who acted, for admin and API observations.
	Actor string `json:"actor,omitempty"`
	// Ref identifies the observation at its source (device and sequence
	// number, RADIUS session, request id), for history and idempotency.
	Ref string `json:"ref,omitempty"`
}

// HistoryEntry records one thing that changed a card: the observation, the
// decision and the transition, in the order they happened.
type HistoryEntry struct {
	ICCID    protocol.ICCID       `json:"iccid"`
	Seq      uint64               `json:"seq"`
	Time     time.Time            `json:"time"`
	Decision protocol.Decision    `json:"decision"`
	From     protocol.CardState   `json:"from"`
	To       protocol.CardState   `json:"to"`
	Observed Observation          `json:"observed"`
	Enforce  Enforcement          `json:"enforce,omitempty"`
	Alerts   []protocol.AlertType `json:"alerts,omitempty"`
	Detail   string               `json:"detail,omitempty"`
}

// Enforcement is what to do to a card's service at the network.
type Enforcement string

// Enforcement actions.
const (
	EnforceNone   Enforcement = ""
	EnforceBlock  Enforcement = "block"
	EnforceResume Enforcement = "resume"
)

// OutboxKind names the dispatcher an outbox entry is for.
type OutboxKind string

// Outbox kinds.
const (
	OutboxEnforce OutboxKind = "enforce" // Payload is an EnforceTask
	OutboxAlert   OutboxKind = "alert"   // Payload is a protocol.Alert
	// OutboxWebhook prefixes the kinds of CloudEvents queued for CAMARA
	// subscription sinks: one queue per subscription, kind
	// "webhook/<subscription id>". Package webhook writes and delivers them.
	OutboxWebhook OutboxKind = "webhook"
)

// OutboxEntry is work a dispatcher must do after a decision is durable:
// enforce at the network, publish an alert. Its ID is stable and doubles
// as the idempotency key, so a retry after a crash repeats nothing harmful.
type OutboxEntry struct {
	ID       string     `json:"id"`
	Kind     OutboxKind `json:"kind"`
	Created  time.Time  `json:"created"`
	Attempts int        `json:"attempts,omitempty"`
	// NotBefore delays the next attempt (backoff).
	NotBefore time.Time `json:"not_before,omitzero"`
	Payload   []byte    `json:"payload"`
}

// EnforceTask is the payload of an enforcement outbox entry.
type EnforceTask struct {
	ICCID  protocol.ICCID    `json:"iccid"`
	IMSI   protocol.IMSI     `json:"imsi,omitempty"`
	MSISDN protocol.MSISDN   `json:"msisdn,omitempty"`
	Tenant string            `json:"tenant"`
	Action Enforcement       `json:"action"`
	Reason protocol.Decision `json:"reason"`
}

// Device is an enrolled gateway running the agent.
type Device struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	// PublicKey is the device's Ed25519 key that signs its reports.
	PublicKey []byte `json:"public_key"`
	// SecretHash is the SHA-256 of the device's MQTT password (a random
	// secret issued at enrolment; only its hash is kept).
	SecretHash []byte `json:"secret_hash"`
	// IMEI is the modem IMEI at enrolment.
	IMEI protocol.IMEI `json:"imei"`
	// LastSeq is the highest report sequence number accepted.
	LastSeq uint64 `json:"last_seq"`
	// LastICCID is the card the device last reported present.
	LastICCID protocol.ICCID `json:"last_iccid,omitempty"`
	// LastIMEI is the IMEI the device last reported.
	LastIMEI protocol.IMEI `json:"last_imei,omitempty"`
	Enrolled time.Time     `json:"enrolled"`
	// Version guards concurrent writes like Card.Version.
	Version uint64 `json:"version"`
}

// Clone returns a deep copy of d: changing either never changes the
// other.
func (d *Device) Clone() *Device {
	cp := *d
	cp.PublicKey = bytes.Clone(d.PublicKey)
	cp.SecretHash = bytes.Clone(d.SecretHash)
	return &cp
}

// Commit is one atomic write: a card's new state (with its binding), the
// history entry that explains it, the outbox entries it causes, and the
// reporting device's sequence number. Either all of it is stored or none.
type Commit struct {
	// Card is written when not nil; its Version must be the version read
	// (0 for a new card) and is stored as Version+1.
	Card *Card
	// History is appended when not nil.
	History *HistoryEntry
	// Outbox entries are added.
	Outbox []OutboxEntry
	// Device is written when not nil, with the same version rule as Card.
	Device *Device
}

// IndexKind names a secondary index that finds a card.
type IndexKind string

// Card indexes (the identifiers a CAMARA device object or a network record
// names a card by).
const (
	ByIMSI   IndexKind = "imsi"
	ByMSISDN IndexKind = "msisdn"
	ByIPv4   IndexKind = "ipv4"
	ByIPv6   IndexKind = "ipv6"
	ByNAI    IndexKind = "nai"
)

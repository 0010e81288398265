package verifier

import (
	"context"
	"time"

	"github.com/cardbind/cardbind/protocol"
)

// Store keeps the verifier's durable state. Pebble implements it today
// (store/pebble) and PostgreSQL later; store/storetest is the conformance
// suite both must pass. Every method is safe for concurrent use.
//
// Methods that read one record return ErrNotFound when it does not exist.
// Writes are durable (synced) when they return nil, except CommitLazy's.
type Store interface {
	// Card returns the card with this ICCID.
	Card(ctx context.Context, iccid protocol.ICCID) (*Card, error)
	// Cards returns the cards with these ICCIDs, in the same order, with
	// nil for one that does not exist (not an error): the bulk read of an
	// import batch, one round trip.
	Cards(ctx context.Context, iccids []protocol.ICCID) ([]*Card, error)
	// FindCard returns the card an index points at: an IMSI, an E.164
	// MSISDN, an IPv4 address, an IPv6 prefix in CIDR form, or a NAI.
	FindCard(ctx context.Context, by IndexKind, value string) (*Card, error)
	// Commit writes a decision atomically: card, history entry, outbox
	// entries and device, all or nothing. A card or device whose Version
	// is not the stored one gets ErrConflict and nothing is written; a new
	// card or device (Version 0) that already exists gets ErrConflict too.
	// An index value (IMSI, MSISDN, IP, NAI) already held by another card
	// moves to this card.
	Commit(ctx context.Context, c *Commit) error
	// CommitAll writes many commits as one atomic, durable write (one
	// synced batch in Pebble, one transaction in PostgreSQL): all of them
	// or none. Each commit obeys Commit's rules; if any card or device
	// version check fails, CommitAll returns ErrConflict and writes
	// nothing, and the caller retries commit by commit. A card, device or
	// outbox id may appear in at most one commit of a call (an error that
	// is not ErrConflict otherwise). On success every Card.Version and
	// Device.Version is the stored one, as after Commit; on failure they
	// are unchanged. No commits is a no-op.
	CommitAll(ctx context.Context, cs []*Commit) error
	// CommitLazy is Commit without waiting for the disk: when it returns
	// nil the write is applied (reads see it, versions moved on) but
	// may not be durable yet. It becomes durable with the next Sync or
	// durable write, whichever call made it; writes become durable in
	// the order they were made, so a crash loses a lazy write only with
	// every write made after it (an asynchronous commit in PostgreSQL).
	// For writes whose loss in a crash is harmless until something is
	// acknowledged, such as a heartbeat's last-seen time: call Sync
	// before acknowledging them.
	CommitLazy(ctx context.Context, c *Commit) error
	// Sync makes every write made before it durable.
	Sync(ctx context.Context) error
	// UpsertInventory creates cards or updates their inventory fields
	// (Tenant, IMSI, MSISDN, NAI) in one atomic batch, leaving binding and
	// status alone. It is idempotent: applying the same items again
	// changes nothing. It returns how many cards were created and how many
	// changed.
	UpsertInventory(ctx context.Context, items []Card) (created, changed int, err error)
	// History returns up to limit history entries of a card with Seq
	// greater than after, oldest first.
	History(ctx context.Context, iccid protocol.ICCID, after uint64, limit int) ([]HistoryEntry, error)
	// GraceDue returns up to limit cards in grace whose GraceUntil is at
	// or before now.
	GraceDue(ctx context.Context, now time.Time, limit int) ([]protocol.ICCID, error)

	// Device returns an enrolled device.
	Device(ctx context.Context, id string) (*Device, error)

	// PendingOutbox returns up to limit outbox entries of a kind whose
	// NotBefore is at or before now, oldest first.
	PendingOutbox(ctx context.Context, kind OutboxKind, now time.Time, limit int) ([]OutboxEntry, error)
	// RescheduleOutbox stores an entry's new Attempts and NotBefore.
	RescheduleOutbox(ctx context.Context, e OutboxEntry) error
	// CompleteOutbox removes a done entry. Removing an absent entry is
	// not an error (a dispatcher may finish twice after a crash).
	CompleteOutbox(ctx context.Context, id string) error

	// PutRecord stores value under (ns, key), replacing what was there.
	// Records are the few, rarely written things: tenants, credentials,
	// enrolment tokens, settings.
	PutRecord(ctx context.Context, ns, key string, value []byte) error
	// PutRecords stores many records of namespace ns at once, atomically
	// (bulk imports such as the cell table).
	PutRecords(ctx context.Context, ns string, recs []Record) error
	// GetRecord returns the value under (ns, key).
	GetRecord(ctx context.Context, ns, key string) ([]byte, error)
	// TakeRecord returns the value under (ns, key) and deletes it, in one
	// atomic step: of two concurrent callers, one gets it and the other
	// gets ErrNotFound (one-time tokens rely on it).
	TakeRecord(ctx context.Context, ns, key string) ([]byte, error)
	// DeleteRecord deletes (ns, key); deleting an absent record is not an
	// error.
	DeleteRecord(ctx context.Context, ns, key string) error
	// ListRecords returns up to limit records of ns with keys greater than
	// after, in key order.
	ListRecords(ctx context.Context, ns, after string, limit int) ([]Record, error)

	// Close flushes and closes the store.
	Close() error
}

// Record is one entry of Store's record space.
type Record struct {
	Key   string
	Value []byte
}

package radius

import (
	"context"
	"errors"
	"sync"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/engine"
)

var errTransient = errors.New("store unavailable")

// fakeCards is an in-memory card store with the Store's version rule and
// IMSI/MSISDN indexes. failFind, failCommit and failSync make the next
// calls fail with errTransient.
type fakeCards struct {
	mu         sync.Mutex
	cards      map[protocol.ICCID]verifier.Card
	failFind   int
	failCommit int
	failSync   int
	commits    int
	syncs      int
	outbox     []verifier.OutboxEntry
}

func newFakeCards(cards ...verifier.Card) *fakeCards {
	f := &fakeCards{cards: make(map[protocol.ICCID]verifier.Card)}
	for _, c := range cards {
		c.Version = 1
		f.cards[c.ICCID] = c
	}
	return f
}

func (f *fakeCards) FindCard(_ context.Context, by verifier.IndexKind, value string) (*verifier.Card, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failFind > 0 {
		f.failFind--
		return nil, errTransient
	}
	for _, c := range f.cards {
		if (by == verifier.ByIMSI && string(c.IMSI) == value) || (by == verifier.ByMSISDN && string(c.MSISDN) == value) ||
			(by == verifier.ByIPv4 && c.IPv4.IsValid() && c.IPv4.String() == value) {
			return &c, nil
		}
	}
	return nil, verifier.ErrNotFound
}

func (f *fakeCards) Card(_ context.Context, iccid protocol.ICCID) (*verifier.Card, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.cards[iccid]
	if !ok {
		return nil, verifier.ErrNotFound
	}
	return &c, nil
}

func (f *fakeCards) Commit(_ context.Context, cm *verifier.Commit) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failCommit > 0 {
		f.failCommit--
		return errTransient
	}
	c := *cm.Card
	if f.cards[c.ICCID].Version != c.Version {
		return verifier.ErrConflict
	}
	c.Version++
	f.cards[c.ICCID] = c
	f.commits++
	f.outbox = append(f.outbox, cm.Outbox...)
	return nil
}

// CommitLazy is Commit: the fake has no disk to wait for.
func (f *fakeCards) CommitLazy(ctx context.Context, cm *verifier.Commit) error {
	return f.Commit(ctx, cm)
}

// Sync counts: the fake has nothing to make durable.
func (f *fakeCards) Sync(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failSync > 0 {
		f.failSync--
		return errTransient
	}
	f.syncs++
	return nil
}

// Device makes fakeCards an ingest.Store: no devices are enrolled.
func (f *fakeCards) Device(context.Context, string) (*verifier.Device, error) {
	return nil, verifier.ErrNotFound
}

func (f *fakeCards) enforcements() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, e := range f.outbox {
		if e.Kind == verifier.OutboxEnforce {
			out = append(out, e.ID)
		}
	}
	return out
}

func (f *fakeCards) get(iccid protocol.ICCID) verifier.Card {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cards[iccid]
}

// fakeObserver records observations; fail makes the next calls fail.
// With cards set, it writes the card (a version bump, as the engine's
// commit does).
type fakeObserver struct {
	mu    sync.Mutex
	seen  []verifier.Observation
	tens  []string
	fail  int
	cards *fakeCards
}

func (o *fakeObserver) ObserveLazy(ctx context.Context, obs verifier.Observation, tenant string) (engine.Outcome, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fail > 0 {
		o.fail--
		return engine.Outcome{}, errTransient
	}
	if o.cards != nil {
		c, err := o.cards.Card(ctx, obs.ICCID)
		if err != nil {
			return engine.Outcome{}, err
		}
		c.Status.LastIMEI = obs.IMEI
		if err := o.cards.Commit(ctx, &verifier.Commit{Card: c}); err != nil {
			return engine.Outcome{}, err
		}
	}
	o.seen = append(o.seen, obs)
	o.tens = append(o.tens, tenant)
	return engine.Outcome{}, nil
}

func (o *fakeObserver) observations() []verifier.Observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]verifier.Observation(nil), o.seen...)
}

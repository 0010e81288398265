package camara

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// memStore is an in-memory verifier.Store: enough of one for the service's
// binding changes, the API's lookups and the OAuth client registry.
type memStore struct {
	mu      sync.Mutex
	cards   map[protocol.ICCID][]byte // JSON, so callers never share memory
	index   map[string]protocol.ICCID // kind + "\x00" + value
	records map[string][]byte
	commits int
	failErr error // FindCard fails with it when set
}

var _ verifier.Store = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{cards: map[protocol.ICCID][]byte{}, index: map[string]protocol.ICCID{}, records: map[string][]byte{}}
}

func (s *memStore) put(c *verifier.Card) {
	data, _ := json.Marshal(c)
	s.cards[c.ICCID] = data
	add := func(k verifier.IndexKind, v string) {
		if v != "" {
			s.index[string(k)+"\x00"+v] = c.ICCID
		}
	}
	add(verifier.ByIMSI, string(c.IMSI))
	add(verifier.ByMSISDN, string(c.MSISDN))
	add(verifier.ByNAI, c.NAI)
	if c.IPv4.IsValid() {
		add(verifier.ByIPv4, c.IPv4.String())
	}
	if c.IPv6.IsValid() {
		add(verifier.ByIPv6, c.IPv6.String())
	}
}

func (s *memStore) get(iccid protocol.ICCID) (*verifier.Card, error) {
	data, ok := s.cards[iccid]
	if !ok {
		return nil, verifier.ErrNotFound
	}
	var c verifier.Card
	err := json.Unmarshal(data, &c)
	return &c, err
}

func (s *memStore) Card(_ context.Context, iccid protocol.ICCID) (*verifier.Card, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.get(iccid)
}

func (s *memStore) Cards(_ context.Context, iccids []protocol.ICCID) ([]*verifier.Card, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*verifier.Card, len(iccids))
	for i, iccid := range iccids {
		c, err := s.get(iccid)
		if err != nil && !errors.Is(err, verifier.ErrNotFound) {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

func (s *memStore) FindCard(_ context.Context, by verifier.IndexKind, value string) (*verifier.Card, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failErr != nil {
		return nil, s.failErr
	}
	iccid, ok := s.index[string(by)+"\x00"+value]
	if !ok {
		return nil, verifier.ErrNotFound
	}
	return s.get(iccid)
}

func (s *memStore) Commit(_ context.Context, c *verifier.Commit) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.Card != nil {
		old, err := s.get(c.Card.ICCID)
		switch {
		case errors.Is(err, verifier.ErrNotFound) && c.Card.Version != 0:
			return verifier.ErrConflict
		case err == nil && old.Version != c.Card.Version:
			return verifier.ErrConflict
		}
		c.Card.Version++
		s.put(c.Card)
	}
	s.commits++
	return nil
}

// CommitLazy is Commit: a memory store has no disk to wait for.
func (s *memStore) CommitLazy(ctx context.Context, c *verifier.Commit) error {
	return s.Commit(ctx, c)
}

// Sync has nothing to do.
func (s *memStore) Sync(context.Context) error { return nil }

func (s *memStore) CommitAll(_ context.Context, cs []*verifier.Commit) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cs {
		if c.Card == nil {
			continue
		}
		old, err := s.get(c.Card.ICCID)
		switch {
		case errors.Is(err, verifier.ErrNotFound) && c.Card.Version != 0:
			return verifier.ErrConflict
		case err == nil && old.Version != c.Card.Version:
			return verifier.ErrConflict
		}
	}
	for _, c := range cs {
		if c.Card != nil {
			c.Card.Version++
			s.put(c.Card)
		}
		s.commits++
	}
	return nil
}

func (s *memStore) UpsertInventory(_ context.Context, items []verifier.Card) (int, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range items {
		c := items[i]
		s.put(&c)
	}
	return len(items), 0, nil
}

func (s *memStore) History(context.Context, protocol.ICCID, uint64, int) ([]verifier.HistoryEntry, error) {
	return nil, nil
}
func (s *memStore) GraceDue(context.Context, time.Time, int) ([]protocol.ICCID, error) {
	return nil, nil
}
func (s *memStore) Device(context.Context, string) (*verifier.Device, error) {
	return nil, verifier.ErrNotFound
}
func (s *memStore) PendingOutbox(context.Context, verifier.OutboxKind, time.Time, int) ([]verifier.OutboxEntry, error) {
	return nil, nil
}
func (s *memStore) RescheduleOutbox(context.Context, verifier.OutboxEntry) error { return nil }
func (s *memStore) CompleteOutbox(context.Context, string) error                 { return nil }
func (s *memStore) Close() error                                                 { return nil }

func (s *memStore) PutRecord(_ context.Context, ns, key string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[ns+"\x00"+key] = slices.Clone(v)
	return nil
}

func (s *memStore) PutRecords(_ context.Context, ns string, recs []verifier.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		s.records[ns+"\x00"+r.Key] = slices.Clone(r.Value)
	}
	return nil
}

func (s *memStore) GetRecord(_ context.Context, ns, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.records[ns+"\x00"+key]
	if !ok {
		return nil, verifier.ErrNotFound
	}
	return slices.Clone(v), nil
}

func (s *memStore) TakeRecord(ctx context.Context, ns, key string) ([]byte, error) {
	v, err := s.GetRecord(ctx, ns, key)
	if err == nil {
		err = s.DeleteRecord(ctx, ns, key)
	}
	return v, err
}

func (s *memStore) DeleteRecord(_ context.Context, ns, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.records, ns+"\x00"+key)
	return nil
}

func (s *memStore) ListRecords(_ context.Context, ns, after string, limit int) ([]verifier.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []verifier.Record
	for k, v := range s.records {
		n, key, _ := strings.Cut(k, "\x00")
		if n == ns && key > after {
			out = append(out, verifier.Record{Key: key, Value: slices.Clone(v)})
		}
	}
	slices.SortFunc(out, func(a, b verifier.Record) int { return strings.Compare(a.Key, b.Key) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

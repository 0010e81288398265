// Package outbox keeps the agent's signed reports on disk until the broker
// has acknowledged them, across offline periods, crashes and reboots. It
// is bounded: when full, the oldest heartbeat goes first; change reports
// (a SIM removed, a different SIM, a different IMEI) are never dropped.
// What was dropped is counted, and the count survives restarts so the
// next report can say so.
//
// Each entry is one small file named by its sequence number, written to a
// temporary name, synced and renamed, so a power cut leaves either the
// whole entry or nothing. Files are few and small (a report is under
// 2 KiB), which suits the flash file systems of gateways.
package outbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cardbind/cardbind/agent/atomicfile"
)

// Kind tells heartbeats, which may be dropped, from change reports, which
// may not.
type Kind string

// Entry kinds.
const (
	Change    Kind = "change"
	Heartbeat Kind = "heartbeat"
)

// Entry is one queued report.
type Entry struct {
	Seq     uint64
	Kind    Kind
	Payload []byte
}

// Outbox is a bounded on-disk queue of reports. It is safe for concurrent
// use.
type Outbox struct {
	dir   string
	limit int

	mu      sync.Mutex
	entries []meta // ordered by Seq
	dropped uint64
}

type meta struct {
	seq  uint64
	kind Kind
}

const droppedFile = "dropped"

// Open opens (creating) the outbox in dir, holding at most limit entries
// before heartbeats are dropped. Half-written files from a crash are
// removed.
func Open(dir string, limit int) (*Outbox, error) {
	if limit < 1 {
		return nil, errors.New("outbox: limit must be at least 1")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	o := &Outbox{dir: dir, limit: limit}
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	for _, de := range names {
		name := de.Name()
		switch {
		case strings.HasSuffix(name, ".tmp"):
			_ = os.Remove(filepath.Join(dir, name))
		case name == droppedFile:
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return nil, fmt.Errorf("outbox: %w", err)
			}
			if o.dropped, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
				return nil, fmt.Errorf("outbox: %s is corrupt: %w", name, err)
			}
		default:
			m, ok := parseName(name)
			if !ok {
				continue // not ours
			}
			o.entries = append(o.entries, m)
		}
	}
	slices.SortFunc(o.entries, func(a, b meta) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	return o, nil
}

func fileName(m meta) string { return fmt.Sprintf("%020d.%s", m.seq, m.kind) }

func parseName(name string) (meta, bool) {
	num, kind, ok := strings.Cut(name, ".")
	if !ok || len(num) != 20 || (Kind(kind) != Change && Kind(kind) != Heartbeat) {
		return meta{}, false
	}
	seq, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return meta{}, false
	}
	return meta{seq: seq, kind: Kind(kind)}, true
}

// Add stores an entry durably. When the outbox is full, the oldest
// heartbeat is dropped to make room (the new entry itself, if it is a
// heartbeat and nothing older can go); change reports are always kept.
func (o *Outbox) Add(e Entry) error {
	if e.Kind != Change && e.Kind != Heartbeat {
		return fmt.Errorf("outbox: unknown kind %q", e.Kind)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if n := len(o.entries); n > 0 && o.entries[n-1].seq >= e.Seq {
		return fmt.Errorf("outbox: seq %d is not above the last queued %d", e.Seq, o.entries[n-1].seq)
	}
	for len(o.entries) >= o.limit {
		i := slices.IndexFunc(o.entries, func(m meta) bool { return m.kind == Heartbeat })
		if i < 0 {
			break // only change reports: keep them all
		}
		if err := o.remove(o.entries[i]); err != nil {
			return err
		}
		o.entries = slices.Delete(o.entries, i, i+1)
		if err := o.addDropped(1); err != nil {
			return err
		}
	}
	if len(o.entries) >= o.limit && e.Kind == Heartbeat {
		return o.addDropped(1)
	}
	m := meta{seq: e.Seq, kind: e.Kind}
	if err := atomicfile.Write(filepath.Join(o.dir, fileName(m)), e.Payload, 0o600); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	o.entries = append(o.entries, m)
	return nil
}

// Peek returns up to n of the oldest entries, oldest first.
func (o *Outbox) Peek(n int) ([]Entry, error) {
	o.mu.Lock()
	metas := slices.Clone(o.entries[:min(n, len(o.entries))])
	o.mu.Unlock()
	out := make([]Entry, 0, len(metas))
	for _, m := range metas {
		b, err := os.ReadFile(filepath.Join(o.dir, fileName(m)))
		if errors.Is(err, os.ErrNotExist) {
			continue // acknowledged meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("outbox: %w", err)
		}
		out = append(out, Entry{Seq: m.seq, Kind: m.kind, Payload: b})
	}
	return out, nil
}

// Ack removes an entry once the broker has acknowledged it. Acknowledging
// an absent entry is not an error.
func (o *Outbox) Ack(seq uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	i := slices.IndexFunc(o.entries, func(m meta) bool { return m.seq == seq })
	if i < 0 {
		return nil
	}
	if err := o.remove(o.entries[i]); err != nil {
		return err
	}
	o.entries = slices.Delete(o.entries, i, i+1)
	return nil
}

// Len returns how many entries wait.
func (o *Outbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.entries)
}

// Dropped returns how many heartbeats were dropped since the count was
// last reset.
func (o *Outbox) Dropped() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dropped
}

// ResetDropped subtracts n from the dropped count, once a report that
// carried it was acknowledged.
func (o *Outbox) ResetDropped(n uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if n > o.dropped {
		n = o.dropped
	}
	o.dropped -= n
	return o.saveDropped()
}

func (o *Outbox) addDropped(n uint64) error {
	o.dropped += n
	return o.saveDropped()
}

func (o *Outbox) saveDropped() error {
	if err := atomicfile.Write(filepath.Join(o.dir, droppedFile), []byte(strconv.FormatUint(o.dropped, 10)+"\n"), 0o600); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}

func (o *Outbox) remove(m meta) error {
	if err := os.Remove(filepath.Join(o.dir, fileName(m))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}

package pebble

import (
	"errors"
	"fmt"
	"testing"
	"time"

	pdb "github.com/cockroachdb/pebble/v2"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// Which lazy commits wait in memory and what takes them to Pebble.
func TestPendingRows(t *testing.T) {
	const iccid = protocol.ICCID("89860318640220000001")
	tests := []struct {
		name string
		// write is done after a synced commit of the card and device;
		// then the device's LastSeq must read 2, and Pebble alone must
		// hold LastSeq 2 when inPebble, else still 1.
		write    func(s *Store, c *verifier.Card, d *verifier.Device) error
		inPebble bool
	}{
		{"quiet lazy commit waits", func(s *Store, c *verifier.Card, d *verifier.Device) error {
			return s.CommitLazy(ctx, &verifier.Commit{Card: c, Device: d})
		}, false},
		{"device alone waits", func(s *Store, _ *verifier.Card, d *verifier.Device) error {
			return s.CommitLazy(ctx, &verifier.Commit{Device: d})
		}, false},
		{"Sync writes it", func(s *Store, c *verifier.Card, d *verifier.Device) error {
			return errors.Join(s.CommitLazy(ctx, &verifier.Commit{Card: c, Device: d}), s.Sync(ctx))
		}, true},
		{"a later write of another row writes it first", func(s *Store, c *verifier.Card, d *verifier.Device) error {
			return errors.Join(s.CommitLazy(ctx, &verifier.Commit{Card: c, Device: d}),
				s.PutRecord(ctx, "ns", "k", []byte("v")))
		}, true},
		{"a bulk read writes it", func(s *Store, c *verifier.Card, d *verifier.Device) error {
			err := s.CommitLazy(ctx, &verifier.Commit{Card: c, Device: d})
			_, rerr := s.Cards(ctx, []protocol.ICCID{iccid})
			return errors.Join(err, rerr)
		}, true},
		{"with a history entry", func(s *Store, c *verifier.Card, d *verifier.Device) error {
			c.Status.Seq++
			return s.CommitLazy(ctx, &verifier.Commit{Card: c, Device: d,
				History: &verifier.HistoryEntry{ICCID: iccid, Seq: c.Status.Seq, Time: time.Unix(1, 0)}})
		}, true},
		{"an index change", func(s *Store, c *verifier.Card, d *verifier.Device) error {
			c.IMSI = "460001234567890"
			return s.CommitLazy(ctx, &verifier.Commit{Card: c, Device: d})
		}, true},
		{"a grace deadline", func(s *Store, c *verifier.Card, d *verifier.Device) error {
			c.Status.State, c.Status.GraceUntil = protocol.CardGrace, time.Unix(1e9, 0)
			return s.CommitLazy(ctx, &verifier.Commit{Card: c, Device: d})
		}, true},
		{"a conflict writes nothing", func(s *Store, c *verifier.Card, d *verifier.Device) error {
			stale := *d
			stale.Version--
			stale.LastSeq = 7
			if err := s.CommitLazy(ctx, &verifier.Commit{Device: &stale}); !errors.Is(err, verifier.ErrConflict) {
				return fmt.Errorf("stale version: %v, want a conflict", err)
			}
			return s.CommitLazy(ctx, &verifier.Commit{Card: c, Device: d})
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.TempDir(), Options{CacheSize: 8 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			c := &verifier.Card{ICCID: iccid, Tenant: "acme"}
			d := &verifier.Device{ID: "gw-1", Tenant: "acme", LastSeq: 1}
			if err := s.Commit(ctx, &verifier.Commit{Card: c, Device: d}); err != nil {
				t.Fatal(err)
			}
			d.LastSeq = 2
			if err := tt.write(s, c, d); err != nil {
				t.Fatal(err)
			}
			got, err := s.Device(ctx, "gw-1")
			if err != nil || got.LastSeq != 2 || got.Version != 2 {
				t.Fatalf("device read back: %+v, %v; want LastSeq 2, version 2", got, err)
			}
			v, err := getCopy(s.db, deviceKey("gw-1"))
			if err != nil {
				t.Fatal(err)
			}
			inPebble, err := decodeDevice("gw-1", v)
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]uint64{true: 2, false: 1}[tt.inPebble]; inPebble.LastSeq != want {
				t.Errorf("Pebble alone holds LastSeq %d, want %d", inPebble.LastSeq, want)
			}
		})
	}
}

// A lazy commit that fills the pending rows takes them to Pebble.
func TestPendingRowsBounded(t *testing.T) {
	s, err := Open(t.TempDir(), Options{CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	devs := make([]*verifier.Commit, maxPendingRows)
	for i := range devs {
		devs[i] = &verifier.Commit{Device: &verifier.Device{ID: racedDevice(i), Tenant: "acme"}}
	}
	if err := s.CommitAll(ctx, devs); err != nil {
		t.Fatal(err)
	}
	pending := func() int {
		s.pending.mu.Lock()
		defer s.pending.mu.Unlock()
		return len(s.pending.rows)
	}
	for i, c := range devs {
		c.Device.LastSeq = 1
		if err := s.CommitLazy(ctx, c); err != nil {
			t.Fatal(err)
		}
		if n, want := pending(), (i+1)%maxPendingRows; n != want {
			t.Fatalf("%d rows pending after %d lazy commits, want %d", n, i+1, want)
		}
	}
}

// Lazy commits waiting in memory, flushes, bulk reads, syncs and other
// writes race with the readers of checkReadsFollowWrites; once the store
// is closed and opened again, every row is the last one written, so no
// flush wrote a value over a newer one.
func TestPendingReadsFollowWrites(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{CacheSize: 8 << 20, RowCache: rowCacheShards})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	commit := func(n int, c *verifier.Commit) error {
		if n%5 == 4 { // a write that goes to Pebble at once
			return s.commitAll(ctx, []*verifier.Commit{c}, pdb.NoSync)
		}
		return s.CommitLazy(ctx, c)
	}
	background := func(done <-chan struct{}) {
		for n := 0; ; n++ {
			select {
			case <-done:
				return
			default:
			}
			var err error
			switch n % 3 {
			case 0:
				err = s.Sync(ctx)
			case 1:
				_, err = s.Cards(ctx, []protocol.ICCID{racedICCID(n % rowsRaced), racedICCID((n + 1) % rowsRaced)})
			default:
				err = s.flushPending()
			}
			if err != nil {
				t.Error(err)
				return
			}
		}
	}
	checkReadsFollowWrites(t, s, commit, background)
	s = reopen(t, s, dir)
	defer s.Close()
	checkRowsWritten(t, s, "after reopening")
}

// sameShardDevice returns the id of a device whose row falls in the same
// row cache shard as key.
func sameShardDevice(t *testing.T, c *rowCache, key []byte) string {
	t.Helper()
	for i := range 100_000 {
		id := fmt.Sprintf("gw-other-%d", i)
		if c.shard(deviceKey(id)) == c.shard(key) {
			return id
		}
	}
	t.Fatal("no device in the same shard")
	return ""
}

// A reader that missed the row cache before a lazy commit, and reads
// Pebble after it, must not put the older value in the cache: once a
// sync takes the new one out of pending, reads would return the old
// value for good, and a write on it would undo the lazy commit. The
// hook holds the reader between its two lookups while the commit is
// made and the cache's copy of it evicted (a shard of one entry).
func TestPendingNoStaleFill(t *testing.T) {
	s, err := Open(t.TempDir(), Options{CacheSize: 8 << 20, RowCache: rowCacheShards})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := &verifier.Device{ID: "gw-1", Tenant: "acme", LastSeq: 1}
	key := deviceKey(d.ID)
	other := &verifier.Device{ID: sameShardDevice(t, s.rowCache, key), Tenant: "acme"}
	if err := s.CommitAll(ctx, []*verifier.Commit{{Device: d}, {Device: other}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Device(ctx, other.ID); err != nil { // the shard holds the other device
		t.Fatal(err)
	}

	between, resume := make(chan struct{}), make(chan struct{})
	s.hookRowLookups = func(k []byte) {
		if string(k) == string(key) {
			s.hookRowLookups = nil
			close(between)
			<-resume
		}
	}
	read := make(chan error, 1)
	go func() {
		_, err := s.Device(ctx, d.ID)
		read <- err
	}()
	<-between
	d.LastSeq = 2
	if err := s.CommitLazy(ctx, &verifier.Commit{Device: d}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Device(ctx, other.ID); err != nil { // evicts gw-1's new value
		t.Fatal(err)
	}
	close(resume)
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := s.Device(ctx, d.ID)
	if err != nil || got.LastSeq != 2 || got.Version != 2 {
		t.Fatalf("after the sync the device reads %+v, %v; want LastSeq 2, version 2", got, err)
	}
}

// Once a reader saw a lazy commit's rows in pending, a sync may take them
// out before the commit has put them in the cache; a later reader must
// not get the older values the cache still holds.
func TestPendingRowsNeverBehindCache(t *testing.T) {
	s, err := Open(t.TempDir(), Options{CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const iccid = protocol.ICCID("89860318640220000001")
	c := &verifier.Card{ICCID: iccid, Tenant: "acme", Status: verifier.CardStatus{Seq: 1}}
	d := &verifier.Device{ID: "gw-1", Tenant: "acme", LastSeq: 1}
	if err := s.Commit(ctx, &verifier.Commit{Card: c, Device: d}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Card(ctx, iccid); err != nil { // both rows in the cache
		t.Fatal(err)
	}
	if _, err := s.Device(ctx, d.ID); err != nil {
		t.Fatal(err)
	}

	var first, second *verifier.Device
	var card *verifier.Card
	s.hookQuietPut = func() {
		s.hookQuietPut = nil
		var err1, err2, err3 error
		first, err1 = s.Device(ctx, d.ID)
		err := s.flushPending()
		second, err2 = s.Device(ctx, d.ID)
		card, err3 = s.Card(ctx, iccid)
		if err := errors.Join(err1, err, err2, err3); err != nil {
			t.Error(err)
		}
	}
	d.LastSeq, c.Status.Seq = 2, 2
	if err := s.CommitLazy(ctx, &verifier.Commit{Card: c, Device: d}); err != nil {
		t.Fatal(err)
	}
	if first == nil || second == nil || card == nil {
		t.Fatal("the hook did not run")
	}
	if second.Version < first.Version || card.Status.Seq < first.LastSeq {
		t.Errorf("a reader got device version %d; one after it got device version %d and card seq %d: older",
			first.Version, second.Version, card.Status.Seq)
	}
}

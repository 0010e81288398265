package pebble

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	pdb "github.com/cockroachdb/pebble/v2"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

func TestRowCache(t *testing.T) {
	key := []byte("dgw-1")
	tests := []struct {
		name string
		run  func(c *rowCache) // then get(key) must give want
		want string            // "" for a miss
	}{
		{"empty", func(c *rowCache) {}, ""},
		{"filled", func(c *rowCache) {
			_, gen, _ := c.get(key)
			c.fill(key, []byte("v1"), gen)
		}, "v1"},
		{"written", func(c *rowCache) {
			c.written([]rowValue{{key: string(key), value: []byte("v2")}})
		}, "v2"},
		{"a fill from before a write is refused", func(c *rowCache) {
			_, gen, _ := c.get(key)
			c.written([]rowValue{{key: string(key), value: []byte("v2")}})
			c.fill(key, []byte("v1"), gen)
		}, "v2"},
		{"a fill from before a write of another key of the shard is refused", func(c *rowCache) {
			_, gen, _ := c.get(key)
			c.written([]rowValue{{key: string(sameShard(c, key)), value: []byte("other")}})
			c.fill(key, []byte("v1"), gen)
		}, ""},
		{"a fill from before a failed write is refused", func(c *rowCache) {
			_, gen, _ := c.get(key)
			c.forget([]rowValue{{key: string(key), value: nil}})
			c.fill(key, []byte("v1"), gen)
		}, ""},
		{"a failed write forgets the value", func(c *rowCache) {
			c.written([]rowValue{{key: string(key), value: []byte("v2")}})
			c.forget([]rowValue{{key: string(key), value: []byte("v3")}})
		}, ""},
		{"a row being written misses", func(c *rowCache) {
			c.written([]rowValue{{key: string(key), value: []byte("v1")}})
			c.begin([]rowValue{{key: string(key), value: []byte("v2")}})
		}, ""},
		{"a fill during a write is refused", func(c *rowCache) {
			c.begin([]rowValue{{key: string(key), value: []byte("v2")}})
			_, gen, _ := c.get(key)
			c.fill(key, []byte("v1"), gen)
		}, ""},
		{"a fill after a write is taken", func(c *rowCache) {
			c.begin([]rowValue{{key: string(key), value: []byte("v2")}})
			c.written([]rowValue{{key: string(key), value: []byte("v2")}})
			_, gen, _ := c.get(sameShard(c, key))
			c.fill(key, []byte("v2 read"), gen)
		}, "v2 read"},
		{"a fill after a failed write is taken", func(c *rowCache) {
			c.begin([]rowValue{{key: string(key), value: []byte("v2")}})
			c.forget([]rowValue{{key: string(key), value: []byte("v2")}})
			_, gen, _ := c.get(key)
			c.fill(key, []byte("v1"), gen)
		}, "v1"},
		{"a bulk write is not kept", func(c *rowCache) {
			c.written([]rowValue{{key: string(key), value: []byte("v1")}})
			rows := []rowValue{{key: string(key), value: []byte("v2")}}
			for i := range maxPutRows {
				rows = append(rows, rowValue{key: fmt.Sprint("c", i), value: []byte("x")})
			}
			c.begin(rows)
			c.written(rows)
		}, ""},
		{"cleared", func(c *rowCache) {
			c.written([]rowValue{{key: string(key), value: []byte("v1")}})
			c.clear()
		}, ""},
		{"rewritten", func(c *rowCache) {
			c.written([]rowValue{{key: string(key), value: []byte("v2")}})
			c.written([]rowValue{{key: string(key), value: []byte("v3")}})
		}, "v3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newRowCache(1024)
			tt.run(c)
			e, _, ok := c.get(key)
			if got := string(e.v); ok != (tt.want != "") || got != tt.want {
				t.Errorf("get = %q, %v; want %q", got, ok, tt.want)
			}
		})
	}
}

// TestRowCacheRecords: a record stays with the very value it was decoded
// from, never with another, equal or not.
func TestRowCacheRecords(t *testing.T) {
	key := []byte("dgw-1")
	tests := []struct {
		name string
		run  func(c *rowCache) // then get(key) must give the record want
		want any               // nil for none
	}{
		{"written without one", func(c *rowCache) {
			c.written([]rowValue{{key: string(key), value: []byte("v1")}})
		}, nil},
		{"written with one", func(c *rowCache) {
			c.written([]rowValue{{key: string(key), value: []byte("v1"), rec: "r1"}})
		}, "r1"},
		{"kept after a read", func(c *rowCache) {
			c.written([]rowValue{{key: string(key), value: []byte("v1")}})
			e, _, _ := c.get(key)
			c.keep(key, e.v, "r1")
		}, "r1"},
		{"kept after a fill", func(c *rowCache) {
			_, gen, _ := c.get(key)
			v := []byte("v1")
			c.fill(key, v, gen)
			c.keep(key, v, "r1")
		}, "r1"},
		{"not kept for an equal copy", func(c *rowCache) {
			c.written([]rowValue{{key: string(key), value: []byte("v1")}})
			c.keep(key, []byte("v1"), "r1")
		}, nil},
		{"not kept for a value replaced since", func(c *rowCache) {
			c.written([]rowValue{{key: string(key), value: []byte("v1")}})
			e, _, _ := c.get(key)
			c.written([]rowValue{{key: string(key), value: []byte("v2")}})
			c.keep(key, e.v, "r1")
		}, nil},
		{"a write replaces the record", func(c *rowCache) {
			c.written([]rowValue{{key: string(key), value: []byte("v1"), rec: "r1"}})
			c.written([]rowValue{{key: string(key), value: []byte("v2")}})
		}, nil},
		{"the first record kept stays", func(c *rowCache) {
			c.written([]rowValue{{key: string(key), value: []byte("v1"), rec: "r1"}})
			e, _, _ := c.get(key)
			c.keep(key, e.v, "r2")
		}, "r1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newRowCache(1024)
			tt.run(c)
			if e, _, _ := c.get(key); e.rec != tt.want {
				t.Errorf("record %v, want %v", e.rec, tt.want)
			}
		})
	}
}

// sameShard returns a key other than key in key's shard.
func sameShard(c *rowCache, key []byte) []byte {
	for i := 0; ; i++ {
		k := fmt.Appendf(nil, "d%d", i)
		if c.shard(k) == c.shard(key) && string(k) != string(key) {
			return k
		}
	}
}

// The cache holds at most its size (rounded to whole shards), and the
// value last written is among what it holds.
func TestRowCacheBounded(t *testing.T) {
	c := newRowCache(4 * rowCacheShards)
	for i := range 10_000 {
		k := fmt.Appendf(nil, "c%d", i)
		c.written([]rowValue{{key: string(k), value: k}})
		if e, _, ok := c.get(k); !ok || string(e.v) != string(k) {
			t.Fatalf("%s: just written, get = %q, %v", k, e.v, ok)
		}
	}
	for i := range c.shards {
		if n := len(c.shards[i].m); n > 4 {
			t.Errorf("shard %d holds %d values, want at most 4", i, n)
		}
	}
}

// Readers never see a card or device go back to an older version, never
// see a card older than the device a read before it gave when one batch
// wrote both (a batch is as atomic as in Pebble), and see the last one
// once the writes are done, however the cache's fills and evictions fall
// between the writes. The cache is smaller than the
// rows, so reads keep missing and filling. The writes are unsynced
// Pebble batches (CommitLazy before its quiet commits stayed in memory,
// pending.go).
func TestRowCacheReadsFollowWrites(t *testing.T) {
	s, err := Open(t.TempDir(), Options{CacheSize: 8 << 20, RowCache: rowCacheShards})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkReadsFollowWrites(t, s, func(_ int, c *verifier.Commit) error {
		return s.commitAll(ctx, []*verifier.Commit{c}, pdb.NoSync)
	}, nil)
}

// rowsRaced and writesRaced size checkReadsFollowWrites: twice as many
// rows as the row cache of the tests has shards, each written that often.
const rowsRaced, writesRaced = 2 * rowCacheShards, 150

func racedICCID(i int) protocol.ICCID { return protocol.ICCID(fmt.Sprintf("8986031864022%07d", i)) }
func racedDevice(i int) string        { return fmt.Sprintf("gw-%d", i) }

// checkReadsFollowWrites races four writers, each of which writes a
// card and a device together with commit (n counts its writes), against
// four readers (two through the row cache, two past it) and background
// (nil: none), and checks what the readers see, and the rows once the
// writes are done.
func checkReadsFollowWrites(t *testing.T, s *Store, commit func(n int, c *verifier.Commit) error, background func(done <-chan struct{})) {
	t.Helper()
	const rows, writes = rowsRaced, writesRaced
	iccid, device := racedICCID, racedDevice
	for i := range rows {
		err := s.Commit(ctx, &verifier.Commit{Card: &verifier.Card{ICCID: iccid(i), Tenant: "acme"},
			Device: &verifier.Device{ID: device(i), Tenant: "acme"}})
		if err != nil {
			t.Fatal(err)
		}
	}

	// read reads row i's device, then its card.
	read := func(i int) (*verifier.Device, *verifier.Card, error) {
		d, err := s.Device(ctx, device(i))
		if err != nil {
			return nil, nil, err
		}
		c, err := s.Card(ctx, iccid(i))
		return d, c, err
	}
	// readPast reads them past the row cache, as FindCard does.
	readPast := func(i int) (*verifier.Device, *verifier.Card, error) {
		v, _, _, err := s.row('d', device(i), false)
		if err != nil {
			return nil, nil, err
		}
		d, err := decodeDevice(device(i), v)
		if err != nil {
			return nil, nil, err
		}
		c, err := s.readCardUncached(iccid(i))
		return d, c, err
	}

	var writers, readers sync.WaitGroup
	done := make(chan struct{})
	if background != nil {
		readers.Go(func() { background(done) })
	}
	for w := range 4 { // each writer owns every fourth row
		writers.Go(func() {
			n := 0
			for range writes {
				for i := w; i < rows; i += 4 {
					d, c, err := read(i)
					if err != nil {
						t.Error(err)
						return
					}
					d.LastSeq++
					c.Status.Seq = d.LastSeq
					if err := commit(n, &verifier.Commit{Card: c, Device: d}); err != nil {
						t.Error(err)
						return
					}
					n++
				}
			}
		})
	}
	for r := range 4 {
		read := read
		if r%2 == 1 {
			read = readPast
		}
		readers.Go(func() {
			seen := make(map[int]uint64) // card version, and device version << 32
			for n := 0; ; n++ {
				select {
				case <-done:
					return
				default:
				}
				i := (n * 7919) % rows
				d, c, err := read(i)
				if err != nil {
					t.Error(err)
					return
				}
				if c.Status.Seq < d.LastSeq {
					t.Errorf("row %d: the card read after its device is older: seq %d, device's %d (one batch wrote both)", i, c.Status.Seq, d.LastSeq)
					return
				}
				if d.Version != d.LastSeq+1 {
					t.Errorf("device %d: version %d with last seq %d: a value and a version of two writes", i, d.Version, d.LastSeq)
				}
				v := c.Version | d.Version<<32
				if prev := seen[i]; c.Version < prev&0xffffffff || d.Version < prev>>32 {
					t.Errorf("row %d went back: card version %d after %d, device %d after %d",
						i, c.Version, prev&0xffffffff, d.Version, prev>>32)
					return
				}
				seen[i] = v
			}
		})
	}
	writers.Wait()
	close(done)
	readers.Wait()
	checkRowsWritten(t, s, "after the writes")
}

// checkRowsWritten checks that s holds the last write of
// checkReadsFollowWrites for every row.
func checkRowsWritten(t *testing.T, s *Store, when string) {
	t.Helper()
	for i := range rowsRaced {
		c, err := s.Card(ctx, racedICCID(i))
		if err == nil && c.Version != writesRaced+1 {
			err = fmt.Errorf("card version %d, want %d", c.Version, writesRaced+1)
		}
		d, derr := s.Device(ctx, racedDevice(i))
		if derr == nil && d.Version != writesRaced+1 {
			derr = fmt.Errorf("device version %d, want %d", d.Version, writesRaced+1)
		}
		if err := errors.Join(err, derr); err != nil {
			t.Errorf("row %d %s: %v", i, when, err)
		}
	}
}

// reopen closes s and opens the store in dir again.
func reopen(t *testing.T, s *Store, dir string) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A commit that panics in Pebble (here: the store closed under its
// batch) leaves no row marked as being written.
func TestRowCacheMarksEndOnPanic(t *testing.T) {
	s, err := Open(t.TempDir(), Options{CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	b := s.db.NewIndexedBatch()
	fx := effects{}
	if err := putRow(b, &fx, deviceKey("gw-1"), encodeDevice(&verifier.Device{ID: "gw-1"})); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	panicked := false
	func() {
		defer func() { panicked = recover() != nil }()
		err = s.commitBatch(b, nil, &fx)
	}()
	if !panicked {
		t.Fatalf("commit on a closed store did not panic (err %v): the test needs another way to fail a commit", err)
	}
	for i := range s.rowCache.shards {
		if n := len(s.rowCache.shards[i].writing); n != 0 {
			t.Fatalf("shard %d: %d rows still marked after the commit panicked", i, n)
		}
	}
}

// TestReadsAreCopies: the row cache keeps decoded records and shares them
// between its reads, so what a read hands out, and what a writer passed
// in, must be copies: changing them changes nothing stored.
func TestReadsAreCopies(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	card := &verifier.Card{ICCID: "8986031864022000001", Tenant: "acme",
		Binding: &verifier.Binding{IMEIs: []protocol.IMEI{"356938035643809"}, Area: &verifier.Area{Lat: 1, Lon: 2, RadiusM: 3}},
		Status:  verifier.CardStatus{State: protocol.CardActive, LastLocation: &protocol.Location{Lat: 4, Lon: 5}}}
	dev := &verifier.Device{ID: "gw-1", Tenant: "acme", PublicKey: []byte("0123456789abcdef0123456789abcdef"), SecretHash: []byte("hash")}
	if err := s.Commit(ctx, &verifier.Commit{Card: card, Device: dev}); err != nil {
		t.Fatal(err)
	}
	wantCard, wantDev := card.Clone(), dev.Clone()
	wantCard.Version, wantDev.Version = 1, 1
	spoil := func(c *verifier.Card, d *verifier.Device) {
		c.Tenant = "other"
		c.Binding.IMEIs[0] = "000000000000000"
		c.Binding.Area.Lat = 9
		c.Status.LastLocation.Lat = 9
		d.PublicKey[0] = 'X'
		d.SecretHash[0] = 'X'
	}
	check := func(step string) {
		t.Helper()
		for range 2 { // the first read may decode, the second takes the cached record
			c, err := s.Card(ctx, card.ICCID)
			if err != nil {
				t.Fatal(err)
			}
			d, err := s.Device(ctx, dev.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c, wantCard) || !reflect.DeepEqual(d, wantDev) {
				t.Fatalf("%s: read %+v %+v, want %+v %+v", step, c, d, wantCard, wantDev)
			}
			spoil(c, d)
		}
	}
	check("after a commit")

	// A quiet lazy commit leaves its records in the cache.
	c, _ := s.Card(ctx, card.ICCID)
	d, _ := s.Device(ctx, dev.ID)
	c.Status.LastSeen = time.Unix(100, 0).UTC()
	d.LastSeq = 7
	if err := s.CommitLazy(ctx, &verifier.Commit{Card: c, Device: d}); err != nil {
		t.Fatal(err)
	}
	wantCard.Status.LastSeen, wantCard.Version = c.Status.LastSeen, 2
	wantDev.LastSeq, wantDev.Version = 7, 2
	spoil(c, d)
	check("after a lazy commit")
}

package pebble

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/cardbind/cardbind/verifier"
)

// What a crash leaves of lazy commits: nothing that was not synced, all
// that a Sync or a later synced Commit covered, and, when part of the
// unsynced tail survives, a prefix of it: never a later write without the
// ones before it. The crashes are Pebble's in-memory file system dropping
// what was not synced (CrashClone).
func TestCommitLazyCrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openOn(t, fs)
	defer s.Close()
	devs := map[string]*verifier.Device{}
	write := func(id string, seq uint64, lazy bool) {
		t.Helper()
		d := devs[id]
		if d == nil {
			d = &verifier.Device{ID: id, Tenant: "acme"}
			devs[id] = d
		}
		d.LastSeq = seq
		commit := s.Commit
		if lazy {
			commit = s.CommitLazy
		}
		if err := commit(ctx, &verifier.Commit{Device: d}); err != nil {
			t.Fatalf("commit %s seq %d: %v", id, seq, err)
		}
	}
	// afterCrash opens what a crash now would leave and returns each
	// device's LastSeq in it (0: not there).
	afterCrash := func(cfg vfs.CrashCloneCfg, ids ...string) []uint64 {
		t.Helper()
		c := openOn(t, fs.CrashClone(cfg))
		defer c.Close()
		seqs := make([]uint64, len(ids))
		for i, id := range ids {
			d, err := c.Device(ctx, id)
			switch {
			case errors.Is(err, verifier.ErrNotFound):
			case err != nil:
				t.Fatalf("device %s after the crash: %v", id, err)
			default:
				seqs[i] = d.LastSeq
			}
		}
		return seqs
	}
	none := vfs.CrashCloneCfg{}

	write("gw-1", 1, false)
	write("gw-1", 2, true)
	if got := afterCrash(none, "gw-1"); got[0] != 1 {
		t.Errorf("lazy commit not synced: the crash left seq %d, want 1", got[0])
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := afterCrash(none, "gw-1"); got[0] != 2 {
		t.Errorf("after Sync the crash left seq %d, want 2", got[0])
	}
	write("gw-1", 3, true)
	write("gw-2", 1, false) // a synced commit covers the lazy one before it
	if got := afterCrash(none, "gw-1", "gw-2"); got[0] != 3 || got[1] != 1 {
		t.Errorf("after a later synced commit the crash left %v, want [3 1]", got)
	}
	seq := uint64(5)

	// A quiet lazy commit waits in memory (pending.go) until a sync or
	// another write: a crash loses it whole.
	write("gw-1", 4, true)
	write("gw-1", 5, true)
	if got := afterCrash(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(1, 0))}, "gw-1"); got[0] != 3 {
		t.Errorf("quiet lazy commits not flushed: the crash left seq %d, want 3", got[0])
	}

	// Each round syncs, then writes gw-1 just before gw-2 with the same
	// seq, 50 times, lazily, each write taken to Pebble unsynced (as
	// the writes between two syncs are); a prefix of that has gw-1 at
	// gw-2's seq or one ahead.
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	// Whether a crash keeps part of the tail is chance (which unsynced
	// blocks the clone keeps); go on until five did.
	partial, round := 0, 0
	for ; partial < 5 && round < 500; round++ {
		write("gw-2", seq, false)
		synced := seq
		for range 50 {
			seq++
			for _, id := range []string{"gw-1", "gw-2"} {
				write(id, seq, true)
				if err := s.flushPending(); err != nil {
					t.Fatal(err)
				}
			}
		}
		got := afterCrash(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rng}, "gw-1", "gw-2")
		if got[1] < synced || got[0] < got[1] || got[0] > got[1]+1 || got[0] > seq {
			t.Fatalf("round %d: the crash left gw-1 at %d and gw-2 at %d (synced %d, last written %d): not a prefix",
				round, got[0], got[1], synced, seq)
		}
		if got[0] > synced && got[1] < seq {
			partial++
		}
	}
	if partial == 0 {
		t.Error("no crash kept part of the unsynced writes: the prefix rule went untested")
	}
	t.Logf("%d of %d crashes kept part of the unsynced writes", partial, round)
}

func openOn(t *testing.T, fs vfs.FS) *Store {
	t.Helper()
	s, err := Open("db", Options{CacheSize: 8 << 20, FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

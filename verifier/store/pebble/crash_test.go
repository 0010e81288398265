package pebble

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// crashDirEnv, when set, makes TestCrashConsistency the child: it commits
// to the store in that directory until it is killed.
const crashDirEnv = "CARDBIND_STORE_CRASH_DIR"

const (
	crashWriters = 4 // goroutines in the child, each with its own device
	crashCards   = 8 // cards per writer
)

func crashICCID(w, i int) protocol.ICCID {
	return protocol.ICCID(fmt.Sprintf("8986031864%02d%08d", w, i))
}
func crashDevice(w int) string { return fmt.Sprintf("gw-%d", w) }

// TestCrashConsistency kills a process with kill -9 while it commits
// (card + history entry + outbox entry + device per Commit), three times
// over the same store, and checks after each kill that every Commit that
// returned nil is stored, with its history and outbox entries, and that
// nothing is half-written: per card, Version, Status.Seq, the history
// entries and the outbox entries agree, and each device's LastSeq is the
// sum of its cards' Seq.
func TestCrashConsistency(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("kills a child process")
	}
	dir := t.TempDir()
	acked := map[protocol.ICCID]uint64{}
	for round := 0; round < 3; round++ {
		n := crashRun(t, dir, acked)
		t.Logf("round %d: killed after %d acknowledged commits", round, n)
		crashCheck(t, dir, acked)
	}
}

// crashRun starts the child, reads its acknowledgements and kills it
// mid-stream; it returns how many commits were acknowledged.
func crashRun(t *testing.T, dir string, acked map[protocol.ICCID]uint64) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashConsistency$")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := 0
	deadline := time.Now().Add(3 * time.Second)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "ok" {
			continue
		}
		seq, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			t.Fatalf("child said %q", sc.Text())
		}
		iccid := protocol.ICCID(f[1])
		acked[iccid] = max(acked[iccid], seq)
		if n++; n == 400 || time.Now().After(deadline) {
			_ = cmd.Process.Kill() // SIGKILL: no deferred Close, no flush
			break
		}
	}
	_ = cmd.Wait()
	if n == 0 {
		t.Fatal("the child acknowledged no commit")
	}
	return n
}

// crashChild commits until killed, printing "ok <iccid> <seq>" after
// each Commit that returned nil.
func crashChild(dir string) {
	s, err := Open(dir, Options{CacheSize: 8 << 20})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var out sync.Mutex
	for w := 0; w < crashWriters; w++ {
		go func() {
			d, err := s.Device(ctx, crashDevice(w))
			if errors.Is(err, verifier.ErrNotFound) {
				d, err = &verifier.Device{ID: crashDevice(w), Tenant: "acme"}, nil
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			cards := make([]*verifier.Card, crashCards)
			for i := range cards {
				c, err := s.Card(ctx, crashICCID(w, i))
				if errors.Is(err, verifier.ErrNotFound) {
					c, err = &verifier.Card{ICCID: crashICCID(w, i), Tenant: "acme"}, nil
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				cards[i] = c
			}
			for i := 0; ; i++ {
				c := cards[i%crashCards]
				c.Status.Seq++
				c.Status.State = protocol.CardActive
				d.LastSeq++
				err := s.Commit(ctx, &verifier.Commit{
					Card:    c,
					History: &verifier.HistoryEntry{ICCID: c.ICCID, Seq: c.Status.Seq, Detail: strings.Repeat("x", 200)},
					Outbox: []verifier.OutboxEntry{{ID: fmt.Sprintf("%s/%d", c.ICCID, c.Status.Seq), Kind: verifier.OutboxAlert,
						Created: time.Now(), Payload: []byte(`{"n":1}`)}},
					Device: d,
				})
				if err != nil {
					fmt.Fprintln(os.Stderr, "commit:", err)
					os.Exit(2)
				}
				out.Lock()
				fmt.Printf("ok %s %d\n", c.ICCID, c.Status.Seq)
				out.Unlock()
			}
		}()
	}
	select {} // until killed
}

// crashCheck reopens the store and checks it against the acknowledged
// commits.
func crashCheck(t *testing.T, dir string, acked map[protocol.ICCID]uint64) {
	t.Helper()
	s := open(t, dir)
	defer s.Close()
	outbox := map[string]bool{}
	all, err := s.PendingOutbox(ctx, verifier.OutboxAlert, time.Now().Add(time.Hour), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range all {
		outbox[e.ID] = true
	}
	cards, total := 0, uint64(0)
	for w := 0; w < crashWriters; w++ {
		var sum uint64
		for i := 0; i < crashCards; i++ {
			iccid := crashICCID(w, i)
			c, err := s.Card(ctx, iccid)
			if errors.Is(err, verifier.ErrNotFound) {
				if acked[iccid] != 0 {
					t.Errorf("card %s: acknowledged seq %d, not stored", iccid, acked[iccid])
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			cards++
			seq := c.Status.Seq
			sum += seq
			if seq < acked[iccid] {
				t.Errorf("card %s: stored seq %d, acknowledged %d", iccid, seq, acked[iccid])
			}
			if c.Version != seq {
				t.Errorf("card %s: version %d, seq %d", iccid, c.Version, seq)
			}
			h, err := s.History(ctx, iccid, 0, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			if uint64(len(h)) != seq || (seq > 0 && h[len(h)-1].Seq != seq) {
				t.Errorf("card %s: seq %d, %d history entries", iccid, seq, len(h))
			}
			for q := uint64(1); q <= seq+1; q++ {
				if id := fmt.Sprintf("%s/%d", iccid, q); outbox[id] != (q <= seq) {
					t.Errorf("card %s at seq %d: outbox entry %s present %v", iccid, seq, id, outbox[id])
				}
			}
		}
		total += sum
		d, err := s.Device(ctx, crashDevice(w))
		if err != nil {
			t.Fatalf("device %d: %v", w, err)
		}
		if d.LastSeq != sum || d.Version != sum {
			t.Errorf("device %d: LastSeq %d, version %d; its cards' seq sum %d", w, d.LastSeq, d.Version, sum)
		}
	}
	if len(outbox) != len(all) || uint64(len(all)) != total || cards == 0 {
		t.Errorf("%d cards, %d outbox entries (%d distinct), want %d", cards, len(all), len(outbox), total)
	}
}

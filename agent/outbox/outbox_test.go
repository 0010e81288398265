package outbox

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func seqs(t *testing.T, o *Outbox) string {
	t.Helper()
	es, err := o.Peek(1000)
	if err != nil {
		t.Fatal(err)
	}
	s := ""
	for _, e := range es {
		s += fmt.Sprintf("%d%c ", e.Seq, e.Kind[0])
	}
	return s
}

func TestAddPeekAck(t *testing.T) {
	dir := t.TempDir()
	o, err := Open(dir, 10)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 3; i++ {
		if err := o.Add(Entry{Seq: i, Kind: Change, Payload: []byte(fmt.Sprint("report ", i))}); err != nil {
			t.Fatal(err)
		}
	}
	es, _ := o.Peek(2)
	if len(es) != 2 || es[0].Seq != 1 || string(es[1].Payload) != "report 2" {
		t.Fatalf("Peek = %+v", es)
	}
	if err := o.Ack(1); err != nil {
		t.Fatal(err)
	}
	if err := o.Ack(1); err != nil {
		t.Errorf("second ack: %v", err)
	}
	if got := seqs(t, o); got != "2c 3c " {
		t.Errorf("after ack: %q", got)
	}
	if err := o.Add(Entry{Seq: 3, Kind: Change}); err == nil {
		t.Error("repeated seq accepted")
	}
	if err := o.Add(Entry{Seq: 9, Kind: "gossip"}); err == nil {
		t.Error("unknown kind accepted")
	}
}

// Reports survive a restart, in order, and half-written files from a
// crash are cleaned away.
func TestSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	o, _ := Open(dir, 10)
	_ = o.Add(Entry{Seq: 5, Kind: Heartbeat, Payload: []byte("hb")})
	_ = o.Add(Entry{Seq: 7, Kind: Change, Payload: []byte("swap")})
	_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d.change.tmp", 8)), []byte("half"), 0o600)
	_ = os.WriteFile(filepath.Join(dir, "README"), []byte("not ours"), 0o600)

	o2, err := Open(dir, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(t, o2); got != "5h 7c " {
		t.Errorf("after reopen: %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%020d.change.tmp", 8))); !os.IsNotExist(err) {
		t.Error("temporary file left behind")
	}
}

func TestBoundDropsOldestHeartbeatsNeverChanges(t *testing.T) {
	dir := t.TempDir()
	o, _ := Open(dir, 4)
	add := func(seq uint64, k Kind) {
		t.Helper()
		if err := o.Add(Entry{Seq: seq, Kind: k, Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	add(1, Heartbeat)
	add(2, Change)
	add(3, Heartbeat)
	add(4, Heartbeat)
	add(5, Change) // full: drops heartbeat 1
	if got := seqs(t, o); got != "2c 3h 4h 5c " {
		t.Fatalf("after first overflow: %q", got)
	}
	add(6, Heartbeat) // drops heartbeat 3
	add(7, Change)    // drops heartbeat 4
	add(8, Change)    // drops heartbeat 6
	if got := seqs(t, o); got != "2c 5c 7c 8c " {
		t.Fatalf("after more: %q", got)
	}
	add(9, Change)     // only changes: kept beyond the bound
	add(10, Heartbeat) // no room, nothing older to drop: this one is dropped
	if got := seqs(t, o); got != "2c 5c 7c 8c 9c " {
		t.Fatalf("change reports dropped: %q", got)
	}
	if o.Dropped() != 5 {
		t.Errorf("dropped = %d, want 5", o.Dropped())
	}
	o2, _ := Open(dir, 4)
	if o2.Dropped() != 5 {
		t.Errorf("dropped count after restart = %d", o2.Dropped())
	}
	if err := o2.ResetDropped(3); err != nil || o2.Dropped() != 2 {
		t.Errorf("ResetDropped: %v, now %d", err, o2.Dropped())
	}
	if err := o2.ResetDropped(10); err != nil || o2.Dropped() != 0 {
		t.Errorf("ResetDropped past zero: %v, now %d", err, o2.Dropped())
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(t.TempDir(), 0); err == nil {
		t.Error("zero limit accepted")
	}
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, droppedFile), []byte("many"), 0o600)
	if _, err := Open(dir, 5); err == nil {
		t.Error("corrupt dropped count accepted")
	}
}

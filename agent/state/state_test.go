package state

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cardbind/cardbind/protocol"
)

func TestKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state")
	d, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", st.Mode().Perm())
	}
	if _, err := d.Key(); !errors.Is(err, ErrNotEnrolled) {
		t.Errorf("no key: %v", err)
	}
	k, err := d.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(path, keyFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", st.Mode().Perm())
	}
	k2, err := d.Key()
	if err != nil || !k.Equal(k2) {
		t.Fatalf("read back: %v", err)
	}
	_ = os.Chmod(filepath.Join(path, keyFile), 0o644)
	if _, err := d.Key(); err == nil {
		t.Error("world-readable key accepted")
	}
}

func TestCredentials(t *testing.T) {
	d, _ := Open(t.TempDir())
	if _, err := d.Credentials(); !errors.Is(err, ErrNotEnrolled) {
		t.Errorf("none: %v", err)
	}
	pub, _, _ := ed25519.GenerateKey(nil)
	r := &protocol.EnrollResponse{Version: 1, DeviceID: "gw-1", Tenant: "acme", BrokerURL: "tcp://127.0.0.1:1883",
		Username: "gw-1", Password: "p", ReportTopic: protocol.ReportTopic("gw-1"), CommandTopic: protocol.CommandTopic("gw-1"), CommandKey: pub}
	if err := d.SaveCredentials(r); err != nil {
		t.Fatal(err)
	}
	got, err := d.Credentials()
	if err != nil || got.Password != "p" || got.DeviceID != "gw-1" {
		t.Fatalf("%+v %v", got, err)
	}
}

// Sequence numbers grow strictly across restarts, even when the agent
// stops in the middle of a block.
func TestSequenceAcrossRestarts(t *testing.T) {
	d, _ := Open(t.TempDir())
	var last uint64
	for restart := 0; restart < 4; restart++ {
		s, err := d.Sequence(8)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5+restart*3; i++ {
			n, err := s.Next()
			if err != nil {
				t.Fatal(err)
			}
			if n <= last {
				t.Fatalf("restart %d: %d after %d", restart, n, last)
			}
			last = n
		}
	}
	_ = os.WriteFile(filepath.Join(d.Path(), seqFile), []byte("garbage"), 0o600)
	if _, err := d.Sequence(8); err == nil {
		t.Error("corrupt sequence file accepted")
	}
}

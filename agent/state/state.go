// Package state keeps what the agent must remember across restarts, in
// its state directory (mode 0700): the device's signing key (created at
// enrolment, mode 0600, never leaves the device), the credentials the
// verifier issued, and the report sequence number, which only ever grows.
package state

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/cardbind/cardbind/agent/atomicfile"
	"github.com/cardbind/cardbind/protocol"
)

// ErrNotEnrolled means the state directory holds no credentials yet: run
// "cardbind-agent enroll" first.
var ErrNotEnrolled = errors.New("device is not enrolled (run cardbind-agent enroll)")

const (
	keyFile   = "device.key"
	credsFile = "credentials.json"
	seqFile   = "sequence"
)

// Dir is the agent's state directory.
type Dir struct{ path string }

// Open opens (creating, mode 0700) the state directory. An existing
// directory readable by others is made private.
func Open(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := os.Chmod(path, 0o700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return &Dir{path: path}, nil
}

// Path returns the directory's path.
func (d *Dir) Path() string { return d.path }

// NewKey creates the device's signing key, replacing any earlier one.
func (d *Dir) NewKey() (ed25519.PrivateKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	data := []byte(base64.StdEncoding.EncodeToString(key.Seed()) + "\n")
	if err := atomicfile.Write(filepath.Join(d.path, keyFile), data, 0o600); err != nil {
		return nil, fmt.Errorf("state: save key: %w", err)
	}
	return key, nil
}

// Key reads the device's signing key. A key file readable by others is
// refused: the key would no longer prove anything.
func (d *Dir) Key() (ed25519.PrivateKey, error) {
	path := filepath.Join(d.path, keyFile)
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotEnrolled
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("state: %s is readable by others (mode %v); it must be 0600", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("state: %s is corrupt", path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// SaveCredentials stores what the verifier answered at enrolment.
func (d *Dir) SaveCredentials(r *protocol.EnrollResponse) error {
	data, err := protocol.EncodeEnrollResponse(r)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(d.path, credsFile), data, 0o600); err != nil {
		return fmt.Errorf("state: save credentials: %w", err)
	}
	return nil
}

// Credentials reads the enrolment answer.
func (d *Dir) Credentials() (*protocol.EnrollResponse, error) {
	b, err := os.ReadFile(filepath.Join(d.path, credsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotEnrolled
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	r, err := protocol.DecodeEnrollResponse(b)
	if err != nil {
		return nil, fmt.Errorf("state: %s: %w", credsFile, err)
	}
	return r, nil
}

// Sequence hands out report sequence numbers that grow strictly across
// restarts and power cuts. It reserves them in blocks: the file holds the
// end of the reserved block, written before any number in it is used, so
// a restart continues above it (a gap the verifier accepts) and the flash
// is written once per block, not once per report.
type Sequence struct {
	path  string
	block uint64

	mu   sync.Mutex
	next uint64 // next number to hand out
	end  uint64 // numbers below end are reserved on disk
}

// Sequence opens the device's sequence counter.
func (d *Dir) Sequence(block uint64) (*Sequence, error) {
	if block == 0 {
		block = 64
	}
	s := &Sequence{path: filepath.Join(d.path, seqFile), block: block}
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		s.end = 1
	case err != nil:
		return nil, fmt.Errorf("state: %w", err)
	default:
		if s.end, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil || s.end == 0 {
			return nil, fmt.Errorf("state: %s is corrupt; refusing to reuse sequence numbers", s.path)
		}
	}
	s.next = s.end
	return s, nil
}

// Next returns the next sequence number, reserving a new block on disk
// when the current one is used up.
func (s *Sequence) Next() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next >= s.end {
		end := s.next + s.block
		if err := atomicfile.Write(s.path, []byte(strconv.FormatUint(end, 10)+"\n"), 0o600); err != nil {
			return 0, fmt.Errorf("state: reserve sequence numbers: %w", err)
		}
		s.end = end
	}
	n := s.next
	s.next++
	return n, nil
}

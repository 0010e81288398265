package radius

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"time"

	lr "layeh.com/radius"
)

// Sender sends accounting requests the way a PGW or GGSN does, for tests
// and the simulated network: it builds the request from a Record, sends
// it over UDP and retransmits the same datagram until an authentic
// Accounting-Response arrives or ctx is done. A Sender is safe for
// concurrent use; each Send uses its own socket.
type Sender struct {
	// Addr is the accounting server's UDP address ("127.0.0.1:1813").
	Addr string
	// Secret is the shared secret.
	Secret []byte
	// NASIdentifier is sent as NAS-Identifier when the record has none.
	NASIdentifier string
	// Retry is the retransmission interval (default 1s).
	Retry time.Duration
	// Timeout bounds a Send when ctx has no deadline (default 10s).
	Timeout time.Duration
}

// ErrNoAnswer is returned by Send when no authentic answer arrived in
// time.
var ErrNoAnswer = errors.New("radius: no accounting response")

// Send sends one accounting request for r and waits for its answer.
func (s *Sender) Send(ctx context.Context, r *Record) error {
	if _, ok := ctx.Deadline(); !ok {
		t := s.Timeout
		if t <= 0 {
			t = 10 * time.Second
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	rec := *r
	if rec.NASIdentifier == "" {
		rec.NASIdentifier = s.NASIdentifier
	}
	var id [1]byte
	if _, err := rand.Read(id[:]); err != nil {
		return fmt.Errorf("radius: send: %w", err)
	}
	req, err := EncodeRequest(&rec, id[0], s.Secret)
	if err != nil {
		return err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", s.Addr)
	if err != nil {
		return fmt.Errorf("radius: send to %s: %w", s.Addr, err)
	}
	defer conn.Close()
	retry := s.Retry
	if retry <= 0 {
		retry = time.Second
	}
	buf := make([]byte, lr.MaxPacketLength)
	for {
		if _, err := conn.Write(req); err != nil {
			return fmt.Errorf("radius: send to %s: %w", s.Addr, err)
		}
		deadline := time.Now().Add(retry)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		if err := conn.SetReadDeadline(deadline); err != nil {
			return fmt.Errorf("radius: send: %w", err)
		}
		for {
			n, err := conn.Read(buf)
			if err != nil {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					// ICMP port unreachable and the like: try again after
					// the interval, as a NAS would.
					select {
					case <-ctx.Done():
					case <-time.After(time.Until(deadline)):
					}
				}
				break
			}
			resp := buf[:n]
			if n >= 20 && lr.Code(resp[0]) == lr.CodeAccountingResponse && resp[1] == req[1] &&
				lr.IsAuthenticResponse(resp, req, s.Secret) {
				return nil
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w from %s for %s session %q: %w", ErrNoAnswer, s.Addr, r.Status, r.SessionID, ctx.Err())
		}
	}
}

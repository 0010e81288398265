package radius

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	lr "layeh.com/radius"
)

// DefaultAddr is where the server listens when Config.Addr is empty: the
// RADIUS accounting port on all interfaces.
const DefaultAddr = ":1813"

// Client is a NAS (a PGW or GGSN) allowed to send accounting requests,
// by address or network, with the shared secret it signs them with.
type Client struct {
	// Prefix is the client's address (a /32 or /128) or network.
	Prefix netip.Prefix
	// Secret is the RADIUS shared secret. Never logged.
	Secret []byte
}

// ParseClient returns the Client for an address ("10.0.0.7") or a network
// in CIDR form ("10.0.0.0/24") and its shared secret.
func ParseClient(addrOrCIDR, secret string) (Client, error) {
	if secret == "" {
		return Client{}, fmt.Errorf("radius: client %s: empty shared secret", addrOrCIDR)
	}
	p, err := netip.ParsePrefix(addrOrCIDR)
	if err != nil {
		a, aerr := netip.ParseAddr(addrOrCIDR)
		if aerr != nil {
			return Client{}, fmt.Errorf("radius: client %q is neither an address nor a CIDR network", addrOrCIDR)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return Client{Prefix: p.Masked(), Secret: []byte(secret)}, nil
}

// DefaultWorkers is Config.Workers when unset.
const DefaultWorkers = 64

// Config configures a Server. The zero value with at least one client
// works: the other fields have defaults.
type Config struct {
	// Addr is the UDP address ListenAndServe listens on (DefaultAddr when
	// empty).
	Addr string
	// Clients are the NASes allowed to send; requests from other
	// addresses are dropped and counted. The most specific prefix that
	// contains the source address gives the secret.
	Clients []Client
	// Workers is how many requests are processed at once (default
	// DefaultWorkers). Each request waits for synced commits, and
	// concurrent requests share the store's fsyncs, so it pays to have as
	// many as the NASes keep outstanding. Each worker reads from the
	// socket itself.
	Workers int
	// Timeout bounds the store and engine calls of one request (default
	// 5s, under a NAS's usual retransmission interval).
	Timeout time.Duration
	// DedupEntries bounds the cache of recent requests that catches
	// retransmissions (default 8192).
	DedupEntries int
	// DedupTTL is how long a request is remembered (default 60s, longer
	// than a NAS's retries).
	DedupTTL time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Validate reports a configuration the server cannot run with.
func (c *Config) Validate() error {
	if len(c.Clients) == 0 {
		return errors.New("radius: no clients configured")
	}
	for _, cl := range c.Clients {
		if !cl.Prefix.IsValid() {
			return errors.New("radius: client with no address")
		}
		if len(cl.Secret) == 0 {
			return fmt.Errorf("radius: client %s: empty shared secret", cl.Prefix)
		}
	}
	if c.Workers < 0 || c.DedupEntries < 0 || c.Timeout < 0 || c.DedupTTL < 0 {
		return errors.New("radius: negative workers, timeout or dedup setting")
	}
	if c.Timeout > 0 && c.DedupTTL > 0 && c.DedupTTL <= c.Timeout {
		return fmt.Errorf("radius: dedup ttl %s must be longer than the request timeout %s", c.DedupTTL, c.Timeout)
	}
	return nil
}

// Stats is a snapshot of the server's counters.
type Stats struct {
	// Received counts datagrams read.
	Received uint64
	// Answered counts Accounting-Responses sent, answers to
	// retransmissions included.
	Answered uint64
	// UnknownClient counts datagrams from addresses with no secret.
	UnknownClient uint64
	// BadAuthenticator counts requests whose Request Authenticator does
	// not match the client's secret.
	BadAuthenticator uint64
	// Malformed counts datagrams that are not a well-formed
	// Accounting-Request, or lack or garble an attribute the record
	// needs (see Decode).
	Malformed uint64
	// SkippedAttributes counts optional attributes left out of records
	// because they were malformed (see Record.Skipped).
	SkippedAttributes uint64
	// Duplicates counts retransmissions of a request already processed
	// or in progress.
	Duplicates uint64
	// UnknownCard counts records naming no card in the inventory (or no
	// IMSI and MSISDN at all).
	UnknownCard uint64
	// Observations counts observations applied through the engine.
	Observations uint64
	// AddressUpdates counts cards whose IP addresses changed.
	AddressUpdates uint64
	// Ignored counts valid requests answered without action
	// (Accounting-On, Accounting-Off and other status types).
	Ignored uint64
	// Failed counts requests left unanswered after a transient failure
	// (store or engine); the NAS retransmits them.
	Failed uint64
}

type counters struct {
	received, answered, unknownClient, badAuth, malformed, skipped atomic.Uint64
	duplicates, unknownCard, observations, addrUpdates, ignored    atomic.Uint64
	failed                                                         atomic.Uint64
}

// Server receives RADIUS accounting over UDP and applies each record: the
// card's current addresses, and the equipment it was seen in. Create it
// with New.
type Server struct {
	cfg     Config
	clients []Client // most specific first
	cards   Cards
	obs     Observer
	log     *slog.Logger
	now     func() time.Time
	dedup   *dedup
	stats   counters
	warned  [2]atomic.Int64 // unix second of the last unknown-client / bad-authenticator warning
}

// New returns a Server that finds and updates cards through cards and
// applies observations through obs (an *ingest.Ingest in production).
func New(cfg Config, cards Cards, obs Observer, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cards == nil || obs == nil || log == nil {
		return nil, errors.New("radius: New needs cards, an observer and a logger")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Workers == 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.DedupEntries == 0 {
		cfg.DedupEntries = 8192
	}
	if cfg.DedupTTL == 0 {
		cfg.DedupTTL = max(60*time.Second, 2*cfg.Timeout)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	clients := slices.Clone(cfg.Clients)
	for i := range clients {
		clients[i].Prefix = clients[i].Prefix.Masked()
		if a := clients[i].Prefix.Addr(); a.Is4In6() {
			clients[i].Prefix = netip.PrefixFrom(a.Unmap(), max(clients[i].Prefix.Bits()-96, 0))
		}
	}
	slices.SortStableFunc(clients, func(a, b Client) int { return b.Prefix.Bits() - a.Prefix.Bits() })
	return &Server{
		cfg: cfg, clients: clients, cards: cards, obs: obs, log: log, now: cfg.Now,
		dedup: newDedup(cfg.DedupEntries, cfg.DedupTTL),
	}, nil
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Received: c.received.Load(), Answered: c.answered.Load(), UnknownClient: c.unknownClient.Load(),
		BadAuthenticator: c.badAuth.Load(), Malformed: c.malformed.Load(), SkippedAttributes: c.skipped.Load(),
		Duplicates: c.duplicates.Load(), UnknownCard: c.unknownCard.Load(), Observations: c.observations.Load(),
		AddressUpdates: c.addrUpdates.Load(), Ignored: c.ignored.Load(), Failed: c.failed.Load(),
	}
}

// ListenAndServe listens on Config.Addr and serves until ctx is done.
func (s *Server) ListenAndServe(ctx context.Context) error {
	addr, err := net.ResolveUDPAddr("udp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("radius: listen address %q: %w", s.cfg.Addr, err)
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		return fmt.Errorf("radius: listen: %w", err)
	}
	return s.Serve(ctx, conn)
}

// Serve reads accounting requests from conn until ctx is done, then
// closes conn, waits for the requests in progress and returns nil. It
// returns an error when reading fails otherwise.
func (s *Server) Serve(ctx context.Context, conn *net.UDPConn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, s.cfg.Workers)
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		conn.Close()
	}()
	for range s.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.readLoop(ctx, conn); err != nil {
				errs <- err
				cancel()
			}
		}()
	}
	s.log.Info("radius accounting listening", "addr", conn.LocalAddr().String(), "clients", len(s.clients), "workers", s.cfg.Workers)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

func (s *Server) readLoop(ctx context.Context, conn *net.UDPConn) error {
	buf := make([]byte, lr.MaxPacketLength)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("radius: read: %w", err)
			}
			s.log.Warn("radius read failed", "err", err)
			continue
		}
		if resp := s.handle(ctx, buf[:n], from); resp != nil {
			// Counted before the write, so that the count is there when
			// the NAS has the answer.
			s.stats.answered.Add(1)
			if _, err := conn.WriteToUDPAddrPort(resp, from); err != nil {
				s.stats.answered.Add(^uint64(0))
				s.log.Warn("radius answer not sent", "to", from.String(), "err", err)
			}
		}
	}
}

// handle checks and processes one datagram and returns the answer to send,
// or nil to send none.
func (s *Server) handle(ctx context.Context, b []byte, from netip.AddrPort) []byte {
	s.stats.received.Add(1)
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	secret := s.secret(from.Addr())
	if secret == nil {
		s.stats.unknownClient.Add(1)
		s.warnOnce(0, "radius request from an unknown client dropped", "from", from.String())
		return nil
	}
	if len(b) < 20 || lr.Code(b[0]) != lr.CodeAccountingRequest {
		s.stats.malformed.Add(1)
		s.log.Debug("radius datagram is not an Accounting-Request", "from", from.String(), "len", len(b))
		return nil
	}
	if l := int(binary.BigEndian.Uint16(b[2:4])); l >= 20 && l <= len(b) {
		b = b[:l] // octets past the length are padding (RFC 2865 section 3)
	}
	if !lr.IsAuthenticRequest(b, secret) {
		s.stats.badAuth.Add(1)
		s.warnOnce(1, "radius request with a bad authenticator dropped (wrong shared secret?)", "from", from.String())
		return nil
	}
	key := requestKey{from: from.Addr(), id: b[1], auth: [16]byte(b[4:20])}
	state, resp := s.dedup.begin(key, s.now())
	switch state {
	case dedupDone:
		s.stats.duplicates.Add(1)
		return resp
	case dedupInFlight:
		s.stats.duplicates.Add(1)
		return nil
	}
	rec, err := Decode(b)
	if err != nil {
		// The NAS sent it and signed it, but resending cannot fix it:
		// answer so that it stops, and count it.
		s.stats.malformed.Add(1)
		s.log.Warn("radius accounting request malformed; answered, not acted on", "from", from.String(), "err", err)
	} else {
		s.stats.skipped.Add(uint64(len(rec.Skipped)))
		for _, sk := range rec.Skipped {
			s.log.Info("radius attribute skipped", "from", from.String(), "session", rec.SessionID, "err", &sk)
		}
		actx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		err = s.apply(actx, rec, from)
		if err == nil {
			// The answer tells the NAS the record is safe: make what
			// apply wrote durable first. Concurrent workers share the
			// disk's syncs.
			err = s.cards.Sync(actx)
		}
		cancel()
		if err != nil {
			s.dedup.abort(key)
			s.stats.failed.Add(1)
			s.log.Warn("radius accounting request not answered; the NAS will retransmit", "from", from.String(),
				"session", rec.SessionID, "err", err)
			return nil
		}
	}
	resp, err = response(b, secret)
	if err != nil {
		s.dedup.abort(key)
		s.log.Error("radius answer not encoded", "err", err)
		return nil
	}
	s.dedup.finish(key, resp)
	return resp
}

// response encodes the Accounting-Response to request b: code, the same
// identifier, no attributes, and the Response Authenticator.
func response(req, secret []byte) ([]byte, error) {
	p := &lr.Packet{Code: lr.CodeAccountingResponse, Identifier: req[1], Secret: secret}
	copy(p.Authenticator[:], req[4:20])
	return p.Encode()
}

// secret returns the shared secret of the client at addr, or nil.
func (s *Server) secret(addr netip.Addr) []byte {
	for _, c := range s.clients {
		if c.Prefix.Contains(addr) {
			return c.Secret
		}
	}
	return nil
}

// warnOnce logs a warning at most once a minute per kind, so that a
// misconfigured or hostile sender cannot flood the log; the counters
// count every drop.
func (s *Server) warnOnce(kind int, msg string, args ...any) {
	now := s.now().Unix()
	last := s.warned[kind].Load()
	if now-last < 60 || !s.warned[kind].CompareAndSwap(last, now) {
		s.log.Debug(msg, args...)
		return
	}
	s.log.Warn(msg, args...)
}

package network

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	lr "layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
	"layeh.com/radius/rfc2869"
)

// AccountingConfig configures the RADIUS accounting the simulated network
// sends, as a PGW does (RFC 2866, with the 3GPP attributes of TS 29.061
// section 16.4.7).
type AccountingConfig struct {
	// Addr is the accounting server's UDP address, e.g. "127.0.0.1:1813".
	Addr string
	// Secret is the shared secret.
	Secret []byte
	// NASIdentifier is sent as NAS-Identifier; default "firmware-sim".
	NASIdentifier string
	// Interim is the Interim-Update period; 0 sends none.
	Interim time.Duration
	// Retry is the retransmission interval; default 1s.
	Retry time.Duration
	// GiveUp is how long one request is retransmitted before it is
	// dropped (logged and counted); default 30s.
	GiveUp time.Duration
	// Logger logs requests that got no answer; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// AccountingStats counts the accounting requests sent.
type AccountingStats struct {
	// Requests counts requests sent, first transmissions only.
	Requests atomic.Uint64
	// Retransmits counts repeated transmissions.
	Retransmits atomic.Uint64
	// Answered counts requests answered by an authentic
	// Accounting-Response.
	Answered atomic.Uint64
	// Dropped counts requests given up after GiveUp without an answer.
	Dropped atomic.Uint64
}

// Accounting sends RADIUS Accounting-Requests for the network's data
// sessions: Start when a card attaches (with the address the network
// assigned it), Interim-Update every Interim while it stays attached and
// at once when its device moves to another cell (with the new
// 3GPP-User-Location-Info, as a PGW does on a ULI change), and Stop when
// it detaches, is blocked or attaches elsewhere. Each card has
// its own queue and goroutine, as a PGW handles one subscriber's sessions
// in order: the Stop of a card's session in one device is answered before
// the Start of its session in the next one goes out, and a slow server
// delays no other card. Each request is retransmitted, unchanged, until an
// authentic Accounting-Response arrives or GiveUp passes. It implements
// SessionObserver; give it to Options.Sessions.
type Accounting struct {
	cfg   AccountingConfig
	log   *slog.Logger
	ctx   context.Context
	stats AccountingStats

	mu    sync.Mutex
	cards map[string]*cardQueue
	wg    sync.WaitGroup
}

// cardQueue holds one card's accounting events not yet sent.
type cardQueue struct {
	mu      sync.Mutex
	events  []acctEvent
	sending bool          // a request is in flight
	wake    chan struct{} // capacity 1: events were added
}

type acctEvent struct {
	s    Session
	kind acctKind
}

// acctKind is what happened to a session.
type acctKind int

const (
	acctStart  acctKind = iota
	acctStop            // the session ended
	acctUpdate          // the session's serving cell changed
)

var _ SessionUpdater = (*Accounting)(nil)

// NewAccounting returns accounting that runs until ctx ends; Wait waits
// for its goroutines then.
func NewAccounting(ctx context.Context, cfg AccountingConfig) (*Accounting, error) {
	if cfg.Addr == "" {
		return nil, errors.New("network: accounting: no server address")
	}
	if len(cfg.Secret) == 0 {
		return nil, errors.New("network: accounting: empty shared secret")
	}
	if cfg.NASIdentifier == "" {
		cfg.NASIdentifier = "firmware-sim"
	}
	if cfg.Retry <= 0 {
		cfg.Retry = time.Second
	}
	if cfg.GiveUp <= 0 {
		cfg.GiveUp = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Accounting{cfg: cfg, log: log, ctx: ctx, cards: map[string]*cardQueue{}}, nil
}

// Stats returns the live counters.
func (a *Accounting) Stats() *AccountingStats { return &a.stats }

// Wait waits for the card goroutines, which end when the context given to
// NewAccounting ends.
func (a *Accounting) Wait() { a.wg.Wait() }

// SessionStarted queues the session's Start; Interim-Updates follow.
func (a *Accounting) SessionStarted(s Session) { a.enqueue(acctEvent{s: s, kind: acctStart}) }

// SessionStopped queues the session's Stop, after the card's earlier
// requests.
func (a *Accounting) SessionStopped(s Session) { a.enqueue(acctEvent{s: s, kind: acctStop}) }

// SessionUpdated queues an Interim-Update with the session's new location,
// after the card's earlier requests; the periodic Interim-Updates carry it
// from then on.
func (a *Accounting) SessionUpdated(s Session) { a.enqueue(acctEvent{s: s, kind: acctUpdate}) }

func (a *Accounting) enqueue(e acctEvent) {
	a.mu.Lock()
	q, ok := a.cards[e.s.ICCID]
	if !ok {
		q = &cardQueue{wake: make(chan struct{}, 1)}
		a.cards[e.s.ICCID] = q
		a.wg.Go(func() { a.run(q) })
	}
	a.mu.Unlock()
	q.mu.Lock()
	q.events = append(q.events, e)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Flush waits until the requests queued for the card so far were answered
// or given up, or ctx ends.
func (a *Accounting) Flush(ctx context.Context, iccid string) error {
	a.mu.Lock()
	q := a.cards[iccid]
	a.mu.Unlock()
	if q == nil {
		return nil
	}
	for {
		q.mu.Lock()
		idle := len(q.events) == 0 && !q.sending
		q.mu.Unlock()
		if idle {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// run sends one card's requests in order until the context ends.
func (a *Accounting) run(q *cardQueue) {
	ctx := a.ctx
	var open *Session // the session Interim-Updates are for
	var tick <-chan time.Time
	var ticker *time.Ticker
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	for {
		q.mu.Lock()
		var e *acctEvent
		if len(q.events) > 0 {
			e = &q.events[0]
			q.events = q.events[1:]
		}
		q.sending = e != nil
		q.mu.Unlock()
		if e != nil {
			switch e.kind {
			case acctStart:
				a.send(ctx, &e.s, rfc2866.AcctStatusType_Value_Start)
				s := e.s
				open = &s
				if a.cfg.Interim > 0 {
					if ticker != nil {
						ticker.Stop()
					}
					ticker = time.NewTicker(a.cfg.Interim)
					tick = ticker.C
				}
			case acctUpdate:
				if open != nil && open.ID == e.s.ID {
					s := e.s
					open = &s
					a.send(ctx, open, rfc2866.AcctStatusType_Value_InterimUpdate)
				}
			default:
				a.send(ctx, &e.s, rfc2866.AcctStatusType_Value_Stop)
				if open != nil && open.ID == e.s.ID {
					open, tick = nil, nil
				}
			}
			q.mu.Lock()
			q.sending = false
			q.mu.Unlock()
			if ctx.Err() != nil {
				return
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		case <-tick:
			if open != nil {
				a.send(ctx, open, rfc2866.AcctStatusType_Value_InterimUpdate)
			}
		}
	}
}

// send sends one request and retransmits it until it is answered, GiveUp
// passes or ctx ends.
func (a *Accounting) send(ctx context.Context, s *Session, status rfc2866.AcctStatusType) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.GiveUp)
	defer cancel()
	var id [1]byte
	_, _ = rand.Read(id[:])
	req, err := encodeAccounting(s, status, id[0], a.cfg.NASIdentifier, a.cfg.Secret, a.cfg.Now())
	if err != nil {
		a.stats.Dropped.Add(1)
		a.log.Error("radius accounting: encode", "session", s.ID, "status", status.String(), "err", err)
		return
	}
	a.stats.Requests.Add(1)
	err = exchange(ctx, a.cfg.Addr, req, a.cfg.Secret, a.cfg.Retry, &a.stats.Retransmits)
	if err != nil {
		a.stats.Dropped.Add(1)
		if a.ctx.Err() == nil {
			a.log.Warn("radius accounting: no answer; request dropped", "server", a.cfg.Addr,
				"session", s.ID, "iccid", s.ICCID, "status", status.String(), "err", err)
		}
		return
	}
	a.stats.Answered.Add(1)
	a.log.Debug("radius accounting answered", "session", s.ID, "iccid", s.ICCID, "status", status.String())
}

// exchange writes req to addr and rewrites it every retry until an
// authentic Accounting-Response to it arrives or ctx ends.
func exchange(ctx context.Context, addr string, req, secret []byte, retry time.Duration, retransmits *atomic.Uint64) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, lr.MaxPacketLength)
	for first := true; ; first = false {
		if !first {
			retransmits.Add(1)
		}
		// A write error (ICMP port unreachable from an earlier datagram)
		// is like a lost datagram: try again after the interval.
		_, _ = conn.Write(req)
		if err := conn.SetReadDeadline(time.Now().Add(retry)); err != nil {
			return fmt.Errorf("set deadline: %w", err)
		}
		for {
			n, err := conn.Read(buf)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					// Connection refused: wait out the interval.
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(retry):
					}
				}
				break
			}
			resp := buf[:n]
			if n >= 20 && lr.Code(resp[0]) == lr.CodeAccountingResponse && resp[1] == req[1] &&
				lr.IsAuthenticResponse(resp, req, secret) {
				return nil
			}
		}
	}
}

// 3GPP vendor attributes (TS 29.061 section 16.4.7).
const (
	vendor3GPP       = 10415
	vsaIMSI          = 1
	vsaSGSNMCCMNC    = 18
	vsaIMEISV        = 20
	vsaRATType       = 21
	vsaUserLocation  = 22
	ratEUTRAN        = 6
	locationTAIECGI  = 130 // TAI and ECGI (TS 29.061 table 16.4.7.2.1)
	terminateUser    = rfc2866.AcctTerminateCause_Value_UserRequest
	terminateAdmin   = rfc2866.AcctTerminateCause_Value_AdminReset
	terminateLostSvc = rfc2866.AcctTerminateCause_Value_LostService
)

// encodeAccounting builds the Accounting-Request for one session event.
func encodeAccounting(s *Session, status rfc2866.AcctStatusType, id byte, nas string, secret []byte, now time.Time) ([]byte, error) {
	p := &lr.Packet{Code: lr.CodeAccountingRequest, Identifier: id, Secret: secret}
	if err := rfc2866.AcctStatusType_Add(p, status); err != nil {
		return nil, err
	}
	if err := rfc2866.AcctSessionID_SetString(p, s.ID); err != nil {
		return nil, fmt.Errorf("Acct-Session-Id: %w", err)
	}
	if err := rfc2865.NASIdentifier_SetString(p, nas); err != nil {
		return nil, fmt.Errorf("NAS-Identifier: %w", err)
	}
	if s.MSISDN != "" {
		msisdn := s.MSISDN
		if msisdn[0] == '+' {
			msisdn = msisdn[1:]
		}
		if err := rfc2865.CallingStationID_SetString(p, msisdn); err != nil {
			return nil, fmt.Errorf("Calling-Station-Id: %w", err)
		}
	}
	if ip, err := netip.ParseAddr(s.IP); err == nil && ip.Is4() {
		a := ip.As4()
		p.Add(rfc2865.FramedIPAddress_Type, lr.Attribute(a[:]))
	}
	if err := rfc2869.EventTimestamp_Set(p, now); err != nil {
		return nil, fmt.Errorf("Event-Timestamp: %w", err)
	}
	if status != rfc2866.AcctStatusType_Value_Start {
		end := now
		if !s.Ended.IsZero() {
			end = s.Ended
		}
		secs := max(end.Sub(s.Started), 0) / time.Second
		if err := rfc2866.AcctSessionTime_Set(p, rfc2866.AcctSessionTime(secs)); err != nil {
			return nil, err
		}
	}
	if status == rfc2866.AcctStatusType_Value_Stop {
		cause := terminateUser
		switch s.EndCause {
		case EndBlocked, EndRefused:
			cause = terminateAdmin
		case EndMoved:
			cause = terminateLostSvc
		}
		if err := rfc2866.AcctTerminateCause_Set(p, cause); err != nil {
			return nil, err
		}
	}

	addVSA(p, vsaIMSI, []byte(s.IMSI))
	addVSA(p, vsaIMEISV, []byte(imeisv(s.IMEI)))
	addVSA(p, vsaRATType, []byte{ratEUTRAN})
	if plmn := servingPLMN(s); plmn != "" {
		addVSA(p, vsaSGSNMCCMNC, []byte(plmn))
	}
	if s.Cell != nil {
		uli, err := encodeULI(s.Cell)
		if err != nil {
			return nil, err
		}
		addVSA(p, vsaUserLocation, uli)
	}
	b, err := p.Encode()
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return b, nil
}

// addVSA adds one 3GPP sub-attribute in its own Vendor-Specific
// attribute, as PGWs usually send them.
func addVSA(p *lr.Packet, typ byte, v []byte) {
	a := binary.BigEndian.AppendUint32(make([]byte, 0, 6+len(v)), vendor3GPP)
	a = append(a, typ, byte(2+len(v)))
	p.Add(rfc2865.VendorSpecific_Type, append(a, v...))
}

// servingPLMN is the MCC and MNC digits of the network serving the
// session: the cell's, or without a cell the home network of the IMSI
// (taking a 2-digit MNC).
func servingPLMN(s *Session) string {
	if s.Cell != nil {
		return s.Cell.MCC + s.Cell.MNC
	}
	if len(s.IMSI) >= 5 {
		return s.IMSI[:5]
	}
	return ""
}

// encodeULI encodes 3GPP-User-Location-Info with geographic location type
// TAI and ECGI: the type octet, then TAI (PLMN, TAC) and ECGI (PLMN,
// 4 spare bits and the 28-bit ECI) as in TS 29.274 section 8.21.
func encodeULI(c *Cell) ([]byte, error) {
	plmn, err := encodePLMN(c.MCC, c.MNC)
	if err != nil {
		return nil, err
	}
	b := []byte{locationTAIECGI}
	b = append(b, plmn[:]...)
	b = binary.BigEndian.AppendUint16(b, c.TAC)
	b = append(b, plmn[:]...)
	b = binary.BigEndian.AppendUint32(b, c.ECI&0x0fffffff)
	return b, nil
}

// encodePLMN packs MCC and MNC digits as 3GPP TS 24.008 does: MCC2 MCC1,
// MNC3 MCC3 (MNC3 is F for a 2-digit MNC), MNC2 MNC1.
func encodePLMN(mcc, mnc string) ([3]byte, error) {
	if !validDigits(mcc, 3, 3) || !validDigits(mnc, 2, 3) {
		return [3]byte{}, fmt.Errorf("%w: PLMN %s-%s", ErrInvalid, mcc, mnc)
	}
	d := func(s string, i int) byte { return s[i] - '0' }
	mnc3 := byte(0xf)
	if len(mnc) == 3 {
		mnc3 = d(mnc, 2)
	}
	return [3]byte{
		d(mcc, 1)<<4 | d(mcc, 0),
		mnc3<<4 | d(mcc, 2),
		d(mnc, 1)<<4 | d(mnc, 0),
	}, nil
}

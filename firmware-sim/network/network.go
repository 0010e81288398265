// Package network is a simulated operator network for cardbind tests and
// demos. It is a test double of an operator, not an operator: it keeps, in
// memory, per SIM card (ICCID, IMSI, MSISDN, assigned IPv4) whether the card
// is attached, in which IMEI, and whether it is blocked.
//
// Two sides use it. Enforcement adapters block and resume cards, read them
// and list the blocked ones. Simulated modems attach and detach, and watch
// their card to learn within milliseconds that it was blocked or resumed.
// Network is the in-memory implementation, Handler serves it over HTTP JSON
// and Client calls that HTTP API. Network and Client have the same methods,
// so in-process tests can skip HTTP.
package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// Errors of the network.
var (
	// ErrNotFound means no card has that ICCID.
	ErrNotFound = errors.New("network: card not found")
	// ErrConflict means a card exists with different identifiers.
	ErrConflict = errors.New("network: card exists with different identifiers")
	// ErrInvalid means a request is malformed.
	ErrInvalid = errors.New("network: invalid request")
)

// Attach results.
const (
	// ResultRegistered means the network accepted the card.
	ResultRegistered = "registered"
	// ResultDenied means the network refused the card (registration denied).
	ResultDenied = "denied"
)

// Card is the network's view of one SIM card.
type Card struct {
	ICCID  string `json:"iccid"`
	IMSI   string `json:"imsi"`
	MSISDN string `json:"msisdn,omitempty"`
	// IP is the IPv4 address assigned to the card's data sessions.
	IP string `json:"ip"`
	// Attached is true while a device is registered with the card.
	Attached bool `json:"attached"`
	// IMEI is the equipment of the current attachment, or of the last
	// attempt when not attached.
	IMEI string `json:"imei,omitempty"`
	// Blocked cards are denied registration and data.
	Blocked     bool   `json:"blocked"`
	BlockReason string `json:"blockReason,omitempty"`
	// Version goes up by one on every change of the card; Watch uses it.
	Version   uint64    `json:"version"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// CardSpec registers a card.
type CardSpec struct {
	ICCID  string `json:"iccid"`
	IMSI   string `json:"imsi"`
	MSISDN string `json:"msisdn,omitempty"`
}

// Filter selects cards in Cards. Empty fields match everything.
type Filter struct {
	IMSI    string
	MSISDN  string
	Blocked *bool
}

// AttachRequest is what a device sends to register a card.
type AttachRequest struct {
	ICCID  string `json:"iccid"`
	IMSI   string `json:"imsi"`
	MSISDN string `json:"msisdn,omitempty"`
	IMEI   string `json:"imei"`
	// Cell is the serving cell, when the device's modem reports one; it
	// goes into the accounting's 3GPP-User-Location-Info.
	Cell *Cell `json:"cell,omitempty"`
}

// AttachResult is the network's answer to an attach.
type AttachResult struct {
	// Result is ResultRegistered or ResultDenied.
	Result string `json:"result"`
	// Cause explains a denial.
	Cause string `json:"cause,omitempty"`
	// IP is the data address when registered.
	IP   string `json:"ip,omitempty"`
	Card Card   `json:"card"`
	// EquipmentStatus is the equipment identity register's answer, when
	// the network asked one.
	EquipmentStatus string `json:"equipmentStatus,omitempty"`
}

// Options configure a Network.
type Options struct {
	// Strict makes attach of an unknown card fail (denied). By default the
	// network provisions an unknown card on its first attach.
	Strict bool
	// Pool is the IPv4 prefix addresses are assigned from; the zero value
	// means 10.64.0.0/10.
	Pool netip.Prefix
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Sessions, if set, is told when data sessions start and stop (the
	// RADIUS accounting of a PGW: see Accounting).
	Sessions SessionObserver
	// EIR, if set, is asked on every attach whether the equipment may use
	// the network with the card; BLACKLISTED refuses the attach.
	EIR EquipmentChecker
	// Logger logs EIR failures; nil discards.
	Logger *slog.Logger
	// Cell, if set, is the serving cell of attaches that name none
	// (devices without a simulated modem; the modems name theirs), for the
	// accounting's location.
	Cell *Cell
}

// Network is the in-memory simulated operator network. It is safe for
// concurrent use.
type Network struct {
	strict   bool
	now      func() time.Time
	pool     netip.Prefix
	sessions SessionObserver
	eir      EquipmentChecker
	log      *slog.Logger
	cell     *Cell

	mu         sync.Mutex
	cards      map[string]*entry
	nextIP     netip.Addr
	sessionSeq uint64
}

type entry struct {
	card    Card
	changed chan struct{} // closed and replaced on every change
	session *Session      // the data session while attached
}

// New returns an empty network.
func New(opts Options) *Network {
	n := &Network{strict: opts.Strict, now: opts.Now, pool: opts.Pool, cards: map[string]*entry{},
		sessions: opts.Sessions, eir: opts.EIR, log: opts.Logger, cell: opts.Cell}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.now == nil {
		n.now = time.Now
	}
	if !n.pool.IsValid() || !n.pool.Addr().Is4() {
		n.pool = netip.MustParsePrefix("10.64.0.0/10")
	}
	n.pool = n.pool.Masked()
	n.nextIP = n.pool.Addr().Next()
	return n
}

func normalise(s string) string { return strings.ToUpper(strings.TrimSpace(s)) }

func validICCID(s string) bool {
	if len(s) < 18 || len(s) > 20 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9') && !(c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func validDigits(s string, lo, hi int) bool {
	if len(s) < lo || len(s) > hi {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (s CardSpec) validate() error {
	if !validICCID(s.ICCID) {
		return fmt.Errorf("%w: ICCID %q", ErrInvalid, s.ICCID)
	}
	if !validDigits(s.IMSI, 6, 15) {
		return fmt.Errorf("%w: IMSI %q", ErrInvalid, s.IMSI)
	}
	if s.MSISDN != "" && !validDigits(strings.TrimPrefix(s.MSISDN, "+"), 3, 15) {
		return fmt.Errorf("%w: MSISDN %q", ErrInvalid, s.MSISDN)
	}
	return nil
}

// touch records a change of e; n.mu must be held.
func (n *Network) touch(e *entry) {
	e.card.Version++
	e.card.UpdatedAt = n.now().UTC()
	close(e.changed)
	e.changed = make(chan struct{})
}

// allocIP returns the next free address of the pool; n.mu must be held.
func (n *Network) allocIP() (string, error) {
	a := n.nextIP
	if !n.pool.Contains(a) || !n.pool.Contains(a.Next()) {
		return "", fmt.Errorf("network: address pool %s exhausted", n.pool)
	}
	n.nextIP = a.Next()
	return a.String(), nil
}

// register adds a card; n.mu must be held.
func (n *Network) register(spec CardSpec) (*entry, bool, error) {
	if e, ok := n.cards[spec.ICCID]; ok {
		c := e.card
		if c.IMSI != spec.IMSI || (spec.MSISDN != "" && c.MSISDN != spec.MSISDN) {
			return e, false, fmt.Errorf("%w: %s", ErrConflict, spec.ICCID)
		}
		return e, false, nil
	}
	ip, err := n.allocIP()
	if err != nil {
		return nil, false, err
	}
	e := &entry{
		card: Card{
			ICCID: spec.ICCID, IMSI: spec.IMSI, MSISDN: spec.MSISDN, IP: ip,
			Version: 1, UpdatedAt: n.now().UTC(),
		},
		changed: make(chan struct{}),
	}
	n.cards[spec.ICCID] = e
	return e, true, nil
}

// Register adds a card to the network. Registering the same card again is a
// no-op (created is false); different identifiers for a known ICCID give
// ErrConflict.
func (n *Network) Register(_ context.Context, spec CardSpec) (card Card, created bool, err error) {
	spec.ICCID, spec.IMSI, spec.MSISDN = normalise(spec.ICCID), normalise(spec.IMSI), strings.TrimSpace(spec.MSISDN)
	if err := spec.validate(); err != nil {
		return Card{}, false, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	e, created, err := n.register(spec)
	if e == nil {
		return Card{}, false, err
	}
	return e.card, created, err
}

// Card returns one card.
func (n *Network) Card(_ context.Context, iccid string) (Card, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.cards[normalise(iccid)]
	if !ok {
		return Card{}, fmt.Errorf("%w: %s", ErrNotFound, iccid)
	}
	return e.card, nil
}

// Cards lists the cards that match f, ordered by ICCID.
func (n *Network) Cards(_ context.Context, f Filter) ([]Card, error) {
	n.mu.Lock()
	out := make([]Card, 0, len(n.cards))
	for _, e := range n.cards {
		c := e.card
		if (f.IMSI != "" && c.IMSI != f.IMSI) || (f.MSISDN != "" && c.MSISDN != f.MSISDN) ||
			(f.Blocked != nil && c.Blocked != *f.Blocked) {
			continue
		}
		out = append(out, c)
	}
	n.mu.Unlock()
	slices.SortFunc(out, func(a, b Card) int { return strings.Compare(a.ICCID, b.ICCID) })
	return out, nil
}

// Block bars a card from the network: it is detached at once and further
// attaches are denied. Blocking a blocked card changes nothing.
func (n *Network) Block(_ context.Context, iccid, reason string) (Card, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.cards[normalise(iccid)]
	if !ok {
		return Card{}, fmt.Errorf("%w: %s", ErrNotFound, iccid)
	}
	if e.card.Blocked {
		return e.card, nil
	}
	e.card.Blocked = true
	e.card.BlockReason = reason
	e.card.Attached = false
	n.endSession(e, EndBlocked)
	n.touch(e)
	return e.card, nil
}

// Resume lifts a block; the card's device may attach again. Resuming a card
// that is not blocked changes nothing.
func (n *Network) Resume(_ context.Context, iccid string) (Card, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.cards[normalise(iccid)]
	if !ok {
		return Card{}, fmt.Errorf("%w: %s", ErrNotFound, iccid)
	}
	if !e.card.Blocked {
		return e.card, nil
	}
	e.card.Blocked = false
	e.card.BlockReason = ""
	n.touch(e)
	return e.card, nil
}

// Attach registers a card in a device. Unknown cards are provisioned on
// the fly unless the network is strict. Blocked cards, unknown cards of a
// strict network and cards whose IMSI does not match are denied. With an
// EIR, the equipment is checked first, as an MME does before it asks the
// HSS: equipment the EIR blacklists is denied whatever the card's state.
// An attach that opens a data session (a new attachment, or the card in
// another device) tells the SessionObserver.
func (n *Network) Attach(ctx context.Context, req AttachRequest) (AttachResult, error) {
	spec := CardSpec{ICCID: normalise(req.ICCID), IMSI: normalise(req.IMSI), MSISDN: strings.TrimSpace(req.MSISDN)}
	if err := spec.validate(); err != nil {
		return AttachResult{}, err
	}
	if !validDigits(req.IMEI, 14, 16) {
		return AttachResult{}, fmt.Errorf("%w: IMEI %q", ErrInvalid, req.IMEI)
	}
	if err := req.Cell.Validate(); err != nil {
		return AttachResult{}, err
	}
	var status string
	if n.eir != nil {
		n.leaveOldDevice(ctx, spec.ICCID, req.IMEI)
		status = n.checkEquipment(ctx, spec, req.IMEI)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if status == EquipmentBlacklisted {
		return n.refuseEquipment(spec, req.IMEI), nil
	}
	res, err := n.attach(spec, req)
	res.EquipmentStatus = status
	return res, err
}

// attach registers the card in req.IMEI; n.mu must be held.
func (n *Network) attach(spec CardSpec, req AttachRequest) (AttachResult, error) {
	e, ok := n.cards[spec.ICCID]
	if !ok {
		if n.strict {
			return AttachResult{Result: ResultDenied, Cause: "unknown card", Card: Card{ICCID: spec.ICCID}}, nil
		}
		var err error
		if e, _, err = n.register(spec); err != nil {
			return AttachResult{}, err
		}
	}
	if e.card.IMSI != spec.IMSI {
		return AttachResult{Result: ResultDenied, Cause: "IMSI does not match the card", Card: e.card}, nil
	}
	if e.card.Blocked {
		if e.card.IMEI != req.IMEI || e.card.Attached {
			e.card.IMEI = req.IMEI
			e.card.Attached = false
			n.endSession(e, EndMoved)
			n.touch(e)
		}
		return AttachResult{Result: ResultDenied, Cause: "card blocked", Card: e.card}, nil
	}
	if !e.card.Attached || e.card.IMEI != req.IMEI {
		n.endSession(e, EndMoved)
		e.card.Attached = true
		e.card.IMEI = req.IMEI
		cell := req.Cell
		if cell == nil {
			cell = n.cell
		}
		n.startSession(e, cell)
		n.touch(e)
	}
	return AttachResult{Result: ResultRegistered, IP: e.card.IP, Card: e.card}, nil
}

// sessionFlusher is a SessionObserver that can wait until what it was told
// about a card went out (*Accounting).
type sessionFlusher interface {
	Flush(ctx context.Context, iccid string) error
}

// leaveOldDevice ends the card's attachment in another device before the
// EIR is asked about the new one, as in a real network where the old
// device loses the card (and its data session, with its accounting Stop)
// before the new one attaches. It waits, up to 5 s, for that Stop to be
// answered, so that the verifier hears of the old device before the new.
func (n *Network) leaveOldDevice(ctx context.Context, iccid, imei string) {
	n.mu.Lock()
	e, ok := n.cards[iccid]
	moved := ok && e.card.Attached && e.card.IMEI != imei
	if moved {
		e.card.Attached = false
		n.endSession(e, EndMoved)
		n.touch(e)
	}
	n.mu.Unlock()
	if f, ok := n.sessions.(sessionFlusher); ok && moved {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := f.Flush(fctx, iccid); err != nil {
			n.log.Warn("accounting of the old device not flushed before the EIR check", "iccid", iccid, "err", err)
		}
	}
}

// checkEquipment asks the EIR about the equipment with the card's
// subscription. A failed check is logged and lets the attach go on.
func (n *Network) checkEquipment(ctx context.Context, spec CardSpec, imei string) string {
	q := EquipmentQuery{IMEI: imei, IMSI: spec.IMSI, MSISDN: spec.MSISDN}
	n.mu.Lock()
	if e, ok := n.cards[spec.ICCID]; ok && q.MSISDN == "" {
		q.MSISDN = e.card.MSISDN
	}
	n.mu.Unlock()
	status, err := n.eir.CheckEquipment(ctx, q)
	if err != nil {
		n.log.Warn("EIR check failed; attach goes on", "iccid", spec.ICCID, "imei", imei, "err", err)
		return ""
	}
	return status
}

// refuseEquipment denies an attach the EIR blacklisted. The card is no
// longer in the device it was attached in, if any; n.mu must be held.
func (n *Network) refuseEquipment(spec CardSpec, imei string) AttachResult {
	const cause = "illegal ME: equipment blacklisted by the EIR"
	e, ok := n.cards[spec.ICCID]
	if !ok {
		return AttachResult{Result: ResultDenied, Cause: cause, Card: Card{ICCID: spec.ICCID},
			EquipmentStatus: EquipmentBlacklisted}
	}
	if e.card.IMEI != imei || e.card.Attached {
		end := EndRefused
		if e.card.IMEI != imei {
			end = EndMoved
		}
		e.card.IMEI = imei
		e.card.Attached = false
		n.endSession(e, end)
		n.touch(e)
	}
	return AttachResult{Result: ResultDenied, Cause: cause, Card: e.card, EquipmentStatus: EquipmentBlacklisted}
}

// startSession opens a data session for the card as attached now; n.mu
// must be held.
func (n *Network) startSession(e *entry, cell *Cell) {
	now := n.now().UTC()
	n.sessionSeq++
	s := &Session{
		ID:    fmt.Sprintf("%08X%08X", uint32(now.Unix()), uint32(n.sessionSeq)),
		ICCID: e.card.ICCID, IMSI: e.card.IMSI, MSISDN: e.card.MSISDN, IMEI: e.card.IMEI, IP: e.card.IP,
		Started: now,
	}
	if cell != nil {
		c := *cell
		s.Cell = &c
	}
	e.session = s
	if n.sessions != nil {
		n.sessions.SessionStarted(*s)
	}
}

// endSession closes the card's data session, if it has one; n.mu must be
// held.
func (n *Network) endSession(e *entry, cause EndCause) {
	s := e.session
	if s == nil {
		return
	}
	e.session = nil
	s.Ended, s.EndCause = n.now().UTC(), cause
	if n.sessions != nil {
		n.sessions.SessionStopped(*s)
	}
}

// LocationUpdate is what a device sends when its modem moves to another
// cell while attached: a tracking area update.
type LocationUpdate struct {
	ICCID string `json:"iccid"`
	IMEI  string `json:"imei"`
	Cell  Cell   `json:"cell"`
}

// ErrNotAttached means a location update came for a card that is not
// attached in that IMEI.
var ErrNotAttached = errors.New("network: card not attached in that device")

// UpdateLocation records the new serving cell of a card attached in
// u.IMEI; the SessionObserver, when it is a SessionUpdater, is told (the
// accounting sends an Interim-Update with the new location). The same
// cell again changes nothing. A card attached elsewhere, or not at all,
// gives ErrNotAttached; an unknown one ErrNotFound.
func (n *Network) UpdateLocation(_ context.Context, u LocationUpdate) (Card, error) {
	if err := u.Cell.Validate(); err != nil {
		return Card{}, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.cards[normalise(u.ICCID)]
	if !ok {
		return Card{}, fmt.Errorf("%w: %s", ErrNotFound, u.ICCID)
	}
	if !e.card.Attached || e.card.IMEI != u.IMEI || e.session == nil {
		return e.card, fmt.Errorf("%w: %s in %s", ErrNotAttached, u.ICCID, u.IMEI)
	}
	if s := e.session; s.Cell == nil || *s.Cell != u.Cell {
		c := u.Cell
		s.Cell = &c
		if up, ok := n.sessions.(SessionUpdater); ok {
			up.SessionUpdated(*s)
		}
	}
	return e.card, nil
}

// AttachCard attaches a registered card in a device that is not a
// simulated modem: the card's own IMSI and MSISDN, the device's IMEI and
// cell. It is Attach otherwise; an unknown card is ErrNotFound.
func (n *Network) AttachCard(ctx context.Context, iccid string, d DeviceAttach) (AttachResult, error) {
	card, err := n.Card(ctx, iccid)
	if err != nil {
		return AttachResult{}, err
	}
	return n.Attach(ctx, AttachRequest{ICCID: card.ICCID, IMSI: card.IMSI, MSISDN: card.MSISDN, IMEI: d.IMEI, Cell: d.Cell})
}

// Detach ends the card's registration. With a non-empty imei it only
// detaches that device, so a late detach from an old device does not cut
// off a new one. Detaching a detached card changes nothing.
func (n *Network) Detach(_ context.Context, iccid, imei string) (Card, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.cards[normalise(iccid)]
	if !ok {
		return Card{}, fmt.Errorf("%w: %s", ErrNotFound, iccid)
	}
	if e.card.Attached && (imei == "" || imei == e.card.IMEI) {
		e.card.Attached = false
		n.endSession(e, EndDetach)
		n.touch(e)
	}
	return e.card, nil
}

// Watch waits until the card's Version is greater than after and returns
// the card. When ctx ends first it returns the card as it is, with
// ctx.Err().
func (n *Network) Watch(ctx context.Context, iccid string, after uint64) (Card, error) {
	for {
		n.mu.Lock()
		e, ok := n.cards[normalise(iccid)]
		if !ok {
			n.mu.Unlock()
			return Card{}, fmt.Errorf("%w: %s", ErrNotFound, iccid)
		}
		card, changed := e.card, e.changed
		n.mu.Unlock()
		if card.Version > after {
			return card, nil
		}
		select {
		case <-ctx.Done():
			return card, ctx.Err()
		case <-changed:
		}
	}
}

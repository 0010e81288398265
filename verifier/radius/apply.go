package radius

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/engine"
)

// Cards finds cards and stores their addresses. verifier.Store satisfies
// it.
type Cards interface {
	// FindCard returns the card an IMSI or MSISDN names, or an error
	// wrapping verifier.ErrNotFound.
	FindCard(ctx context.Context, by verifier.IndexKind, value string) (*verifier.Card, error)
	// Card returns the card with this ICCID.
	Card(ctx context.Context, iccid protocol.ICCID) (*verifier.Card, error)
	// CommitLazy writes the card, durable at the next Sync;
	// verifier.ErrConflict when it changed since it was read.
	CommitLazy(ctx context.Context, c *verifier.Commit) error
	// Sync makes every write made before it durable.
	Sync(ctx context.Context) error
}

// Observer applies an observation through the engine and commits its
// outcome: durably before it returns when anything is enforced or told,
// else at the next Cards.Sync. *ingest.Ingest satisfies it.
type Observer interface {
	ObserveLazy(ctx context.Context, obs verifier.Observation, tenant string) (engine.Outcome, error)
}

// maxAttempts bounds the retries of an address update that lost a race.
const maxAttempts = 8

// apply acts on one record: the observation of the equipment, then the
// card's addresses. It returns nil once both are written (durable at the
// next Sync), or when there is nothing to do; an error is transient and
// the request goes unanswered.
func (s *Server) apply(ctx context.Context, rec *Record, from netip.AddrPort) error {
	switch rec.Status {
	case Start, InterimUpdate, Stop:
	default:
		s.stats.ignored.Add(1)
		s.log.Debug("radius accounting status not acted on", "from", from.String(), "status", rec.Status.String())
		return nil
	}
	card, err := s.findCard(ctx, rec)
	if errors.Is(err, verifier.ErrNotFound) {
		s.stats.unknownCard.Add(1)
		s.log.Info("radius accounting for a card not in the inventory", "from", from.String(),
			"imsi", rec.IMSI, "msisdn", rec.MSISDN, "session", rec.SessionID)
		return nil
	}
	if err != nil {
		return err
	}
	iccid := card.ICCID
	cell := rec.Location.Cell()
	// A Stop says where the card was, not where it is: it may arrive after
	// the Start of the card's next session in another device, and must not
	// undo what that Start decided. It only releases the addresses.
	if rec.Status != Stop && (rec.IMEI != "" || cell != nil) {
		obs := verifier.Observation{
			Kind: verifier.ObservedIn, ICCID: card.ICCID, IMEI: rec.IMEI, Source: protocol.SourceRADIUS,
			Time: s.eventTime(rec), Cell: cell, Ref: ref(rec, from),
		}
		_, err := s.obs.ObserveLazy(ctx, obs, card.Tenant)
		if errors.Is(err, verifier.ErrRefused) {
			s.stats.ignored.Add(1)
			s.log.Info("radius observation refused", "iccid", card.ICCID, "err", err)
			return nil
		}
		if err != nil {
			return fmt.Errorf("radius: observe card %s (imei %q): %w", card.ICCID, rec.IMEI, err)
		}
		s.stats.observations.Add(1)
		card = nil // the observation wrote the card: read it again
	}
	return s.updateAddresses(ctx, iccid, card, rec)
}

// findCard returns the card the record names: by IMSI, else by MSISDN.
func (s *Server) findCard(ctx context.Context, rec *Record) (*verifier.Card, error) {
	var err error = verifier.ErrNotFound
	if rec.IMSI != "" {
		var c *verifier.Card
		if c, err = s.cards.FindCard(ctx, verifier.ByIMSI, string(rec.IMSI)); err == nil {
			return c, nil
		}
		if !errors.Is(err, verifier.ErrNotFound) {
			return nil, fmt.Errorf("radius: find card by imsi %s: %w", rec.IMSI, err)
		}
	}
	if rec.MSISDN != "" {
		c, err := s.cards.FindCard(ctx, verifier.ByMSISDN, string(rec.MSISDN))
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, verifier.ErrNotFound) {
			return nil, fmt.Errorf("radius: find card by msisdn %s: %w", rec.MSISDN, err)
		}
	}
	return nil, err
}

// updateAddresses stores the addresses the record gives the card. card is
// the card as read, or nil to read it. Start and Interim-Update set the
// addresses they carry; Stop clears the addresses it names (both when it
// names none), unless the card holds another address by now, which a
// newer session gave it.
func (s *Server) updateAddresses(ctx context.Context, iccid protocol.ICCID, card *verifier.Card, rec *Record) error {
	for attempt := 1; ; attempt++ {
		if card == nil {
			var err error
			if card, err = s.cards.Card(ctx, iccid); err != nil {
				if errors.Is(err, verifier.ErrNotFound) {
					return nil // removed meanwhile: nothing to update
				}
				return fmt.Errorf("radius: read card %s: %w", iccid, err)
			}
		}
		v4, v6 := addresses(card.IPv4, card.IPv6, rec)
		if v4 == card.IPv4 && v6 == card.IPv6 {
			return nil
		}
		c := *card
		c.IPv4, c.IPv6 = v4, v6
		err := s.cards.CommitLazy(ctx, &verifier.Commit{Card: &c})
		if err == nil {
			s.stats.addrUpdates.Add(1)
			s.log.Debug("card addresses", "iccid", iccid, "ipv4", v4, "ipv6", v6, "status", rec.Status.String())
			return nil
		}
		if !errors.Is(err, verifier.ErrConflict) || attempt == maxAttempts {
			return fmt.Errorf("radius: store addresses of card %s: %w", iccid, err)
		}
		card = nil
	}
}

// addresses returns a card's addresses after the record.
func addresses(v4 netip.Addr, v6 netip.Prefix, rec *Record) (netip.Addr, netip.Prefix) {
	switch rec.Status {
	case Start, InterimUpdate:
		if rec.IPv4.IsValid() {
			v4 = rec.IPv4
		}
		if rec.IPv6.IsValid() {
			v6 = rec.IPv6
		}
	case Stop:
		all := !rec.IPv4.IsValid() && !rec.IPv6.IsValid()
		if all || rec.IPv4 == v4 {
			v4 = netip.Addr{}
		}
		if all || rec.IPv6 == v6 {
			v6 = netip.Prefix{}
		}
	}
	return v4, v6
}

// eventTime is when the record's event happened: its Event-Timestamp, or
// now less the time the NAS held it.
func (s *Server) eventTime(rec *Record) time.Time {
	if !rec.EventTime.IsZero() {
		return rec.EventTime
	}
	return s.now().Add(-rec.Delay)
}

// ref identifies the record at its source for history: the NAS, the
// session and the status.
func ref(rec *Record, from netip.AddrPort) string {
	nas := rec.NASIdentifier
	if nas == "" {
		nas = from.Addr().String()
	}
	return fmt.Sprintf("radius:%s/%s/%s", nas, rec.SessionID, rec.Status)
}

package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// BindSpec is what a caller asks of a binding. With no IMEIs and no TAC,
// the card is locked to the IMEI it was last seen in, or, if it was never
// seen, to the first one seen (learn-first).
type BindSpec struct {
	IMEIs      []protocol.IMEI
	TAC        string
	AlertOnly  bool
	Grace      time.Duration
	AutoResume *bool // nil: on
	Area       *verifier.Area
}

// maxBindIMEIs bounds a binding's IMEI list.
const maxBindIMEIs = 64

// Card returns a card. With tenant set, another tenant's card is
// verifier.ErrNotFound, exactly like a card that does not exist.
func (s *Service) Card(ctx context.Context, tenant string, iccid protocol.ICCID) (*verifier.Card, error) {
	c, err := s.store.Card(ctx, iccid)
	if err != nil {
		return nil, err
	}
	if tenant != "" && c.Tenant != tenant {
		return nil, verifier.ErrNotFound
	}
	return c, nil
}

// Bind sets the binding of a card, replacing any binding it had. The card
// goes to the state the new binding implies; a card blocked by the old
// binding is resumed (an operator's manual block stays).
func (s *Service) Bind(ctx context.Context, tenant string, iccid protocol.ICCID, spec BindSpec, actor string) (*verifier.Card, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	return s.change(ctx, tenant, iccid, actor, bindEdit(spec, actor))
}

// bindEdit returns the edit of a card that Bind makes: the binding spec
// asks for, made by actor, learned from the card's current device when
// the spec names none. spec must be valid.
func bindEdit(spec BindSpec, actor string) editFunc {
	return func(c *verifier.Card, now time.Time) (string, error) {
		b := &verifier.Binding{IMEIs: slices.Clone(spec.IMEIs), TAC: spec.TAC, Mode: verifier.ModeBlock,
			Grace: spec.Grace, AutoResume: spec.AutoResume == nil || *spec.AutoResume, Area: spec.Area,
			Created: now, CreatedBy: actor}
		if spec.AlertOnly {
			b.Mode = verifier.ModeAlert
		}
		detail := "bound by " + actor
		if b.Learning() && c.Status.LastIMEI != "" {
			b.IMEIs = []protocol.IMEI{c.Status.LastIMEI}
			detail += " to the device it is in now, " + string(c.Status.LastIMEI)
		} else if b.Learning() {
			detail += "; the first device seen will be learned"
		}
		c.Binding = b
		return detail, nil
	}
}

// Unbind removes a card's binding; ErrNotBound when it has none.
func (s *Service) Unbind(ctx context.Context, tenant string, iccid protocol.ICCID, actor string) (*verifier.Card, error) {
	return s.change(ctx, tenant, iccid, actor, func(c *verifier.Card, _ time.Time) (string, error) {
		if c.Binding == nil {
			return "", ErrNotBound
		}
		c.Binding = nil
		return "unbound by " + actor, nil
	})
}

// editFunc changes a card's binding in place and returns the history
// entry's detail text.
type editFunc func(c *verifier.Card, now time.Time) (string, error)

// change applies a binding change to a card with its history entry and,
// when a block made by the old binding ends, the resume enforcement.
func (s *Service) change(ctx context.Context, tenant string, iccid protocol.ICCID, actor string, edit editFunc) (*verifier.Card, error) {
	for attempt := 1; ; attempt++ {
		c, err := s.Card(ctx, tenant, iccid)
		if err != nil {
			return nil, err
		}
		commit, detail, err := planChange(c, s.now().UTC(), actor, edit)
		if err != nil {
			return nil, err
		}
		err = s.store.Commit(ctx, commit)
		if err == nil {
			s.log.Info("binding changed", "iccid", iccid, "actor", actor, "detail", detail)
			return c, nil
		}
		if !errors.Is(err, verifier.ErrConflict) || attempt == 8 {
			return nil, fmt.Errorf("change binding of %s: %w", iccid, err)
		}
	}
}

// planChange applies edit to c, a card as read (c.Version the version
// read), and returns the commit that writes the change and edit's detail:
// the card in the state its new binding implies (a block by the old
// binding ends; an operator's manual block stays), its history entry and,
// when a block ends, the resume enforcement in the outbox.
func planChange(c *verifier.Card, now time.Time, actor string, edit editFunc) (*verifier.Commit, string, error) {
	from := c.Status.State
	if from == "" {
		from = protocol.CardUnbound
	}
	detail, err := edit(c, now)
	if err != nil {
		return nil, "", err
	}
	var enforce verifier.Enforcement
	if !c.Status.Manual || from != protocol.CardBlocked {
		if from == protocol.CardBlocked {
			enforce = verifier.EnforceResume
		}
		c.Status.State = initialState(c.Binding)
		c.Status.Reason, c.Status.OffendingIMEI, c.Status.GraceUntil = "", "", time.Time{}
	}
	c.Status.Seq++
	commit := &verifier.Commit{Card: c, History: &verifier.HistoryEntry{
		ICCID: c.ICCID, Seq: c.Status.Seq, Time: now, Decision: protocol.DecisionAdmin, From: from, To: c.Status.State,
		Observed: verifier.Observation{Kind: verifier.ObservedBindingChange, ICCID: c.ICCID, Source: protocol.SourceAPI, Time: now, Actor: actor},
		Enforce:  enforce, Detail: detail,
	}}
	if enforce != verifier.EnforceNone {
		payload, err := json.Marshal(verifier.EnforceTask{ICCID: c.ICCID, IMSI: c.IMSI, MSISDN: c.MSISDN,
			Tenant: c.Tenant, Action: enforce, Reason: protocol.DecisionAdmin})
		if err != nil {
			return nil, "", err
		}
		commit.Outbox = append(commit.Outbox, verifier.OutboxEntry{ID: fmt.Sprintf("%s-%d-%s", c.ICCID, c.Status.Seq, enforce),
			Kind: verifier.OutboxEnforce, Created: now, Payload: payload})
	}
	return commit, detail, nil
}

func initialState(b *verifier.Binding) protocol.CardState {
	switch {
	case b == nil:
		return protocol.CardUnbound
	case b.Learning():
		return protocol.CardLearning
	}
	return protocol.CardActive
}

// Block blocks a card by an operator's hand; only an operator resumes it.
func (s *Service) Block(ctx context.Context, tenant string, iccid protocol.ICCID, actor string) (*verifier.Card, error) {
	return s.admin(ctx, tenant, iccid, verifier.ObservedAdminBlock, actor)
}

// Resume resumes a blocked card by an operator's hand.
func (s *Service) Resume(ctx context.Context, tenant string, iccid protocol.ICCID, actor string) (*verifier.Card, error) {
	return s.admin(ctx, tenant, iccid, verifier.ObservedAdminResume, actor)
}

func (s *Service) admin(ctx context.Context, tenant string, iccid protocol.ICCID, kind verifier.ObservationKind, actor string) (*verifier.Card, error) {
	if _, err := s.Card(ctx, tenant, iccid); err != nil {
		return nil, err
	}
	out, err := s.observe.Observe(ctx, verifier.Observation{Kind: kind, ICCID: iccid, Source: protocol.SourceAdmin,
		Time: s.now().UTC(), Actor: actor}, tenant)
	if err != nil {
		return nil, err
	}
	return out.Card, nil
}

// History returns a card's history entries after seq, oldest first.
func (s *Service) History(ctx context.Context, tenant string, iccid protocol.ICCID, after uint64, limit int) ([]verifier.HistoryEntry, error) {
	if _, err := s.Card(ctx, tenant, iccid); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	return s.store.History(ctx, iccid, after, limit)
}

func (b BindSpec) validate() error {
	if len(b.IMEIs) > maxBindIMEIs {
		return fmt.Errorf("%w: %d IMEIs is over the limit of %d", ErrInvalid, len(b.IMEIs), maxBindIMEIs)
	}
	for _, m := range b.IMEIs {
		if got, err := protocol.ParseIMEI(string(m)); err != nil || got != m {
			return fmt.Errorf("%w: imei %q is not a valid IMEI", ErrInvalid, m)
		}
	}
	if b.TAC != "" && (len(b.TAC) < 6 || len(b.TAC) > 8 || protocol.ValidateID("tac", b.TAC) != nil || !isDigits(b.TAC)) {
		return fmt.Errorf("%w: tac %q: want 6 to 8 digits (8 names one device model)", ErrInvalid, b.TAC)
	}
	if b.Grace < 0 || b.Grace > 7*24*time.Hour {
		return fmt.Errorf("%w: grace period must be between 0 and 7 days", ErrInvalid)
	}
	if a := b.Area; a != nil && (a.Lat < -90 || a.Lat > 90 || a.Lon < -180 || a.Lon > 180 || a.RadiusM <= 0 || a.RadiusM > 2e7) {
		return fmt.Errorf("%w: area: latitude -90..90, longitude -180..180, radius 0..20000 km", ErrInvalid)
	}
	return nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

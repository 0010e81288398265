// Package engine decides what an observation of a card means: match,
// mismatch, card separated from its device, outside its area (see
// area.go), unknown card, not bound, or learned; what the card's state becomes; and what to enforce at the
// network and whom to alert. It is pure: no I/O, no clock, no randomness.
// The caller reads the card, calls Decide (or Expire when a grace period
// runs out), and commits the outcome atomically.
package engine

import (
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// Outcome is the engine's verdict on one observation.
type Outcome struct {
	// Decision is the verdict. It is empty when the observation carried
	// nothing to decide on (a sighting without an IMEI).
	Decision protocol.Decision
	// Card is the card as it should be stored: new status, and binding
	// when a learn-first binding learned its IMEI. Nil for unknown cards.
	Card *verifier.Card
	// Changed reports whether the state, the binding or the offending
	// device changed: then the outcome deserves a history entry.
	Changed bool
	// From is the state before the observation.
	From protocol.CardState
	// Enforce is what to do at the network.
	Enforce verifier.Enforcement
	// Alerts are the alerts to publish, in order.
	Alerts []protocol.AlertType
	// Detail explains the outcome in plain words, for history and logs.
	Detail string
}

// Decide applies one observation to a card at time now. card may be nil
// (the card is not in the inventory). Decide does not modify card; the
// returned Outcome.Card is a copy.
func Decide(card *verifier.Card, obs verifier.Observation, now time.Time) Outcome {
	if card == nil {
		return Outcome{Decision: protocol.DecisionUnknownCard, Detail: "card is not in the inventory"}
	}
	c := card.Clone()
	o := Outcome{Card: c, From: c.Status.State}
	if c.Status.State == "" {
		c.Status.State = initialState(c.Binding)
		o.From = c.Status.State
	}
	if obs.Kind == verifier.ObservedIn || obs.Kind == verifier.ObservedSeparated {
		noteSighting(&c.Status, obs)
	}

	switch obs.Kind {
	case verifier.ObservedAdminBlock:
		adminBlock(&o, obs)
	case verifier.ObservedAdminResume:
		adminResume(&o)
	case verifier.ObservedSeparated:
		separated(&o, now)
	case verifier.ObservedIn:
		seen(&o, obs, now)
	}
	if c.Status.State != o.From {
		o.Changed = true
	}
	return o
}

// Expire blocks a card whose grace period has run out at time now. It
// returns an unchanged outcome when the card is not in grace or its grace
// has not ended.
func Expire(card *verifier.Card, now time.Time) Outcome {
	c := card.Clone()
	o := Outcome{Card: c, From: c.Status.State, Decision: c.Status.Reason}
	if c.Status.State != protocol.CardGrace || now.Before(c.Status.GraceUntil) {
		return o
	}
	block(&o, c.Status.Reason, c.Status.OffendingIMEI, "grace period ended")
	o.Alerts = []protocol.AlertType{protocol.AlertBlocked}
	o.Changed = true
	return o
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

func noteSighting(s *verifier.CardStatus, obs verifier.Observation) {
	if obs.Kind == verifier.ObservedIn && obs.IMEI != "" {
		s.LastIMEI = obs.IMEI
	}
	s.LastSource = obs.Source
	if obs.Time.After(s.LastSeen) {
		s.LastSeen = obs.Time
	}
	if obs.Location != nil {
		loc := *obs.Location
		s.LastLocation = &loc
	}
}

func adminBlock(o *Outcome, obs verifier.Observation) {
	s := &o.Card.Status
	o.Decision = protocol.DecisionAdmin
	if s.State == protocol.CardBlocked {
		if !s.Manual {
			s.Manual = true
			o.Changed = true
			o.Detail = "operator took over a block"
		}
		return
	}
	block(o, protocol.DecisionAdmin, "", "blocked by "+actor(obs))
	s.Manual = true
	o.Alerts = []protocol.AlertType{protocol.AlertBlocked}
}

func adminResume(o *Outcome) {
	s := &o.Card.Status
	o.Decision = protocol.DecisionAdmin
	switch s.State {
	case protocol.CardBlocked, protocol.CardGrace, protocol.CardAlerted:
		wasBlocked := s.State == protocol.CardBlocked
		restore(o)
		o.Detail = "resumed by an operator"
		if wasBlocked {
			o.Enforce = verifier.EnforceResume
		}
		o.Alerts = []protocol.AlertType{protocol.AlertResumed}
	}
}

func separated(o *Outcome, now time.Time) {
	b := o.Card.Binding
	s := &o.Card.Status
	if b == nil {
		o.Decision = protocol.DecisionNotBound
		return
	}
	o.Decision = protocol.DecisionSeparated
	switch {
	case b.Learning():
		return // no device is bound yet, so the card cannot have left it
	case s.State == protocol.CardBlocked || s.State == protocol.CardGrace:
		return // already acting on an earlier event
	case s.State == protocol.CardAlerted && s.Reason == protocol.DecisionSeparated:
		return
	}
	o.Detail = "the card left the device it is bound to"
	mismatchLike(o, protocol.DecisionSeparated, "", protocol.AlertSeparated, now)
}

func seen(o *Outcome, obs verifier.Observation, now time.Time) {
	b := o.Card.Binding
	if obs.IMEI == "" {
		if b != nil && !b.Learning() {
			placeOnly(o, obs, now)
		}
		return // nothing else to decide on; the sighting is noted
	}
	if b == nil {
		o.Decision = protocol.DecisionNotBound
		return
	}
	if b.Learning() {
		learn(o, obs.IMEI)
		return
	}
	if b.Allows(obs.IMEI) {
		s := &o.Card.Status
		switch v, dist := judgeArea(b.Area, obs.Location); {
		case v == areaOutside:
			outsideArea(o, b.Area, dist, now)
			return
		case v == areaUnknown && acting(s.State) && s.Reason == protocol.DecisionOutsideArea:
			o.Decision = protocol.DecisionMatch
			o.Detail = "in an allowed device, location unknown or too coarse: stays " + string(s.State)
			return
		}
		wasOutside := acting(s.State) && s.Reason == protocol.DecisionOutsideArea
		match(o)
		if wasOutside && o.Changed {
			o.Detail = "back inside its area"
		}
		return
	}
	o.Decision = protocol.DecisionMismatch
	s := &o.Card.Status
	if s.State == protocol.CardBlocked || s.State == protocol.CardGrace || s.State == protocol.CardAlerted {
		if s.Manual || s.OffendingIMEI == obs.IMEI {
			return // nothing new
		}
		// Already acting, but the card moved to yet another device: say so.
		s.OffendingIMEI = obs.IMEI
		s.Reason = protocol.DecisionMismatch
		o.Changed = true
		o.Detail = "seen in another unbound device " + string(obs.IMEI)
		o.Alerts = []protocol.AlertType{protocol.AlertMismatch}
		return
	}
	o.Detail = "seen in unbound device " + string(obs.IMEI)
	mismatchLike(o, protocol.DecisionMismatch, obs.IMEI, protocol.AlertMismatch, now)
}

// placeOnly judges a sighting that names no device (a network record
// without an IMEI) by its location alone: outside the area acts, inside
// ends only what an outside_area decision began.
func placeOnly(o *Outcome, obs verifier.Observation, now time.Time) {
	b := o.Card.Binding
	s := &o.Card.Status
	switch v, dist := judgeArea(b.Area, obs.Location); v {
	case areaOutside:
		outsideArea(o, b.Area, dist, now)
	case areaInside:
		if acting(s.State) && s.Reason == protocol.DecisionOutsideArea {
			match(o)
			o.Detail = "back inside its area"
		}
	}
}

// mismatchLike acts on a mismatch or a separation per the binding's mode
// and grace period, from a state that is not yet acting on one.
func mismatchLike(o *Outcome, reason protocol.Decision, imei protocol.IMEI, alert protocol.AlertType, now time.Time) {
	b := o.Card.Binding
	s := &o.Card.Status
	s.Reason = reason
	s.OffendingIMEI = imei
	o.Changed = true
	switch {
	case b.Mode == verifier.ModeAlert:
		s.State = protocol.CardAlerted
		o.Alerts = []protocol.AlertType{alert}
	case b.Grace > 0:
		s.State = protocol.CardGrace
		s.GraceUntil = now.Add(b.Grace)
		o.Alerts = []protocol.AlertType{alert}
	default:
		block(o, reason, imei, o.Detail)
		o.Alerts = []protocol.AlertType{alert, protocol.AlertBlocked}
	}
}

func block(o *Outcome, reason protocol.Decision, imei protocol.IMEI, detail string) {
	s := &o.Card.Status
	s.State = protocol.CardBlocked
	s.Reason = reason
	s.OffendingIMEI = imei
	s.GraceUntil = time.Time{}
	o.Enforce = verifier.EnforceBlock
	o.Detail = detail
}

func learn(o *Outcome, imei protocol.IMEI) {
	o.Decision = protocol.DecisionLearned
	o.Card.Binding.IMEIs = []protocol.IMEI{imei}
	o.Changed = true
	o.Detail = "learned device " + string(imei)
	o.Alerts = []protocol.AlertType{protocol.AlertLearned}
	if o.Card.Status.State == protocol.CardLearning || o.Card.Status.State == protocol.CardUnbound {
		o.Card.Status.State = protocol.CardActive
	}
}

func match(o *Outcome) {
	o.Decision = protocol.DecisionMatch
	s := &o.Card.Status
	switch s.State {
	case protocol.CardBlocked:
		if s.Manual || !o.Card.Binding.AutoResume {
			o.Detail = "back in an allowed device; stays blocked until an operator resumes it"
			return
		}
		restore(o)
		o.Enforce = verifier.EnforceResume
		o.Alerts = []protocol.AlertType{protocol.AlertResumed}
		o.Detail = "back in an allowed device; service resumed"
	case protocol.CardGrace, protocol.CardAlerted:
		restore(o)
		o.Alerts = []protocol.AlertType{protocol.AlertResumed}
		o.Detail = "back in an allowed device"
	case protocol.CardUnbound, protocol.CardLearning:
		s.State = protocol.CardActive
	}
}

// restore returns a card to the state its binding implies, clearing what
// the last incident left.
func restore(o *Outcome) {
	s := &o.Card.Status
	s.State = initialState(o.Card.Binding)
	s.Reason = ""
	s.Manual = false
	s.GraceUntil = time.Time{}
	s.OffendingIMEI = ""
	o.Changed = true
}

func actor(obs verifier.Observation) string {
	if obs.Actor != "" {
		return obs.Actor
	}
	return "an operator"
}

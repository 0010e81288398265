package engine

import (
	"slices"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

const (
	home    protocol.IMEI = "356938035643809" // the device the card is bound to
	sibling protocol.IMEI = "356938035643817" // same model (same TAC), another unit
	foreign protocol.IMEI = "490154203237518" // a phone
	other   protocol.IMEI = "352099001761481" // yet another device
	iccid                 = protocol.ICCID("89860318640220133897")
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func bindBlock() *verifier.Binding {
	return &verifier.Binding{IMEIs: []protocol.IMEI{home}, Mode: verifier.ModeBlock, AutoResume: true}
}

func card(b *verifier.Binding, state protocol.CardState, mut ...func(*verifier.CardStatus)) *verifier.Card {
	c := &verifier.Card{ICCID: iccid, Tenant: "acme", Binding: b, Status: verifier.CardStatus{State: state}}
	for _, m := range mut {
		m(&c.Status)
	}
	return c
}

func seenIn(imei protocol.IMEI) verifier.Observation {
	return verifier.Observation{Kind: verifier.ObservedIn, ICCID: iccid, IMEI: imei, Source: protocol.SourceAgent, Time: t0}
}

func obsKind(k verifier.ObservationKind) verifier.Observation {
	return verifier.Observation{Kind: k, ICCID: iccid, Source: protocol.SourceAdmin, Time: t0, Actor: "ops"}
}

func with(f func(b *verifier.Binding)) *verifier.Binding {
	b := bindBlock()
	f(b)
	return b
}

func blockedBy(reason protocol.Decision, imei protocol.IMEI, manual bool) func(*verifier.CardStatus) {
	return func(s *verifier.CardStatus) { s.Reason, s.OffendingIMEI, s.Manual = reason, imei, manual }
}

type A = []protocol.AlertType

func TestDecide(t *testing.T) {
	alertOnly := with(func(b *verifier.Binding) { b.Mode = verifier.ModeAlert })
	graced := with(func(b *verifier.Binding) { b.Grace = 30 * time.Second })
	noResume := with(func(b *verifier.Binding) { b.AutoResume = false })
	sameModel := &verifier.Binding{TAC: home.TAC(), Mode: verifier.ModeBlock, AutoResume: true}
	list := with(func(b *verifier.Binding) { b.IMEIs = []protocol.IMEI{home, other} })
	learning := &verifier.Binding{Mode: verifier.ModeBlock, AutoResume: true}

	tests := []struct {
		name     string
		card     *verifier.Card
		obs      verifier.Observation
		decision protocol.Decision
		state    protocol.CardState
		enforce  verifier.Enforcement
		alerts   A
		changed  bool
	}{
		// Unknown and unbound cards.
		{"unknown card", nil, seenIn(foreign), protocol.DecisionUnknownCard, "", "", nil, false},
		{"not bound", card(nil, protocol.CardUnbound), seenIn(foreign), protocol.DecisionNotBound, protocol.CardUnbound, "", nil, false},
		{"not bound, no state yet", card(nil, ""), seenIn(foreign), protocol.DecisionNotBound, protocol.CardUnbound, "", nil, false},
		{"not bound, separated", card(nil, protocol.CardUnbound), obsKind(verifier.ObservedSeparated), protocol.DecisionNotBound, protocol.CardUnbound, "", nil, false},

		// Matches.
		{"match", card(bindBlock(), protocol.CardActive), seenIn(home), protocol.DecisionMatch, protocol.CardActive, "", nil, false},
		{"match, no state yet", card(bindBlock(), ""), seenIn(home), protocol.DecisionMatch, protocol.CardActive, "", nil, false},
		{"match in IMEI list", card(list, protocol.CardActive), seenIn(other), protocol.DecisionMatch, protocol.CardActive, "", nil, false},
		{"match same model", card(sameModel, protocol.CardActive), seenIn(sibling), protocol.DecisionMatch, protocol.CardActive, "", nil, false},
		{"same model refuses other model", card(sameModel, protocol.CardActive), seenIn(foreign), protocol.DecisionMismatch, protocol.CardBlocked, verifier.EnforceBlock, A{protocol.AlertMismatch, protocol.AlertBlocked}, true},
		{"exact IMEI refuses sibling", card(bindBlock(), protocol.CardActive), seenIn(sibling), protocol.DecisionMismatch, protocol.CardBlocked, verifier.EnforceBlock, A{protocol.AlertMismatch, protocol.AlertBlocked}, true},
		{"sighting without IMEI", card(bindBlock(), protocol.CardActive), seenIn(""), "", protocol.CardActive, "", nil, false},

		// Mismatch per mode.
		{"mismatch blocks", card(bindBlock(), protocol.CardActive), seenIn(foreign), protocol.DecisionMismatch, protocol.CardBlocked, verifier.EnforceBlock, A{protocol.AlertMismatch, protocol.AlertBlocked}, true},
		{"mismatch alert-only", card(alertOnly, protocol.CardActive), seenIn(foreign), protocol.DecisionMismatch, protocol.CardAlerted, "", A{protocol.AlertMismatch}, true},
		{"mismatch starts grace", card(graced, protocol.CardActive), seenIn(foreign), protocol.DecisionMismatch, protocol.CardGrace, "", A{protocol.AlertMismatch}, true},
		{"mismatch again while blocked", card(bindBlock(), protocol.CardBlocked, blockedBy(protocol.DecisionMismatch, foreign, false)), seenIn(foreign), protocol.DecisionMismatch, protocol.CardBlocked, "", nil, false},
		{"mismatch in a third device while blocked", card(bindBlock(), protocol.CardBlocked, blockedBy(protocol.DecisionMismatch, foreign, false)), seenIn(other), protocol.DecisionMismatch, protocol.CardBlocked, "", A{protocol.AlertMismatch}, true},
		{"mismatch while manually blocked", card(bindBlock(), protocol.CardBlocked, blockedBy(protocol.DecisionAdmin, "", true)), seenIn(foreign), protocol.DecisionMismatch, protocol.CardBlocked, "", nil, false},
		{"mismatch again in grace", card(graced, protocol.CardGrace, blockedBy(protocol.DecisionMismatch, foreign, false)), seenIn(foreign), protocol.DecisionMismatch, protocol.CardGrace, "", nil, false},
		{"mismatch again alert-only", card(alertOnly, protocol.CardAlerted, blockedBy(protocol.DecisionMismatch, foreign, false)), seenIn(foreign), protocol.DecisionMismatch, protocol.CardAlerted, "", nil, false},
		{"separated card then seen in a phone", card(bindBlock(), protocol.CardBlocked, blockedBy(protocol.DecisionSeparated, "", false)), seenIn(foreign), protocol.DecisionMismatch, protocol.CardBlocked, "", A{protocol.AlertMismatch}, true},

		// Resume on match.
		{"auto resume", card(bindBlock(), protocol.CardBlocked, blockedBy(protocol.DecisionMismatch, foreign, false)), seenIn(home), protocol.DecisionMatch, protocol.CardActive, verifier.EnforceResume, A{protocol.AlertResumed}, true},
		{"auto resume after separation", card(bindBlock(), protocol.CardBlocked, blockedBy(protocol.DecisionSeparated, "", false)), seenIn(home), protocol.DecisionMatch, protocol.CardActive, verifier.EnforceResume, A{protocol.AlertResumed}, true},
		{"no auto resume", card(noResume, protocol.CardBlocked, blockedBy(protocol.DecisionMismatch, foreign, false)), seenIn(home), protocol.DecisionMatch, protocol.CardBlocked, "", nil, false},
		{"manual block is not auto resumed", card(bindBlock(), protocol.CardBlocked, blockedBy(protocol.DecisionAdmin, "", true)), seenIn(home), protocol.DecisionMatch, protocol.CardBlocked, "", nil, false},
		{"back during grace", card(graced, protocol.CardGrace, blockedBy(protocol.DecisionMismatch, foreign, false)), seenIn(home), protocol.DecisionMatch, protocol.CardActive, "", A{protocol.AlertResumed}, true},
		{"back alert-only", card(alertOnly, protocol.CardAlerted, blockedBy(protocol.DecisionMismatch, foreign, false)), seenIn(home), protocol.DecisionMatch, protocol.CardActive, "", A{protocol.AlertResumed}, true},

		// Learn-first.
		{"learns first IMEI", card(learning, protocol.CardLearning), seenIn(foreign), protocol.DecisionLearned, protocol.CardActive, "", A{protocol.AlertLearned}, true},
		{"learns, no state yet", card(learning, ""), seenIn(home), protocol.DecisionLearned, protocol.CardActive, "", A{protocol.AlertLearned}, true},
		{"learning ignores separation", card(learning, protocol.CardLearning), obsKind(verifier.ObservedSeparated), protocol.DecisionSeparated, protocol.CardLearning, "", nil, false},
		{"learning ignores sighting without IMEI", card(learning, protocol.CardLearning), seenIn(""), "", protocol.CardLearning, "", nil, false},

		// Separation.
		{"separated blocks", card(bindBlock(), protocol.CardActive), obsKind(verifier.ObservedSeparated), protocol.DecisionSeparated, protocol.CardBlocked, verifier.EnforceBlock, A{protocol.AlertSeparated, protocol.AlertBlocked}, true},
		{"separated alert-only", card(alertOnly, protocol.CardActive), obsKind(verifier.ObservedSeparated), protocol.DecisionSeparated, protocol.CardAlerted, "", A{protocol.AlertSeparated}, true},
		{"separated starts grace", card(graced, protocol.CardActive), obsKind(verifier.ObservedSeparated), protocol.DecisionSeparated, protocol.CardGrace, "", A{protocol.AlertSeparated}, true},
		{"separated while blocked", card(bindBlock(), protocol.CardBlocked, blockedBy(protocol.DecisionMismatch, foreign, false)), obsKind(verifier.ObservedSeparated), protocol.DecisionSeparated, protocol.CardBlocked, "", nil, false},
		{"separated twice alert-only", card(alertOnly, protocol.CardAlerted, blockedBy(protocol.DecisionSeparated, "", false)), obsKind(verifier.ObservedSeparated), protocol.DecisionSeparated, protocol.CardAlerted, "", nil, false},

		// Operators.
		{"admin block", card(bindBlock(), protocol.CardActive), obsKind(verifier.ObservedAdminBlock), protocol.DecisionAdmin, protocol.CardBlocked, verifier.EnforceBlock, A{protocol.AlertBlocked}, true},
		{"admin block of unbound card", card(nil, protocol.CardUnbound), obsKind(verifier.ObservedAdminBlock), protocol.DecisionAdmin, protocol.CardBlocked, verifier.EnforceBlock, A{protocol.AlertBlocked}, true},
		{"admin takes over a block", card(bindBlock(), protocol.CardBlocked, blockedBy(protocol.DecisionMismatch, foreign, false)), obsKind(verifier.ObservedAdminBlock), protocol.DecisionAdmin, protocol.CardBlocked, "", nil, true},
		{"admin block twice", card(bindBlock(), protocol.CardBlocked, blockedBy(protocol.DecisionAdmin, "", true)), obsKind(verifier.ObservedAdminBlock), protocol.DecisionAdmin, protocol.CardBlocked, "", nil, false},
		{"admin resume", card(bindBlock(), protocol.CardBlocked, blockedBy(protocol.DecisionAdmin, "", true)), obsKind(verifier.ObservedAdminResume), protocol.DecisionAdmin, protocol.CardActive, verifier.EnforceResume, A{protocol.AlertResumed}, true},
		{"admin resume of unbound card", card(nil, protocol.CardBlocked, blockedBy(protocol.DecisionAdmin, "", true)), obsKind(verifier.ObservedAdminResume), protocol.DecisionAdmin, protocol.CardUnbound, verifier.EnforceResume, A{protocol.AlertResumed}, true},
		{"admin resume of learning card", card(learning, protocol.CardBlocked, blockedBy(protocol.DecisionAdmin, "", true)), obsKind(verifier.ObservedAdminResume), protocol.DecisionAdmin, protocol.CardLearning, verifier.EnforceResume, A{protocol.AlertResumed}, true},
		{"admin resume ends grace", card(graced, protocol.CardGrace, blockedBy(protocol.DecisionMismatch, foreign, false)), obsKind(verifier.ObservedAdminResume), protocol.DecisionAdmin, protocol.CardActive, "", A{protocol.AlertResumed}, true},
		{"admin resume of active card", card(bindBlock(), protocol.CardActive), obsKind(verifier.ObservedAdminResume), protocol.DecisionAdmin, protocol.CardActive, "", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before verifier.Card
			if tt.card != nil {
				before = *tt.card
			}
			o := Decide(tt.card, tt.obs, t0)
			if o.Decision != tt.decision {
				t.Errorf("decision = %q, want %q", o.Decision, tt.decision)
			}
			if o.Enforce != tt.enforce {
				t.Errorf("enforce = %q, want %q", o.Enforce, tt.enforce)
			}
			if !slices.Equal(o.Alerts, tt.alerts) {
				t.Errorf("alerts = %v, want %v", o.Alerts, tt.alerts)
			}
			if o.Changed != tt.changed {
				t.Errorf("changed = %v, want %v (%s)", o.Changed, tt.changed, o.Detail)
			}
			if tt.card == nil {
				if o.Card != nil {
					t.Errorf("unknown card produced a card")
				}
				return
			}
			if o.Card.Status.State != tt.state {
				t.Errorf("state = %q, want %q", o.Card.Status.State, tt.state)
			}
			if tt.card.Status != before.Status || tt.card.Binding != before.Binding {
				t.Errorf("Decide modified its input")
			}
			if o.Enforce != "" && o.Card.Status.State != protocol.CardBlocked && o.Enforce == verifier.EnforceBlock {
				t.Errorf("block enforced but card is %s", o.Card.Status.State)
			}
			if o.Changed && (o.Card.Status.State == protocol.CardGrace) != !o.Card.Status.GraceUntil.IsZero() {
				t.Errorf("state %s with grace deadline %v", o.Card.Status.State, o.Card.Status.GraceUntil)
			}
		})
	}
}

func TestDecideNotesSighting(t *testing.T) {
	c := card(bindBlock(), protocol.CardActive)
	obs := seenIn(home)
	obs.Location = &protocol.Location{Lat: 1, Lon: 2, Source: "gnss"}
	o := Decide(c, obs, t0)
	s := o.Card.Status
	if s.LastIMEI != home || !s.LastSeen.Equal(t0) || s.LastSource != protocol.SourceAgent || s.LastLocation == nil {
		t.Errorf("sighting not noted: %+v", s)
	}
	// An older observation arriving late does not move LastSeen back.
	late := seenIn(home)
	late.Time = t0.Add(-time.Minute)
	if o2 := Decide(o.Card, late, t0); !o2.Card.Status.LastSeen.Equal(t0) {
		t.Errorf("LastSeen moved back to %v", o2.Card.Status.LastSeen)
	}
}

func TestLearnedBindingSticks(t *testing.T) {
	c := card(&verifier.Binding{Mode: verifier.ModeBlock, AutoResume: true}, protocol.CardLearning)
	o := Decide(c, seenIn(home), t0)
	if !slices.Equal(o.Card.Binding.IMEIs, []protocol.IMEI{home}) {
		t.Fatalf("binding after learning = %v", o.Card.Binding.IMEIs)
	}
	if len(c.Binding.IMEIs) != 0 {
		t.Fatal("Decide modified the input binding")
	}
	o2 := Decide(o.Card, seenIn(foreign), t0)
	if o2.Decision != protocol.DecisionMismatch || o2.Card.Status.State != protocol.CardBlocked {
		t.Errorf("after learning, a foreign device gave %s/%s", o2.Decision, o2.Card.Status.State)
	}
}

func TestGrace(t *testing.T) {
	b := with(func(b *verifier.Binding) { b.Grace = 30 * time.Second })
	o := Decide(card(b, protocol.CardActive), seenIn(foreign), t0)
	if o.Card.Status.State != protocol.CardGrace || !o.Card.Status.GraceUntil.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("grace: %+v", o.Card.Status)
	}
	if e := Expire(o.Card, t0.Add(29*time.Second)); e.Changed || e.Card.Status.State != protocol.CardGrace {
		t.Errorf("expired early: %+v", e)
	}
	e := Expire(o.Card, t0.Add(30*time.Second))
	if !e.Changed || e.Card.Status.State != protocol.CardBlocked || e.Enforce != verifier.EnforceBlock ||
		!slices.Equal(e.Alerts, A{protocol.AlertBlocked}) || e.Decision != protocol.DecisionMismatch ||
		e.Card.Status.OffendingIMEI != foreign {
		t.Errorf("expiry: %+v status %+v", e, e.Card.Status)
	}
	if e := Expire(card(bindBlock(), protocol.CardActive), t0.Add(time.Hour)); e.Changed {
		t.Errorf("active card expired: %+v", e)
	}
	// Separation in grace expires into a block for separation.
	s := Decide(card(b, protocol.CardActive), obsKind(verifier.ObservedSeparated), t0)
	if e := Expire(s.Card, t0.Add(time.Minute)); e.Decision != protocol.DecisionSeparated || e.Card.Status.State != protocol.CardBlocked {
		t.Errorf("separation expiry: %+v", e)
	}
}

// A swap and swap back, the whole story of one card.
func TestSwapAndBack(t *testing.T) {
	c := card(bindBlock(), protocol.CardActive)
	steps := []struct {
		obs     verifier.Observation
		state   protocol.CardState
		enforce verifier.Enforcement
	}{
		{seenIn(home), protocol.CardActive, ""},
		{obsKind(verifier.ObservedSeparated), protocol.CardBlocked, verifier.EnforceBlock},
		{seenIn(foreign), protocol.CardBlocked, ""},
		{seenIn(home), protocol.CardActive, verifier.EnforceResume},
		{seenIn(home), protocol.CardActive, ""},
	}
	for i, st := range steps {
		o := Decide(c, st.obs, t0.Add(time.Duration(i)*time.Second))
		if o.Card.Status.State != st.state || o.Enforce != st.enforce {
			t.Fatalf("step %d (%s %s): state %s enforce %q; want %s %q", i, st.obs.Kind, st.obs.IMEI, o.Card.Status.State, o.Enforce, st.state, st.enforce)
		}
		c = o.Card
	}
}

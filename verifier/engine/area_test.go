package engine

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// The area: 1 km around a point in Shanghai.
var shanghai = &verifier.Area{Lat: 31.2304, Lon: 121.4737, RadiusM: 1000}

// at returns a location north of the area's centre by metres (one degree
// of latitude is about 111.2 km).
func at(northM, accuracyM float64, source string) *protocol.Location {
	return &protocol.Location{Lat: shanghai.Lat + northM/111195, Lon: shanghai.Lon, AccuracyM: accuracyM, Source: source}
}

func seenAt(imei protocol.IMEI, l *protocol.Location) verifier.Observation {
	o := seenIn(imei)
	o.Location = l
	return o
}

func TestDistanceM(t *testing.T) {
	tests := []struct {
		lat1, lon1, lat2, lon2, want, tol float64
	}{
		{0, 0, 0, 0, 0, 0},
		{0, 0, 1, 0, 111195, 1},
		{31.2304, 121.4737, 39.9042, 116.4074, 1067000, 2000}, // Shanghai to Beijing
		{0, 179.9, 0, -179.9, 22239, 1},                       // across the antimeridian
		{90, 0, -90, 0, math.Pi * earthRadiusM, 1},
	}
	for _, tt := range tests {
		if got := DistanceM(tt.lat1, tt.lon1, tt.lat2, tt.lon2); math.Abs(got-tt.want) > tt.tol {
			t.Errorf("DistanceM(%v,%v,%v,%v) = %.0f, want %.0f±%.0f", tt.lat1, tt.lon1, tt.lat2, tt.lon2, got, tt.want, tt.tol)
		}
	}
}

func TestJudgeArea(t *testing.T) {
	tests := []struct {
		name string
		area *verifier.Area
		loc  *protocol.Location
		want areaVerdict
	}{
		{"no area", nil, at(5000, 10, "gnss"), areaNone},
		{"no location", shanghai, nil, areaUnknown},
		{"gnss inside", shanghai, at(500, 10, "gnss"), areaInside},
		{"gnss outside", shanghai, at(1500, 10, "gnss"), areaOutside},
		{"gnss on the edge", shanghai, at(995, 10, "gnss"), areaUnknown},
		{"gnss without accuracy near the edge", shanghai, at(1030, 0, "gnss"), areaUnknown},
		{"gnss without accuracy well outside", shanghai, at(1100, 0, "gnss"), areaOutside},
		{"cell too coarse nearby", shanghai, at(1500, 0, "cell"), areaUnknown},
		{"cell far away", shanghai, at(50000, 3000, "cell"), areaOutside},
		{"cell coarser than the area, at the centre", shanghai, at(0, 1500, "cell"), areaUnknown},
		{"null island is no location", shanghai, &protocol.Location{Source: "gnss", AccuracyM: 5}, areaUnknown},
		{"latitude out of range", shanghai, &protocol.Location{Lat: 91, Lon: 121, Source: "gnss"}, areaUnknown},
	}
	for _, tt := range tests {
		if got, _ := judgeArea(tt.area, tt.loc); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestDecideArea(t *testing.T) {
	limited := with(func(b *verifier.Binding) { b.Area = shanghai })
	limitedAlert := with(func(b *verifier.Binding) { b.Area, b.Mode = shanghai, verifier.ModeAlert })
	limitedGrace := with(func(b *verifier.Binding) { b.Area, b.Grace = shanghai, time.Minute })
	limitedNoResume := with(func(b *verifier.Binding) { b.Area, b.AutoResume = shanghai, false })
	outsideBlocked := blockedBy(protocol.DecisionOutsideArea, "", false)
	inside, outside, coarse := at(200, 10, "gnss"), at(5000, 20, "gnss"), at(900, 3000, "cell")
	noIMEI := func(l *protocol.Location) verifier.Observation {
		o := seenAt("", l)
		o.Source = protocol.SourceRADIUS
		return o
	}

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
		{"inside", card(limited, protocol.CardActive), seenAt(home, inside), protocol.DecisionMatch, protocol.CardActive, "", nil, false},
		{"outside blocks", card(limited, protocol.CardActive), seenAt(home, outside), protocol.DecisionOutsideArea, protocol.CardBlocked, verifier.EnforceBlock, A{protocol.AlertAreaExit, protocol.AlertBlocked}, true},
		{"outside alert-only", card(limitedAlert, protocol.CardActive), seenAt(home, outside), protocol.DecisionOutsideArea, protocol.CardAlerted, "", A{protocol.AlertAreaExit}, true},
		{"outside starts grace", card(limitedGrace, protocol.CardActive), seenAt(home, outside), protocol.DecisionOutsideArea, protocol.CardGrace, "", A{protocol.AlertAreaExit}, true},
		{"still outside", card(limited, protocol.CardBlocked, outsideBlocked), seenAt(home, outside), protocol.DecisionOutsideArea, protocol.CardBlocked, "", nil, false},
		{"back inside resumes", card(limited, protocol.CardBlocked, outsideBlocked), seenAt(home, inside), protocol.DecisionMatch, protocol.CardActive, verifier.EnforceResume, A{protocol.AlertResumed}, true},
		{"back inside, no auto resume", card(limitedNoResume, protocol.CardBlocked, outsideBlocked), seenAt(home, inside), protocol.DecisionMatch, protocol.CardBlocked, "", nil, false},
		{"back inside during grace", card(limitedGrace, protocol.CardGrace, outsideBlocked), seenAt(home, inside), protocol.DecisionMatch, protocol.CardActive, "", A{protocol.AlertResumed}, true},
		{"unknown location never blocks", card(limited, protocol.CardActive), seenAt(home, nil), protocol.DecisionMatch, protocol.CardActive, "", nil, false},
		{"coarse location never blocks", card(limited, protocol.CardActive), seenAt(home, coarse), protocol.DecisionMatch, protocol.CardActive, "", nil, false},
		{"unknown location never resumes", card(limited, protocol.CardBlocked, outsideBlocked), seenAt(home, nil), protocol.DecisionMatch, protocol.CardBlocked, "", nil, false},
		{"coarse location never resumes", card(limited, protocol.CardBlocked, outsideBlocked), seenAt(home, coarse), protocol.DecisionMatch, protocol.CardBlocked, "", nil, false},
		{"foreign device outside is a mismatch", card(limited, protocol.CardActive), seenAt(foreign, outside), protocol.DecisionMismatch, protocol.CardBlocked, verifier.EnforceBlock, A{protocol.AlertMismatch, protocol.AlertBlocked}, true},
		{"mismatch block, own device but outside", card(limited, protocol.CardBlocked, blockedBy(protocol.DecisionMismatch, foreign, false)), seenAt(home, outside), protocol.DecisionOutsideArea, protocol.CardBlocked, "", A{protocol.AlertAreaExit}, true},
		{"manual block, outside", card(limited, protocol.CardBlocked, blockedBy(protocol.DecisionAdmin, "", true)), seenAt(home, outside), protocol.DecisionOutsideArea, protocol.CardBlocked, "", nil, false},
		{"no area, far away", card(bindBlock(), protocol.CardActive), seenAt(home, outside), protocol.DecisionMatch, protocol.CardActive, "", nil, false},
		{"network record without IMEI, outside", card(limited, protocol.CardActive), noIMEI(outside), protocol.DecisionOutsideArea, protocol.CardBlocked, verifier.EnforceBlock, A{protocol.AlertAreaExit, protocol.AlertBlocked}, true},
		{"network record without IMEI, back inside", card(limited, protocol.CardBlocked, outsideBlocked), noIMEI(inside), protocol.DecisionMatch, protocol.CardActive, verifier.EnforceResume, A{protocol.AlertResumed}, true},
		{"network record without IMEI does not end a mismatch", card(limited, protocol.CardBlocked, blockedBy(protocol.DecisionMismatch, foreign, false)), noIMEI(inside), "", protocol.CardBlocked, "", nil, false},
		{"network record without IMEI or location", card(limited, protocol.CardActive), noIMEI(nil), "", protocol.CardActive, "", nil, false},
		{"learning card learns wherever it is", card(&verifier.Binding{Mode: verifier.ModeBlock, Area: shanghai}, protocol.CardLearning), seenAt(home, outside), protocol.DecisionLearned, protocol.CardActive, "", A{protocol.AlertLearned}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Decide(tt.card, tt.obs, t0)
			if o.Decision != tt.decision || o.Card.Status.State != tt.state || o.Enforce != tt.enforce ||
				!slices.Equal(o.Alerts, tt.alerts) || o.Changed != tt.changed {
				t.Errorf("got %s → %s enforce %q alerts %v changed %v (%s); want %s → %s enforce %q alerts %v changed %v",
					o.Decision, o.Card.Status.State, o.Enforce, o.Alerts, o.Changed, o.Detail,
					tt.decision, tt.state, tt.enforce, tt.alerts, tt.changed)
			}
			if o.Card.Status.State == protocol.CardGrace && o.Card.Status.GraceUntil.IsZero() {
				t.Error("grace without a deadline")
			}
			if tt.obs.Location != nil && o.Card.Status.LastLocation == nil {
				t.Error("location not noted")
			}
		})
	}
}

// A card crossing the edge of its area and back, then a grace period
// running out outside.
func TestAreaStory(t *testing.T) {
	c := card(with(func(b *verifier.Binding) { b.Area = shanghai }), protocol.CardActive)
	steps := []struct {
		loc     *protocol.Location
		state   protocol.CardState
		enforce verifier.Enforcement
	}{
		{at(0, 10, "gnss"), protocol.CardActive, ""},
		{at(980, 10, "gnss"), protocol.CardActive, ""}, // near the edge, not sure
		{at(1200, 10, "gnss"), protocol.CardBlocked, verifier.EnforceBlock},
		{at(2000, 3000, "cell"), protocol.CardBlocked, ""}, // coarse: stays
		{at(800, 10, "gnss"), protocol.CardActive, verifier.EnforceResume},
	}
	for i, st := range steps {
		o := Decide(c, seenAt(home, st.loc), t0.Add(time.Duration(i)*time.Second))
		if o.Card.Status.State != st.state || o.Enforce != st.enforce {
			t.Fatalf("step %d: state %s enforce %q (%s); want %s %q", i, o.Card.Status.State, o.Enforce, o.Detail, st.state, st.enforce)
		}
		c = o.Card
	}
	g := card(with(func(b *verifier.Binding) { b.Area, b.Grace = shanghai, time.Minute }), protocol.CardActive)
	o := Decide(g, seenAt(home, at(3000, 10, "gnss")), t0)
	e := Expire(o.Card, t0.Add(time.Minute))
	if e.Card.Status.State != protocol.CardBlocked || e.Decision != protocol.DecisionOutsideArea || e.Enforce != verifier.EnforceBlock {
		t.Errorf("grace outside expired into %s/%s/%s", e.Decision, e.Card.Status.State, e.Enforce)
	}
}

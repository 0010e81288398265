package engine

import (
	"fmt"
	"math"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// Area limits. A binding with an Area allows the card only inside that
// circle. A location is a point with an uncertainty radius (its
// AccuracyM, or a default by source when it has none): the card is
// outside when the whole uncertainty circle lies outside the area, inside
// when it lies wholly inside, and otherwise the location is too coarse to
// tell. Only "outside" acts: it is handled like an IMEI mismatch, with
// decision outside_area and alert area_exit, per the binding's mode and
// grace period; "inside" again ends what an outside_area decision began
// (resuming per AutoResume). An unknown or too coarse location never
// blocks and never resumes: the card keeps its state and the sighting is
// noted (LastLocation), so the next precise fix decides. An IMEI mismatch
// takes precedence over the area: the device is judged first.

// Default uncertainty of a location without AccuracyM, by source.
const (
	defaultGNSSAccuracyM = 50
	defaultCellAccuracyM = 2000
)

type areaVerdict int

const (
	areaNone    areaVerdict = iota // no area limit
	areaUnknown                    // no location, or too coarse to tell
	areaInside
	areaOutside
)

// earthRadiusM is the mean earth radius (IUGG).
const earthRadiusM = 6371008.8

// judgeArea places a location relative to an area; dist is the distance
// from the area's centre in metres when there is a location.
func judgeArea(a *verifier.Area, l *protocol.Location) (v areaVerdict, dist float64) {
	if a == nil || a.RadiusM <= 0 {
		return areaNone, 0
	}
	if l == nil || !validCoord(l.Lat, l.Lon) {
		return areaUnknown, 0
	}
	acc := l.AccuracyM
	if acc <= 0 || math.IsNaN(acc) {
		acc = defaultCellAccuracyM
		if l.Source == "gnss" {
			acc = defaultGNSSAccuracyM
		}
	}
	dist = DistanceM(a.Lat, a.Lon, l.Lat, l.Lon)
	switch {
	case dist-acc > a.RadiusM:
		return areaOutside, dist
	case dist+acc <= a.RadiusM:
		return areaInside, dist
	}
	return areaUnknown, dist
}

func validCoord(lat, lon float64) bool {
	return lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180 && !(lat == 0 && lon == 0)
}

// DistanceM is the great-circle distance in metres between two points
// given in degrees (haversine).
func DistanceM(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	dLat := (lat2 - lat1) * rad
	dLon := (lon2 - lon1) * rad
	h := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthRadiusM * math.Asin(math.Min(1, math.Sqrt(h)))
}

func acting(s protocol.CardState) bool {
	return s == protocol.CardBlocked || s == protocol.CardGrace || s == protocol.CardAlerted
}

// outsideArea acts on a card seen outside its area in an allowed (or
// unknown) device.
func outsideArea(o *Outcome, a *verifier.Area, dist float64, now time.Time) {
	o.Decision = protocol.DecisionOutsideArea
	s := &o.Card.Status
	detail := fmt.Sprintf("seen %.0f m from the centre of its %.0f m area", dist, a.RadiusM)
	if acting(s.State) {
		if s.Manual || s.Reason == protocol.DecisionOutsideArea {
			return // nothing new
		}
		// Already acting on a mismatch or a separation; the device is
		// right now, but the place is not: the reason changes.
		s.Reason = protocol.DecisionOutsideArea
		s.OffendingIMEI = ""
		o.Changed = true
		o.Detail = "back in an allowed device, but " + detail
		o.Alerts = []protocol.AlertType{protocol.AlertAreaExit}
		return
	}
	o.Detail = detail
	mismatchLike(o, protocol.DecisionOutsideArea, "", protocol.AlertAreaExit, now)
}

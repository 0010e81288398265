package camara

import (
	"bytes"
	"encoding/json"
	"io"
	"math"

	"github.com/cardbind/cardbind/verifier"
)

// maxRadius is the largest circle radius the spec allows, in metres.
const maxRadius = 200000

// circle is the spec's Circle area.
type circle struct {
	AreaType string `json:"areaType"`
	Center   point  `json:"center"`
	Radius   int    `json:"radius"`
}

type point struct {
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
}

func circleOf(a *verifier.Area) *circle {
	r := int(math.Round(a.RadiusM))
	r = max(1, min(r, maxRadius))
	return &circle{AreaType: "CIRCLE", Center: point{a.Lat, a.Lon}, Radius: r}
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// parseArea reads a limitArea: a CIRCLE with a center and an integer
// radius of 1..200000 m.
func parseArea(raw json.RawMessage) (*verifier.Area, *apiError) {
	var a struct {
		AreaType *string `json:"areaType"`
		Center   *struct {
			Latitude  *float64 `json:"latitude"`
			Longitude *float64 `json:"longitude"`
		} `json:"center"`
		Radius *json.RawMessage `json:"radius"`
	}
	dec := json.NewDecoder(bytesReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil || a.AreaType == nil || *a.AreaType != "CIRCLE" ||
		a.Center == nil || a.Center.Latitude == nil || a.Center.Longitude == nil || a.Radius == nil {
		return nil, errInvalidArgument("Invalid format: limitArea")
	}
	lat, lon := *a.Center.Latitude, *a.Center.Longitude
	if lat < -90 || lat > 90 || lon < -180 || lon > 180 {
		return nil, errOutOfRange("Invalid value: limitArea.center")
	}
	r, ok := intValue(*a.Radius)
	if !ok {
		return nil, errInvalidArgument("Invalid format: limitArea.radius")
	}
	if r < 1 || r > maxRadius {
		return nil, errOutOfRange("Invalid value: limitArea.radius")
	}
	return &verifier.Area{Lat: lat, Lon: lon, RadiusM: float64(r)}, nil
}

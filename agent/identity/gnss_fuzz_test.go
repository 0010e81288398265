package identity

import (
	"errors"
	"math"
	"testing"
)

// checkFuzzFix: a fix is a real position, or there is an error and no fix.
func checkFuzzFix(t *testing.T, in string, fix Fix, err error) {
	t.Helper()
	if err != nil {
		if fix != (Fix{}) {
			t.Fatalf("%q: fix %+v with error %v", in, fix, err)
		}
		return
	}
	if math.IsNaN(fix.Lat) || math.IsNaN(fix.Lon) || math.Abs(fix.Lat) > 90 || math.Abs(fix.Lon) > 180 ||
		fix.Lat == 0 && fix.Lon == 0 {
		t.Fatalf("%q gave position %v,%v", in, fix.Lat, fix.Lon)
	}
	if math.IsNaN(fix.HDOP) || fix.HDOP < 0 || fix.HDOP >= 100 {
		t.Fatalf("%q gave HDOP %v", in, fix.HDOP)
	}
}

func FuzzParseQGPSLOC(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string) {
		fix, err := ParseQGPSLOC(lines(in))
		checkFuzzFix(t, in, fix, err)
	})
}

func FuzzParseCGPSINFO(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string) {
		fix, err := ParseCGPSINFO(lines(in))
		checkFuzzFix(t, in, fix, err)
		if err == nil && fix.HDOP != 0 {
			t.Fatalf("%q: CGPSINFO has no HDOP, got %v", in, fix.HDOP)
		}
		if errors.Is(err, ErrNoFix) && fix != (Fix{}) {
			t.Fatalf("%q: no fix but %+v", in, fix)
		}
	})
}

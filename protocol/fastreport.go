package protocol

import (
	"encoding/base64"
	"math"
	"strconv"
	"time"
)

// decodeReportFast parses the usual shape of a report in one pass, without
// reflection: version Version, every key spelled exactly as its field's
// tag and at most once, no nulls, strings of printable ASCII without escapes, integers
// without fraction or exponent. It returns false for anything else, and
// then decodeStrict decides, with its errors; what it accepts, it decodes
// exactly as decodeStrict would (FuzzDecodeReportFast checks both).
// It is an optimisation of the verifier's hottest path, not a second
// definition of the format.
func decodeReportFast(data []byte, r *Report) bool {
	p := fastParser{b: data}
	ok := p.fields(reportFields[:], func(i int) bool {
		switch i {
		case 0:
			return p.int(&r.Version)
		case 1:
			return p.string((*string)(&r.DeviceID))
		case 2:
			return p.uint(&r.Seq, 64)
		case 3:
			return p.time(&r.Time)
		case 4:
			return p.string((*string)(&r.Reason))
		case 5:
			return p.string((*string)(&r.IMEI))
		case 6:
			return p.string((*string)(&r.IMEISV))
		case 7:
			return p.string((*string)(&r.SIM))
		case 8:
			return p.string((*string)(&r.ICCID))
		case 9:
			return p.string((*string)(&r.IMSI))
		case 10:
			return p.registration(&r.Registration)
		case 11:
			r.Location = new(Location)
			return p.location(r.Location)
		case 12:
			r.Signal = new(Signal)
			return p.fields([]string{"rssi_dbm"}, func(int) bool { return p.int(&r.Signal.RSSIdBm) })
		case 13:
			return p.strings(&r.Acks)
		case 14:
			return p.uint(&r.Dropped, 64)
		}
		return p.bytes(&r.Sig)
	})
	if !ok || r.Version != Version {
		return false
	}
	p.space()
	return p.i == len(p.b)
}

// reportFields are the report's JSON keys, in the order decodeReportFast
// numbers them.
var reportFields = [...]string{"v", "device_id", "seq", "time", "reason", "imei", "imeisv", "sim_state",
	"iccid", "imsi", "registration", "location", "signal", "acks", "dropped", "sig"}

func (p *fastParser) registration(g *Registration) bool {
	return p.fields([]string{"state", "stat", "tech", "cell"}, func(i int) bool {
		switch i {
		case 0:
			return p.string((*string)(&g.State))
		case 1:
			return p.int(&g.Stat)
		case 2:
			return p.string(&g.Tech)
		}
		g.Cell = new(Cell)
		c := g.Cell
		return p.fields([]string{"mcc", "mnc", "area", "id"}, func(j int) bool {
			switch j {
			case 0:
				return p.string(&c.MCC)
			case 1:
				return p.string(&c.MNC)
			case 2:
				var v uint64
				if !p.uint(&v, 32) {
					return false
				}
				c.Area = uint32(v)
				return true
			}
			return p.uint(&c.ID, 64)
		})
	})
}

func (p *fastParser) location(l *Location) bool {
	return p.fields([]string{"lat", "lon", "accuracy_m", "source"}, func(i int) bool {
		switch i {
		case 0:
			return p.float(&l.Lat)
		case 1:
			return p.float(&l.Lon)
		case 2:
			return p.float(&l.AccuracyM)
		}
		return p.string(&l.Source)
	})
}

// fields reads an object whose keys are all among names (at most 64), each
// at most once; field reads the value of names[i].
func (p *fastParser) fields(names []string, field func(i int) bool) bool {
	var seen uint64
	return p.object(func(key []byte) bool {
		for i, n := range names {
			if string(key) != n {
				continue
			}
			if seen&(1<<i) != 0 {
				return false
			}
			seen |= 1 << i
			return field(i)
		}
		return false
	})
}

// fastParser reads the JSON subset decodeReportFast handles.
type fastParser struct {
	b []byte
	i int
}

func (p *fastParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *fastParser) consume(c byte) bool {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// object reads an object, calling value with each key once the parser
// stands before the key's value.
func (p *fastParser) object(value func(key []byte) bool) bool {
	if !p.consume('{') {
		return false
	}
	if p.consume('}') {
		return true
	}
	for {
		p.space()
		key, ok := p.rawString()
		if !ok || !p.consume(':') {
			return false
		}
		p.space()
		if !value(key) {
			return false
		}
		if p.consume(',') {
			continue
		}
		return p.consume('}')
	}
}

// rawString reads a string of printable ASCII without escapes and returns
// its content.
func (p *fastParser) rawString() ([]byte, bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return nil, false
	}
	start := p.i + 1
	for j := start; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			p.i = j + 1
			return p.b[start:j], true
		case c < 0x20 || c > 0x7e || c == '\\':
			return nil, false
		}
	}
	return nil, false
}

func (p *fastParser) string(s *string) bool {
	v, ok := p.rawString()
	if ok {
		*s = string(v)
	}
	return ok
}

// strings reads an array of strings; an empty array is an empty, not a
// nil, slice, as encoding/json makes it.
func (p *fastParser) strings(out *[]string) bool {
	if !p.consume('[') {
		return false
	}
	list := []string{}
	if !p.consume(']') {
		for {
			p.space()
			var s string
			if !p.string(&s) {
				return false
			}
			list = append(list, s)
			if p.consume(',') {
				continue
			}
			if !p.consume(']') {
				return false
			}
			break
		}
	}
	*out = list
	return true
}

// bytes reads a base64 string as encoding/json decodes a []byte.
func (p *fastParser) bytes(out *[]byte) bool {
	v, ok := p.rawString()
	if !ok {
		return false
	}
	b := make([]byte, base64.StdEncoding.DecodedLen(len(v)))
	n, err := base64.StdEncoding.Decode(b, v)
	if err != nil {
		return false
	}
	*out = b[:n]
	return true
}

// time reads a time as encoding/json does: the quoted string, to
// time.Time's UnmarshalJSON.
func (p *fastParser) time(t *time.Time) bool {
	start := p.i
	if _, ok := p.rawString(); !ok {
		return false
	}
	return t.UnmarshalJSON(p.b[start:p.i]) == nil
}

// digits reads an integer literal: an optional minus (when signed), then 0
// or a digit sequence not starting with 0. A fraction or exponent after it
// is refused (encoding/json refuses it for integer fields, with its own
// error).
func (p *fastParser) digits(signed bool) ([]byte, bool) {
	start := p.i
	if signed && p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	d := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	if p.i == d || (p.b[d] == '0' && p.i-d > 1) {
		return nil, false
	}
	if p.i < len(p.b) {
		switch p.b[p.i] {
		case '.', 'e', 'E':
			return nil, false
		}
	}
	return p.b[start:p.i], true
}

func (p *fastParser) int(v *int) bool {
	lit, ok := p.digits(true)
	if !ok {
		return false
	}
	n, err := strconv.ParseInt(string(lit), 10, 64)
	if err != nil || n < math.MinInt || n > math.MaxInt {
		return false
	}
	*v = int(n)
	return true
}

func (p *fastParser) uint(v *uint64, bits int) bool {
	lit, ok := p.digits(false)
	if !ok {
		return false
	}
	n, err := strconv.ParseUint(string(lit), 10, bits)
	if err != nil {
		return false
	}
	*v = n
	return true
}

// float reads a JSON number into a float64 as encoding/json does.
func (p *fastParser) float(v *float64) bool {
	start := p.i
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	d := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	if p.i == d || (p.b[d] == '0' && p.i-d > 1) {
		return false
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		f := p.i
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
		}
		if p.i == f {
			return false
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		e := p.i
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
		}
		if p.i == e {
			return false
		}
	}
	f, err := strconv.ParseFloat(string(p.b[start:p.i]), 64)
	if err != nil {
		return false
	}
	*v = f
	return true
}

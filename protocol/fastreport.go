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
	var seen uint32
	ok := p.object(func(key []byte) bool {
		bit := reportKey(key)
		if bit == 0 || seen&bit != 0 {
			return false
		}
		seen |= bit
		switch bit {
		case 1 << 0:
			return p.int(&r.Version)
		case 1 << 1:
			return p.string((*string)(&r.DeviceID))
		case 1 << 2:
			return p.uint(&r.Seq, 64)
		case 1 << 3:
			return p.time(&r.Time)
		case 1 << 4:
			return p.string((*string)(&r.Reason))
		case 1 << 5:
			return p.string((*string)(&r.IMEI))
		case 1 << 6:
			return p.string((*string)(&r.IMEISV))
		case 1 << 7:
			return p.string((*string)(&r.SIM))
		case 1 << 8:
			return p.string((*string)(&r.ICCID))
		case 1 << 9:
			return p.string((*string)(&r.IMSI))
		case 1 << 10:
			return p.registration(&r.Registration)
		case 1 << 11:
			r.Location = new(Location)
			return p.location(r.Location)
		case 1 << 12:
			r.Signal = new(Signal)
			var seen bool
			return p.object(func(key []byte) bool {
				if string(key) != "rssi_dbm" || seen {
					return false
				}
				seen = true
				return p.int(&r.Signal.RSSIdBm)
			})
		case 1 << 13:
			return p.strings(&r.Acks)
		case 1 << 14:
			return p.uint(&r.Dropped, 64)
		case 1 << 15:
			return p.bytes(&r.Sig)
		}
		return false
	})
	if !ok || r.Version != Version {
		return false
	}
	p.space()
	return p.i == len(p.b)
}

// reportKey returns the bit of a report key in decodeReportFast, 0 for a
// key that is not a report field's tag.
func reportKey(key []byte) uint32 {
	switch string(key) {
	case "v":
		return 1 << 0
	case "device_id":
		return 1 << 1
	case "seq":
		return 1 << 2
	case "time":
		return 1 << 3
	case "reason":
		return 1 << 4
	case "imei":
		return 1 << 5
	case "imeisv":
		return 1 << 6
	case "sim_state":
		return 1 << 7
	case "iccid":
		return 1 << 8
	case "imsi":
		return 1 << 9
	case "registration":
		return 1 << 10
	case "location":
		return 1 << 11
	case "signal":
		return 1 << 12
	case "acks":
		return 1 << 13
	case "dropped":
		return 1 << 14
	case "sig":
		return 1 << 15
	}
	return 0
}

func (p *fastParser) registration(g *Registration) bool {
	var seen [4]bool
	return p.object(func(key []byte) bool {
		i := -1
		switch string(key) {
		case "state":
			i = 0
		case "stat":
			i = 1
		case "tech":
			i = 2
		case "cell":
			i = 3
		}
		if i < 0 || seen[i] {
			return false
		}
		seen[i] = true
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
		var seenCell [4]bool
		return p.object(func(key []byte) bool {
			j := -1
			switch string(key) {
			case "mcc":
				j = 0
			case "mnc":
				j = 1
			case "area":
				j = 2
			case "id":
				j = 3
			}
			if j < 0 || seenCell[j] {
				return false
			}
			seenCell[j] = true
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
	var seen [4]bool
	return p.object(func(key []byte) bool {
		i := -1
		switch string(key) {
		case "lat":
			i = 0
		case "lon":
			i = 1
		case "accuracy_m":
			i = 2
		case "source":
			i = 3
		}
		if i < 0 || seen[i] {
			return false
		}
		seen[i] = true
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

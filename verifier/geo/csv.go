package geo

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/cardbind/cardbind/verifier"
)

// Columns of the OpenCelliD CSV layout, in order.
var columns = [...]string{"radio", "mcc", "net", "area", "cell", "unit", "lon", "lat", "range",
	"samples", "changeable", "created", "updated", "averageSignal"}

// ErrRow is wrapped by the errors ParseRow returns.
var ErrRow = errors.New("geo: bad cell row")

// ParseRow parses one CSV row in the OpenCelliD layout into the cell's key
// and position. Only radio, mcc, net, area, cell, lon, lat, range and
// samples are read; the row must have all 14 columns.
func ParseRow(rec []string) (Key, Position, error) {
	var k Key
	var p Position
	if len(rec) != len(columns) {
		return k, p, fmt.Errorf("%w: %d columns, want %d", ErrRow, len(rec), len(columns))
	}
	switch strings.ToUpper(rec[0]) {
	case "LTE", "NR":
		k.Wide = true
	case "GSM", "UMTS", "CDMA":
	default:
		return k, p, fmt.Errorf("%w: radio %q", ErrRow, rec[0])
	}
	mcc, err := strconv.Atoi(rec[1])
	if err != nil || mcc < 1 || mcc > 999 {
		return k, p, fmt.Errorf("%w: mcc %q", ErrRow, rec[1])
	}
	mnc, err := strconv.Atoi(rec[2])
	if err != nil || mnc < 0 || mnc > 999 {
		return k, p, fmt.Errorf("%w: net %q", ErrRow, rec[2])
	}
	area, err := strconv.ParseUint(rec[3], 10, 32)
	if err != nil {
		return k, p, fmt.Errorf("%w: area %q", ErrRow, rec[3])
	}
	cell, err := strconv.ParseUint(rec[4], 10, 64)
	if err != nil || cell >= 1<<36 {
		return k, p, fmt.Errorf("%w: cell %q", ErrRow, rec[4])
	}
	lon, err1 := strconv.ParseFloat(rec[6], 64)
	lat, err2 := strconv.ParseFloat(rec[7], 64)
	if err1 != nil || err2 != nil || math.IsNaN(lat) || math.IsNaN(lon) || lat < -90 || lat > 90 || lon < -180 || lon > 180 {
		return k, p, fmt.Errorf("%w: coordinates %q,%q", ErrRow, rec[7], rec[6])
	}
	rng, err := strconv.ParseFloat(rec[8], 64)
	if err != nil || math.IsNaN(rng) || rng < 0 || rng > 1e7 {
		return k, p, fmt.Errorf("%w: range %q", ErrRow, rec[8])
	}
	samples, err := strconv.Atoi(rec[9])
	if err != nil || samples < 0 {
		samples = 0
	}
	k.MCC, k.MNC, k.Area, k.Cell = mcc, mnc, uint32(area), cell
	return k, Position{Lat: lat, Lon: lon, RangeM: rng, Samples: samples}, nil
}

// ImportStats says what an import did.
type ImportStats struct {
	// Rows counts data rows read (the header not included).
	Rows int `json:"rows"`
	// Imported counts cells stored.
	Imported int `json:"imported"`
	// Skipped counts malformed rows, left out.
	Skipped int `json:"skipped"`
}

// importBatch is how many cells Import stores per synced write.
const importBatch = 1000

// Import reads a CSV in the OpenCelliD layout (with or without its header
// line) and stores every well-formed row, a batch at a time; malformed
// rows are counted and skipped, each reported through bad (which may be
// nil). It stops at the first store error or when ctx ends; the batches
// stored before stay stored (importing the same file again is harmless).
func (t *Table) Import(ctx context.Context, r io.Reader, bad func(line int, err error)) (ImportStats, error) {
	var st ImportStats
	batch := make([]verifier.Record, 0, importBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := t.recs.PutRecords(ctx, Namespace, batch); err != nil {
			return fmt.Errorf("geo: store %d cells: %w", len(batch), err)
		}
		st.Imported += len(batch)
		batch = batch[:0]
		t.forget()
		return nil
	}
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return st, flush()
		}
		if err != nil {
			var pe *csv.ParseError
			if !errors.As(err, &pe) {
				return st, fmt.Errorf("geo: read line %d: %w", line, err)
			}
			st.Rows++
			st.Skipped++
			if bad != nil {
				bad(line, err)
			}
			continue
		}
		if line == 1 && len(rec) > 0 && strings.EqualFold(rec[0], "radio") {
			continue // the header
		}
		st.Rows++
		k, p, err := ParseRow(rec)
		if err != nil {
			st.Skipped++
			if bad != nil {
				bad(line, err)
			}
			continue
		}
		v, err := json.Marshal(p)
		if err != nil {
			return st, fmt.Errorf("geo: encode %s: %w", k, err)
		}
		batch = append(batch, verifier.Record{Key: k.String(), Value: v})
		if len(batch) == importBatch {
			if err := flush(); err != nil {
				return st, err
			}
		}
	}
}

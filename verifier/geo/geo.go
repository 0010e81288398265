// Package geo maps serving cells to coordinates, for area limits: the
// network's 3GPP-User-Location-Info (TAI and ECGI) and the agent's
// +CEREG/+QENG answers name a cell, and the engine needs a point and an
// uncertainty. The cell table is imported from a CSV in the OpenCelliD
// column layout
//
//	radio,mcc,net,area,cell,unit,lon,lat,range,samples,changeable,created,updated,averageSignal
//
// and kept in the store's record space (namespace "geo.cell"), one record
// per cell, so every verifier replica sharing the store sees it.
//
// LTE and NR cells are keyed by MCC, MNC and cell identity alone (an ECI
// or NCI is unique within its network, and a location record may carry an
// ECGI without a TAI); GSM and UMTS cells by MCC, MNC, LAC and cell id. A
// lookup tries the first, then the second. A cell's "range" (metres)
// becomes the location's accuracy.
package geo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// Namespace is the record namespace of the cell table.
const Namespace = "geo.cell"

// Records is the part of verifier.Store the table uses.
type Records interface {
	PutRecord(ctx context.Context, ns, key string, value []byte) error
	PutRecords(ctx context.Context, ns string, recs []verifier.Record) error
	GetRecord(ctx context.Context, ns, key string) ([]byte, error)
}

// Key identifies a cell in the table.
type Key struct {
	// Wide is true for LTE and NR cells (keyed without the area code).
	Wide     bool
	MCC, MNC int
	Area     uint32
	Cell     uint64
}

// String is the record key.
func (k Key) String() string {
	if k.Wide {
		return fmt.Sprintf("e/%d/%d/%d", k.MCC, k.MNC, k.Cell)
	}
	return fmt.Sprintf("g/%d/%d/%d/%d", k.MCC, k.MNC, k.Area, k.Cell)
}

// Position is where a cell is and how far it reaches.
type Position struct {
	Lat     float64 `json:"lat"`
	Lon     float64 `json:"lon"`
	RangeM  float64 `json:"range_m,omitempty"`
	Samples int     `json:"samples,omitempty"`
}

// Table is the cell table over the store's records.
type Table struct {
	recs Records
	now  func() time.Time

	mu     sync.Mutex
	cached map[Key]cachedCell
}

// cachedCell is a lookup remembered: the location, or nil for a cell the
// table does not hold.
type cachedCell struct {
	loc *protocol.Location
	at  time.Time
}

// A lookup is remembered for cacheTTL, at most cacheMax of them: every
// report that names its cell would otherwise read the store once or twice
// more. An import in this process forgets them at once; one in another
// replica sharing the store is seen within cacheTTL.
const (
	cacheTTL = 10 * time.Minute
	cacheMax = 1 << 17
)

// New returns the table kept in recs.
func New(recs Records) *Table {
	return &Table{recs: recs, now: time.Now, cached: make(map[Key]cachedCell)}
}

// forget drops every remembered lookup.
func (t *Table) forget() {
	t.mu.Lock()
	t.cached = make(map[Key]cachedCell)
	t.mu.Unlock()
}

// Put stores one cell.
func (t *Table) Put(ctx context.Context, k Key, p Position) error {
	v, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("geo: encode %s: %w", k, err)
	}
	if err := t.recs.PutRecord(ctx, Namespace, k.String(), v); err != nil {
		return fmt.Errorf("geo: put %s: %w", k, err)
	}
	t.forget()
	return nil
}

// Locate returns the location of a serving cell: its coordinates, with
// the cell's range as accuracy and source "cell". A cell not in the table
// gives nil and a nil error: the location is unknown, which never blocks a
// card by itself.
func (t *Table) Locate(ctx context.Context, c *protocol.Cell) (*protocol.Location, error) {
	if c == nil {
		return nil, nil
	}
	mcc, err1 := strconv.Atoi(c.MCC)
	mnc, err2 := strconv.Atoi(c.MNC)
	if err1 != nil || err2 != nil {
		return nil, nil
	}
	key := Key{MCC: mcc, MNC: mnc, Area: c.Area, Cell: c.ID}
	now := t.now()
	t.mu.Lock()
	hit, ok := t.cached[key]
	t.mu.Unlock()
	if ok && now.Sub(hit.at) < cacheTTL {
		return copyLocation(hit.loc), nil
	}
	loc, err := t.lookup(ctx, key)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	if len(t.cached) >= cacheMax {
		t.cached = make(map[Key]cachedCell)
	}
	t.cached[key] = cachedCell{loc: loc, at: now}
	t.mu.Unlock()
	return copyLocation(loc), nil
}

// lookup reads a cell from the store: by its wide key (LTE, NR), then by
// its area (GSM, UMTS).
func (t *Table) lookup(ctx context.Context, k Key) (*protocol.Location, error) {
	wide := k
	wide.Wide, wide.Area = true, 0
	for _, k := range []Key{wide, k} {
		v, err := t.recs.GetRecord(ctx, Namespace, k.String())
		if errors.Is(err, verifier.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("geo: read %s: %w", k, err)
		}
		var p Position
		if err := json.Unmarshal(v, &p); err != nil {
			return nil, fmt.Errorf("geo: decode %s: %w", k, err)
		}
		return &protocol.Location{Lat: p.Lat, Lon: p.Lon, AccuracyM: p.RangeM, Source: "cell"}, nil
	}
	return nil, nil
}

// copyLocation returns a copy the caller may keep and change.
func copyLocation(l *protocol.Location) *protocol.Location {
	if l == nil {
		return nil
	}
	c := *l
	return &c
}

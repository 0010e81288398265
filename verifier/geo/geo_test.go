package geo

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/ingest"
	"github.com/cardbind/cardbind/verifier/store/pebble"
)

var _ Records = verifier.Store(nil)

func openStore(t *testing.T) *pebble.Store {
	t.Helper()
	st, err := pebble.Open(t.TempDir(), pebble.Options{CacheSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// importFixture imports testdata/cells.csv into a Pebble store.
func importFixture(t *testing.T) (*Table, *pebble.Store) {
	t.Helper()
	st := openStore(t)
	f, err := os.Open("testdata/cells.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab := New(st)
	var bad []int
	stats, err := tab.Import(context.Background(), f, func(line int, _ error) { bad = append(bad, line) })
	if err != nil {
		t.Fatal(err)
	}
	if stats != (ImportStats{Rows: 11, Imported: 7, Skipped: 4}) {
		t.Errorf("import stats %+v", stats)
	}
	if len(bad) != 4 || bad[0] != 9 {
		t.Errorf("bad lines %v, want 9 to 12", bad)
	}
	return tab, st
}

func TestLocate(t *testing.T) {
	tab, _ := importFixture(t)
	tests := []struct {
		name     string
		cell     *protocol.Cell
		lat, lon float64
		acc      float64
		found    bool
	}{
		{"ECGI with TAI", &protocol.Cell{MCC: "460", MNC: "03", Area: 6699, ID: 27446212}, 31.2310, 121.4740, 300, true},
		{"ECGI without TAI", &protocol.Cell{MCC: "460", MNC: "03", ID: 27446213}, 31.2754, 121.4737, 500, true},
		{"GSM needs its LAC", &protocol.Cell{MCC: "460", MNC: "00", Area: 4660, ID: 10021}, 31.2300, 121.4800, 1200, true},
		{"UMTS in another network", &protocol.Cell{MCC: "460", MNC: "01", Area: 4660, ID: 10021}, 39.9042, 116.4074, 900, true},
		{"NR cell", &protocol.Cell{MCC: "460", MNC: "00", Area: 88, ID: 6000123456}, 31.2290, 121.4700, 150, true},
		{"GSM cell with another LAC", &protocol.Cell{MCC: "460", MNC: "00", Area: 1, ID: 10021}, 0, 0, 0, false},
		{"unknown cell", &protocol.Cell{MCC: "460", MNC: "03", Area: 6699, ID: 1}, 0, 0, 0, false},
		{"malformed PLMN", &protocol.Cell{MCC: "4x0", MNC: "03", ID: 27446212}, 0, 0, 0, false},
		{"no cell", nil, 0, 0, 0, false},
		{"bad row not imported", &protocol.Cell{MCC: "460", MNC: "03", ID: 27446215}, 0, 0, 0, false},
	}
	for _, tt := range tests {
		loc, err := tab.Locate(context.Background(), tt.cell)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if (loc != nil) != tt.found {
			t.Errorf("%s: location %+v, found want %v", tt.name, loc, tt.found)
			continue
		}
		if loc != nil && (math.Abs(loc.Lat-tt.lat) > 1e-9 || math.Abs(loc.Lon-tt.lon) > 1e-9 || loc.AccuracyM != tt.acc || loc.Source != "cell") {
			t.Errorf("%s: %+v", tt.name, loc)
		}
	}
}

type failingRecords struct{}

func (failingRecords) PutRecord(context.Context, string, string, []byte) error {
	return errors.New("down")
}
func (failingRecords) PutRecords(context.Context, string, []verifier.Record) error {
	return errors.New("down")
}
func (failingRecords) GetRecord(context.Context, string, string) ([]byte, error) {
	return nil, errors.New("down")
}

func TestStoreErrors(t *testing.T) {
	tab := New(failingRecords{})
	if _, err := tab.Locate(context.Background(), &protocol.Cell{MCC: "460", MNC: "03", ID: 1}); err == nil {
		t.Error("Locate hid a store error")
	}
	row := "LTE,460,3,6699,27446212,0,121.4740,31.2310,300,41,1,1700000000,1710000000,0\n"
	if st, err := tab.Import(context.Background(), strings.NewReader(row), nil); err == nil || st.Imported != 0 {
		t.Errorf("Import with a failing store: %+v %v", st, err)
	}
}

func TestParseRow(t *testing.T) {
	tests := []struct {
		row  string
		key  string
		pos  Position
		fail bool
	}{
		{"LTE,460,3,6699,27446212,0,121.474,31.231,300,41,1,0,0,0", "e/460/3/27446212", Position{31.231, 121.474, 300, 41}, false},
		{"lte,1,1,0,7,0,-0.5,51.5,0,0,1,0,0,0", "e/1/1/7", Position{51.5, -0.5, 0, 0}, false},
		{"GSM,460,0,4660,10021,0,121.48,31.23,1200,x,1,0,0,-81", "g/460/0/4660/10021", Position{31.23, 121.48, 1200, 0}, false},
		{"CDMA,310,120,1,2,0,-100,40,1000,1,1,0,0,0", "g/310/120/1/2", Position{40, -100, 1000, 1}, false},
		{"WIFI,460,3,1,1,0,121,31,10,1,1,0,0,0", "", Position{}, true},
		{"LTE,0,3,1,1,0,121,31,10,1,1,0,0,0", "", Position{}, true},
		{"LTE,460,1000,1,1,0,121,31,10,1,1,0,0,0", "", Position{}, true},
		{"LTE,460,3,-1,1,0,121,31,10,1,1,0,0,0", "", Position{}, true},
		{"LTE,460,3,1,68719476736,0,121,31,10,1,1,0,0,0", "", Position{}, true},
		{"LTE,460,3,1,1,0,181,31,10,1,1,0,0,0", "", Position{}, true},
		{"LTE,460,3,1,1,0,121,-91,10,1,1,0,0,0", "", Position{}, true},
		{"LTE,460,3,1,1,0,121,31,Inf,1,1,0,0,0", "", Position{}, true},
		{"LTE,460,3,1,1,0,121,31,10,1,1,0,0", "", Position{}, true},
	}
	for _, tt := range tests {
		rec, err := csv.NewReader(strings.NewReader(tt.row)).Read()
		if err != nil {
			t.Fatal(err)
		}
		k, p, err := ParseRow(rec)
		if tt.fail {
			if !errors.Is(err, ErrRow) {
				t.Errorf("%s: %v, want ErrRow", tt.row, err)
			}
			continue
		}
		if err != nil || k.String() != tt.key || p != tt.pos {
			t.Errorf("%s: %s %+v %v; want %s %+v", tt.row, k, p, err, tt.key, tt.pos)
		}
	}
}

// FuzzParseRow: any row either parses into a key and a position in range,
// or gives ErrRow; never a panic.
func FuzzParseRow(f *testing.F) {
	f.Add("LTE,460,3,6699,27446212,0,121.4740,31.2310,300,41,1,1700000000,1710000000,0")
	f.Fuzz(func(t *testing.T, line string) {
		rec, err := csv.NewReader(strings.NewReader(line)).Read()
		if err != nil {
			return
		}
		k, p, err := ParseRow(rec)
		if err != nil {
			if !errors.Is(err, ErrRow) {
				t.Fatalf("%q: error %v without ErrRow", line, err)
			}
			return
		}
		if p.Lat < -90 || p.Lat > 90 || p.Lon < -180 || p.Lon > 180 || p.RangeM < 0 || math.IsNaN(p.RangeM) || k.MCC < 1 || k.MCC > 999 {
			t.Fatalf("%q: out of range %+v %+v", line, k, p)
		}
	})
}

// A card with an area limit, located through the cell table the way a
// network record's ECGI is: blocked when it moves to a cell outside its
// circle, resumed when it is back, through the real ingest and engine.
func TestAreaLimitThroughCells(t *testing.T) {
	tab, st := importFixture(t)
	ctx := context.Background()
	const iccid = protocol.ICCID("89860318640220133897")
	const imei = protocol.IMEI("356938035643809")
	if _, _, err := st.UpsertInventory(ctx, []verifier.Card{{ICCID: iccid, Tenant: "t1", IMSI: "460031234567890"}}); err != nil {
		t.Fatal(err)
	}
	c, err := st.Card(ctx, iccid)
	if err != nil {
		t.Fatal(err)
	}
	// 2 km around the first LTE cell.
	c.Binding = &verifier.Binding{IMEIs: []protocol.IMEI{imei}, Mode: verifier.ModeBlock, AutoResume: true,
		Area: &verifier.Area{Lat: 31.2310, Lon: 121.4740, RadiusM: 2000}}
	c.Status.State = protocol.CardActive
	if err := st.Commit(ctx, &verifier.Commit{Card: c}); err != nil {
		t.Fatal(err)
	}
	in := ingest.New(st, slog.New(slog.DiscardHandler), time.Now)
	steps := []struct {
		cell  protocol.Cell
		state protocol.CardState
		dec   protocol.Decision
	}{
		{protocol.Cell{MCC: "460", MNC: "03", Area: 6699, ID: 27446212}, protocol.CardActive, protocol.DecisionMatch},        // the centre cell
		{protocol.Cell{MCC: "460", MNC: "03", Area: 6699, ID: 27446213}, protocol.CardBlocked, protocol.DecisionOutsideArea}, // ~4.9 km north, 500 m range
		{protocol.Cell{MCC: "460", MNC: "03", Area: 6699, ID: 1}, protocol.CardBlocked, protocol.DecisionMatch},              // unknown cell: stays
		{protocol.Cell{MCC: "460", MNC: "03", ID: 27446217}, protocol.CardBlocked, protocol.DecisionMatch},                   // 1.55 km north, 1.5 km range: too coarse
		{protocol.Cell{MCC: "460", MNC: "00", Area: 88, ID: 6000123456}, protocol.CardActive, protocol.DecisionMatch},        // NR cell inside
	}
	in.SetLocator(tab)
	for i, s := range steps {
		// The observation names the cell only, as a network record or an
		// agent report does: ingest places it through the table.
		obs := verifier.Observation{Kind: verifier.ObservedIn, ICCID: iccid, IMEI: imei, Source: protocol.SourceRADIUS,
			Time: time.Now(), Cell: &s.cell}
		out, err := in.Observe(ctx, obs, "t1")
		if err != nil {
			t.Fatal(err)
		}
		got, err := st.Card(ctx, iccid)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.State != s.state || out.Decision != s.dec {
			t.Fatalf("step %d (cell %d): %s → %s (%s); want %s → %s", i, s.cell.ID, out.Decision, got.Status.State, out.Detail, s.dec, s.state)
		}
	}
	hist, err := st.History(ctx, iccid, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) == 0 || hist[0].Observed.Location == nil || hist[0].Observed.Location.Source != "cell" || hist[0].Observed.Cell == nil {
		t.Errorf("the history entry does not say where the card was: %+v", hist)
	}
	pending, err := st.PendingOutbox(ctx, verifier.OutboxAlert, time.Now().Add(time.Hour), 10)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range pending {
		a, err := protocol.DecodeAlert(e.Payload)
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, string(a.Type))
	}
	if strings.Join(types, ",") != "area_exit,blocked,resumed" {
		t.Errorf("alerts %v", types)
	}
}

func TestImportHandler(t *testing.T) {
	st := openStore(t)
	tab := New(st)
	h := tab.ImportHandler(slog.New(slog.DiscardHandler))
	body, err := os.ReadFile("testdata/cells.csv")
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/admin/v1/cells/import", bytes.NewReader(body)))
	var res ImportResult
	if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
		t.Fatalf("%d %s: %v", rec.Code, rec.Body, err)
	}
	if rec.Code != http.StatusOK || res.ImportStats != (ImportStats{Rows: 11, Imported: 7, Skipped: 4}) ||
		len(res.Errors) != 4 || res.Errors[0].Line != 9 || res.Errors[0].Error == "" || res.Error != "" {
		t.Errorf("answer %d %+v", rec.Code, res)
	}
	if loc, err := tab.Locate(context.Background(), &protocol.Cell{MCC: "460", MNC: "03", ID: 27446212}); err != nil || loc == nil {
		t.Errorf("imported cell not found: %v %v", loc, err)
	}

	// A failing store stops the import with 500 and says how far it got.
	rec = httptest.NewRecorder()
	New(failingRecords{}).ImportHandler(slog.New(slog.DiscardHandler)).ServeHTTP(rec,
		httptest.NewRequest(http.MethodPost, "/admin/v1/cells/import", bytes.NewReader(body)))
	res = ImportResult{}
	if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || rec.Code != http.StatusInternalServerError ||
		res.Imported != 0 || !strings.Contains(res.Error, "down") {
		t.Errorf("failing store: %d %s", rec.Code, rec.Body)
	}
}

// countingRecords counts the store reads under a table.
type countingRecords struct {
	Records
	gets int
}

func (c *countingRecords) GetRecord(ctx context.Context, ns, key string) ([]byte, error) {
	c.gets++
	return c.Records.GetRecord(ctx, ns, key)
}

// Lookups are remembered, found and not found alike, until they expire or
// an import changes the table.
func TestLocateRemembers(t *testing.T) {
	st := openStore(t)
	recs := &countingRecords{Records: st}
	tab := New(recs)
	now := time.Unix(1_800_000_000, 0)
	tab.now = func() time.Time { return now }
	ctx := context.Background()
	lte := &protocol.Cell{MCC: "460", MNC: "03", Area: 6699, ID: 27446212}
	gsm := &protocol.Cell{MCC: "460", MNC: "00", Area: 4660, ID: 10021}

	locate := func(c *protocol.Cell) *protocol.Location {
		t.Helper()
		l, err := tab.Locate(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	if locate(lte) != nil || recs.gets != 2 {
		t.Fatalf("unknown cell: %d reads, want 2 (wide key, then with its area)", recs.gets)
	}
	if locate(lte) != nil || recs.gets != 2 {
		t.Errorf("unknown cell again: %d reads, want it remembered", recs.gets)
	}
	rows := "LTE,460,3,6699,27446212,0,121.4740,31.2310,300,41,1,1700000000,1710000000,0\n" +
		"GSM,460,0,4660,10021,0,121.4800,31.2300,1200,8,1,1700000000,1710000000,-81\n"
	if _, err := tab.Import(ctx, strings.NewReader(rows), nil); err != nil {
		t.Fatal(err)
	}
	l := locate(lte)
	if l == nil || l.Lat != 31.2310 {
		t.Fatalf("after the import: %+v", l)
	}
	l.Lat = 0 // the caller's copy
	reads := recs.gets
	if l := locate(lte); l == nil || l.Lat != 31.2310 || recs.gets != reads {
		t.Errorf("remembered lookup: %+v, %d reads", l, recs.gets-reads)
	}
	if locate(gsm) == nil || recs.gets != reads+2 {
		t.Errorf("GSM cell: %d reads, want 2", recs.gets-reads)
	}
	now = now.Add(cacheTTL)
	if locate(lte) == nil || recs.gets != reads+3 {
		t.Errorf("expired lookup: %d reads in all, want the store read again", recs.gets-reads)
	}
}

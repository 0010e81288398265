package service_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/ingest"
	"github.com/cardbind/cardbind/verifier/inventory"
	"github.com/cardbind/cardbind/verifier/service"
)

// conflictingStore fails CommitAll with ErrConflict (always, or the first
// time only), as a verification racing the import would; it counts the
// calls.
type conflictingStore struct {
	verifier.Store
	always    bool
	conflicts atomic.Int32
	commitAll atomic.Int32
}

func (s *conflictingStore) CommitAll(ctx context.Context, cs []*verifier.Commit) error {
	s.commitAll.Add(1)
	if s.always || s.conflicts.Load() == 0 {
		s.conflicts.Add(1)
		return fmt.Errorf("card %s: %w", cs[0].Card.ICCID, verifier.ErrConflict)
	}
	return s.Store.CommitAll(ctx, cs)
}

// withStore returns a service over store in place of the fixture's,
// with the same tenants, clock and card A.
func (f *fixture) withStore(t *testing.T, store verifier.Store) *service.Service {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	return service.New(store, ingest.New(store, log, f.clock.now),
		service.Config{CommandKey: key, BrokerURL: func() string { return "tcp://127.0.0.1:1883" }}, log, f.clock.now)
}

func runImport(t *testing.T, svc *service.Service, file string, dryRun bool) (service.ImportSummary, []service.ImportEvent) {
	t.Helper()
	var events []service.ImportEvent
	sum, err := svc.Import(context.Background(), strings.NewReader(file), inventory.CSV, "", dryRun, func(e service.ImportEvent) {
		if e.Progress == nil {
			events = append(events, e)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return sum, events
}

const (
	cardB = protocol.ICCID("89860318640220133905")
	cardC = protocol.ICCID("89860318640220133913")
	cardD = protocol.ICCID("89860318640220133921")
)

// importFile rebinds card A (blocked by its old binding) to the phone,
// creates B bound in alert mode with a grace period, C without a
// binding, and D with a binding the service refuses (65 IMEIs, over the
// limit the parser does not check).
var importFile = "iccid,tenant,imsi,msisdn,imei,mode,grace\n" +
	string(cardA) + ",acme,460031234567890,+8613912345678," + string(imeiPh) + ",,\n" +
	string(cardB) + ",acme,460031234567891,," + string(imeiGW) + ",alert,30s\n" +
	string(cardC) + ",acme,460031234567892,,,,\n" +
	string(cardD) + ",acme,460031234567893,," + strings.Repeat(string(imeiGW)+";", 64) + string(imeiGW) + ",,\n"

// blockA binds card A to the gateway and sees it in the phone, so its
// binding blocks it.
func (f *fixture) blockA(t *testing.T) {
	t.Helper()
	if _, err := f.svc.Bind(context.Background(), "acme", cardA, service.BindSpec{IMEIs: []protocol.IMEI{imeiGW}}, "test"); err != nil {
		t.Fatal(err)
	}
	f.seen(t, imeiPh)
	if got := f.state(t); got != protocol.CardBlocked {
		t.Fatalf("card A: %s, want blocked", got)
	}
}

// snapshot is what an import leaves of a card: the card without its
// version (the card-by-card path writes inventory and binding apart) and
// its history.
type snapshot struct {
	Card    verifier.Card
	History []verifier.HistoryEntry
}

func snap(t *testing.T, store verifier.Store, iccid protocol.ICCID) snapshot {
	t.Helper()
	ctx := context.Background()
	c, err := store.Card(ctx, iccid)
	if err != nil {
		t.Fatalf("card %s: %v", iccid, err)
	}
	c.Version = 0
	h, err := store.History(ctx, iccid, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	return snapshot{Card: *c, History: h}
}

// The one-write import leaves exactly what the card-by-card path (Bind
// per card) leaves: the same cards, bindings, states, history entries
// and resume enforcement.
func TestImportBatchMatchesCardByCard(t *testing.T) {
	ctx := context.Background()
	fast, slow := newFixture(t), newFixture(t)
	fast.blockA(t)
	slow.blockA(t)
	slowStore := &conflictingStore{Store: slow.store, always: true}
	slowSvc := slow.withStore(t, slowStore)
	fast.clock.advance(time.Minute)
	slow.clock.advance(time.Minute)

	fsum, fev := runImport(t, fast.svc, importFile, false)
	ssum, sev := runImport(t, slowSvc, importFile, false)
	want := service.ImportSummary{Lines: 4, Created: 3, Unchanged: 1, Bound: 2, Errors: 1}
	if fsum != want || ssum != want {
		t.Errorf("summaries: one write %+v, card by card %+v, want %+v", fsum, ssum, want)
	}
	if len(fev) != 1 || fev[0].Line != 5 || !reflect.DeepEqual(fev, sev) {
		t.Errorf("line errors: one write %+v, card by card %+v, want line 5", fev, sev)
	}
	if slowStore.conflicts.Load() == 0 {
		t.Fatal("the card-by-card path was not taken")
	}
	for _, iccid := range []protocol.ICCID{cardA, cardB, cardC, cardD} {
		if f, s := snap(t, fast.store, iccid), snap(t, slow.store, iccid); !reflect.DeepEqual(f, s) {
			t.Errorf("card %s:\none write    %+v\ncard by card %+v", iccid, f, s)
		}
	}
	a := snap(t, fast.store, cardA)
	last := a.History[len(a.History)-1]
	if a.Card.Status.State != protocol.CardActive || a.Card.Binding.CreatedBy != "import" || a.Card.Binding.IMEIs[0] != imeiPh ||
		last.Enforce != verifier.EnforceResume || last.Detail != "bound by import" || last.Observed.Actor != "import" {
		t.Errorf("card A after import: %+v, last history %+v", a.Card, last)
	}
	due, err := fast.store.PendingOutbox(ctx, verifier.OutboxEnforce, fast.clock.now(), 10)
	// The block the old binding made is queued before the import's resume.
	if err != nil || len(due) != 2 || due[1].ID != fmt.Sprintf("%s-%d-resume", cardA, a.Card.Status.Seq) {
		t.Errorf("resume enforcement: %+v, %v", due, err)
	}
	b := snap(t, fast.store, cardB)
	if b.Card.Binding.Mode != verifier.ModeAlert || b.Card.Binding.Grace != 30*time.Second || b.Card.Status.State != protocol.CardActive ||
		len(b.History) != 1 || b.History[0].From != protocol.CardUnbound {
		t.Errorf("card B after import: %+v", b)
	}
	if c := snap(t, fast.store, cardC); c.Card.Binding != nil || len(c.History) != 0 {
		t.Errorf("card C (no binding columns): %+v", c)
	}
	if d := snap(t, fast.store, cardD); d.Card.Binding != nil || d.Card.IMSI != "460031234567893" {
		t.Errorf("card D (refused binding, inventory kept): %+v", d)
	}

	// Importing the same file again binds nothing twice.
	again, _ := runImport(t, fast.svc, importFile, false)
	if again != (service.ImportSummary{Lines: 4, Unchanged: 4, Errors: 1}) {
		t.Errorf("second import: %+v", again)
	}
	if h := snap(t, fast.store, cardB).History; len(h) != 1 {
		t.Errorf("second import added history: %d entries", len(h))
	}
}

// A batch whose one write conflicts is written card by card, and the
// next batch goes back to one write.
func TestImportConflictFallsBack(t *testing.T) {
	f := newFixture(t)
	st := &conflictingStore{Store: f.store}
	svc := f.withStore(t, st)
	var file strings.Builder
	file.WriteString("iccid,tenant,imei\n")
	const n = 1500 // two batches
	for i := range n {
		fmt.Fprintf(&file, "%s,acme,%s\n", protocol.WithCheckDigit(fmt.Sprintf("8986031%012d", i)),
			protocol.WithCheckDigit(fmt.Sprintf("35693803%06d", i)))
	}
	sum, events := runImport(t, svc, file.String(), false)
	if sum != (service.ImportSummary{Lines: n, Created: n, Bound: n}) || len(events) != 0 {
		t.Errorf("summary %+v, events %+v", sum, events)
	}
	if st.commitAll.Load() != 2 || st.conflicts.Load() != 1 {
		t.Errorf("CommitAll calls %d, conflicts %d; want 2 and 1", st.commitAll.Load(), st.conflicts.Load())
	}
	for _, i := range []int{0, n - 1} {
		iccid := protocol.ICCID(protocol.WithCheckDigit(fmt.Sprintf("8986031%012d", i)))
		if s := snap(t, f.store, iccid); s.Card.Binding == nil || len(s.History) != 1 {
			t.Errorf("card %d: %+v", i, s)
		}
	}
}

// A card on two lines of one batch gets each line's binding in turn,
// the last one staying.
func TestImportRepeatedCard(t *testing.T) {
	f := newFixture(t)
	file := "iccid,tenant,imei\n" +
		string(cardB) + ",acme," + string(imeiGW) + "\n" +
		string(cardB) + ",acme," + string(imeiPh) + "\n"
	sum, _ := runImport(t, f.svc, file, false)
	if sum.Bound != 2 || sum.Errors != 0 {
		t.Errorf("summary %+v", sum)
	}
	b := snap(t, f.store, cardB)
	if b.Card.Binding == nil || b.Card.Binding.IMEIs[0] != imeiPh || len(b.History) != 2 {
		t.Errorf("card B: %+v", b)
	}
}

// A dry run writes nothing and says what would change.
func TestImportDryRun(t *testing.T) {
	f := newFixture(t)
	f.blockA(t)
	before := snap(t, f.store, cardA)
	sum, events := runImport(t, f.svc, importFile, true)
	if sum != (service.ImportSummary{Lines: 4, Created: 3, Unchanged: 1, Bound: 3, DryRun: true}) {
		t.Errorf("dry run summary %+v", sum)
	}
	var changes []string
	for _, e := range events {
		changes = append(changes, fmt.Sprintf("%d %s", e.Line, e.Change))
	}
	if got := strings.Join(changes, ","); got != "3 create,4 create,5 create,2 bind,3 bind,5 bind" {
		t.Errorf("dry run changes %s", got)
	}
	if after := snap(t, f.store, cardA); !reflect.DeepEqual(before, after) {
		t.Errorf("dry run changed card A")
	}
	if _, err := f.store.Card(context.Background(), cardB); !errors.Is(err, verifier.ErrNotFound) {
		t.Errorf("dry run created card B: %v", err)
	}
}

// A card in two batches: the later line's binding stays, with one
// history entry per binding, and the progress after each batch counts
// what was written so far.
func TestImportCardInTwoBatches(t *testing.T) {
	f := newFixture(t)
	st := &countingStore{Store: f.store}
	svc := f.withStore(t, st)
	iccid := func(i int) string { return protocol.WithCheckDigit(fmt.Sprintf("8986031%012d", i)) }
	imei := func(i int) string { return protocol.WithCheckDigit(fmt.Sprintf("35693803%06d", i)) }
	var file strings.Builder
	file.WriteString("iccid,tenant,imei\n")
	const n = 1500
	for i := range n {
		if i == 1200 {
			fmt.Fprintf(&file, "%s,acme,%s\n", iccid(0), imei(999999))
			continue
		}
		fmt.Fprintf(&file, "%s,acme,%s\n", iccid(i), imei(i))
	}
	var progress []service.ImportSummary
	sum, err := svc.Import(context.Background(), strings.NewReader(file.String()), inventory.CSV, "", false, func(e service.ImportEvent) {
		if e.Progress != nil {
			progress = append(progress, *e.Progress)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := (service.ImportSummary{Lines: n, Created: n - 1, Unchanged: 1, Bound: n}); sum != want {
		t.Errorf("summary %+v, want %+v", sum, want)
	}
	if len(progress) != 2 || progress[0] != (service.ImportSummary{Lines: 1000, Created: 1000, Bound: 1000}) || progress[1] != sum {
		t.Errorf("progress %+v", progress)
	}
	s := snap(t, f.store, protocol.ICCID(iccid(0)))
	if s.Card.Binding == nil || string(s.Card.Binding.IMEIs[0]) != imei(999999) || len(s.History) != 2 {
		t.Errorf("card in both batches: %+v", s)
	}
	if st.commitAll.Load() != 2 {
		t.Errorf("CommitAll calls: %d, want 2", st.commitAll.Load())
	}
}

// countingStore counts CommitAll calls.
type countingStore struct {
	verifier.Store
	commitAll atomic.Int32
}

func (s *countingStore) CommitAll(ctx context.Context, cs []*verifier.Commit) error {
	s.commitAll.Add(1)
	return s.Store.CommitAll(ctx, cs)
}

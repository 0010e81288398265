package radius

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/engine"
	"github.com/cardbind/cardbind/verifier/geo"
	"github.com/cardbind/cardbind/verifier/ingest"
	"github.com/cardbind/cardbind/verifier/store/pebble"
)

// benchCards is an indexed in-memory card store for the benchmark (the
// test fake scans).
type benchCards struct {
	mu     sync.Mutex
	byICC  map[protocol.ICCID]verifier.Card
	byIMSI map[string]protocol.ICCID
}

func (s *benchCards) FindCard(_ context.Context, by verifier.IndexKind, v string) (*verifier.Card, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if icc, ok := s.byIMSI[v]; ok && by == verifier.ByIMSI {
		c := s.byICC[icc]
		return &c, nil
	}
	return nil, verifier.ErrNotFound
}

func (s *benchCards) Card(_ context.Context, icc protocol.ICCID) (*verifier.Card, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.byICC[icc]
	if !ok {
		return nil, verifier.ErrNotFound
	}
	return &c, nil
}

func (s *benchCards) Commit(_ context.Context, cm *verifier.Commit) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := *cm.Card
	if s.byICC[c.ICCID].Version != c.Version {
		return verifier.ErrConflict
	}
	c.Version++
	s.byICC[c.ICCID] = c
	return nil
}

// CommitLazy is Commit: in memory there is no disk to wait for.
func (s *benchCards) CommitLazy(ctx context.Context, cm *verifier.Commit) error {
	return s.Commit(ctx, cm)
}

// Sync has nothing to make durable.
func (s *benchCards) Sync(context.Context) error { return nil }

// countingObserver is the in-memory observer: it counts.
type countingObserver struct{ n atomic.Int64 }

func (o *countingObserver) ObserveLazy(context.Context, verifier.Observation, string) (engine.Outcome, error) {
	o.n.Add(1)
	return engine.Outcome{}, nil
}

// BenchmarkAccounting measures accounting records processed per second
// through the UDP server (decode, card lookup, observation, address
// commit, Accounting-Response received by the sender) next to the raw
// receive rate of the same datagrams by a plain UDPConn read loop, on
// loopback. The sender keeps at most benchWindow requests outstanding,
// the same way in both runs, so that the socket buffer never overflows.
func BenchmarkAccounting(b *testing.B) {
	const cards, distinct = 1024, 1 << 14
	store := &benchCards{byICC: map[protocol.ICCID]verifier.Card{}, byIMSI: map[string]protocol.ICCID{}}
	for i := range cards {
		icc := protocol.ICCID(fmt.Sprintf("89860300000000%05d", i))
		imsi := fmt.Sprintf("4601100000%05d", i)
		store.byICC[icc] = verifier.Card{ICCID: icc, Tenant: "t", IMSI: protocol.IMSI(imsi), Version: 1}
		store.byIMSI[imsi] = icc
	}
	packets := make([][]byte, distinct)
	for i := range packets {
		rec := &Record{
			Status: InterimUpdate, SessionID: fmt.Sprintf("bench-%d", i), NASIdentifier: "bench-pgw",
			IMSI: protocol.IMSI(fmt.Sprintf("4601100000%05d", i%cards)), MSISDN: protocol.MSISDN(fmt.Sprintf("+86139%08d", i%cards)),
			IMEISV: "3548820912345601", IPv4: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
			Location: &UserLocation{Type: LocationTAIECGI, TAI: &TAI{PLMN{"460", "11"}, 0x5a1b}, ECGI: &ECGI{PLMN{"460", "11"}, uint32(i)}},
		}
		var err error
		if packets[i], err = EncodeRequest(rec, byte(i), []byte(testSecret)); err != nil {
			b.Fatal(err)
		}
	}

	b.Run("raw-udp-read", func(b *testing.B) {
		conn := listenLoopback(b)
		tokens := make(chan struct{}, benchWindow)
		go func() {
			buf := make([]byte, 4096)
			for {
				if _, _, err := conn.ReadFromUDPAddrPort(buf); err != nil {
					return
				}
				<-tokens
			}
		}()
		blast(b, conn.LocalAddr().String(), packets, tokens, false)
		conn.Close()
	})

	b.Run("server", func(b *testing.B) {
		obs := &countingObserver{}
		cl, _ := ParseClient("127.0.0.1", testSecret)
		srv, err := New(Config{Clients: []Client{cl}}, store, obs, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		conn := listenLoopback(b)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { srv.Serve(ctx, conn); close(done) }()
		tokens := make(chan struct{}, benchWindow)
		blast(b, conn.LocalAddr().String(), packets, tokens, true)
		cancel()
		<-done
		if s := srv.Stats(); s.Failed != 0 || s.Malformed != 0 || s.UnknownCard != 0 || s.Duplicates != 0 {
			b.Errorf("stats = %+v", s)
		}
	})

	// The server over what the verifier runs: the real ingest and engine
	// on a Pebble store, every card bound to the record's IMEI and placed
	// through the cell table. Each record is a synced observation commit
	// and a synced address commit.
	b.Run("server-ingest-pebble", func(b *testing.B) {
		st, err := pebble.Open(b.TempDir(), pebble.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		ctx := context.Background()
		inv := make([]verifier.Card, 0, cards)
		for _, c := range store.byICC {
			inv = append(inv, verifier.Card{ICCID: c.ICCID, Tenant: c.Tenant, IMSI: c.IMSI})
		}
		if _, _, err := st.UpsertInventory(ctx, inv); err != nil {
			b.Fatal(err)
		}
		for _, c := range inv {
			cur, err := st.Card(ctx, c.ICCID)
			if err != nil {
				b.Fatal(err)
			}
			cur.Binding = &verifier.Binding{IMEIs: []protocol.IMEI{"354882091234560"}, Mode: verifier.ModeBlock, AutoResume: true}
			cur.Status.State = protocol.CardActive
			if err := st.Commit(ctx, &verifier.Commit{Card: cur}); err != nil {
				b.Fatal(err)
			}
		}
		cells := geo.New(st)
		pos, _ := json.Marshal(geo.Position{Lat: 31.2, Lon: 121.4, RangeM: 500})
		recs := make([]verifier.Record, distinct)
		for i := range recs {
			recs[i] = verifier.Record{Key: geo.Key{Wide: true, MCC: 460, MNC: 11, Cell: uint64(i)}.String(), Value: pos}
		}
		if err := st.PutRecords(ctx, geo.Namespace, recs); err != nil {
			b.Fatal(err)
		}
		in := ingest.New(st, slog.New(slog.DiscardHandler), time.Now)
		in.SetLocator(cells)
		cl, _ := ParseClient("127.0.0.1", testSecret)
		srv, err := New(Config{Clients: []Client{cl}, Workers: benchWindow}, st, in, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		conn := listenLoopback(b)
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { srv.Serve(ctx, conn); close(done) }()
		tokens := make(chan struct{}, benchWindow)
		blast(b, conn.LocalAddr().String(), packets, tokens, true)
		cancel()
		<-done
		if s := srv.Stats(); s.Failed != 0 || s.Malformed != 0 || s.UnknownCard != 0 || s.Ignored != 0 {
			b.Errorf("stats = %+v", s)
		}
		// The first packet names card 0.
		if c, err := st.Card(context.Background(), protocol.ICCID(fmt.Sprintf("89860300000000%05d", 0))); err != nil || c.Status.LastLocation == nil || c.Status.State != protocol.CardActive {
			b.Errorf("card after the run: %+v %v", c, err)
		}
	})
}

const benchWindow = 64

func listenLoopback(b *testing.B) *net.UDPConn {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	return conn
}

// blast sends b.N datagrams, cycling through packets, holding a token per
// outstanding one; the receiver (or, with answers, the sender's reader of
// Accounting-Responses) returns them. It reports records/s and, if any
// datagram was lost, how many.
func blast(b *testing.B, addr string, packets [][]byte, tokens chan struct{}, answers bool) {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if answers {
		go func() {
			buf := make([]byte, 4096)
			for {
				if _, err := conn.Read(buf); err != nil {
					return
				}
				<-tokens
			}
		}()
	}
	lost := 0
	b.ResetTimer()
	for i := range b.N {
		select {
		case tokens <- struct{}{}:
		case <-time.After(time.Second):
			lost++ // a datagram or its answer was lost: free its slot
			<-tokens
			tokens <- struct{}{}
		}
		if _, err := conn.Write(packets[i%len(packets)]); err != nil {
			b.Fatal(err)
		}
	}
	// Wait for the last ones.
	for range benchWindow {
		select {
		case tokens <- struct{}{}:
		case <-time.After(time.Second):
			lost++
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	if lost > 0 {
		b.ReportMetric(float64(lost), "lost")
	}
}

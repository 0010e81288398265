package radius

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	lr "layeh.com/radius"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

const testSecret = "s3cret"

var testCard = verifier.Card{ICCID: "8986031234567890123", Tenant: "t1", IMSI: "460110123456789", MSISDN: "+8613912345678"}

type harness struct {
	t     *testing.T
	srv   *Server
	addr  *net.UDPAddr
	cards *fakeCards
	obs   *fakeObserver
	nas   *net.UDPConn // the client socket: one source port, as a NAS has
}

// newHarness serves on loopback with fakes; cfg may adjust the config.
// Cleanup stops the server and checks that Serve returned.
func newHarness(t *testing.T, cfg func(*Config), cards ...verifier.Card) *harness {
	t.Helper()
	fc := newFakeCards(cards...)
	obs := &fakeObserver{cards: fc}
	h := serve(t, cfg, fc, obs)
	h.obs = obs
	return h
}

// serve runs a server over cards and observer on loopback.
func serve(t *testing.T, cfg func(*Config), cards *fakeCards, observer Observer) *harness {
	t.Helper()
	h := &harness{t: t, cards: cards}
	cl, err := ParseClient("127.0.0.0/8", testSecret)
	if err != nil {
		t.Fatal(err)
	}
	c := Config{Clients: []Client{cl}, Workers: 4, Timeout: time.Second}
	if cfg != nil {
		cfg(&c)
	}
	h.srv, err = New(c, cards, observer, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	h.addr = conn.LocalAddr().(*net.UDPAddr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.srv.Serve(ctx, conn) }()
	h.nas, err = net.DialUDP("udp", nil, h.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.nas.Close()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(3 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return h
}

// exchange sends a datagram from the NAS socket and returns the answer, or
// nil when none came within wait.
func (h *harness) exchange(req []byte, wait time.Duration) []byte {
	h.t.Helper()
	if _, err := h.nas.Write(req); err != nil {
		h.t.Fatal(err)
	}
	h.nas.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4096)
	n, err := h.nas.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// answered checks that resp is an authentic Accounting-Response to req.
func answered(t *testing.T, resp, req []byte) {
	t.Helper()
	if resp == nil {
		t.Fatal("no answer")
	}
	if lr.Code(resp[0]) != lr.CodeAccountingResponse || resp[1] != req[1] || !lr.IsAuthenticResponse(resp, req, []byte(testSecret)) {
		t.Fatalf("answer % x is not an authentic Accounting-Response to the request", resp)
	}
}

// waitStats waits until the server's stats satisfy ok.
func (h *harness) waitStats(ok func(Stats) bool) Stats {
	h.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		s := h.srv.Stats()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("stats never matched: %+v", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) sender() *Sender {
	return &Sender{Addr: h.addr.String(), Secret: []byte(testSecret), NASIdentifier: "pgw-test", Retry: 200 * time.Millisecond, Timeout: 3 * time.Second}
}

func startRecord() *Record {
	return &Record{
		Status: Start, SessionID: "s-1", IMSI: testCard.IMSI, MSISDN: testCard.MSISDN,
		IMEISV: "3548820912345601", IPv4: netip.MustParseAddr("10.45.0.7"), IPv6: netip.MustParsePrefix("2001:db8:7::/64"),
		Location: &UserLocation{Type: LocationTAIECGI, TAI: &TAI{PLMN{"460", "11"}, 0x5a1b}, ECGI: &ECGI{PLMN{"460", "11"}, 0x1a2b301}},
	}
}

func TestServerStartObservesAndSetsAddresses(t *testing.T) {
	h := newHarness(t, nil, testCard)
	if err := h.sender().Send(context.Background(), startRecord()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	obs := h.obs.observations()
	if len(obs) != 1 {
		t.Fatalf("observations = %+v, want 1", obs)
	}
	o := obs[0]
	if o.Kind != verifier.ObservedIn || o.ICCID != testCard.ICCID || o.IMEI != "354882091234560" ||
		o.Source != protocol.SourceRADIUS || o.Ref != "radius:pgw-test/s-1/Start" || o.Time.IsZero() {
		t.Errorf("observation = %+v", o)
	}
	if want := (protocol.Cell{MCC: "460", MNC: "11", Area: 0x5a1b, ID: 0x1a2b301}); o.Cell == nil || *o.Cell != want {
		t.Errorf("observation cell = %+v, want %+v", o.Cell, want)
	}
	h.obs.mu.Lock()
	tenant := h.obs.tens[0]
	h.obs.mu.Unlock()
	if tenant != "t1" {
		t.Errorf("observed for tenant %q, want t1", tenant)
	}
	c := h.cards.get(testCard.ICCID)
	if c.IPv4 != netip.MustParseAddr("10.45.0.7") || c.IPv6 != netip.MustParsePrefix("2001:db8:7::/64") {
		t.Errorf("card addresses = %v %v", c.IPv4, c.IPv6)
	}
	if c.Status.LastIMEI != "354882091234560" {
		t.Error("the address update overwrote the observation's write")
	}
	s := h.srv.Stats()
	want := Stats{Received: 1, Answered: 1, Observations: 1, AddressUpdates: 1}
	if s != want {
		t.Errorf("stats = %+v, want %+v", s, want)
	}
}

func TestServerStopClearsAddresses(t *testing.T) {
	card := testCard
	card.IPv4 = netip.MustParseAddr("10.45.0.7")
	card.IPv6 = netip.MustParsePrefix("2001:db8:7::/64")
	h := newHarness(t, nil, card)
	stop := &Record{Status: Stop, SessionID: "s-1", IMSI: card.IMSI, IPv4: card.IPv4}
	if err := h.sender().Send(context.Background(), stop); err != nil {
		t.Fatalf("Send: %v", err)
	}
	c := h.cards.get(card.ICCID)
	if c.IPv4.IsValid() {
		t.Errorf("IPv4 after Stop = %v, want none", c.IPv4)
	}
	if c.IPv6 != card.IPv6 {
		t.Errorf("IPv6 after a Stop naming only IPv4 = %v, want it kept", c.IPv6)
	}
	if n := len(h.obs.observations()); n != 0 {
		t.Errorf("a Stop without IMEISV made %d observations", n)
	}
	// A Stop with the equipment and the cell is no sighting either: it
	// tells where the card was.
	full := startRecord()
	full.Status, full.SessionID = Stop, "s-3"
	if err := h.sender().Send(context.Background(), full); err != nil {
		t.Fatal(err)
	}
	if n := len(h.obs.observations()); n != 0 {
		t.Errorf("a Stop with IMEISV and location made %d observations", n)
	}
	// A Stop naming no address ends the session: both go.
	if err := h.sender().Send(context.Background(), &Record{Status: Stop, SessionID: "s-2", MSISDN: card.MSISDN}); err != nil {
		t.Fatal(err)
	}
	if c := h.cards.get(card.ICCID); c.IPv6.IsValid() {
		t.Errorf("IPv6 after a bare Stop = %v", c.IPv6)
	}
}

// TestServerLocationOnly: a record without IMEISV is still a sighting when
// it names the serving cell (for area limits), and none when it names only
// an area.
func TestServerLocationOnly(t *testing.T) {
	tests := []struct {
		name string
		loc  *UserLocation
		want *protocol.Cell
	}{
		{"ECGI", &UserLocation{Type: LocationECGI, ECGI: &ECGI{PLMN{"460", "03"}, 27446212}},
			&protocol.Cell{MCC: "460", MNC: "03", ID: 27446212}},
		{"CGI", &UserLocation{Type: LocationCGI, CGI: &CGI{PLMN{"460", "00"}, 4660, 10021}},
			&protocol.Cell{MCC: "460", MNC: "00", Area: 4660, ID: 10021}},
		{"TAI alone", &UserLocation{Type: LocationTAI, TAI: &TAI{PLMN{"460", "03"}, 6699}}, nil},
		{"none", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil, testCard)
			rec := &Record{Status: InterimUpdate, SessionID: "s-1", IMSI: testCard.IMSI, Location: tt.loc}
			if err := h.sender().Send(context.Background(), rec); err != nil {
				t.Fatal(err)
			}
			obs := h.obs.observations()
			switch {
			case tt.want == nil && len(obs) != 0:
				t.Errorf("observations = %+v, want none", obs)
			case tt.want != nil && (len(obs) != 1 || obs[0].IMEI != "" || obs[0].Cell == nil || *obs[0].Cell != *tt.want):
				t.Errorf("observations = %+v, want one in cell %+v", obs, tt.want)
			}
		})
	}
}

func TestAddresses(t *testing.T) {
	v4a, v4b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	v6a := netip.MustParsePrefix("2001:db8:1::/64")
	tests := []struct {
		name string
		v4   netip.Addr
		v6   netip.Prefix
		rec  Record
		w4   netip.Addr
		w6   netip.Prefix
	}{
		{"start sets", netip.Addr{}, netip.Prefix{}, Record{Status: Start, IPv4: v4a, IPv6: v6a}, v4a, v6a},
		{"interim moves", v4a, v6a, Record{Status: InterimUpdate, IPv4: v4b}, v4b, v6a},
		{"start without addresses keeps", v4a, v6a, Record{Status: Start}, v4a, v6a},
		{"stop clears named", v4a, v6a, Record{Status: Stop, IPv4: v4a}, netip.Addr{}, v6a},
		{"stop of an older session keeps the new address", v4b, v6a, Record{Status: Stop, IPv4: v4a}, v4b, v6a},
		{"bare stop clears all", v4a, v6a, Record{Status: Stop}, netip.Addr{}, netip.Prefix{}},
		{"stop naming v6 only", v4a, v6a, Record{Status: Stop, IPv6: v6a}, v4a, netip.Prefix{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g4, g6 := addresses(tt.v4, tt.v6, &tt.rec)
			if g4 != tt.w4 || g6 != tt.w6 {
				t.Errorf("addresses = %v %v, want %v %v", g4, g6, tt.w4, tt.w6)
			}
		})
	}
}

func TestServerDropsWrongSecret(t *testing.T) {
	h := newHarness(t, nil, testCard)
	req, err := EncodeRequest(startRecord(), 1, []byte("not-the-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if resp := h.exchange(req, 300*time.Millisecond); resp != nil {
		t.Fatalf("answered a request with a bad authenticator: % x", resp)
	}
	s := h.waitStats(func(s Stats) bool { return s.BadAuthenticator == 1 })
	if s.Answered != 0 || len(h.obs.observations()) != 0 || h.cards.get(testCard.ICCID).IPv4.IsValid() {
		t.Errorf("a request with a bad authenticator was acted on: %+v", s)
	}
}

func TestServerDropsUnknownClient(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		cl, _ := ParseClient("10.0.0.0/8", testSecret)
		c.Clients = []Client{cl}
	}, testCard)
	req, _ := EncodeRequest(startRecord(), 1, []byte(testSecret))
	if resp := h.exchange(req, 300*time.Millisecond); resp != nil {
		t.Fatalf("answered an unknown client: % x", resp)
	}
	s := h.waitStats(func(s Stats) bool { return s.UnknownClient == 1 })
	if s.Answered != 0 || len(h.obs.observations()) != 0 {
		t.Errorf("an unknown client's request was acted on: %+v", s)
	}
}

func TestServerDuplicateProcessedOnce(t *testing.T) {
	h := newHarness(t, nil, testCard)
	req, _ := EncodeRequest(startRecord(), 42, []byte(testSecret))
	first := h.exchange(req, 2*time.Second)
	answered(t, first, req)
	second := h.exchange(req, 2*time.Second)
	answered(t, second, req)
	if !bytes.Equal(first, second) {
		t.Errorf("answers differ: % x / % x", first, second)
	}
	if n := len(h.obs.observations()); n != 1 {
		t.Errorf("observations = %d, want 1", n)
	}
	if s := h.srv.Stats(); s.Duplicates != 1 || s.Answered != 2 || s.Observations != 1 {
		t.Errorf("stats = %+v", s)
	}
	// The same record with another identifier is a new request.
	req2, _ := EncodeRequest(startRecord(), 43, []byte(testSecret))
	answered(t, h.exchange(req2, 2*time.Second), req2)
	if n := len(h.obs.observations()); n != 2 {
		t.Errorf("observations after a new request = %d, want 2", n)
	}
}

func TestServerTransientFailureUnanswered(t *testing.T) {
	tests := []struct {
		name    string
		fail    func(h *harness)
		wantObs int
	}{
		{"find card", func(h *harness) { h.cards.mu.Lock(); h.cards.failFind = 1; h.cards.mu.Unlock() }, 1},
		{"observe", func(h *harness) { h.obs.mu.Lock(); h.obs.fail = 1; h.obs.mu.Unlock() }, 1},
		// The observation is applied, the address commit fails; the
		// retransmission applies the observation again (the engine
		// finds nothing new) and stores the addresses.
		{"store addresses", func(h *harness) {
			h.obs.mu.Lock()
			h.obs.cards = nil
			h.obs.mu.Unlock()
			h.cards.mu.Lock()
			h.cards.failCommit = 1
			h.cards.mu.Unlock()
		}, 2},
		// Everything is written but cannot be made durable: no answer,
		// and the retransmission's observation finds nothing new.
		{"sync", func(h *harness) { h.cards.mu.Lock(); h.cards.failSync = 1; h.cards.mu.Unlock() }, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil, testCard)
			tt.fail(h)
			req, _ := EncodeRequest(startRecord(), 9, []byte(testSecret))
			if resp := h.exchange(req, 300*time.Millisecond); resp != nil {
				t.Fatalf("answered although the %s failed", tt.name)
			}
			h.waitStats(func(s Stats) bool { return s.Failed == 1 })
			// The NAS retransmits the same datagram.
			answered(t, h.exchange(req, 2*time.Second), req)
			if n := len(h.obs.observations()); n != tt.wantObs {
				t.Errorf("observations = %d, want %d", n, tt.wantObs)
			}
			if c := h.cards.get(testCard.ICCID); c.IPv4 != netip.MustParseAddr("10.45.0.7") {
				t.Errorf("IPv4 after the retransmission = %v", c.IPv4)
			}
			if s := h.srv.Stats(); s.Answered != 1 || s.Failed != 1 || s.Duplicates != 0 {
				t.Errorf("stats = %+v", s)
			}
			h.cards.mu.Lock()
			defer h.cards.mu.Unlock()
			if h.cards.syncs != 1 {
				t.Errorf("store synced %d times for the one answer, want 1", h.cards.syncs)
			}
		})
	}
}

func TestServerUnknownCardAnswered(t *testing.T) {
	h := newHarness(t, nil, testCard)
	rec := startRecord()
	rec.IMSI, rec.MSISDN = "460110000000000", "+8613900000000"
	if err := h.sender().Send(context.Background(), rec); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if s := h.srv.Stats(); s.UnknownCard != 1 || s.Observations != 0 || s.AddressUpdates != 0 {
		t.Errorf("stats = %+v", s)
	}
	// No identity at all counts the same way.
	if err := h.sender().Send(context.Background(), &Record{Status: Start, IMEI: "354882091234560"}); err != nil {
		t.Fatal(err)
	}
	if s := h.srv.Stats(); s.UnknownCard != 2 || len(h.obs.observations()) != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestServerFindsCardByMSISDN(t *testing.T) {
	h := newHarness(t, nil, testCard)
	for _, imsi := range []protocol.IMSI{"", "460110000000000"} {
		rec := startRecord()
		rec.IMSI = imsi
		if err := h.sender().Send(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
	if obs := h.obs.observations(); len(obs) != 2 || obs[1].ICCID != testCard.ICCID {
		t.Errorf("observations = %+v", obs)
	}
}

func TestServerMalformedAnsweredNotActedOn(t *testing.T) {
	h := newHarness(t, nil, testCard)
	req := request(3, testSecret, start, imsi, g(20, "35488209123456AB"), framedIP)
	answered(t, h.exchange(req, 2*time.Second), req)
	s := h.srv.Stats()
	if s.Malformed != 1 || len(h.obs.observations()) != 0 || h.cards.get(testCard.ICCID).IPv4.IsValid() {
		t.Errorf("malformed request acted on: %+v", s)
	}
	// A datagram that is not an Accounting-Request gets no answer.
	access := append([]byte(nil), req...)
	access[0] = byte(lr.CodeAccessRequest)
	if resp := h.exchange(access, 300*time.Millisecond); resp != nil {
		t.Error("answered an Access-Request")
	}
	h.waitStats(func(s Stats) bool { return s.Malformed == 2 })
}

func TestServerSkippedAttributesCounted(t *testing.T) {
	h := newHarness(t, nil, testCard)
	req := request(4, testSecret, start, imsi, imeisv, g(22, unhex("82 64f011")))
	answered(t, h.exchange(req, 2*time.Second), req)
	if s := h.srv.Stats(); s.SkippedAttributes != 1 || s.Observations != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func TestServerAccountingOnIgnored(t *testing.T) {
	h := newHarness(t, nil, testCard)
	if err := h.sender().Send(context.Background(), &Record{Status: AccountingOn}); err != nil {
		t.Fatal(err)
	}
	if s := h.srv.Stats(); s.Ignored != 1 || s.Answered != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func TestSenderNoAnswer(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s := &Sender{Addr: conn.LocalAddr().String(), Secret: []byte("x"), Retry: 50 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = s.Send(ctx, &Record{Status: Start})
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Send to a silent server = %v, want ErrNoAnswer", err)
	}
	// It retransmitted the same datagram.
	buf := make([]byte, 4096)
	var got [][]byte
	conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	for {
		n, err := conn.Read(buf)
		if err != nil {
			break
		}
		got = append(got, append([]byte(nil), buf[:n]...))
	}
	if len(got) < 2 || !bytes.Equal(got[0], got[1]) {
		t.Errorf("sender sent %d datagrams, want identical retransmissions", len(got))
	}
}

func TestParseClientAndValidate(t *testing.T) {
	tests := []struct {
		in, secret string
		want       string
		wantErr    bool
	}{
		{"10.0.0.7", "s", "10.0.0.7/32", false},
		{"10.0.0.0/24", "s", "10.0.0.0/24", false},
		{"10.0.0.9/24", "s", "10.0.0.0/24", false},
		{"2001:db8::1", "s", "2001:db8::1/128", false},
		{"pgw.example", "s", "", true},
		{"10.0.0.7", "", "", true},
	}
	for _, tt := range tests {
		c, err := ParseClient(tt.in, tt.secret)
		if (err != nil) != tt.wantErr || (err == nil && c.Prefix.String() != tt.want) {
			t.Errorf("ParseClient(%q) = %v, %v; want %s (error %v)", tt.in, c.Prefix, err, tt.want, tt.wantErr)
		}
	}
	cl, _ := ParseClient("10.0.0.1", "s")
	for _, c := range []Config{
		{},
		{Clients: []Client{{Secret: []byte("s")}}},
		{Clients: []Client{{Prefix: cl.Prefix}}},
		{Clients: []Client{cl}, Workers: -1},
		{Clients: []Client{cl}, Timeout: time.Minute, DedupTTL: time.Second},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", c)
		}
	}
}

func TestSecretMostSpecificClient(t *testing.T) {
	wide, _ := ParseClient("10.0.0.0/8", "wide")
	narrow, _ := ParseClient("10.1.2.0/24", "narrow")
	s, err := New(Config{Clients: []Client{wide, narrow}}, newFakeCards(), &fakeObserver{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{"10.1.2.3": "narrow", "10.9.9.9": "wide", "192.0.2.1": "", "::ffff:10.1.2.3": "narrow"} {
		if got := string(s.secret(netip.MustParseAddr(addr).Unmap())); got != want {
			t.Errorf("secret(%s) = %q, want %q", addr, got, want)
		}
	}
}

func TestDedup(t *testing.T) {
	t0 := time.Unix(1000, 0)
	d := newDedup(2, time.Minute)
	k := func(id byte) requestKey { return requestKey{id: id} }
	if st, _ := d.begin(k(1), t0); st != dedupNew {
		t.Fatalf("first begin = %v", st)
	}
	if st, _ := d.begin(k(1), t0); st != dedupInFlight {
		t.Fatalf("begin while in flight = %v", st)
	}
	d.finish(k(1), []byte("ans"))
	if st, resp := d.begin(k(1), t0); st != dedupDone || string(resp) != "ans" {
		t.Fatalf("begin after finish = %v %q", st, resp)
	}
	d.begin(k(2), t0)
	d.abort(k(2))
	if st, _ := d.begin(k(2), t0); st != dedupNew {
		t.Fatalf("begin after abort = %v", st)
	}
	d.begin(k(3), t0.Add(time.Second)) // over capacity: the oldest (1) goes
	if st, _ := d.begin(k(1), t0.Add(time.Second)); st != dedupNew {
		t.Errorf("oldest entry not evicted at capacity")
	}
	if st, _ := d.begin(k(9), t0.Add(2*time.Minute)); st != dedupNew || d.len() != 1 {
		t.Errorf("entries not expired: %d left", d.len())
	}
	if !reflect.DeepEqual(d.m[k(9)].resp, []byte(nil)) {
		t.Error("new entry has an answer")
	}
}

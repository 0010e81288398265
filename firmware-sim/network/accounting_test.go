package network

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	lr "layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
)

const acctSecret = "sim-secret"

// acctServer is a RADIUS accounting server on loopback UDP that records
// what it receives. It answers every authentic request, except the first
// drop ones.
type acctServer struct {
	t    *testing.T
	conn *net.UDPConn

	mu       sync.Mutex
	drop     int
	received []*lr.Packet // every authentic datagram, retransmissions too
	raw      [][]byte
	got      chan *lr.Packet
}

func newAcctServer(t *testing.T, drop int) *acctServer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &acctServer{t: t, conn: conn, drop: drop, got: make(chan *lr.Packet, 100)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			b := bytes.Clone(buf[:n])
			if !lr.IsAuthenticRequest(b, []byte(acctSecret)) {
				continue
			}
			p, err := lr.Parse(b, []byte(acctSecret))
			if err != nil {
				t.Errorf("server: parse: %v", err)
				continue
			}
			s.mu.Lock()
			s.received = append(s.received, p)
			s.raw = append(s.raw, b)
			dropIt := s.drop > 0
			if dropIt {
				s.drop--
			}
			s.mu.Unlock()
			if dropIt {
				continue
			}
			resp, err := p.Response(lr.CodeAccountingResponse).Encode()
			if err != nil {
				t.Errorf("server: encode answer: %v", err)
				continue
			}
			_, _ = conn.WriteToUDP(resp, from)
			s.got <- p
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return s
}

func (s *acctServer) addr() string { return s.conn.LocalAddr().String() }

// next waits for the next answered request.
func (s *acctServer) next(t *testing.T) *lr.Packet {
	t.Helper()
	select {
	case p := <-s.got:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no accounting request arrived")
		return nil
	}
}

// vsas returns the 3GPP sub-attributes of p by type.
func vsas(t *testing.T, p *lr.Packet) map[byte][]byte {
	t.Helper()
	out := map[byte][]byte{}
	for _, a := range p.Attributes {
		if a.Type != rfc2865.VendorSpecific_Type {
			continue
		}
		if len(a.Attribute) < 6 || binary.BigEndian.Uint32(a.Attribute) != vendor3GPP {
			t.Errorf("vendor-specific attribute %x is not one 3GPP sub-attribute", a.Attribute)
			continue
		}
		sub := a.Attribute[4:]
		if int(sub[1]) != len(sub) {
			t.Errorf("sub-attribute %d length %d, carries %d octets", sub[0], sub[1], len(sub))
		}
		out[sub[0]] = sub[2:]
	}
	return out
}

func newAccounting(t *testing.T, addr string, cfg AccountingConfig) *Accounting {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg.Addr, cfg.Secret = addr, []byte(acctSecret)
	a, err := NewAccounting(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); a.Wait() })
	return a
}

func status(p *lr.Packet) rfc2866.AcctStatusType { return rfc2866.AcctStatusType_Get(p) }

// A session's accounting: Start with every attribute on attach, Interim
// while attached, Stop with the cause when it ends.
func TestAccountingSession(t *testing.T) {
	srv := newAcctServer(t, 0)
	acct := newAccounting(t, srv.addr(), AccountingConfig{Interim: 150 * time.Millisecond, NASIdentifier: "pgw-test"})
	n := New(Options{Sessions: acct})
	ctx := t.Context()
	if _, _, err := n.Register(ctx, CardSpec{ICCID: iccid(1), IMSI: imsi(1), MSISDN: "+8613800000001"}); err != nil {
		t.Fatal(err)
	}
	cell := &Cell{MCC: "460", MNC: "03", TAC: 0x1a2b, ECI: 0x01a2b3c4}
	res, err := n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: imei(1), Cell: cell})
	if err != nil || res.Result != ResultRegistered {
		t.Fatalf("attach: %+v %v", res, err)
	}

	start := srv.next(t)
	if got := status(start); got != rfc2866.AcctStatusType_Value_Start {
		t.Fatalf("first request is %v, want Start", got)
	}
	sessionID := rfc2866.AcctSessionID_GetString(start)
	if sessionID == "" {
		t.Error("Start has no Acct-Session-Id")
	}
	if got := rfc2865.NASIdentifier_GetString(start); got != "pgw-test" {
		t.Errorf("NAS-Identifier = %q", got)
	}
	if got := rfc2865.CallingStationID_GetString(start); got != "8613800000001" {
		t.Errorf("Calling-Station-Id = %q, want the MSISDN digits", got)
	}
	if got := rfc2865.FramedIPAddress_Get(start); got.String() != "10.64.0.1" {
		t.Errorf("Framed-IP-Address = %v, want the address the network assigned", got)
	}
	v := vsas(t, start)
	want := map[byte]string{
		vsaIMSI:         imsi(1),
		vsaIMEISV:       imei(1)[:14] + "01",
		vsaSGSNMCCMNC:   "46003",
		vsaRATType:      "\x06",
		vsaUserLocation: "\x82" + "\x64\xf0\x30" + "\x1a\x2b" + "\x64\xf0\x30" + "\x01\xa2\xb3\xc4",
	}
	for typ, w := range want {
		if got := string(v[typ]); got != w {
			t.Errorf("3GPP attribute %d = %q, want %q", typ, got, w)
		}
	}

	interim := srv.next(t)
	if got := status(interim); got != rfc2866.AcctStatusType_Value_InterimUpdate {
		t.Fatalf("second request is %v, want Interim-Update", got)
	}
	if rfc2866.AcctSessionID_GetString(interim) != sessionID {
		t.Error("Interim-Update names another session")
	}

	if _, err := n.Block(ctx, iccid(1), "test"); err != nil {
		t.Fatal(err)
	}
	var stop *lr.Packet
	for stop == nil {
		if p := srv.next(t); status(p) == rfc2866.AcctStatusType_Value_Stop {
			stop = p
		}
	}
	if rfc2866.AcctSessionID_GetString(stop) != sessionID {
		t.Error("Stop names another session")
	}
	if got := rfc2866.AcctTerminateCause_Get(stop); got != rfc2866.AcctTerminateCause_Value_AdminReset {
		t.Errorf("Stop after a block: cause %v, want Admin-Reset", got)
	}

	// Resumed, the card attaches in another device without a cell: a new
	// session, the home network as serving network, no location; then a
	// detach stops it as User-Request.
	if _, err := n.Resume(ctx, iccid(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: imei(2) + "7"}); err != nil {
		t.Fatal(err)
	}
	start2 := srv.next(t)
	if status(start2) != rfc2866.AcctStatusType_Value_Start || rfc2866.AcctSessionID_GetString(start2) == sessionID {
		t.Fatalf("after resume: %v of session %q, want Start of a new session", status(start2), rfc2866.AcctSessionID_GetString(start2))
	}
	v2 := vsas(t, start2)
	if got := string(v2[vsaIMEISV]); got != imei(2)+"7" {
		t.Errorf("16-digit IMEISV sent as %q", got)
	}
	if _, ok := v2[vsaUserLocation]; ok {
		t.Error("location sent for an attach without a cell")
	}
	if got := string(v2[vsaSGSNMCCMNC]); got != "46003" {
		t.Errorf("serving network without a cell = %q, want the IMSI's", got)
	}
	if _, err := n.Detach(ctx, iccid(1), ""); err != nil {
		t.Fatal(err)
	}
	for {
		p := srv.next(t)
		if status(p) != rfc2866.AcctStatusType_Value_Stop {
			continue
		}
		if got := rfc2866.AcctTerminateCause_Get(p); got != rfc2866.AcctTerminateCause_Value_UserRequest {
			t.Errorf("Stop after detach: cause %v, want User-Request", got)
		}
		break
	}
	if s := acct.Stats(); s.Dropped.Load() != 0 || s.Retransmits.Load() != 0 {
		t.Errorf("dropped %d, retransmitted %d; want none", s.Dropped.Load(), s.Retransmits.Load())
	}
}

// Unanswered requests are sent again, unchanged, until answered.
func TestAccountingRetransmits(t *testing.T) {
	srv := newAcctServer(t, 2)
	acct := newAccounting(t, srv.addr(), AccountingConfig{Retry: 50 * time.Millisecond})
	acct.SessionStarted(Session{ID: "s1", ICCID: iccid(1), IMSI: imsi(1), IMEI: imei(1), IP: "10.64.0.9", Started: time.Now()})
	if p := srv.next(t); status(p) != rfc2866.AcctStatusType_Value_Start {
		t.Fatalf("got %v, want Start", status(p))
	}
	srv.mu.Lock()
	raw := srv.raw
	srv.mu.Unlock()
	if len(raw) != 3 {
		t.Fatalf("server saw %d datagrams, want 3 (two dropped, one answered)", len(raw))
	}
	for i, r := range raw[1:] {
		if !bytes.Equal(r, raw[0]) {
			t.Errorf("retransmission %d differs from the first datagram:\n%s\n%s", i+1, hex.EncodeToString(r), hex.EncodeToString(raw[0]))
		}
	}
	if got := acct.Stats().Retransmits.Load(); got != 2 {
		t.Errorf("Retransmits = %d, want 2", got)
	}
	waitFor(t, "the answer counted", func() bool { return acct.Stats().Answered.Load() == 1 })
}

// waitFor polls cond until it holds, for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A server with another secret never gives an authentic answer: the
// request is dropped after GiveUp, and the Stop still follows.
func TestAccountingGivesUp(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			p, err := lr.Parse(buf[:n], []byte("other"))
			if err != nil {
				continue
			}
			if resp, err := p.Response(lr.CodeAccountingResponse).Encode(); err == nil {
				_, _ = conn.WriteToUDP(resp, from)
			}
		}
	}()
	acct := newAccounting(t, conn.LocalAddr().String(), AccountingConfig{Retry: 20 * time.Millisecond, GiveUp: 150 * time.Millisecond})
	s := Session{ID: "s1", ICCID: iccid(1), IMSI: imsi(1), IMEI: imei(1), IP: "10.64.0.9", Started: time.Now()}
	acct.SessionStarted(s)
	acct.SessionStopped(s)
	waitFor(t, "Start and Stop dropped", func() bool { return acct.Stats().Dropped.Load() == 2 })
	if got := acct.Stats().Answered.Load(); got != 0 {
		t.Errorf("Answered = %d with a wrong secret", got)
	}
}

func TestEncodePLMNAndULI(t *testing.T) {
	tests := []struct {
		mcc, mnc string
		want     string // hex
		wantErr  bool
	}{
		{"460", "03", "64f030", false},
		{"001", "01", "00f110", false},
		{"310", "410", "130014", false},
		{"46", "03", "", true},
		{"460", "0x", "", true},
	}
	for _, tt := range tests {
		got, err := encodePLMN(tt.mcc, tt.mnc)
		if (err != nil) != tt.wantErr {
			t.Errorf("encodePLMN(%s, %s): err %v", tt.mcc, tt.mnc, err)
			continue
		}
		if err == nil && hex.EncodeToString(got[:]) != tt.want {
			t.Errorf("encodePLMN(%s, %s) = %x, want %s", tt.mcc, tt.mnc, got, tt.want)
		}
	}
	uli, err := encodeULI(&Cell{MCC: "310", MNC: "410", TAC: 1, ECI: 0x0fffffff})
	if err != nil || hex.EncodeToString(uli) != "82"+"130014"+"0001"+"130014"+"0fffffff" {
		t.Errorf("encodeULI = %x, %v", uli, err)
	}
}

func TestIMEISV(t *testing.T) {
	tests := []struct{ in, want string }{
		{"356938035643809", "3569380356438001"},
		{"35693803564380", "3569380356438001"},
		{"3569380356438023", "3569380356438023"},
	}
	for _, tt := range tests {
		if got := imeisv(tt.in); got != tt.want {
			t.Errorf("imeisv(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// A card's requests go out in order, each after the previous one was
// answered: the Stop of its session in one device comes before the Start
// in the next, even when the Stop needs retransmitting.
func TestAccountingOrderPerCard(t *testing.T) {
	srv := newAcctServer(t, 0)
	acct := newAccounting(t, srv.addr(), AccountingConfig{Retry: 100 * time.Millisecond})
	n := New(Options{Sessions: acct})
	ctx := t.Context()
	a, b := imei(1), imei(2)
	if _, err := n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: a}); err != nil {
		t.Fatal(err)
	}
	srv.next(t) // Start in A
	srv.mu.Lock()
	srv.drop = 1 // the Stop in A is lost once
	srv.mu.Unlock()
	for _, m := range []string{b, a} {
		if _, err := n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: m}); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"Stop " + a, "Start " + b, "Stop " + b, "Start " + a}
	for _, w := range want {
		p := srv.next(t)
		got := status(p).String() + " " + string(vsas(t, p)[vsaIMEISV])[:14]
		if got != w[:len(w)-1] {
			t.Fatalf("got %s, want %s", got, w[:len(w)-1])
		}
	}
	if acct.Stats().Retransmits.Load() != 1 {
		t.Errorf("Retransmits = %d, want 1", acct.Stats().Retransmits.Load())
	}
}

// With an EIR, a card moving to another device leaves the old one first:
// the old session's Stop is answered before the EIR hears of the new
// device, so the verifier sees the two in the order they happened.
func TestStopBeforeEIRCheck(t *testing.T) {
	srv := newAcctServer(t, 0)
	acct := newAccounting(t, srv.addr(), AccountingConfig{})
	var stopsSeen []int // Stops the server had answered when the EIR was asked
	var mu sync.Mutex
	eir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.mu.Lock()
		stops := 0
		for _, p := range srv.received {
			if status(p) == rfc2866.AcctStatusType_Value_Stop {
				stops++
			}
		}
		srv.mu.Unlock()
		mu.Lock()
		stopsSeen = append(stopsSeen, stops)
		mu.Unlock()
		_, _ = w.Write([]byte(`{"status":"WHITELISTED"}`))
	}))
	t.Cleanup(eir.Close)
	n := New(Options{Sessions: acct, EIR: NewEIRClient(eir.URL, nil)})
	ctx := t.Context()
	for _, m := range []string{imei(1), imei(2)} {
		if res, err := n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: m}); err != nil || res.Result != ResultRegistered {
			t.Fatalf("attach in %s: %+v %v", m, res, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(stopsSeen) != 2 || stopsSeen[0] != 0 || stopsSeen[1] != 1 {
		t.Errorf("Stops answered when the EIR was asked: %v, want [0 1]", stopsSeen)
	}
}

package radius_test

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/cardbind/cardbind/verifier/radius"
)

// The simulated network plays a PGW: a Start when a modem attaches, with
// the address it assigned and the cell it is in, then Interim-Updates and
// a Stop on detach.
func ExampleSender() {
	s := &radius.Sender{Addr: "127.0.0.1:1813", Secret: []byte("testing123"), NASIdentifier: "sim-pgw"}
	plmn := radius.PLMN{MCC: "001", MNC: "01"}
	rec := radius.Record{
		Status:    radius.Start,
		SessionID: "sim-0001",
		IMSI:      "001010000000001",
		MSISDN:    "+8613900000001",
		IMEISV:    "3548820912345601",
		IPv4:      netip.MustParseAddr("10.45.0.7"),
		Location: &radius.UserLocation{Type: radius.LocationTAIECGI,
			TAI:  &radius.TAI{PLMN: plmn, TAC: 0x0001},
			ECGI: &radius.ECGI{PLMN: plmn, ECI: 0x0000101}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Send(ctx, &rec); err != nil {
		fmt.Println("accounting not answered:", err)
	}
}

// EncodeRequest builds the datagram alone, for a sender of one's own.
func ExampleEncodeRequest() {
	b, err := radius.EncodeRequest(&radius.Record{Status: radius.Stop, SessionID: "sim-0001", IMSI: "001010000000001"}, 1, []byte("testing123"))
	if err != nil {
		panic(err)
	}
	rec, err := radius.Decode(b)
	fmt.Println(rec.Status, rec.SessionID, rec.IMSI, err)
	// Output: Stop sim-0001 001010000000001 <nil>
}

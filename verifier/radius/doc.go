// Package radius receives RADIUS accounting (RFC 2866) from the operator's
// PGWs and GGSNs and turns each record into what the verifier needs: the
// card's current IP addresses, so that CAMARA calls naming a device by IP
// find the card, and an observation of the equipment the card is in, from
// the 3GPP-IMEISV, so that a card moved into a foreign device is caught
// without any agent on the device. It wraps layeh.com/radius.
//
// # Server
//
// Server listens on UDP (Config.Addr, ":1813" by default). Each client (a
// NAS address or CIDR network) has its shared secret; requests from other
// addresses, and requests whose Request Authenticator does not match the
// secret, are dropped unanswered and counted. A request is decoded (see
// Decode), its card is found by 3GPP-IMSI, else by Calling-Station-Id
// (MSISDN), and then:
//
//   - Start and Interim-Update with a 3GPP-IMEISV or a serving cell (the
//     ECGI or CGI of 3GPP-User-Location-Info) become an
//     Observation{Kind: ObservedIn, Source: SourceRADIUS} of the card in
//     that IMEI, in that cell, which goes through the Observer
//     (*ingest.Ingest): it places the cell on the map through the cell
//     table, runs the engine (IMEI binding and area limit) and commits the
//     outcome. A Stop is not a sighting: it tells where the card was, and
//     may arrive after the Start of the card's next session elsewhere;
//   - Start and Interim-Update store Framed-IP-Address and
//     Framed-IPv6-Prefix as the card's addresses; Stop clears them (only
//     the ones it names, and only while the card still holds them).
//
// The Accounting-Response is sent only after both calls returned nil, that
// is once the observation and the addresses are durable. On a transient
// failure (store, engine) no answer is sent and the NAS retransmits.
// Retransmissions (same source, identifier and authenticator) are
// processed once: a bounded cache with expiry answers them again, or drops
// them while the first copy is in progress. Records for cards not in the
// inventory, malformed but authentic requests, and Accounting-On/Off are
// answered, counted and not acted on, so that the NAS does not retry them
// forever. Stats returns the counters.
//
// The decoded 3GPP-User-Location-Info (TAI, ECGI, CGI, SAI, RAI) is kept
// in Record.Location; UserLocation.Cell gives the serving cell in the form
// agents report it, for area limits. A TAI, SAI or RAI alone names an
// area, not a cell, and gives no location.
//
// # Sending accounting (tests, simulated network)
//
// Sender plays the NAS. The simulated network sends a Start when a modem
// attaches, Interim-Updates while it is attached and a Stop on detach:
//
//	s := &radius.Sender{Addr: "127.0.0.1:1813", Secret: []byte("secret"), NASIdentifier: "sim-pgw"}
//	rec := radius.Record{
//		Status:    radius.Start, // radius.InterimUpdate, radius.Stop
//		SessionID: "sim-0001",
//		IMSI:      "001010000000001",
//		MSISDN:    "+8613900000001",
//		IMEISV:    "3548820912345601", // or IMEI: a 15-digit IMEI
//		IPv4:      netip.MustParseAddr("10.45.0.7"),
//		Location: &radius.UserLocation{Type: radius.LocationTAIECGI,
//			TAI:  &radius.TAI{PLMN: radius.PLMN{MCC: "001", MNC: "01"}, TAC: 0x1234},
//			ECGI: &radius.ECGI{PLMN: radius.PLMN{MCC: "001", MNC: "01"}, ECI: 0x1a2b3c4}},
//	}
//	err := s.Send(ctx, &rec) // nil once the verifier answered
//
// Send retransmits until the answer arrives or ctx is done (ErrNoAnswer).
// EncodeRequest builds the datagram alone.
//
// # Interoperability
//
// The 3GPP attributes are those of 3GPP TS 29.061 section 16.4.7 (vendor
// 10415): 3GPP-IMSI (1, digits), 3GPP-SGSN-MCC-MNC (18, digits),
// 3GPP-IMEISV (20, digits; 8 TBCD octets are accepted too),
// 3GPP-User-Location-Info (22, location type and the identities of TS
// 29.274 section 8.21). FreeRADIUS's radclient, with its stock
// dictionary.3gpp, is accepted; see the test that runs it.
package radius

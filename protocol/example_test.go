package protocol_test

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/cardbind/cardbind/protocol"
)

// An agent signs a report; the verifier decodes it, checks the signature
// against the device's enrolled key, and refuses the same report replayed.
func Example() {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	imei, _ := protocol.ParseIMEI("35-209900-176148-1")
	iccid, _ := protocol.ParseICCID("8901260886258128535F")
	r := &protocol.Report{
		Version: protocol.Version, DeviceID: "gw-0001", Seq: 7,
		Time: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC), Reason: protocol.ReasonChange,
		IMEI: imei, SIM: protocol.SIMPresent, ICCID: iccid,
		Registration: protocol.Registration{State: protocol.RegHome, Stat: 1},
	}
	protocol.SignReport(key, r)
	wire, _ := protocol.EncodeReport(r)

	got, err := protocol.DecodeReport(wire)
	fmt.Println("decoded:", got.IMEI, got.ICCID, err)
	fmt.Println("signature:", protocol.VerifyReport(key.Public().(ed25519.PublicKey), got))
	fmt.Println("first delivery:", protocol.CheckSequence(0, got.Seq))
	fmt.Println("replayed:", errors.Is(protocol.CheckSequence(got.Seq, got.Seq), protocol.ErrReplay))

	got.IMEI = "490154203237518" // a forger swaps the IMEI
	fmt.Println("forged:", errors.Is(protocol.VerifyReport(key.Public().(ed25519.PublicKey), got), protocol.ErrBadSignature))

	_, err = protocol.ParseIMEI("352099001761482")
	fmt.Println(err)
	// Output:
	// decoded: 352099001761481 8901260886258128535 <nil>
	// signature: <nil>
	// first delivery: <nil>
	// replayed: true
	// forged: true
	// imei "352099001761482": check digit is 2, want 1
}

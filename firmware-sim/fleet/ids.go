package fleet

import (
	"fmt"

	"github.com/cardbind/cardbind/firmware-sim/modem"
	"github.com/cardbind/cardbind/protocol"
)

// Identity is what one simulated gateway is: its modem's IMEI and the SIM
// card that belongs in it. Identities are derived from the gateway's index,
// so a second run of the same fleet has the same gateways.
type Identity struct {
	IMEI string
	SIM  modem.SIM
}

// MaxDevices is the largest fleet the identity scheme numbers (6 serial
// digits in the IMEI).
const MaxDevices = 1_000_000

// identityOf returns gateway i's identity: IMEI TAC 35999990 with serial i,
// ICCID 8986 99 + i, IMSI 46099 + i, MSISDN +8617 + i, all with valid
// check digits where the format has one.
func identityOf(i int) Identity {
	imei := fmt.Sprintf("35999990%06d", i)
	iccid := fmt.Sprintf("898699%013d", i)
	return Identity{
		IMEI: protocol.WithCheckDigit(imei),
		SIM: modem.SIM{
			ICCID:  protocol.WithCheckDigit(iccid),
			IMSI:   fmt.Sprintf("46099%010d", i),
			MSISDN: fmt.Sprintf("+8617%09d", i),
		},
	}
}

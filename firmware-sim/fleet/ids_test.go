package fleet

import (
	"testing"

	"github.com/cardbind/cardbind/firmware-sim/modem"
	"github.com/cardbind/cardbind/protocol"
)

func TestIdentities(t *testing.T) {
	seen := map[string]bool{}
	for _, i := range []int{0, 1, 9, 10, 4711, 99_999, MaxDevices - 1} {
		id := identityOf(i)
		if _, err := protocol.ParseIMEI(id.IMEI); err != nil {
			t.Errorf("gateway %d: %v", i, err)
		}
		c, err := protocol.ParseICCID(id.SIM.ICCID)
		if err != nil {
			t.Errorf("gateway %d: %v", i, err)
		} else if err := c.Warning(); err != nil {
			t.Errorf("gateway %d: %v", i, err)
		}
		if _, err := protocol.ParseIMSI(id.SIM.IMSI); err != nil {
			t.Errorf("gateway %d: %v", i, err)
		}
		if err := id.SIM.Validate(); err != nil {
			t.Errorf("gateway %d: %v", i, err)
		}
		if !modem.LuhnValid(id.IMEI) {
			t.Errorf("gateway %d: IMEI %s fails Luhn", i, id.IMEI)
		}
		for _, k := range []string{id.IMEI, id.SIM.ICCID, id.SIM.IMSI, id.SIM.MSISDN} {
			if seen[k] {
				t.Errorf("gateway %d: %s repeats", i, k)
			}
			seen[k] = true
		}
	}
}

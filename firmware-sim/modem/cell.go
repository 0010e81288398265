package modem

import (
	"fmt"

	"github.com/cardbind/cardbind/firmware-sim/network"
)

// The serving cell a modem starts in when Config.Cell is nil: TAC 0x1A2B,
// ECI 0x01A2B3C4, in the home network of the SIM.
const (
	DefaultTAC = 0x1A2B
	DefaultECI = 0x01A2B3C4
)

// cellAcT is the access technology shown with the cell: E-UTRAN.
const cellAcT = 7

// servingCell is where the modem is. An empty MCC means "the home network
// of the SIM in the slot" (the default cell).
type servingCell struct {
	mcc, mnc string
	tac      uint16
	eci      uint32
}

func defaultCell() servingCell { return servingCell{tac: DefaultTAC, eci: DefaultECI} }

func cellFrom(c network.Cell) servingCell {
	return servingCell{mcc: c.MCC, mnc: c.MNC, tac: c.TAC, eci: c.ECI}
}

// cell returns the serving cell with its PLMN: the configured one, or the
// SIM's home network; without either the MCC and MNC are empty.
func (s *state) cell() network.Cell {
	c := network.Cell{MCC: s.serving.mcc, MNC: s.serving.mnc, TAC: s.serving.tac, ECI: s.serving.eci}
	if c.MCC == "" && s.sim != nil {
		num := operatorFor(s.sim.IMSI).numeric
		if len(num) == 5 {
			c.MCC, c.MNC = num[:3], num[3:]
		}
	}
	return c
}

// plmn returns the numeric operator of the serving cell ("46003").
func (s *state) plmn() string {
	c := s.cell()
	return c.MCC + c.MNC
}

// location renders the cell as registration answers show it: the area
// (4 hex digits) and the cell id (8 hex digits), quoted.
func (c servingCell) location() string { return fmt.Sprintf(`"%04X","%08X"`, c.tac, c.eci) }

// Cell returns the modem's serving cell (with the SIM's home network when
// none was set; empty MCC and MNC without SIM).
func (m *Modem) Cell() network.Cell {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.cell()
}

// SetCell moves the modem to another serving cell, as on a reselection
// when the gateway moves. Clients that enabled location URCs (AT+CREG=2,
// AT+CGREG=2, AT+CEREG=2) get one with the new area and cell id while the
// modem is registered, and with a Network the modem tells it (a tracking
// area update; the network's accounting reports the new location). The
// same cell again changes nothing.
func (m *Modem) SetCell(c network.Cell) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("modem: %w", err)
	}
	m.mu.Lock()
	s := &m.st
	next := cellFrom(c)
	if next == s.serving {
		m.mu.Unlock()
		return nil
	}
	s.serving = next
	var urcs []string
	if registered(s.stat) {
		for i, n := range s.regN {
			if n >= 2 {
				urcs = append(urcs, regLine(regName(i), n, s.stat, false, s.serving))
			}
		}
	}
	m.mu.Unlock()
	m.log.Info("cell changed", "cell", c.String())
	m.emit(urcs...)
	m.kick()
	return nil
}

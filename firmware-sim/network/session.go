package network

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Cell is the serving cell of an attachment: the E-UTRAN tracking area
// and cell identity a real network reports in 3GPP-User-Location-Info.
type Cell struct {
	// MCC and MNC name the network (3 digits, 2 or 3 digits).
	MCC string `json:"mcc"`
	MNC string `json:"mnc"`
	// TAC is the tracking area code (16 bits).
	TAC uint16 `json:"tac"`
	// ECI is the E-UTRAN cell identity (28 bits: eNodeB id and cell).
	ECI uint32 `json:"eci"`
}

// ParseCell parses a cell written MCC-MNC-TAC-ECI in decimal, e.g.
// "460-03-6699-27446212".
func ParseCell(s string) (*Cell, error) {
	f := strings.Split(s, "-")
	if len(f) != 4 {
		return nil, fmt.Errorf("%w: cell %q: want MCC-MNC-TAC-ECI", ErrInvalid, s)
	}
	tac, err1 := strconv.ParseUint(f[2], 10, 16)
	eci, err2 := strconv.ParseUint(f[3], 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("%w: cell %q: TAC is 0-65535, ECI 28 bits", ErrInvalid, s)
	}
	c := &Cell{MCC: f[0], MNC: f[1], TAC: uint16(tac), ECI: uint32(eci)}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// String writes the cell as ParseCell reads it, "460-03-6699-27446212".
func (c Cell) String() string { return fmt.Sprintf("%s-%s-%d-%d", c.MCC, c.MNC, c.TAC, c.ECI) }

// Validate checks the PLMN digits and the ECI's 28 bits; a nil cell is
// valid (none named). Errors wrap ErrInvalid.
func (c *Cell) Validate() error {
	if c == nil {
		return nil
	}
	if !validDigits(c.MCC, 3, 3) || !validDigits(c.MNC, 2, 3) {
		return fmt.Errorf("%w: cell PLMN %q-%q: want a 3-digit MCC and a 2- or 3-digit MNC", ErrInvalid, c.MCC, c.MNC)
	}
	if c.ECI >= 1<<28 {
		return fmt.Errorf("%w: cell ECI %d: over 28 bits", ErrInvalid, c.ECI)
	}
	return nil
}

// Session is one data session of a card: from the attach that gave it an
// address to the detach, block or move to another device that ended it.
type Session struct {
	// ID is unique per session (the Acct-Session-Id of its accounting).
	ID     string
	ICCID  string
	IMSI   string
	MSISDN string
	// IMEI is the equipment the card is attached in, as it attached.
	IMEI string
	// IP is the card's address for the session.
	IP string
	// Cell is the serving cell, when the attach named one.
	Cell    *Cell
	Started time.Time
	// Ended and EndCause are set on the session given to SessionStopped.
	Ended    time.Time
	EndCause EndCause
}

// EndCause says why a session ended.
type EndCause string

// Session end causes.
const (
	EndDetach  EndCause = "detach"  // the device detached
	EndBlocked EndCause = "blocked" // the operator blocked the card
	EndMoved   EndCause = "moved"   // the card attached in another device
	EndRefused EndCause = "refused" // the EIR refused the device the card was in
)

// SessionObserver is told when data sessions start and stop: the
// accounting a PGW sends (see Accounting). The network calls it with its
// lock held, in the order things happen, so its methods must return at
// once (queue the work) and must not call the network back.
type SessionObserver interface {
	SessionStarted(s Session)
	SessionStopped(s Session)
}

// SessionUpdater is a SessionObserver that is also told when an open
// session's serving cell changes (the device moved: a tracking area
// update), under the same rules. *Accounting is one.
type SessionUpdater interface {
	SessionObserver
	SessionUpdated(s Session)
}

// Equipment statuses an equipment identity register answers (3GPP TS
// 29.511).
const (
	EquipmentWhitelisted = "WHITELISTED"
	EquipmentBlacklisted = "BLACKLISTED"
	EquipmentGreylisted  = "GREYLISTED"
)

// EquipmentQuery is what the network asks an equipment identity register
// on attach: the equipment, and the subscription it carries.
type EquipmentQuery struct {
	IMEI   string
	IMSI   string
	MSISDN string
}

// EquipmentChecker answers whether an equipment may use the network with
// a subscription, like the EIR an MME or AMF asks (*EIRClient does it over
// HTTP). The network refuses an attach answered EquipmentBlacklisted; it
// lets the attach go on when the check fails (fail open, and logged), as
// operators configure their MMEs when the EIR is unreachable.
type EquipmentChecker interface {
	CheckEquipment(ctx context.Context, q EquipmentQuery) (status string, err error)
}

// imeisv returns the IMEISV a network reports for the equipment: a
// 16-digit IMEISV as is, else the 14 digits of TAC and serial number
// followed by software version 01 (the IMEI's check digit is not part of
// an IMEISV).
func imeisv(imei string) string {
	if len(imei) == 16 {
		return imei
	}
	if len(imei) < 14 {
		return imei
	}
	return imei[:14] + "01"
}

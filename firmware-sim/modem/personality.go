package modem

import (
	"fmt"
	"strconv"
)

// Personalities returns the names of the supported personalities.
func Personalities() []string { return []string{"generic", "quectel", "simcom", "ublox"} }

// personality is the vendor surface of a modem: identification, the ICCID
// command, URCs and quirks. Everything else is 27.007 and shared.
type personality struct {
	name                      string
	manufacturer, model, cgmr string
	ati                       func(p *personality, s *state) []string
	cgsnParam                 bool // accepts AT+CGSN=<snt>
	defaultCMEE               int
	cfun0SIMOff               bool // AT+CFUN=0 powers the SIM down
	boot                      func(s *state) []string
	simRemoved                func(s *state) []string
	simInserted               func(s *state) []string
	simReady                  func(s *state) []string // after the PIN is entered
	gnss                      bool                    // has a GNSS receiver (gnssHandlers)
	extra                     map[string]handler
}

func lookupPersonality(name string) (*personality, error) {
	switch name {
	case "", "generic":
		return genericPersonality(), nil
	case "quectel":
		return quectelPersonality(), nil
	case "simcom":
		return simcomPersonality(), nil
	case "ublox":
		return ubloxPersonality(), nil
	}
	return nil, fmt.Errorf("modem: unknown personality %q (want one of %v)", name, Personalities())
}

// cpinURC is the +CPIN URC for the card's current state.
func cpinURC(s *state) string {
	if s.simLocked {
		return "+CPIN: SIM PIN"
	}
	return "+CPIN: READY"
}

// iccidHandler answers an ICCID command (exec and, if withRead, read form)
// with format applied to the ICCID.
func iccidHandler(withRead bool, format func(iccid string) string) handler {
	return func(x *execCtx, c command) ([]string, error) {
		switch {
		case c.Form == formExec, c.Form == formRead && withRead:
			if err := x.s.simError(false); err != nil {
				return nil, err
			}
			return []string{format(x.s.sim.ICCID)}, nil
		case c.Form == formTest:
			return nil, nil
		}
		return nil, errPlain
	}
}

func stdATI(p *personality, _ *state) []string {
	return []string{p.manufacturer, p.model, "Revision: " + p.cgmr}
}

// genericPersonality is a plain 3GPP TS 27.007 module.
func genericPersonality() *personality {
	return &personality{
		name:         "generic",
		manufacturer: "cardbind",
		model:        "FWSIM-27007",
		cgmr:         "FWSIM01.00",
		ati:          stdATI,
		cgsnParam:    true,
		boot:         func(*state) []string { return nil },
		simRemoved:   func(*state) []string { return []string{"+CPIN: NOT READY"} },
		simInserted:  func(s *state) []string { return []string{cpinURC(s)} },
		simReady:     func(*state) []string { return []string{"+CPIN: READY"} },
		extra: map[string]handler{
			"+CCID": iccidHandler(true, func(id string) string { return "+CCID: " + id }),
		},
	}
}

// quectelPersonality is an EC25/BG96-like module.
func quectelPersonality() *personality {
	ready := func(s *state) []string {
		if s.simLocked {
			return []string{cpinURC(s), "+QUSIM: 1"}
		}
		return []string{"+CPIN: READY", "+QUSIM: 1", "+QIND: SMS DONE", "+QIND: PB DONE"}
	}
	return &personality{
		name:         "quectel",
		manufacturer: "Quectel",
		model:        "EC25",
		cgmr:         "EC25EFAR06A06M4G",
		ati:          stdATI,
		cgsnParam:    false, // EC2x rejects AT+CGSN=1
		defaultCMEE:  1,
		gnss:         true,
		boot: func(s *state) []string {
			out := []string{"RDY"}
			if s.sim != nil {
				out = append(out, ready(s)...)
			}
			return out
		},
		simRemoved: func(s *state) []string {
			var out []string
			if s.qsimstat {
				out = append(out, "+QSIMSTAT: 1,0")
			}
			return append(out, "+CPIN: NOT READY")
		},
		simInserted: func(s *state) []string {
			var out []string
			if s.qsimstat {
				out = append(out, "+QSIMSTAT: 1,1")
			}
			return append(out, ready(s)...)
		},
		simReady: func(*state) []string { return []string{"+CPIN: READY", "+QIND: SMS DONE", "+QIND: PB DONE"} },
		extra: map[string]handler{
			"+QCCID": iccidHandler(false, func(id string) string {
				if len(id) == 19 {
					id += "F" // Quectel shows the EF_ICCID padding
				}
				return "+QCCID: " + id
			}),
			"+QSIMSTAT": func(x *execCtx, c command) ([]string, error) {
				switch c.Form {
				case formRead:
					return []string{fmt.Sprintf("+QSIMSTAT: %d,%d", b2i(x.s.qsimstat), b2i(x.s.sim != nil))}, nil
				case formTest:
					return []string{"+QSIMSTAT: (0,1)"}, nil
				case formSet:
					switch c.Arg {
					case "0", "1":
						x.s.qsimstat = c.Arg == "1"
						return nil, nil
					}
					return nil, cmeIncorrectParameters
				}
				return nil, errPlain
			},
			"+QSIMDET": func(x *execCtx, c command) ([]string, error) {
				switch c.Form {
				case formRead:
					return []string{"+QSIMDET: 1,0"}, nil
				case formTest:
					return []string{"+QSIMDET: (0,1),(0,1)"}, nil
				case formSet:
					if len(splitArgs(c.Arg)) != 2 {
						return nil, cmeIncorrectParameters
					}
					return nil, nil
				}
				return nil, errPlain
			},
		},
	}
}

// simcomPersonality is a SIM7600-like module.
func simcomPersonality() *personality {
	ready := func(s *state) []string {
		if s.simLocked {
			return []string{cpinURC(s)}
		}
		return []string{"+CPIN: READY", "SMS DONE", "PB DONE"}
	}
	return &personality{
		name:         "simcom",
		manufacturer: "SIMCOM INCORPORATED",
		model:        "SIMCOM_SIM7600E-H",
		cgmr:         "+CGMR: LE20B04SIM7600M22",
		ati: func(p *personality, s *state) []string {
			return []string{
				"Manufacturer: " + p.manufacturer,
				"Model: " + p.model,
				"Revision: SIM7600M22_V2.0",
				"IMEI: " + s.imei,
				"+GCAP: +CGSM",
			}
		},
		cgsnParam:   true,
		cfun0SIMOff: true,
		gnss:        true,
		boot: func(s *state) []string {
			if s.sim == nil {
				return []string{"RDY", "+SIMCARD: NOT AVAILABLE"}
			}
			return append([]string{"RDY"}, ready(s)...)
		},
		simRemoved:  func(*state) []string { return []string{"+SIMCARD: NOT AVAILABLE"} },
		simInserted: ready,
		simReady:    func(*state) []string { return []string{"+CPIN: READY", "SMS DONE", "PB DONE"} },
		extra: map[string]handler{
			"+CICCID": iccidHandler(false, func(id string) string { return "+ICCID: " + id }),
			// Some SIMCom firmwares answer AT+CCID with the bare digits.
			"+CCID": iccidHandler(false, func(id string) string { return id }),
		},
	}
}

// ubloxPersonality is a SARA-R4-like module.
func ubloxPersonality() *personality {
	simstat := func(s *state, v int) []string {
		if s.usimstat&1 == 0 {
			return nil
		}
		return []string{"+UUSIMSTAT: " + strconv.Itoa(v)}
	}
	ready := func(s *state) []string {
		if s.simLocked {
			return simstat(s, 1)
		}
		return simstat(s, 6)
	}
	return &personality{
		name:         "ublox",
		manufacturer: "u-blox",
		model:        "SARA-R410M-02B",
		cgmr:         "L0.0.00.00.05.08",
		ati: func(p *personality, _ *state) []string {
			return []string{"Manufacturer: " + p.manufacturer, "Model: " + p.model, "Revision: " + p.cgmr}
		},
		cgsnParam:   true,
		boot:        func(*state) []string { return nil },
		simRemoved:  func(s *state) []string { return simstat(s, 0) },
		simInserted: ready,
		simReady:    func(s *state) []string { return simstat(s, 6) },
		extra: map[string]handler{
			"+CCID": iccidHandler(true, func(id string) string { return "+CCID: " + id }),
			"+USIMSTAT": func(x *execCtx, c command) ([]string, error) {
				switch c.Form {
				case formRead:
					return []string{fmt.Sprintf("+USIMSTAT: %d", x.s.usimstat)}, nil
				case formTest:
					return []string{"+USIMSTAT: (0-7)"}, nil
				case formSet:
					v, err := strconv.Atoi(c.Arg)
					if err != nil || v < 0 || v > 7 {
						return nil, cmeIncorrectParameters
					}
					x.s.usimstat = v
					return nil, nil
				}
				return nil, errPlain
			},
		},
	}
}

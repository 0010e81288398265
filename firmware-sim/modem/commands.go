package modem

import (
	"fmt"
	"strconv"
	"strings"
)

// execCtx is what a command handler works on. Handlers run with Modem.mu
// held: they change x.s directly and queue anything that must happen after
// the answer is written (URCs, reboot, registration) in x.after.
type execCtx struct {
	m     *Modem
	s     *state
	after []func()
}

// later queues fn to run once the answer has been written, without the lock.
func (x *execCtx) later(fn func()) { x.after = append(x.after, fn) }

// emitLater queues URCs to be sent after the answer.
func (x *execCtx) emitLater(urcs ...string) {
	if len(urcs) > 0 {
		x.later(func() { x.m.emit(urcs...) })
	}
}

// handler answers one command with information lines or an error.
type handler func(x *execCtx, c command) ([]string, error)

// exec dispatches one command.
func (m *Modem) exec(x *execCtx, c command) ([]string, error) {
	if strings.HasPrefix(c.Name, "S") && len(c.Name) > 1 {
		return sRegister(x, c)
	}
	h, ok := m.handlers[c.Name]
	if !ok {
		return nil, errPlain
	}
	return h(x, c)
}

// standardHandlers returns the 27.007 / V.250 commands all personalities
// share. Personalities add or replace entries.
func standardHandlers() map[string]handler {
	return map[string]handler{
		"E":  basicFlag(func(s *state, v bool) { s.echo = v }),
		"V":  basicFlag(func(s *state, v bool) { s.verbose = v }),
		"Q":  basicFlag(func(s *state, v bool) { s.quiet = v }),
		"Z":  atZ,
		"&F": atZ,
		"I":  atI,
		"X":  basicRange(0, 4),
		"&C": basicRange(0, 2),
		"&D": basicRange(0, 2),
		"&W": basicRange(0, 0),
		"D":  func(*execCtx, command) ([]string, error) { return []string{"NO CARRIER"}, errPlain },

		"+CGMI":    ident(func(p *personality) string { return p.manufacturer }),
		"+GMI":     ident(func(p *personality) string { return p.manufacturer }),
		"+CGMM":    ident(func(p *personality) string { return p.model }),
		"+GMM":     ident(func(p *personality) string { return p.model }),
		"+CGMR":    ident(func(p *personality) string { return p.cgmr }),
		"+GMR":     ident(func(p *personality) string { return p.cgmr }),
		"+GCAP":    ident(func(*personality) string { return "+GCAP: +CGSM" }),
		"+CGSN":    atCGSN,
		"+GSN":     atGSN,
		"+CIMI":    atCIMI,
		"+CNUM":    atCNUM,
		"+CPIN":    atCPIN,
		"+CRSM":    atCRSM,
		"+CREG":    atReg(0, "+CREG"),
		"+CGREG":   atReg(1, "+CGREG"),
		"+CEREG":   atReg(2, "+CEREG"),
		"+COPS":    atCOPS,
		"+CSQ":     atCSQ,
		"+CFUN":    atCFUN,
		"+CMEE":    atCMEE,
		"+CGATT":   atCGATT,
		"+CGACT":   atCGACT,
		"+CGPADDR": atCGPADDR,
	}
}

// basicFlag handles a V.250 0/1 basic command such as E, V or Q.
func basicFlag(set func(*state, bool)) handler {
	return func(x *execCtx, c command) ([]string, error) {
		switch c.Arg {
		case "", "0":
			set(x.s, false)
		case "1":
			set(x.s, true)
		default:
			return nil, errPlain
		}
		return nil, nil
	}
}

// basicRange accepts a basic command whose value lies in [lo, hi] and
// otherwise has no effect in the simulator.
func basicRange(lo, hi int) handler {
	return func(_ *execCtx, c command) ([]string, error) {
		v := 0
		if c.Arg != "" {
			n, err := strconv.Atoi(c.Arg)
			if err != nil {
				return nil, errPlain
			}
			v = n
		}
		if v < lo || v > hi {
			return nil, errPlain
		}
		return nil, nil
	}
}

func atZ(x *execCtx, c command) ([]string, error) {
	if c.Arg != "" && c.Arg != "0" {
		return nil, errPlain
	}
	x.s.resetProfile(x.m.pers)
	return nil, nil
}

func atI(x *execCtx, c command) ([]string, error) {
	if c.Arg != "" && c.Arg != "0" {
		return nil, errPlain
	}
	return x.m.pers.ati(x.m.pers, x.s), nil
}

// sRegister handles ATSn? and ATSn=v.
func sRegister(x *execCtx, c command) ([]string, error) {
	n, err := strconv.Atoi(c.Name[1:])
	if err != nil || n < 0 || n >= len(x.s.sreg) {
		return nil, errPlain
	}
	if c.Form == formRead {
		return []string{fmt.Sprintf("%03d", x.s.sreg[n])}, nil
	}
	v, err := strconv.Atoi(c.Arg)
	if err != nil || v < 0 || v > 127 {
		return nil, errPlain
	}
	x.s.sreg[n] = v
	return nil, nil
}

// ident answers an identification command (AT+CGMI and friends).
func ident(text func(*personality) string) handler {
	return func(x *execCtx, c command) ([]string, error) {
		switch c.Form {
		case formExec:
			return []string{text(x.m.pers)}, nil
		case formTest:
			return nil, nil
		}
		return nil, errPlain
	}
}

func atCGSN(x *execCtx, c command) ([]string, error) {
	p := x.m.pers
	switch c.Form {
	case formExec:
		return []string{x.s.imei}, nil
	case formTest:
		if p.cgsnParam {
			return []string{"+CGSN: (0-3)"}, nil
		}
		return nil, nil
	case formSet:
		if !p.cgsnParam {
			return nil, errPlain
		}
		switch c.Arg {
		case "0", "1":
			return []string{fmt.Sprintf("+CGSN: %q", x.s.imei)}, nil
		case "2":
			return []string{fmt.Sprintf("+CGSN: %q", x.s.imei[:14]+x.m.svn)}, nil
		case "3":
			return []string{fmt.Sprintf("+CGSN: %q", x.m.svn)}, nil
		}
		return nil, cmeIncorrectParameters
	}
	return nil, errPlain
}

func atGSN(x *execCtx, c command) ([]string, error) {
	switch c.Form {
	case formExec:
		return []string{x.s.imei}, nil
	case formTest:
		return nil, nil
	}
	return nil, errPlain
}

func atCIMI(x *execCtx, c command) ([]string, error) {
	switch c.Form {
	case formExec:
		if err := x.s.simError(true); err != nil {
			return nil, err
		}
		return []string{x.s.sim.IMSI}, nil
	case formTest:
		return nil, nil
	}
	return nil, errPlain
}

func atCNUM(x *execCtx, c command) ([]string, error) {
	switch c.Form {
	case formExec:
		if err := x.s.simError(true); err != nil {
			return nil, err
		}
		n := x.s.sim.MSISDN
		if n == "" {
			return nil, nil
		}
		typ := 129
		if strings.HasPrefix(n, "+") {
			typ = 145
		}
		return []string{fmt.Sprintf(`+CNUM: "",%q,%d`, n, typ)}, nil
	case formTest:
		return nil, nil
	}
	return nil, errPlain
}

func atCPIN(x *execCtx, c command) ([]string, error) {
	s := x.s
	switch c.Form {
	case formRead:
		if err := s.simError(false); err != nil {
			return nil, err
		}
		if s.simLocked {
			return []string{"+CPIN: SIM PIN"}, nil
		}
		return []string{"+CPIN: READY"}, nil
	case formTest:
		return nil, nil
	case formSet:
		if err := s.simError(false); err != nil {
			return nil, err
		}
		if !s.simLocked {
			return nil, cmeOperationNotAllowed
		}
		args := splitArgs(c.Arg)
		if len(args) == 0 || args[0] != s.sim.PIN {
			return nil, cmeIncorrectPassword
		}
		s.simLocked = false
		x.emitLater(x.m.pers.simReady(s)...)
		x.later(x.m.kick)
		return nil, nil
	}
	return nil, errPlain
}

// atCRSM answers restricted SIM access: READ BINARY of EF_ICCID and EF_IMSI.
func atCRSM(x *execCtx, c command) ([]string, error) {
	s := x.s
	switch c.Form {
	case formTest:
		return nil, nil
	case formSet:
	default:
		return nil, errPlain
	}
	args := splitArgs(c.Arg)
	if len(args) < 2 {
		return nil, cmeIncorrectParameters
	}
	cmd, err1 := strconv.Atoi(args[0])
	file, err2 := strconv.Atoi(args[1])
	if err1 != nil || err2 != nil {
		return nil, cmeIncorrectParameters
	}
	if err := s.simError(false); err != nil {
		return nil, err
	}
	const readBinary, efICCIDID, efIMSIID = 176, 0x2FE2, 0x6F07
	switch {
	case cmd == readBinary && file == efICCIDID:
		return []string{fmt.Sprintf(`+CRSM: 144,0,%q`, efICCID(s.sim.ICCID))}, nil
	case cmd == readBinary && file == efIMSIID:
		if s.simLocked {
			return []string{"+CRSM: 105,130"}, nil
		}
		return []string{fmt.Sprintf(`+CRSM: 144,0,%q`, efIMSI(s.sim.IMSI))}, nil
	}
	return []string{"+CRSM: 106,130"}, nil
}

func registered(stat int) bool { return stat == 1 || stat == 5 }

// regLine renders a registration line. Solicited answers to AT+CxREG? carry
// <n> first; URCs do not.
func regLine(name string, n, stat int, solicited bool, cell servingCell) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteString(": ")
	if solicited {
		fmt.Fprintf(&b, "%d,", n)
	}
	fmt.Fprintf(&b, "%d", stat)
	if n >= 2 && registered(stat) {
		fmt.Fprintf(&b, `,%s,%d`, cell.location(), cellAcT)
	}
	return b.String()
}

func atReg(idx int, name string) handler {
	return func(x *execCtx, c command) ([]string, error) {
		s := x.s
		switch c.Form {
		case formRead:
			return []string{regLine(name, s.regN[idx], s.stat, true, s.serving)}, nil
		case formTest:
			return []string{name + ": (0-2)"}, nil
		case formSet, formExec:
			n := 0
			if c.Form == formSet {
				v, err := strconv.Atoi(c.Arg)
				if err != nil || v < 0 || v > 2 {
					return nil, cmeIncorrectParameters
				}
				n = v
			}
			s.regN[idx] = n
			return nil, nil
		}
		return nil, errPlain
	}
}

// operator is a PLMN's names.
type operator struct{ long, short, numeric string }

// operatorFor names the home network of an IMSI.
func operatorFor(imsi string) operator {
	num := imsi
	if len(num) > 5 {
		num = num[:5]
	}
	return operatorNamed(num)
}

// operatorNamed names a network by its numeric PLMN; an unknown one is
// named by its digits.
func operatorNamed(num string) operator {
	switch num {
	case "46000", "46002", "46007":
		return operator{"CHINA MOBILE", "CMCC", num}
	case "46001", "46006":
		return operator{"CHN-UNICOM", "UNICOM", num}
	case "46003", "46005", "46011":
		return operator{"CHN-CT", "CT", num}
	case "00101":
		return operator{"Test PLMN 1-1", "Test", num}
	}
	return operator{num, num, num}
}

func atCOPS(x *execCtx, c command) ([]string, error) {
	s := x.s
	switch c.Form {
	case formRead:
		if !registered(s.stat) || s.sim == nil {
			return []string{fmt.Sprintf("+COPS: %d", s.copsMode)}, nil
		}
		op := operatorNamed(s.plmn())
		name := [3]string{op.long, op.short, op.numeric}[s.copsFormat]
		return []string{fmt.Sprintf(`+COPS: %d,%d,%q,%d`, s.copsMode, s.copsFormat, name, cellAcT)}, nil
	case formTest:
		if s.sim == nil {
			return []string{"+COPS: ,,(0-4),(0-2)"}, nil
		}
		op := operatorNamed(s.plmn())
		return []string{fmt.Sprintf(`+COPS: (2,%q,%q,%q,%d),,(0-4),(0-2)`, op.long, op.short, op.numeric, cellAcT)}, nil
	case formSet:
		args := splitArgs(c.Arg)
		mode, err := strconv.Atoi(args[0])
		if err != nil {
			return nil, cmeIncorrectParameters
		}
		switch mode {
		case 0, 1, 4:
			s.copsMode = 0
			if mode == 1 {
				s.copsMode = 1
			}
		case 2:
			s.copsMode = 2
		case 3:
			if len(args) < 2 {
				return nil, cmeIncorrectParameters
			}
			f, err := strconv.Atoi(args[1])
			if err != nil || f < 0 || f > 2 {
				return nil, cmeIncorrectParameters
			}
			s.copsFormat = f
			return nil, nil
		default:
			return nil, cmeIncorrectParameters
		}
		x.later(x.m.kick)
		return nil, nil
	}
	return nil, errPlain
}

func atCSQ(x *execCtx, c command) ([]string, error) {
	switch c.Form {
	case formExec:
		if x.s.cfun != 1 {
			return []string{"+CSQ: 99,99"}, nil
		}
		return []string{fmt.Sprintf("+CSQ: %d,99", x.m.rssi)}, nil
	case formTest:
		return []string{"+CSQ: (0-31,99),(0-7,99)"}, nil
	}
	return nil, errPlain
}

func atCFUN(x *execCtx, c command) ([]string, error) {
	s := x.s
	p := x.m.pers
	switch c.Form {
	case formRead:
		return []string{fmt.Sprintf("+CFUN: %d", s.cfun)}, nil
	case formTest:
		return []string{"+CFUN: (0,1,4),(0-1)"}, nil
	case formSet:
	default:
		return nil, errPlain
	}
	args := splitArgs(c.Arg)
	fun, err := strconv.Atoi(args[0])
	if err != nil || (fun != 0 && fun != 1 && fun != 4) {
		return nil, cmeIncorrectParameters
	}
	rst := 0
	if len(args) > 1 {
		if rst, err = strconv.Atoi(args[1]); err != nil || rst < 0 || rst > 1 {
			return nil, cmeIncorrectParameters
		}
	}
	if rst == 1 {
		if fun != 1 {
			return nil, cmeIncorrectParameters
		}
		x.later(func() { x.m.Reboot(0) })
		return nil, nil
	}
	old := s.cfun
	s.cfun = fun
	if p.cfun0SIMOff && s.sim != nil {
		switch {
		case fun == 0 && old != 0:
			s.simOff = true
			x.emitLater(p.simRemoved(s)...)
		case fun != 0 && old == 0:
			s.simOff = false
			s.simLocked = s.sim.PIN != ""
			x.emitLater(p.simInserted(s)...)
		}
	}
	x.later(x.m.kick)
	return nil, nil
}

func atCMEE(x *execCtx, c command) ([]string, error) {
	switch c.Form {
	case formRead:
		return []string{fmt.Sprintf("+CMEE: %d", x.s.cmee)}, nil
	case formTest:
		return []string{"+CMEE: (0-2)"}, nil
	case formExec:
		x.s.cmee = 0
		return nil, nil
	case formSet:
		v, err := strconv.Atoi(c.Arg)
		if err != nil || v < 0 || v > 2 {
			return nil, cmeIncorrectParameters
		}
		x.s.cmee = v
		return nil, nil
	}
	return nil, errPlain
}

func hasData(s *state) bool { return registered(s.stat) && s.ip != "" }

func atCGATT(x *execCtx, c command) ([]string, error) {
	switch c.Form {
	case formRead:
		return []string{fmt.Sprintf("+CGATT: %d", b2i(hasData(x.s)))}, nil
	case formTest:
		return []string{"+CGATT: (0,1)"}, nil
	}
	return nil, errPlain
}

func atCGACT(x *execCtx, c command) ([]string, error) {
	switch c.Form {
	case formRead:
		return []string{fmt.Sprintf("+CGACT: 1,%d", b2i(hasData(x.s)))}, nil
	case formTest:
		return []string{"+CGACT: (0,1)"}, nil
	}
	return nil, errPlain
}

func atCGPADDR(x *execCtx, c command) ([]string, error) {
	switch c.Form {
	case formExec, formSet:
		if c.Form == formSet && c.Arg != "1" {
			return nil, cmeIncorrectParameters
		}
		ip := "0.0.0.0"
		if hasData(x.s) {
			ip = x.s.ip
		}
		return []string{fmt.Sprintf("+CGPADDR: 1,%q", ip)}, nil
	case formTest:
		return []string{"+CGPADDR: (1)"}, nil
	}
	return nil, errPlain
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

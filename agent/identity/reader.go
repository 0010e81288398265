package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/cardbind/cardbind/agent/at"
)

// Commander runs one AT command and returns its reply; *at.Engine and
// *at.Supervisor satisfy it.
type Commander interface {
	Command(ctx context.Context, cmd string, opts ...at.CommandOption) (at.Response, error)
}

// Identity is everything read from the modem and its SIM. Empty strings mean
// "not available"; Problems says why, field by field.
type Identity struct {
	Manufacturer string        `json:"manufacturer,omitempty"`
	Model        string        `json:"model,omitempty"`
	Revision     string        `json:"revision,omitempty"`
	Vendor       Vendor        `json:"vendor"`
	IMEI         string        `json:"imei,omitempty"`
	SIM          SIMStatus     `json:"sim"`
	ICCID        string        `json:"iccid,omitempty"`
	ICCIDSource  string        `json:"iccid_source,omitempty"` // the command that gave it
	IMSI         string        `json:"imsi,omitempty"`
	Registration *Registration `json:"registration,omitempty"`
	// PLMN is the serving network (AT+COPS? in numeric format), while
	// registered.
	PLMN   *PLMN   `json:"plmn,omitempty"`
	Signal *Signal `json:"signal,omitempty"`
	// GNSS is the modem's GNSS fix, when GNSS reading is on and the
	// receiver has one (atmodem.Config.GNSS).
	GNSS     *Fix     `json:"gnss,omitempty"`
	Problems []string `json:"problems,omitempty"`
}

// ErrNoAnswer means the modem answered none of the identification commands.
var ErrNoAnswer = errors.New("identity: modem does not answer")

// Reader reads an Identity through a Commander.
type Reader struct {
	c   Commander
	log *slog.Logger
	// copsFormat is what became of AT+COPS=3,2: formatUnset (send it
	// before the next AT+COPS?), formatSet or formatRefused.
	copsFormat atomic.Int32
}

// Outcomes of AT+COPS=3,2, in Reader.copsFormat.
const (
	formatUnset int32 = iota
	formatSet
	formatRefused
)

// NewReader returns a Reader; log may be nil.
func NewReader(c Commander, log *slog.Logger) *Reader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reader{c: c, log: log}
}

// read is one Read in progress.
type read struct {
	r        *Reader
	id       Identity
	answered bool
	fatal    error
}

// run sends cmd. It returns the lines and error; after a fatal error (engine
// closed, context done) it sends nothing more.
func (rd *read) run(ctx context.Context, cmd string) ([]string, error) {
	if rd.fatal != nil {
		return nil, rd.fatal
	}
	resp, err := rd.r.c.Command(ctx, cmd)
	switch {
	case err == nil:
		rd.answered = true
	case ctx.Err() != nil || errors.Is(err, at.ErrClosed) || errors.Is(err, at.ErrNotConnected):
		rd.fatal = err
	case errors.Is(err, at.ErrTimeout), errors.Is(err, at.ErrNoResponse):
		rd.answered = rd.answered || len(resp.Lines) > 0
	default:
		rd.answered = true // the modem answered, with an error
	}
	return resp.Lines, err
}

func (rd *read) problem(field string, err error) {
	rd.id.Problems = append(rd.id.Problems, fmt.Sprintf("%s: %v", field, err))
}

// Read reads the modem's identity: manufacturer, model and revision
// (+CGMI/+CGMM/+CGMR), IMEI (+CGSN, then +GSN), SIM state (+CPIN?), ICCID
// (the vendor's command, then +CRSM on EF_ICCID, retried once), IMSI (+CIMI),
// registration (best of +CEREG?, +CGREG?, +CREG?), while registered the
// serving network (+COPS? in numeric format, see ResetOperatorFormat) and
// signal (+CSQ). Fields
// the modem cannot give are left empty and listed in Problems; the ICCID and
// IMSI are not asked for when the SIM is absent. Read fails only when the
// context ends, the port is gone, or the modem answers nothing (ErrNoAnswer).
func (r *Reader) Read(ctx context.Context) (Identity, error) {
	rd := &read{r: r}
	id := &rd.id

	lines, err := rd.run(ctx, "AT+CGMI")
	if err != nil {
		lines, err = rd.run(ctx, "AT+GMI")
	}
	if err == nil {
		id.Manufacturer = CleanInfo(lines)
	}
	if lines, err := rd.run(ctx, "AT+CGMM"); err == nil {
		id.Model = CleanInfo(lines)
	}
	if lines, err := rd.run(ctx, "AT+CGMR"); err == nil {
		id.Revision = CleanInfo(lines)
	}
	id.Vendor = VendorOf(id.Manufacturer, id.Model)
	if rd.fatal != nil {
		return Identity{}, fmt.Errorf("identity: %w", rd.fatal)
	}
	if !rd.answered {
		return Identity{}, ErrNoAnswer // a mute port: don't wait out every command
	}

	if imei, err := rd.imei(ctx); err == nil {
		id.IMEI = imei
	} else {
		rd.problem("imei", err)
	}
	if rd.fatal != nil {
		return Identity{}, fmt.Errorf("identity: %w", rd.fatal)
	}
	if !rd.answered {
		return Identity{}, ErrNoAnswer
	}

	lines, err = rd.run(ctx, "AT+CPIN?")
	id.SIM = ParseCPIN(lines, err)
	if id.SIM.State == SIMUnknown && err != nil {
		rd.problem("sim", err)
	}
	if id.SIM.State != SIMAbsent {
		if iccid, src, err := rd.iccid(ctx); err == nil {
			id.ICCID, id.ICCIDSource = iccid, src
		} else {
			rd.problem("iccid", err)
		}
		lines, err := rd.run(ctx, "AT+CIMI")
		if err == nil {
			id.IMSI, err = ParseIMSI(lines)
		}
		if err != nil {
			rd.problem("imsi", err)
		}
	}

	var regs []Registration
	for _, cmd := range []string{"AT+CEREG?", "AT+CGREG?", "AT+CREG?"} {
		lines, err := rd.run(ctx, cmd)
		if err != nil {
			continue // not every modem has every domain
		}
		for _, l := range lines {
			if reg, err := ParseRegistration(l); err == nil {
				regs = append(regs, reg)
				break
			}
		}
	}
	if best, ok := BestRegistration(regs...); ok {
		id.Registration = &best
	} else {
		rd.problem("registration", ErrNotFound)
	}
	if id.Registration != nil && id.Registration.Stat.rank() >= RegSMSOnlyHome.rank() {
		if plmn, err := rd.operator(ctx); err == nil {
			id.PLMN = &plmn
		} else if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrOperatorFormat) {
			rd.problem("operator", err)
		}
	}

	lines, err = rd.run(ctx, "AT+CSQ")
	if err == nil {
		var s Signal
		if s, err = ParseCSQ(lines); err == nil {
			id.Signal = &s
		}
	}
	if err != nil {
		rd.problem("signal", err)
	}
	if rd.fatal != nil {
		return Identity{}, fmt.Errorf("identity: %w", rd.fatal)
	}
	r.log.Debug("identity read", "imei", id.IMEI, "iccid", id.ICCID, "sim", id.SIM.State, "problems", len(id.Problems))
	return *id, nil
}

func (rd *read) imei(ctx context.Context) (string, error) {
	var errs []error
	for _, cmd := range []string{"AT+CGSN", "AT+GSN"} {
		lines, err := rd.run(ctx, cmd)
		if err == nil {
			var imei string
			if imei, err = ParseIMEI(lines); err == nil {
				return imei, nil
			}
		}
		errs = append(errs, err)
		if rd.fatal != nil {
			break
		}
	}
	return "", errors.Join(errs...)
}

// iccid tries the vendor command, then +CRSM twice (Gobi modems answer the
// first CRSM with a bogus status word).
func (rd *read) iccid(ctx context.Context) (string, string, error) {
	cmd := rd.id.Vendor.ICCIDCommand()
	lines, err := rd.run(ctx, cmd)
	if err == nil {
		var iccid string
		if iccid, err = ParseICCID(lines); err == nil {
			return iccid, cmd, nil
		}
	}
	errs := []error{err}
	for range 2 {
		if rd.fatal != nil {
			break
		}
		lines, err := rd.run(ctx, CRSMReadICCID)
		if err == nil {
			var iccid string
			if iccid, err = ParseCRSMICCID(lines); err == nil {
				return iccid, CRSMReadICCID, nil
			}
			var se *StatusError
			if !errors.As(err, &se) {
				errs = append(errs, err)
				break // a well-formed answer that is not an ICCID: retrying won't help
			}
		}
		errs = append(errs, err)
		var ce *at.CMEError
		if errors.As(err, &ce) || errors.Is(err, at.ErrError) {
			break // CRSM refused (e.g. CME 3 on some firmwares)
		}
	}
	return "", "", errors.Join(errs...)
}

// ResetOperatorFormat makes the next Read send AT+COPS=3,2 again, even to
// a modem that refused it before: call it when the port was reopened (the
// modem may have rebooted, and forgets the format when it does).
func (r *Reader) ResetOperatorFormat() { r.copsFormat.Store(formatUnset) }

// operator reads the serving network with AT+COPS?. AT+COPS=3,2 is sent
// first, once: again only when the modem was seen to forget it (an
// alphanumeric answer after it had accepted it: a reboot), never after the
// modem refused it (it then answers in its own format, and there is no
// PLMN).
func (rd *read) operator(ctx context.Context) (PLMN, error) {
	for range 2 {
		rd.numericFormat(ctx)
		lines, err := rd.run(ctx, "AT+COPS?")
		if err != nil {
			return PLMN{}, err
		}
		plmn, err := ParseCOPS(lines)
		if errors.Is(err, ErrOperatorFormat) && rd.r.copsFormat.CompareAndSwap(formatSet, formatUnset) {
			rd.r.log.Debug("modem forgot the numeric operator format; setting it again")
			continue
		}
		return plmn, err
	}
	return PLMN{}, ErrOperatorFormat
}

// numericFormat sends AT+COPS=3,2 unless it was already answered. A modem
// error marks it refused; a timeout leaves it for the next read.
func (rd *read) numericFormat(ctx context.Context) {
	if rd.r.copsFormat.Load() != formatUnset {
		return
	}
	_, err := rd.run(ctx, COPSNumeric)
	switch {
	case err == nil:
		rd.r.copsFormat.Store(formatSet)
	case modemRefused(err):
		rd.r.copsFormat.Store(formatRefused)
		rd.r.log.Info("modem refused the numeric operator format; no PLMN in reports", "err", err)
	}
}

// modemRefused reports whether err is the modem's lasting refusal (ERROR,
// +CME ERROR, COMMAND NOT SUPPORT), not a timeout, a lost port or a
// passing "busy" (+CME ERROR 14 or 515).
func modemRefused(err error) bool {
	var ce *at.CMEError
	if errors.As(err, &ce) {
		return ce.Code != at.CMESIMBusy && ce.Code != at.CMEInitInProgress
	}
	var cms *at.CMSError
	var re *at.ResultError
	return errors.Is(err, at.ErrError) || errors.As(err, &cms) || errors.As(err, &re)
}

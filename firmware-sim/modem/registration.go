package modem

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cardbind/cardbind/firmware-sim/network"
)

// Network is the operator network as the modem sees it. *network.Client
// (over HTTP) and *network.Network (in process) implement it.
type Network interface {
	// Attach registers the card in this modem's IMEI.
	Attach(ctx context.Context, req network.AttachRequest) (network.AttachResult, error)
	// Detach ends the card's registration from this IMEI.
	Detach(ctx context.Context, iccid, imei string) (network.Card, error)
	// UpdateLocation tells the network the modem moved to another cell
	// while attached.
	UpdateLocation(ctx context.Context, u network.LocationUpdate) (network.Card, error)
	// Watch waits until the card changes past version after.
	Watch(ctx context.Context, iccid string, after uint64) (network.Card, error)
}

// retryAfter is how long the modem waits before retrying a failed call to
// the network (it shows stat 2, searching, meanwhile).
const retryAfter = time.Second

// regTarget is what the registration loop should achieve.
type regTarget struct {
	sim    *SIM
	imei   string
	cell   network.Cell // the serving cell, with its PLMN
	want   bool         // radio on, SIM ready, not deregistered
	forced int
}

func (m *Modem) regTarget() regTarget {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &m.st
	t := regTarget{imei: s.imei, forced: s.forcedStat, cell: s.cell()}
	if s.sim != nil {
		sim := *s.sim
		t.sim = &sim
	}
	t.want = s.cfun == 1 && s.copsMode != 2 && s.simError(true) == nil
	return t
}

// setRegistration records the registration status and data address and
// sends the +CREG/+CGREG/+CEREG URCs clients enabled.
func (m *Modem) setRegistration(stat int, ip string) {
	m.mu.Lock()
	s := &m.st
	if s.forcedStat >= 0 {
		stat = s.forcedStat
	}
	if !registered(stat) {
		ip = ""
	}
	changed := s.stat != stat
	s.stat, s.ip = stat, ip
	var urcs []string
	if changed {
		for i, n := range s.regN {
			if n > 0 {
				urcs = append(urcs, regLine(regName(i), n, stat, false, s.serving))
			}
		}
	}
	m.mu.Unlock()
	if changed {
		m.log.Info("registration", "stat", stat, "ip", ip)
	}
	m.emit(urcs...)
}

func regName(i int) string {
	switch i {
	case 0:
		return "+CREG"
	case 1:
		return "+CGREG"
	}
	return "+CEREG"
}

// localIP is the data address used without a network.
const localIP = "10.0.0.2"

// runRegistration follows the SIM, the radio and (with a Network) the
// operator for the lifetime of a session.
func (m *Modem) runRegistration(s *session) {
	if m.net == nil {
		for {
			t := m.regTarget()
			if t.want {
				m.setRegistration(1, localIP)
			} else {
				m.setRegistration(0, "")
			}
			select {
			case <-s.ctx.Done():
				return
			case <-s.kick:
			}
		}
	}
	r := &registrar{m: m, s: s}
	r.run()
}

// registrar keeps one session's registration in step with the network.
type registrar struct {
	m *Modem
	s *session

	attached *SIM         // card attached (or denied) with the network
	imei     string       // IMEI used for it
	cell     network.Cell // the cell the network last heard of
	version  uint64       // card version last seen
	blocked  bool
	stat     int
	ip       string
}

// set records and shows the registration status.
func (r *registrar) set(stat int, ip string) {
	r.stat, r.ip = stat, ip
	r.m.setRegistration(stat, ip)
}

func (r *registrar) run() {
	defer r.detach()
	var watch *watcher
	defer func() { watch.stop() }()
	for {
		t := r.m.regTarget()
		retry := false
		switch {
		case !t.want:
			r.detach()
			r.set(0, "")
		case r.attached == nil || r.attached.ICCID != t.sim.ICCID || r.imei != t.imei:
			r.detach()
			if err := r.attach(t); err != nil {
				r.m.log.Warn("attach failed", "iccid", t.sim.ICCID, "err", err)
				r.set(2, "")
				retry = true
			}
		default:
			r.set(r.stat, r.ip) // re-applies a forced status being lifted
			if t.cell != r.cell && registered(r.stat) {
				r.updateLocation(t)
			}
		}
		if watch == nil || r.attached == nil || watch.iccid != r.attached.ICCID || watch.after != r.version {
			watch.stop()
			watch = nil
			if r.attached != nil {
				watch = r.startWatch(r.attached.ICCID, r.version)
			}
		}
		var timer <-chan time.Time
		if retry {
			timer = time.After(retryAfter)
		}
		select {
		case <-r.s.ctx.Done():
			return
		case <-r.s.kick:
		case <-timer:
		case card := <-watch.out():
			r.version = card.Version
			switch {
			case card.Blocked:
				r.blocked = true
				r.set(3, "")
			case r.blocked || !card.Attached || card.IMEI != r.imei:
				// Resumed, or the network dropped us: attach again.
				r.attached = nil
			}
		}
	}
}

// attach registers t's card; the result (registered or denied) is kept.
func (r *registrar) attach(t regTarget) error {
	cell := t.cell
	res, err := r.m.net.Attach(r.s.ctx, network.AttachRequest{
		ICCID: t.sim.ICCID, IMSI: t.sim.IMSI, MSISDN: t.sim.MSISDN, IMEI: t.imei, Cell: &cell,
	})
	if err != nil {
		return err
	}
	r.attached, r.imei, r.cell, r.version = t.sim, t.imei, t.cell, res.Card.Version
	r.blocked = res.Card.Blocked
	switch res.Result {
	case network.ResultRegistered:
		r.set(1, res.IP)
	case network.ResultDenied:
		r.m.log.Info("registration denied", "iccid", t.sim.ICCID, "cause", res.Cause)
		r.set(3, "")
	default:
		return fmt.Errorf("modem: attach: unexpected result %q", res.Result)
	}
	return nil
}

// updateLocation tells the network the modem moved to t's cell (a
// tracking area update), best effort: a failure is logged, and the next
// attach names the cell anyway.
func (r *registrar) updateLocation(t regTarget) {
	if _, err := r.m.net.UpdateLocation(r.s.ctx, network.LocationUpdate{ICCID: r.attached.ICCID, IMEI: r.imei, Cell: t.cell}); err != nil {
		r.m.log.Warn("location update failed", "iccid", r.attached.ICCID, "cell", t.cell.String(), "err", err)
		if errors.Is(err, network.ErrNotAttached) {
			r.attached = nil // the network lost us: attach again
			r.m.kick()
		}
		return
	}
	r.cell = t.cell
	r.m.log.Info("location updated", "iccid", r.attached.ICCID, "cell", t.cell.String())
}

// detach ends the current attachment, if any, best effort.
func (r *registrar) detach() {
	if r.attached == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.s.ctx), 2*time.Second)
	defer cancel()
	if _, err := r.m.net.Detach(ctx, r.attached.ICCID, r.imei); err != nil {
		r.m.log.Debug("detach failed", "iccid", r.attached.ICCID, "err", err)
	}
	r.attached = nil
}

// watcher long-polls one card in its own goroutine.
type watcher struct {
	iccid  string
	after  uint64
	ch     chan network.Card
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (r *registrar) startWatch(iccid string, after uint64) *watcher {
	ctx, cancel := context.WithCancel(r.s.ctx)
	w := &watcher{iccid: iccid, after: after, ch: make(chan network.Card, 1), cancel: cancel}
	w.wg.Go(func() {
		for ctx.Err() == nil {
			card, err := r.m.net.Watch(ctx, iccid, after)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil && !errors.Is(err, context.DeadlineExceeded):
				r.m.log.Debug("watch failed", "iccid", iccid, "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(retryAfter):
				}
			case card.Version > after:
				select {
				case w.ch <- card:
				case <-ctx.Done():
				}
				return
			}
		}
	})
	return w
}

// out is the channel of changes; nil (blocks forever) for a nil watcher.
func (w *watcher) out() <-chan network.Card {
	if w == nil {
		return nil
	}
	return w.ch
}

func (w *watcher) stop() {
	if w == nil {
		return
	}
	w.cancel()
	w.wg.Wait()
}

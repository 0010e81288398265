package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cardbind/cardbind/agent"
	"github.com/cardbind/cardbind/agent/atmodem"
	"github.com/cardbind/cardbind/agent/outbox"
	"github.com/cardbind/cardbind/agent/report"
	"github.com/cardbind/cardbind/agent/state"
	"github.com/cardbind/cardbind/firmware-sim/modem"
	"github.com/cardbind/cardbind/protocol"
)

// personalities are given to gateways in turn.
var personalities = [...]string{"quectel", "simcom", "ublox", "generic"}

// device is one simulated gateway: a firmware-sim modem on an in-memory
// serial line (net.Pipe) and the real agent reading it — AT engine and
// supervisor, atmodem, agent core, on-disk outbox, MQTT link.
type device struct {
	idx   int
	id    Identity
	modem *modem.Modem
	box   *outbox.Outbox
	atm   *atmodem.Modem
	link  *report.Link
	agent *agent.Agent

	// ports hands the agent's side of the current serial line to the
	// agent's opener; a reboot replaces the line, as USB re-enumeration
	// replaces the tty.
	ports chan net.Conn
	// conn is the current broker connection, for reconnect storms.
	conn atomic.Pointer[net.TCPConn]
	// busy is set while the gateway takes part in a SIM swap.
	busy atomic.Bool
}

// counters are the fleet-wide event counts the devices feed.
type counters struct {
	queued, acked, dials, dialErrors atomic.Int64
}

// newDevice builds gateway i from its enrolment; nothing runs yet.
func newDevice(cfg *Config, i int, creds *protocol.EnrollResponse, dial func(context.Context, string, string) (net.Conn, error),
	c *counters, log *slog.Logger) (*device, error) {
	d := &device{idx: i, id: identityOf(i), ports: make(chan net.Conn, 1)}
	dir, err := state.Open(deviceDir(cfg.StateDir, i))
	if err != nil {
		return nil, err
	}
	key, err := dir.Key()
	if err != nil {
		return nil, fmt.Errorf("gateway %d: %w", i, err)
	}
	seq, err := dir.Sequence(64)
	if err != nil {
		return nil, fmt.Errorf("gateway %d: %w", i, err)
	}
	if d.box, err = outbox.Open(filepath.Join(dir.Path(), outboxDir), cfg.OutboxLimit); err != nil {
		return nil, fmt.Errorf("gateway %d: %w", i, err)
	}
	sim := d.id.SIM
	d.modem, err = modem.New(modem.Config{Personality: personalities[i%len(personalities)], IMEI: d.id.IMEI,
		SIM: &sim, Network: cfg.Network, RebootDownFor: cfg.RebootDownFor, Seed: uint64(i), Logger: log})
	if err != nil {
		return nil, fmt.Errorf("gateway %d: %w", i, err)
	}
	d.atm, err = atmodem.New(atmodem.Config{Open: d.open, MinBackoff: 200 * time.Millisecond, MaxBackoff: 5 * time.Second, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("gateway %d: %w", i, err)
	}
	broker := creds.BrokerURL
	if cfg.BrokerURL != "" {
		broker = cfg.BrokerURL
	}
	var ca []byte
	if creds.CACertPEM != "" {
		ca = []byte(creds.CACertPEM)
	}
	d.link, err = report.New(report.Config{BrokerURL: broker, DeviceID: creds.DeviceID, Username: creds.Username,
		Password: creds.Password, CACertPEM: ca, KeepAlive: cfg.KeepAlive, MinBackoff: cfg.MinBackoff, MaxBackoff: cfg.MaxBackoff,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dial(ctx, network, addr)
			if err != nil {
				c.dialErrors.Add(1)
				return nil, err
			}
			c.dials.Add(1)
			if tc, ok := conn.(*net.TCPConn); ok {
				d.conn.Store(tc)
			}
			return conn, nil
		},
	}, d.box, log, func(p []byte) { d.agent.HandleCommand(p) }, func(e outbox.Entry) {
		c.acked.Add(1)
		d.agent.Acked(e)
	})
	if err != nil {
		return nil, fmt.Errorf("gateway %d: %w", i, err)
	}
	kick := func() {
		c.queued.Add(1)
		d.link.Kick()
	}
	d.agent = agent.New(agent.Config{DeviceID: creds.DeviceID, Key: key, CommandKey: creds.CommandKey,
		Heartbeat: cfg.Heartbeat, Poll: cfg.Poll, CellChangeInterval: max(cfg.CellChangeInterval, 0)}, d.atm, seq, d.box, kick, log, time.Now)
	return d, nil
}

// open is the agent's port opener: it waits for the modem's side to be
// served.
func (d *device) open(ctx context.Context) (io.ReadWriteCloser, error) {
	select {
	case p := <-d.ports:
		return p, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// run drives the gateway until ctx ends; the link gets linkCtx, which
// ends later, so that it can say goodbye.
func (d *device) run(ctx, linkCtx context.Context, wg *sync.WaitGroup) {
	wg.Go(func() { d.serveModem(ctx) })
	wg.Go(func() { _ = d.atm.Run(ctx) })
	wg.Go(func() { _ = d.agent.Run(ctx) })
	wg.Go(func() { _ = d.link.Run(linkCtx) })
}

// serveModem powers the modem on a fresh serial line, again after every
// reboot (after its down time) and whenever the agent hung up the line.
func (d *device) serveModem(ctx context.Context) {
	for ctx.Err() == nil {
		dte, dce := net.Pipe()
		select {
		case old := <-d.ports: // never taken: the agent did not open it
			_ = old.Close()
		default:
		}
		d.ports <- dte
		err := d.modem.Serve(ctx, dce)
		_ = dce.Close()
		_ = dte.Close()
		var rb *modem.RebootError
		if errors.As(err, &rb) {
			t := time.NewTimer(rb.DownFor)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// drop shuts the gateway's broker connection down under the link, as a NAT
// timeout or a load balancer restart does; the link notices and
// reconnects. It reports whether there was a connection to drop.
func (d *device) drop() bool {
	c := d.conn.Swap(nil)
	if c == nil || !d.link.Connected() {
		return false
	}
	_ = c.CloseWrite()
	_ = c.CloseRead()
	return true
}

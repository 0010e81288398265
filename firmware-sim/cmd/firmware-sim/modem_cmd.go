package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/cardbind/cardbind/firmware-sim/modem"
	"github.com/cardbind/cardbind/firmware-sim/modem/control"
	"github.com/cardbind/cardbind/firmware-sim/modem/ptyhost"
	"github.com/cardbind/cardbind/firmware-sim/network"
)

const modemHelp = `Usage: firmware-sim modem --imei IMEI --link PATH [flags]

Runs a simulated cellular modem on a pseudo-terminal. PATH becomes a symlink
to the device side, so any serial program can open it like /dev/ttyUSB2 and
talk AT commands (echo on, 115200 baud accepted and ignored). On AT+CFUN=1,1
or a control-API reboot the port disappears for --reboot-down and comes back
at the same PATH. SIGINT/SIGTERM stop the modem and remove PATH.

Personalities: generic (3GPP TS 27.007, AT+CCID), quectel (AT+QCCID, RDY and
+QUSIM URCs, rejects AT+CGSN=1), simcom (AT+CICCID, +SIMCARD: NOT AVAILABLE),
ublox (AT+CCID, +UUSIMSTAT). See docs/firmware-sim.md.

Without --iccid the SIM slot starts empty. With --control the HTTP JSON
control API (state, SIM insert/remove/swap, IMEI change, reboot, faults)
listens on that loopback address. With --network the SIM attaches to a
simulated operator network ("firmware-sim network") and registration follows
it: denied (stat 3) while the card is blocked.

The modem sits in the serving cell --cell (MCC-MNC-TAC-ECI in decimal, e.g.
460-03-6699-27446212; default: TAC 6699 = 0x1A2B and ECI 27440068 =
0x01A2B3C4 in the home network of the SIM). AT+CEREG?/+CREG?/+CGREG? show
it in hex in mode 2, AT+COPS? (numeric after AT+COPS=3,2) its MCC and MNC,
and the attach names it. POST /cell on the control API moves the modem: a
+CEREG/+CREG URC to clients in mode 2, and a location update to --network.

Quectel and SIMCom modems have a GNSS receiver: the client turns it on
(AT+QGPS=1, AT+CGPS=1) and reads the fix (AT+QGPSLOC=2, AT+CGPSINFO).
--gnss LAT,LON[,HDOP] gives it a fix there (decimal degrees; default HDOP
1.1); without it the receiver has none. POST /gnss on the control API sets
({"lat":..,"lon":..,"hdop":..}) or loses ({"fix":false}) the fix.

Flags:
`

func runModem(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("modem", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), modemHelp)
		fs.PrintDefaults()
	}
	personality := fs.String("personality", "generic", "vendor `name`: "+strings.Join(modem.Personalities(), ", "))
	imei := fs.String("imei", "", "15-digit `IMEI` of the modem (required)")
	iccid := fs.String("iccid", "", "`ICCID` of the SIM in the slot at start; empty means no SIM")
	imsi := fs.String("imsi", "", "`IMSI` of that SIM (required with --iccid)")
	msisdn := fs.String("msisdn", "", "`MSISDN` of that SIM (optional)")
	pin := fs.String("pin", "", "`PIN` locking that SIM until AT+CPIN (optional)")
	link := fs.String("link", "", "`path` of the symlink to the pseudo-terminal (required)")
	controlAddr := fs.String("control", "", "loopback `address` for the HTTP control API, e.g. 127.0.0.1:7001")
	networkURL := fs.String("network", "", "base `URL` of a simulated network, e.g. http://127.0.0.1:7000")
	downFor := fs.Duration("reboot-down", 2*time.Second, "how long the port stays away on reboot")
	rssi := fs.Int("rssi", 20, "AT+CSQ signal value 0..31")
	cellFlag := fs.String("cell", "", "serving `cell` MCC-MNC-TAC-ECI in decimal, e.g. 460-03-6699-27446212 (default: TAC 6699, ECI 27440068 in the SIM's home network)")
	gnssFlag := fs.String("gnss", "", "GNSS fix at `LAT,LON[,HDOP]` in decimal degrees (quectel and simcom; default: no fix)")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	if *imei == "" || *link == "" {
		fmt.Fprintln(stderr, "--imei and --link are required")
		fs.Usage()
		return errUsage
	}
	if !modem.LuhnValid(*imei) {
		log.Warn("IMEI check digit is wrong; using it anyway", "imei", *imei)
	}
	cfg := modem.Config{
		Personality:   *personality,
		IMEI:          *imei,
		RSSI:          *rssi,
		RebootDownFor: *downFor,
		Logger:        log,
		Seed:          uint64(time.Now().UnixNano()),
	}
	if *iccid != "" {
		cfg.SIM = &modem.SIM{ICCID: *iccid, IMSI: *imsi, MSISDN: *msisdn, PIN: *pin}
	}
	if *networkURL != "" {
		cfg.Network = network.NewClient(*networkURL, nil)
	}
	if *cellFlag != "" {
		if cfg.Cell, err = network.ParseCell(*cellFlag); err != nil {
			return fmt.Errorf("--cell: %w", err)
		}
	}
	if *gnssFlag != "" {
		fix, err := modem.ParseGNSSFix(*gnssFlag)
		if err != nil {
			return fmt.Errorf("--gnss: %w", err)
		}
		cfg.GNSS = &fix
	}
	m, err := modem.New(cfg)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var ctlErr error
	if *controlAddr != "" {
		ln, err := listenLoopback(*controlAddr)
		if err != nil {
			return err
		}
		log.Info("control API listening", "addr", ln.Addr().String())
		wg.Go(func() {
			if err := serveHTTP(ctx, ln, control.NewHandler(m, log)); err != nil {
				ctlErr = err
				cancel()
			}
		})
	}
	err = ptyhost.Run(ctx, m, ptyhost.Config{Link: *link, Logger: log})
	cancel()
	wg.Wait()
	return errors.Join(err, ctlErr)
}

// listenLoopback listens on addr, which must be a loopback address: the
// control API has no authentication.
func listenLoopback(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--control %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("--control %q: must be a loopback address (the API has no authentication)", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	return ln, nil
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/cardbind/cardbind/firmware-sim/network"
)

const networkHelp = `Usage: firmware-sim network [flags]

Runs a simulated operator network: a TEST DOUBLE of an operator, keeping
its state in memory only (lost on exit). Per SIM card (ICCID, IMSI, MSISDN,
assigned IPv4) it knows whether the card is attached, in which IMEI, and
whether it is blocked.

It serves an HTTP JSON API (see docs/firmware-sim.md):
  operator side (what an enforcement adapter calls):
    POST /v1/cards                     register a card
    GET  /v1/cards[?blocked=true]      list cards (also ?imsi=, ?msisdn=)
    GET  /v1/cards/{iccid}             read a card
    POST /v1/cards/{iccid}/attach      attach the card in a device with no modem
                                       {"imei":"...","cell":{"mcc":"460","mnc":"03","tac":6699,"eci":27446212}}
    POST /v1/cards/{iccid}/block       block (idempotent; Idempotency-Key header)
    POST /v1/cards/{iccid}/resume      resume (idempotent; Idempotency-Key header)
    GET  /v1/accounting                RADIUS accounting counters (with --radius)
  device side (what simulated modems call):
    POST /v1/attach                    attach a card in an IMEI: registered or denied
    POST /v1/detach                    detach
    GET  /v1/cards/{iccid}/watch?after=VERSION&wait=25s
                                       long poll: returns as soon as the card changes

With --radius it sends RADIUS accounting (RFC 2866) as a PGW does: Start on
attach (Framed-IP-Address, Calling-Station-Id, 3GPP-IMSI, 3GPP-IMEISV,
3GPP-SGSN-MCC-MNC, 3GPP-User-Location-Info when the attach named a cell),
Interim-Update every --interim, Stop on detach, block or move; each request
is retransmitted every second until answered (for 30s).

With --eir it asks that equipment identity register (TS 29.511 style
GET /n5g-eir-eic/v1/equipment-status) on every attach and refuses the
attach when the answer is BLACKLISTED. When the EIR cannot be reached the
attach goes on (logged), as MMEs are usually configured.

Flags:
`

func runNetwork(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("network", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), networkHelp)
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "127.0.0.1:7000", "`address` to serve the HTTP API on")
	strict := fs.Bool("strict", false, "deny attach of cards not registered first (default: provision them on first attach)")
	pool := fs.String("pool", "10.64.0.0/10", "IPv4 `prefix` to assign card addresses from")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	radiusAddr := fs.String("radius", "", "RADIUS accounting server `host:port` to send accounting to")
	radiusSecret := fs.String("radius-secret", "", "RADIUS shared `secret` (required with --radius)")
	nasID := fs.String("nas-id", "firmware-sim", "NAS-Identifier of the accounting")
	interim := fs.Duration("interim", 30*time.Second, "Interim-Update period; 0 sends none")
	cellFlag := fs.String("cell", "", "serving `cell` MCC-MNC-TAC-ECI (e.g. 460-03-6699-27446212) of attaches that name none, for the accounting's location")
	eirURL := fs.String("eir", "", "base `URL` of an equipment identity register to ask on every attach, e.g. http://127.0.0.1:8080")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	prefix, err := netip.ParsePrefix(*pool)
	if err != nil || !prefix.Addr().Is4() {
		return fmt.Errorf("--pool %q: want an IPv4 prefix such as 10.64.0.0/10", *pool)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	opts := network.Options{Strict: *strict, Pool: prefix, Logger: log}
	if *cellFlag != "" {
		if opts.Cell, err = network.ParseCell(*cellFlag); err != nil {
			ln.Close()
			return fmt.Errorf("--cell: %w", err)
		}
	}
	if *eirURL != "" {
		u, err := url.Parse(*eirURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			ln.Close()
			return fmt.Errorf("--eir %q: want http(s)://host:port", *eirURL)
		}
		opts.EIR = network.NewEIRClient(*eirURL, nil)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if *radiusAddr != "" {
		if *radiusSecret == "" {
			ln.Close()
			return errors.New("--radius needs --radius-secret")
		}
		acct, err := network.NewAccounting(ctx, network.AccountingConfig{Addr: *radiusAddr, Secret: []byte(*radiusSecret),
			NASIdentifier: *nasID, Interim: *interim, Logger: log})
		if err != nil {
			ln.Close()
			return err
		}
		defer func() { cancel(); acct.Wait() }()
		opts.Sessions = acct
	}
	n := network.New(opts)
	mux := http.NewServeMux()
	mux.Handle("/", network.NewHandler(n, log))
	if acct, ok := opts.Sessions.(*network.Accounting); ok {
		mux.HandleFunc("GET /v1/accounting", func(w http.ResponseWriter, _ *http.Request) {
			st := acct.Stats()
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]uint64{"requests": st.Requests.Load(),
				"retransmits": st.Retransmits.Load(), "answered": st.Answered.Load(), "dropped": st.Dropped.Load()})
		})
	}
	log.Info("simulated operator network (test double, in memory) listening", "addr", ln.Addr().String(),
		"radius", *radiusAddr, "eir", *eirURL)
	return serveHTTP(ctx, ln, mux)
}

// serveHTTP serves h on ln until ctx is done, then shuts down.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx) // long polls are cut off after the timeout
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}

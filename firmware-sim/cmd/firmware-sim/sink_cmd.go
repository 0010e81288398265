package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cardbind/cardbind/firmware-sim/sink"
)

const sinkHelp = `Usage: firmware-sim sink [flags]

Runs a customer's CloudEvents webhook endpoint (the "sink" of a CAMARA
subscription) over HTTPS with a self-signed certificate made at start. It
writes the certificate to --cert so the verifier can be told to trust it,
checks the bearer token of every request against --token, and prints each
event it receives as one line:

  <time> <type> id=<id> data=<data as JSON>

--status sets what it answers (204 by default; 503 plays a sink that is
down, 410 asks for the subscription to end).

Flags:
`

func runSink(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), sinkHelp)
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "127.0.0.1:8443", "HTTPS listen address")
	certFile := fs.String("cert", "sink-cert.pem", "where to write the certificate (PEM)")
	token := fs.String("token", "", "bearer token requests must carry (empty: any)")
	status := fs.Int("status", 204, "HTTP status answered to accepted events")
	if err := parse(fs, args, stdout); err != nil {
		return err
	}
	if *status < 200 || *status > 599 {
		fmt.Fprintf(stderr, "--status %d: want an HTTP status code\n", *status)
		return errUsage
	}
	out := &lineWriter{w: stdout}
	s, err := sink.Start(*listen, sink.Config{Token: *token, Status: *status, OnEvent: func(e sink.Event) {
		out.printf("%s %s id=%s data=%s\n", time.Now().Format("15:04:05.000"), e.Type, e.ID, compact(e.Data))
	}})
	if err != nil {
		return err
	}
	if err := os.WriteFile(*certFile, s.CertPEM(), 0o644); err != nil {
		_ = s.Close(context.Background())
		return fmt.Errorf("--cert: %w", err)
	}
	fmt.Fprintf(stderr, "CloudEvents sink listening on %s (certificate in %s)\n", s.URL(), *certFile)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Close(sctx)
}

// compact shortens an event's data for one line.
func compact(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

// lineWriter serialises lines written from several goroutines.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}

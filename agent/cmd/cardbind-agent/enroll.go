package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cardbind/cardbind/agent/config"
	"github.com/cardbind/cardbind/agent/state"
	"github.com/cardbind/cardbind/protocol"
)

const enrollHelp = `usage: cardbind-agent enroll --verifier URL --token TOKEN [--state-dir DIR] [--port PATH]

Registers this gateway with the verifier, once, at installation:
  1. reads the modem's IMEI (and the SIM's ICCID) on --port;
  2. creates the device's Ed25519 signing key in the state directory
     (the directory mode 0700, the key file mode 0600; it never leaves
     the gateway);
  3. sends the public key with the one-time enrolment token to the
     verifier's enrolment endpoint (` + protocol.EnrollPath + `);
  4. stores the MQTT credentials and the verifier's command key it gets
     back (credentials.json, mode 0600).
The operator issues the token with
  cardbind-verifier admin enroll-token create --tenant TENANT
A gateway that is already enrolled is refused unless --force is given
(the old key and credentials are then replaced). With --config, the state
directory and the modem port come from that file unless the flags say
otherwise.

Flags:
`

func enroll(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, enrollHelp); fs.PrintDefaults() }
	def := config.Default()
	file := fs.String("config", "", "agent configuration `file` (state_dir, modem.port, modem.baud)")
	verifierURL := fs.String("verifier", "", "the verifier's HTTP(S) base `URL`, e.g. https://verifier.example.net:8080 (required)")
	token := fs.String("token", "", "one-time enrolment `token` (required; or $CARDBIND_ENROLL_TOKEN)")
	stateDir := fs.String("state-dir", def.StateDir, "state `directory` for the key and credentials (state_dir)")
	port := fs.String("port", def.Modem.Port, "modem AT port `path` to read the IMEI from (modem.port)")
	baud := fs.Int("baud", def.Modem.Baud, "serial speed (modem.baud)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long the modem and the verifier may take to answer")
	src := fs.String("source", def.Modem.Source, "read the IMEI over `at` (--port) or through modemmanager (modem.source)")
	force := fs.Bool("force", false, "enrol again although this gateway is already enrolled")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(fs, *file, func(c *config.Config, name string) {
		switch name {
		case "state-dir":
			c.StateDir = *stateDir
		case "port":
			c.Modem.Port = *port
		case "baud":
			c.Modem.Baud = *baud
		case "source":
			c.Modem.Source = *src
		}
	})
	if err != nil {
		return err
	}
	if *token == "" {
		*token = os.Getenv("CARDBIND_ENROLL_TOKEN")
	}
	if *verifierURL == "" || *token == "" {
		fmt.Fprintln(stderr, "--verifier and --token are required")
		fs.Usage()
		return errUsage
	}
	u, err := url.Parse(*verifierURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--verifier %q: want http(s)://host[:port]", *verifierURL)
	}
	dir, err := state.Open(cfg.StateDir)
	if err != nil {
		return err
	}
	_, err = dir.Credentials()
	enrolled := err == nil
	if enrolled && !*force {
		return fmt.Errorf("already enrolled (%s holds credentials); use --force to enrol again", dir.Path())
	}

	var lv slog.LevelVar
	lv.Set(slog.LevelWarn)
	log := newLogger(stderr, "text", &lv)
	id, err := readIdentity(ctx, cfg.Modem, *timeout, log)
	if err != nil {
		return err
	}
	imei, err := protocol.ParseIMEI(id.IMEI)
	if err != nil {
		return fmt.Errorf("the modem's IMEI %q cannot be enrolled: %w", id.IMEI, err)
	}
	req := &protocol.EnrollRequest{Version: protocol.Version, Token: *token, IMEI: imei, AgentVersion: version()}
	if c, err := protocol.ParseICCID(id.ICCID); err == nil {
		req.ICCID = c
	}
	if h, err := os.Hostname(); err == nil && len(h) <= 255 {
		req.Hostname = h
	}

	key, err := dir.NewKey()
	if err != nil {
		return err
	}
	req.PublicKey = key.Public().(ed25519.PublicKey)
	hctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := postEnroll(hctx, strings.TrimRight(*verifierURL, "/")+protocol.EnrollPath, req)
	if err != nil {
		return err
	}
	if err := dir.SaveCredentials(resp); err != nil {
		return err
	}
	if enrolled {
		// Reports queued under the old identity would be refused as
		// forged: the new one starts with an empty outbox.
		if err := os.RemoveAll(filepath.Join(dir.Path(), outboxDir)); err != nil {
			return fmt.Errorf("clear the old outbox: %w", err)
		}
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]string{
		"device_id": resp.DeviceID, "tenant": resp.Tenant, "broker_url": resp.BrokerURL,
		"imei": string(imei), "iccid": string(req.ICCID), "state_dir": dir.Path(),
	})
}

// postEnroll sends the enrolment request and decodes the answer.
func postEnroll(ctx context.Context, endpoint string, req *protocol.EnrollRequest) (*protocol.EnrollResponse, error) {
	body, err := protocol.EncodeEnrollRequest(req)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hresp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	defer hresp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hresp.Body, protocol.MaxMessageSize+1))
	if err != nil {
		return nil, fmt.Errorf("enrol: read answer: %w", err)
	}
	if hresp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return nil, fmt.Errorf("the verifier refused the enrolment (%s): %s", hresp.Status, msg)
	}
	resp, err := protocol.DecodeEnrollResponse(data)
	if err != nil {
		return nil, fmt.Errorf("enrol: the verifier's answer: %w", err)
	}
	return resp, nil
}

// errNotEnrolled explains what to do.
var errNotEnrolled = errors.New("this gateway is not enrolled: run cardbind-agent enroll --verifier URL --token TOKEN first")

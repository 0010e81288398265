package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/geo"
	"github.com/cardbind/cardbind/verifier/oauth"
)

const adminUsage = `usage: cardbind-verifier admin [--url URL] [--token-file FILE] COMMAND ...

Operator commands, over the verifier's admin API.

  tenant create ID [--name NAME]          create a tenant
  tenant list                             list tenants
  subscriber create --tenant T [--name N] MQTT credential for T's alerts (printed once)
  enroll-token create --tenant T [--ttl 24h]
                                          one-time device enrolment token
  client create --tenant T [--scopes S,...] [--rate N/s] [--quota N] [--name N] [--json]
                                          CAMARA API client (id and secret printed once)
  client list | client delete ID          list or delete CAMARA API clients
  token --client ID --phone-number +E164 [--scope S]... [--ttl 30s]
                                          three-legged CAMARA token for one device
  import --file F [--format csv|ndjson] [--tenant T] [--dry-run]
                                          import cards (and bindings) from a file
  card ICCID                              show a card
  bind ICCID [--imei I]... [--tac TAC] [--mode block|alert] [--grace 30s] [--no-auto-resume]
       [--area LAT,LON,RADIUS_M]          bind a card (no --imei: the device it is in now),
                                          optionally to an area
  cells import --file F                   import the cell table (OpenCelliD CSV, or .csv.gz)
                                          that places serving cells for area limits
  unbind ICCID                            remove a card's binding
  block ICCID | resume ICCID              block or resume a card by hand
  history ICCID [--json]                  a card's history, one entry a line
  alerts --tenant T [--client-id ID]      watch T's alerts over MQTT, one line each
  device ID                               show an enrolled device (flagged: its IMEI changed)
  command ID report-now|radio-off|radio-on [--ttl 5m]
                                          send a signed command to a device

--url defaults to $CARDBIND_URL or http://127.0.0.1:8080; the operator
credential is read from --token-file (default ./data/operator-token) or
$CARDBIND_TOKEN.
`

type adminClient struct {
	base  string
	token string
	http  *http.Client
	out   io.Writer
	errw  io.Writer
}

func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, adminUsage) }
	base := fs.String("url", envOr("CARDBIND_URL", "http://127.0.0.1:8080"), "verifier HTTP address")
	tokenFile := fs.String("token-file", filepath.Join("data", "operator-token"), "file holding the operator credential")
	if err := fs.Parse(args); err != nil {
		return err
	}
	token := os.Getenv("CARDBIND_TOKEN")
	if token == "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("operator credential: %w (use --token-file or $CARDBIND_TOKEN)", err)
		}
		token = strings.TrimSpace(string(b))
	}
	c := &adminClient{base: strings.TrimRight(*base, "/"), token: token, http: &http.Client{Timeout: 0}, out: stdout, errw: stderr}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return errors.New("admin: missing command")
	}
	cmd, rest := rest[0], rest[1:]
	switch cmd {
	case "tenant":
		return c.tenant(ctx, rest)
	case "subscriber":
		return c.subscriber(ctx, rest)
	case "enroll-token":
		return c.enrollToken(ctx, rest)
	case "client":
		return c.client(ctx, rest)
	case "token":
		return c.deviceToken(ctx, rest)
	case "alerts":
		return c.alerts(ctx, rest)
	case "device":
		if len(rest) != 1 {
			return errors.New("device: want exactly one device id")
		}
		return c.call(ctx, http.MethodGet, "/admin/v1/devices/"+url.PathEscape(rest[0]), nil)
	case "command":
		return c.command(ctx, rest)
	case "import":
		return c.importCards(ctx, rest)
	case "card":
		return c.onCard(ctx, rest, http.MethodGet, "", nil)
	case "unbind":
		return c.onCard(ctx, rest, http.MethodDelete, "/binding", nil)
	case "block":
		return c.onCard(ctx, rest, http.MethodPost, "/block", nil)
	case "resume":
		return c.onCard(ctx, rest, http.MethodPost, "/resume", nil)
	case "history":
		return c.history(ctx, rest)
	case "bind":
		return c.bind(ctx, rest)
	case "cells":
		return c.cells(ctx, rest)
	}
	fs.Usage()
	return fmt.Errorf("admin: unknown command %q", cmd)
}

func (c *adminClient) tenant(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("tenant: want create or list")
	}
	switch args[0] {
	case "list":
		return c.call(ctx, http.MethodGet, "/admin/v1/tenants", nil)
	case "create":
		fs := flag.NewFlagSet("tenant create", flag.ContinueOnError)
		name := fs.String("name", "", "display name")
		id, err := parseWithArg(fs, args[1:], "tenant id")
		if err != nil {
			return err
		}
		return c.call(ctx, http.MethodPost, "/admin/v1/tenants", map[string]string{"id": id, "name": *name})
	}
	return fmt.Errorf("tenant: unknown command %q", args[0])
}

func (c *adminClient) subscriber(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "create" {
		return errors.New("subscriber: want create")
	}
	fs := flag.NewFlagSet("subscriber create", flag.ContinueOnError)
	tenant := fs.String("tenant", "", "tenant id (required)")
	name := fs.String("name", "", "a short name for the credential")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *tenant == "" {
		return errors.New("subscriber create: --tenant is required")
	}
	return c.call(ctx, http.MethodPost, "/admin/v1/tenants/"+url.PathEscape(*tenant)+"/subscribers", map[string]string{"name": *name})
}

func (c *adminClient) enrollToken(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "create" {
		return errors.New("enroll-token: want create")
	}
	fs := flag.NewFlagSet("enroll-token create", flag.ContinueOnError)
	tenant := fs.String("tenant", "", "tenant id (required)")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token stays valid")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *tenant == "" {
		return errors.New("enroll-token create: --tenant is required")
	}
	return c.call(ctx, http.MethodPost, "/admin/v1/tenants/"+url.PathEscape(*tenant)+"/enrollment-tokens", map[string]string{"ttl": ttl.String()})
}

// client manages the CAMARA API's OAuth2 clients.
func (c *adminClient) client(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("client: want create, list or delete")
	}
	switch args[0] {
	case "list":
		return c.call(ctx, http.MethodGet, "/admin/v1/clients", nil)
	case "delete":
		if len(args) != 2 {
			return errors.New("client delete: want exactly one client id")
		}
		if err := c.do(ctx, http.MethodDelete, "/admin/v1/clients/"+url.PathEscape(args[1]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "client %s deleted; its tokens stop working within seconds\n", args[1])
		return nil
	case "create":
	default:
		return fmt.Errorf("client: unknown command %q", args[0])
	}
	fs := flag.NewFlagSet("client create", flag.ContinueOnError)
	tenant := fs.String("tenant", "", "tenant id (required)")
	scopes := fs.String("scopes", "", "comma-separated scopes (default: all CAMARA scopes)")
	rate := fs.String("rate", "", "request rate limit, e.g. 100/s or 6000/m (default: the verifier's)")
	quota := fs.Int64("quota", 0, "requests a day (default: the verifier's)")
	name := fs.String("name", "", "a name for the client")
	asJSON := fs.Bool("json", false, "print JSON (for scripts)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *tenant == "" {
		return errors.New("client create: --tenant is required")
	}
	body := map[string]any{"tenant": *tenant, "name": *name, "quota": *quota, "scopes": oauth.DefaultScopes()}
	if *scopes != "" {
		body["scopes"] = strings.Split(*scopes, ",")
	}
	if *rate != "" {
		r, err := oauth.ParseRate(*rate)
		if err != nil {
			return fmt.Errorf("client create: --rate: %w", err)
		}
		body["rate"] = r
	}
	var v oauth.ClientView
	if err := c.do(ctx, http.MethodPost, "/admin/v1/clients", body, &v); err != nil {
		return err
	}
	if *asJSON {
		out, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintln(c.out, string(out))
		return nil
	}
	fmt.Fprintf(c.out, "client_id:     %s\nclient_secret: %s\ntenant:        %s\nscopes:        %s\n(the secret is shown only now)\n",
		v.ID, v.Secret, v.Tenant, strings.Join(v.Scopes, " "))
	return nil
}

// deviceToken mints a three-legged CAMARA token naming one device.
func (c *adminClient) deviceToken(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	client := fs.String("client", "", "client id the token is for (required)")
	phone := fs.String("phone-number", "", "the device's phone number, E.164 with + (required)")
	var scopes stringList
	fs.Var(&scopes, "scope", "scope to grant (repeat; default: the client's)")
	ttl := fs.Duration("ttl", 0, "lifetime (default: the verifier's, 5m)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *client == "" || *phone == "" {
		return errors.New("token: --client and --phone-number are required")
	}
	body := map[string]any{"client_id": *client, "phone_number": *phone}
	if len(scopes) > 0 {
		body["scopes"] = []string(scopes)
	}
	if *ttl > 0 {
		body["ttl"] = ttl.String()
	}
	return c.call(ctx, http.MethodPost, "/admin/v1/tokens", body)
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func (c *adminClient) bind(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bind", flag.ContinueOnError)
	var imeis stringList
	fs.Var(&imeis, "imei", "allowed IMEI (repeat for several)")
	tac := fs.String("tac", "", "allow any device of this model (TAC prefix)")
	mode := fs.String("mode", "block", "block or alert")
	grace := fs.Duration("grace", 0, "how long a mismatch may last before blocking")
	noResume := fs.Bool("no-auto-resume", false, "stay blocked when the card returns; an operator resumes it")
	area := fs.String("area", "", "allow the card only within this circle: LAT,LON,RADIUS_M (degrees, metres)")
	iccid, err := parseWithArg(fs, args, "ICCID")
	if err != nil {
		return err
	}
	auto := !*noResume
	body := map[string]any{"imeis": []string(imeis), "tac": *tac, "mode": *mode, "auto_resume": auto}
	if *grace > 0 {
		body["grace"] = grace.String()
	}
	if *area != "" {
		a, err := parseArea(*area)
		if err != nil {
			return fmt.Errorf("bind: --area: %w", err)
		}
		body["area"] = a
	}
	return c.call(ctx, http.MethodPut, "/admin/v1/cards/"+url.PathEscape(iccid)+"/binding", body)
}

// parseArea parses LAT,LON,RADIUS_M; the verifier checks the ranges.
func parseArea(s string) (*verifier.Area, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%q: want LAT,LON,RADIUS_M such as 31.2304,121.4737,2000", s)
	}
	var v [3]float64
	for i, p := range parts {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil {
			return nil, fmt.Errorf("%q: %q is not a number", s, p)
		}
		v[i] = f
	}
	return &verifier.Area{Lat: v[0], Lon: v[1], RadiusM: v[2]}, nil
}

// cells handles "cells import": the cell table (OpenCelliD CSV, or its
// .gz as published) streams up; the verifier answers with the counts and
// the first malformed rows.
func (c *adminClient) cells(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "import" {
		return errors.New("cells: want import --file F")
	}
	fs := flag.NewFlagSet("cells import", flag.ContinueOnError)
	file := fs.String("file", "", "CSV in the OpenCelliD layout, or .csv.gz (required; - for stdin)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *file == "" {
		return errors.New("cells import: --file is required")
	}
	var in io.Reader = os.Stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return fmt.Errorf("cells import: %w", err)
		}
		defer f.Close()
		in = f
		if strings.HasSuffix(*file, ".gz") {
			zr, err := gzip.NewReader(f)
			if err != nil {
				return fmt.Errorf("cells import: %s: %w", *file, err)
			}
			defer zr.Close()
			in = zr
		}
	}
	resp, err := c.postCSV(ctx, "/admin/v1/cells/import", in)
	if err != nil {
		return fmt.Errorf("cells import: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusInternalServerError {
		return httpError(resp)
	}
	var res geo.ImportResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return fmt.Errorf("cells import: read the answer: %w", err)
	}
	for _, e := range res.Errors {
		fmt.Fprintf(c.errw, "line %d: %s\n", e.Line, e.Error)
	}
	if n := res.Skipped - len(res.Errors); n > 0 {
		fmt.Fprintf(c.errw, "... and %d more malformed rows\n", n)
	}
	fmt.Fprintf(c.out, "%d rows: %d cells imported, %d malformed rows skipped\n", res.Rows, res.Imported, res.Skipped)
	if res.Error != "" {
		return fmt.Errorf("cells import: %s", res.Error)
	}
	return nil
}

func (c *adminClient) onCard(ctx context.Context, args []string, method, suffix string, body any) error {
	if len(args) != 1 {
		return errors.New("want exactly one ICCID")
	}
	return c.call(ctx, method, "/admin/v1/cards/"+url.PathEscape(args[0])+suffix, body)
}

// importCards streams the file up and shows progress on stderr; line
// errors are printed, the summary goes to stdout.
func (c *adminClient) importCards(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	file := fs.String("file", "", "CSV or NDJSON file (required; - for stdin)")
	format := fs.String("format", "", "csv or ndjson (default: from the file name)")
	tenant := fs.String("tenant", "", "tenant for lines without one")
	dry := fs.Bool("dry-run", false, "print what would change and change nothing")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" {
		return errors.New("import: --file is required")
	}
	var in io.Reader = os.Stdin
	var size int64
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil {
			size = st.Size()
		}
		in = f
	}
	if *format == "" {
		*format = "csv"
		if strings.HasSuffix(*file, ".ndjson") || strings.HasSuffix(*file, ".jsonl") {
			*format = "ndjson"
		}
	}
	q := url.Values{"format": {*format}}
	if *tenant != "" {
		q.Set("tenant", *tenant)
	}
	if *dry {
		q.Set("dry_run", "true")
	}
	counted := &countingReader{r: in}
	resp, err := c.postCSV(ctx, "/admin/v1/cards/import?"+q.Encode(), counted)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return httpError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var final map[string]any
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("import: bad progress line: %w", err)
		}
		switch {
		case ev["error"] != nil && ev["summary"] == nil:
			fmt.Fprintf(c.errw, "\rline %v: %v\n", ev["line"], ev["error"])
		case ev["change"] != nil:
			fmt.Fprintf(c.errw, "\rline %v: would %v %v\n", ev["line"], ev["change"], ev["iccid"])
		case ev["progress"] != nil:
			p := ev["progress"].(map[string]any)
			bar := ""
			if size > 0 {
				bar = progressBar(float64(counted.n.Load()) / float64(size))
			}
			fmt.Fprintf(c.errw, "\r%s %v lines, %v created, %v changed, %v errors", bar, p["lines"], p["created"], p["changed"], p["errors"])
		case ev["summary"] != nil:
			final = ev
		}
	}
	fmt.Fprintln(c.errw)
	if err := sc.Err(); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	if final == nil {
		return errors.New("import: the verifier ended without a summary")
	}
	out, _ := json.MarshalIndent(final["summary"], "", "  ")
	fmt.Fprintln(c.out, string(out))
	if e, ok := final["error"]; ok {
		return fmt.Errorf("import: %v", e)
	}
	return nil
}

// postCSV streams body to the admin API path with the operator's
// credential; the caller closes the response body.
func (c *adminClient) postCSV(ctx context.Context, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "text/csv")
	return c.http.Do(req)
}

func progressBar(frac float64) string {
	if frac > 1 {
		frac = 1
	}
	const width = 30
	n := int(frac * width)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + fmt.Sprintf("] %3.0f%%", frac*100)
}

// call sends a request and prints the JSON answer.
func (c *adminClient) call(ctx context.Context, method, path string, body any) error {
	var v any
	if err := c.do(ctx, method, path, body, &v); err != nil {
		return err
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintln(c.out, string(out))
	return nil
}

// do sends a request with a JSON body and decodes the JSON answer into
// out (if not nil).
func (c *adminClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return httpError(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func httpError(resp *http.Response) error {
	var e struct {
		Error string `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return fmt.Errorf("verifier answered %s: %s", resp.Status, e.Error)
	}
	return fmt.Errorf("verifier answered %s: %s", resp.Status, strings.TrimSpace(string(b)))
}

// parseWithArg parses flags that may come before or after one positional
// argument.
func parseWithArg(fs *flag.FlagSet, args []string, what string) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if fs.NArg() == 0 {
		return "", fmt.Errorf("%s: missing %s", fs.Name(), what)
	}
	arg := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return "", err
	}
	if fs.NArg() != 0 {
		return "", fmt.Errorf("%s: unexpected %q", fs.Name(), fs.Arg(0))
	}
	return arg, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// history prints a card's history, one entry a line (--json: as the API
// returns it).
func (c *adminClient) history(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("history", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the entries as JSON")
	iccid, err := parseWithArg(fs, args, "ICCID")
	if err != nil {
		return err
	}
	path := "/admin/v1/cards/" + url.PathEscape(iccid) + "/history"
	if *asJSON {
		return c.call(ctx, http.MethodGet, path, nil)
	}
	var entries []verifier.HistoryEntry
	if err := c.do(ctx, http.MethodGet, path, nil, &entries); err != nil {
		return err
	}
	for _, e := range entries {
		who := string(e.Observed.Source)
		switch {
		case e.Observed.Actor != "":
			who += " " + e.Observed.Actor
		case e.Observed.DeviceID != "":
			who += " " + e.Observed.DeviceID
		}
		seen := string(e.Observed.IMEI)
		if seen == "" {
			seen = "-"
		}
		fmt.Fprintf(c.out, "%4d  %s  %-11s %-8s → %-8s seen_in=%-15s by %s", e.Seq, e.Time.Local().Format("2006-01-02 15:04:05.000"),
			e.Decision, e.From, e.To, seen, who)
		if e.Enforce != verifier.EnforceNone {
			fmt.Fprintf(c.out, "  enforce=%s", e.Enforce)
		}
		if e.Detail != "" {
			fmt.Fprintf(c.out, "  (%s)", e.Detail)
		}
		fmt.Fprintln(c.out)
	}
	return nil
}

// command sends a signed command to a device.
func (c *adminClient) command(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("command", flag.ContinueOnError)
	ttl := fs.Duration("ttl", 0, "how long the device may act on it (default 5m)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("command: want a device id and report-now, radio-off or radio-on")
	}
	kinds := map[string]protocol.CommandKind{"report-now": protocol.CommandReportNow,
		"radio-off": protocol.CommandRadioOff, "radio-on": protocol.CommandRadioOn}
	kind, ok := kinds[fs.Arg(1)]
	if !ok {
		return fmt.Errorf("command: %q: want report-now, radio-off or radio-on", fs.Arg(1))
	}
	body := map[string]any{"kind": kind}
	if *ttl > 0 {
		body["ttl"] = ttl.String()
	}
	return c.call(ctx, http.MethodPost, "/admin/v1/devices/"+url.PathEscape(fs.Arg(0))+"/commands", body)
}

package fleet

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cardbind/cardbind/agent/state"
	"github.com/cardbind/cardbind/protocol"
)

// admin calls the verifier's admin API and enrolment endpoint.
type admin struct {
	base  string
	token string
	hc    *http.Client
}

// errNotFound is a 404 from the admin API.
var errNotFound = errors.New("not found")

// call sends a JSON (or raw, for import) request and decodes a JSON answer.
func (a *admin) call(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if a.token != "" && strings.HasPrefix(path, "/admin/") {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode == http.StatusNotFound {
			return fmt.Errorf("%s %s: %w", method, path, errNotFound)
		}
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(raw)))
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if w, ok := out.(io.Writer); ok {
		_, err = io.Copy(w, resp.Body)
	} else {
		err = json.NewDecoder(resp.Body).Decode(out)
	}
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	return nil
}

func (a *admin) jsonCall(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(raw)
	}
	return a.call(ctx, method, path, "application/json", body, out)
}

// ensureTenant creates the tenant unless it exists.
func (a *admin) ensureTenant(ctx context.Context, tenant string) (created bool, err error) {
	var ts []struct {
		ID string `json:"id"`
	}
	if err := a.jsonCall(ctx, http.MethodGet, "/admin/v1/tenants", nil, &ts); err != nil {
		return false, fmt.Errorf("list tenants: %w", err)
	}
	for _, t := range ts {
		if t.ID == tenant {
			return false, nil
		}
	}
	if err := a.jsonCall(ctx, http.MethodPost, "/admin/v1/tenants", map[string]string{"id": tenant, "name": "fleet simulator"}, nil); err != nil {
		return false, fmt.Errorf("create tenant %s: %w", tenant, err)
	}
	return true, nil
}

// importSummary is the last line of the import answer.
type importSummary struct {
	Lines, Created, Changed, Unchanged, Bound, Errors int
}

// importCards imports gateways [from, to) as cards of tenant, each bound
// to its gateway's IMEI (mode block, resumed automatically), in one CSV
// request.
func (a *admin) importCards(ctx context.Context, tenant string, from, to int) (importSummary, error) {
	var csv bytes.Buffer
	csv.Grow((to - from) * 96)
	csv.WriteString("iccid,tenant,imsi,msisdn,imei,mode,auto_resume\n")
	for i := from; i < to; i++ {
		id := identityOf(i)
		fmt.Fprintf(&csv, "%s,%s,%s,%s,%s,block,true\n", id.SIM.ICCID, tenant, id.SIM.IMSI, id.SIM.MSISDN, id.IMEI)
	}
	var out bytes.Buffer
	if err := a.call(ctx, http.MethodPost, "/admin/v1/cards/import?format=csv", "text/csv", &csv, &out); err != nil {
		return importSummary{}, fmt.Errorf("import cards: %w", err)
	}
	var sum importSummary
	var firstErr string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var line struct {
			Line    int            `json:"line"`
			Error   string         `json:"error"`
			Summary *importSummary `json:"summary"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return sum, fmt.Errorf("import cards: answer line %q: %w", sc.Text(), err)
		}
		if line.Summary != nil {
			sum = *line.Summary
		}
		if line.Error != "" && firstErr == "" {
			firstErr = fmt.Sprintf("line %d: %s", line.Line, line.Error)
		}
	}
	if firstErr != "" || sum.Errors > 0 {
		return sum, fmt.Errorf("import cards: %d lines refused, first %s", sum.Errors, firstErr)
	}
	if sum.Lines != to-from {
		return sum, fmt.Errorf("import cards: the verifier read %d lines, sent %d", sum.Lines, to-from)
	}
	return sum, nil
}

// enrollToken mints a one-time enrolment token for tenant.
func (a *admin) enrollToken(ctx context.Context, tenant string) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	if err := a.jsonCall(ctx, http.MethodPost, "/admin/v1/tenants/"+tenant+"/enrollment-tokens", map[string]string{"ttl": "1h"}, &out); err != nil {
		return "", fmt.Errorf("enrolment token: %w", err)
	}
	return out.Token, nil
}

// enroll enrols gateway i as cardbind-agent enroll does: a new signing key
// in its state directory, the public half with a fresh token to the
// enrolment endpoint, the answer saved.
func (a *admin) enroll(ctx context.Context, tenant string, i int, dir *state.Dir) (*protocol.EnrollResponse, error) {
	token, err := a.enrollToken(ctx, tenant)
	if err != nil {
		return nil, err
	}
	id := identityOf(i)
	key, err := dir.NewKey()
	if err != nil {
		return nil, err
	}
	req := &protocol.EnrollRequest{Version: protocol.Version, Token: token, IMEI: protocol.IMEI(id.IMEI),
		ICCID: protocol.ICCID(id.SIM.ICCID), PublicKey: key.Public().(ed25519.PublicKey),
		AgentVersion: "firmware-sim-fleet", Hostname: "fleet-" + strconv.Itoa(i)}
	body, err := protocol.EncodeEnrollRequest(req)
	if err != nil {
		return nil, err
	}
	var raw bytes.Buffer
	if err := a.call(ctx, http.MethodPost, protocol.EnrollPath, "application/json", bytes.NewReader(body), &raw); err != nil {
		return nil, fmt.Errorf("enrol gateway %d: %w", i, err)
	}
	resp, err := protocol.DecodeEnrollResponse(raw.Bytes())
	if err != nil {
		return nil, fmt.Errorf("enrol gateway %d: the verifier's answer: %w", i, err)
	}
	if err := dir.SaveCredentials(resp); err != nil {
		return nil, err
	}
	// Reports queued under an older enrolment would be refused as forged.
	if err := os.RemoveAll(filepath.Join(dir.Path(), outboxDir)); err != nil {
		return nil, fmt.Errorf("clear the old outbox: %w", err)
	}
	return resp, nil
}

// outboxDir is the outbox inside a gateway's state directory, as for
// cardbind-agent.
const outboxDir = "outbox"

// cache is the fleet's record in the state directory of what the verifier
// already has.
type cache struct {
	Verifier string `json:"verifier"`
	Tenant   string `json:"tenant"`
	// Imported is how many gateways' cards (0..Imported-1) were imported
	// and bound.
	Imported int `json:"imported"`
}

const cacheFile = "fleet.json"

func readCache(dir string) cache {
	var c cache
	b, err := os.ReadFile(filepath.Join(dir, cacheFile))
	if err == nil {
		_ = json.Unmarshal(b, &c)
	}
	return c
}

func writeCache(dir string, c cache) error {
	b, _ := json.MarshalIndent(c, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, cacheFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save %s: %w", cacheFile, err)
	}
	return nil
}

// deviceDir is gateway i's state directory.
func deviceDir(root string, i int) string {
	return filepath.Join(root, "devices", identityOf(i).IMEI)
}

// Enrolment says what setting the fleet up with the verifier did.
type Enrolment struct {
	TenantCreated bool
	Imported      int // cards imported and bound in this run
	Enrolled      int // gateways enrolled in this run
	Reused        int // gateways whose cached enrolment was used
	Took          time.Duration
}

// prepare makes the verifier know the fleet: tenant, cards and bindings,
// enrolled gateways; what it already knows (per the cache in stateDir) is
// reused. It returns every gateway's credentials.
func prepare(ctx context.Context, cfg *Config, a *admin, progress func(string)) ([]*protocol.EnrollResponse, Enrolment, error) {
	start := time.Now()
	var e Enrolment
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, e, fmt.Errorf("state dir: %w", err)
	}
	c := readCache(cfg.StateDir)
	stale := c.Verifier != cfg.VerifierURL || c.Tenant != cfg.Tenant
	if !stale && c.Imported > 0 {
		// The verifier may have been started afresh since: ask it about
		// the first gateway's card.
		err := a.jsonCall(ctx, http.MethodGet, "/admin/v1/cards/"+identityOf(0).SIM.ICCID, nil, nil)
		if errors.Is(err, errNotFound) {
			progress("the verifier does not know the cached fleet: importing and enrolling again")
			stale = true
		} else if err != nil {
			return nil, e, err
		}
	}
	if stale {
		c = cache{Verifier: cfg.VerifierURL, Tenant: cfg.Tenant}
	}
	created, err := a.ensureTenant(ctx, cfg.Tenant)
	if err != nil {
		return nil, e, err
	}
	e.TenantCreated = created
	if c.Imported < cfg.Devices {
		progress(fmt.Sprintf("importing %d cards with their bindings (CSV)", cfg.Devices-c.Imported))
		if _, err := a.importCards(ctx, cfg.Tenant, c.Imported, cfg.Devices); err != nil {
			return nil, e, err
		}
		e.Imported = cfg.Devices - c.Imported
		c.Imported = cfg.Devices
		if err := writeCache(cfg.StateDir, c); err != nil {
			return nil, e, err
		}
	}

	creds := make([]*protocol.EnrollResponse, cfg.Devices)
	var todo []int
	for i := range cfg.Devices {
		dir, err := state.Open(deviceDir(cfg.StateDir, i))
		if err != nil {
			return nil, e, err
		}
		if !stale {
			if r, err := dir.Credentials(); err == nil {
				if _, kerr := dir.Key(); kerr == nil {
					creds[i] = r
					e.Reused++
					continue
				}
			}
		}
		todo = append(todo, i)
	}
	if len(todo) > 0 {
		progress(fmt.Sprintf("enrolling %d gateways (%d cached)", len(todo), e.Reused))
		if err := enrollAll(ctx, cfg, a, todo, creds, progress); err != nil {
			return nil, e, err
		}
		e.Enrolled = len(todo)
	}
	e.Took = time.Since(start)
	return creds, e, nil
}

// enrollAll enrols the gateways in todo with a few parallel workers.
func enrollAll(ctx context.Context, cfg *Config, a *admin, todo []int, creds []*protocol.EnrollResponse, progress func(string)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var done atomic.Int64
	var wg sync.WaitGroup
	for range cfg.EnrollWorkers {
		wg.Go(func() {
			for i := range next {
				dir, err := state.Open(deviceDir(cfg.StateDir, i))
				if err == nil {
					creds[i], err = a.enroll(ctx, cfg.Tenant, i, dir)
				}
				if err != nil {
					cancel(err)
					return
				}
				if n := done.Add(1); n%10000 == 0 {
					progress(fmt.Sprintf("enrolled %d of %d", n, len(todo)))
				}
			}
		})
	}
feed:
	for _, i := range todo {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("enrolment: %w", err)
	}
	return nil
}

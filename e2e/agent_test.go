package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
)

// The story of issue "cardbind-agent", for every modem personality: the
// real agent binary, on a firmware-sim modem behind a pseudo-terminal,
// identifies the modem, enrols with a token from the admin API, reports to
// the real verifier, and a SIM swap through the modem's control API turns
// into a change report within a second, which blocks the bound card at the
// simulated network; swapping it back resumes it. A modem reboot, garbled
// answers and unanswered commands are survived.

// simCard is a SIM the tests move between slots.
type simCard struct{ iccid, imsi, msisdn string }

// agentRig is one gateway: a simulated modem with an agent on it.
type agentRig struct {
	t           *testing.T
	v           *verifier
	admin       api // the verifier's admin API, failing this test
	network     api
	personality string
	imei        string
	home, other simCard // home is bound to this gateway; other is not bound
	dir         string
	link        string
	control     api
	modem       *proc
	agent       *proc
	agents      []*proc // every agent process started, in order
	stateDir    string
	configPath  string
	allowRadio  bool // modem.allow_radio in the agent's configuration
}

// newRig provisions two cards at the network and in the verifier's
// inventory (tenant "fleet", which must exist), home bound to the gateway's
// IMEI, and starts the modem with the home card in its slot.
func newRig(t *testing.T, v *verifier, network api, personality string, n int) *agentRig {
	r := &agentRig{t: t, v: v, admin: api{t: t, base: v.admin.base, token: v.admin.token},
		network: api{t: t, base: network.base}, personality: personality,
		imei: protocol.WithCheckDigit(fmt.Sprintf("35693803%06d", 100+n)), dir: t.TempDir()}
	card := func(k int) simCard {
		return simCard{iccid: fmt.Sprintf("8986031864%02d%d000000", n, k), imsi: fmt.Sprintf("46003%02d%d0000000", n, k),
			msisdn: fmt.Sprintf("+86139%02d%d00000", n, k)}
	}
	r.home, r.other = card(1), card(2)
	csv := "iccid,tenant,imsi,msisdn,imei\n"
	for i, c := range []simCard{r.home, r.other} {
		r.network.must("POST", "/v1/cards", map[string]string{"iccid": c.iccid, "imsi": c.imsi, "msisdn": c.msisdn}, nil)
		imei := ""
		if i == 0 {
			imei = r.imei
		}
		csv += fmt.Sprintf("%s,fleet,%s,%s,%s\n", c.iccid, c.imsi, c.msisdn, imei)
	}
	r.admin.must("POST", "/admin/v1/cards/import?format=csv", csv, nil)

	r.link = filepath.Join(r.dir, "tty")
	ctl := freeAddr(t)
	r.modem = start(t, "firmware-sim", "modem", "--personality", personality, "--imei", r.imei,
		"--iccid", r.home.iccid, "--imsi", r.home.imsi, "--msisdn", r.home.msisdn, "--link", r.link,
		"--control", ctl, "--network", v.netURL, "--reboot-down", "1s")
	r.control = api{t: t, base: "http://" + ctl}
	waitHTTP(t, r.control.base+"/state", r.modem)
	r.stateDir = filepath.Join(r.dir, "state")
	r.configPath = filepath.Join(r.dir, "agent.toml")
	r.writeConfig("10m")
	return r
}

// writeConfig writes the agent's configuration file.
func (r *agentRig) writeConfig(heartbeat string) {
	cfg := fmt.Sprintf(`state_dir = %q
[modem]
port = %q
reopen_max = "500ms"
allow_radio = %v
[report]
heartbeat = %q
poll = "2s"
min_backoff = "100ms"
max_backoff = "500ms"
flush_timeout = "2s"
[log]
level = "debug"
`, r.stateDir, r.link, r.allowRadio, heartbeat)
	if err := os.WriteFile(r.configPath, []byte(cfg), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

// agentCmd runs a short cardbind-agent command and returns its stdout.
func (r *agentRig) agentCmd(args ...string) string {
	r.t.Helper()
	p := start(r.t, "cardbind-agent", args...)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		r.t.Fatalf("cardbind-agent %s did not finish:\n%s", args[0], p.output())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		r.t.Fatalf("cardbind-agent %s: exit %d:\n%s", args[0], code, p.output())
	}
	return p.output()
}

// identify checks what "cardbind-agent identify" prints.
func (r *agentRig) identify() {
	out := r.agentCmd("identify", "--port", r.link)
	var id struct {
		Vendor string `json:"vendor"`
		IMEI   string `json:"imei"`
		ICCID  string `json:"iccid"`
		IMSI   string `json:"imsi"`
		SIM    struct {
			State string `json:"state"`
		} `json:"sim"`
	}
	if err := json.Unmarshal([]byte(out), &id); err != nil {
		r.t.Fatalf("identify output is not JSON: %v\n%s", err, out)
	}
	if id.Vendor != r.personality || id.IMEI != r.imei || id.ICCID != r.home.iccid || id.IMSI != r.home.imsi || id.SIM.State != "ready" {
		r.t.Errorf("identify printed %+v, want vendor %s imei %s iccid %s imsi %s", id, r.personality, r.imei, r.home.iccid, r.home.imsi)
	}
}

// enroll enrols the gateway with a token from the admin API and checks the
// files it leaves.
func (r *agentRig) enroll() {
	var tok struct{ Token string }
	r.admin.must("POST", "/admin/v1/tenants/fleet/enrollment-tokens", map[string]string{"ttl": "1h"}, &tok)
	out := r.agentCmd("enroll", "--verifier", "http://"+r.v.httpAddr, "--token", tok.Token,
		"--state-dir", r.stateDir, "--port", r.link)
	var res struct {
		DeviceID string `json:"device_id"`
		IMEI     string `json:"imei"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.DeviceID == "" || res.IMEI != r.imei {
		r.t.Fatalf("enroll printed %q (%v)", out, err)
	}
	for path, want := range map[string]os.FileMode{r.stateDir: 0o700, filepath.Join(r.stateDir, "device.key"): 0o600,
		filepath.Join(r.stateDir, "credentials.json"): 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			r.t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			r.t.Errorf("%s has mode %v, want %v", path, st.Mode().Perm(), want)
		}
	}
}

// run starts the agent daemon.
func (r *agentRig) run() {
	r.agent = start(r.t, "cardbind-agent", "run", "--config", r.configPath)
	r.agents = append(r.agents, r.agent)
}

// log returns the output of every agent process so far.
func (r *agentRig) log() string {
	var b strings.Builder
	for _, p := range r.agents {
		b.WriteString(p.output())
	}
	return b.String()
}

type cardStatus struct {
	State    string    `json:"state"`
	LastIMEI string    `json:"last_imei"`
	LastSeen time.Time `json:"last_seen"`
}

func (r *agentRig) status(c simCard) cardStatus {
	var card struct {
		Status cardStatus `json:"status"`
	}
	r.admin.must("GET", "/admin/v1/cards/"+c.iccid, nil, &card)
	return card.Status
}

// seenAfter waits until the verifier has a report of c in this gateway
// newer than t, and returns when it noticed.
func (r *agentRig) seenAfter(c simCard, after time.Time, timeout time.Duration) time.Time {
	r.t.Helper()
	eventually(r.t, timeout, "a report of "+c.iccid+" in "+r.imei, func() bool {
		s := r.status(c)
		return s.LastIMEI == r.imei && s.LastSeen.After(after)
	})
	return time.Now()
}

func (r *agentRig) blocked(c simCard) bool { return blockedAtNetwork(r.t, r.network, c.iccid) }

func (r *agentRig) swap(c simCard) {
	r.t.Helper()
	r.control.must("POST", "/sim/swap", map[string]string{"iccid": c.iccid, "imsi": c.imsi, "msisdn": c.msisdn, "gap": "100ms"}, nil)
}

// report is one "report queued" line of the agent's log.
type report struct {
	at     time.Time
	seq    uint64
	reason string
	sim    string
	iccid  string
}

var (
	queuedRE    = regexp.MustCompile(`time=(\S+) level=INFO msg="report queued" seq=(\d+) reason=(\w+) sim=(\w+) iccid=("?[0-9A-F]*"?)`)
	deliveredRE = regexp.MustCompile(`msg=delivered part=link seq=(\d+)`)
)

func (r *agentRig) reports() []report {
	var out []report
	for _, m := range queuedRE.FindAllStringSubmatch(r.log(), -1) {
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			r.t.Fatalf("log time %q: %v", m[1], err)
		}
		seq, _ := strconv.ParseUint(m[2], 10, 64)
		out = append(out, report{at: at, seq: seq, reason: m[3], sim: m[4], iccid: strings.Trim(m[5], `"`)})
	}
	return out
}

func (r *agentRig) delivered() []uint64 {
	var out []uint64
	for _, m := range deliveredRE.FindAllStringSubmatch(r.log(), -1) {
		seq, _ := strconv.ParseUint(m[1], 10, 64)
		out = append(out, seq)
	}
	return out
}

// queuedAfter waits for the agent to queue a change report of c (or of an
// empty slot, for the zero simCard) after t and returns it.
func (r *agentRig) queuedAfter(c simCard, after time.Time, timeout time.Duration) report {
	r.t.Helper()
	var found report
	eventually(r.t, timeout, "the agent to queue a report of "+c.iccid, func() bool {
		for _, rep := range r.reports() {
			if rep.at.After(after) && rep.iccid == c.iccid && (c.iccid != "" || rep.sim == "absent") {
				found = rep
				return true
			}
		}
		return false
	})
	return found
}

// waitModemReady waits until the agent has set the modem up n times.
func (r *agentRig) waitModemReady(n int) {
	r.t.Helper()
	eventually(r.t, 20*time.Second, fmt.Sprintf("the agent to set the modem up %d times", n), func() bool {
		return strings.Count(r.log(), `msg="modem ready"`) >= n
	})
}

func TestAgentEveryPersonality(t *testing.T) {
	network, netURL := startNetwork(t)
	v := startVerifier(t, t.TempDir(), netURL)
	v.admin.must("POST", "/admin/v1/tenants", map[string]string{"id": "fleet"}, nil)
	for i, p := range []string{"generic", "quectel", "simcom", "ublox"} {
		t.Run(p, func(t *testing.T) {
			t.Parallel()
			agentStory(t, newRig(t, v, network, p, i+1))
		})
	}
	t.Cleanup(func() {
		m := metrics(t, v)
		for _, bad := range []string{"forged", "replayed", "malformed", "unknown_device"} {
			if !strings.Contains(m, `cardbind_reports_total{outcome="`+bad+`"} 0`) {
				t.Errorf("the verifier counted %s reports:\n%s", bad, grepLines(m, "cardbind_reports_total"))
			}
		}
	})
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func agentStory(t *testing.T, r *agentRig) {
	r.identify()
	r.enroll()
	begin := time.Now()
	r.run()
	r.seenAfter(r.home, begin, 20*time.Second)
	r.waitModemReady(1)
	if r.blocked(r.home) {
		t.Fatal("home card blocked while in its own gateway")
	}

	// The home card is taken out and another put in: a change report
	// within a second, the home card blocked at the network.
	t0 := time.Now()
	r.swap(r.other)
	absent := r.queuedAfter(simCard{}, t0, 5*time.Second)
	other := r.queuedAfter(r.other, t0, 5*time.Second)
	atVerifier := r.seenAfter(r.other, t0, 10*time.Second)
	t.Logf("%s: swap → report queued: removal %v, new SIM %v (incl. 100ms gap); → at the verifier %v",
		r.personality, absent.at.Sub(t0).Round(time.Millisecond), other.at.Sub(t0).Round(time.Millisecond),
		atVerifier.Sub(t0).Round(time.Millisecond))
	if d := other.at.Sub(t0); d > time.Second+100*time.Millisecond {
		t.Errorf("the new SIM was reported %v after the swap, want within 1s of the insertion", d)
	}
	if absent.reason != "change" || other.reason != "change" {
		t.Errorf("reasons %q, %q, want change", absent.reason, other.reason)
	}
	eventually(t, 10*time.Second, "home card blocked at the network", func() bool { return r.blocked(r.home) })

	// Back in its gateway: resumed.
	t1 := time.Now()
	r.swap(r.home)
	r.seenAfter(r.home, t1, 10*time.Second)
	eventually(t, 10*time.Second, "home card resumed at the network", func() bool { return !r.blocked(r.home) })
	t.Logf("%s: swap back → resumed at the network in %v", r.personality, time.Since(t1).Round(time.Millisecond))

	// The modem reboots (the port vanishes for a second and comes back):
	// the agent reopens it and still reports a swap.
	r.control.must("POST", "/reboot", map[string]string{"downFor": "1s"}, nil)
	r.waitModemReady(2)
	t2 := time.Now()
	r.swap(r.other)
	r.seenAfter(r.other, t2, 10*time.Second)
	eventually(t, 10*time.Second, "home card blocked after the reboot", func() bool { return r.blocked(r.home) })

	// Garbled answers and unanswered commands: the agent resynchronises
	// and the swap back still gets through.
	r.control.must("PUT", "/faults", map[string]any{"garble": 3, "noResponse": 2}, nil)
	t3 := time.Now()
	r.swap(r.home)
	r.seenAfter(r.home, t3, 30*time.Second)
	eventually(t, 10*time.Second, "home card resumed after faults", func() bool { return !r.blocked(r.home) })
	t.Logf("%s: swap under faults → resumed in %v", r.personality, time.Since(t3).Round(time.Millisecond))

	t.Logf("%s: agent RSS after the story: %s", r.personality, rss(r.agent))

	// SIGTERM while connected: the outbox is flushed and the agent exits 0.
	r.agent.stop(10 * time.Second)
	if code := r.agent.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("agent exit code after SIGTERM = %d, want 0", code)
	}
	if !strings.Contains(r.agent.output(), "msg=stopped queued=0") {
		t.Errorf("agent did not stop with an empty outbox:\n%s", grepLines(r.agent.output(), "msg=stop"))
	}
}

// The verifier's radio commands reach the real agent, which takes the
// modem's radio down (AT+CFUN=4) and up again, keeps it down across a modem
// reboot, and acknowledges each command in its next report.
func TestAgentRadioCommand(t *testing.T) {
	network, netURL := startNetwork(t)
	v := startVerifier(t, t.TempDir(), netURL)
	v.admin.must("POST", "/admin/v1/tenants", map[string]string{"id": "fleet"}, nil)
	r := newRig(t, v, network, "simcom", 8)
	r.allowRadio = true
	r.writeConfig("10m")
	r.enroll()
	var dev struct {
		DeviceID string `json:"device_id"`
	}
	if err := json.Unmarshal(readFileBytes(t, filepath.Join(r.stateDir, "credentials.json")), &dev); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	r.run()
	r.seenAfter(r.home, begin, 20*time.Second)

	var modem struct {
		CFUN         int `json:"cfun"`
		Boots        int `json:"boots"`
		Registration struct {
			Stat int `json:"stat"`
		} `json:"registration"`
	}
	state := func() {
		r.control.must("GET", "/state", nil, &modem)
	}
	command := func(kind string) time.Time {
		at := time.Now()
		r.admin.must("POST", "/admin/v1/devices/"+dev.DeviceID+"/commands", map[string]string{"kind": kind}, nil)
		return at
	}
	requested := func(after time.Time) bool {
		for _, rep := range r.reports() {
			if rep.reason == "requested" && rep.at.After(after) {
				return true
			}
		}
		return false
	}

	off := command("radio_off")
	eventually(t, 10*time.Second, "the radio down", func() bool { state(); return modem.CFUN == 4 })
	eventually(t, 5*time.Second, "a report acknowledging radio_off", func() bool { return requested(off) })
	t.Logf("radio_off → AT+CFUN=4 and acknowledged in %v", time.Since(off).Round(time.Millisecond))

	// The modem reboots with its radio on; the agent takes it down again.
	state()
	boots := modem.Boots
	r.control.must("POST", "/reboot", map[string]string{"downFor": "500ms"}, nil)
	eventually(t, 15*time.Second, "the modem rebooted", func() bool { state(); return modem.Boots > boots })
	eventually(t, 15*time.Second, "the radio down again after the reboot", func() bool {
		state()
		return modem.CFUN == 4 && modem.Registration.Stat == 0
	})
	if n := strings.Count(r.log(), `msg="at: tx" part=modem cmd="AT+CFUN=4"`); n < 2 {
		t.Errorf("AT+CFUN=4 sent %d times, want again after the reboot", n)
	}

	on := command("radio_on")
	eventually(t, 10*time.Second, "the radio up and registered", func() bool {
		state()
		return modem.CFUN == 1 && modem.Registration.Stat == 1
	})
	eventually(t, 5*time.Second, "a report acknowledging radio_on", func() bool { return requested(on) })

	// report_now: a report at once, although nothing changed.
	now := command("report_now")
	eventually(t, 5*time.Second, "a report for report_now", func() bool { return requested(now) })
	if n := strings.Count(r.log(), `msg="command done"`); n != 3 {
		t.Errorf("%d commands done, want 3", n)
	}
}

func readFileBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rss returns a running process's resident set size, from /proc.
func rss(p *proc) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// With the broker down, changes pile up in the outbox; the agent is
// restarted meanwhile (SIGTERM exits 0, the outbox stays on disk); when the
// broker is back every report arrives, in the order the agent signed them.
func TestAgentOfflineRestart(t *testing.T) {
	network, netURL := startNetwork(t)
	v := startVerifier(t, t.TempDir(), netURL)
	v.admin.must("POST", "/admin/v1/tenants", map[string]string{"id": "fleet"}, nil)
	r := newRig(t, v, network, "quectel", 9)
	r.enroll()
	begin := time.Now()
	r.run()
	r.seenAfter(r.home, begin, 20*time.Second)

	// SIGHUP reloads the configuration: a shorter heartbeat applies at once.
	r.writeConfig("1s")
	if err := r.agent.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	hup := time.Now()
	eventually(t, 5*time.Second, "a heartbeat after SIGHUP", func() bool {
		for _, rep := range r.reports() {
			if rep.reason == "heartbeat" && rep.at.After(hup) {
				return true
			}
		}
		return false
	})
	r.writeConfig("10m")
	_ = r.agent.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "the second reload", func() bool {
		return strings.Count(r.log(), `msg="configuration reloaded"`) >= 2
	})
	// A broken file is refused on SIGHUP, naming the key; the agent runs on.
	r.writeConfig("0s")
	_ = r.agent.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "the broken file refused", func() bool {
		return strings.Contains(r.log(), `msg="reload refused; keeping the running configuration" err="config: report.heartbeat: 0s`)
	})
	r.writeConfig("10m")

	v.proc.stop(10 * time.Second)
	offline := time.Now()
	// Offline: out and back in, and out again.
	for _, c := range []simCard{r.other, r.home, r.other} {
		at := time.Now()
		r.swap(c)
		r.queuedAfter(c, at, 5*time.Second)
	}
	r.agent.stop(10 * time.Second)
	if code := r.agent.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("agent exit code after SIGTERM = %d, want 0", code)
	}
	// While the agent is down the home card goes back; the restarted
	// agent reports it at start, still offline, then another swap.
	r.swap(r.home)
	restart := time.Now()
	r.run()
	r.queuedAfter(r.home, restart, 10*time.Second)
	at := time.Now()
	r.swap(r.other)
	r.queuedAfter(r.other, at, 5*time.Second)
	at = time.Now()
	r.swap(r.home)
	r.queuedAfter(r.home, at, 5*time.Second)

	var queued []uint64
	for _, rep := range r.reports() {
		if rep.at.After(offline) {
			queued = append(queued, rep.seq)
		}
	}
	if !slices.IsSorted(queued) {
		t.Errorf("sequence numbers not increasing across the restart: %v", queued)
	}
	t.Logf("%d reports queued while the broker was down: seq %v", len(queued), queued)

	v.restart(t)
	eventually(t, 30*time.Second, "every queued report delivered", func() bool {
		d := r.delivered()
		for _, s := range queued {
			if !slices.Contains(d, s) {
				return false
			}
		}
		return true
	})
	// Delivered in the order they were signed (the link logs each PUBACK).
	d := r.delivered()
	var got []uint64
	for _, s := range d {
		if slices.Contains(queued, s) {
			got = append(got, s)
		}
	}
	if !slices.Equal(got, queued) {
		t.Errorf("delivered %v, want %v", got, queued)
	}
	// The verifier handled them all: accepted, or overtaken by a later
	// change of the same device that was taken early (a heartbeat queued
	// before it); none refused as a replay, which an out-of-order report
	// would be.
	eventually(t, 10*time.Second, "the verifier to handle the offline reports", func() bool {
		m := metrics(t, v)
		n := 0
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, `cardbind_reports_total{outcome="accepted"} `) ||
				strings.HasPrefix(l, `cardbind_reports_total{outcome="overtaken"} `) {
				k, _ := strconv.Atoi(strings.Fields(l)[1])
				n += k
			}
		}
		return n >= len(queued)
	})
	m := metrics(t, v)
	for _, bad := range []string{"forged", "replayed"} {
		if !strings.Contains(m, `cardbind_reports_total{outcome="`+bad+`"} 0`) {
			t.Errorf("reports refused as %s after the outage:\n%s", bad, grepLines(m, "cardbind_reports_total"))
		}
	}
	// The home card's history replays the offline story: separated, back,
	// separated, back...; it ends in its gateway, not blocked.
	eventually(t, 10*time.Second, "home card active at the end", func() bool {
		return r.status(r.home).State == "active" && !r.blocked(r.home)
	})
	var decisions []string
	for _, h := range fullHistory(t, v, r.home.iccid) {
		decisions = append(decisions, string(h.Decision))
	}
	if n := strings.Count(strings.Join(decisions, " "), "separated"); n < 2 {
		t.Errorf("home card history %v: want at least two separations replayed", decisions)
	}
}

package radius

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestRadclientInterop has FreeRADIUS's radclient (Debian package
// freeradius-utils; scripts/install-test-deps.sh installs it) send the
// hand-written requests in testdata/radclient, 3GPP vendor attributes in
// radclient's own syntax, and checks that the server accepts them.
func TestRadclientInterop(t *testing.T) {
	radclient, err := exec.LookPath("radclient")
	if err != nil {
		t.Skip("radclient not installed (apt-get install freeradius-utils, or scripts/install-test-deps.sh); interoperability not tested")
	}
	if _, err := os.Stat("/usr/share/freeradius/dictionary.3gpp"); err != nil {
		t.Skip("radclient has no 3GPP dictionary (/usr/share/freeradius/dictionary.3gpp); interoperability not tested")
	}
	h := newHarness(t, nil, testCard)
	run := func(file string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, radclient, "-d", "testdata/radclient", "-x", "-r", "2", "-t", "2",
			"-f", "testdata/radclient/"+file, h.addr.String(), "acct", testSecret)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("radclient %s: %v\n%s", file, err, out)
		}
		t.Logf("radclient %s:\n%s", file, out)
	}

	run("start.txt")
	obs := h.obs.observations()
	if len(obs) != 1 || obs[0].ICCID != testCard.ICCID || obs[0].IMEI != "354882091234560" {
		t.Fatalf("observations after radclient's Start = %+v", obs)
	}
	c := h.cards.get(testCard.ICCID)
	if c.IPv4 != netip.MustParseAddr("10.45.0.9") || c.IPv6 != netip.MustParsePrefix("2001:db8:9::/64") {
		t.Errorf("card addresses after Start = %v %v", c.IPv4, c.IPv6)
	}
	if s := h.srv.Stats(); s.Malformed != 0 || s.SkippedAttributes != 0 || s.Answered != 1 {
		t.Errorf("stats after Start = %+v (location or serving network not decoded?)", s)
	}

	run("stop.txt")
	c = h.cards.get(testCard.ICCID)
	if c.IPv4.IsValid() || c.IPv6.IsValid() {
		t.Errorf("card addresses after Stop = %v %v, want none", c.IPv4, c.IPv6)
	}
}

package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
)

// historyEntry is the part of a history entry the crash test reads.
type historyEntry struct {
	Seq      uint64             `json:"seq"`
	Decision protocol.Decision  `json:"decision"`
	From     protocol.CardState `json:"from"`
	To       protocol.CardState `json:"to"`
	Observed struct {
		Ref string `json:"ref"`
	} `json:"observed"`
}

func fullHistory(t *testing.T, v *verifier, iccid string) []historyEntry {
	var all []historyEntry
	var after uint64
	for {
		var page []historyEntry
		v.admin.must("GET", fmt.Sprintf("/admin/v1/cards/%s/history?after=%d&limit=1000", iccid, after), nil, &page)
		all = append(all, page...)
		if len(page) == 0 {
			return all
		}
		after = page[len(page)-1].Seq
	}
}

// crashDevice is one gateway of the crash test: its card, its IMEI, and
// the sequence numbers the broker acknowledged.
type crashDevice struct {
	*device
	iccid string
	imei  string
	acked []uint64
}

// The crash test of issue "verifier core": the verifier is killed with
// SIGKILL while reports flow. After a restart on the same data directory
// every report that got a PUBACK has been processed exactly once in
// effect: one history entry each, none missing, none twice, no block on
// top of a block; and the store opens consistent.
func TestCrashWhileReportsFlow(t *testing.T) {
	const devices = 12
	network, netURL := startNetwork(t)
	v := startVerifier(t, t.TempDir(), netURL)
	v.admin.must("POST", "/admin/v1/tenants", map[string]string{"id": "acme"}, nil)

	var csv strings.Builder
	csv.WriteString("iccid,tenant,imsi\n")
	gws := make([]*crashDevice, devices)
	for i := range gws {
		iccid := protocol.WithCheckDigit(fmt.Sprintf("898603186402201%04d", i))
		imsi := fmt.Sprintf("4600312345%05d", i)
		network.must("POST", "/v1/cards", map[string]string{"iccid": iccid, "imsi": imsi}, nil)
		fmt.Fprintf(&csv, "%s,acme,%s\n", iccid, imsi)
		gws[i] = &crashDevice{iccid: iccid, imei: protocol.WithCheckDigit(fmt.Sprintf("35693803%06d", i))}
	}
	v.admin.must("POST", "/admin/v1/cards/import?format=csv", csv.String(), nil)
	for _, g := range gws {
		v.admin.must("PUT", "/admin/v1/cards/"+g.iccid+"/binding", map[string]any{"imeis": []string{g.imei}}, nil)
		g.device = enroll(t, v, "acme", g.imei)
	}

	// Each gateway alternates: its card in a foreign device (blocked),
	// back in its own (resumed). Every report changes the card.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, g := range gws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				imei := g.imei
				if g.seq%2 == 0 {
					imei = phone
				}
				payload := g.report(imei, g.iccid)
				tok := g.client.Publish(protocol.ReportTopic(g.id), 1, false, payload)
				if !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
					return // the broker is gone: this report is not acknowledged
				}
				g.acked = append(g.acked, g.seq)
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	v.proc.kill()
	close(stop)
	wg.Wait()
	total := 0
	for _, g := range gws {
		total += len(g.acked)
	}
	if total < devices*5 {
		t.Fatalf("only %d reports acknowledged before the kill; the test needs traffic to mean anything", total)
	}
	t.Logf("%d reports acknowledged before SIGKILL", total)

	v.restart(t)
	for _, g := range gws {
		last := g.acked[len(g.acked)-1]
		ref := fmt.Sprintf("%s/%d", g.id, last)
		eventually(t, 30*time.Second, "last acknowledged report of "+g.id+" processed", func() bool {
			for _, e := range fullHistory(t, v, g.iccid) {
				if e.Observed.Ref == ref {
					return true
				}
			}
			return false
		})
	}
	for _, g := range gws {
		checkCrashHistory(t, g, fullHistory(t, v, g.iccid))
	}

	// Enforcement caught up too: the network holds each card as the
	// verifier does.
	for _, g := range gws {
		var c struct {
			Status struct {
				State protocol.CardState `json:"state"`
			} `json:"status"`
		}
		v.admin.must("GET", "/admin/v1/cards/"+g.iccid, nil, &c)
		wantBlocked := c.Status.State == protocol.CardBlocked
		eventually(t, 10*time.Second, "network state of "+g.iccid, func() bool { return blockedAtNetwork(t, network, g.iccid) == wantBlocked })
	}
}

// checkCrashHistory checks one card's history against its gateway's
// acknowledged reports.
func checkCrashHistory(t *testing.T, g *crashDevice, hist []historyEntry) {
	t.Helper()
	seen := map[uint64]int{}
	var last protocol.CardState
	for i, e := range hist {
		dev, seqText, ok := strings.Cut(e.Observed.Ref, "/")
		if !ok || dev != g.id {
			continue // the binding itself, made by the operator
		}
		seq, err := strconv.ParseUint(seqText, 10, 64)
		if err != nil {
			t.Fatalf("%s: history ref %q", g.iccid, e.Observed.Ref)
		}
		seen[seq]++
		if seen[seq] > 1 {
			t.Errorf("%s: report %d applied %d times", g.iccid, seq, seen[seq])
		}
		if i > 0 && e.To == protocol.CardBlocked && last == protocol.CardBlocked {
			t.Errorf("%s: blocked twice in a row (entry %d, report %d)", g.iccid, e.Seq, seq)
		}
		last = e.To
	}
	for _, s := range g.acked {
		if seen[s] == 0 {
			t.Errorf("%s: acknowledged report %d is missing from the history", g.iccid, s)
		}
	}
	maxAcked := g.acked[len(g.acked)-1]
	for s := range seen {
		if s > maxAcked+1 {
			t.Errorf("%s: report %d in the history, but only up to %d were sent", g.iccid, s, maxAcked+1)
		}
	}
}

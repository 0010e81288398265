package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func iccid(i int) string { return fmt.Sprintf("8986031864%010d", i) }
func imsi(i int) string  { return fmt.Sprintf("46003%010d", i) }
func imei(i int) string  { return fmt.Sprintf("35693803%07d", i) }
func boolp(b bool) *bool { return &b }

// api is what both Network and Client offer; the tests run against both.
type api interface {
	Register(ctx context.Context, spec CardSpec) (Card, bool, error)
	Card(ctx context.Context, iccid string) (Card, error)
	Cards(ctx context.Context, f Filter) ([]Card, error)
	Block(ctx context.Context, iccid, reason string) (Card, error)
	Resume(ctx context.Context, iccid string) (Card, error)
	Attach(ctx context.Context, req AttachRequest) (AttachResult, error)
	Detach(ctx context.Context, iccid, imei string) (Card, error)
	Watch(ctx context.Context, iccid string, after uint64) (Card, error)
}

var (
	_ api = (*Network)(nil)
	_ api = (*Client)(nil)
)

// backends returns the in-memory network and an HTTP client of another one.
func backends(t *testing.T, opts Options) map[string]api {
	t.Helper()
	srv := httptest.NewServer(NewHandler(New(opts), nil))
	t.Cleanup(srv.Close)
	c := NewClient(srv.URL, srv.Client())
	c.WatchWait = 200 * time.Millisecond
	return map[string]api{"memory": New(opts), "http": c}
}

func TestLifecycle(t *testing.T) {
	for name, n := range backends(t, Options{}) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			card, created, err := n.Register(ctx, CardSpec{ICCID: iccid(1), IMSI: imsi(1), MSISDN: "8613800000001"})
			if err != nil || !created {
				t.Fatalf("Register: %v, created=%v", err, created)
			}
			if card.IP != "10.64.0.1" || card.Version != 1 {
				t.Errorf("new card: %+v", card)
			}
			if _, created, err := n.Register(ctx, CardSpec{ICCID: iccid(1), IMSI: imsi(1)}); err != nil || created {
				t.Errorf("Register again: %v, created=%v; want no-op", err, created)
			}
			if _, _, err := n.Register(ctx, CardSpec{ICCID: iccid(1), IMSI: imsi(2)}); !errors.Is(err, ErrConflict) {
				t.Errorf("Register conflicting: %v, want ErrConflict", err)
			}
			if _, _, err := n.Register(ctx, CardSpec{ICCID: "12", IMSI: imsi(2)}); !errors.Is(err, ErrInvalid) {
				t.Errorf("Register invalid: %v, want ErrInvalid", err)
			}

			res, err := n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: imei(1)})
			if err != nil || res.Result != ResultRegistered || res.IP != "10.64.0.1" || !res.Card.Attached || res.Card.IMEI != imei(1) {
				t.Fatalf("Attach: %+v, %v", res, err)
			}
			blocked, err := n.Block(ctx, iccid(1), "IMEI mismatch")
			if err != nil || !blocked.Blocked || blocked.Attached || blocked.BlockReason != "IMEI mismatch" {
				t.Fatalf("Block: %+v, %v", blocked, err)
			}
			again, err := n.Block(ctx, iccid(1), "other")
			if err != nil || again.Version != blocked.Version || again.BlockReason != "IMEI mismatch" {
				t.Errorf("Block again changed the card: %+v, %v", again, err)
			}
			res, err = n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: imei(1)})
			if err != nil || res.Result != ResultDenied || res.IP != "" {
				t.Errorf("Attach blocked: %+v, %v", res, err)
			}
			list, err := n.Cards(ctx, Filter{Blocked: boolp(true)})
			if err != nil || len(list) != 1 || list[0].ICCID != iccid(1) {
				t.Errorf("Cards(blocked): %+v, %v", list, err)
			}
			if _, err := n.Resume(ctx, iccid(1)); err != nil {
				t.Fatal(err)
			}
			if list, _ := n.Cards(ctx, Filter{Blocked: boolp(true)}); len(list) != 0 {
				t.Errorf("Cards(blocked) after resume: %+v", list)
			}
			res, err = n.Attach(ctx, AttachRequest{ICCID: iccid(1), IMSI: imsi(1), IMEI: imei(2)})
			if err != nil || res.Result != ResultRegistered || res.Card.IMEI != imei(2) {
				t.Errorf("Attach after resume: %+v, %v", res, err)
			}
			// A late detach from the old device leaves the new one attached.
			if c, err := n.Detach(ctx, iccid(1), imei(1)); err != nil || !c.Attached {
				t.Errorf("Detach old IMEI: %+v, %v", c, err)
			}
			if c, err := n.Detach(ctx, iccid(1), imei(2)); err != nil || c.Attached {
				t.Errorf("Detach: %+v, %v", c, err)
			}
			if _, err := n.Card(ctx, iccid(9)); !errors.Is(err, ErrNotFound) {
				t.Errorf("Card unknown: %v, want ErrNotFound", err)
			}
			if _, err := n.Block(ctx, iccid(9), ""); !errors.Is(err, ErrNotFound) {
				t.Errorf("Block unknown: %v, want ErrNotFound", err)
			}
			if list, _ := n.Cards(ctx, Filter{IMSI: imsi(1)}); len(list) != 1 {
				t.Errorf("Cards(imsi): %+v", list)
			}
		})
	}
}

func TestAttachUnknown(t *testing.T) {
	tests := []struct {
		name   string
		strict bool
		want   string
	}{
		{"provisions", false, ResultRegistered},
		{"strict denies", true, ResultDenied},
	}
	for _, tc := range tests {
		for name, n := range backends(t, Options{Strict: tc.strict}) {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				res, err := n.Attach(t.Context(), AttachRequest{ICCID: iccid(5), IMSI: imsi(5), IMEI: imei(5)})
				if err != nil || res.Result != tc.want {
					t.Errorf("Attach: %+v, %v; want %s", res, err, tc.want)
				}
			})
		}
	}
}

func TestWatch(t *testing.T) {
	for name, n := range backends(t, Options{}) {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			card, _, err := n.Register(ctx, CardSpec{ICCID: iccid(1), IMSI: imsi(1)})
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan Card, 1)
			go func() {
				c, err := n.Watch(ctx, iccid(1), card.Version)
				for err == nil && c.Version <= card.Version {
					c, err = n.Watch(ctx, iccid(1), card.Version)
				}
				got <- c
			}()
			time.Sleep(20 * time.Millisecond)
			start := time.Now()
			if _, err := n.Block(ctx, iccid(1), "test"); err != nil {
				t.Fatal(err)
			}
			select {
			case c := <-got:
				if !c.Blocked {
					t.Errorf("watch saw %+v, want blocked", c)
				}
				if d := time.Since(start); d > 200*time.Millisecond {
					t.Errorf("watch took %s", d)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("watch did not return")
			}
		})
	}
}

// TestConcurrent hammers one network from many goroutines: modems that
// attach, watch and detach while an enforcer blocks and resumes. Run with
// -race.
func TestConcurrent(t *testing.T) {
	n := New(Options{})
	srv := httptest.NewServer(NewHandler(n, nil))
	defer srv.Close()
	c := NewClient(srv.URL, srv.Client())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	const cards = 20
	var wg sync.WaitGroup
	for i := range cards {
		wg.Go(func() { // a modem
			var cl api = n
			if i%2 == 0 {
				cl = c
			}
			for j := range 6 {
				res, err := cl.Attach(ctx, AttachRequest{ICCID: iccid(i), IMSI: imsi(i), IMEI: imei(i)})
				if err != nil {
					t.Errorf("attach %d: %v", i, err)
					return
				}
				if j%3 == 0 {
					wctx, wcancel := context.WithTimeout(ctx, 5*time.Millisecond)
					_, _ = cl.Watch(wctx, iccid(i), res.Card.Version)
					wcancel()
				}
				if _, err := cl.Detach(ctx, iccid(i), imei(i)); err != nil {
					t.Errorf("detach %d: %v", i, err)
					return
				}
			}
		})
		wg.Go(func() { // the enforcer
			for range 10 {
				if _, err := c.BlockWithKey(ctx, iccid(i), "test", ""); err != nil && !errors.Is(err, ErrNotFound) {
					t.Errorf("block %d: %v", i, err)
				}
				if _, err := n.Resume(ctx, iccid(i)); err != nil && !errors.Is(err, ErrNotFound) {
					t.Errorf("resume %d: %v", i, err)
				}
			}
		})
	}
	wg.Wait()
	all, err := c.Cards(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != cards {
		t.Fatalf("%d cards, want %d", len(all), cards)
	}
	ips := map[string]bool{}
	for _, card := range all {
		if ips[card.IP] {
			t.Errorf("IP %s assigned twice", card.IP)
		}
		ips[card.IP] = true
		if card.Attached || card.Blocked {
			t.Errorf("card %s: attached=%v blocked=%v, want neither", card.ICCID, card.Attached, card.Blocked)
		}
	}
}

func TestIdempotencyKey(t *testing.T) {
	n := New(Options{})
	srv := httptest.NewServer(NewHandler(n, nil))
	defer srv.Close()
	ctx := t.Context()
	if _, _, err := n.Register(ctx, CardSpec{ICCID: iccid(1), IMSI: imsi(1)}); err != nil {
		t.Fatal(err)
	}
	post := func(path, key, body string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+path, strings.NewReader(body))
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(raw)
	}
	blockPath := "/v1/cards/" + iccid(1) + "/block"
	r1, b1 := post(blockPath, "k1", `{"reason":"mismatch"}`)
	if r1.StatusCode != http.StatusOK || r1.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first block: %d %q", r1.StatusCode, b1)
	}
	// The card changes in between; the replay still answers the first result.
	if _, err := n.Resume(ctx, iccid(1)); err != nil {
		t.Fatal(err)
	}
	r2, b2 := post(blockPath, "k1", `{"reason":"mismatch"}`)
	if r2.StatusCode != http.StatusOK || r2.Header.Get("Idempotent-Replayed") != "true" || b2 != b1 {
		t.Errorf("replay: %d %q replayed=%q; want %q", r2.StatusCode, b2, r2.Header.Get("Idempotent-Replayed"), b1)
	}
	if c, _ := n.Card(ctx, iccid(1)); c.Blocked {
		t.Error("replay blocked the card again")
	}
	if r3, b3 := post("/v1/cards/"+iccid(1)+"/resume", "k1", ""); r3.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("key reuse on another request: %d %q, want 422", r3.StatusCode, b3)
	}
	if r4, _ := post(blockPath, "", `{"reason":"x"}`); r4.StatusCode != http.StatusOK {
		t.Errorf("block without key: %d", r4.StatusCode)
	}
	if r5, _ := post("/v1/cards/"+iccid(7)+"/block", "k2", ""); r5.StatusCode != http.StatusNotFound {
		t.Errorf("block unknown: %d, want 404", r5.StatusCode)
	}
}

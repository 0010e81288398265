package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/cardbind/cardbind/firmware-sim/network"
	"github.com/cardbind/cardbind/protocol"
)

// receivedAlert is an alert with the time the subscriber got it.
type receivedAlert struct {
	alert *protocol.Alert
	at    time.Time
}

// alertSubscriber is a tenant's alert subscriber over MQTT (QoS 1), with
// a credential made through the admin API.
type alertSubscriber struct {
	client mqtt.Client
	ch     chan receivedAlert
	bad    atomic.Int64
}

func subscribeAlerts(ctx context.Context, a *admin, mqttAddr, tenant string) (*alertSubscriber, error) {
	var sub struct {
		Username    string `json:"username"`
		Password    string `json:"password"`
		TopicFilter string `json:"topic_filter"`
	}
	if err := a.do(ctx, http.MethodPost, "/admin/v1/tenants/"+tenant+"/subscribers", map[string]string{"name": "bench"}, &sub); err != nil {
		return nil, err
	}
	c, err := connect(mqttAddr, "bench-alerts-"+tenant, sub.Username, sub.Password)
	if err != nil {
		return nil, err
	}
	s := &alertSubscriber{client: c, ch: make(chan receivedAlert, 4096)}
	tok := c.Subscribe(sub.TopicFilter, 1, func(_ mqtt.Client, m mqtt.Message) {
		at := time.Now()
		al, err := protocol.DecodeAlert(m.Payload())
		if err != nil {
			s.bad.Add(1)
			return
		}
		select {
		case s.ch <- receivedAlert{al, at}:
		default:
			s.bad.Add(1)
		}
	})
	if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		c.Disconnect(100)
		return nil, fmt.Errorf("subscribe %s: %v", sub.TopicFilter, tok.Error())
	}
	return s, nil
}

func (s *alertSubscriber) close() { s.client.Disconnect(200) }

// waitAlert waits for an alert of type t about iccid whose id was not
// seen before.
func (s *alertSubscriber) waitAlert(ctx context.Context, iccid string, t protocol.AlertType, seen map[string]bool) (time.Time, error) {
	for {
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s alert for %s: %w", t, iccid, ctx.Err())
		case r := <-s.ch:
			if seen[r.alert.ID] {
				continue
			}
			seen[r.alert.ID] = true
			if string(r.alert.ICCID) == iccid && r.alert.Type == t {
				return r.at, nil
			}
		}
	}
}

// eventWaiter is where CloudEvents for the swap card arrive, when CAMARA
// subscriptions are measured.
type eventWaiter interface {
	// drain forgets the events that arrived so far.
	drain()
	// waitEvent waits for the next event about the swap card.
	waitEvent(ctx context.Context) (time.Time, error)
}

// swapSample is one SIM swap: the time from the publish of the foreign
// gateway's report until each effect.
type swapSample struct {
	PubAck   time.Duration `json:"puback_ns"`
	Decision time.Duration `json:"decision_ns"` // history entry's time
	Block    time.Duration `json:"block_ns"`    // block applied at the network
	Alert    time.Duration `json:"alert_ns"`    // "blocked" alert at the MQTT subscriber
	Event    time.Duration `json:"event_ns"`    // CloudEvent at the sink (0: not measured)
	Resume   time.Duration `json:"resume_ns"`   // return to the home gateway → resumed at the network
	Loaded   bool          `json:"loaded"`      // the background load was running
}

// latencyRun is the swap latency phase.
type latencyRun struct {
	Swaps []swapSample `json:"swaps"`
	// TargetRate is the background rate asked for; BackgroundRate the
	// accepted reports per second the verifier processed during the phase
	// (swap reports included), over Duration.
	TargetRate     float64       `json:"target_rate"`
	BackgroundRate float64       `json:"background_rate"`
	Duration       time.Duration `json:"duration_ns"`
	// PoolExhausted is set when the pre-signed background reports ran out
	// before the last swap.
	PoolExhausted bool  `json:"pool_exhausted"`
	PeakRSS       int64 `json:"peak_rss"`
	Events        bool  `json:"events"`
}

// background publishes each gateway's payloads paced to rate reports per
// second in all, until they run out or ctx ends. running is cleared when
// the first gateway runs out.
func background(ctx context.Context, gws []*gateway, payloads [][][]byte, rate float64, window int, running *atomic.Bool) error {
	interval := time.Duration(float64(len(gws)) / rate * float64(time.Second))
	start := time.Now()
	errs := make(chan error, len(gws))
	var wg sync.WaitGroup
	for i, g := range gws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer running.Store(false)
			topic := protocol.ReportTopic(g.id)
			offset := interval * time.Duration(i) / time.Duration(len(gws))
			inflight := make([]mqtt.Token, 0, window)
			for k, p := range payloads[i] {
				next := start.Add(offset + time.Duration(k)*interval)
				if d := time.Until(next); d > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(d):
					}
				}
				for len(inflight) > 0 && (len(inflight) == window || inflight[0].WaitTimeout(0)) {
					if err := waitToken(inflight[0]); err != nil {
						errs <- fmt.Errorf("gateway %s: %w", g.id, err)
						return
					}
					inflight = inflight[1:]
				}
				if ctx.Err() != nil {
					return
				}
				inflight = append(inflight, g.client.Publish(topic, 1, false, p))
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// measureSwaps runs n swaps of the fleet's swap card from its home
// gateway to the foreign one and back, and times each. It stops sooner
// when loaded is cleared: the background load has run out.
func measureSwaps(ctx context.Context, a *admin, nw *network.Network, alerts *alertSubscriber, events eventWaiter,
	f *fleet, n int, loaded *atomic.Bool, progress func(int)) ([]swapSample, error) {
	card := f.home.iccid
	seen := map[string]bool{}
	var out []swapSample
	var lastHist uint64
	for i := range n {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if i > 0 && !loaded.Load() {
			// The background ran out: later swaps would measure an
			// idle verifier.
			break
		}
		// A random pause, so that swaps do not fall into step with the
		// dispatchers' or the background's timing.
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		s, hist, err := oneSwap(ctx, a, nw, alerts, events, f, card, seen, lastHist)
		if err != nil {
			return out, fmt.Errorf("swap %d: %w", i+1, err)
		}
		s.Loaded = loaded.Load()
		lastHist = hist
		out = append(out, s)
		if progress != nil {
			progress(i + 1)
		}
	}
	return out, nil
}

func oneSwap(ctx context.Context, a *admin, nw *network.Network, alerts *alertSubscriber, events eventWaiter,
	f *fleet, card string, seen map[string]bool, lastHist uint64) (swapSample, uint64, error) {
	var s swapSample
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	before, err := nw.Card(ctx, card)
	if err != nil {
		return s, 0, err
	}
	if before.Blocked {
		return s, 0, errors.New("the card is blocked before the swap")
	}
	payload, err := f.foreign.report(f.foreign.imei, card, protocol.ReasonChange, time.Now())
	if err != nil {
		return s, 0, err
	}
	ref := fmt.Sprintf("%s/%d", f.foreign.id, f.foreign.seq)

	blocked := make(chan error, 1)
	var blockedAt time.Time
	go func() {
		c, err := waitBlocked(ctx, nw, card, before.Version, true)
		blockedAt = c.UpdatedAt
		blocked <- err
	}()
	var eventAt time.Time
	eventErr := make(chan error, 1)
	if events != nil {
		events.drain()
		go func() {
			var err error
			eventAt, err = events.waitEvent(ctx)
			eventErr <- err
		}()
	}

	start := time.Now()
	tok := f.foreign.client.Publish(protocol.ReportTopic(f.foreign.id), 1, false, payload)
	if err := waitToken(tok); err != nil {
		return s, 0, fmt.Errorf("publish: %w", err)
	}
	s.PubAck = time.Since(start)
	alertAt, err := alerts.waitAlert(ctx, card, protocol.AlertBlocked, seen)
	if err != nil {
		return s, 0, err
	}
	s.Alert = alertAt.Sub(start)
	if err := <-blocked; err != nil {
		return s, 0, fmt.Errorf("block at the network: %w", err)
	}
	s.Block = blockedAt.Sub(start)
	if events != nil {
		if err := <-eventErr; err != nil {
			return s, 0, fmt.Errorf("cloudevent: %w", err)
		}
		s.Event = eventAt.Sub(start)
	}

	// The decision's time, from the card's history.
	var hist []struct {
		Seq      uint64    `json:"seq"`
		Time     time.Time `json:"time"`
		Observed struct {
			Ref string `json:"ref"`
		} `json:"observed"`
	}
	if err := a.do(ctx, http.MethodGet, fmt.Sprintf("/admin/v1/cards/%s/history?after=%d&limit=100", card, lastHist), nil, &hist); err != nil {
		return s, 0, err
	}
	for _, h := range hist {
		lastHist = max(lastHist, h.Seq)
		if h.Observed.Ref == ref {
			s.Decision = h.Time.Sub(start)
		}
	}
	if s.Decision == 0 {
		return s, 0, fmt.Errorf("no history entry for report %s", ref)
	}

	// Back into its home gateway: the verifier resumes the card.
	mid, err := nw.Card(ctx, card)
	if err != nil {
		return s, 0, err
	}
	back, err := f.home.report(f.home.imei, card, protocol.ReasonChange, time.Now())
	if err != nil {
		return s, 0, err
	}
	start = time.Now()
	if err := waitToken(f.home.client.Publish(protocol.ReportTopic(f.home.id), 1, false, back)); err != nil {
		return s, 0, fmt.Errorf("publish: %w", err)
	}
	c, err := waitBlocked(ctx, nw, card, mid.Version, false)
	if err != nil {
		return s, 0, fmt.Errorf("resume at the network: %w", err)
	}
	s.Resume = c.UpdatedAt.Sub(start)
	if _, err := alerts.waitAlert(ctx, card, protocol.AlertResumed, seen); err != nil {
		return s, 0, err
	}
	return s, lastHist, nil
}

// waitBlocked watches the card at the network until its blocked state is
// want, and returns it.
func waitBlocked(ctx context.Context, nw *network.Network, iccid string, after uint64, want bool) (network.Card, error) {
	for {
		c, err := nw.Watch(ctx, iccid, after)
		if err != nil {
			return c, err
		}
		if c.Blocked == want {
			return c, nil
		}
		after = c.Version
	}
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted values,
// nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted)) + 0.999999)
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// dist is a latency distribution's summary.
type dist struct {
	N                       int
	P50, P90, P99, Max, Min time.Duration
}

func summarize(xs []time.Duration) dist {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return dist{}
	}
	return dist{N: len(s), P50: percentile(s, 50), P90: percentile(s, 90), P99: percentile(s, 99), Max: s[len(s)-1], Min: s[0]}
}

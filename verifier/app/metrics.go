package app

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/broker"
	"github.com/cardbind/cardbind/verifier/dispatch"
	"github.com/cardbind/cardbind/verifier/eir"
	"github.com/cardbind/cardbind/verifier/ingest"
	"github.com/cardbind/cardbind/verifier/radius"
	"github.com/cardbind/cardbind/verifier/webhook"
)

// metrics is the verifier's Prometheus registry (its own, not the global
// one).
type metrics struct {
	reg         *prometheus.Registry
	decisions   *prometheus.CounterVec
	enforcement *prometheus.HistogramVec
	syncSeconds prometheus.Histogram
	syncReports prometheus.Histogram
}

func newMetrics(in *ingest.Ingest, brk *broker.Broker) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cardbind_decisions_total",
		Help: "Decisions made, by decision."}, []string{"decision"})
	m.enforcement = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "cardbind_enforcement_seconds",
		Help:    "Time to carry out an enforcement at the network, by action and result.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"action", "result"})
	m.syncSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cardbind_ingest_sync_seconds",
		Help:    "Time a sync of the store took before handled reports were acknowledged to the broker.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}})
	m.syncReports = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cardbind_ingest_sync_reports",
		Help:    "Reports acknowledged after one sync of the store.",
		Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500}})
	m.reg.MustRegister(m.decisions, m.enforcement, m.syncSeconds, m.syncReports)

	s := in.Stats()
	reports := map[string]func() uint64{
		"accepted": s.Accepted.Load, "malformed": s.Malformed.Load, "unknown_device": s.UnknownDevice.Load,
		"topic_mismatch": s.TopicMismatch.Load, "forged": s.Forged.Load, "replayed": s.Replayed.Load,
		"cross_tenant": s.CrossTenant.Load, "unknown_card": s.UnknownCard.Load, "flagged": s.Flagged.Load,
		"overtaken": s.Overtaken.Load,
	}
	for outcome, load := range reports {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cardbind_reports_total",
			Help: "Agent reports, by outcome.", ConstLabels: prometheus.Labels{"outcome": outcome}},
			func() float64 { return float64(load()) }))
	}
	brokerCounters := map[string]func(broker.Stats) uint64{
		"auth_accepted":     func(s broker.Stats) uint64 { return s.AuthAccepted },
		"auth_refused":      func(s broker.Stats) uint64 { return s.AuthRefused },
		"client_id_refused": func(s broker.Stats) uint64 { return s.ClientIDRefused },
		"publish_refused":   func(s broker.Stats) uint64 { return s.PublishRefused },
		"subscribe_refused": func(s broker.Stats) uint64 { return s.SubscribeRefused },
		"alerts_published":  func(s broker.Stats) uint64 { return s.AlertsPublished },
	}
	for name, get := range brokerCounters {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cardbind_mqtt_events_total",
			Help: "MQTT broker events, by kind.", ConstLabels: prometheus.Labels{"kind": name}},
			func() float64 { return float64(get(brk.Stats())) }))
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cardbind_mqtt_connections",
		Help: "Client connections the embedded broker holds (devices, subscribers and the verifier's own)."},
		func() float64 { return float64(brk.Connections()) }))
	return m
}

func (m *metrics) decision(d protocol.Decision) { m.decisions.WithLabelValues(string(d)).Inc() }

// synced is the pool's onSync: one sync round of the report pool.
func (m *metrics) synced(reports int, took time.Duration) {
	m.syncReports.Observe(float64(reports))
	m.syncSeconds.Observe(took.Seconds())
}

// observeEnforcement is an enforce.Observer; it is given the task and the
// result once the adapter call returns, timed by the caller's start.
func (m *metrics) observeEnforcement(task verifier.EnforceTask, err error, took time.Duration) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.enforcement.WithLabelValues(string(task.Action), result).Observe(took.Seconds())
}

func (m *metrics) dispatchers(ds ...*dispatch.Dispatcher) {
	for _, d := range ds {
		st := d.Stats()
		for name, load := range map[string]func() uint64{"done": st.Done.Load, "retried": st.Retried.Load, "dropped": st.Dropped.Load} {
			m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cardbind_outbox_entries_total",
				Help: "Outbox entries handled, by dispatcher and result.", ConstLabels: prometheus.Labels{"outbox": string(d.Kind()), "result": name}},
				func() float64 { return float64(load()) }))
		}
		labels := prometheus.Labels{"outbox": string(d.Kind())}
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cardbind_outbox_due",
			Help: "Outbox entries due at the dispatcher's last read (at most its batch size), by dispatcher.", ConstLabels: labels},
			func() float64 { return float64(st.Due.Load()) }))
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cardbind_outbox_in_flight",
			Help: "Outbox entries being handled now, by dispatcher.", ConstLabels: labels},
			func() float64 { return float64(st.InFlight.Load()) }))
	}
}

// notifier exports the CAMARA subscriptions' delivery counters.
func (m *metrics) notifier(n *webhook.Notifier) {
	st := n.Stats()
	for result, load := range map[string]func() uint64{"delivered": st.Delivered.Load, "retried": st.Retried.Load,
		"dropped": st.Dropped.Load, "gone": st.Gone.Load} {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cardbind_webhook_events_total",
			Help:        "CAMARA subscription events (CloudEvents) by result: delivered, retried (attempts), dropped, gone (the sink answered 410).",
			ConstLabels: prometheus.Labels{"result": result}}, func() float64 { return float64(load()) }))
	}
}

// radius exports the RADIUS accounting server's counters.
func (m *metrics) radius(rs *radius.Server) {
	counters := map[string]func(radius.Stats) uint64{
		"received": func(s radius.Stats) uint64 { return s.Received }, "answered": func(s radius.Stats) uint64 { return s.Answered },
		"unknown_client": func(s radius.Stats) uint64 { return s.UnknownClient }, "bad_authenticator": func(s radius.Stats) uint64 { return s.BadAuthenticator },
		"malformed": func(s radius.Stats) uint64 { return s.Malformed }, "duplicate": func(s radius.Stats) uint64 { return s.Duplicates },
		"unknown_card": func(s radius.Stats) uint64 { return s.UnknownCard }, "observation": func(s radius.Stats) uint64 { return s.Observations },
		"address_update": func(s radius.Stats) uint64 { return s.AddressUpdates }, "ignored": func(s radius.Stats) uint64 { return s.Ignored },
		"failed": func(s radius.Stats) uint64 { return s.Failed },
	}
	for name, get := range counters {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cardbind_radius_requests_total",
			Help: "RADIUS accounting requests, by outcome.", ConstLabels: prometheus.Labels{"outcome": name}},
			func() float64 { return float64(get(rs.Stats())) }))
	}
}

// eir exports the equipment identity check's counters.
func (m *metrics) eir(h *eir.Handler) {
	st := h.Stats()
	for answer, load := range map[string]func() uint64{
		"whitelisted": st.Whitelisted.Load, "blacklisted": st.Blacklisted.Load, "greylisted": st.Greylisted.Load,
		"invalid": st.Invalid.Load, "unknown": st.Unknown.Load, "forbidden": st.Forbidden.Load, "failed": st.Failed.Load,
	} {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cardbind_eir_checks_total",
			Help:        "Equipment identity checks, by answer: whitelisted, blacklisted, greylisted, or the error (invalid 400, unknown 404, forbidden 403, failed 500).",
			ConstLabels: prometheus.Labels{"answer": answer}}, func() float64 { return float64(load()) }))
	}
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

package caddymodule

import (
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
)

// metrics are the handler's collectors. They are created once per process
// and registered with each configuration's registry, because Caddy makes a
// new registry on every config load.
type metrics struct {
	requests      *prometheus.CounterVec
	upstreamBytes *prometheus.CounterVec
	storeBytes    prometheus.GaugeFunc
	viewAge       prometheus.Histogram
	viewFetches   *prometheus.CounterVec
	verify        *prometheus.CounterVec
	children      sync.Map // counterKey → prometheus.Counter
}

var (
	globalMetrics     *metrics
	globalMetricsOnce sync.Once
)

func newMetrics() *metrics {
	const ns, sub = "caddy", "zulip_presence"
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "Presence requests handled, by kind (ping, modern, slim, legacy, other) and outcome (local, forwarded, converted, upstream_error, old_server, fallback, passthrough, view_fed, view_joined).",
		}, []string{"kind", "outcome"}),
		upstreamBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "upstream_response_bytes_total",
			Help: "Response body bytes received from upstream for presence requests and the user lists they needed, by kind.",
		}, []string{"kind"}),
		storeBytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "store_bytes",
			Help: "Bytes of session state held, over all stores.",
		}, storeBytesUsed),
		viewAge: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "view_age_seconds",
			Help:    "Shared mode: how long before an answer its view last merged a fetch.",
			Buckets: []float64{0.1, 0.5, 1, 2, 5, 10, 30, 60},
		}),
		viewFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "view_fetches_total",
			Help: "Shared mode: fetches merged into a view, by fetch (delta, full), over all hosts.",
		}, []string{"fetch"}),
		verify: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "verify_total",
			Help: "Answers of the handler compared with the server's answer to the original request (shadow mode, verify_rate), by kind and result (match, mismatch, skipped: the comparison could not be made).",
		}, []string{"kind", "result"}),
	}
}

// observeVerify counts one comparison.
func (m *metrics) observeVerify(kind, result string) {
	m.verify.WithLabelValues(kind, result).Inc()
}

// observeViewAge records the age of the view an answer was made from.
func (m *metrics) observeViewAge(age time.Duration) {
	m.viewAge.Observe(age.Seconds())
}

// observeViewFetch counts a fetch merged into a view.
func (m *metrics) observeViewFetch(full bool) {
	fetch := "delta"
	if full {
		fetch = "full"
	}
	m.viewFetches.WithLabelValues(fetch).Inc()
}

func storeBytesUsed() float64 {
	var total int64
	storePool.Range(func(_, v any) bool {
		if s, ok := v.(*cache.Store); ok {
			total += s.Used()
		}
		return true
	})
	return float64(total)
}

// registerMetrics registers the collectors with reg; collectors already
// registered there (a second handler in the same config) are fine.
func registerMetrics(reg prometheus.Registerer) (*metrics, error) {
	globalMetricsOnce.Do(func() { globalMetrics = newMetrics() })
	if reg == nil {
		return globalMetrics, nil
	}
	for _, c := range []prometheus.Collector{globalMetrics.requests, globalMetrics.upstreamBytes, globalMetrics.storeBytes, globalMetrics.viewAge, globalMetrics.viewFetches, globalMetrics.verify} {
		var already prometheus.AlreadyRegisteredError
		if err := reg.Register(c); err != nil && !errors.As(err, &already) {
			return nil, err
		}
	}
	return globalMetrics, nil
}

func (m *metrics) observe(kind, outcome string, upstreamBytes int) {
	m.counter(kind, outcome).Inc()
	m.observeUpstream(kind, upstreamBytes)
}

func (m *metrics) observeUpstream(kind string, n int) {
	if n > 0 {
		m.counter(kind, "").Add(float64(n))
	}
}

// counterKey names one child of the handler's counters: a request count
// by kind and outcome, or, with no outcome, the upstream bytes of a kind.
type counterKey struct{ kind, outcome string }

// counter returns a child counter, resolved once: the label sets are few,
// and CounterVec.WithLabelValues validates, hashes and takes a lock shared
// by every request each time, a tenth of the handler's work on a forwarded
// poll.
func (m *metrics) counter(kind, outcome string) prometheus.Counter {
	k := counterKey{kind, outcome}
	if c, ok := m.children.Load(k); ok {
		return c.(prometheus.Counter)
	}
	var c prometheus.Counter
	if outcome == "" {
		c = m.upstreamBytes.WithLabelValues(kind)
	} else {
		c = m.requests.WithLabelValues(kind, outcome)
	}
	m.children.Store(k, c)
	return c
}

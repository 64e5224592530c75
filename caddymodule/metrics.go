package caddymodule

import (
	"errors"
	"sync"

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
			Help: "Presence requests handled, by kind (ping, modern, slim, legacy, other) and outcome (local, forwarded, converted, passthrough, fallback).",
		}, []string{"kind", "outcome"}),
		upstreamBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "upstream_response_bytes_total",
			Help: "Response body bytes received from upstream for presence requests and the user lists they needed, by kind.",
		}, []string{"kind"}),
		storeBytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "store_bytes",
			Help: "Bytes of session state held, over all stores.",
		}, storeBytesUsed),
	}
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
	for _, c := range []prometheus.Collector{globalMetrics.requests, globalMetrics.upstreamBytes, globalMetrics.storeBytes} {
		var already prometheus.AlreadyRegisteredError
		if err := reg.Register(c); err != nil && !errors.As(err, &already) {
			return nil, err
		}
	}
	return globalMetrics, nil
}

func (m *metrics) observe(kind, outcome string, upstreamBytes int) {
	m.requests.WithLabelValues(kind, outcome).Inc()
	m.observeUpstream(kind, upstreamBytes)
}

func (m *metrics) observeUpstream(kind string, n int) {
	if n > 0 {
		m.upstreamBytes.WithLabelValues(kind).Add(float64(n))
	}
}

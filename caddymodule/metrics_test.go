package caddymodule

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsSurviveReloads: each config load brings a new registry; the
// collectors register with every one (a second handler in one config is no
// error) and keep counting.
func TestMetricsSurviveReloads(t *testing.T) {
	first, second := prometheus.NewPedanticRegistry(), prometheus.NewPedanticRegistry()
	m1, err := registerMetrics(first)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registerMetrics(first); err != nil {
		t.Fatalf("a second handler in the same config: %v", err)
	}
	m2, err := registerMetrics(second)
	if err != nil {
		t.Fatal(err)
	}
	before := testutil.ToFloat64(m2.requests.WithLabelValues("ping", outcomeLocal))
	m1.observe("ping", outcomeLocal, 0)
	if got := testutil.ToFloat64(m2.requests.WithLabelValues("ping", outcomeLocal)); got != before+1 {
		t.Fatalf("counter after reload = %v, want %v", got, before+1)
	}
	if n, err := testutil.GatherAndCount(second, "caddy_zulip_presence_requests_total"); err != nil || n == 0 {
		t.Fatalf("the new registry does not serve the counter: %d, %v", n, err)
	}
}

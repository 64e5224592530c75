package caddymodule

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql/parser"
)

// exportedMetrics returns the metrics the handler exports, by name, with
// their label names; a histogram's series under their own names.
func exportedMetrics(t *testing.T) map[string]map[string]bool {
	t.Helper()
	m := newMetrics()
	m.requests.WithLabelValues("ping", "local").Inc()
	m.upstreamBytes.WithLabelValues("ping").Inc()
	m.viewFetches.WithLabelValues("delta").Inc()
	m.verify.WithLabelValues("ping", verifyMatch).Inc()
	m.viewAge.Observe(1)
	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{m.requests, m.upstreamBytes, m.storeBytes, m.viewAge, m.viewFetches, m.verify} {
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	for _, f := range families {
		labels := map[string]bool{}
		for _, l := range f.GetMetric()[0].GetLabel() {
			labels[l.GetName()] = true
		}
		name := f.GetName()
		if f.GetType().String() == "HISTOGRAM" {
			out[name+"_sum"], out[name+"_count"] = labels, labels
			bucket := map[string]bool{"le": true}
			for l := range labels {
				bucket[l] = true
			}
			out[name+"_bucket"] = bucket
			continue
		}
		out[name] = labels
	}
	return out
}

// TestDashboardQueries: every PromQL expression of the Grafana dashboard
// in examples/ parses with Prometheus's own parser, and every metric and
// label it names is one the handler exports.
func TestDashboardQueries(t *testing.T) {
	raw, err := os.ReadFile("../examples/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	exported := exportedMetrics(t)
	exprs := 0
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			exprs++
			expr := strings.ReplaceAll(target.Expr, "$window", "5m")
			ast, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
			if err != nil {
				t.Errorf("%s: %q: %v", p.Title, target.Expr, err)
				continue
			}
			checkNames(t, p.Title, ast, exported)
		}
	}
	if exprs < 10 {
		t.Fatalf("only %d expressions in the dashboard", exprs)
	}
}

// checkNames checks the metrics, matchers and grouping labels of ast.
func checkNames(t *testing.T, panel string, ast parser.Expr, exported map[string]map[string]bool) {
	t.Helper()
	parser.Inspect(ast, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			labels, ok := exported[n.Name]
			if !ok {
				t.Errorf("%s: metric %q is not exported", panel, n.Name)
				return nil
			}
			for _, m := range n.LabelMatchers {
				if m.Name != "__name__" && !labels[m.Name] {
					t.Errorf("%s: %s has no label %q", panel, n.Name, m.Name)
				}
			}
		case *parser.AggregateExpr:
			for _, l := range n.Grouping {
				if !selectorsHave(n.Expr, l, exported) {
					t.Errorf("%s: grouping by %q, which %s does not have", panel, l, n.Expr)
				}
			}
		}
		return nil
	})
}

// selectorsHave reports whether every metric selected in e has label l.
func selectorsHave(e parser.Expr, l string, exported map[string]map[string]bool) bool {
	ok := true
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		if vs, is := node.(*parser.VectorSelector); is && !exported[vs.Name][l] {
			ok = false
		}
		return nil
	})
	return ok
}

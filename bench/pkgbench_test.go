package main

import (
	"maps"
	"strings"
	"testing"
)

func TestParseBenchLine(t *testing.T) {
	tests := []struct {
		line    string
		name    string
		n       int
		metrics map[string]float64
	}{
		{"BenchmarkLocalPing-2   \t  268725\t      4925 ns/op\t     147 B/op\t       3 allocs/op", "BenchmarkLocalPing", 268725,
			map[string]float64{"ns/op": 4925, "B/op": 147, "allocs/op": 3}},
		{"BenchmarkRenderSlim1500-16  4809  73377 ns/op  1366.25 MB/s  0 B/op  0 allocs/op", "BenchmarkRenderSlim1500", 4809,
			map[string]float64{"ns/op": 73377, "MB/s": 1366.25, "B/op": 0, "allocs/op": 0}},
		{"BenchmarkSnapshotBytesPerRow-2  16  76449839 ns/op  30.74 B/row  1600 rows/snapshot  18059359 B/op  615 allocs/op", "BenchmarkSnapshotBytesPerRow", 16,
			map[string]float64{"ns/op": 76449839, "B/row": 30.74, "rows/snapshot": 1600, "B/op": 18059359, "allocs/op": 615}},
		{"BenchmarkMerge400Into1500  100  1.25e+04 ns/op", "BenchmarkMerge400Into1500", 100, map[string]float64{"ns/op": 12500}}, // GOMAXPROCS 1: no suffix
		{"BenchmarkCostAccuracy/session-2  3  100 ns/op  1.02 heap/charged", "BenchmarkCostAccuracy/session", 3, map[string]float64{"ns/op": 100, "heap/charged": 1.02}},
		{"BenchmarkLocalPing-2   \t", "", 0, nil},               // the name, its result split off by other output
		{"BenchmarkLocalPing-2  many  4925 ns/op", "", 0, nil},  // no iteration count
		{"BenchmarkLocalPing-2  10  fast ns/op", "", 0, nil},    // no value
		{"BenchmarkLocalPing-2  10  4925 ns/op  3", "", 0, nil}, // a value without its unit
		{"--- FAIL: BenchmarkLocalPing-2", "", 0, nil},          // a failure
		{"pkg: github.com/zulip-presence/caddy-zulip-presence/presence", "", 0, nil},
		{"ok  \tgithub.com/zulip-presence/caddy-zulip-presence/presence\t7.480s", "", 0, nil},
	}
	for _, tc := range tests {
		name, r, ok := parseBenchLine(tc.line)
		if ok != (tc.metrics != nil) || name != tc.name || r.N != tc.n || !maps.Equal(r.Metrics, tc.metrics) {
			t.Errorf("parseBenchLine(%q) = %q, %+v, %v; want %q, %d, %v", tc.line, name, r, ok, tc.name, tc.n, tc.metrics)
		}
	}
}

// benchOutput is go test -bench output as runMicro reads it, both
// packages' results in one stream.
const benchOutput = `goos: linux
goarch: amd64
pkg: github.com/zulip-presence/caddy-zulip-presence/caddymodule
cpu: AMD EPYC
BenchmarkLocalPing-2   	  268725	      4925 ns/op	     147 B/op	       3 allocs/op
PASS
ok  	github.com/zulip-presence/caddy-zulip-presence/caddymodule	1.706s
goos: linux
goarch: amd64
pkg: github.com/zulip-presence/caddy-zulip-presence/presence
cpu: AMD EPYC
BenchmarkRenderSlim1500-2        	   18344	     73377 ns/op	1366.25 MB/s	       0 B/op	       0 allocs/op
BenchmarkRenderLegacy1500-2      	    4508	    272583 ns/op	1052.98 MB/s	       0 B/op	       0 allocs/op
BenchmarkMerge400Into1500-2      	  109770	     12591 ns/op	      1600 rows	       0 B/op	       0 allocs/op
BenchmarkSnapshotBytesPerRow-2   	      16	  76449839 ns/op	        30.74 B/row	      1600 rows/snapshot	18059359 B/op	     615 allocs/op
PASS
ok  	github.com/zulip-presence/caddy-zulip-presence/presence	7.480s
`

func TestMicroFrom(t *testing.T) {
	m, err := microFrom(parseBenchOutput([]byte(benchOutput)))
	if err != nil {
		t.Fatal(err)
	}
	want := MicroResult{PingNs: 4925, PingAllocs: 3, MergeNs: 12591, SlimNs: 73377, LegacyNs: 272583, SnapshotBytesPerRow: 30.74, SnapshotRowsMeasured: 1600}
	if *m != want {
		t.Errorf("got  %+v\nwant %+v", *m, want)
	}
}

// TestMicroFromMissing: a benchmark missing from the output, or one whose
// result line was split, is an error naming it, never a zero figure.
func TestMicroFromMissing(t *testing.T) {
	out := strings.Replace(benchOutput, "BenchmarkLocalPing-2   \t", "BenchmarkLocalPing-2   \tsome log line\n", 1)
	out = strings.Replace(out, "30.74 B/row", "30.74 B/entry", 1)
	_, err := microFrom(parseBenchOutput([]byte(out)))
	if err == nil {
		t.Fatal("no error")
	}
	for _, s := range []string{"BenchmarkLocalPing ns/op", "BenchmarkLocalPing allocs/op", "BenchmarkSnapshotBytesPerRow B/row"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
}

func TestMicroArgs(t *testing.T) {
	got := shellLine(append([]string{"go"}, microArgs(1e9)...))
	want := "go test -run '^$' -bench '^(BenchmarkLocalPing|BenchmarkMerge400Into1500|BenchmarkRenderSlim1500|BenchmarkRenderLegacy1500|BenchmarkSnapshotBytesPerRow)$' -benchmem -count=1 -benchtime 1s " +
		"github.com/zulip-presence/caddy-zulip-presence/caddymodule github.com/zulip-presence/caddy-zulip-presence/presence"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/caddymodule"
	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// MicroResult holds the in-process figures of design §9's targets, read
// from the packages' own benchmarks so that the report and `go test
// -bench` measure the same code the same way.
type MicroResult struct {
	Command              string  // the go test command that measured them
	PingNs, PingAllocs   float64 // a ping answered locally
	MergeNs              float64 // a 400-row delta merged into 1 500 rows
	SlimNs, LegacyNs     float64 // 1 500 rows rendered
	SnapshotBytesPerRow  float64 // heap of snapshots built like the handler builds them
	SnapshotRowsMeasured int
}

// The package benchmarks behind the micro figures.
const (
	benchPing     = "BenchmarkLocalPing"           // caddymodule
	benchMerge    = "BenchmarkMerge400Into1500"    // presence
	benchSlim     = "BenchmarkRenderSlim1500"      // presence
	benchLegacy   = "BenchmarkRenderLegacy1500"    // presence
	benchSnapshot = "BenchmarkSnapshotBytesPerRow" // presence
)

// runMicro runs the package benchmarks in a go test subprocess, each for
// benchtime, and reads the micro figures from its output.
func runMicro(benchtime time.Duration) (*MicroResult, error) {
	args := microArgs(benchtime)
	cmd := exec.Command("go", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	command := shellLine(append([]string{"go"}, args...))
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %v\n%s", command, err, out.Bytes())
	}
	m, err := microFrom(parseBenchOutput(out.Bytes()))
	if err != nil {
		return nil, fmt.Errorf("%s: %v\n%s", command, err, out.Bytes())
	}
	m.Command = command
	return m, nil
}

// microArgs are go test's arguments: no tests (-run '^$'), so that no test
// binds a port, and only the benchmarks the report reads. The packages are
// named by import path, which resolves from anywhere in the module.
func microArgs(benchtime time.Duration) []string {
	names := strings.Join([]string{benchPing, benchMerge, benchSlim, benchLegacy, benchSnapshot}, "|")
	return []string{"test", "-run", "^$", "-bench", "^(" + names + ")$", "-benchmem", "-count=1", "-benchtime", benchtime.String(),
		reflect.TypeFor[caddymodule.Handler]().PkgPath(), reflect.TypeFor[presence.Snapshot]().PkgPath()}
}

// shellLine is args as they would be typed into a shell, for the report
// and error messages.
func shellLine(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = a
		if strings.ContainsAny(a, "^$|()*?[] '\"") {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(quoted, " ")
}

// microFrom picks the report's figures out of the benchmark results.
func microFrom(rs map[string]benchResult) (*MicroResult, error) {
	var missing []string
	get := func(name, unit string) float64 {
		v, ok := rs[name].Metrics[unit]
		if !ok {
			missing = append(missing, name+" "+unit)
		}
		return v
	}
	m := &MicroResult{
		PingNs: get(benchPing, "ns/op"), PingAllocs: get(benchPing, "allocs/op"),
		MergeNs: get(benchMerge, "ns/op"),
		SlimNs:  get(benchSlim, "ns/op"), LegacyNs: get(benchLegacy, "ns/op"),
		SnapshotBytesPerRow:  get(benchSnapshot, "B/row"),
		SnapshotRowsMeasured: int(get(benchSnapshot, "rows/snapshot")),
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("no %s in the benchmark output", andList(missing))
	}
	return m, nil
}

// benchResult is one result line of go test -bench: the iterations run
// and the value of each unit ("ns/op", "B/op", "allocs/op", "MB/s" and the
// units of b.ReportMetric).
type benchResult struct {
	N       int
	Metrics map[string]float64
}

// parseBenchOutput reads go test -bench output, keyed by benchmark name
// without its -GOMAXPROCS suffix; lines that are not results are skipped.
// A result split by output the benchmark printed is not recognised, and
// microFrom reports it missing.
func parseBenchOutput(out []byte) map[string]benchResult {
	rs := map[string]benchResult{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if name, r, ok := parseBenchLine(sc.Text()); ok {
			rs[name] = r
		}
	}
	return rs
}

// parseBenchLine parses a line of the standard benchmark format,
// "BenchmarkName-2  1000  1234 ns/op  16 B/op  1 allocs/op".
func parseBenchLine(line string) (string, benchResult, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || len(f)%2 != 0 || !strings.HasPrefix(f[0], "Benchmark") {
		return "", benchResult{}, false
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		return "", benchResult{}, false
	}
	r := benchResult{N: n, Metrics: map[string]float64{}}
	for i := 2; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return "", benchResult{}, false
		}
		r.Metrics[f[i+1]] = v
	}
	return trimProcs(f[0]), r, true
}

// trimProcs drops the "-N" go test appends to a benchmark's name when
// GOMAXPROCS is not 1.
func trimProcs(name string) string {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return name
	}
	if _, err := strconv.Atoi(name[i+1:]); err != nil {
		return name
	}
	return name[:i]
}

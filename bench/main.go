// Command bench is the workload simulator and benchmark of design §9: it
// replays seeded realms of Zulip clients straight to the simulated Zulip
// and through the zulip_presence handler in lock step, compares every
// answer, runs Caddy on loopback sockets with and without the handler, runs
// the packages' own benchmarks of design §9's in-process targets (with go
// test, in a subprocess), and writes a markdown report with an SVG chart.
//
// Each realm is replayed in session mode and in shared mode (design §10),
// whose answers are checked against the direct server's history.
//
//	go run ./bench          # the full run: R200, R2k and R10k, 30 simulated minutes each
//	go run ./bench -short   # R200 for 5 simulated minutes, a small end-to-end run, 200 ms per package benchmark
//	go run ./bench -realms R2k -minutes 15 -mode shared -trust 5m   # one shared-mode run
//	go run ./bench -realms R2k -mode shared -gaps 0.01   # one shared-mode run with more id gaps
//	go run ./bench -realms none -e2e forwarded   # only forwarded polls, end to end
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Config is what one run measures.
type Config struct {
	Short bool
	Seed  uint64
	Specs []Spec
	// Variants are the runs of every realm; Extras, more runs of the named
	// realm.
	Variants []Variant
	Extras   map[string][]Variant
	E2E      E2EConfig
	// MicroTime is how long each package benchmark behind the micro
	// figures runs (go test -benchtime); zero runs none.
	MicroTime time.Duration
}

// fullConfig and shortConfig are the two modes.
func fullConfig(seed uint64) Config {
	return Config{
		Seed:     seed,
		Specs:    []Spec{specR200, specR2k, specR10k},
		Variants: []Variant{sessionRun, sharedRun},
		Extras: map[string][]Variant{"R2k": {
			sharedTrust, sharedTwo, sharedGaps,
			sessionMain, sharedMain, sessionShadow, sharedShadow, sessionVerify, sharedVerify,
		}},
		E2E:       E2EConfig{Users: 2000, Active: 1500, Clients: 400, Workers: 2, Duration: 20 * time.Second, MaxPairs: 40_000},
		MicroTime: time.Second,
	}
}

func shortConfig(seed uint64) Config {
	r200 := specR200
	r200.Minutes = 5
	return Config{
		Short:     true,
		Seed:      seed,
		Specs:     []Spec{r200},
		Variants:  []Variant{sessionRun, sharedRun},
		Extras:    map[string][]Variant{"R200": {sharedTrust, sharedTwo, sharedShadow, sessionVerify}},
		E2E:       E2EConfig{Users: 200, Active: 150, Clients: 40, Workers: 2, Duration: 2 * time.Second, MaxPairs: 2_000},
		MicroTime: 200 * time.Millisecond,
	}
}

func main() {
	short := flag.Bool("short", false, "quick mode: R200 for 5 simulated minutes, a small end-to-end run and shorter package benchmarks")
	out := flag.String("out", "bench/REPORT.md", "markdown report to write; the SVG chart goes next to it as upstream.svg")
	seed := flag.Uint64("seed", 1, "workload seed")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	realms := flag.String("realms", "", "comma-separated realms to run instead of the mode's (R200, R2k, R10k)")
	minutes := flag.Int("minutes", 0, "simulated minutes per realm instead of the mode's")
	e2eKinds := flag.String("e2e", "", "comma-separated request kinds the end-to-end run sends, in equal shares, instead of its mix (ping, slim, forwarded)")
	mode := flag.String("mode", "both", "session, shared or both: the modes each realm is replayed in")
	trust := flag.String("trust", "", "trust_window of the shared-mode runs, e.g. 5m (default: the handler's, plus a 5m run of R2k)")
	instances := flag.Int("instances", 0, "handlers in front of the realm in the shared-mode runs, 1 or 2 (default: 1, plus a run of R2k with 2)")
	gaps := flag.Float64("gaps", -1, "id gap rate (zuliptest IDGapRate) of the shared-mode runs (default: 0.001, plus a run of R2k at 0.01)")
	flag.Parse()
	cfg := fullConfig(*seed)
	if *short {
		cfg = shortConfig(*seed)
	}
	if err := cfg.overrideVariants(*mode, *trust, *instances, *gaps); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := cfg.override(*realms, *minutes, *e2eKinds); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := run(cfg, *out, *cpuprofile); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// override replaces the mode's realms, durations and end-to-end mix, for
// runs of one realm, or of one request kind end to end ("-realms none
// -e2e forwarded"), while working on the handler.
func (cfg *Config) override(realms string, minutes int, e2eKinds string) error {
	if err := cfg.E2E.only(e2eKinds); err != nil {
		return err
	}
	if realms == "none" {
		cfg.Specs = nil
		return nil
	}
	if realms != "" {
		cfg.Specs = nil
		for _, name := range strings.Split(realms, ",") {
			spec, ok := specsByName[strings.TrimSpace(name)]
			if !ok {
				return fmt.Errorf("unknown realm %q", name)
			}
			cfg.Specs = append(cfg.Specs, spec)
		}
	}
	if minutes > 0 {
		for i := range cfg.Specs {
			cfg.Specs[i].Minutes = minutes
		}
	}
	return nil
}

var specsByName = map[string]Spec{"R200": specR200, "R2k": specR2k, "R10k": specR10k}

func run(cfg Config, out, cpuprofile string) error {
	if cpuprofile != "" {
		stop, err := startProfile(cpuprofile)
		if err != nil {
			return err
		}
		defer stop()
	}
	// The zuliptest servers render megabytes per poll into fresh buffers;
	// a larger heap target keeps the collector from dominating the run.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	prog := newProgress(os.Stderr)
	rep, err := measure(cfg, prog)
	if err != nil {
		return err
	}
	rep.Command = command()
	return writeOutputs(out, rep, prog)
}

// measure runs everything cfg asks for.
func measure(cfg Config, prog *progress) (*Report, error) {
	rep := &Report{Short: cfg.Short, Seed: cfg.Seed, Started: time.Now(), Machine: machine()}
	if err := quietCaddy(); err != nil {
		return nil, err
	}
	for _, spec := range cfg.Specs {
		for _, v := range cfg.variantsFor(spec) {
			res, err := runRealm(spec, cfg.Seed, v, func(m int) {
				prog.say(fmt.Sprintf("%s %s twin: minute %d/%d", spec.Name, v, m, spec.Minutes), m%5 == 0 || m == spec.Minutes)
			})
			if err != nil {
				return nil, fmt.Errorf("%s (%s): %v", spec.Name, v, err)
			}
			prog.say(fmt.Sprintf("%s %s done: upstream bytes module/direct %.3f on the wire (%.3f raw), requests %.2f, %d fidelity violations, %d lost writes", spec.Name, v,
				div(float64(res.Totals[sideModule].Wire), float64(res.Totals[sideDirect].Wire)),
				div(float64(res.Totals[sideModule].Bytes), float64(res.Totals[sideDirect].Bytes)),
				div(float64(res.Totals[sideModule].Requests), float64(res.Totals[sideDirect].Requests)), res.Violations, res.LostWrites), true)
			if v.shared() {
				st := res.Staleness
				prog.say(fmt.Sprintf("%s %s: staleness p50 %gs, p99 %gs, max %gs over %d polls; %d answers checked against the history (%d as-of renders)", spec.Name, v,
					st.P50, st.P99, st.Max, st.N, st.Searched, st.Renders), true)
			}
			rep.Realms = append(rep.Realms, res)
		}
	}
	if cfg.MicroTime > 0 {
		prog.say("micro benchmarks: the packages' own, in go test", true)
		m, err := runMicro(cfg.MicroTime)
		if err != nil {
			return nil, fmt.Errorf("micro benchmarks: %v", err)
		}
		rep.Micro = m
	}
	e, err := runE2E(cfg.E2E, cfg.Seed, func(s string) { prog.say(s, true) })
	if err != nil {
		return nil, fmt.Errorf("end to end: %v", err)
	}
	rep.E2E = e
	rep.Took = time.Since(rep.Started)
	return rep, nil
}

// quietCaddy loads an empty Caddy config that only sets the default log
// level to ERROR, so that later loads and stops print nothing; the admin
// endpoint stays off and nothing is persisted.
func quietCaddy() error {
	return quietly(func() error {
		return caddy.Load([]byte(`{"admin":{"disabled":true,"config":{"persist":false}},"logging":{"logs":{"default":{"level":"ERROR"}}}}`), true)
	})
}

// writeOutputs writes the report and, next to it, the chart.
func writeOutputs(out string, rep *Report, prog *progress) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	chartPath := filepath.Join(filepath.Dir(out), "upstream.svg")
	rep.ChartRef = filepath.Base(chartPath)
	var chart bytes.Buffer
	if err := writeChart(&chart, rep.Realms); err != nil {
		return err
	}
	if err := os.WriteFile(chartPath, chart.Bytes(), 0o644); err != nil {
		return err
	}
	var md bytes.Buffer
	if err := writeReport(&md, rep); err != nil {
		return err
	}
	if err := os.WriteFile(out, md.Bytes(), 0o644); err != nil {
		return err
	}
	prog.say(fmt.Sprintf("wrote %s and %s in %s", out, chartPath, rep.Took.Round(time.Second)), true)
	return nil
}

// command is how this run was started, for the report.
func command() string {
	return strings.Join(append([]string{"go run ./bench"}, os.Args[1:]...), " ")
}

// machine describes where the run happened.
func machine() string {
	return fmt.Sprintf("%s %s/%s, %d CPUs (GOMAXPROCS %d)", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0))
}

func startProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// progress prints the run's status to stderr: on a terminal one line
// rewritten in place, with milestones kept; elsewhere milestones only.
type progress struct {
	w     io.Writer
	tty   bool
	start time.Time
}

func newProgress(f *os.File) *progress {
	st, err := f.Stat()
	return &progress{w: f, tty: err == nil && st.Mode()&os.ModeCharDevice != 0, start: time.Now()}
}

// say shows a status; milestone statuses are kept when not on a terminal.
func (p *progress) say(s string, milestone bool) {
	line := fmt.Sprintf("[%6s] %s", time.Since(p.start).Round(time.Second), s)
	switch {
	case p.tty:
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		if milestone {
			fmt.Fprintln(p.w)
		}
	case milestone:
		fmt.Fprintln(p.w, line)
	}
}

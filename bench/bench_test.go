package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/presence"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// TestShortWorkload runs the short workload through the twin and checks
// what design §9 promises: every answer through the module equals the
// direct one, no write is lost, and the module costs the server fewer
// bytes. Design targets (ratios, timings) are reported, never asserted.
func TestShortWorkload(t *testing.T) {
	spec := shortConfig(1).Specs[0]
	res, err := runRealm(spec, 1, sessionRun, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	d, m := res.Totals[sideDirect], res.Totals[sideModule]
	if res.Violations != 0 {
		t.Errorf("%d fidelity violations, first: %s", res.Violations, strings.Join(res.Samples, "\n"))
	}
	if res.LostWrites != 0 || res.RowMismatches != 0 {
		t.Errorf("%d lost writes, %d rows differing at the end", res.LostWrites, res.RowMismatches)
	}
	if m.RowsWritten != d.RowsWritten {
		t.Errorf("rows written: %d through the module, %d direct", m.RowsWritten, d.RowsWritten)
	}
	if m.Bytes >= d.Bytes {
		t.Errorf("upstream bytes: %d through the module, not fewer than %d direct", m.Bytes, d.Bytes)
	}
	if res.DirectErrors != 0 {
		t.Errorf("%d direct answers were not 2xx: the workload sends requests Zulip rejects", res.DirectErrors)
	}
	for k, kt := range res.ByKind {
		if kt.Clients == 0 || kt.Polls == 0 {
			t.Errorf("%s: %d clients sent %d polls; every client kind must be exercised", Kind(k), kt.Clients, kt.Polls)
		}
	}
	for _, outcome := range []string{"ping/local", "ping/forwarded", "modern/forwarded", "slim/converted", "legacy/converted"} {
		if res.Outcomes[outcome] == 0 {
			t.Errorf("the module never counted %s; outcomes %v", outcome, res.Outcomes)
		}
	}
	if res.Ideal.Bytes <= 0 || res.Ideal.Bytes > d.Bytes {
		t.Errorf("ideal bytes %d, direct %d: the lower bound must be positive and below the direct cost", res.Ideal.Bytes, d.Bytes)
	}
	if len(res.Minutes) != spec.Minutes {
		t.Errorf("%d per-minute samples, want %d", len(res.Minutes), spec.Minutes)
	}
}

// TestSameSeedSameWorkload: the workload is a function of the seed.
func TestSameSeedSameWorkload(t *testing.T) {
	spec := Spec{Name: "tiny", Users: 30, Active: 20, Online: 8, ClientsPerUser: 1.5, Minutes: 3}
	a, err := runRealm(spec, 7, sessionRun, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	b, err := runRealm(spec, 7, sessionRun, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	if a.Totals[sideDirect] != b.Totals[sideDirect] || a.ClientRequests != b.ClientRequests {
		t.Fatalf("two runs of one seed differ: %+v / %d and %+v / %d", a.Totals[sideDirect], a.ClientRequests, b.Totals[sideDirect], b.ClientRequests)
	}
}

// TestModernEntrySize: the ideal's arithmetic matches Zulip's rendering.
func TestModernEntrySize(t *testing.T) {
	rows := []presence.Row{
		{UserID: 7, Presence: presence.Presence{Active: 1793610000, Idle: 1793610030}},
		{UserID: 12345, Presence: presence.Presence{Active: 999999999, Idle: 1793610030}},
	}
	a := presence.Envelope{ServerTimestamp: 1793610030.5, LastUpdateID: 42}
	want := len(presence.AppendModern(nil, rows, a))
	id := &ideal{seq: 42}
	got := id.envelope(clockStart.Add(30*time.Second)) + len(rows) - 1
	for _, r := range rows {
		got += modernEntrySize(r.UserID, zuliptest.Row{LastActive: time.Unix(r.Active, 0), LastConnected: time.Unix(r.Idle, 0), Exists: true})
	}
	if got != want {
		t.Fatalf("computed %d bytes, rendered %d", got, want)
	}
}

func TestStratifiedKinds(t *testing.T) {
	kinds := stratifiedKinds(60, rand.New(rand.NewPCG(1, 1)))
	var n [numKinds]int
	for _, k := range kinds {
		n[k]++
	}
	want := [numKinds]int{27, 21, 6, 3, 3}
	if n != want {
		t.Fatalf("kinds %v, want %v", n, want)
	}
}

func TestCursorHelpers(t *testing.T) {
	direct := []byte(`{"result":"success","msg":"","presences":{},"server_timestamp":1.5,"presence_last_update_id":17}` + "\n")
	proxied := []byte(`{"result":"success","msg":"","presences":{},"server_timestamp":1.5,"presence_last_update_id":99,"ignored_parameters_unsupported":["x"]}` + "\n")
	if id, ok := lastUpdateID(proxied); !ok || id != 99 {
		t.Fatalf("lastUpdateID = %d, %v", id, ok)
	}
	var scratch []byte
	got := withCursorOf(direct, proxied, &scratch)
	if want := bytes.Replace(proxied, []byte(":99,"), []byte(":17,"), 1); !bytes.Equal(got, want) {
		t.Fatalf("withCursorOf = %s", got)
	}
	bad := bytes.Replace(proxied, []byte(":99,"), []byte(":9.5,"), 1)
	if got := withCursorOf(direct, bad, &scratch); !bytes.Equal(got, bad) {
		t.Fatal("a non-integer cursor was replaced, hiding it from the comparator")
	}
}

// fakeReport is a small report for the writers.
func fakeReport() *Report {
	rr := &RealmResult{Spec: specR200, ClientRequests: 10, Sessions: 2, Outcomes: map[string]float64{"ping/local": 3}}
	rr.Totals = [numSides]Totals{{Requests: 10, Bytes: 5000, Wire: 1000, RowsRead: 100, RowsWritten: 4}, {Requests: 6, Bytes: 1500, Wire: 500, RowsRead: 30, RowsWritten: 4}}
	rr.Ideal = IdealTotals{Requests: 4, Bytes: 1400, RowsRead: 28, RowsWritten: 4}
	for m := range 3 {
		rr.Minutes = append(rr.Minutes, Minute{Requests: [numSides]int64{int64(3 + m), 2}, Bytes: [numSides]int64{1600, int64(400 + m)}, IdealRequests: 1.3, IdealBytes: 380})
	}
	return &Report{Command: "go run ./bench -short", Short: true, Seed: 1, Machine: "test", Realms: []*RealmResult{rr}, ChartRef: "upstream.svg"}
}

func TestChartIsWellFormedSVG(t *testing.T) {
	var b bytes.Buffer
	if err := writeChart(&b, fakeReport().Realms); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&b)
	lines := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			lines++
		}
	}
	if lines != 6 {
		t.Fatalf("%d polylines, want 6 (bytes and requests: direct, module, ideal)", lines)
	}
}

func TestReport(t *testing.T) {
	var b bytes.Buffer
	if err := writeReport(&b, fakeReport()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Targets", "## R200", "| upstream response bytes on the wire (gzip level 1) | 1.0 kB | 500 B | – | 0.50 |", "| upstream response bytes, raw JSON | 5.0 kB | 1.5 kB | 1.4 kB | 0.30 | 1.07 |", "go run ./bench -short", "(upstream.svg)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

// TestScope: the report's mode line names what the run covered.
func TestScope(t *testing.T) {
	full := &Report{E2E: &E2EResult{Config: fullConfig(1).E2E}}
	for _, spec := range fullConfig(1).Specs {
		full.Realms = append(full.Realms, &RealmResult{Spec: spec})
	}
	forwarded := &E2EResult{Config: E2EConfig{Duration: 20 * time.Second}}
	if err := forwarded.Config.only("forwarded"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		r    *Report
		want string
	}{
		{full, "R200, R2k and R10k for 30 simulated minutes each, 20 s end-to-end run"},
		{fakeReport(), "R200 for 30 simulated minutes"},
		{&Report{E2E: forwarded}, "no realm replays, 20 s end-to-end run of forwarded requests only"},
	} {
		if got := scope(tc.r); got != tc.want {
			t.Errorf("scope = %q, want %q", got, tc.want)
		}
	}
}

// TestE2EKinds: -e2e picks the kinds the end-to-end load sends, and only
// those.
func TestE2EKinds(t *testing.T) {
	var cfg E2EConfig
	if err := cfg.only("ping, forwarded"); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var seen [numE2EKinds]int
	for range 1000 {
		seen[pickKind(rng, cfg.weights())]++
	}
	if seen[e2eSlim] != 0 || seen[e2ePing] < 400 || seen[e2eModern] < 400 {
		t.Errorf("kinds sent for -e2e ping,forwarded: %v", seen)
	}
	if err := cfg.only("pings"); err == nil {
		t.Error("an unknown kind was accepted")
	}
	if (E2EConfig{}).weights() != e2eMix {
		t.Error("no -e2e must mean the default mix")
	}
}

// TestE2E runs a tiny end-to-end load through real Caddy sites; it checks
// that every request kind got answers on both sites, never their timing.
func TestE2E(t *testing.T) {
	if err := quietCaddy(); err != nil {
		t.Fatal(err)
	}
	cfg := E2EConfig{Users: 40, Active: 30, Clients: 8, Workers: 2, Duration: time.Second, MaxPairs: 60}
	res, err := runE2E(cfg, 1, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	for k := range numE2EKinds {
		for s := range numSites {
			if st := res.Stats[k][s]; st.N == 0 || st.Errors != 0 {
				t.Errorf("%s on site %d: %d answers, %d errors", e2eKindNames[k], s, st.N, st.Errors)
			}
		}
	}
}

// TestShortWorkloadShared runs the short workload with the handler in
// shared mode, one instance and two: every answer within the shared-mode
// contract, no lost write, fewer upstream bytes than session mode's run.
func TestShortWorkloadShared(t *testing.T) {
	spec := shortConfig(1).Specs[0]
	spec.Minutes = 3
	for _, v := range []Variant{sharedRun, sharedTwo} {
		res, err := runRealm(spec, 1, v, func(int) {})
		if err != nil {
			t.Fatal(err)
		}
		d, m := res.Totals[sideDirect], res.Totals[sideModule]
		if res.Violations != 0 {
			t.Errorf("%s: %d contract violations, first: %s", v, res.Violations, strings.Join(res.Samples, "\n"))
		}
		if res.LostWrites != 0 || res.RowMismatches != 0 || m.RowsWritten != d.RowsWritten {
			t.Errorf("%s: %d lost writes, %d rows differing at the end, rows written %d through the module, %d direct", v, res.LostWrites, res.RowMismatches, m.RowsWritten, d.RowsWritten)
		}
		if m.Bytes >= d.Bytes {
			t.Errorf("%s: upstream bytes %d through the module, not fewer than %d direct", v, m.Bytes, d.Bytes)
		}
		if st := res.Staleness; st.N == 0 || st.P99 > res.MaxStaleness.Seconds() {
			t.Errorf("%s: staleness over %d polls, p99 %gs", v, st.N, st.P99)
		}
		if res.Outcomes["slim/view"]+res.Outcomes["slim/view_fed"] == 0 {
			t.Errorf("%s: no slim poll answered from the view; outcomes %v", v, res.Outcomes)
		}
	}
}

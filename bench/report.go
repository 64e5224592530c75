package main

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// Report is everything one run of the benchmark produced.
type Report struct {
	Command  string
	Short    bool
	Seed     uint64
	Started  time.Time
	Took     time.Duration
	Machine  string
	Realms   []*RealmResult
	E2E      *E2EResult
	Micro    *MicroResult
	ChartRef string // the SVG's path relative to the report
}

// writeReport writes the markdown report.
func writeReport(w io.Writer, r *Report) error {
	p := &printer{w: w}
	p.header(r)
	p.targets(r)
	for _, name := range realmNames(r.Realms) {
		p.realm(runsOf(r.Realms, name))
	}
	p.e2e(r.E2E)
	p.method(r)
	return p.err
}

// printer writes markdown and remembers the first error.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) f(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

func (p *printer) header(r *Report) {
	p.f("# zulip_presence benchmark\n\n")
	p.f("Design §9: the same seeded workload replayed twice in lock step, straight to `zuliptest` (*direct*) and through the real `zulip_presence` handler (*module*), against design §9's lower bound (*ideal*); then Caddy on real sockets.\n\n")
	mode := "full"
	if r.Short {
		mode = "short"
	}
	p.f("* Command: `%s`\n* Mode: %s: %s; seed %d\n", r.Command, mode, scope(r), r.Seed)
	if m := modesLine(r.Realms); m != "" {
		p.f("* Modes: %s\n", m)
	}
	p.f("* Machine: %s\n", r.Machine)
	p.f("* Date: %s; the whole run took %s\n", r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Took.Round(time.Second))
	if r.ChartRef != "" {
		p.f("* Chart: [%s](%s), upstream bytes and requests per simulated minute\n", r.ChartRef, r.ChartRef)
	}
	p.f("\n")
}

// scope says what the run covered, as "R200 and R2k for 30 simulated
// minutes each, 20 s end-to-end run". Every realm of a run replays the same
// number of minutes (-minutes sets them all).
func scope(r *Report) string {
	parts := []string{realmScope(r.Realms)}
	if e := r.E2E; e != nil {
		parts = append(parts, e2eScope(e.Config))
	}
	return strings.Join(parts, ", ")
}

func realmScope(rs []*RealmResult) string {
	if len(rs) == 0 {
		return "no realm replays"
	}
	names := realmNames(rs)
	each := ""
	if len(names) > 1 {
		each = " each"
	}
	return fmt.Sprintf("%s for %d simulated minutes%s", andList(names), rs[0].Spec.Minutes, each)
}

func e2eScope(c E2EConfig) string {
	run := fmt.Sprintf("%g s end-to-end run", c.Duration.Seconds())
	if c.weights() == e2eMix {
		return run
	}
	var kinds []string
	for k, w := range c.weights() {
		if w > 0 {
			kinds = append(kinds, e2eKindFlags[k])
		}
	}
	return run + " of " + andList(kinds) + " requests only"
}

// andList joins "a", "b" and "c" as "a, b and c".
func andList(items []string) string {
	if len(items) < 2 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " and " + items[len(items)-1]
}

// target is one line of design §9's targets table.
type target struct {
	figure, goal, measured string
	pass                   *bool // nil: not measured in this run
}

func (p *printer) targets(r *Report) {
	p.f("## Targets (design §9)\n\n")
	p.f("Ratios from one run on one machine; reported, never asserted in tests.\n\n")
	p.f("| figure | target | measured | result |\n|---|---|---|---|\n")
	for _, t := range targets(r) {
		result := "not measured in this run"
		if t.pass != nil {
			result = map[bool]string{true: "pass", false: "**FAIL**"}[*t.pass]
		}
		p.f("| %s | %s | %s | %s |\n", t.figure, t.goal, t.measured, result)
	}
	p.f("\n")
}

func targets(r *Report) []target {
	ts := sessionTargets(r, sessionRuns(r.Realms))
	ts = append(ts, sharedTargets(sharedRuns(r.Realms))...)
	return append(ts, comparisonTarget(r.Realms))
}

// comparisonTarget is design §9's target of shadow mode and verification:
// a healthy handler's comparisons find no mismatch, and no client of a
// shadow run gets an answer other than the server's (the run's fidelity
// violations).
func comparisonTarget(rs []*RealmResult) target {
	var checked []*RealmResult
	for _, rr := range rs {
		if rr.Variant.Shadow || rr.Variant.Verify {
			checked = append(checked, rr)
		}
	}
	return allRealms(checked, "shadow mode and verify_rate: mismatches of a healthy handler / fidelity violations", "0 / 0", func(rr *RealmResult) (string, bool) {
		mismatches := int64(rr.Outcomes["verify/mismatch"])
		return fmt.Sprintf("%s: %s / %s", runLabel(rr), count(mismatches), count(int64(rr.Violations))), mismatches == 0 && rr.Violations == 0 && rr.RowMismatches == 0
	})
}

// sessionTargets are design §9's targets of session mode and of the
// micro and end-to-end runs.
func sessionTargets(r *Report, realms []*RealmResult) []target {
	var ts []target
	r2k := findRealm(realms, "R2k")
	ts = append(ts, ratioTarget("R2k upstream bytes on the wire, module/direct (session mode)", "≤ 1.00", r2k, 1.00, func(t Totals) float64 { return float64(t.Wire) }))
	ts = append(ts, ratioTarget("R2k upstream bytes, raw JSON, module/direct (session mode)", "≤ 0.30", r2k, 0.30, func(t Totals) float64 { return float64(t.Bytes) }))
	ts = append(ts, ratioTarget("R2k presence rows read, module/direct", "≤ 0.30", r2k, 0.30, func(t Totals) float64 { return float64(t.RowsRead) }))
	ts = append(ts, allRealms(realms, "rows written, module/direct", "1.00, no lost write", func(rr *RealmResult) (string, bool) {
		ratio := div(float64(rr.Totals[sideModule].RowsWritten), float64(rr.Totals[sideDirect].RowsWritten))
		return fmt.Sprintf("%s: %.2f, %d lost", rr.Spec.Name, ratio, rr.LostWrites), ratio == 1 && rr.LostWrites == 0
	}))
	ts = append(ts, allRealms(realms, "fidelity violations", "0", func(rr *RealmResult) (string, bool) {
		return fmt.Sprintf("%s: %s", rr.Spec.Name, count(int64(rr.Violations))), rr.Violations == 0 && rr.RowMismatches == 0
	}))
	ts = append(ts, allRealms(realms, "upstream bytes on the wire, module/direct", "< 1.00", func(rr *RealmResult) (string, bool) {
		ratio := div(float64(rr.Totals[sideModule].Wire), float64(rr.Totals[sideDirect].Wire))
		return fmt.Sprintf("%s: %.2f", rr.Spec.Name, ratio), ratio < 1
	}))
	ts = append(ts, allRealms(realms, "upstream bytes, raw JSON, module/ideal", "≤ 1.2", func(rr *RealmResult) (string, bool) {
		ratio := div(float64(rr.Totals[sideModule].Bytes), float64(rr.Ideal.Bytes))
		return fmt.Sprintf("%s: %.2f", rr.Spec.Name, ratio), ratio <= 1.2
	}))
	if m := r.Micro; m != nil {
		ts = append(ts,
			check("local ping answer, in process", "≤ 5 µs, ≤ 4 allocations", fmt.Sprintf("%s, %.0f allocations", micros(m.PingNs), m.PingAllocs), m.PingNs <= 5000 && m.PingAllocs <= 4),
			check("merge a 400-row delta (into 1 500 rows)", "≤ 50 µs", micros(m.MergeNs), m.MergeNs <= 50_000),
			check("render 1 500 rows, slim / legacy", "≤ 100 µs / ≤ 250 µs", micros(m.SlimNs)+" / "+micros(m.LegacyNs), m.SlimNs <= 100_000 && m.LegacyNs <= 250_000),
			check("snapshot memory", "≤ 40 bytes per row", fmt.Sprintf("%.1f bytes per row", m.SnapshotBytesPerRow)+storePerRow(realms), m.SnapshotBytesPerRow <= 40),
		)
	}
	if e := r.E2E; e != nil && e.Stats[e2eModern][siteModule].N > 0 {
		st := e.Stats[e2eModern]
		ratio := div(float64(st[siteModule].P50), float64(st[sitePlain].P50))
		ts = append(ts, check("forwarded request latency, module/plain `reverse_proxy`", "≤ 1.05", fmt.Sprintf("%.3f (p50 of incremental polls; p99 %.3f)", ratio, div(float64(st[siteModule].P99), float64(st[sitePlain].P99))), ratio <= 1.05))
	}
	return ts
}

// storePerRow is each realm's store heap per snapshot row: sessions,
// user lists and slack included.
func storePerRow(rs []*RealmResult) string {
	if len(rs) == 0 {
		return ""
	}
	var parts []string
	for _, rr := range rs {
		parts = append(parts, fmt.Sprintf("%s %.1f", rr.Spec.Name, div(float64(rr.StoreHeap), float64(rr.SnapshotRows))))
	}
	return "; whole store per snapshot row in the runs: " + strings.Join(parts, ", ")
}

func check(figure, goal, measured string, pass bool) target {
	return target{figure: figure, goal: goal, measured: measured, pass: &pass}
}

func ratioTarget(figure, goal string, rr *RealmResult, limit float64, of func(Totals) float64) target {
	if rr == nil {
		return target{figure: figure, goal: goal, measured: "–"}
	}
	ratio := div(of(rr.Totals[sideModule]), of(rr.Totals[sideDirect]))
	return check(figure, goal, fmt.Sprintf("%.2f", ratio), ratio <= limit)
}

// allRealms is a target checked on every realm of the run.
func allRealms(rs []*RealmResult, figure, goal string, one func(*RealmResult) (string, bool)) target {
	if len(rs) == 0 {
		return target{figure: figure, goal: goal, measured: "–"}
	}
	var parts []string
	pass := true
	for _, rr := range rs {
		s, ok := one(rr)
		parts = append(parts, s)
		pass = pass && ok
	}
	return check(figure, goal, strings.Join(parts, "; "), pass)
}

func findRealm(rs []*RealmResult, name string) *RealmResult {
	for _, rr := range rs {
		if rr.Spec.Name == name {
			return rr
		}
	}
	return nil
}

// realm prints the runs of one realm: side by side when there are
// several, then each in detail.
func (p *printer) realm(runs []*RealmResult) {
	s := runs[0].Spec
	p.f("## %s: %s users, %s active in 14 days, %d online, %.1f clients per online user, %d simulated minutes\n\n",
		s.Name, count(int64(s.Users)), count(int64(s.Active)), s.Online, s.ClientsPerUser, s.Minutes)
	if len(runs) > 1 || runs[0].Variant.shared() {
		p.sideBySide(runs)
	}
	for _, rr := range runs {
		if len(runs) > 1 || rr.Variant.shared() {
			p.f("### %s\n\n", runTitle(rr))
		}
		p.realmTable(rr)
		if rr.Variant.shared() {
			p.staleness(rr)
			p.byteShares(rr)
			p.sharedViolations(rr)
		} else {
			p.lostWrites(rr)
		}
		p.byKind(rr)
		p.outcomes(rr)
		p.timing(rr)
	}
}

func (p *printer) realmTable(rr *RealmResult) {
	d, m, id := rr.Totals[sideDirect], rr.Totals[sideModule], rr.Ideal
	p.f("| figure | direct | module | ideal | module/direct | module/ideal |\n|---|---:|---:|---:|---:|---:|\n")
	p.row("client requests", float64(rr.ClientRequests), float64(rr.ClientRequests), math.NaN(), countF)
	p.row("upstream requests", float64(d.Requests), float64(m.Requests), id.Requests, countF)
	p.row("upstream response bytes on the wire (gzip level 1)", float64(d.Wire), float64(m.Wire), math.NaN(), bytesText)
	p.row("upstream response bytes, raw JSON", float64(d.Bytes), float64(m.Bytes), float64(id.Bytes), bytesText)
	p.row("presence rows read", float64(d.RowsRead), float64(m.RowsRead), float64(id.RowsRead), countF)
	p.row("rows written", float64(d.RowsWritten), float64(m.RowsWritten), float64(id.RowsWritten), countF)
	p.f("| fidelity violations (answers) | – | %s | – | | |\n", count(int64(rr.Violations)))
	p.f("| lost writes (a row differed after a request) / rows differing at the end | – | %s / %s | – | | |\n", count(int64(rr.LostWrites)), count(int64(rr.RowMismatches)))
	p.f("| state bytes per session, heap (%s sessions) | – | %s | – | | |\n", count(int64(rr.Sessions)), count(int64(div(float64(rr.StoreHeap), float64(rr.Sessions)))))
	p.f("| state bytes per session, store accounting | – | %s | – | | |\n", count(int64(div(rr.StoreAccounted, float64(rr.Sessions)))))
	if !rr.Variant.shared() { // shared mode serves from one view per realm, not per-session snapshots
		p.f("| state bytes per snapshot row, heap (%s rows) | – | %.1f | – | | |\n", count(rr.SnapshotRows), div(float64(rr.StoreHeap), float64(rr.SnapshotRows)))
	}
	perReq := func(t time.Duration) float64 { return div(float64(t), float64(rr.ClientRequests)) }
	p.row("server CPU per client request", perReq(rr.ServerCPU[sideDirect]), perReq(rr.ServerCPU[sideModule]), math.NaN(), micros)
	p.f("| proxy CPU per client request | – | %s | – | | |\n", micros(perReq(rr.ProxyCPU)))
	p.f("| server + proxy CPU per client request | %s | %s | – | %.2f | |\n\n", micros(perReq(rr.ServerCPU[sideDirect])), micros(perReq(rr.ServerCPU[sideModule]+rr.ProxyCPU)),
		div(float64(rr.ServerCPU[sideModule]+rr.ProxyCPU), float64(rr.ServerCPU[sideDirect])))
	if rr.DirectErrors > 0 {
		p.f("Warning: %s direct answers were not 2xx; the workload sent requests Zulip rejects.\n\n", count(rr.DirectErrors))
	}
}

// row prints one figure with its ratios; ideal NaN leaves the ideal out.
func (p *printer) row(name string, d, m, ideal float64, format func(float64) string) {
	idealText, mi := "–", ""
	if !math.IsNaN(ideal) {
		idealText, mi = format(ideal), fmt.Sprintf("%.2f", div(m, ideal))
	}
	p.f("| %s | %s | %s | %s | %.2f | %s |\n", name, format(d), format(m), idealText, div(m, d), mi)
}

func (p *printer) lostWrites(rr *RealmResult) {
	if rr.Violations == 0 && rr.LostWrites == 0 {
		return
	}
	p.f("**Fidelity violations.** A lost write makes every later answer that lists the user differ until the user's next forwarded write, so a handful of lost writes shows up as many violating answers. First violations:\n\n")
	for _, s := range rr.Samples {
		p.f("* `%s`\n", truncate(s, 400))
	}
	if rr.LostWrites > 0 {
		p.f("\nA lost write means the module answered locally a write Zulip would have made, or forwarded one Zulip would not have made. `caddymodule/gate_test.go` holds the cases this benchmark found, as twin tests: `TestGateAcrossSessions` (two sessions of one user while the gate was kept per session) and `TestPassThroughWrites` (writes of requests the handler passes through untouched, which the per-user row mirror did not see); both are fixed.\n")
	}
	p.f("\n")
}

func (p *printer) byKind(rr *RealmResult) {
	p.f("By client (every request of a client kind, with the upstream traffic it caused):\n\n")
	p.f("| client | clients | requests | polls | upstream requests direct / module | wire bytes direct | module | module/direct | raw bytes direct | module | module/direct | server CPU direct / module |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for k, kt := range rr.ByKind {
		p.f("| %s | %s | %s | %s | %s / %s | %s | %s | %.2f | %s | %s | %.2f | %s / %s |\n", Kind(k), count(int64(kt.Clients)), count(kt.Requests), count(kt.Polls),
			count(kt.Upstream[sideDirect]), count(kt.Upstream[sideModule]),
			bytesText(float64(kt.Wire[sideDirect])), bytesText(float64(kt.Wire[sideModule])), div(float64(kt.Wire[sideModule]), float64(kt.Wire[sideDirect])),
			bytesText(float64(kt.Bytes[sideDirect])), bytesText(float64(kt.Bytes[sideModule])), div(float64(kt.Bytes[sideModule]), float64(kt.Bytes[sideDirect])),
			kt.CPU[sideDirect].Round(time.Millisecond), kt.CPU[sideModule].Round(time.Millisecond))
	}
	p.f("\n")
}

func (p *printer) outcomes(rr *RealmResult) {
	keys := make([]string, 0, len(rr.Outcomes))
	for k := range rr.Outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %s", k, count(int64(rr.Outcomes[k])))
	}
	p.f("What the module did (its `caddy_zulip_presence_requests_total`, kind/outcome, and `caddy_zulip_presence_verify_total` as verify/result): %s.\n\n", strings.Join(parts, ", "))
}

func (p *printer) timing(rr *RealmResult) {
	p.f("Simulation: %s of wall time; side busy time direct %s, module %s (in parallel); comparator %s.\n\n",
		rr.Wall.Round(time.Millisecond), rr.SideBusy[sideDirect].Round(time.Millisecond), rr.SideBusy[sideModule].Round(time.Millisecond), rr.CompareBusy.Round(time.Millisecond))
}

func (p *printer) e2e(e *E2EResult) {
	if e == nil {
		return
	}
	c := e.Config
	p.f("## End to end: Caddy on loopback sockets\n\n")
	p.f("Caddy in process (`caddy.Load`, admin endpoint off) with two sites in front of one `zuliptest` server on a loopback listener (%s users, %s active in 14 days): one `zulip_presence` + `reverse_proxy`, one plain `reverse_proxy`. %d workers sent %s request pairs in %s as %d API users, every request to both sites in alternating order, so that noise hits both. Throughput is closed-loop: workers ÷ mean latency.\n\n",
		count(int64(c.Users)), count(int64(c.Active)), c.Workers, count(int64(e.Pairs)), e.Elapsed.Round(time.Millisecond), c.Clients)
	p.f("| request | n per site | module p50 / p99 | plain p50 / p99 | p50 module/plain | p99 module/plain | throughput module/plain | errors module / plain |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for k := range numE2EKinds {
		m, pl := e.Stats[k][siteModule], e.Stats[k][sitePlain]
		if m.N+m.Errors+pl.N+pl.Errors == 0 {
			continue // a kind this run did not send
		}
		p.f("| %s | %s | %s / %s | %s / %s | %.2f | %.2f | %.2f | %d / %d |\n", e2eKindNames[k], count(int64(m.N)),
			latency(m.P50), latency(m.P99), latency(pl.P50), latency(pl.P99),
			div(float64(m.P50), float64(pl.P50)), div(float64(m.P99), float64(pl.P99)), div(m.Throughput, pl.Throughput), m.Errors, pl.Errors)
	}
	p.f("\n")
}

func (p *printer) method(r *Report) {
	p.f("## Method\n\n")
	p.f(`* **Realms.** Users are seeded on both servers alike; the realm's "active in 14 days" users get presence rows of whole-second times 5 minutes to 14 days old, half of the others rows older than 14 days (up to 300 days), the rest none; 1 %% of extra users are bots. Online users come from the 14-day pool, stay 5–60 minutes, and are replaced by another within a minute, so the number online stays at the target.
* **Clients** (spec §5), drawn from the mix 45 %% web, 35 %% zulip-flutter, 10 %% zulip-mobile, 5 %% zulip-terminal, 5 %% scripts, 1 or 2 per online user (1.5 on average): the **web app** logs in (/json, session cookie and CSRF token) and opens 1–3 tabs; each tab starts from the cursor a page load gives it, pings at load, polls every 60 s with its own last_update_id, and pings on focus and on return from idle (5 minutes without input); **zulip-flutter** polls slim_presence=true without last_update_id every 60 s while in the foreground and pings on lifecycle changes (resumed, inactive, detached); **zulip-mobile** sends status=active&new_user_input=false every 60 s while in the foreground; **zulip-terminal** sends status (active iff there was input) and new_user_input every 60 s; **scripts** poll every 60 s as urlencoded slim, multipart/form-data legacy, multipart slim with history_limit_days=30, or with a parameter Zulip does not know (which the module converts, the parameter carried on its fetch, when the server lists it as ignored).
* **Lock step.** Two identical zuliptest servers share one virtual clock that starts at a half-second fraction, so Zulip's sub-second comparisons and the proxy's whole-second ones agree. Each virtual second, the requests due are sent to both sides at once (each side on its own locked OS thread), then every pair of answers is compared with `+"`zuliptest.Compare`"+` (converted=true for full polls: no last_update_id and not ping_only). For converted answers the comparator is given the proxied body with the direct answer's presence_last_update_id once that value is checked to be an integer: the comparator ignores that value for converted answers anyway, and this lets it take its byte-equality fast path.
* **Counters.** Upstream requests, response bytes, rows read and rows written are the zuliptest realms' own Stats (requests include the module's GET /users). Every client sends `+"`Accept-Encoding: gzip`"+`, as real Zulip clients do, and zuliptest compresses as Zulip's nginx does (`+"`puppet/zulip/templates/nginx.conf.template.erb`"+`: gzip level 1 for JSON answers with status 200, 403 or 404); *on the wire* counts the bytes the server sent (Stats.WireBytes), *raw JSON* the bytes before compression (Stats.ResponseBytes), which the ideal is computed in. The wire ratio is the honest figure, quoted first: small deltas compress less than whole tables. The chart plots raw bytes. A lost write is counted when, right after a request, the sender's row differs between the two sides while it did not before.
* **Ideal** (design §9): requests = one write per online user per 55 s (online user-seconds ÷ 55); bytes and rows = for every poll, Zulip's modern envelope plus the modern entries of the rows whose last_update_id moved since that poller's previous poll (each web tab is a poller; a non-web client's first poll counts its whole window); rows written = the direct side's, since any fewer would lose a write. The module can read fewer rows than this ideal: the API clients of one user share one session, hence one snapshot and cursor, so the second client's poll only fetches what changed since the first one's.
* **State per session.** *Heap*: the live heap freed when the handler's store is dropped at the end of the run (after two collections), less the heap of the empty store measured at provisioning, divided by the credentials the module saw (API keys and browser sessions that sent a request it understood). *Store accounting*: the store's own cost accounting (`+"`caddy_zulip_presence_store_bytes`"+`) over the same sessions. Sessions of users who went offline are still held (the store's TTL is 20 minutes of wall time). Rows per snapshot are taken from each session's last converted answer.
* **CPU** per client request is the CPU time of the side's thread (%s), split on the module side between the handler (proxy) and the zuliptest server it calls (server). The garbage collector's background work is not in either figure.
* **Shared mode** (design §10) runs replay the same workload with the handler in `+"`mode shared`"+` (one handler, or two with separate stores, each client talking to one of them at random, so one user's devices may be split). An answer equal to the direct one passes as above. Otherwise, when both are presence answers, the module's `+"`server_timestamp`"+` must be at most `+"`max_staleness`"+` older than the direct one's, and the answer must equal, under the same comparator, the direct realm's `+"`RenderAsOf`"+` for the same viewer and request (the module side's `+"`last_update_id`"+`, whose cursor may differ from the direct tab's) at the module's `+"`server_timestamp`"+` and at some update id between the realm's last one `+"`max_staleness`"+` before the request and its last one after the direct answer, with the requester's own entry as of now (taken from the direct answer, or rendered as of the direct answer's id when the cursors differ). The id the answer claims is tried first, then every id from the newest down. For incremental polls the answer's presence_last_update_id may be the as-of one or, when the requester's own row is newer, that row's id. *Staleness* is direct `+"`server_timestamp`"+` − module `+"`server_timestamp`"+` over every poll answer of the run.
* **End to end** as described above.
* **Micro figures** are the packages' own benchmarks, which the bench program runs with `+"`go test -run '^$' -bench … -benchmem -count=1 -benchtime …`"+` in a subprocess (no tests, so nothing binds a port; `+"`-short`"+` runs each benchmark for less time; the exact command is below) and reads from its standard benchmark output (ns/op, allocs/op and the units of `+"`b.ReportMetric`"+`): caddymodule's `+"`BenchmarkLocalPing`"+` (a trusted session's ping through `+"`Handler.ServeHTTP`"+`, the request body rewound rather than reallocated so that only the handler's allocations count); presence's `+"`BenchmarkMerge400Into1500`"+` (`+"`Snapshot.Merge`"+` of 400 rows, 100 of them new, into 1 500), `+"`BenchmarkRenderSlim1500`"+` and `+"`BenchmarkRenderLegacy1500`"+` (`+"`AppendModern`/`AppendLegacy`"+` of 1 500 rows into a reused buffer) and `+"`BenchmarkSnapshotBytesPerRow`"+` (the live heap per row of 200 snapshots built from a full fetch of 1 500 rows and ten merges of that delta).
`, cpuClockName)
	p.microMethod(r.Micro)
}

// microMethod gives the micro figures of this run and the command that
// measured them.
func (p *printer) microMethod(m *MicroResult) {
	if m == nil {
		return
	}
	p.f("* Micro figures of this run (`%s`): local ping %s and %.0f allocations; merge %s; render slim %s, legacy %s; snapshot %.1f bytes per row (%d rows).\n",
		m.Command, micros(m.PingNs), m.PingAllocs, micros(m.MergeNs), micros(m.SlimNs), micros(m.LegacyNs), m.SnapshotBytesPerRow, m.SnapshotRowsMeasured)
}

// div divides, giving NaN for an empty denominator.
func div(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// count formats an integer with thin thousands separators.
func count(n int64) string {
	if n < 0 {
		return "-" + count(-n)
	}
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "\u202f" + s[i:]
	}
	return s
}

// countF formats a float as a rounded count.
func countF(f float64) string {
	if math.IsNaN(f) {
		return "–"
	}
	return count(int64(math.Round(f)))
}

func bytesText(b float64) string {
	switch {
	case b >= 1e9:
		return fmt.Sprintf("%.2f GB", b/1e9)
	case b >= 1e6:
		return fmt.Sprintf("%.1f MB", b/1e6)
	case b >= 1e3:
		return fmt.Sprintf("%.1f kB", b/1e3)
	}
	return fmt.Sprintf("%.0f B", b)
}

// micros formats nanoseconds as microseconds.
func micros(ns float64) string {
	if math.IsNaN(ns) {
		return "–"
	}
	return fmt.Sprintf("%.1f µs", ns/1e3)
}

func latency(d time.Duration) string {
	return fmt.Sprintf("%.0f µs", float64(d)/1e3)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

package main

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// realmNames are the realms of the runs, in the order they ran.
func realmNames(rs []*RealmResult) []string {
	var names []string
	for _, rr := range rs {
		if len(names) == 0 || names[len(names)-1] != rr.Spec.Name {
			names = append(names, rr.Spec.Name)
		}
	}
	return names
}

// runsOf are the runs of one realm.
func runsOf(rs []*RealmResult, name string) []*RealmResult {
	var out []*RealmResult
	for _, rr := range rs {
		if rr.Spec.Name == name {
			out = append(out, rr)
		}
	}
	return out
}

// sessionRuns and sharedRuns are the runs the targets hold for: the
// handler as it runs live against the newest Zulip release, not shadow
// mode (which sends every request as it came) nor Zulip main, which are
// reported beside them.
func sessionRuns(rs []*RealmResult) []*RealmResult {
	var out []*RealmResult
	for _, rr := range rs {
		if !rr.Variant.shared() && rr.Variant.targeted() {
			out = append(out, rr)
		}
	}
	return out
}

func sharedRuns(rs []*RealmResult) []*RealmResult {
	var out []*RealmResult
	for _, rr := range rs {
		if rr.Variant.shared() && rr.Variant.targeted() {
			out = append(out, rr)
		}
	}
	return out
}

// findRun is the realm's run of variant v, nil if there was none.
func findRun(rs []*RealmResult, name string, v Variant) *RealmResult {
	for _, rr := range rs {
		if rr.Spec.Name == name && rr.Variant == v {
			return rr
		}
	}
	return nil
}

// modesLine says which modes each realm ran in, when any ran in shared
// mode: "R200 and R10k: session, shared; R2k: session, shared, shared,
// trust_window 5m, shared, 2 instances".
func modesLine(rs []*RealmResult) string {
	if len(sharedRuns(rs)) == 0 {
		return ""
	}
	var groups []string
	var names []string
	var last string
	flush := func() {
		if len(names) > 0 {
			groups = append(groups, andList(names)+": "+last)
		}
	}
	for _, name := range realmNames(rs) {
		var vs []string
		for _, rr := range runsOf(rs, name) {
			vs = append(vs, "*"+rr.Variant.String()+"*")
		}
		modes := strings.Join(vs, ", ")
		if modes != last {
			flush()
			names, last = nil, modes
		}
		names = append(names, name)
	}
	flush()
	return strings.Join(groups, "; ")
}

// runLabel names a run in the targets: "R2k shared, 2 instances".
func runLabel(rr *RealmResult) string { return rr.Spec.Name + " " + rr.Variant.String() }

// runTitle heads a run's details.
func runTitle(rr *RealmResult) string {
	if !rr.Variant.shared() {
		return "Session mode"
	}
	return fmt.Sprintf("Shared mode: trust_window %s, max_staleness %s, %d %s", shortDuration(rr.Trust), shortDuration(rr.MaxStaleness),
		rr.Variant.instances(), map[bool]string{true: "instance", false: "instances"}[rr.Variant.instances() == 1])
}

// sharedTargets are design §9's targets of shared mode.
func sharedTargets(rs []*RealmResult) []target {
	ratio := func(rr *RealmResult, of func(Totals) float64) float64 {
		return div(of(rr.Totals[sideModule]), of(rr.Totals[sideDirect]))
	}
	one := func(figure, goal string, rr *RealmResult, limit float64, of func(Totals) float64, extra func(*RealmResult) string) target {
		if rr == nil {
			return target{figure: figure, goal: goal, measured: "–"}
		}
		x := ratio(rr, of)
		measured := fmt.Sprintf("%.3f", x)
		if extra != nil {
			measured += extra(rr)
		}
		return check(figure, goal, measured, x <= limit)
	}
	bytesOf := func(t Totals) float64 { return float64(t.Bytes) }
	rowsOf := func(t Totals) float64 { return float64(t.RowsRead) }
	wireOf := func(t Totals) float64 { return float64(t.Wire) }
	ts := []target{
		func() target {
			const figure, goal = "R2k web app incremental polls answered from the view (shared mode, id gaps 0.001)", "≥ 0.98"
			rr := findRun(rs, "R2k", sharedRun)
			if rr == nil {
				return target{figure: figure, goal: goal, measured: "–"}
			}
			x := viewShare(rr)
			return check(figure, goal, fmt.Sprintf("%.3f", x), x >= 0.98)
		}(),
		one("R2k upstream bytes on the wire, module/direct (shared mode)", "≤ 0.01", findRun(rs, "R2k", sharedRun), 0.01, wireOf, nil),
		one("R2k upstream bytes, raw JSON, module/direct (shared mode)", "≤ 0.005", findRun(rs, "R2k", sharedRun), 0.005, bytesOf, nil),
		one("R2k presence rows read, module/direct (shared mode)", "≤ 0.003", findRun(rs, "R2k", sharedRun), 0.003, rowsOf, nil),
	}
	perRun := func(figure, goal string, one func(*RealmResult) (string, bool)) target {
		return allRealms(rs, figure, goal, func(rr *RealmResult) (string, bool) {
			s, ok := one(rr)
			return runLabel(rr) + ": " + s, ok
		})
	}
	ts = append(ts,
		perRun("upstream bytes on the wire, module/direct (shared mode)", "< 1.00", func(rr *RealmResult) (string, bool) {
			x := ratio(rr, wireOf)
			return ratioText(x), x < 1
		}),
		perRun("rows written, module/direct (shared mode)", "1.00, no lost write", func(rr *RealmResult) (string, bool) {
			x := ratio(rr, func(t Totals) float64 { return float64(t.RowsWritten) })
			return fmt.Sprintf("%.2f, %d lost", x, rr.LostWrites), x == 1 && rr.LostWrites == 0 && rr.RowMismatches == 0
		}),
		perRun("shared-mode contract violations (§10), one and two instances", "0", func(rr *RealmResult) (string, bool) {
			return count(int64(rr.Violations)), rr.Violations == 0
		}),
		perRun("staleness of shared answers, p99", "≤ `max_staleness`", func(rr *RealmResult) (string, bool) {
			st := rr.Staleness
			return fmt.Sprintf("%s (max %s)", seconds(st.P99), seconds(st.Max)), st.N > 0 && st.P99 <= rr.MaxStaleness.Seconds()
		}),
	)
	return ts
}

// viewShare is the share of the web app's incremental polls answered
// from the view (outcomes modern/view and modern/view_fed): the others
// joined it (two upstream requests) or went upstream as they came.
func viewShare(rr *RealmResult) float64 {
	return div(rr.Outcomes["modern/view"]+rr.Outcomes["modern/view_fed"], float64(rr.ByKind[KindWeb].Polls))
}

// gapsText says at which rate the shared-mode runs' servers skip update
// ids, and why.
func gapsText(runs []*RealmResult) string {
	var rates []string
	seen := map[float64]bool{}
	for _, rr := range runs {
		if rr.Variant.shared() && !seen[rr.Variant.GapRate] {
			seen[rr.Variant.GapRate] = true
			rates = append(rates, fmt.Sprintf("%g", rr.Variant.GapRate))
		}
	}
	if len(rates) == 0 {
		return ""
	}
	return fmt.Sprintf("In shared mode both servers skip presence update ids (zuliptest `IDGapRate`): %s of the sequence's bumps. "+
		"Zulip's `PresenceSequence` is bumped even when `INSERT … ON CONFLICT DO NOTHING` inserts nothing, which happens only when two first writes of one user race, "+
		"at most once per user ever: in steady state far below one bump in a million. %g, one bump in a thousand (a gap every two minutes or so at R2k), is a pessimistic realistic rate; "+
		"%g, one in a hundred, stands for a realm whose bots write presence, which takes ids from the same sequence while realm reads never show bots, and is a stress figure. "+
		"A fetch that answers fewer rows than ids tells the view that some id may be a hidden row's: only the rows that changed since such an interval are then left unplaced.\n\n",
		andList(rates), realisticGaps, stressGaps)
}

// sideBySide compares the realm's runs, the direct side once: every run
// replays the same workload, so its direct side is the same.
func (p *printer) sideBySide(runs []*RealmResult) {
	d := runs[0]
	p.f("Every run replays the same workload; *direct* is the same in each, and is what plain `reverse_proxy` would send upstream. Runs marked *shadow* send every client request upstream as it came plus the handler's own fetches and checks; runs marked *verify_rate 0.01* resend a hundredth of what the handler answered itself; every other run has verification off. Their comparisons are the `verify/…` counts under each run. Ratios are module/direct.\n\n")
	p.f("%s", gapsText(runs))
	p.f("| figure | direct |")
	for _, rr := range runs {
		p.f(" %s |", rr.Variant)
	}
	p.f("\n|---|---:|%s\n", strings.Repeat("---:|", len(runs)))
	total := func(name string, of func(Totals) float64, format func(float64) string) {
		p.f("| %s | %s |", name, format(of(d.Totals[sideDirect])))
		for _, rr := range runs {
			m := of(rr.Totals[sideModule])
			p.f(" %s (%s) |", format(m), ratioText(div(m, of(rr.Totals[sideDirect]))))
		}
		p.f("\n")
	}
	total("upstream requests", func(t Totals) float64 { return float64(t.Requests) }, countF)
	total("upstream response bytes on the wire (gzip level 1)", func(t Totals) float64 { return float64(t.Wire) }, bytesText)
	total("upstream response bytes, raw JSON", func(t Totals) float64 { return float64(t.Bytes) }, bytesText)
	total("presence rows read", func(t Totals) float64 { return float64(t.RowsRead) }, countF)
	total("rows written", func(t Totals) float64 { return float64(t.RowsWritten) }, countF)
	each := func(name string, f func(*RealmResult) string) {
		p.f("| %s | – |", name)
		for _, rr := range runs {
			p.f(" %s |", f(rr))
		}
		p.f("\n")
	}
	each("fidelity violations (answers)", func(rr *RealmResult) string { return count(int64(rr.Violations)) })
	each("lost writes / rows differing at the end", func(rr *RealmResult) string {
		return count(int64(rr.LostWrites)) + " / " + count(int64(rr.RowMismatches))
	})
	each("id gap rate", func(rr *RealmResult) string {
		if !rr.Variant.shared() {
			return "0"
		}
		return fmt.Sprintf("%g", rr.Variant.GapRate)
	})
	each("web app incremental polls answered from the view", func(rr *RealmResult) string {
		if !rr.Variant.shared() {
			return "–"
		}
		return fmt.Sprintf("%.3f", viewShare(rr))
	})
	each("staleness of poll answers, p50 / p99 (max)", func(rr *RealmResult) string {
		if !rr.Variant.shared() {
			return "–"
		}
		st := rr.Staleness
		return fmt.Sprintf("%s / %s (%s)", seconds(st.P50), seconds(st.P99), seconds(st.Max))
	})
	p.f("| server + proxy CPU per client request | %s |", micros(div(float64(d.ServerCPU[sideDirect]), float64(d.ClientRequests))))
	for _, rr := range runs {
		cpu := float64(rr.ServerCPU[sideModule] + rr.ProxyCPU)
		p.f(" %s (%s) |", micros(div(cpu, float64(rr.ClientRequests))), ratioText(div(cpu, float64(rr.ServerCPU[sideDirect]))))
	}
	p.f("\n")
	p.f("\n")
}

func ratioText(x float64) string {
	switch {
	case math.IsNaN(x):
		return "–"
	case x < 0.1:
		return fmt.Sprintf("%.3f", x)
	}
	return fmt.Sprintf("%.2f", x)
}

// seconds formats a staleness.
func seconds(s float64) string {
	if math.IsNaN(s) {
		return "–"
	}
	return fmt.Sprintf("%g s", s)
}

// staleness prints how old the run's shared answers stood.
func (p *printer) staleness(rr *RealmResult) {
	st := rr.Staleness
	p.f("Staleness (direct `server_timestamp` − module's, `max_staleness` %s): over %s poll answers p50 %s, p99 %s, max %s; over the %s answered without an upstream request p50 %s, p99 %s. %s answers differed from the direct one and were checked against the direct realm's history (%s as-of answers rendered); the oldest accepted stood %s update ids before the direct answer.\n\n",
		shortDuration(rr.MaxStaleness), count(int64(st.N)), seconds(st.P50), seconds(st.P99), seconds(st.Max),
		count(int64(st.ViewN)), seconds(st.ViewP50), seconds(st.ViewP99), count(int64(st.Searched)), count(int64(st.Renders)), count(st.MaxBack))
}

// byteShares says which clients caused the module's upstream bytes.
func (p *printer) byteShares(rr *RealmResult) {
	var parts []string
	total := float64(rr.Totals[sideModule].Wire)
	for k, kt := range rr.ByKind {
		parts = append(parts, fmt.Sprintf("%s %.2f", Kind(k), div(float64(kt.Wire[sideModule]), total)))
	}
	web := rr.ByKind[KindWeb]
	p.f("Share of the module's upstream bytes on the wire by client: %s. Web app requests were %.2f of the client requests and caused %.2f of the module's upstream requests; the web app's incremental polls the view answered (outcomes `modern/view`, `modern/view_fed`): %s of %s (%.3f), at id gap rate %g.\n\n",
		strings.Join(parts, ", "), div(float64(web.Requests), float64(rr.ClientRequests)), div(float64(web.Upstream[sideModule]), float64(rr.Totals[sideModule].Requests)),
		count(int64(rr.Outcomes["modern/view"]+rr.Outcomes["modern/view_fed"])), count(web.Polls), viewShare(rr), rr.Variant.GapRate)
}

// sharedViolations prints the contract violations of a shared-mode run.
func (p *printer) sharedViolations(rr *RealmResult) {
	if rr.Violations == 0 && rr.LostWrites == 0 {
		return
	}
	keys := make([]string, 0, len(rr.ViolationKinds))
	for k := range rr.ViolationKinds {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %s", k, count(int64(rr.ViolationKinds[k]))))
	}
	p.f("**Contract violations** (answers no as-of answer within `max_staleness` matches), by client and request: %s. First violations (the request as the module side sent it):\n\n", strings.Join(parts, ", "))
	for _, s := range rr.Samples {
		p.f("* `%s`\n", truncate(s, 600))
	}
	if rr.LostWrites > 0 {
		p.f("\n%s lost writes: right after a request, the sender's row differed between the two sides.\n", count(int64(rr.LostWrites)))
	}
	p.f("\n")
}

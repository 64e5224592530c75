package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// Variant is how a run configures the module side: session mode, or
// shared mode (design §10) with a trust_window and one or two handlers in
// front of the realm.
type Variant struct {
	// Mode is "session" (also the zero value) or "shared".
	Mode string
	// Trust is the handlers' trust_window; zero keeps the handler's
	// default (coalesce_window, 55 s).
	Trust time.Duration
	// Instances is how many handlers, each with its own store, stand in
	// front of the realm; each client talks to one of them, so one user's
	// devices may be split. Zero means one.
	Instances int
	// GapRate is the servers' zuliptest.ServerSettings.IDGapRate: the
	// share of presence update ids no row the realm shows ever holds.
	GapRate float64
	// Main runs both servers as Zulip main (zuliptest.FeatureLevelMain)
	// instead of the newest release, 11.x: the one-user presence read
	// then answers the slim shape.
	Main bool
	// Shadow runs the handlers in shadow mode.
	Shadow bool
	// Verify runs the handlers with verify_rate at its default; every
	// other run has it off.
	Verify bool
}

// The id gap rates of the shared-mode runs. Zulip's PresenceSequence
// skips an id when two first writes of one user race (INSERT … ON
// CONFLICT DO NOTHING bumps it and inserts nothing), which happens at
// most once per user, ever, and where bots' presence shares the sequence,
// for each of their writes, which realm reads never show. realisticGaps
// is far above the first: one bump in a thousand, a few dozen gaps in a
// run of R2k. stressGaps, one in a hundred, stands for bots writing
// presence beside the people.
const (
	realisticGaps = 0.001
	stressGaps    = 0.01
)

var (
	sessionRun  = Variant{Mode: "session"}
	sharedRun   = Variant{Mode: "shared", GapRate: realisticGaps}
	sharedTrust = Variant{Mode: "shared", Trust: 5 * time.Minute, GapRate: realisticGaps}
	sharedTwo   = Variant{Mode: "shared", Instances: 2, GapRate: realisticGaps}
	sharedGaps  = Variant{Mode: "shared", GapRate: stressGaps}

	sessionMain   = Variant{Mode: "session", Main: true}
	sharedMain    = Variant{Mode: "shared", GapRate: realisticGaps, Main: true}
	sessionShadow = Variant{Mode: "session", Shadow: true}
	sharedShadow  = Variant{Mode: "shared", GapRate: realisticGaps, Shadow: true}
	sessionVerify = Variant{Mode: "session", Verify: true}
	sharedVerify  = Variant{Mode: "shared", GapRate: realisticGaps, Verify: true}
)

// shared reports whether the run is in shared mode.
func (v Variant) shared() bool { return v.Mode == "shared" }

// targeted reports whether the design's targets hold for the run.
func (v Variant) targeted() bool { return !v.Shadow && !v.Main }

// instances is the number of handlers, at least one.
func (v Variant) instances() int { return max(1, v.Instances) }

// String names the variant in the report: "session", "shared",
// "shared, trust_window 5m", "shared, 2 instances".
func (v Variant) String() string {
	s := "session"
	if v.shared() {
		s = "shared"
	}
	if v.Main {
		s += ", Zulip main"
	}
	if v.Shadow {
		s += ", shadow"
	}
	if v.Verify {
		s += ", verify_rate 0.01"
	}
	if !v.shared() {
		return s
	}
	if v.Trust > 0 {
		s += ", trust_window " + shortDuration(v.Trust)
	}
	if v.instances() > 1 {
		s += fmt.Sprintf(", %d instances", v.instances())
	}
	if v.GapRate != realisticGaps {
		s += fmt.Sprintf(", id gaps %g", v.GapRate)
	}
	return s
}

// shortDuration is "5m" rather than "5m0s".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// variantsFor are the runs of one realm: the variants of every realm, then
// the extra ones of this realm.
func (cfg *Config) variantsFor(spec Spec) []Variant {
	return append(slices.Clone(cfg.Variants), cfg.Extras[spec.Name]...)
}

// overrideVariants applies -mode, -trust, -instances and -gaps (negative:
// unset). With none of the last three set, -mode keeps the standard runs
// of that mode (shared mode with trust_window 5m, with two instances and
// with stressGaps on R2k, or on R200 in the short run); with any set,
// shared mode runs once, as they say, at realisticGaps unless -gaps says.
func (cfg *Config) overrideVariants(mode, trust string, instances int, gaps float64) error {
	if mode == "" {
		mode = "both"
	}
	if mode != "session" && mode != "shared" && mode != "both" {
		return fmt.Errorf("unknown -mode %q (want session, shared or both)", mode)
	}
	if instances < 0 || instances > 2 {
		return fmt.Errorf("-instances %d: want 1 or 2", instances)
	}
	if gaps > 1 {
		return fmt.Errorf("-gaps %g: want a rate in [0, 1]", gaps)
	}
	var trustD time.Duration
	if trust != "" {
		d, err := time.ParseDuration(trust)
		if err != nil || d <= 0 {
			return fmt.Errorf("-trust %q: want a positive duration such as 5m", trust)
		}
		trustD = d
	}
	custom := trust != "" || instances != 0 || gaps >= 0
	if mode == "session" && custom {
		return errors.New("-trust, -instances and -gaps apply to shared mode: use -mode shared or -mode both")
	}
	if custom {
		if gaps < 0 {
			gaps = realisticGaps
		}
		cfg.Variants = []Variant{{Mode: "shared", Trust: trustD, Instances: instances, GapRate: gaps}}
		cfg.Extras = nil
		if mode == "both" {
			cfg.Variants = append([]Variant{sessionRun}, cfg.Variants...)
		}
		return nil
	}
	keep := func(v Variant) bool { return mode == "both" || v.shared() == (mode == "shared") }
	cfg.Variants = slices.DeleteFunc(cfg.Variants, func(v Variant) bool { return !keep(v) })
	for name, vs := range cfg.Extras {
		cfg.Extras[name] = slices.DeleteFunc(slices.Clone(vs), func(v Variant) bool { return !keep(v) })
	}
	return nil
}

// sharedChecker checks the answers of a shared-mode run against the
// contract of design §10: every answer is what the direct server would
// have answered to the same request at one instant no more than
// max_staleness before it (its server_timestamp is that instant's), with
// the requester's own row as of now, under the comparator's allowances.
type sharedChecker struct {
	realm     *zuliptest.Realm // the direct side's, with its history
	staleness time.Duration    // the handlers' max_staleness
	emails    map[int64]string // user id → email, for legacy answers
}

// asOf is how the checker accepted a shared-mode answer.
type asOf struct {
	timed    bool    // both answers carry a server_timestamp
	stale    float64 // direct server_timestamp − module's, seconds
	searched bool    // the answer was not the direct one: the history was searched
	renders  int     // as-of answers rendered for it
	back     int64   // for a searched answer, how many update ids before the direct answer it stood
}

// check is compareJob for shared mode.
func (sc *sharedChecker) check(j *job, scratch *[]byte) error {
	d, m := j.ans[sideDirect], j.ans[sideModule]
	dts, dok := serverTimestampOf(d.body)
	mts, mok := serverTimestampOf(m.body)
	if dok && mok {
		j.asOf.timed, j.asOf.stale = true, dts-mts
	}
	sameRequest := !j.modern || j.cursor[sideDirect] == j.cursor[sideModule]
	var exact error
	if sameRequest {
		if exact = compareJob(j, scratch); exact == nil {
			return nil
		}
	} else {
		exact = fmt.Errorf("last_update_id %d through the module, %d direct", j.cursor[sideModule], j.cursor[sideDirect])
	}
	if !j.poll || j.unusual || d.status != http.StatusOK || m.status != http.StatusOK || !dok || !mok {
		return exact
	}
	j.asOf.searched = true
	if stale := j.asOf.stale; stale < 0 || stale > sc.staleness.Seconds() {
		return fmt.Errorf("server_timestamp %s is %gs before the direct answer's, not within max_staleness %v", pyFloatText(mts), stale, sc.staleness)
	}
	return sc.search(j, sameRequest, mts, scratch)
}

// search looks for the update id the module's answer stands at, from the
// id it claims, then from the direct answer's id down to the oldest a view
// within max_staleness can hold.
func (sc *sharedChecker) search(j *job, sameRequest bool, mts float64, scratch *[]byte) error {
	m := j.ans[sideModule]
	viewer := j.c.user.id
	req := j.asOfRequest()
	at := instantOf(mts)
	hi := j.hi
	lo, err := sc.realm.UpdateIDAt(j.at().Add(-sc.staleness - time.Nanosecond))
	if err != nil {
		lo = sc.realm.OldestAsOfID()
	}
	key := sc.entryKey(j, viewer)
	// The requester's own row as of now: its entry in the direct answer
	// when that answered the same request, else as of the direct answer's
	// id.
	ownSource := j.ans[sideDirect].body
	var hiBody []byte
	if !sameRequest {
		if hiBody, err = sc.realm.RenderAsOf(viewer, hi, at, req); err != nil {
			return fmt.Errorf("as of %d: %v", hi, err)
		}
		j.asOf.renders++
		ownSource = hiBody
	}
	own, ownPresent, err := presenceEntry(ownSource, key)
	if err != nil {
		return fmt.Errorf("direct answer: %v", err)
	}
	ownID := j.row[sideDirect].LastUpdateID
	claimed, _ := lastUpdateID(m.body)
	var firstErr error
	firstX := int64(-1)
	try := func(x int64) (bool, error) {
		body := hiBody
		if x != hi || body == nil {
			if body, err = sc.realm.RenderAsOf(viewer, x, at, req); err != nil {
				return false, fmt.Errorf("as of %d: %v", x, err)
			}
			j.asOf.renders++
		}
		exp, err := expectedAsOf(body, key, own, ownPresent, ownID, claimed, j.modern)
		if err != nil {
			return false, fmt.Errorf("as of %d: %v", x, err)
		}
		pBody := m.body
		if j.converted() {
			pBody = withCursorOf(exp, m.body, scratch)
		}
		cerr := zuliptest.Compare(zuliptest.Answer{Status: http.StatusOK, Header: j.ans[sideDirect].header, Body: exp},
			zuliptest.Answer{Status: m.status, Header: m.header, Body: pBody}, j.converted())
		if cerr == nil {
			j.asOf.back = hi - x
			return true, nil
		}
		if firstErr == nil {
			firstErr, firstX = cerr, x
		}
		return false, nil
	}
	if claimed >= lo && claimed <= hi {
		if ok, err := try(claimed); ok || err != nil {
			return err
		}
	}
	for x := hi; x >= lo; x-- {
		if x == claimed {
			continue
		}
		if ok, err := try(x); ok || err != nil {
			return err
		}
	}
	return fmt.Errorf("no answer as of update ids %d…%d (server_timestamp %gs older, cursor %d) matches; as of %d: %v", lo, hi, j.asOf.stale, claimed, firstX, firstErr)
}

// entryKey is the viewer's key in the answer's presences: the user id in
// the modern format, the email in the legacy one.
func (sc *sharedChecker) entryKey(j *job, viewer int64) []byte {
	if j.asOfRequest().Slim {
		return []byte(`"` + strconv.FormatInt(viewer, 10) + `"`)
	}
	return strconv.AppendQuote(nil, sc.emails[viewer])
}

// asOfRequest is the request the module side was sent, as RenderAsOf
// takes it.
func (j *job) asOfRequest() zuliptest.AsOfRequest {
	var req zuliptest.AsOfRequest
	req.Slim = j.form.Get("slim_presence") == "true" || j.modern
	if j.modern {
		c := j.cursor[sideModule]
		req.LastUpdateID = &c
	}
	if d, err := strconv.ParseInt(j.form.Get("history_limit_days"), 10, 64); err == nil {
		req.HistoryLimitDays = &d
	}
	return req
}

// at is the virtual instant the job was sent at.
func (j *job) at() time.Time { return clockStart.Add(time.Duration(j.sec) * time.Second) }

// expectedAsOf is an as-of answer with the requester's own entry as of
// now. For a modern poll its presence_last_update_id may be the as-of
// one or, when the own row is newer, the own row's id; the module's
// value is taken when it is one of those.
func expectedAsOf(body, key, own []byte, ownPresent bool, ownID, claimed int64, modern bool) ([]byte, error) {
	top, err := zuliptest.SplitObject(body)
	if err != nil {
		return nil, err
	}
	var out []byte
	out = append(out, '{')
	for i, mem := range top {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, mem.Key...)
		out = append(out, ':')
		switch string(mem.Key) {
		case `"presences"`:
			entries, err := zuliptest.SplitObject(mem.Value)
			if err != nil {
				return nil, err
			}
			out = append(out, '{')
			n := 0
			for _, e := range entries {
				if bytes.Equal(e.Key, key) {
					continue
				}
				if n > 0 {
					out = append(out, ',')
				}
				out = append(append(append(out, e.Key...), ':'), e.Value...)
				n++
			}
			if ownPresent {
				if n > 0 {
					out = append(out, ',')
				}
				out = append(append(append(out, key...), ':'), own...)
			}
			out = append(out, '}')
		case `"presence_last_update_id"`:
			v := mem.Value
			if modern {
				asOfID, err := strconv.ParseInt(string(v), 10, 64)
				if err == nil && (claimed == asOfID || (ownPresent && claimed == max(asOfID, ownID))) {
					v = strconv.AppendInt(nil, claimed, 10)
				}
			}
			out = append(out, v...)
		default:
			out = append(out, mem.Value...)
		}
	}
	return append(out, "}\n"...), nil
}

// presenceEntry returns the value of key in the answer's presences.
func presenceEntry(body, key []byte) ([]byte, bool, error) {
	top, err := zuliptest.SplitObject(body)
	if err != nil {
		return nil, false, err
	}
	for _, mem := range top {
		if string(mem.Key) != `"presences"` {
			continue
		}
		entries, err := zuliptest.SplitObject(mem.Value)
		if err != nil {
			return nil, false, err
		}
		for _, e := range entries {
			if bytes.Equal(e.Key, key) {
				return e.Value, true, nil
			}
		}
		return nil, false, nil
	}
	return nil, false, errors.New("no presences")
}

var serverTimestampKey = []byte(`"server_timestamp":`)

// serverTimestampOf reads server_timestamp from a compact answer.
func serverTimestampOf(body []byte) (float64, bool) {
	i := bytes.LastIndex(body, serverTimestampKey)
	if i < 0 {
		return 0, false
	}
	i += len(serverTimestampKey)
	n := bytes.IndexAny(body[i:], ",}")
	if n <= 0 {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(body[i:i+n]), 64)
	return f, err == nil
}

// instantOf is the server instant a server_timestamp names. The virtual
// clock stands on half seconds, which a float64 holds exactly.
func instantOf(ts float64) time.Time {
	sec, frac := math.Modf(ts)
	return time.Unix(int64(sec), int64(math.Round(frac*1e9))).UTC()
}

func pyFloatText(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// Staleness summarises how much older shared-mode answers stood than the
// direct ones: direct server_timestamp − module server_timestamp.
type Staleness struct {
	N        int     // poll answers with a server_timestamp on both sides
	P50, P99 float64 // seconds, over them
	Max      float64
	// Of them, those the module gave without an upstream request (from
	// its view).
	ViewN            int
	ViewP50, ViewP99 float64
	// Searched counts answers that differed from the direct one and were
	// accepted (or not) by the as-of search; Renders is what it rendered.
	Searched, Renders int
	// MaxBack is the most update ids an accepted answer stood before the
	// direct one.
	MaxBack int64
}

// stalenessOf summarises the samples: all polls, and those of the view.
func stalenessOf(all, view []float64) Staleness {
	all, view = slices.Sorted(slices.Values(all)), slices.Sorted(slices.Values(view))
	st := Staleness{N: len(all), ViewN: len(view)}
	st.P50, st.P99, st.Max = quantile(all, 0.50), quantile(all, 0.99), quantile(all, 1)
	st.ViewP50, st.ViewP99 = quantile(view, 0.50), quantile(view, 0.99)
	return st
}

// quantile is the nearest-rank quantile q of sorted xs; NaN when empty.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	k := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[min(max(k, 0), len(xs)-1)]
}

// accountShared adds a checked shared-mode job to the staleness samples
// and the violation classes.
func (tw *twin) accountShared(j *job) {
	r := tw.res
	st := &r.Staleness
	if j.asOf.searched {
		st.Searched++
	}
	st.Renders += j.asOf.renders
	if j.err == nil {
		st.MaxBack = max(st.MaxBack, j.asOf.back)
	}
	if j.poll && j.asOf.timed {
		tw.stale = append(tw.stale, j.asOf.stale)
		if j.up[sideModule] == 0 {
			tw.viewAged = append(tw.viewAged, j.asOf.stale)
		}
	}
	if j.err != nil {
		if r.ViolationKinds == nil {
			r.ViolationKinds = map[string]int{}
		}
		r.ViolationKinds[j.c.kind.String()+" "+j.class()]++
	}
}

// class names the kind of request: ping, or the poll's format.
func (j *job) class() string {
	switch {
	case !j.poll:
		return "ping"
	case j.modern:
		return "incremental poll"
	case j.form.Get("slim_presence") == "true":
		return "slim poll"
	}
	return "legacy poll"
}

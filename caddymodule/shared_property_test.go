package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/zulip-presence/caddy-zulip-presence/presence"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// TestSharedProperty is TestTwinProperty for shared mode: two identical
// simulated realms on one clock, one answering directly and one through
// handlers with Mode shared, driven by the same random steps (pings,
// slim, legacy and web app polls, each client's cursor taken from its own
// side's previous answer; clock steps mostly of 1–20 s, sometimes
// minutes or hours; status and new_user_input variations; guests, the
// guest restriction and shared access; invisible mode, deactivation and
// reactivation, key regeneration, logout).
//
// A seed also fixes the handlers' setup: trust_window 5m on seeds that are
// multiples of 3 (else the default), and two handlers with separate
// stores (two Caddy instances without shared state, each with a clock
// skew of its own) on seeds that are 3 mod 4, a user's clients spread over
// both; otherwise one handler, skewed on even seeds. It also fixes the
// Zulip both servers model, drawn as TestTwinProperty draws it
// (drawServer: version, min-freq, legacy offset, offline threshold, id
// gaps, whether the guest restriction limits presence, each user's email
// visibility), and the handlers are configured with the server's
// settings as TestTwinProperty's are.
//
// The shared-mode contract (design §10.8) is checked on every answer: it
// must equal what the server would have answered to this request at one
// instant no more than max_staleness before it, with the requester's own
// row as fresh as in a direct answer, plus the session-mode allowances.
// So a successful poll answer is fine when it is the direct answer (under
// zuliptest.Compare's allowances); otherwise it must equal the direct
// realm's RenderAsOf for the same viewer and request (the proxied side's
// own cursor), rendered at the instant its server_timestamp claims (at
// most max_staleness before the direct answer's, never after), at some
// update id from the one standing just before now − max_staleness to
// LastUpdateID(), with the viewer's own entry taken out of both and
// compared on its own with the live answer's. Entries the session-mode
// contract lets a converted answer get wrong (visibility changed within
// resync_interval, a connection within a second of the window's edge) are
// taken out as TestTwinProperty does, and a web app answer's
// presence_last_update_id may differ by what those entries account for
// (see unsignalledID). Status codes, error bodies, pings and headers must match exactly,
// except that a ping of revoked credentials may get a local 200 within
// trust_window of their last 2xx at that handler (and no 401 or 403
// since). Every user's row and the realm's update id must be the same on
// both servers after every step, and the rows written equal at the end.
// Seeds that are 0 or 3 mod 4 (one handler, and two) run every handler
// with verify_rate 1, checked as TestTwinProperty checks it.
//
// ZP_PROPERTY_SEEDS, ZP_PROPERTY_STEPS (default 400 here),
// ZP_PROPERTY_SHRINK and ZP_PROPERTY_LOG work as for TestTwinProperty; a
// shrunk sequence is also printed as Go, to replay with
// sharedScenario.run. ZP_PROPERTY_TRACE=1 logs every request, both
// answers and the handler's upstream calls.
func TestSharedProperty(t *testing.T) {
	var total sharedStats
	runProperty(t, 400, func(seed uint64, steps int) propertySeed {
		ss := generateShared(seed, steps)
		return propertySeed{
			steps: ss.steps, about: ss.describeConfig(), setup: ss.describeSetup(),
			run: func(t *testing.T, steps []step, quiet bool) []finding {
				findings, st := ss.run(t, steps, quiet)
				if !quiet {
					total.add(st)
				}
				return findings
			},
			describe: ss.describeShared,
		}
	})
	t.Logf("%s", total)
}

// TestSharedModeTwoInstances: two handlers in shared mode (trust_window
// 5m) with separate stores (two Caddy instances without shared state) in
// front of one realm, each member's phone (slim polls every minute) on one and browser
// (web app polls every minute, with pings between) on the other, a legacy
// client and a script too, and a guest, for half an hour of realm time
// with a deactivation, a key regeneration, a logout and the guest
// restriction on the way (whose clients stop sending while their
// credentials are dead, so that allowance 5 plays no part). Several
// instances need no shared store: the rows written are those of a direct
// run, every answer is valid under the shared-mode contract (the
// TestSharedProperty checker), and each instance built a view of its own.
func TestSharedModeTwoInstances(t *testing.T) {
	const members = 10
	sc := &scenario{}
	// trust_window 5m: with the default (55 s), a client polling every
	// minute is never trusted at its next poll, so only its own write's
	// answer could be served from a view.
	ss := &sharedScenario{scenario: sc, skews: []time.Duration{0, 3 * time.Second}, trustWindow: 5 * time.Minute}
	for i := range members {
		sc.users = append(sc.users, userSpec{fmt.Sprintf("user%d", i), zuliptest.RoleMember})
	}
	guest := len(sc.users)
	sc.users = append(sc.users, userSpec{"polonius", zuliptest.RoleGuest})
	addClient := func(cs clientSpec, inst int) int {
		sc.clients = append(sc.clients, cs)
		ss.route = append(ss.route, inst)
		return len(sc.clients) - 1
	}
	// What each client sends, how often, from when.
	type role struct {
		client         int
		kind           reqKind
		period, offset time.Duration
	}
	var roles []role
	phones, browsers := map[int]int{}, map[int]int{}
	for u := range members {
		phones[u] = addClient(clientSpec{user: u}, u%2)
		browsers[u] = addClient(clientSpec{user: u, browser: true}, (u+1)%2)
		roles = append(roles,
			role{phones[u], reqSlim, time.Minute, time.Duration(6*u) * time.Second},
			role{browsers[u], reqModern, time.Minute, time.Duration(6*u+29) * time.Second},
			role{browsers[u], reqPing, time.Minute, time.Duration(6*u+47) * time.Second},
		)
	}
	roles = append(roles,
		role{addClient(clientSpec{user: 0, multipart: true}, 1), reqLegacy, time.Minute, 33 * time.Second}, // zulip-terminal
		role{addClient(clientSpec{user: 1}, 0), reqPing, time.Minute, 41 * time.Second},                    // a script
		role{addClient(clientSpec{user: guest}, 0), reqSlim, time.Minute, 13 * time.Second},
		role{addClient(clientSpec{user: guest, browser: true}, 1), reqModern, time.Minute, 50 * time.Second},
	)
	// Realm events; dead tells when a client, its credentials revoked,
	// sends nothing, until the step that renews them.
	events := map[time.Duration][]step{
		8 * time.Minute:                 {{kind: stepDeactivate, user: 3}},
		11 * time.Minute:                {{kind: stepReactivate, user: 3}, {kind: stepRenew, client: browsers[3]}},
		14 * time.Minute:                {{kind: stepRegenerate, user: 4}},
		16 * time.Minute:                {{kind: stepRenew, client: phones[4]}},
		18 * time.Minute:                {{kind: stepRestrict, on: true}, {kind: stepShare, user: guest, other: 0}},
		21 * time.Minute:                {{kind: stepLogout, client: browsers[5]}},
		23*time.Minute + 30*time.Second: {{kind: stepRenew, client: browsers[5]}},
	}
	dead := func(c int, now time.Duration) bool {
		switch {
		case c == phones[3] || c == browsers[3]:
			return now >= 8*time.Minute && now < 11*time.Minute
		case c == phones[4]:
			return now >= 14*time.Minute && now < 16*time.Minute
		case c == browsers[5]:
			return now >= 21*time.Minute && now < 23*time.Minute+30*time.Second
		}
		return false
	}
	rng := rand.New(rand.NewPCG(2, 2))
	var last time.Duration
	for now := time.Duration(0); now < 30*time.Minute; now += time.Second {
		due := append([]step(nil), events[now]...)
		for _, r := range roles {
			if now < r.offset || (now-r.offset)%r.period != 0 || dead(r.client, now) {
				continue
			}
			q := reqSpec{kind: r.kind, input: -1, days: -1}
			q.idle = rng.IntN(5) == 0
			if rng.IntN(8) == 0 {
				q.input = 1
			}
			if r.kind == reqModern {
				q.pingFalse = true
				q.fresh = now == r.offset // a page load
			}
			due = append(due, step{kind: stepRequest, client: r.client, req: q})
		}
		if len(due) == 0 {
			continue
		}
		if now > last {
			sc.steps = append(sc.steps, step{kind: stepAdvance, d: now - last})
			last = now
		}
		sc.steps = append(sc.steps, due...)
	}
	findings, st := ss.run(t, sc.steps, false)
	for _, f := range findings {
		t.Errorf("%s", f)
	}
	if len(findings) > 0 {
		last := findings[len(findings)-1].step
		t.Logf("%s\n%s\nsteps %d–%d:\n%s", ss.describeConfig(), ss.describeSetup(), max(0, last-40), last, ss.describeShared(sc.steps[max(0, last-40):last+1], max(0, last-40)))
	}
	t.Logf("%s", st)
	// Every poll reaches the server (as a fetch at the view's cursor), so
	// what shows each instance used its view is the view it built.
	for i, n := range st.viewRows {
		if n == 0 {
			t.Errorf("instance %d holds no view", i)
		}
	}
}

// sharedScenario is a scenario with the setup of the shared-mode
// handlers.
type sharedScenario struct {
	*scenario
	trustWindow time.Duration   // 0: the default, coalesce_window
	skews       []time.Duration // per handler: its clock minus the servers'
	route       []int           // per client: the handler it talks to
}

// generateShared makes the scenario of a seed, with TestTwinProperty's
// generator for requests and realm operations and clock steps of its
// own, shorter than max_staleness more often than not.
func generateShared(seed uint64, n int) *sharedScenario {
	rng := rand.New(rand.NewPCG(seed, 0x7368617265645f70))
	sc := &scenario{seed: seed}
	ss := &sharedScenario{scenario: sc}
	if seed%3 == 0 {
		ss.trustWindow = 5 * time.Minute
	}
	instances := 1
	if seed%4 == 3 {
		instances = 2
	}
	for i := range instances {
		var skew time.Duration
		if seed%2 == 0 || i > 0 {
			skew = time.Duration(1+rng.IntN(30)) * time.Second
			if rng.IntN(2) == 0 {
				skew = -skew
			}
		}
		ss.skews = append(ss.skews, skew)
	}
	sc.drawPeople(rng, 3, 3, func(user, k int) {
		ss.route = append(ss.route, (user+k)%instances)
	})
	g := newGenerator(sc, rng)
	sc.server = drawServer(seed, sharedServerStream, len(sc.users))
	g.setup()
	for len(sc.steps) < n {
		switch r := rng.IntN(100); {
		case r < 62:
			g.request()
		case r < 88:
			advanceShared(g)
		default:
			g.operation()
		}
	}
	sc.steps = sc.steps[:n]
	return ss
}

// advanceShared moves the clock mostly by 1–20 s, so that answers from
// views of every age within max_staleness and just beyond it are seen.
func advanceShared(g *generator) {
	g.advanceAmong([]clockSpan{{75, 1, 20}, {88, 21, 40}, {97, 61, 15 * 60}, {99, 3600, 3 * 3600}})
}

// verifies reports whether the seed's handlers run with verify_rate 1.
// verifies reports whether the scenario's handlers verify every answer;
// never against a server that stores every write, where they may not.
func (ss *sharedScenario) verifies() bool {
	return (ss.seed%4 == 0 || ss.seed%4 == 3) && ss.zulip().settings.PresenceUpdateMinFreq > 0
}

func (ss *sharedScenario) describeConfig() string {
	tw := "trust_window default"
	if ss.trustWindow > 0 {
		tw = "trust_window " + ss.trustWindow.String()
	}
	about := fmt.Sprintf("%d handler(s) with clock skews %v, %s; %s", len(ss.skews), ss.skews, tw, ss.zulip().describe())
	if ss.verifies() {
		about += ", verify_rate 1"
	}
	return about
}

// describeShared is describeFrom, naming the handler of each request.
func (ss *sharedScenario) describeShared(steps []step, first int) string {
	var b strings.Builder
	for i, s := range steps {
		line := ss.stepString(s)
		if s.kind == stepRequest && len(ss.skews) > 1 {
			line = fmt.Sprintf("[h%d] %s", ss.route[s.client], line)
		}
		fmt.Fprintf(&b, "%4d  %s\n", first+i, line)
	}
	return b.String()
}

// sharedStats counts how the answers of a run were judged.
type sharedStats struct {
	requests   int   // presence requests sent through the handlers
	exact      int   // successful polls equal to the direct answer
	allowed    int   // successful polls valid as of now, with the allowances
	asOf       int   // successful polls valid only as of an earlier id
	fromView   []int // per handler: successful polls with no upstream write
	localPings []int // per handler: pings answered without the server
	viewRows   []int // per handler: rows its views held at the end
}

func (s *sharedStats) add(o sharedStats) {
	s.requests += o.requests
	s.exact += o.exact
	s.allowed += o.allowed
	s.asOf += o.asOf
	sum := func(to *[]int, from []int) {
		for i, n := range from {
			if i >= len(*to) {
				*to = append(*to, 0)
			}
			(*to)[i] += n
		}
	}
	sum(&s.fromView, o.fromView)
	sum(&s.localPings, o.localPings)
	sum(&s.viewRows, o.viewRows)
}

func (s sharedStats) String() string {
	return fmt.Sprintf("%d requests; polls: %d equal to the direct answer, %d valid now with the allowances, %d valid only as of an earlier update id; per handler: %v polls answered without an upstream write, %v pings answered locally, %v view rows at the end",
		s.requests, s.exact, s.allowed, s.asOf, s.fromView, s.localPings, s.viewRows)
}

// sharedRun applies one sequence of steps to a twin whose proxied realm
// is behind one or more shared-mode handlers. It is a propRun (whose
// operations and server checks it uses) with a checker of its own.
type sharedRun struct {
	*propRun
	ss        *sharedScenario
	hs        []*Handler
	staleness time.Duration
	trustW    time.Duration
	stats     sharedStats
	trace     func(format string, args ...any) // ZP_PROPERTY_TRACE=1: every request and its upstream calls
	changedBy map[int64]string                 // per user id: what last changed the row
}

// run applies steps to a fresh twin and returns the findings, one per
// class, stopping at the first divergence of the servers' state. With
// quiet, the handlers' stores are released at once (for shrinking).
func (ss *sharedScenario) run(t *testing.T, steps []step, quiet bool) ([]finding, sharedStats) {
	name := t.Name()
	if quiet {
		name = fmt.Sprintf("%s/shrink/%d", t.Name(), shrinkRuns.Add(1))
	}
	cfg := Handler{Mode: modeShared, TrustWindow: caddy.Duration(ss.trustWindow), CacheName: name + "/h0"}
	ss.zulip().configure(&cfg)
	if ss.verifies() {
		all := 1.0
		cfg.VerifyRate = &all
	}
	tw := newTwin(t, cfg)
	hs := []*Handler{tw.h}
	for i := 1; i < len(ss.skews); i++ {
		c := cfg
		c.CacheName = fmt.Sprintf("%s/h%d", name, i)
		hs = append(hs, provision(t, c))
	}
	for i, h := range hs {
		skew := ss.skews[i]
		h.SetClock(func() time.Time { return tw.Clock.Now().Add(skew) })
		if quiet {
			defer h.Cleanup()
		}
	}
	r := &sharedRun{
		propRun:   newPropRun(ss.scenario, tw),
		ss:        ss,
		hs:        hs,
		staleness: time.Duration(hs[0].MaxStaleness),
		trustW:    time.Duration(hs[0].TrustWindow),
		stats:     sharedStats{fromView: make([]int, len(hs)), localPings: make([]int, len(hs))},
	}
	for _, h := range hs {
		h.onMismatch = r.checkMismatch
	}
	if os.Getenv("ZP_PROPERTY_TRACE") == "1" && !quiet {
		r.trace = t.Logf
	}
	for i, s := range steps {
		r.step = i
		if s.kind == stepRequest {
			r.request(r.clients[s.client], s.req)
		} else {
			before := r.rowIDs()
			r.apply(s)
			r.noteChanges(before, "SetPresenceEnabled")
		}
		r.checkServers()
		if !r.stopped {
			if d, p := tw.Direct.DefaultRealm().LastUpdateID(), tw.Proxied.DefaultRealm().LastUpdateID(); d != p {
				r.report("presence update ids differ", "last update id %d through the module, %d direct", p, d)
				r.stopped = true
			}
		}
		if r.stopped {
			break
		}
	}
	if !r.stopped {
		r.checkRowsWritten()
	}
	for _, h := range hs {
		rows := 0
		for _, v := range h.store.Views(h.now()) {
			rows += v.Rows
		}
		r.stats.viewRows = append(r.stats.viewRows, rows)
	}
	return r.findings, r.stats
}

// request sends one client's request to both sides, the proxied one
// through the client's handler, and checks the answers.
func (r *sharedRun) request(c *propClient, q reqSpec) {
	if q.fresh {
		c.cursorD, c.cursorP = -1, -1
	}
	cursorD, cursorP := c.cursorD, c.cursorP
	fd, fp := q.form(cursorD), q.form(cursorP)
	reqD, reqP := c.request(false, fd), c.request(true, fp)
	inst := r.ss.route[c.index]
	creds := fmt.Sprintf("h%d %s", inst, credsOf(reqP))
	before := r.rowIDs()
	d := r.tw.serveDirect(reqD)
	r.noteChanges(before, fmt.Sprintf("a request of %s through h%d", r.sc.clientName(c.index), inst))
	r.tw.h = r.hs[inst] // serve goes through tw.h
	r.viewer = c.spec.user
	p, calls := r.serve(reqP)
	r.stats.requests++
	now := r.tw.Clock.Now()
	writes := 0
	for _, call := range calls {
		if call.method == http.MethodPost && strings.HasSuffix(call.path, "/users/me/presence") {
			writes++
		}
		key := fmt.Sprintf("h%d %s", inst, call.creds)
		tr := r.trust[key]
		if tr == nil {
			tr = &trust{}
			r.trust[key] = tr
		}
		switch {
		case call.status >= 200 && call.status < 300:
			tr.lastOK, tr.denied = now, false
		case call.status == http.StatusUnauthorized || call.status == http.StatusForbidden:
			tr.denied = true
		}
	}
	if q.kind == reqModern {
		c.cursorD = nextCursor(d, c.cursorD)
		c.cursorP = nextCursor(p, c.cursorP)
	}
	what := fmt.Sprintf("%s %s %s", r.sc.clientName(c.index), q.kind, fp.Encode())
	if len(r.hs) > 1 {
		what = fmt.Sprintf("[h%d] %s", inst, what)
	}
	if q.kind == reqModern && cursorD != cursorP {
		what += fmt.Sprintf(" (direct side's cursor %d)", cursorD)
	}
	detail := func() string {
		return fmt.Sprintf("%s\n\tdirect:  %d %s\n\tproxied: %d %s (%d upstream calls: %s)", what, d.status, trimBody(d.body), p.status, trimBody(p.body), len(calls), callList(calls))
	}
	if r.trace != nil {
		r.trace("step %d at t+%v: %s\n\tdirect:  %d %s\n\tproxied: %d %s\n\tupstream: %s\n\tviews of h%d: %+v", r.step, now.Sub(r.start), what, d.status, trimBody(d.body), p.status, trimBody(p.body), callList(calls), inst, r.hs[inst].store.Views(now))
	}
	local := writes == 0 && p.status == http.StatusOK
	revoked := d.status == http.StatusUnauthorized || d.status == http.StatusForbidden
	if q.kind == reqPing && local && r.sc.zulip().settings.PresenceUpdateMinFreq == 0 {
		// Zulip stores every write: presence_update_min_freq 0 turns
		// local answers off (design §8).
		r.report("local ping answer with presence_update_min_freq 0", "Zulip said %d\n%s", d.status, detail())
		return
	}

	if local && revoked {
		// A ping of revoked credentials may be answered locally within
		// trust_window of their last 2xx at this handler, if no 401 or
		// 403 to them came since (design §6, allowance 5).
		tr := r.trust[creds]
		switch {
		case tr == nil || tr.lastOK.IsZero():
			r.report(fmt.Sprintf("local 200 to a %s for credentials the server never accepted", q.kind), "Zulip said %d\n%s", d.status, detail())
		case tr.denied:
			r.report(fmt.Sprintf("local 200 to a %s after the server refused the same credentials", q.kind), "Zulip said %d\n%s", d.status, detail())
		case now.Sub(tr.lastOK) > r.trustW:
			r.report(fmt.Sprintf("local 200 to a %s for revoked credentials past the trust window", q.kind), "last 2xx %v before, Zulip said %d\n%s", now.Sub(tr.lastOK), d.status, detail())
		case q.kind != reqPing || !bytes.Equal(p.body, presence.PingAnswer):
			// Allowance 5 is about pings: a poll gets the realm's table.
			r.report(fmt.Sprintf("%s answered from the view for revoked credentials (within trust_window)", q.kind), "last 2xx %v before, Zulip said %d\n%s", now.Sub(tr.lastOK), d.status, detail())
		}
		return
	}

	if q.kind == reqPing || d.status != http.StatusOK || p.status != http.StatusOK {
		if err := sameAnswer(d, p, false); err != nil {
			r.report(fmt.Sprintf("%s: status or body differs (Zulip %d, module %d)", q.kind, d.status, p.status), "%v\n%s", err, detail())
			return
		}
		if q.kind == reqPing && local {
			r.stats.localPings[inst]++
		}
	} else {
		how, err := r.validPoll(c, q, cursorD, cursorP, d, p)
		if err != nil {
			r.report(fmt.Sprintf("%s: %s", q.kind, how), "%v\n%s", err, detail())
			return
		}
		if local {
			r.stats.fromView[inst]++
		}
	}
	for _, name := range []string{"Content-Type", "Cache-Control", "Www-Authenticate"} {
		if dv, pv := d.header.Values(name), p.header.Values(name); strings.Join(dv, "\n") != strings.Join(pv, "\n") {
			r.report(fmt.Sprintf("header %s of a %s answer", name, q.kind), "%q, Zulip sent %q\n%s", pv, dv, detail())
		}
	}
	if err := sameExpires(d.header, p.header); err != nil {
		r.report(fmt.Sprintf("header Expires of a %s answer", q.kind), "%v\n%s", err, detail())
	}
}

// rowIDs is each user's row's update id on the direct server.
func (r *sharedRun) rowIDs() []int64 {
	ids := make([]int64, len(r.users))
	for i, u := range r.users {
		ids[i] = r.tw.Direct.DefaultRealm().PresenceRow(u.id).LastUpdateID
	}
	return ids
}

// noteChanges records what changed the rows whose id moved since before.
func (r *sharedRun) noteChanges(before []int64, by string) {
	if r.changedBy == nil {
		r.changedBy = map[int64]string{}
	}
	for i, id := range r.rowIDs() {
		if id != before[i] {
			r.changedBy[r.users[i].id] = by
		}
	}
}

// validPoll checks a successful poll answer against the shared-mode
// contract; on failure it returns the class of the breach and its
// details.
func (r *sharedRun) validPoll(c *propClient, q reqSpec, cursorD, cursorP int64, d, p answer) (string, error) {
	converted := q.kind != reqModern
	if (q.kind != reqModern || cursorD == cursorP) && sameAnswer(d, p, converted) == nil {
		r.stats.exact++
		return "", nil
	}
	now := r.tw.Clock.Now()
	dr := r.tw.Direct.DefaultRealm()
	dts, err1 := serverTimestampOf(d.body)
	pts, err2 := serverTimestampOf(p.body)
	if err1 != nil || err2 != nil {
		return "no server_timestamp", fmt.Errorf("direct: %v, proxied: %v", err1, err2)
	}
	if pts > dts || dts-pts > r.staleness.Seconds() {
		return "server_timestamp beyond max_staleness", fmt.Errorf("server_timestamp %v, the server's now %v: not within %v before it", pts, dts, r.staleness)
	}
	at := time.Unix(0, int64(math.Round(pts*1e9))).UTC() // the instant the answer claims

	viewer := c.spec.user
	viewerID := r.users[viewer].id
	req := zuliptest.AsOfRequest{Slim: !r.sc.zulip().legacyShaped(q), Ignored: ignoredOf(d.body)}
	if q.kind == reqModern {
		cur := cursorP
		req.LastUpdateID = &cur
	}
	if q.days >= 0 {
		days := int64(q.days)
		req.HistoryLimitDays = &days
	}
	hi := dr.LastUpdateID()
	// The earliest state allowed is the one standing just before the
	// instant max_staleness ago: changes made at that instant came after
	// it.
	lo, err := dr.UpdateIDAt(now.Add(-r.staleness - time.Nanosecond))
	if err != nil {
		return "history", err
	}

	drop := r.sharedDrops(viewer, q, now, at)
	own := r.entryKey(viewer, q)
	if !drop[own] {
		// The requester's own row is as fresh as in a direct answer.
		live, err := dr.RenderAsOf(viewerID, hi, now, req)
		if err != nil {
			return "history", err
		}
		le, lok, err := entryOf(live, own)
		if err != nil {
			return "answer", err
		}
		pe, pok, err := entryOf(p.body, own)
		if err != nil {
			return "answer", err
		}
		if lok != pok || !bytes.Equal(le, pe) {
			by := r.changedBy[viewerID]
			if strings.HasPrefix(by, "a request of "+r.sc.clientName(c.index)) {
				by = "this client"
			} else if strings.HasPrefix(by, "a request of ") {
				h := by[len(by)-1:]
				by = "another client"
				if len(r.hs) > 1 {
					by += " through h" + h
				}
			}
			return "own row not as fresh as in a direct answer (last changed by " + by + ")",
				fmt.Errorf("own entry %s: %s, the server's now: %s (last changed by %s)", own, orNone(pe, pok), orNone(le, lok), r.changedBy[viewerID])
		}
		drop[own] = true
	}
	pb, err := dropEntries(p.body, drop)
	if err != nil {
		return "answer", fmt.Errorf("proxied answer: %v", err)
	}
	var first error
	for id := hi; id >= lo; id-- {
		exp, err := dr.RenderAsOf(viewerID, id, at, req)
		if err != nil {
			return "history", err
		}
		eb, err := dropEntries(exp, drop)
		if err != nil {
			return "answer", fmt.Errorf("as-of answer: %v", err)
		}
		err = sameAnswer(answer{status: http.StatusOK, body: eb}, answer{status: http.StatusOK, body: pb}, converted)
		if err != nil && !converted && strings.HasPrefix(err.Error(), `"presence_last_update_id" = `) {
			err = r.unsignalledID(viewerID, id, req, eb, pb, drop, err)
		}
		if err == nil {
			if id == hi {
				r.stats.allowed++
			} else {
				r.stats.asOf++
			}
			return "", nil
		}
		if first == nil {
			first = err
		}
	}
	return diffClass(first) + " at every update id within max_staleness",
		fmt.Errorf("no update id in [%d, %d] (%v back) gives this answer at its server_timestamp (%v before now); as of %d: %v",
			lo, hi, r.staleness, now.Sub(at), hi, first)
}

// unsignalledID accepts a presence_last_update_id that differs from the
// as-of answer's only because of the entries the contract lets the answer
// get wrong. Zulip's presence_last_update_id is the largest id of the
// rows it returns (the cursor, or -1, when none), so the answer's must be
// the largest id, as of id, of the rows of the entries that were not
// dropped (the answer may lack every dropped entry: a user reactivated
// within resync_interval), or higher than that and the id of a version
// of the row of a user whose entry was dropped (a user deactivated within
// resync_interval, whose row the view still holds as it last saw it), or
// of the viewer's own row now. The rest of the answer must then match.
func (r *sharedRun) unsignalledID(viewerID, id int64, req zuliptest.AsOfRequest, eb, pb []byte, drop map[string]bool, err error) error {
	var e, p struct {
		ID        int64                      `json:"presence_last_update_id"`
		Presences map[string]json.RawMessage `json:"presences"`
	}
	if json.Unmarshal(eb, &e) != nil || json.Unmarshal(pb, &p) != nil {
		return err
	}
	dr := r.tw.Direct.DefaultRealm()
	rows, herr := dr.RowsAsOf(id)
	if herr != nil {
		return herr
	}
	base := int64(-1)
	if req.LastUpdateID != nil {
		base = *req.LastUpdateID
	}
	if len(e.Presences) > 0 {
		base = -1
		for key := range e.Presences {
			uid, _ := strconv.ParseInt(key, 10, 64)
			base = max(base, rows[uid].LastUpdateID)
		}
	}
	ok := p.ID == base
	if !ok && p.ID > base {
		changes, herr := dr.RowChanges(dr.OldestAsOfID())
		if herr != nil {
			return herr
		}
		owner := int64(0)
		for _, ch := range changes {
			if ch.UpdateID == p.ID || (ch.Before.Exists && ch.Before.LastUpdateID == p.ID) {
				owner = ch.UserID
			}
		}
		for _, u := range r.users {
			if owner == 0 && dr.PresenceRow(u.id).LastUpdateID == p.ID {
				owner = u.id // older than the history: the row still standing
			}
		}
		for _, u := range r.users {
			own := u.id == viewerID && dr.PresenceRow(u.id).LastUpdateID == p.ID
			if u.id == owner && (own || drop[strconv.FormatInt(u.id, 10)] || drop[u.email]) {
				ok = true
			}
		}
	}
	if !ok {
		return err
	}
	pb = bytes.Replace(pb, []byte(`"presence_last_update_id":`+strconv.FormatInt(p.ID, 10)), []byte(`"presence_last_update_id":`+strconv.FormatInt(e.ID, 10)), 1)
	return sameAnswer(answer{status: http.StatusOK, body: eb}, answer{status: http.StatusOK, body: pb}, false)
}

// sharedDrops names the entries the session-mode contract lets an answer
// to viewer get wrong, as TestTwinProperty's allowedStaleness does: users
// whose visibility to the viewer changed within resync_interval, and
// users whose last connection is within a second of the window's edge,
// at now or at the instant the answer claims.
func (r *sharedRun) sharedDrops(viewer int, q reqSpec, now, at time.Time) map[string]bool {
	days := r.sc.zulip().windowDays(q)
	drop := map[string]bool{}
	for u, tu := range r.users {
		changed := r.changedAt[viewer][u]
		stale := !changed.IsZero() && now.Sub(changed) <= defaultResync
		row := r.tw.Direct.DefaultRealm().PresenceRow(tu.id)
		edge := false
		for _, t := range []time.Time{now, at} {
			cutoff := t.AddDate(0, 0, -days)
			edge = edge || (row.Exists && row.LastConnected.Sub(cutoff).Abs() < time.Second)
		}
		if stale || edge {
			drop[r.entryKey(u, q)] = true
		}
	}
	return drop
}

// entryKey is a user's key in the presences of an answer to q.
func (r *sharedRun) entryKey(u int, q reqSpec) string {
	if r.sc.zulip().legacyShaped(q) {
		return r.users[u].email
	}
	return strconv.FormatInt(r.users[u].id, 10)
}

// entryOf returns the raw entry of key in an answer's presences.
func entryOf(body []byte, key string) ([]byte, bool, error) {
	var v struct {
		Presences map[string]json.RawMessage `json:"presences"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, false, err
	}
	e, ok := v.Presences[key]
	return e, ok, nil
}

func orNone(b []byte, ok bool) string {
	if !ok {
		return "none"
	}
	return string(b)
}

func serverTimestampOf(body []byte) (float64, error) {
	m := serverTimestamp.FindSubmatch(body)
	if m == nil {
		return 0, fmt.Errorf("no server_timestamp")
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// ignoredOf is an answer's ignored_parameters_unsupported.
func ignoredOf(body []byte) []string {
	var v struct {
		Ignored []string `json:"ignored_parameters_unsupported"`
	}
	json.Unmarshal(body, &v)
	return v.Ignored
}

// shrinkSteps reduces a failing sequence to a minimal one that still
// fails (ddmin: drop chunks, then single steps, while it fails; then merge
// neighbouring clock steps).
func shrinkSteps(steps []step, fails func([]step) bool) []step {
	cur := append([]step(nil), steps...)
	for chunk := len(cur) / 2; chunk >= 1; {
		removed := false
		for i := 0; i+chunk <= len(cur); {
			try := append(append([]step(nil), cur[:i]...), cur[i+chunk:]...)
			if fails(try) {
				cur, removed = try, true
				continue
			}
			i += chunk
		}
		if !removed {
			chunk /= 2
		}
	}
	for i := 0; i < len(cur); i++ {
		if cur[i].kind != stepAdvance {
			continue
		}
		for i+1 < len(cur) && cur[i+1].kind == stepAdvance {
			try := append([]step(nil), cur...)
			try[i].d += try[i+1].d
			try = append(try[:i+1], try[i+2:]...)
			if !fails(try) {
				break
			}
			cur = try
		}
	}
	return cur
}

// stepsLiteral writes steps as a Go expression, for replaying a shrunk
// sequence with sharedScenario.run.
func stepsLiteral(steps []step) string {
	var b strings.Builder
	b.WriteString("[]step{")
	for _, s := range steps {
		q := s.req
		fmt.Fprintf(&b, "{kind: %d, client: %d, user: %d, other: %d, on: %v, d: %d, lag: %d, req: reqSpec{kind: %d, idle: %v, input: %d, days: %d, pingFalse: %v, slim: %v, fresh: %v}}, ",
			s.kind, s.client, s.user, s.other, s.on, s.d, s.lag, q.kind, q.idle, q.input, q.days, q.pingFalse, q.slim, q.fresh)
	}
	b.WriteString("}")
	return b.String()
}

package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zulip-presence/caddy-zulip-presence/presence"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// TestTwinProperty drives two identical simulated realms with random
// sequences of steps, one realm straight and one through the module, and
// checks after every step that the module kept the fidelity contract
// (design §6): every answer is the one Zulip gave (status, body, and the headers
// a client or cache relies on), every user's presence row is the one Zulip
// stored, and the same number of rows was written.
//
// The steps are pings and polls of every kind (ping_only, slim and legacy
// full polls, last_update_id polls with each side's own cursor) from /api/v1
// and /json clients of several users, guests and a bot among them; clock
// steps from a second to days; invisible mode, deactivation and
// reactivation, API key regeneration, browser logout, the guest restriction
// and shared access. A seed also fixes a clock skew of the handler against
// the servers, zero for odd seeds, and the Zulip both servers model
// (drawServer, from a random stream of its own so that the steps stay
// those of the seed): its version (8.x, 9.x, 10.x, 11.x or main), its
// PRESENCE_UPDATE_MIN_FREQ_SECONDS (0 among others),
// PRESENCE_LEGACY_EVENT_OFFSET_FOR_ACTIVITY_SECONDS and
// OFFLINE_THRESHOLD_SECS, gaps in its update ids, whether the guest
// restriction also limits guests' presence reads
// (CAN_ACCESS_ALL_USERS_GROUP_LIMITS_PRESENCE; without it a restricted
// guest still sees every row, and its user list has "Unknown user"
// entries either way), and each user's email visibility (other than
// "everyone", the API email is user{id}@ the fake domain, while Basic
// authentication takes the delivery email). The handler is configured
// with the server's presence_update_min_freq and
// presence_legacy_event_offset where they differ from Zulip's defaults;
// with presence_update_min_freq 0 no ping may be answered locally.
//
// The differences the contract allows are not reported: a converted
// answer may differ as zuliptest.Compare allows (entry order, its
// presence_last_update_id); a ping of a session whose credentials were
// revoked may be answered locally with 200 while Zulip says 401 or 403,
// within the 55 s trust window after the server's last 2xx to those
// credentials and only if no 401 or 403 to them came since; and a
// converted answer may get wrong the entry of a user whose visibility to
// the viewer (deactivation, reactivation, the guest restriction, shared
// access) changed within resync_interval, which deltas never signal, or
// whose last connection is within a second of the window's edge (whole-
// second rounding). Compare does not know these (it compares every entry), so the
// checker drops exactly those users' entries from both answers and
// compares again. Each user stays far below Zulip's rate limit (at most 30
// requests a minute), so the requests the module saves never show as a
// 429 the other side did not get.
//
// Even seeds run the handler with verify_rate 1: each answer it gives
// itself is sent again as it came after the client has it, which must
// change no row, and every mismatch its verification reports must name
// only rows the contract lets the answer get wrong (allowance 1, as
// above); the verification's own upstream requests are left out of what
// the checker counts as the request's.
//
// Environment:
//
//	ZP_PROPERTY_SEEDS  seeds to run: "N" (seeds 1..N), "A-B", or "A,B,C" (default 1-10)
//	ZP_PROPERTY_STEPS  steps per seed (default 1000)
//	ZP_PROPERTY_SHRINK set to 1 to shrink every failure to a minimal sequence
//	ZP_PROPERTY_LOG    set to 1 to log the whole sequence of a failing seed
//
// A failure prints the seed, its skew and the step it happened at; the
// steps of a seed do not depend on the step count, so
// ZP_PROPERTY_SEEDS=<seed>-<seed> replays it.
func TestTwinProperty(t *testing.T) {
	runProperty(t, 1000, func(seed uint64, steps int) propertySeed {
		sc := generate(seed, steps)
		about := fmt.Sprintf("skew %v, %s", sc.skew, sc.server.describe())
		if sc.verifies() {
			about += ", verify_rate 1"
		}
		return propertySeed{
			steps: sc.steps, about: about, setup: sc.describeSetup(),
			run: sc.run, describe: sc.describeFrom,
		}
	})
}

// propertySeed is one seed of a property test, as runProperty drives it.
type propertySeed struct {
	steps []step
	about string // how the seed set the handlers up
	setup string // its users and clients
	// run replays steps on fresh twins and returns what went wrong;
	// quiet runs (while shrinking) log nothing.
	run      func(t *testing.T, steps []step, quiet bool) []finding
	describe func(steps []step, first int) string
}

// runProperty runs a property test over the seeds of ZP_PROPERTY_SEEDS,
// each with ZP_PROPERTY_STEPS steps (steps by default). A failing seed
// reports its replay command, the steps before its last failure (all of
// them with ZP_PROPERTY_LOG=1) and, with ZP_PROPERTY_SHRINK=1, the
// minimal sequence of each failure, also as Go.
func runProperty(t *testing.T, steps int, generate func(seed uint64, steps int) propertySeed) {
	seeds, err := propertySeeds(os.Getenv("ZP_PROPERTY_SEEDS"))
	if err != nil {
		t.Fatalf("ZP_PROPERTY_SEEDS: %v", err)
	}
	if s := os.Getenv("ZP_PROPERTY_STEPS"); s != "" {
		if steps, err = strconv.Atoi(s); err != nil || steps < 0 {
			t.Fatalf("ZP_PROPERTY_STEPS=%q: want a count", s)
		}
	}
	test := t.Name()
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			ps := generate(seed, steps)
			findings := ps.run(t, ps.steps, false)
			if len(findings) == 0 {
				return
			}
			replay := fmt.Sprintf("ZP_PROPERTY_SEEDS=%d-%[1]d ZP_PROPERTY_STEPS=%d go test -race -run '%s/seed=%[1]d$' ./caddymodule/", seed, steps, test)
			t.Logf("seed %d, %s, %d steps; replay: %s\n%s", seed, ps.about, len(ps.steps), replay, ps.setup)
			last := 0
			for _, f := range findings {
				t.Errorf("%s", f)
				last = max(last, f.step)
			}
			if os.Getenv("ZP_PROPERTY_LOG") == "1" {
				t.Logf("the steps up to the last failure:\n%s", ps.describe(ps.steps[:last+1], 0))
			} else {
				from := max(0, last-30)
				t.Logf("steps %d–%d (ZP_PROPERTY_LOG=1 shows all):\n%s", from, last, ps.describe(ps.steps[from:last+1], from))
			}
			if os.Getenv("ZP_PROPERTY_SHRINK") != "1" {
				return
			}
			for _, f := range findings {
				minimal := shrinkSteps(ps.steps[:f.step+1], func(s []step) bool {
					for _, g := range ps.run(t, s, true) {
						if g.class == f.class {
							return true
						}
					}
					return false
				})
				t.Logf("minimal sequence for %q (%d steps):\n%s\nas Go: %s", f.class, len(minimal), ps.describe(minimal, 0), stepsLiteral(minimal))
			}
		})
	}
}

// propertySeeds reads ZP_PROPERTY_SEEDS.
func propertySeeds(s string) ([]uint64, error) {
	if s == "" {
		s = "1-10"
	}
	var out []uint64
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.ParseUint(lo, 10, 64)
		if err != nil {
			return nil, err
		}
		switch {
		case isRange:
			b, err := strconv.ParseUint(hi, 10, 64)
			if err != nil || b < a {
				return nil, fmt.Errorf("bad range %q", part)
			}
			for n := a; n <= b; n++ {
				out = append(out, n)
			}
		case !strings.Contains(s, ","):
			for n := uint64(1); n <= a; n++ {
				out = append(out, n)
			}
		default:
			out = append(out, a)
		}
	}
	return out, nil
}

// ---------------------------------------------------------------------
// Scenarios and steps
// ---------------------------------------------------------------------

// scenario is one seed's realm and its sequence of steps.
type scenario struct {
	seed    uint64
	skew    time.Duration // the handler's clock minus the servers'
	users   []userSpec
	clients []clientSpec
	steps   []step
	server  *serverSetup // nil: Zulip 11.x with its defaults
}

// serverSetup is the Zulip a scenario runs against: its version and
// server-wide settings, whether the guest restriction also limits
// guests' presence reads, and each user's email visibility.
type serverSetup struct {
	settings zuliptest.ServerSettings
	// limitsPresence is CAN_ACCESS_ALL_USERS_GROUP_LIMITS_PRESENCE: the
	// guest restriction (stepRestrict) then also limits a restricted
	// guest's presence reads to the users it can access.
	limitsPresence bool
	// visibility is each user's email_address_visibility; missing users
	// keep EmailVisibilityEveryone.
	visibility []zuliptest.EmailVisibility
}

// defaultServer is the setup of a scenario without one: Zulip 11.x with
// its default settings, the guest restriction limiting presence too (as
// the scenarios were written for), every email visible.
var defaultServer = serverSetup{settings: zuliptest.DefaultServerSettings(), limitsPresence: true}

// zulip is the scenario's server setup.
func (sc *scenario) zulip() *serverSetup {
	if sc.server == nil {
		return &defaultServer
	}
	return sc.server
}

// Stream constants of the server draws, apart from the steps' streams.
const (
	twinServerStream   = 0x7477696e5f737276 // "twin_srv"
	sharedServerStream = 0x736872645f737276 // "shrd_srv"
)

// drawServer draws the Zulip of a seed from a random stream of its own,
// so that the seed's steps do not change with it: every version the
// module must work with, and half the time each of a non-default
// PRESENCE_UPDATE_MIN_FREQ_SECONDS (0, which stores every write, among
// them), PRESENCE_LEGACY_EVENT_OFFSET_FOR_ACTIVITY_SECONDS and update-id
// gaps; a quarter of the time another OFFLINE_THRESHOLD_SECS; the guest
// restriction limiting presence or not; each user's email visibility
// "everyone" half the time, else one of the others.
func drawServer(seed, stream uint64, users int) *serverSetup {
	rng := rand.New(rand.NewPCG(seed, stream))
	st := zuliptest.DefaultServerSettings()
	levels := []int{zuliptest.FeatureLevelZulip8, zuliptest.FeatureLevelZulip9, zuliptest.FeatureLevelZulip10, zuliptest.FeatureLevelZulip11, zuliptest.FeatureLevelMain}
	st.FeatureLevel = levels[rng.IntN(len(levels))]
	if rng.IntN(2) == 0 {
		freqs := []int{0, 0, 1, 5, 20, 30, 54, 56, 90, 300}
		st.PresenceUpdateMinFreq = time.Duration(freqs[rng.IntN(len(freqs))]) * time.Second
	}
	if rng.IntN(2) == 0 {
		offsets := []int{0, 10, 45, 69, 71, 140, 900}
		st.PresenceLegacyEventOffset = time.Duration(offsets[rng.IntN(len(offsets))]) * time.Second
	}
	if rng.IntN(4) == 0 {
		thresholds := []int{60, 140, 600}
		st.OfflineThreshold = time.Duration(thresholds[rng.IntN(len(thresholds))]) * time.Second
	}
	if rng.IntN(2) == 0 {
		rates := []float64{0.02, 0.1, 0.5, 1}
		st.IDGapRate = rates[rng.IntN(len(rates))]
	}
	zs := &serverSetup{settings: st, limitsPresence: rng.IntN(2) == 0}
	for range users {
		v := zuliptest.EmailVisibilityEveryone
		if rng.IntN(2) == 0 {
			v = zuliptest.EmailVisibility(2 + rng.IntN(4))
		}
		zs.visibility = append(zs.visibility, v)
	}
	return zs
}

// versionNames names the feature levels drawServer draws.
var versionNames = map[int]string{
	zuliptest.FeatureLevelZulip8: "8.x", zuliptest.FeatureLevelZulip9: "9.x", zuliptest.FeatureLevelZulip10: "10.x",
	zuliptest.FeatureLevelZulip11: "11.x", zuliptest.FeatureLevelMain: "main",
}

// describe tells the server setup in a failure's header.
func (zs *serverSetup) describe() string {
	st := zs.settings
	v := versionNames[st.FeatureLevel]
	if v == "" {
		v = "?"
	}
	return fmt.Sprintf("Zulip %s (feature level %d), PRESENCE_UPDATE_MIN_FREQ_SECONDS %d, PRESENCE_LEGACY_EVENT_OFFSET_FOR_ACTIVITY_SECONDS %d, OFFLINE_THRESHOLD_SECS %d, id gap rate %v, CAN_ACCESS_ALL_USERS_GROUP_LIMITS_PRESENCE %v",
		v, st.FeatureLevel, int(st.PresenceUpdateMinFreq/time.Second), int(st.PresenceLegacyEventOffset/time.Second), int(st.OfflineThreshold/time.Second), st.IDGapRate, zs.limitsPresence)
}

// emailVisibility is user u's email visibility in the setup.
func (zs *serverSetup) emailVisibility(u int) zuliptest.EmailVisibility {
	if u < len(zs.visibility) {
		return zs.visibility[u]
	}
	return zuliptest.EmailVisibilityEveryone
}

// configure gives a handler the server's settings where they differ from
// Zulip's defaults, as the README tells operators to.
func (zs *serverSetup) configure(h *Handler) {
	def := zuliptest.DefaultServerSettings()
	if d := zs.settings.PresenceUpdateMinFreq; d != def.PresenceUpdateMinFreq {
		cd := caddy.Duration(d)
		h.PresenceUpdateMinFreq = &cd
	}
	if d := zs.settings.PresenceLegacyEventOffset; d != def.PresenceLegacyEventOffset {
		cd := caddy.Duration(d)
		h.PresenceLegacyEventOffset = &cd
	}
}

// windowDays is the history window, in days, of an answer to q: 14 when
// the request has no history_limit_days or the server predates it.
func (zs *serverSetup) windowDays(q reqSpec) int {
	if q.days < 0 || zs.settings.FeatureLevel < 288 {
		return 14
	}
	return q.days
}

// legacyShaped reports whether the answer to q names rows by email: a
// legacy poll, and before Zulip 9.0 (which ignores last_update_id) a web
// app poll without slim_presence.
func (zs *serverSetup) legacyShaped(q reqSpec) bool {
	return q.kind == reqLegacy || (q.kind == reqModern && !q.slim && zs.settings.FeatureLevel < 263)
}

type userSpec struct {
	name string
	role zuliptest.Role
}

type clientSpec struct {
	user      int
	browser   bool // /json with a session cookie, else /api/v1 with Basic
	multipart bool
}

type stepKind uint8

const (
	stepRequest    stepKind = iota
	stepAdvance             // d
	stepInvisible           // user, on: presence enabled (false is invisible)
	stepDeactivate          // user
	stepReactivate          // user
	stepRegenerate          // user: a new API key; clients keep the old one
	stepRenew               // client: an API client takes the current key, a browser logs in again
	stepLogout              // client (a browser)
	stepRestrict            // on: the guest presence restriction
	stepShare               // user, other: ShareAccess
	stepSetRow              // user, d: the row's age, lag: active that much older (<0: NULL)
)

type reqKind uint8

const (
	reqPing reqKind = iota
	reqSlim
	reqLegacy
	reqModern
)

func (k reqKind) String() string {
	return [...]string{"ping", "slim poll", "legacy poll", "modern poll"}[k]
}

// step is one thing that happens to both realms. It names users and
// clients by index, so a sequence with steps removed still applies.
type step struct {
	kind   stepKind
	client int
	user   int
	other  int
	on     bool
	d      time.Duration
	lag    time.Duration
	req    reqSpec
}

// reqSpec is a presence request, before the cursor of a modern poll.
type reqSpec struct {
	kind      reqKind
	idle      bool
	input     int8 // -1: new_user_input absent, else its value
	days      int  // -1: history_limit_days absent
	pingFalse bool // also send ping_only=false
	slim      bool // modern poll: also send slim_presence=true
	fresh     bool // modern poll: start over with last_update_id=-1
}

// form is the request's body; cursor is used by modern polls.
func (q reqSpec) form(cursor int64) url.Values {
	f := url.Values{}
	f.Set("status", "active")
	if q.idle {
		f.Set("status", "idle")
	}
	if q.input >= 0 {
		f.Set("new_user_input", strconv.FormatBool(q.input == 1))
	}
	switch q.kind {
	case reqPing:
		f.Set("ping_only", "true")
	case reqSlim:
		f.Set("slim_presence", "true")
	case reqModern:
		f.Set("last_update_id", strconv.FormatInt(cursor, 10))
		if q.slim {
			f.Set("slim_presence", "true")
		}
	}
	if q.pingFalse {
		f.Set("ping_only", "false")
	}
	if q.days >= 0 {
		f.Set("history_limit_days", strconv.Itoa(q.days))
	}
	return f
}

// Names for the users of a scenario, members first.
var (
	memberNames = []string{"hamlet", "othello", "iago", "cordelia"}
	guestNames  = []string{"polonius", "prospero"}
)

// generate makes the scenario of a seed. Steps come from the seed alone, in
// order, so a longer run of the same seed starts with the same steps.
func generate(seed uint64, n int) *scenario {
	rng := rand.New(rand.NewPCG(seed, 0x7477696e5f70726f))
	sc := &scenario{seed: seed}
	if seed%2 == 0 {
		sc.skew = time.Duration(1+rng.IntN(60)) * time.Second
		if rng.IntN(2) == 0 {
			sc.skew = -sc.skew
		}
	}
	sc.drawPeople(rng, 2, 2, nil)
	g := newGenerator(sc, rng)
	sc.server = drawServer(seed, twinServerStream, len(sc.users))
	g.setup()
	for len(sc.steps) < n {
		g.next()
	}
	sc.steps = sc.steps[:n]
	return sc
}

// drawPeople draws the scenario's users (two to four members, up to two
// guests, a bot one time in botOdds) and each one's clients (one to
// maxClients; a bot has one), calling client, if set, with each client's
// user and its rank among that user's clients.
func (sc *scenario) drawPeople(rng *rand.Rand, botOdds, maxClients int, client func(user, k int)) {
	for _, name := range memberNames[:2+rng.IntN(3)] {
		sc.users = append(sc.users, userSpec{name, zuliptest.RoleMember})
	}
	for _, name := range guestNames[:rng.IntN(3)] {
		sc.users = append(sc.users, userSpec{name, zuliptest.RoleGuest})
	}
	if rng.IntN(botOdds) == 0 {
		sc.users = append(sc.users, userSpec{"welcome-bot", zuliptest.RoleBot})
	}
	for i, u := range sc.users {
		count := 1 + rng.IntN(maxClients)
		if u.role == zuliptest.RoleBot {
			count = 1
		}
		for k := range count {
			sc.clients = append(sc.clients, clientSpec{
				user:      i,
				browser:   u.role != zuliptest.RoleBot && rng.IntN(5) < 2,
				multipart: rng.IntN(6) == 0,
			})
			if client != nil {
				client(i, k)
			}
		}
	}
}

// newGenerator starts the steps of sc with every user active and visible
// and every client's credentials fresh.
func newGenerator(sc *scenario, rng *rand.Rand) *generator {
	g := &generator{sc: sc, rng: rng, recent: make([][]time.Duration, len(sc.users))}
	g.enabled = make([]bool, len(sc.users))
	g.active = make([]bool, len(sc.users))
	for i := range sc.users {
		g.enabled[i], g.active[i] = true, true
	}
	g.stale = make([]bool, len(sc.clients))
	return g
}

// generator keeps what it needs to bias the steps: the clock it made, each
// user's recent requests (to stay far below Zulip's rate limit), and who is
// deactivated, invisible or holding stale credentials.
type generator struct {
	sc      *scenario
	rng     *rand.Rand
	now     time.Duration
	recent  [][]time.Duration
	active  []bool
	enabled []bool
	stale   []bool
	limited bool
}

func (g *generator) add(s step) { g.sc.steps = append(g.sc.steps, s) }

// setup gives some users a row from before the run, and sets the guest
// restriction and shared access, as steps so that shrinking can drop them.
func (g *generator) setup() {
	for i, u := range g.sc.users {
		if u.role == zuliptest.RoleBot || g.rng.IntN(5) >= 2 {
			continue
		}
		ages := []time.Duration{30 * time.Second, 2 * time.Minute, 10 * time.Minute, 3 * time.Hour, 2 * 24 * time.Hour, 14*24*time.Hour - 5*time.Minute, 20 * 24 * time.Hour}
		lags := []time.Duration{0, 30 * time.Second, 2 * time.Minute, time.Hour, -1}
		g.add(step{kind: stepSetRow, user: i, d: ages[g.rng.IntN(len(ages))], lag: lags[g.rng.IntN(len(lags))]})
	}
	if g.rng.IntN(3) == 0 {
		g.limited = true
		g.add(step{kind: stepRestrict, on: true})
	}
	for i, u := range g.sc.users {
		if u.role == zuliptest.RoleGuest && g.rng.IntN(5) < 3 {
			g.add(step{kind: stepShare, user: i, other: g.otherThan(i)})
		}
	}
}

func (g *generator) otherThan(i int) int {
	j := g.rng.IntN(len(g.sc.users) - 1)
	if j >= i {
		j++
	}
	return j
}

func (g *generator) next() {
	switch r := g.rng.IntN(100); {
	case r < 60:
		g.request()
	case r < 85:
		g.advance()
	default:
		g.operation()
	}
}

// advance moves the clock, mostly by 5–60 s, the interval of real clients.
func (g *generator) advance() {
	g.advanceAmong([]clockSpan{{15, 1, 4}, {80, 5, 56}, {92, 61, 540}, {98, 601, 3 * 3600}})
}

// clockSpan is a range of clock steps: below percentile upTo, a step of
// from to from+n-1 seconds.
type clockSpan struct{ upTo, from, n int }

// advanceAmong moves the clock by a step drawn from spans, and otherwise
// by 1–16 days (users leave the presence window).
func (g *generator) advanceAmong(spans []clockSpan) {
	r := g.rng.IntN(100)
	d := time.Duration(-1)
	for _, s := range spans {
		if r < s.upTo {
			d = time.Duration(s.from+g.rng.IntN(s.n)) * time.Second
			break
		}
	}
	if d < 0 {
		d = time.Duration(1+g.rng.IntN(16))*24*time.Hour + time.Duration(g.rng.IntN(3600))*time.Second
	}
	g.now += d
	g.add(step{kind: stepAdvance, d: d})
}

// request sends a presence request from a random client, unless its user
// is near 30 requests in 60 s (Zulip allows 200, and the module adds a few
// reads of its own per request); then the clock moves on instead.
func (g *generator) request() {
	c := g.rng.IntN(len(g.sc.clients))
	u := g.sc.clients[c].user
	recent := g.recent[u][:0]
	for _, at := range g.recent[u] {
		if g.now-at < time.Minute {
			recent = append(recent, at)
		}
	}
	g.recent[u] = recent
	if len(recent) >= 30 {
		g.now += time.Minute
		g.add(step{kind: stepAdvance, d: time.Minute})
		return
	}
	g.recent[u] = append(g.recent[u], g.now)
	q := reqSpec{input: -1, days: -1}
	switch r := g.rng.IntN(100); {
	case r < 35:
		q.kind = reqPing
	case r < 55:
		q.kind = reqSlim
		q.pingFalse = g.rng.IntN(2) == 0
	case r < 75:
		q.kind = reqLegacy
		q.pingFalse = g.rng.IntN(4) == 0
	default:
		q.kind = reqModern
		q.pingFalse = g.rng.IntN(4) > 0
		q.slim = g.rng.IntN(4) == 0
		q.fresh = g.rng.IntN(10) == 0
	}
	q.idle = g.rng.IntN(10) < 3
	if r := g.rng.IntN(20); r < 7 {
		q.input = int8(r % 2)
	} else if r < 14 {
		q.input = 1
	}
	if g.rng.IntN(10) == 0 {
		// A ping sends it too, as some clients do: a Zulip before 10.0
		// lists it as ignored in the ping's answer.
		days := []int{0, 1, 2, 7, 14, 30, 365}
		q.days = days[g.rng.IntN(len(days))]
	}
	g.add(step{kind: stepRequest, client: c, req: q})
}

// operation changes the realm: the things a user or an administrator does
// besides presence requests.
func (g *generator) operation() {
	users := len(g.sc.users)
	switch r := g.rng.IntN(100); {
	case r < 20:
		u := g.rng.IntN(users)
		g.enabled[u] = !g.enabled[u]
		g.add(step{kind: stepInvisible, user: u, on: g.enabled[u]})
	case r < 28:
		u := g.rng.IntN(users)
		g.active[u] = false
		for c, cs := range g.sc.clients {
			if cs.user == u && cs.browser {
				g.stale[c] = true // deactivation ends the user's sessions
			}
		}
		g.add(step{kind: stepDeactivate, user: u})
	case r < 42:
		var gone []int
		for u, a := range g.active {
			if !a {
				gone = append(gone, u)
			}
		}
		if len(gone) == 0 {
			g.request()
			return
		}
		u := gone[g.rng.IntN(len(gone))]
		g.active[u] = true
		g.add(step{kind: stepReactivate, user: u})
	case r < 52:
		u := g.rng.IntN(users)
		for c, cs := range g.sc.clients {
			if cs.user == u && !cs.browser {
				g.stale[c] = true
			}
		}
		g.add(step{kind: stepRegenerate, user: u})
	case r < 74:
		// Renew stale credentials, mostly: a client sends with dead
		// ones for a while, then takes new ones.
		var stale []int
		for c, s := range g.stale {
			if s && g.active[g.sc.clients[c].user] {
				stale = append(stale, c)
			}
		}
		c := g.rng.IntN(len(g.sc.clients))
		if len(stale) > 0 && g.rng.IntN(4) > 0 {
			c = stale[g.rng.IntN(len(stale))]
		}
		if g.active[g.sc.clients[c].user] {
			g.stale[c] = false
		}
		g.add(step{kind: stepRenew, client: c})
	case r < 84:
		var browsers []int
		for c, cs := range g.sc.clients {
			if cs.browser {
				browsers = append(browsers, c)
			}
		}
		if len(browsers) == 0 {
			g.request()
			return
		}
		c := browsers[g.rng.IntN(len(browsers))]
		g.stale[c] = true
		g.add(step{kind: stepLogout, client: c})
	case r < 92:
		g.limited = !g.limited
		g.add(step{kind: stepRestrict, on: g.limited})
	default:
		var guests []int
		for u, us := range g.sc.users {
			if us.role == zuliptest.RoleGuest {
				guests = append(guests, u)
			}
		}
		if len(guests) == 0 {
			g.request()
			return
		}
		u := guests[g.rng.IntN(len(guests))]
		g.add(step{kind: stepShare, user: u, other: g.otherThan(u)})
	}
}

// ---------------------------------------------------------------------
// Describing steps, for failure messages and regression tests
// ---------------------------------------------------------------------

func (sc *scenario) userName(u int) string { return sc.users[u].name }

func (sc *scenario) clientName(c int) string {
	cs := sc.clients[c]
	kind := "api"
	if cs.browser {
		kind = "browser"
	}
	if cs.multipart {
		kind += ", multipart"
	}
	return fmt.Sprintf("c%d(%s %s)", c, kind, sc.userName(cs.user))
}

func (sc *scenario) describeSetup() string {
	var b strings.Builder
	for i, u := range sc.users {
		fmt.Fprintf(&b, "user u%d %s (%s", i, u.name, u.role)
		if v := sc.zulip().emailVisibility(i); v != zuliptest.EmailVisibilityEveryone {
			fmt.Fprintf(&b, ", email visibility %d: API email user{id}@", v)
		}
		b.WriteString(")\n")
	}
	for c := range sc.clients {
		fmt.Fprintf(&b, "client %s\n", sc.clientName(c))
	}
	return b.String()
}

func (sc *scenario) describeFrom(steps []step, first int) string {
	var b strings.Builder
	for i, s := range steps {
		fmt.Fprintf(&b, "%4d  %s\n", first+i, sc.stepString(s))
	}
	return b.String()
}

func (sc *scenario) stepString(s step) string {
	switch s.kind {
	case stepRequest:
		cursor := "cursor"
		if s.req.fresh {
			cursor = "-1"
		}
		f := s.req.form(0)
		if s.req.kind == reqModern {
			f.Set("last_update_id", cursor)
		}
		return fmt.Sprintf("%s %s: %s", sc.clientName(s.client), s.req.kind, f.Encode())
	case stepAdvance:
		return fmt.Sprintf("advance %v", s.d)
	case stepInvisible:
		return fmt.Sprintf("SetPresenceEnabled(%s, %v)", sc.userName(s.user), s.on)
	case stepDeactivate:
		return fmt.Sprintf("Deactivate(%s)", sc.userName(s.user))
	case stepReactivate:
		return fmt.Sprintf("Reactivate(%s)", sc.userName(s.user))
	case stepRegenerate:
		return fmt.Sprintf("RegenerateAPIKey(%s)", sc.userName(s.user))
	case stepRenew:
		if sc.clients[s.client].browser {
			return fmt.Sprintf("%s logs in again", sc.clientName(s.client))
		}
		return fmt.Sprintf("%s takes the current API key", sc.clientName(s.client))
	case stepLogout:
		return fmt.Sprintf("Logout(%s)", sc.clientName(s.client))
	case stepRestrict:
		return fmt.Sprintf("guest restriction %v", s.on)
	case stepShare:
		return fmt.Sprintf("ShareAccess(%s, %s)", sc.userName(s.user), sc.userName(s.other))
	case stepSetRow:
		active := "NULL"
		if s.lag >= 0 {
			active = fmt.Sprintf("now-%v", s.d+s.lag)
		}
		return fmt.Sprintf("SetPresenceRow(%s, connected now-%v, active %s)", sc.userName(s.user), s.d, active)
	}
	return "?"
}

// ---------------------------------------------------------------------
// Applying steps to the twin and checking the contract
// ---------------------------------------------------------------------

// finding is one breach of the contract. Its class names the kind of
// breach, without the values, so that a run reports each kind once and a
// shrink keeps the kind it started from.
type finding struct {
	class string
	step  int
	msg   string
}

func (f finding) String() string { return fmt.Sprintf("step %d: %s: %s", f.step, f.class, f.msg) }

// propClient is a client of the run: the rig's client and the cursors each
// side's modern polls carry, taken from that side's own last answer.
type propClient struct {
	*client
	index            int
	spec             clientSpec
	cursorD, cursorP int64
}

// trust is what the run saw of one set of credentials upstream.
type trust struct {
	lastOK time.Time // the server's last 2xx to these credentials
	denied bool      // a 401 or 403 came after it
}

// shrinkRuns names the stores of shrinking runs apart.
var shrinkRuns atomic.Int64

// propRun applies one sequence of steps to a fresh twin.
type propRun struct {
	sc      *scenario
	tw      *twin
	users   []twinUser
	clients []*propClient
	step    int
	start   time.Time

	// The realm as the checker models it, to know which differences of
	// converted answers the contract allows.
	active     []bool
	restricted bool
	shared     map[[2]int]bool
	visible    [][]bool
	changedAt  [][]time.Time // when visible[viewer][user] last changed

	trust  map[string]*trust
	viewer int // the user of the client whose request is being served
	// serverWroteAt is, per user, when Zulip itself last wrote the row:
	// turning presence back on writes it, as an active ping would.
	serverWroteAt []time.Time
	findings      []finding
	seen          map[string]bool
	stopped       bool
}

// newPropRun sets a fresh twin up for sc: its server setup, rate limits
// on, sc's users made with their email visibilities, an hour later its
// clients created.
func newPropRun(sc *scenario, tw *twin) *propRun {
	zs := sc.zulip()
	tw.SetServerSettings(zs.settings)
	tw.Both(func(r *zuliptest.Realm) {
		s := r.Settings()
		s.RateLimit = true
		r.SetSettings(s)
	})
	r := &propRun{sc: sc, tw: tw, shared: map[[2]int]bool{}, trust: map[string]*trust{}, seen: map[string]bool{}}
	for i, u := range sc.users {
		tu := tw.addUser(u.name+"@zulip.example", u.role)
		if v := zs.emailVisibility(i); v != zuliptest.EmailVisibilityEveryone {
			// tu.email becomes the API email, which keys legacy answers;
			// the clients' Basic credentials stay the delivery email.
			tw.Both(func(rm *zuliptest.Realm) { rm.SetEmailVisibility(tu.id, v) })
			for _, du := range tw.Direct.DefaultRealm().Users() {
				if du.ID == tu.id {
					tu.direct, tu.email = du, du.Email
				}
			}
			for _, pu := range tw.Proxied.DefaultRealm().Users() {
				if pu.ID == tu.id {
					tu.proxied = pu
				}
			}
		}
		r.users = append(r.users, tu)
		r.active = append(r.active, true)
	}
	// Users join an hour before the run: Zulip shows date_joined for a
	// never-written time, which the gate cannot tell from a write in that
	// same second (a documented limitation that costs only requests).
	tw.Clock.Advance(time.Hour)
	r.start = tw.Clock.Now()
	for _, cs := range sc.clients {
		u := r.users[cs.user]
		var c *client
		if cs.browser {
			c = tw.browser(u.email, u)
		} else {
			c = tw.apiClient(u.email, u)
		}
		c.multipart = cs.multipart
		r.clients = append(r.clients, &propClient{client: c, index: len(r.clients), spec: cs, cursorD: -1, cursorP: -1})
	}
	r.visible = r.visibility()
	r.serverWroteAt = make([]time.Time, len(sc.users))
	r.changedAt = make([][]time.Time, len(sc.users))
	for i := range r.changedAt {
		r.changedAt[i] = make([]time.Time, len(sc.users))
	}
	return r
}

// run applies steps to a fresh twin and returns the findings, one per class
// (in the order found), stopping at the first divergence of the servers'
// state, after which every comparison would only repeat it. With quiet, the
// twin is released at once (for shrinking).
func (sc *scenario) run(t *testing.T, steps []step, quiet bool) []finding {
	cfg := Handler{}
	if quiet {
		cfg.CacheName = fmt.Sprintf("%s/shrink/%d", t.Name(), shrinkRuns.Add(1))
	}
	sc.zulip().configure(&cfg)
	if sc.verifies() {
		all := 1.0
		cfg.VerifyRate = &all
	}
	tw := newTwin(t, cfg)
	if quiet {
		defer tw.h.Cleanup()
	}
	tw.h.SetClock(func() time.Time { return tw.Clock.Now().Add(sc.skew) })
	r := newPropRun(sc, tw)
	tw.h.onMismatch = r.checkMismatch
	for i, s := range steps {
		r.step = i
		r.apply(s)
		r.checkServers()
		if r.stopped {
			break
		}
	}
	if !r.stopped {
		r.checkRowsWritten()
	}
	return r.findings
}

// verifies reports whether the seed runs the handler with verify_rate 1:
// even seeds do, so that every answer the handler gives itself is also
// checked by its own verification, which must change no row and find no
// mismatch beyond what the contract allows.
// verifies reports whether the scenario's handler verifies every answer;
// never against a server that stores every write, where it may not.
func (sc *scenario) verifies() bool {
	return sc.seed%2 == 0 && sc.zulip().settings.PresenceUpdateMinFreq > 0
}

// rowKey reads the row key out of a mismatch's difference: a user id, or
// "user <id>" for a legacy row.
var rowKey = regexp.MustCompile(`^row (?:user )?(\d+):`)

// checkMismatch reports a mismatch the handler's verification found unless
// every row it names is of a user whose visibility to the requester
// changed within resync_interval (allowance 1, as allowedStaleness).
func (r *propRun) checkMismatch(m Mismatch) {
	now := r.tw.Clock.Now()
	viewer := r.viewer // m.UserID is 0 when the handler does not know it
	for _, d := range m.Differences {
		if m.Kind == "ping" && viewer >= 0 && r.serverWroteAt[viewer].Equal(now) {
			// Zulip wrote the row in the very second the original went
			// (design §11: another writer's write is taken for the
			// original's).
			continue
		}
		k := rowKey.FindStringSubmatch(d)
		u := -1
		if k != nil && viewer >= 0 {
			id, _ := strconv.ParseInt(k[1], 10, 64)
			u = slices.IndexFunc(r.users, func(tu twinUser) bool { return tu.id == id })
		}
		if u >= 0 {
			if at := r.changedAt[viewer][u]; !at.IsZero() && now.Sub(at) <= defaultResync {
				continue
			}
		}
		r.report("verification mismatch", "%s answer to user %d: %s", m.Kind, m.UserID, d)
	}
}

func (r *propRun) report(class, format string, args ...any) {
	if r.seen[class] {
		return
	}
	r.seen[class] = true
	at := r.tw.Clock.Now().Sub(r.start)
	r.findings = append(r.findings, finding{class: class, step: r.step, msg: fmt.Sprintf("[t+%v] ", at) + fmt.Sprintf(format, args...)})
}

func (r *propRun) apply(s step) {
	tw := r.tw
	switch s.kind {
	case stepRequest:
		r.request(r.clients[s.client], s.req)
		return
	case stepAdvance:
		tw.Clock.Advance(s.d)
	case stepInvisible:
		tw.Both(func(rm *zuliptest.Realm) { rm.SetPresenceEnabled(r.users[s.user].id, s.on) })
		if s.on {
			r.serverWroteAt[s.user] = tw.Clock.Now()
		}
	case stepDeactivate:
		r.active[s.user] = false
		tw.Both(func(rm *zuliptest.Realm) { rm.Deactivate(r.users[s.user].id) })
	case stepReactivate:
		r.active[s.user] = true
		tw.Both(func(rm *zuliptest.Realm) { rm.Reactivate(r.users[s.user].id) })
	case stepRegenerate:
		tw.Both(func(rm *zuliptest.Realm) { rm.RegenerateAPIKey(r.users[s.user].id) })
	case stepRenew:
		c := r.clients[s.client]
		id := c.user.id
		switch {
		case !c.json:
			c.authD = tw.Direct.DefaultRealm().BasicAuth(id)
			c.authP = tw.Proxied.DefaultRealm().BasicAuth(id)
		case r.active[c.spec.user]:
			// A deactivated user cannot log in; an active one gets a
			// new session (and CSRF token).
			c.authD, c.csrfD = tw.Direct.DefaultRealm().NewSession(id)
			c.authP, c.csrfP = tw.Proxied.DefaultRealm().NewSession(id)
		}
	case stepLogout:
		c := r.clients[s.client]
		if c.json {
			tw.Direct.DefaultRealm().Logout(c.authD)
			tw.Proxied.DefaultRealm().Logout(c.authP)
		}
	case stepRestrict:
		r.restricted = s.on
		limits := s.on && r.sc.zulip().limitsPresence
		tw.Both(func(rm *zuliptest.Realm) {
			st := rm.Settings()
			st.RestrictGuestUserAccess, st.CanAccessAllUsersGroupLimitsPresence = s.on, limits
			rm.SetSettings(st)
		})
	case stepShare:
		r.shared[[2]int{s.user, s.other}] = true
		r.shared[[2]int{s.other, s.user}] = true
		tw.Both(func(rm *zuliptest.Realm) { rm.ShareAccess(r.users[s.user].id, r.users[s.other].id) })
	case stepSetRow:
		connected := tw.Clock.Now().Add(-s.d)
		var active time.Time
		if s.lag >= 0 {
			active = connected.Add(-s.lag)
		}
		tw.Both(func(rm *zuliptest.Realm) { rm.SetPresenceRow(r.users[s.user].id, connected, active) })
	}
	r.noteVisibility()
}

// visibility is whether each viewer's full fetch may list each user:
// active humans, and for a guest under the restriction, where it limits
// presence too, only itself and those it shares access with.
func (r *propRun) visibility() [][]bool {
	limited := r.restricted && r.sc.zulip().limitsPresence
	v := make([][]bool, len(r.users))
	for viewer := range r.users {
		v[viewer] = make([]bool, len(r.users))
		guest := r.sc.users[viewer].role == zuliptest.RoleGuest
		for u := range r.users {
			v[viewer][u] = r.active[u] && r.sc.users[u].role != zuliptest.RoleBot &&
				(!limited || !guest || viewer == u || r.shared[[2]int{viewer, u}])
		}
	}
	return v
}

func (r *propRun) noteVisibility() {
	now := r.tw.Clock.Now()
	v := r.visibility()
	for viewer := range v {
		for u := range v[viewer] {
			if v[viewer][u] != r.visible[viewer][u] {
				r.changedAt[viewer][u] = now
			}
		}
	}
	r.visible = v
}

// upstreamCall is one request the module made to the proxied server.
type upstreamCall struct {
	method, path string
	creds        string
	status       int
}

// statusWriter records the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// serve sends req through the module and returns the answer and every
// request the module made upstream, in order.
func (r *propRun) serve(req *http.Request) (answer, []upstreamCall) {
	var calls []upstreamCall
	var mu sync.Mutex
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, up *http.Request) error {
		sw := &statusWriter{ResponseWriter: w}
		r.tw.Proxied.ServeHTTP(sw, up)
		if up.Context().Value(verificationKey{}) != nil {
			return nil // the handler's check of its answer, after it
		}
		mu.Lock()
		calls = append(calls, upstreamCall{up.Method, up.URL.Path, credsOf(up), sw.status})
		mu.Unlock()
		return nil
	})
	rec := httptest.NewRecorder()
	if err := r.tw.h.ServeHTTP(rec, req, next); err != nil {
		r.report("ServeHTTP error", "%v", err)
	}
	// A verification goes upstream after the answer, within the step's
	// virtual second.
	r.tw.h.WaitVerifications()
	return answer{rec.Code, rec.Header(), rec.Body.Bytes()}, calls
}

// credsOf names the credentials of a request the way the module keys its
// sessions: Basic on /api, session cookie, CSRF token and Origin on /json.
func credsOf(req *http.Request) string {
	if !strings.HasPrefix(req.URL.Path, "/json/") {
		return "api " + req.Header.Get("Authorization")
	}
	parts := []string{"json"}
	for _, name := range []string{"sessionid", "csrftoken"} {
		v := ""
		if ck, err := req.Cookie(name); err == nil {
			v = ck.Value
		}
		parts = append(parts, v)
	}
	return strings.Join(append(parts, req.Header.Get("X-CSRFToken"), req.Header.Get("Origin")), " ")
}

// request sends one client's request to both sides and checks the answers.
func (r *propRun) request(c *propClient, q reqSpec) {
	if q.fresh {
		c.cursorD, c.cursorP = -1, -1
	}
	fd, fp := q.form(c.cursorD), q.form(c.cursorP)
	reqD, reqP := c.request(false, fd), c.request(true, fp)
	creds := credsOf(reqP)
	d := r.tw.serveDirect(reqD)
	r.viewer = c.spec.user
	p, calls := r.serve(reqP)
	now := r.tw.Clock.Now()
	writes := 0
	for _, call := range calls {
		if call.method == http.MethodPost && strings.HasSuffix(call.path, "/users/me/presence") {
			writes++
		}
		tr := r.trust[call.creds]
		if tr == nil {
			tr = &trust{}
			r.trust[call.creds] = tr
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
	detail := func() string {
		return fmt.Sprintf("%s\n\tdirect:  %d %s\n\tproxied: %d %s (%d upstream calls: %s)", what, d.status, trimBody(d.body), p.status, trimBody(p.body), len(calls), callList(calls))
	}
	local := writes == 0 && p.status == http.StatusOK && bytes.Equal(p.body, presence.PingAnswer)
	if q.kind == reqPing && local && r.sc.zulip().settings.PresenceUpdateMinFreq == 0 {
		// Zulip stores every write: presence_update_min_freq 0 turns
		// local answers off (design §8).
		r.report("local ping answer with presence_update_min_freq 0", "Zulip said %d\n%s", d.status, detail())
		return
	}

	// A ping of a session whose credentials were revoked within the trust
	// window after its last 2xx may be answered locally (design §6).
	if q.kind == reqPing && local && (d.status == http.StatusUnauthorized || d.status == http.StatusForbidden) {
		tr := r.trust[creds]
		switch {
		case tr == nil || tr.lastOK.IsZero():
			r.report("local 200 for credentials the server never accepted", "Zulip said %d\n%s", d.status, detail())
		case tr.denied:
			r.report("local 200 after the server refused the same credentials", "Zulip said %d\n%s", d.status, detail())
		case now.Sub(tr.lastOK) > time.Duration(r.tw.h.TrustWindow):
			r.report("local 200 for revoked credentials past the trust window", "last 2xx %v before, Zulip said %d\n%s", now.Sub(tr.lastOK), d.status, detail())
		}
		return
	}

	converted := q.kind == reqSlim || q.kind == reqLegacy
	if err := sameAnswer(d, p, converted); err != nil {
		if !converted || d.status != http.StatusOK || p.status != http.StatusOK {
			r.report(fmt.Sprintf("%s: status or body differs (Zulip %d, module %d)", q.kind, d.status, p.status), "%v\n%s", err, detail())
			return
		}
		if err := r.allowedStaleness(c, q, d, p); err != nil {
			r.report(fmt.Sprintf("%s: %s", q.kind, diffClass(err)), "%v\n%s", err, detail())
			return
		}
	}
	outcome := "forwarded"
	switch {
	case local:
		outcome = "local"
	case converted && p.status == http.StatusOK:
		outcome = "converted"
	}
	for _, name := range []string{"Content-Type", "Cache-Control", "Www-Authenticate"} {
		if dv, pv := d.header.Values(name), p.header.Values(name); strings.Join(dv, "\n") != strings.Join(pv, "\n") {
			r.report(fmt.Sprintf("header %s of a %s %s answer", name, outcome, q.kind), "%q, Zulip sent %q\n%s", pv, dv, detail())
		}
	}
	if err := sameExpires(d.header, p.header); err != nil {
		r.report(fmt.Sprintf("header Expires of a %s %s answer", outcome, q.kind), "%v\n%s", err, detail())
	}
}

// allowedStaleness compares two successful converted answers again with
// the entries the contract lets a converted answer get wrong taken out of
// both: users whose visibility to this viewer changed (deactivation,
// reactivation, the guest restriction, shared access) within the resync
// interval, which deltas never signal, and users whose last connection is
// within a second of the window's edge (whole-second rounding).
func (r *propRun) allowedStaleness(c *propClient, q reqSpec, d, p answer) error {
	now := r.tw.Clock.Now()
	cutoff := now.AddDate(0, 0, -r.sc.zulip().windowDays(q))
	drop := map[string]bool{}
	viewer := c.spec.user
	for u, tu := range r.users {
		at := r.changedAt[viewer][u]
		stale := !at.IsZero() && now.Sub(at) <= defaultResync
		row := r.tw.Direct.DefaultRealm().PresenceRow(tu.id)
		edge := row.Exists && row.LastConnected.Sub(cutoff).Abs() < time.Second
		if !stale && !edge {
			continue
		}
		if q.kind == reqSlim {
			drop[strconv.FormatInt(tu.id, 10)] = true
		} else {
			drop[tu.email] = true
		}
	}
	if len(drop) == 0 {
		return sameAnswer(d, p, true)
	}
	db, err := dropEntries(d.body, drop)
	if err != nil {
		return fmt.Errorf("direct answer: %v", err)
	}
	pb, err := dropEntries(p.body, drop)
	if err != nil {
		return fmt.Errorf("proxied answer: %v", err)
	}
	return sameAnswer(answer{status: d.status, header: d.header, body: db}, answer{status: p.status, header: p.header, body: pb}, true)
}

// dropEntries removes the named entries from an answer's presences,
// leaving the other bytes as they were.
func dropEntries(body []byte, drop map[string]bool) ([]byte, error) {
	key := []byte(`"presences":`)
	i := bytes.Index(body, key)
	if i < 0 {
		return nil, fmt.Errorf("no presences")
	}
	start := i + len(key)
	dec := json.NewDecoder(bytes.NewReader(body[start:]))
	var entries map[string]json.RawMessage
	if err := dec.Decode(&entries); err != nil {
		return nil, err
	}
	end := start + int(dec.InputOffset())
	out := append([]byte(nil), body[:start]...)
	out = append(out, '{')
	first := true
	for k, v := range entries {
		if drop[k] {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		kb, _ := json.Marshal(k)
		out = append(append(append(out, kb...), ':'), v...)
	}
	out = append(out, '}')
	return append(out, body[end:]...), nil
}

// diffClass is the kind of a Compare error, without its values.
func diffClass(err error) string {
	s := err.Error()
	for _, prefix := range []string{"presences lacks", "presences has extra", "presences[", "envelope keys", "status"} {
		if strings.HasPrefix(s, prefix) {
			return strings.TrimSuffix(prefix, "[") + " (beyond what the contract allows)"
		}
	}
	if k, _, ok := strings.Cut(s, " = "); ok {
		return k + " differs"
	}
	return "body differs"
}

func sameExpires(d, p http.Header) error {
	dv, pv := d.Get("Expires"), p.Get("Expires")
	switch {
	case dv == "" && pv == "":
		return nil
	case dv == "" || pv == "":
		return fmt.Errorf("%q, Zulip sent %q", pv, dv)
	}
	dt, err1 := http.ParseTime(dv)
	pt, err2 := http.ParseTime(pv)
	if err1 != nil || err2 != nil || dt.Sub(pt).Abs() > time.Second {
		return fmt.Errorf("%q, Zulip sent %q", pv, dv)
	}
	return nil
}

// nextCursor is the last_update_id a web client sends next: the one its
// last successful answer carried.
func nextCursor(a answer, cursor int64) int64 {
	if a.status != http.StatusOK {
		return cursor
	}
	var v struct {
		ID *int64 `json:"presence_last_update_id"`
	}
	if json.Unmarshal(a.body, &v) != nil || v.ID == nil {
		return cursor
	}
	return *v.ID
}

func trimBody(b []byte) string {
	s := strings.TrimSuffix(string(b), "\n")
	if len(s) > 600 {
		s = s[:600] + "…"
	}
	return s
}

func callList(calls []upstreamCall) string {
	var parts []string
	for _, c := range calls {
		parts = append(parts, fmt.Sprintf("%s %s → %d", c.method, c.path, c.status))
	}
	return strings.Join(parts, ", ")
}

// checkServers compares every user's presence row and the rows written.
// A difference here means the servers' states diverged: the run stops.
func (r *propRun) checkServers() {
	dr, pr := r.tw.Direct.DefaultRealm(), r.tw.Proxied.DefaultRealm()
	for i, u := range r.users {
		d, p := dr.PresenceRow(u.id), pr.PresenceRow(u.id)
		if !d.LastConnected.Equal(p.LastConnected) || !d.LastActive.Equal(p.LastActive) || d.Exists != p.Exists {
			r.report("presence row differs", "%s (u%d):\n\tdirect:  %s\n\tproxied: %s", u.email, i, rowString(d, r.start), rowString(p, r.start))
			r.stopped = true
			return
		}
	}
	r.checkRowsWritten()
}

func (r *propRun) checkRowsWritten() {
	d, p := r.tw.Direct.DefaultRealm().Stats(), r.tw.Proxied.DefaultRealm().Stats()
	if d.RowsWritten != p.RowsWritten {
		r.report("rows written differ", "%d through the module, %d direct", p.RowsWritten, d.RowsWritten)
		r.stopped = true
	}
}

func rowString(row zuliptest.Row, start time.Time) string {
	if !row.Exists {
		return "no row"
	}
	rel := func(t time.Time) string {
		if t.IsZero() {
			return "NULL"
		}
		return "t" + fmt.Sprintf("%+v", t.Sub(start))
	}
	return fmt.Sprintf("connected %s, active %s, update id %d", rel(row.LastConnected), rel(row.LastActive), row.LastUpdateID)
}

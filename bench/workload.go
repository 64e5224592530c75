package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"strconv"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/internal/twinrig"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// Spec is one seeded realm of design §9.
type Spec struct {
	// Name labels the realm in the report, e.g. "R2k".
	Name string
	// Users is the number of human users of the realm.
	Users int
	// Active is how many of them have a presence row within 14 days.
	Active int
	// Online is how many users are online at any moment.
	Online int
	// ClientsPerUser is the mean number of clients of an online user.
	ClientsPerUser float64
	// Minutes is the simulated duration.
	Minutes int
}

// The realms of design §9.
var (
	specR200 = Spec{Name: "R200", Users: 200, Active: 150, Online: 40, ClientsPerUser: 1.5, Minutes: 30}
	specR2k  = Spec{Name: "R2k", Users: 2000, Active: 1500, Online: 400, ClientsPerUser: 1.5, Minutes: 30}
	specR10k = Spec{Name: "R10k", Users: 10000, Active: 6000, Online: 1500, ClientsPerUser: 1.5, Minutes: 30}
)

// Kind is a Zulip client, as design §1 lists them.
type Kind int

// The client kinds, in the order of the report.
const (
	KindWeb Kind = iota
	KindFlutter
	KindMobile
	KindTerminal
	KindScript
	numKinds
)

// String returns the client's name.
func (k Kind) String() string {
	return [...]string{"web", "zulip-flutter", "zulip-mobile", "zulip-terminal", "script"}[k]
}

// clientMix is the share of each kind among online clients (design §9).
var clientMix = [numKinds]float64{0.45, 0.35, 0.10, 0.05, 0.05}

// Cadences and habits of the clients (spec §5). The phase lengths are
// guesses at human behaviour; only their order of magnitude matters.
const (
	pollEvery       = 60     // seconds, server_presence_ping_interval_seconds
	webIdleAfter    = 5 * 60 // the web app's local inactivity timeout
	meanActivePhase = 10 * 60
	meanIdlePhase   = 6 * 60
	meanFocusSwitch = 4 * 60
	meanForeground  = 8 * 60
	meanBackground  = 3 * 60
	minStay         = 5 * 60  // shortest time a user stays online
	maxStay         = 60 * 60 // longest
)

// clockStart is the virtual start time, the twin rig's: seconds of the
// run count from it.
var clockStart = twinrig.Start

// firstNames makes the emails of legacy answers realistic in length.
var firstNames = []string{"ada", "alan", "grace", "linus", "barbara", "dennis", "margaret", "ken", "frances", "edsger", "radia", "donald"}

// simUser is one human user of the realm, created alike on both sides.
type simUser struct {
	id      int64
	basic   [numSides]string // Authorization header on each side
	clients []*client
}

// poller is anything that polls presence on its own schedule: a web tab,
// or a whole non-web client. It holds the state the ideal needs.
type poller struct {
	idealSeen bool  // polled before
	idealSeq  int64 // newest row update id it knew of after its last poll
}

// tab is one browser tab of a web client, with its own cursor.
type tab struct {
	poller
	cursor    [numSides]int64
	lostFocus int // second at which the tab last lost focus
}

// scriptStyle is how a script talks to the server.
type scriptStyle struct {
	multipart bool // zulip-js posts multipart/form-data
	slim      bool
	extra     bool  // a parameter Zulip does not know (note=cron), which it lists as ignored
	days      int64 // history_limit_days, 0 for the default
}

// scriptStyles are handed out in turn, so that a small realm sees each
// encoding: urlencoded slim, multipart legacy, unknown parameter,
// multipart slim with a wider window.
var scriptStyles = []scriptStyle{
	{slim: true},
	{multipart: true},
	{extra: true},
	{multipart: true, slim: true, days: 30},
}

// client is one online client of a user.
type client struct {
	poller
	wl      *workload
	kind    Kind
	user    *simUser
	alive   bool
	gen     int // bumps when a poll loop must stop (background, idle)
	session [numSides]string
	csrf    [numSides]string
	tabs    []*tab
	focused int
	active  bool // web: the user is at the computer; apps: foreground
	since   int  // second the current phase began
	script  scriptStyle
	inst    int // the handler it talks to on the module side
}

// workload drives the seeded realm: who is online, and what each client
// sends when. It only decides; the twin sends the requests.
type workload struct {
	spec    Spec
	rng     *rand.Rand
	tw      *twin
	users   []*simUser
	pool    []*simUser // users active in the last 14 days
	offline []*simUser // of the pool
	online  int
	events  [][]func() // by second
	now     int        // current second
	scripts int
	// kinds is the stratified queue of client kinds for the first online
	// users, so that even a small realm has every kind in its mix.
	kinds []Kind
}

func newWorkload(spec Spec, seed uint64, tw *twin) *workload {
	return &workload{
		spec:   spec,
		rng:    rand.New(rand.NewPCG(seed, uint64(spec.Users))),
		tw:     tw,
		events: make([][]func(), spec.Minutes*60+1),
	}
}

// setup creates the users and their presence history on both sides and
// brings the first users online.
func (wl *workload) setup() {
	wl.addUsers()
	wl.seedRows()
	wl.tw.resetStats()
	wl.kinds = stratifiedKinds(int(math.Round(float64(wl.spec.Online)*wl.spec.ClientsPerUser)), wl.rng)
	for range wl.spec.Online {
		wl.comeOnline(wl.takeOffline(), wl.rng.IntN(pollEvery))
	}
}

// addUsers creates the humans and, as in a real realm, a few bots, which
// presence leaves out but the legacy user list names.
func (wl *workload) addUsers() {
	// The users joined long before the run, as in a real realm: Zulip
	// shows date_joined for a time never written, to the minute since
	// 10.0, so writes within a user's first minute bound nothing.
	const joinedBefore = 90 * 24 * time.Hour
	wl.tw.Both(func(r *zuliptest.Realm) { r.Advance(-joinedBefore) })
	defer wl.tw.Both(func(r *zuliptest.Realm) { r.Advance(joinedBefore) })
	for i := range wl.spec.Users {
		email := fmt.Sprintf("%s.%d@zulip.example", firstNames[i%len(firstNames)], i)
		id := wl.tw.addUser(email, zuliptest.RoleMember)
		u := &simUser{id: id}
		for s := range numSides {
			u.basic[s] = wl.tw.realm(side(s)).BasicAuth(id)
		}
		wl.users = append(wl.users, u)
	}
	for i := range max(1, wl.spec.Users/100) {
		wl.tw.addUser(fmt.Sprintf("bot%d-bot@zulip.example", i), zuliptest.RoleBot)
	}
}

// seedRows gives the pool rows within 14 days and half of the others rows
// older than that. Seeded times are whole seconds at least five minutes
// old, so no threshold falls within a second of the clock's fraction.
func (wl *workload) seedRows() {
	order := wl.rng.Perm(len(wl.users))
	base := clockStart.Truncate(time.Second)
	for n, i := range order {
		u := wl.users[i]
		var age time.Duration
		switch {
		case n < wl.spec.Active:
			age = randDuration(wl.rng, 5*time.Minute, 14*24*time.Hour)
			wl.pool = append(wl.pool, u)
		case n%2 == 0:
			age = randDuration(wl.rng, 14*24*time.Hour+time.Hour, 300*24*time.Hour)
		default:
			continue // never logged in: no row
		}
		connected := base.Add(-age)
		active := connected
		if wl.rng.IntN(2) == 0 {
			active = connected.Add(-randDuration(wl.rng, 0, 3*time.Hour))
		}
		wl.tw.Both(func(r *zuliptest.Realm) { r.SetPresenceRow(u.id, connected, active) })
	}
	wl.offline = append([]*simUser(nil), wl.pool...)
}

func randDuration(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return (lo + time.Duration(rng.Int64N(int64(hi-lo)))).Truncate(time.Second)
}

// stratifiedKinds returns n client kinds in the proportions of clientMix
// (largest remainder), shuffled.
func stratifiedKinds(n int, rng *rand.Rand) []Kind {
	var out []Kind
	var rem [numKinds]float64
	for k := range numKinds {
		exact := clientMix[k] * float64(n)
		for range int(exact) {
			out = append(out, k)
		}
		rem[k] = exact - math.Floor(exact)
	}
	for len(out) < n {
		best := Kind(0)
		for k := range numKinds {
			if rem[k] > rem[best] {
				best = k
			}
		}
		out = append(out, best)
		rem[best] = -1
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// nextKind draws a client kind: from the stratified queue first, then at
// random from the mix.
func (wl *workload) nextKind() Kind {
	if len(wl.kinds) > 0 {
		k := wl.kinds[0]
		wl.kinds = wl.kinds[1:]
		return k
	}
	x := wl.rng.Float64()
	for k := range numKinds {
		if x < clientMix[k] {
			return k
		}
		x -= clientMix[k]
	}
	return KindWeb
}

// at schedules f at second sec; events past the end are dropped.
func (wl *workload) at(sec int, f func()) {
	if sec < len(wl.events) {
		wl.events[sec] = append(wl.events[sec], f)
	}
}

// fire runs the events of the current second, including those they
// schedule for the same second.
func (wl *workload) fire() {
	evs := wl.events[wl.now]
	for i := 0; i < len(evs); i++ {
		evs[i]()
		evs = wl.events[wl.now]
	}
	wl.events[wl.now] = nil
}

func (wl *workload) takeOffline() *simUser {
	i := wl.rng.IntN(len(wl.offline))
	u := wl.offline[i]
	wl.offline[i] = wl.offline[len(wl.offline)-1]
	wl.offline = wl.offline[:len(wl.offline)-1]
	return u
}

// comeOnline starts a user's clients after delay seconds and schedules
// their departure; a newcomer replaces them.
func (wl *workload) comeOnline(u *simUser, delay int) {
	start := wl.now + delay
	wl.at(start, func() {
		wl.online++
		n := 1
		if wl.rng.Float64() < wl.spec.ClientsPerUser-1 {
			n = 2
		}
		for range n {
			wl.startClient(u, wl.nextKind())
		}
		stay := minStay + wl.rng.IntN(maxStay-minStay)
		wl.at(wl.now+stay, func() { wl.leave(u) })
	})
}

// leave stops the user's clients; an offline user of the pool comes
// online within a minute, so the number online stays near the target.
func (wl *workload) leave(u *simUser) {
	for _, c := range u.clients {
		c.stop()
	}
	u.clients = nil
	wl.online--
	wl.comeOnline(wl.takeOffline(), wl.rng.IntN(pollEvery))
	wl.offline = append(wl.offline, u) // after, so that u does not bounce back
}

func (wl *workload) startClient(u *simUser, k Kind) {
	c := &client{wl: wl, kind: k, user: u, alive: true, active: true, since: wl.now, inst: wl.tw.instance()}
	u.clients = append(u.clients, c)
	wl.tw.res.ByKind[k].Clients++
	switch k {
	case KindWeb:
		wl.startWeb(c)
	case KindFlutter:
		wl.startFlutter(c)
	case KindMobile:
		wl.startMobile(c)
	case KindTerminal:
		wl.startLoop(c, 0, wl.terminalPoll)
	case KindScript:
		c.script = scriptStyles[wl.scripts%len(scriptStyles)]
		wl.scripts++
		wl.startLoop(c, 0, wl.scriptPoll)
	}
}

// stop ends a client. zulip-flutter reports "detached" with an idle ping;
// the others just go quiet.
func (c *client) stop() {
	if c.kind == KindFlutter && c.active {
		c.send(nil, form("status", "idle", "ping_only", "true", "new_user_input", "false", "slim_presence", "true"))
	}
	c.alive = false
	c.gen++
}

// startLoop runs poll every 60 s from now+delay until the client's
// generation changes.
func (wl *workload) startLoop(c *client, delay int, poll func(c *client)) {
	gen := c.gen
	var tick func()
	tick = func() {
		if !c.alive || c.gen != gen {
			return
		}
		poll(c)
		wl.at(wl.now+pollEvery, tick)
	}
	wl.at(wl.now+delay, tick)
}

// send queues one request of c (of tab t, for the web app) for both sides.
func (c *client) send(t *tab, f url.Values) {
	c.wl.tw.enqueue(newJob(c, t, f))
}

// --- web app ---

// startWeb logs a browser in and opens 1–3 tabs a few seconds apart. Each
// tab loads the page, pings, then polls incrementally every minute with
// its own cursor.
func (wl *workload) startWeb(c *client) {
	for s := range numSides {
		c.session[s], c.csrf[s] = wl.tw.realm(side(s)).NewSession(c.user.id)
	}
	n := 1 + wl.rng.IntN(3)
	for range n {
		t := &tab{lostFocus: -webIdleAfter}
		c.tabs = append(c.tabs, t)
		open := wl.rng.IntN(20)
		wl.at(wl.now+open, func() {
			if !c.alive {
				return
			}
			wl.loadPage(t)
			c.send(t, wl.webForm(c, t, true))
			wl.startLoop(c, pollEvery, func(c *client) { c.send(t, wl.webForm(c, t, false)) })
		})
	}
	wl.scheduleWebPhase(c)
	wl.scheduleFocusSwitch(c)
}

// loadPage gives a new tab what the page load (/register) gives the web
// app: the presence table, outside this endpoint, and its cursor, so that
// the tab's first poll is already incremental (spec §5).
func (wl *workload) loadPage(t *tab) {
	for s := range numSides {
		t.cursor[s] = wl.tw.pageLoadCursor(side(s))
	}
	t.idealSeen, t.idealSeq = true, t.cursor[sideDirect]
}

// webStatus is compute_active_status for one tab: active while the user
// works in it, and for five minutes after it lost focus or the user went
// idle; idle after that.
func (wl *workload) webStatus(c *client, t *tab) (status string, input bool) {
	focused := c.tabs[c.focused] == t
	switch {
	case focused && c.active:
		return "active", wl.rng.Float64() < 0.8
	case focused && wl.now-c.since < webIdleAfter:
		return "active", false
	case !focused && wl.now-t.lostFocus < webIdleAfter && c.active:
		return "active", false
	}
	return "idle", false
}

// webForm is send_presence_to_server: ping_only is !redraw, and every
// request carries the tab's cursor.
func (wl *workload) webForm(c *client, t *tab, ping bool) url.Values {
	status, input := wl.webStatus(c, t)
	return form("status", status, "ping_only", strconv.FormatBool(ping), "new_user_input", strconv.FormatBool(input))
}

// scheduleWebPhase alternates the user between working and being away;
// coming back makes the focused tab ping at once.
func (wl *workload) scheduleWebPhase(c *client) {
	mean := meanActivePhase
	if !c.active {
		mean = meanIdlePhase
	}
	wl.at(wl.now+expSeconds(wl.rng, mean), func() {
		if !c.alive {
			return
		}
		c.active, c.since = !c.active, wl.now
		if c.active {
			t := c.tabs[c.focused]
			c.send(t, form("status", "active", "ping_only", "true", "new_user_input", "true"))
		}
		wl.scheduleWebPhase(c)
	})
}

// scheduleFocusSwitch moves focus between tabs while the user works; the
// newly focused tab pings.
func (wl *workload) scheduleFocusSwitch(c *client) {
	wl.at(wl.now+expSeconds(wl.rng, meanFocusSwitch), func() {
		if !c.alive {
			return
		}
		if c.active && len(c.tabs) > 1 {
			c.tabs[c.focused].lostFocus = wl.now
			c.focused = (c.focused + 1 + wl.rng.IntN(len(c.tabs)-1)) % len(c.tabs)
			c.send(c.tabs[c.focused], form("status", "active", "ping_only", "true", "new_user_input", "true"))
		}
		wl.scheduleFocusSwitch(c)
	})
}

// --- zulip-flutter ---

// startFlutter opens the app in the foreground: resumed pings, then a slim
// full poll every minute; it goes to the background and back now and then.
func (wl *workload) startFlutter(c *client) {
	wl.at(wl.now+wl.rng.IntN(pollEvery), func() { wl.flutterResume(c) })
}

// flutterResume is AppLifecycleState.resumed: a ping with input, and the
// poll loop restarts with an immediate poll.
func (wl *workload) flutterResume(c *client) {
	if !c.alive {
		return
	}
	c.active, c.since = true, wl.now
	c.gen++
	c.send(nil, form("status", "active", "ping_only", "true", "new_user_input", "true", "slim_presence", "true"))
	wl.startLoop(c, 0, func(c *client) {
		c.send(nil, form("status", "active", "ping_only", "false", "new_user_input", "false", "slim_presence", "true"))
	})
	wl.at(wl.now+expSeconds(wl.rng, meanForeground), func() { wl.flutterBackground(c) })
}

// flutterBackground is inactive (an active ping) then hidden and paused
// (nothing); polling stops until the app resumes.
func (wl *workload) flutterBackground(c *client) {
	if !c.alive {
		return
	}
	c.send(nil, form("status", "active", "ping_only", "true", "new_user_input", "false", "slim_presence", "true"))
	c.active = false
	c.gen++
	wl.at(wl.now+expSeconds(wl.rng, meanBackground), func() { wl.flutterResume(c) })
}

// --- zulip-mobile ---

// startMobile runs the legacy heartbeat while AppState is active: status
// and new_user_input only, every minute.
func (wl *workload) startMobile(c *client) {
	var foreground func()
	foreground = func() {
		if !c.alive {
			return
		}
		c.gen++
		wl.startLoop(c, 0, func(c *client) { c.send(nil, form("status", "active", "new_user_input", "false")) })
		wl.at(wl.now+expSeconds(wl.rng, meanForeground), func() {
			c.gen++ // background: the heartbeat stops
			wl.at(wl.now+expSeconds(wl.rng, meanBackground), foreground)
		})
	}
	wl.at(wl.now+wl.rng.IntN(pollEvery), foreground)
}

// --- zulip-terminal and scripts ---

// terminalPoll is zulip-terminal's loop: active iff the user typed since
// the last poll.
func (wl *workload) terminalPoll(c *client) {
	input := wl.rng.Float64() < 0.6
	status := "idle"
	if input {
		status = "active"
	}
	c.send(nil, form("status", status, "new_user_input", strconv.FormatBool(input)))
}

// scriptPoll is a bot-like script polling as its human owner.
func (wl *workload) scriptPoll(c *client) {
	st := c.script
	f := form("status", "active")
	if st.slim {
		f.Set("slim_presence", "true")
	}
	if st.days > 0 {
		f.Set("history_limit_days", strconv.FormatInt(st.days, 10))
	}
	if st.extra {
		f.Set("note", "cron")
	}
	c.send(nil, f)
}

// expSeconds draws an exponential duration of the given mean, at least a
// second.
func expSeconds(rng *rand.Rand, mean int) int {
	return max(1, int(rng.ExpFloat64()*float64(mean)))
}

func form(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

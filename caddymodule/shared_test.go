package caddymodule

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/zulip-presence/caddy-zulip-presence/internal/twinrig"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// sharedRealm is a realm of members, each with a phone polling slim, a
// legacy client or a script pinging, all through a handler in shared mode.
func sharedRealm(t *testing.T, cfg Handler, members int) (*twin, []twinUser, []*client) {
	cfg.Mode = modeShared
	tw := newTwin(t, cfg)
	var users []twinUser
	var clients []*client
	for i := range members {
		u := tw.addUser(fmt.Sprintf("user%d@zulip.example", i), zuliptest.RoleMember)
		users = append(users, u)
		clients = append(clients, tw.apiClient(fmt.Sprint("client", i), u))
	}
	tw.Clock.Advance(time.Hour)
	return tw, users, clients
}

// TestSharedModeFidelity: when every write of the realm goes through the
// handler, the view is always current, so every answer it gives is the
// server's own, and the server's rows are those a direct run writes.
func TestSharedModeFidelity(t *testing.T) {
	tw, users, clients := sharedRealm(t, Handler{}, 12)
	rng := rand.New(rand.NewPCG(7, 7))
	kinds := [][]string{
		{"slim_presence", "true"},
		{},
		{"ping_only", "true"},
		{"slim_presence", "true", "history_limit_days", "3"},
	}
	var direct, proxied zuliptest.Stats
	for step := range 1500 {
		// Whole seconds: the legacy 70-second rule may round otherwise
		// (an allowed difference this test does not model).
		tw.Clock.Advance(time.Duration(rng.IntN(6)) * time.Second)
		c := clients[rng.IntN(len(clients))]
		kv := append([]string{"status", []string{"active", "idle"}[rng.IntN(2)]}, kinds[rng.IntN(len(kinds))]...)
		if rng.IntN(10) == 0 {
			kv = append(kv, "new_user_input", "true")
		}
		tw.postShared(c, form(kv...), 10*time.Second)
		tw.sameRows(users...)
		if step == 200 { // past the first minutes, when views and lists are made
			direct, proxied = tw.Direct.DefaultRealm().Stats(), tw.Proxied.DefaultRealm().Stats()
		}
	}
	d, p := tw.Direct.DefaultRealm().Stats(), tw.Proxied.DefaultRealm().Stats()
	if d.RowsWritten != p.RowsWritten {
		t.Fatalf("rows written %d through the module, %d direct", p.RowsWritten, d.RowsWritten)
	}
	db, pb := d.ResponseBytes-direct.ResponseBytes, p.ResponseBytes-proxied.ResponseBytes
	t.Logf("steady state: upstream bytes %d through the module, %d direct (%.3f); rows read %d, %d", pb, db, float64(pb)/float64(db), p.RowsReturned-proxied.RowsReturned, d.RowsReturned-direct.RowsReturned)
	if pb*5 > db {
		t.Fatalf("shared mode pulled %d bytes, direct %d: not even five times fewer", pb, db)
	}
}

// restrictedGuest turns on the server's guest restriction on both sides
// and adds a guest.
func restrictedGuest(tw *twin) twinUser {
	tw.Both(func(r *zuliptest.Realm) {
		s := r.Settings()
		s.RestrictGuestUserAccess, s.CanAccessAllUsersGroupLimitsPresence = true, true
		r.SetSettings(s)
	})
	return tw.addUser("guest@zulip.example", zuliptest.RoleGuest)
}

// TestSharedModeGuestsStayInSessionMode: a guest whose view the server
// restricts gets its own answers, and never feeds the view: members still
// see every row.
func TestSharedModeGuestsStayInSessionMode(t *testing.T) {
	tw, users, clients := sharedRealm(t, Handler{}, 4)
	guest := restrictedGuest(tw)
	tw.Both(func(r *zuliptest.Realm) { r.ShareAccess(guest.id, users[0].id) })
	gc := tw.apiClient("guest", guest)
	for range 20 {
		for _, c := range append(clients, gc) {
			tw.postShared(c, form("status", "active", "slim_presence", "true"), 10*time.Second)
			tw.postShared(c, form("status", "active"), 10*time.Second)
			tw.Clock.Advance(3 * time.Second)
		}
		tw.Clock.Advance(40 * time.Second)
	}
	tw.sameRows(append(users, guest)...)
}

// TestSharedModeViewIsBoundedAndListed: the view counts against the store
// and shows in the admin listing.
func TestSharedModeViewIsListed(t *testing.T) {
	tw, _, clients := sharedRealm(t, Handler{}, 3)
	for range 3 {
		for _, c := range clients {
			tw.postShared(c, form("status", "active", "slim_presence", "true"), 10*time.Second)
		}
		tw.Clock.Advance(61 * time.Second)
	}
	views := tw.h.store.Views(tw.h.now())
	if len(views) != 1 || views[0].Host != "zulip.example" || views[0].Rows != 3 {
		t.Fatalf("views = %+v, want the realm's with its 3 rows", views)
	}
}

var serverTimestamp = regexp.MustCompile(`"server_timestamp":([0-9.e+]+)`)

// postShared is post for shared mode: an answer from the view stands as of
// the view's last merge, so its server_timestamp may be up to staleness
// older than the direct answer's; everything else must match.
func (tw *twin) postShared(c *client, form url.Values, staleness time.Duration) (answer, int) {
	tw.t.Helper()
	d := tw.serveDirect(c.request(false, form))
	p, n := tw.serveProxied(c.request(true, form))
	if dm, pm := serverTimestamp.FindSubmatch(d.body), serverTimestamp.FindSubmatch(p.body); dm != nil && pm != nil {
		dts, _ := strconv.ParseFloat(string(dm[1]), 64)
		pts, _ := strconv.ParseFloat(string(pm[1]), 64)
		if pts > dts || dts-pts > staleness.Seconds() {
			tw.t.Fatalf("%s: server_timestamp %f, direct %f: not within %v before it", c.name, pts, dts, staleness)
		}
		p.body = serverTimestamp.ReplaceAll(p.body, dm[0])
	}
	if err := sameAnswer(d, p, isFullPoll(form)); err != nil {
		tw.t.Fatalf("%s %s at %s: %v\ndirect:  %d %s\nproxied: %d %s", c.name, form.Encode(), tw.Clock.Now().Format(time.TimeOnly), err, d.status, d.body, p.status, p.body)
	}
	return d, n
}

// TestSharedModeRealmPresenceDisabled: a realm that turns presence off
// answers {} and -1 to every read, even to a cursor; the view follows it,
// and heals with a full fetch once presence is back on.
func TestSharedModeRealmPresenceDisabled(t *testing.T) {
	tw, users, clients := sharedRealm(t, Handler{TrustWindow: caddy.Duration(5 * time.Minute)}, 5)
	setDisabled := func(off bool) {
		tw.Both(func(r *zuliptest.Realm) {
			s := r.Settings()
			s.PresenceDisabled = off
			r.SetSettings(s)
		})
	}
	kinds := [][]string{{"slim_presence", "true"}, {}, {"ping_only", "true"}}
	for phase, off := range []bool{false, true, false} {
		setDisabled(off)
		for round := range 6 {
			for i, c := range clients {
				kv := append([]string{"status", "active"}, kinds[(i+round)%len(kinds)]...)
				tw.postShared(c, form(kv...), 10*time.Second)
				tw.Clock.Advance(2 * time.Second)
			}
			tw.Clock.Advance(50 * time.Second)
			tw.sameRows(users...)
		}
		t.Logf("phase %d done", phase)
	}
}

// TestSharedModeWebTabsFromTheView: web app tabs start from the cursor a
// page load gives them and poll every minute while phones write between
// their polls. From its second poll on, every tab is answered from the
// view (one upstream request, the fetch that carries its write); its
// first poll joins the view; every answer is the server's.
func TestSharedModeWebTabsFromTheView(t *testing.T) {
	tw, users, phones := sharedRealm(t, Handler{}, 8)
	type tab struct {
		c      *client
		cursor int64
		polls  int
	}
	var tabs []*tab
	for i, u := range users[:4] {
		b := tw.browser(fmt.Sprint("browser", i), u)
		for range 2 {
			tabs = append(tabs, &tab{c: b})
		}
	}
	served := func() float64 {
		return testutil.ToFloat64(tw.h.metrics.requests.WithLabelValues("modern", outcomeViewFed))
	}
	for second := range 20 * 60 {
		if i := second % 10; i < len(phones) && second%60 < 50 {
			tw.postShared(phones[i], form("status", "active", "slim_presence", "true"), 10*time.Second)
		}
		for i, tb := range tabs {
			if second < 60 || second%60 != 5*i+3 {
				continue // pages load once the view is made
			}
			if tb.polls == 0 {
				tb.cursor = tw.Direct.DefaultRealm().LastUpdateID() // the page load's
			}
			before := served()
			d, n := tw.postShared(tb.c, form("status", "active", "last_update_id", itoa(tb.cursor)), 10*time.Second)
			tb.cursor = cursorOf(t, d)
			tb.polls++
			if tb.polls >= 2 && (served() != before+1 || n != 1) {
				t.Fatalf("tab %d, poll %d: %d upstream requests, answered from the view: %v", i, tb.polls, n, served() == before+1)
			}
		}
		tw.Clock.Advance(time.Second)
	}
	tw.sameRows(users...)
}

// TestSharedModeNewSessions: a new member session's first full poll is
// answered from the view, with one upstream presence request; a new
// guest session's, whose answers the server restricts, goes upstream as
// it came, and its restricted answer never reaches the view.
func TestSharedModeNewSessions(t *testing.T) {
	tw, users, clients := sharedRealm(t, Handler{}, 6)
	guest := restrictedGuest(tw)
	count := func(kind, outcome string) float64 {
		return testutil.ToFloat64(tw.h.metrics.requests.WithLabelValues(kind, outcome))
	}
	round := func() {
		for _, c := range clients {
			tw.postShared(c, form("status", "active", "slim_presence", "true"), 10*time.Second)
			tw.Clock.Advance(2 * time.Second)
		}
	}
	round()
	for i, u := range users {
		tw.Clock.Advance(50 * time.Second)
		round()
		fed := count("slim", outcomeViewFed)
		_, n := tw.postShared(tw.apiClient(fmt.Sprint("new", i), u), form("status", "active", "slim_presence", "true"), 10*time.Second)
		if n != 1 || count("slim", outcomeViewFed) != fed+1 {
			t.Fatalf("member %d's new session: %d upstream presence requests, answered from the view: %v", i, n, count("slim", outcomeViewFed) == fed+1)
		}
		fed = count("legacy", outcomeViewFed)
		tw.postShared(tw.apiClient(fmt.Sprint("guest", i), guest), form("status", "active"), 10*time.Second)
		if count("legacy", outcomeViewFed) != fed {
			t.Fatalf("a guest's new session was answered from the view")
		}
		round() // members' answers would lack rows had the guest's fed the view
	}
	tw.sameRows(append(users, guest)...)
}

// TestSharedModeRandomHostsStayBounded: requests naming made-up hosts
// create no view when the server refuses them, and however many hosts the
// server accepts (zuliptest answers every Host with its default realm),
// views and sessions stay within cache_size.
func TestSharedModeRandomHostsStayBounded(t *testing.T) {
	tw, users, clients := sharedRealm(t, Handler{CacheName: t.Name(), CacheSize: 2 << 20}, 4)
	for range 2 {
		for _, c := range clients {
			tw.postShared(c, form("status", "active", "slim_presence", "true"), 10*time.Second)
		}
		tw.Clock.Advance(time.Minute)
	}
	if views := tw.h.store.Views(tw.h.now()); len(views) != 1 {
		t.Fatalf("%d views, want the realm's", len(views))
	}
	send := func(host string, c *client) int {
		r := c.request(true, form("status", "active", "slim_presence", "true"))
		r.Host = host
		rec := httptest.NewRecorder()
		if err := tw.h.ServeHTTP(rec, r, twinrig.Next(tw.Proxied)); err != nil {
			t.Fatal(err)
		}
		return rec.Code
	}
	stranger := tw.apiClient("stranger", users[0])
	stranger.authP = "Basic " + base64.StdEncoding.EncodeToString([]byte(users[0].email+":not-the-key"))
	rng := rand.New(rand.NewPCG(3, 3))
	for i := range 100_000 {
		if code := send(fmt.Sprintf("h%d-%x.example", i, rng.Uint64()), stranger); code != 401 {
			t.Fatalf("a made-up key got %d", code)
		}
	}
	if views := tw.h.store.Views(tw.h.now()); len(views) != 1 {
		t.Fatalf("%d views after 100 000 refused requests naming made-up hosts, want the realm's alone", len(views))
	}
	for i := range 3_000 {
		// Twice, so that the second request finds a trusted session and
		// makes the host a view.
		tw.Clock.Advance(time.Second)
		for range 2 {
			if code := send(fmt.Sprintf("a%d.example", i), clients[i%len(clients)]); code != 200 {
				t.Fatalf("host %d: %d", i, code)
			}
		}
	}
	if used, max := tw.h.store.Used(), tw.h.store.MaxCost(); used > max {
		t.Fatalf("store holds %d bytes, over its cache_size %d", used, max)
	}
	t.Logf("%d views, %d bytes held of %d", len(tw.h.store.Views(tw.h.now())), tw.h.store.Used(), tw.h.store.MaxCost())
}

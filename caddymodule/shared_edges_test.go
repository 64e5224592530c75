package caddymodule

// Minimal step sequences that TestSharedProperty found breaking the
// shared-mode fidelity contract (design §10.8), shrunk
// with ZP_PROPERTY_SHRINK=1 and written out by hand. Every test runs the
// twin rig: one simulated Zulip answers directly, an identical one through
// handlers in shared mode, on one clock. Each test asserts what the
// contract requires (they failed on 7114a58; the module now polls the
// server for every full poll, 1d3273f, and fixed the rest in 021ceda).

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// sharedTwin is a twin whose proxied server is behind a handler in shared
// mode (default settings).
func sharedTwin(t *testing.T) *twin {
	return newTwin(t, Handler{Mode: modeShared})
}

// secondInstance provisions another shared-mode handler with a store of
// its own (another Caddy instance) on the twin's clock.
func (tw *twin) secondInstance() *Handler {
	return tw.provisionOnClock(Handler{Mode: modeShared, CacheName: tw.t.Name() + "/second"})
}

// exchange sends the client's request to both servers, the proxied one
// through h, and returns both answers and how many presence requests
// reached the proxied server.
func (tw *twin) exchange(h *Handler, c *client, f url.Values) (d, p answer, upstream int) {
	tw.t.Helper()
	saved := tw.h
	tw.h = h
	defer func() { tw.h = saved }()
	d = tw.serveDirect(c.request(false, f))
	p, upstream = tw.serveProxied(c.request(true, f))
	return d, p, upstream
}

// presenceEntry returns the raw entry of key in an answer's presences, ""
// when there is none.
func presenceEntry(t *testing.T, a answer, key string) string {
	t.Helper()
	var v struct {
		Presences map[string]json.RawMessage `json:"presences"`
	}
	if err := json.Unmarshal(a.body, &v); err != nil {
		t.Fatalf("answer %d %s: %v", a.status, a.body, err)
	}
	return string(v.Presences[key])
}

// TestSharedRevokedPollAnsweredFromView: a member's client loads
// the web app (the server's 2xx makes the session trusted, and the
// answer is merged into the view); the member is deactivated; in the same second the client
// polls again. Zulip answers 401, but the handler answers the poll from
// the view, with 200 and the realm's whole presence table. The same
// happens to a regenerated API key and a logged-out browser, for slim,
// legacy and web app polls, within trust_window (55 s by default, 5 min
// where an operator raises it). Allowance 5 of the contract lets only a
// ping of revoked credentials be answered locally; a poll is not a no-op
// write only, it reads the realm's presence.
//
//	t=0  othello: web app page load   forwarded, merged into the view
//	     Deactivate(othello)          (or RegenerateAPIKey, or Logout)
//	t=0  othello: legacy poll         Zulip 401; module 200 from the view
func TestSharedRevokedPollAnsweredFromView(t *testing.T) {
	for _, tc := range []struct {
		name    string
		browser bool
		revoke  func(tw *twin, u twinUser, c *client)
	}{
		{"deactivated", false, func(tw *twin, u twinUser, c *client) {
			tw.Both(func(r *zuliptest.Realm) { r.Deactivate(u.id) })
		}},
		{"key regenerated", false, func(tw *twin, u twinUser, c *client) {
			tw.Both(func(r *zuliptest.Realm) { r.RegenerateAPIKey(u.id) })
		}},
		{"logged out", true, func(tw *twin, u twinUser, c *client) {
			tw.Direct.DefaultRealm().Logout(c.authD)
			tw.Proxied.DefaultRealm().Logout(c.authP)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tw := sharedTwin(t)
			tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
			u := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
			tw.Clock.Advance(time.Hour)
			c := tw.apiClient("othello", u)
			if tc.browser {
				c = tw.browser("othello", u)
			}
			// A page load: forwarded, and merged as the view's full fetch.
			tw.postShared(c, form("status", "active", "last_update_id", "-1"), 10*time.Second)
			tc.revoke(tw, u, c)
			for _, f := range []url.Values{
				form("status", "active"),
				form("status", "active", "slim_presence", "true"),
			} {
				d, p, n := tw.exchange(tw.h, c, f)
				if d.status != p.status {
					t.Errorf("%s: Zulip %d %s; module %d (%d upstream) %.120s…", f.Encode(), d.status, d.body, p.status, n, p.body)
				}
			}
		})
	}
}

// TestSharedOwnRowAfterInvisibleMode: a member loads the web app
// (the view gets their row, written now), then turns invisible mode on, which makes
// Zulip move the row 265 s back at once (a change with an id of its own,
// which no presence request carried). The member's next poll in that same
// second is a no-op write for Zulip (its writes are ignored while
// invisible), so the handler answers it from the view, which still has
// the row as it was before the backdating. The answer may stand as of an
// instant up to max_staleness ago, but the requester's own row must be as
// fresh as in a direct answer.
//
//	t=0  othello: web app page load         row (t, t), merged into the view
//	     SetPresenceEnabled(othello, false) Zulip: row (t−265 s, t−265 s)
//	t=0  othello: slim poll                 Zulip shows t−265 s; module t
func TestSharedOwnRowAfterInvisibleMode(t *testing.T) {
	tw := sharedTwin(t)
	tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	u := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
	tw.Clock.Advance(time.Hour)
	c := tw.apiClient("othello", u)
	slim := form("status", "active", "slim_presence", "true")
	// A page load: forwarded, and merged as the view's full fetch.
	tw.postShared(c, form("status", "active", "last_update_id", "-1"), 10*time.Second)
	tw.Both(func(r *zuliptest.Realm) { r.SetPresenceEnabled(u.id, false) })
	for _, f := range []url.Values{slim, form("status", "idle"), form("status", "active", "last_update_id", "-1")} {
		d, p, n := tw.exchange(tw.h, c, f)
		key := itoa(u.id)
		if f.Get("slim_presence") == "" && !f.Has("last_update_id") {
			key = u.email
		}
		if want, got := presenceEntry(t, d, key), presenceEntry(t, p, key); want != got {
			t.Errorf("%s (%d upstream): own entry %s, Zulip says %s", f.Encode(), n, got, want)
		}
	}
	tw.sameRows(u)
}

// TestSharedOwnRowWrittenThroughAnotherInstance: two Caddy
// instances without shared state. A user's phone pings idle through the
// first, which creates the row without an active time; the user's browser
// becomes active through the second (new_user_input=true), which Zulip
// stores; in the same second the phone polls through the first again.
// That write is a no-op for Zulip (the row was written this second), so
// the first instance answers from its own view, in which the user is
// still idle: the answer may be as of an instant before the browser's
// write, but the requester's own row must be as fresh as in a direct
// answer. (Invisible mode toggled on another device is the same case.)
//
//	t=0  iago phone    [A] ping status=idle           row (t, NULL)
//	t=0  othello phone [A] web app poll               view of A fed
//	t=0  iago browser  [B] ping active, input         row (t, t)
//	t=0  iago phone    [A] legacy poll status=idle    Zulip: iago active;
//	                                                  module: idle (A's view)
func TestSharedOwnRowWrittenThroughAnotherInstance(t *testing.T) {
	tw := sharedTwin(t)
	a, b := tw.h, tw.secondInstance()
	tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	othello := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
	iago := tw.addUser("iago@zulip.example", zuliptest.RoleMember)
	tw.Clock.Advance(time.Hour)
	phone, browser, other := tw.apiClient("iago phone", iago), tw.browser("iago browser", iago), tw.apiClient("othello", othello)

	tw.exchange(a, phone, form("status", "idle", "ping_only", "true"))
	tw.exchange(a, other, form("status", "active", "last_update_id", "-1", "new_user_input", "true"))
	tw.exchange(b, browser, form("status", "active", "ping_only", "true", "new_user_input", "true"))
	d, p, n := tw.exchange(a, phone, form("status", "idle", "history_limit_days", "2"))
	if want, got := presenceEntry(t, d, iago.email), presenceEntry(t, p, iago.email); want != got {
		t.Errorf("own entry (%d upstream) %s, Zulip says %s", n, got, want)
	}
	tw.sameRows(othello, iago)
}

// TestSharedForwardedPollRefreshesUnsyncedView: a web app tab's
// poll that the view cannot answer is forwarded as it came and its answer
// merged into the view; that merge makes the view fresh again even when
// its last full fetch is older than resync_interval, and the view then
// answers polls without the full fetch that heals what deltas never say.
// Here a user reactivated 11 minutes before (resync_interval is 10 m) is
// missing from a slim poll's answer; with a deactivation instead, the
// deactivated user stays in answers for as long as the tab keeps polling
// (13 days in the case the property test found).
//
//	t=0    othello: web app poll (page load)   row of othello
//	       Deactivate(othello)
//	t=0    iago tab: page load                 forwarded, merged as the
//	                                           view's full fetch (no othello)
//	       Reactivate(othello)
//	t=11m  iago tab: poll at its cursor        forwarded (trust lapsed),
//	                                           merged: view fresh
//	t=11m  iago: slim poll                     from the view: no othello
func TestSharedForwardedPollRefreshesUnsyncedView(t *testing.T) {
	tw := sharedTwin(t)
	tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	othello := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
	iago := tw.addUser("iago@zulip.example", zuliptest.RoleMember)
	tw.Clock.Advance(time.Hour)
	oc, tab := tw.apiClient("othello", othello), tw.browser("iago tab", iago)

	tw.exchange(tw.h, oc, form("status", "active", "last_update_id", "-1"))
	tw.Both(func(r *zuliptest.Realm) { r.Deactivate(othello.id) })
	d, p, _ := tw.exchange(tw.h, tab, form("status", "idle", "last_update_id", "-1", "ping_only", "false"))
	if err := sameAnswer(d, p, false); err != nil {
		t.Fatalf("page load: %v", err)
	}
	tw.Both(func(r *zuliptest.Realm) { r.Reactivate(othello.id) })
	tw.Clock.Advance(11 * time.Minute)
	cursor := itoa(nextCursor(p, -1))
	if d, p, _ = tw.exchange(tw.h, tab, form("status", "active", "last_update_id", cursor, "new_user_input", "true")); sameAnswer(d, p, false) != nil {
		t.Fatalf("second poll: %v", sameAnswer(d, p, false))
	}
	d, p, n := tw.exchange(tw.h, tab, form("status", "active", "slim_presence", "true", "new_user_input", "false"))
	key := itoa(othello.id)
	if want, got := presenceEntry(t, d, key), presenceEntry(t, p, key); want != got {
		t.Errorf("slim poll (%d upstream): entry of othello, reactivated 11 minutes ago: %q, Zulip says %q", n, got, want)
	}
}

// TestSharedDaysZeroPollMakesViewFresh: the web app's poll with
// history_limit_days=0 (which Zulip answers with no rows and the cursor
// echoed, whatever changed) is forwarded and merged into the view as a
// delta saying nothing changed since the cursor. The view then counts as
// freshly merged and answers the next poll at that cursor from the view,
// without a row another user wrote 17 s before: no instance within
// max_staleness had the view's rows.
//
//	t=0    othello: web app poll, page load   view created at id 1
//	t=0    hamlet browser: ping, input        row of hamlet, id 2
//	t=17s  othello: poll at 1, days=0         Zulip: {} at 1; merged
//	t=17s  othello: poll at 1                 Zulip: hamlet at 2;
//	                                          module: {} at 1 (view)
func TestSharedDaysZeroPollMakesViewFresh(t *testing.T) {
	tw := sharedTwin(t)
	hamlet := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	othello := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
	tw.Clock.Advance(time.Hour)
	oc, hb := tw.apiClient("othello", othello), tw.browser("hamlet", hamlet)

	d, p, _ := tw.exchange(tw.h, oc, form("status", "active", "last_update_id", "-1", "slim_presence", "true", "ping_only", "false"))
	if err := sameAnswer(d, p, false); err != nil {
		t.Fatalf("page load: %v", err)
	}
	cursor := itoa(nextCursor(p, -1))
	tw.exchange(tw.h, hb, form("status", "idle", "ping_only", "true", "new_user_input", "true"))
	tw.Clock.Advance(17 * time.Second)
	d, p, _ = tw.exchange(tw.h, oc, form("status", "active", "last_update_id", cursor, "history_limit_days", "0", "ping_only", "false"))
	if err := sameAnswer(d, p, false); err != nil {
		t.Fatalf("days=0 poll: %v", err)
	}
	cursor = itoa(nextCursor(p, -1))
	d, p, n := tw.exchange(tw.h, oc, form("status", "active", "last_update_id", cursor, "ping_only", "false"))
	if err := sameAnswer(d, p, false); err != nil {
		t.Errorf("poll at %s (%d upstream): %v\ndirect:  %s\nproxied: %s", cursor, n, err, d.body, p.body)
	}
}

// TestSharedGuestOwnRowAfterReactivation: with the guest
// restriction on, a guest is deactivated, a member's poll fetches the user
// list (the guest inactive), the guest is reactivated, and an hour later
// another guest's legacy poll fetches the list again: a guest's list
// names only whom that guest may see, so it leaves the first guest's
// inactive entry as it was, yet marks the list checked. The first guest's
// own legacy poll then finds the list fresh (for a guest, any list
// checked within users_refresh is), and its answer leaves out its own row,
// which Zulip shows. Shared mode learns the guest's user id (GET
// /users/me) on the way, which is what makes the guest rule apply; the
// same poll in session mode is answered right.
//
//	     guest restriction on; Deactivate(polonius)
//	t=0  hamlet: slim poll            user list: polonius inactive
//	     Reactivate(polonius)
//	t=1h prospero (guest): legacy     guest's list, without polonius
//	t=1h polonius (guest): legacy     Zulip: polonius; module: {} at -1
func TestSharedGuestOwnRowAfterReactivation(t *testing.T) {
	tw := sharedTwin(t)
	hamlet := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	polonius := tw.addUser("polonius@zulip.example", zuliptest.RoleGuest)
	prospero := tw.addUser("prospero@zulip.example", zuliptest.RoleGuest)
	tw.Clock.Advance(time.Hour)
	tw.Both(func(r *zuliptest.Realm) {
		s := r.Settings()
		s.RestrictGuestUserAccess, s.CanAccessAllUsersGroupLimitsPresence = true, true
		r.SetSettings(s)
		r.Deactivate(polonius.id)
	})
	tw.exchange(tw.h, tw.apiClient("hamlet", hamlet), form("status", "active", "slim_presence", "true", "new_user_input", "true"))
	tw.Both(func(r *zuliptest.Realm) { r.Reactivate(polonius.id) })
	tw.Clock.Advance(time.Hour + 5*time.Minute)
	tw.exchange(tw.h, tw.apiClient("prospero", prospero), form("status", "idle"))
	d, p, _ := tw.exchange(tw.h, tw.apiClient("polonius", polonius), form("status", "idle"))
	if d.status != http.StatusOK {
		t.Fatalf("Zulip said %d %s", d.status, d.body)
	}
	if err := sameAnswer(d, p, true); err != nil {
		t.Errorf("polonius's legacy poll: %v\ndirect:  %s\nproxied: %s", err, d.body, p.body)
	}
}

// TestSharedAnotherGuestsListLeavesAUserOut replays
// TestSharedProperty's seed 1517 up to its failure. Under the guest
// restriction a guest's user list names only the users that guest can
// see, yet it made the directory fresh for every guest: prospero, who can
// see iago, reactivated since the last complete list, got legacy answers
// without iago for as long as users_refresh, after polonius's list (which
// leaves iago out) was merged.
func TestSharedAnotherGuestsListLeavesAUserOut(t *testing.T) {
	ss := generateShared(1517, 282)
	findings, _ := ss.run(t, ss.steps, false)
	for _, f := range findings {
		t.Errorf("%s", f)
	}
}

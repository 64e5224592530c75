package caddymodule

// Minimal step sequences that TestTwinProperty found breaking the fidelity
// contract, each shrunk by hand from the property test's own shrinking
// (ZP_PROPERTY_SHRINK=1). Every test runs the twin rig: one simulated Zulip
// answers directly, an identical one through the module, on one clock.

import (
	"net/http"
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// TestSessionLocalPingAnswerHeaders: a trusted session pings twice in
// the same second; the second ping is a no-op on the server, so the module
// answers it itself. Zulip answers every presence request with
// default_never_cache_responses: "Cache-Control: max-age=0, no-cache,
// no-store, must-revalidate, private" and "Expires: <now>". The local answer
// must carry the same headers, or a cache between client and Caddy may keep
// it.
func TestSessionLocalPingAnswerHeaders(t *testing.T) {
	tw := newTwin(t, Handler{})
	u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	tw.Clock.Advance(time.Hour)
	c := tw.apiClient("flutter", u)
	ping := form("status", "active", "ping_only", "true")
	tw.post(c, ping)

	d := tw.serveDirect(c.request(false, ping))
	p, n := tw.serveProxied(c.request(true, ping))
	if n != 0 {
		t.Fatal("the second ping was forwarded; this test needs a local answer")
	}
	if err := sameAnswer(d, p, false); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"Content-Type", "Cache-Control"} {
		if got, want := p.header.Get(name), d.header.Get(name); got != want {
			t.Errorf("%s of the local answer: %q, Zulip sends %q", name, got, want)
		}
	}
	if err := sameExpires(d.header, p.header); err != nil {
		t.Errorf("Expires of the local answer: %v", err)
	}
}

// TestSessionInvisibleToggleLosesWrite: the user turns invisible mode on
// and off again. Turning it off makes Zulip write the row at once (a forced
// "active" update), which no presence request carried, so the module's
// mirror of the row does not know it. The next forwarded ping is a no-op on
// the server, but the module takes it for the write; 41 s later it answers
// a ping locally that Zulip would have stored (57 s after the forced
// write), and the row is left a minute behind.
//
//	t=0    ping active          Zulip writes the row at 0
//	t=0    ping active          local (the module reads the row: 0)
//	t=51   SetPresenceEnabled(false), SetPresenceEnabled(true)
//	                            Zulip backdates, then writes the row at 51
//	t=67   ping active          forwarded; no-op on Zulip (16 s after 51)
//	t=108  ping active          Zulip writes (57 s after 51); module: local
func TestSessionInvisibleToggleLosesWrite(t *testing.T) {
	tw := newTwin(t, Handler{})
	u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	tw.Clock.Advance(time.Hour)
	c := tw.apiClient("flutter", u)
	ping := form("status", "active", "ping_only", "true")

	tw.post(c, ping)
	tw.post(c, ping)
	tw.Clock.Advance(51 * time.Second)
	tw.Both(func(r *zuliptest.Realm) {
		r.SetPresenceEnabled(u.id, false)
		r.SetPresenceEnabled(u.id, true)
	})
	tw.sameRows(u)
	tw.Clock.Advance(16 * time.Second)
	tw.post(c, ping)
	tw.sameRows(u)
	tw.Clock.Advance(41 * time.Second)
	tw.post(c, ping)
	tw.sameRows(u)
}

// TestSessionReactivatedUserMissingFromLegacy: a user is deactivated
// and reactivated; a member's legacy poll in between put the user in the
// host's user list as inactive. More than resync_interval after the
// reactivation a restricted guest's legacy poll refreshes that list, but a
// restricted guest's GET /users does not show the user, so the stale
// "inactive" entry stays and the list counts as fresh for another
// users_refresh. The member's next legacy poll (a full resync by then)
// leaves the user out, while Zulip lists the user: past the bound of
// resync_interval the contract allows for reactivations. As long as guests
// do the refreshing, the user stays missing.
func TestSessionReactivatedUserMissingFromLegacy(t *testing.T) {
	tw := newTwin(t, Handler{})
	tw.Both(func(r *zuliptest.Realm) {
		s := r.Settings()
		s.RestrictGuestUserAccess, s.CanAccessAllUsersGroupLimitsPresence = true, true
		r.SetSettings(s)
	})
	viewer := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	other := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
	guest := tw.addUser("prospero@zulip.example", zuliptest.RoleGuest)
	tw.Clock.Advance(time.Hour)
	vc, oc, gc := tw.apiClient("mobile", viewer), tw.apiClient("othello", other), tw.apiClient("guest", guest)
	legacy := form("status", "active")

	tw.post(oc, form("status", "active", "ping_only", "true"))
	tw.Both(func(r *zuliptest.Realm) { r.Deactivate(other.id) })
	tw.post(vc, legacy) // the module's user list: othello inactive
	tw.Both(func(r *zuliptest.Realm) { r.Reactivate(other.id) })
	tw.Clock.Advance(11 * time.Minute)
	tw.post(gc, legacy) // the guest's refresh cannot see othello
	tw.post(vc, legacy) // Zulip lists othello again
}

// TestSessionLocalPingAfterOwnDenial: a session polls (a 2xx, so it is
// trusted), then its credentials are revoked. Its next ping, in the same
// second, makes the module read the user's row (GET /users/{id}/presence)
// with those credentials; Zulip answers that read with 401, and the module
// still answers the ping locally with 200. Zulip answers the ping 401. A
// 401 or 403 drops the session's state (design §7.3); the trust window
// allowance covers revocations the module cannot see, not a 401 it has just
// been given for the same credentials.
func TestSessionLocalPingAfterOwnDenial(t *testing.T) {
	tests := []struct {
		name    string
		browser bool
		revoke  func(tw *twin, c *client)
	}{
		{"api key regenerated", false, func(tw *twin, c *client) {
			tw.Both(func(r *zuliptest.Realm) { r.RegenerateAPIKey(c.user.id) })
		}},
		{"user deactivated", false, func(tw *twin, c *client) {
			tw.Both(func(r *zuliptest.Realm) { r.Deactivate(c.user.id) })
		}},
		{"browser logged out", true, func(tw *twin, c *client) {
			tw.Direct.DefaultRealm().Logout(c.authD)
			tw.Proxied.DefaultRealm().Logout(c.authP)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tw := newTwin(t, Handler{})
			u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
			tw.Clock.Advance(time.Hour)
			c := tw.apiClient("mobile", u)
			if tc.browser {
				c = tw.browser("web", u)
			}
			tw.post(c, form("status", "active"))
			tc.revoke(tw, c)
			d, _ := tw.post(c, form("status", "active", "ping_only", "true"))
			if d.status != http.StatusUnauthorized {
				t.Fatalf("Zulip answered %d, want 401", d.status)
			}
		})
	}
}

// TestSessionSkewBehindLosesWrite: the handler's clock is 32 s behind
// the server's. The module reads the user's row and compares the server's
// timestamps with its own clock, so the row looks 32 s younger than it is:
// a ping 57 s after the stored active time, which Zulip writes, is answered
// locally.
//
//	t=0   modern poll active    Zulip writes the row at 0
//	t=8   modern poll idle      no-op (keeps the session trusted)
//	t=57  ping active           Zulip writes active (57 s > 55 s);
//	                            the module reads active_timestamp=0 at its
//	                            25 s and answers locally
func TestSessionSkewBehindLosesWrite(t *testing.T) {
	tw := newTwin(t, Handler{})
	tw.h.SetClock(func() time.Time { return tw.Clock.Now().Add(-32 * time.Second) })
	u := tw.addUser("polonius@zulip.example", zuliptest.RoleMember)
	tw.Clock.Advance(time.Hour)
	c := tw.apiClient("script", u)

	tw.post(c, form("status", "active", "ping_only", "false", "last_update_id", "-1"))
	tw.Clock.Advance(8 * time.Second)
	tw.post(c, form("status", "idle", "ping_only", "false", "last_update_id", "-1"))
	tw.Clock.Advance(49 * time.Second)
	tw.post(c, form("status", "active", "ping_only", "true"))
	tw.sameRows(u)
}

// TestSessionSkewAheadLosesWrite: the handler's clock is 14 s ahead of
// the server's. The module reads the row, sees it 60 s old by its own
// clock while Zulip finds it 46 s old, forwards the ping, and takes the
// server's no-op for a write at its own now. The next ping, 60 s after the
// stored time, is answered locally though Zulip writes it.
//
//	t=0   ping active   Zulip writes the row at 0
//	t=46  ping active   the module reads active 0, at its 60 s: forwards;
//	                    no-op on Zulip, the module takes it for a write
//	t=60  ping active   Zulip writes (60 s > 55 s); the module: local
func TestSessionSkewAheadLosesWrite(t *testing.T) {
	tw := newTwin(t, Handler{})
	tw.h.SetClock(func() time.Time { return tw.Clock.Now().Add(14 * time.Second) })
	u := tw.addUser("polonius@zulip.example", zuliptest.RoleMember)
	tw.Clock.Advance(time.Hour)
	c := tw.apiClient("flutter", u)
	ping := form("status", "active", "ping_only", "true")

	tw.post(c, ping)
	tw.Clock.Advance(46 * time.Second)
	tw.post(c, ping)
	tw.sameRows(u)
	tw.Clock.Advance(14 * time.Second)
	tw.post(c, ping)
	tw.sameRows(u)
}

package caddymodule

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// TestGuestListChangesNothingForOthers: when the realm limits what guests
// can access (can_access_all_users_group), Zulip's GET /users lists every
// user to a restricted guest, those it cannot access as made-up entries:
// a fake email, "Unknown user", an active member (docs/zulip-presence.md,
// "Guests' user lists"). Such a list must change nothing the handler
// tells anyone else, nor anyone's eligibility for the shared view. Before
// the fix, guest1's list (fetched because guest1 joined after the last
// complete list) was merged into the host's directory: hamlet's legacy
// answer then keyed othello by his fake email, and guest2, listed there
// as a member, was served the whole realm's presence from the view, where
// Zulip gives a guest under CAN_ACCESS_ALL_USERS_GROUP_LIMITS_PRESENCE its
// own row alone.
// restrictedGuestsTwin is a twin in mode whose realms restrict what
// guests can access, presence included
// (CAN_ACCESS_ALL_USERS_GROUP_LIMITS_PRESENCE).
func restrictedGuestsTwin(t *testing.T, mode string) *twin {
	tw := newTwin(t, Handler{Mode: mode})
	tw.Both(func(r *zuliptest.Realm) {
		s := r.Settings()
		s.RestrictGuestUserAccess, s.CanAccessAllUsersGroupLimitsPresence = true, true
		r.SetSettings(s)
	})
	return tw
}

func TestGuestListChangesNothingForOthers(t *testing.T) {
	for _, mode := range []string{modeSession, modeShared} {
		t.Run(mode, func(t *testing.T) {
			tw := restrictedGuestsTwin(t, mode)
			hamlet := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
			othello := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
			guest2 := tw.addUser("guest2@zulip.example", zuliptest.RoleGuest)
			tw.Clock.Advance(time.Hour)
			clients := map[string]*client{}
			legacy := form("status", "active")
			slim := form("status", "active", "slim_presence", "true")
			check := func(who twinUser, f url.Values) {
				t.Helper()
				d, p, _ := tw.exchange(tw.h, clients[who.email], f)
				if err := sameAnswer(d, p, true); err != nil {
					t.Errorf("%s: %v\ndirect:  %s\nproxied: %s", who.email, err, d.body, p.body)
				}
				if strings.Contains(string(p.body), "user"+itoa(othello.id)+"@") {
					t.Errorf("%s was answered with a made-up email: %s", who.email, p.body)
				}
			}
			for _, u := range []twinUser{hamlet, othello, guest2} {
				clients[u.email] = tw.apiClient(u.email, u)
				check(u, legacy) // hamlet's poll fetches a complete list
			}
			guest1 := tw.addUser("guest1@zulip.example", zuliptest.RoleGuest)
			clients[guest1.email] = tw.apiClient(guest1.email, guest1)
			tw.Clock.Advance(10 * time.Second)
			for range 3 {
				check(guest1, legacy) // guest1 is in no list yet: its own is fetched
				check(hamlet, legacy)
				check(guest2, slim)
				check(guest2, legacy)
				check(othello, slim)
				tw.Clock.Advance(61 * time.Second)
			}
			tw.sameRows(hamlet, othello, guest1, guest2)
		})
	}
}

// spelledAs is an API client whose Basic credentials spell its email as
// email: Zulip accepts any spelling that Python's lower() maps to the
// account's delivery email.
func spelledAs(c *client, email string) *client {
	respell := func(h string) string {
		raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(h, "Basic "))
		_, key, _ := strings.Cut(string(raw), ":")
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(email+":"+key))
	}
	out := *c
	out.authD, out.authP = respell(c.authD), respell(c.authP)
	return &out
}

// TestBasicSpellingOfAnotherUser: "İng@…" is, to Python's lower(), the
// email of the account i̇ng@… (i and a combining dot), and to Go's
// ToLower the email of another account, ing@…. Users are keyed by what
// tells them apart to the server (the API key with the email), so a guest
// so spelled gets only its own row in shared mode, and a member so
// spelled never makes the other member's pings look like no-ops. Before,
// the guest read the whole realm from the view and the other member's
// writes were lost.
func TestBasicSpellingOfAnotherUser(t *testing.T) {
	t.Run("guest in shared mode", func(t *testing.T) {
		tw := restrictedGuestsTwin(t, modeShared)
		member := tw.addUser("ing@zulip.example", zuliptest.RoleMember)
		other := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
		guest := tw.addUser("i\u0307ng@zulip.example", zuliptest.RoleGuest)
		tw.Clock.Advance(time.Hour)
		mc, oc := tw.apiClient("member", member), tw.apiClient("othello", other)
		gc := spelledAs(tw.apiClient("guest", guest), "\u0130ng@zulip.example")
		slim := form("status", "active", "slim_presence", "true")
		for range 3 {
			tw.post(oc, slim)
			tw.post(mc, slim)
			tw.Clock.Advance(5 * time.Second)
		}
		for range 4 {
			tw.post(gc, slim) // fails if the guest sees more than its row
			tw.post(mc, slim)
			tw.Clock.Advance(20 * time.Second)
		}
	})
	t.Run("member in session mode", func(t *testing.T) {
		tw := newTwin(t, Handler{Mode: modeSession})
		victim := tw.addUser("ing@zulip.example", zuliptest.RoleMember)
		other := tw.addUser("i\u0307ng@zulip.example", zuliptest.RoleMember)
		tw.Clock.Advance(time.Hour)
		vc := tw.apiClient("victim", victim)
		oc := spelledAs(tw.apiClient("other", other), "\u0130ng@zulip.example")
		ping := form("status", "active", "ping_only", "true")
		tw.post(oc, ping)
		for range 24 {
			tw.Clock.Advance(10 * time.Second)
			tw.post(oc, ping)
			tw.Clock.Advance(5 * time.Second)
			tw.post(oc, ping)
			tw.Clock.Advance(5 * time.Second)
			tw.post(vc, ping)
			tw.sameRows(victim, other)
		}
	})
}

// TestAddressTakenOver: a user who changes their address frees the old one
// for a new account (do_change_user_delivery_email), so a browser session
// is keyed by its profile's delivery email and user id. Keyed by the
// address alone, the new account's session took over the old user's row
// mirror: the old user's pings were answered against the new one's row,
// a write lost; and a guest so taken over was served the whole realm from
// the view.
func TestAddressTakenOver(t *testing.T) {
	ping := form("status", "active", "ping_only", "true")
	slim := form("status", "active", "slim_presence", "true")
	for _, mode := range []string{modeSession, modeShared} {
		t.Run("writes/"+mode, func(t *testing.T) {
			tw, a := versionTwin(t, mode, zuliptest.FeatureLevelZulip11)
			ta := tw.browser("tabA", a)
			for range 6 {
				tw.post(ta, ping)
				tw.Clock.Advance(20 * time.Second)
			}
			tw.Both(func(r *zuliptest.Realm) { r.ChangeDeliveryEmail(a.id, "hamlet2@zulip.example") })
			b := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
			tb := tw.browser("tabB", b)
			for i := range 30 {
				tw.post(tb, ping)
				tw.Clock.Advance(7 * time.Second)
				tw.post(ta, ping)
				tw.Clock.Advance(time.Duration(5+i%4*4) * time.Second)
				tw.sameRows(a, b)
			}
		})
	}
	t.Run("guest/shared", func(t *testing.T) {
		tw := restrictedGuestsTwin(t, modeShared)
		hamlet := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
		othello := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
		guest := tw.addUser("guest@zulip.example", zuliptest.RoleGuest)
		tw.Clock.Advance(time.Hour)
		h, o, g := tw.apiClient("hamlet", hamlet), tw.browser("othello", othello), tw.browser("guest", guest)
		for range 3 {
			tw.post(h, slim)
			tw.post(o, slim)
			tw.post(g, slim)
			tw.post(g, ping)
			tw.Clock.Advance(20 * time.Second)
		}
		tw.Both(func(r *zuliptest.Realm) { r.ChangeDeliveryEmail(guest.id, "guest-old@zulip.example") })
		m := tw.addUser("guest@zulip.example", zuliptest.RoleMember)
		mb := tw.browser("member", m)
		tw.Clock.Advance(time.Minute)
		for range 30 {
			tw.post(h, slim)
			tw.post(mb, slim)
			tw.post(mb, ping)
			tw.post(g, slim) // fails if the guest is served more than its row
			tw.Clock.Advance(30 * time.Second)
		}
	})
}

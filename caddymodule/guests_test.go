package caddymodule

import (
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
func TestGuestListChangesNothingForOthers(t *testing.T) {
	for _, mode := range []string{modeSession, modeShared} {
		t.Run(mode, func(t *testing.T) {
			tw := newTwin(t, Handler{Mode: mode})
			tw.Both(func(r *zuliptest.Realm) {
				s := r.Settings()
				s.RestrictGuestUserAccess, s.CanAccessAllUsersGroupLimitsPresence = true, true
				r.SetSettings(s)
			})
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

package caddymodule

import (
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// TestHistoryLimitIgnoredBefore10: Zulip 9.x does not take
// history_limit_days (feature level 288, Zulip 10.0): it answers its
// default 14-day window and lists the parameter in
// ignored_parameters_unsupported. A converted answer, in session mode and
// from the shared view, must be that answer: the 14-day window, not the
// one the client asked for, and the list as the server gave it. On 10.x
// the parameter is taken, and the same polls get the narrower window.
// (Found by TestTwinProperty and TestSharedProperty drawing the version.)
func TestHistoryLimitIgnoredBefore10(t *testing.T) {
	for _, v := range []struct {
		name  string
		level int
	}{{"9.x", zuliptest.FeatureLevelZulip9}, {"10.x", zuliptest.FeatureLevelZulip10}} {
		for _, mode := range []string{modeSession, modeShared} {
			t.Run(v.name+"/"+mode, func(t *testing.T) {
				tw := newTwin(t, Handler{Mode: mode})
				tw.RunZulip(v.level)
				hamlet := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
				othello := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
				iago := tw.addUser("iago@zulip.example", zuliptest.RoleMember)
				tw.Clock.Advance(time.Hour)
				// othello was last connected three days ago: inside the
				// default window, outside a one- or two-day one.
				tw.Both(func(r *zuliptest.Realm) {
					then := r.Now().Add(-72 * time.Hour)
					r.SetPresenceRow(othello.id, then, then)
				})
				phone, terminal, script := tw.apiClient("phone", hamlet), tw.apiClient("terminal", iago), tw.apiClient("script", hamlet)
				polls := []struct {
					c *client
					f []string
				}{
					{phone, []string{"status", "active", "slim_presence", "true"}},
					{terminal, []string{"status", "idle"}},
					{phone, []string{"status", "active", "slim_presence", "true", "history_limit_days", "1"}},
					{terminal, []string{"status", "active", "history_limit_days", "2"}},
					{script, []string{"status", "idle", "slim_presence", "true", "history_limit_days", "30"}},
				}
				for round := range 6 {
					for _, p := range polls {
						d, _ := tw.post(p.c, form(p.f...))
						if d.status != 200 {
							t.Fatalf("round %d, %s %v: Zulip answered %d %s", round, p.c.name, p.f, d.status, d.body)
						}
						tw.sameRows(hamlet, othello, iago)
						tw.Clock.Advance(5 * time.Second)
					}
				}
			})
		}
	}
}

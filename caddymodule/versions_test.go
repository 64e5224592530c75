package caddymodule

import (
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// releasedVersions are the Zulip versions operators run, and main.
var releasedVersions = []struct {
	name  string
	level int
}{
	{"9.x", zuliptest.FeatureLevelZulip9},
	{"10.x", zuliptest.FeatureLevelZulip10},
	{"11.x", zuliptest.FeatureLevelZulip11},
	{"main", zuliptest.FeatureLevelMain},
}

// TestPingsAnsweredOnEveryVersion: Zulip 10.0 and later send date_joined
// to the minute; the handler must still learn whose a browser session is
// (GET /users/me, once per session) and answer the no-op pings of its
// tabs locally, on every version, in both modes, and no client request
// may cost more than one upstream request on average.
func TestPingsAnsweredOnEveryVersion(t *testing.T) {
	for _, v := range releasedVersions {
		for _, mode := range []string{modeSession, modeShared} {
			t.Run(v.name+"/"+mode, func(t *testing.T) {
				tw := newTwin(t, Handler{Mode: mode})
				tw.RunZulip(v.level)
				u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
				tw.Clock.Advance(time.Hour)
				// Three tabs of one browser session, each pinging once a
				// minute, 20 s apart.
				b := tw.browser("web", u)
				requests, local := 0, 0
				for range 30 {
					f := form("status", "idle", "ping_only", "true")
					if _, n := tw.post(b, f); n == 0 {
						local++
					}
					requests++
					tw.sameRows(u)
					tw.Clock.Advance(20 * time.Second)
				}
				got := tw.Proxied.DefaultRealm().Stats().Requests
				t.Logf("%d of %d pings answered locally; upstream %v", local, requests, got)
				if got["users_me"] > 1 {
					t.Errorf("GET /users/me asked %d times for one session", got["users_me"])
				}
				if local < requests/3 {
					t.Errorf("%d of %d no-op pings answered locally", local, requests)
				}
				var upstream int64
				for _, n := range got {
					upstream += n
				}
				if upstream > int64(requests) {
					t.Errorf("%d upstream requests for %d client requests (%v)", upstream, requests, got)
				}
			})
		}
	}
}

// TestServerMinFreqSetting: the handler configured with the server's
// PRESENCE_UPDATE_MIN_FREQ_SECONDS loses no write the server would store,
// and with 0 (every write stored) answers no ping locally.
func TestServerMinFreqSetting(t *testing.T) {
	for _, tc := range []struct {
		minFreq  time.Duration
		anyLocal bool
	}{{0, false}, {10 * time.Second, true}, {30 * time.Second, true}} {
		t.Run(tc.minFreq.String(), func(t *testing.T) {
			tw := newTwin(t, Handler{PresenceUpdateMinFreq: durationPtr(tc.minFreq)})
			st := zuliptest.DefaultServerSettings()
			st.PresenceUpdateMinFreq = tc.minFreq
			tw.SetServerSettings(st)
			u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
			tw.Clock.Advance(time.Hour)
			b := tw.browser("web", u)
			local := 0
			for i := range 60 {
				status := "active"
				if i%7 == 3 {
					status = "idle"
				}
				if _, n := tw.post(b, form("status", status, "ping_only", "true")); n == 0 {
					local++
				}
				tw.sameRows(u)
				tw.Clock.Advance(time.Duration(3+i%9) * time.Second)
			}
			t.Logf("%d of 60 pings answered locally", local)
			if (local > 0) != tc.anyLocal {
				t.Errorf("%d of 60 pings answered locally with min freq %v", local, tc.minFreq)
			}
		})
	}
}

package caddymodule

import (
	"bytes"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// TestCoalescesTabs: three tabs of one browser ping every 60 s out of
// phase. At most one write per 55 s reaches the server, and the server's
// rows stay those a direct run writes, idle→active and new_user_input
// transitions included. On Zulip 11.x, whose one-user read has only the
// legacy shape, a row read just after the user went idle still shows
// "active" with last_active_time (the legacy 70 s rule), which bounds
// last_connected_time by the older time: the two idle pings that follow
// (at 320 and 340 s) are forwarded as no-op writes, and nothing else is.
func TestCoalescesTabs(t *testing.T) {
	for _, v := range []struct {
		name       string
		level      int
		legacyRead []int // pings forwarded within 55 s because of the legacy read
	}{
		{"main", zuliptest.FeatureLevelMain, nil},
		{"11.x", zuliptest.FeatureLevelZulip11, []int{320, 340}},
	} {
		t.Run(v.name, func(t *testing.T) {
			st := zuliptest.DefaultServerSettings()
			st.FeatureLevel = v.level
			coalescesTabs(t, st, v.legacyRead)
		})
	}
}

func coalescesTabs(t *testing.T, st zuliptest.ServerSettings, legacyRead []int) {
	tw := newTwin(t, Handler{})
	tw.SetServerSettings(st)
	u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	// Zulip shows date_joined for a row never written; the gate cannot tell
	// it from a write in the very second the user joined, so let the user
	// join a while before the tabs open.
	tw.Clock.Advance(time.Hour)
	b := tw.browser("web", u)
	status := func(sec int) string {
		if sec >= 300 && sec < 600 {
			return "idle"
		}
		return "active"
	}
	// The user comes back at 600 and moves the mouse at 640 and 700: each
	// of these must reach the server at once, whatever the last write was.
	transitions := map[int]bool{600: true, 640: true, 700: true}
	for _, sec := range legacyRead {
		transitions[sec] = true
	}
	var forwarded []int
	sched := schedule{}
	for tab := range 3 {
		for sec := tab * 20; sec < 1200; sec += 60 {
			sched.at(sec, func() {
				input := sec == 640 || sec == 700
				f := form("status", status(sec), "ping_only", "true", "new_user_input", strconv.FormatBool(input))
				if _, n := tw.post(b, f); n > 0 {
					forwarded = append(forwarded, sec)
				}
				tw.sameRows(u)
			})
		}
	}
	sched.run(tw, 1200)

	last := -1000
	for _, sec := range forwarded {
		if transitions[sec] {
			delete(transitions, sec)
			continue
		}
		if sec-last <= 55 {
			t.Errorf("a write forwarded at %d s, %d s after the one at %d s", sec, sec-last, last)
		}
		last = sec
	}
	if len(transitions) > 0 {
		t.Errorf("transitions answered locally at %v", transitions)
	}
	// 60 pings in 20 minutes: one write a minute, plus the transitions.
	if n := len(forwarded) - len(legacyRead); n < 20 || n > 23 {
		t.Errorf("%d of 60 pings forwarded (%v), want about 20", n, forwarded)
	}
	d, p := tw.Direct.DefaultRealm().Stats(), tw.Proxied.DefaultRealm().Stats()
	if d.RowsWritten != p.RowsWritten {
		t.Errorf("rows written %d through the module, %d direct", p.RowsWritten, d.RowsWritten)
	}
}

// TestIdleToActiveIsForwarded: a tab that turns active right after
// another tab's idle write must still reach the server.
func TestIdleToActiveIsForwarded(t *testing.T) {
	tw := newTwin(t, Handler{})
	u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	b := tw.browser("web", u)
	for sec := 0; sec < 240; sec += 20 {
		tw.post(b, form("status", "idle", "ping_only", "true"))
		tw.Clock.Advance(20 * time.Second)
	}
	if _, n := tw.post(b, form("status", "active", "ping_only", "true")); n != 1 {
		t.Fatalf("the idle→active ping was answered locally")
	}
	tw.sameRows(u)
	if tw.Proxied.DefaultRealm().PresenceRow(u.id).LastActive.IsZero() {
		t.Fatal("the active write did not reach the server")
	}
}

// TestTrustEndsWithRevokedCredentials: once the trust window after a
// revocation or logout has passed, nothing is answered locally, and every
// request reaching the server gets its 401 unchanged.
func TestTrustEndsWithRevokedCredentials(t *testing.T) {
	tests := []struct {
		name   string
		client func(tw *twin, u twinUser) *client
		revoke func(tw *twin, c *client)
	}{
		{
			name:   "api key regenerated",
			client: func(tw *twin, u twinUser) *client { return tw.apiClient("flutter", u) },
			revoke: func(tw *twin, c *client) {
				tw.Both(func(r *zuliptest.Realm) { r.RegenerateAPIKey(c.user.id) })
			},
		},
		{
			name:   "browser logged out",
			client: func(tw *twin, u twinUser) *client { return tw.browser("web", u) },
			revoke: func(tw *twin, c *client) {
				tw.Direct.DefaultRealm().Logout(c.authD)
				tw.Proxied.DefaultRealm().Logout(c.authP)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tw := newTwin(t, Handler{})
			u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
			c := tc.client(tw, u)
			ping := form("status", "active", "ping_only", "true")
			tw.post(c, ping)
			tw.Clock.Advance(10 * time.Second)
			tc.revoke(tw, c)
			revokedAt := tw.Clock.Now()
			for range 40 {
				tw.Clock.Advance(7 * time.Second)
				d := tw.serveDirect(c.request(false, ping))
				p, n := tw.serveProxied(c.request(true, ping))
				if tw.Clock.Now().Sub(revokedAt) < 55*time.Second {
					continue // within the trust window a local answer is allowed
				}
				if n != 1 {
					t.Fatalf("%v after revocation: answered locally", tw.Clock.Now().Sub(revokedAt))
				}
				if err := sameAnswer(d, p, false); err != nil || d.status != http.StatusUnauthorized {
					t.Fatalf("%v: %v (direct %d %s, proxied %d %s)", tw.Clock.Now().Sub(revokedAt), err, d.status, d.body, p.status, p.body)
				}
				if got, want := p.header.Get("WWW-Authenticate"), d.header.Get("WWW-Authenticate"); got != want {
					t.Fatalf("WWW-Authenticate %q, want %q", got, want)
				}
			}
		})
	}
}

// TestSessionsAreIsolated: a guest restricted to some users and a member
// poll through the module; each gets exactly its own server answer, and a
// new session is never answered from another's trust.
func TestSessionsAreIsolated(t *testing.T) {
	tw := newTwin(t, Handler{})
	tw.Both(func(r *zuliptest.Realm) {
		s := r.Settings()
		s.RestrictGuestUserAccess, s.CanAccessAllUsersGroupLimitsPresence = true, true
		r.SetSettings(s)
	})
	member := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	guest := tw.addUser("polonius@zulip.example", zuliptest.RoleGuest)
	hidden := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
	tw.Both(func(r *zuliptest.Realm) { r.ShareAccess(guest.id, member.id) })
	mc, gc, hc := tw.apiClient("member", member), tw.apiClient("guest", guest), tw.apiClient("hidden", hidden)
	for range 5 {
		for _, c := range []*client{hc, mc, gc} {
			tw.post(c, form("status", "active", "slim_presence", "true"))
			tw.post(c, form("status", "active"))
		}
		tw.Clock.Advance(61 * time.Second)
	}
	// A second session of the same user starts untrusted.
	other := tw.browser("member's browser", member)
	if _, n := tw.post(other, form("status", "active", "ping_only", "true")); n != 1 {
		t.Fatal("a new session was answered from another session's trust")
	}
}

// TestNoCredentialsPassThrough: without credentials the server's own 401
// reaches the client.
func TestNoCredentialsPassThrough(t *testing.T) {
	tw := newTwin(t, Handler{})
	for _, path := range []string{apiPresencePath, jsonPresencePath} {
		mk := func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, "http://zulip.example"+path, strings.NewReader("status=active&ping_only=true"))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}
		d := tw.serveDirect(mk())
		p, n := tw.serveProxied(mk())
		if n != 1 || d.status != http.StatusUnauthorized {
			t.Fatalf("%s: upstream %d, direct status %d", path, n, d.status)
		}
		if err := sameAnswer(d, p, false); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
}

// TestDeactivatedUserLeavesConvertedPolls: deltas never report a
// deactivation, so a deactivated user may linger in converted answers, but
// for at most resync_interval.
func TestDeactivatedUserLeavesConvertedPolls(t *testing.T) {
	for _, slim := range []bool{false, true} {
		t.Run(map[bool]string{false: "legacy", true: "slim"}[slim], func(t *testing.T) {
			tw := newTwin(t, Handler{})
			viewer := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
			gone := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
			vc, gc := tw.apiClient("viewer", viewer), tw.apiClient("gone", gone)
			poll := form("status", "active")
			if slim {
				poll.Set("slim_presence", "true")
			}
			key := gone.email
			if slim {
				key = `"` + itoa(gone.id) + `"`
			} else {
				key = `"` + key + `"`
			}
			for range 3 {
				tw.post(gc, form("status", "active", "ping_only", "true"))
				tw.post(vc, poll)
				tw.Clock.Advance(60 * time.Second)
			}
			tw.Both(func(r *zuliptest.Realm) { r.Deactivate(gone.id) })
			deactivatedAt := tw.Clock.Now()
			for {
				d := tw.serveDirect(vc.request(false, poll))
				p, _ := tw.serveProxied(vc.request(true, poll))
				if bytes.Contains(d.body, []byte(key)) {
					t.Fatalf("the direct answer still lists the deactivated user: %s", d.body)
				}
				if !bytes.Contains(p.body, []byte(key)) {
					if err := sameAnswer(d, p, true); err != nil {
						t.Fatalf("after the user left: %v", err)
					}
					break
				}
				if tw.Clock.Now().Sub(deactivatedAt) > 10*time.Minute {
					t.Fatalf("deactivated user still listed %v later", tw.Clock.Now().Sub(deactivatedAt))
				}
				tw.Clock.Advance(60 * time.Second)
			}
		})
	}
}

// TestUserLeavesWindowAtOnce: a user whose last connection passes the
// 14-day edge between two polls is gone from the next converted answer.
func TestUserLeavesWindowAtOnce(t *testing.T) {
	tw := newTwin(t, Handler{})
	viewer := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	old := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
	edge := tw.Clock.Now().Add(-14*24*time.Hour + 30*time.Second)
	tw.Both(func(r *zuliptest.Realm) { r.SetPresenceRow(old.id, edge, edge) })
	vc := tw.apiClient("viewer", viewer)
	for _, poll := range []string{"slim", "legacy"} {
		f := form("status", "active")
		if poll == "slim" {
			f.Set("slim_presence", "true")
		}
		a, _ := tw.post(vc, f)
		if !bytes.Contains(a.body, []byte(old.email)) && !bytes.Contains(a.body, []byte(`"`+itoa(old.id)+`"`)) {
			t.Fatalf("%s: the user should still be in the window: %s", poll, a.body)
		}
	}
	tw.Clock.Advance(60 * time.Second)
	for _, poll := range []string{"slim", "legacy"} {
		f := form("status", "active")
		if poll == "slim" {
			f.Set("slim_presence", "true")
		}
		a, _ := tw.post(vc, f) // post checks the proxied answer equals the direct one
		if bytes.Contains(a.body, []byte(old.email)) || bytes.Contains(a.body, []byte(`"`+itoa(old.id)+`"`)) {
			t.Fatalf("%s: the user should have left the window: %s", poll, a.body)
		}
	}
}

// TestErrorsAreZulips: every error of spec §1.8 reaches the client exactly
// as the server wrote it.
func TestErrorsAreZulips(t *testing.T) {
	tw := newTwin(t, Handler{})
	u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	bot := tw.addUser("bot@zulip.example", zuliptest.RoleBot)
	c, bc := tw.apiClient("client", u), tw.apiClient("bot", bot)
	tw.post(c, form("status", "active", "ping_only", "true")) // a trusted session
	cases := []struct {
		c    *client
		body string
		want int
	}{
		{c, "", 400},
		{c, "status=foo", 400},
		{c, "status=Active&ping_only=true", 400},
		{c, "status=active&last_update_id=abc", 400},
		{c, "status=active&last_update_id=1.5", 400},
		{c, `status=active&last_update_id="5"`, 400},
		{c, "status=active&ping_only=1", 400},
		{c, "status=active&ping_only=True", 400},
		{c, "status=active&slim_presence=yes", 400},
		{c, "status=active&history_limit_days=1e3", 400},
		{c, "ping_only=true", 400},
		{bc, "status=active&ping_only=true", 400},
		{bc, "", 400},
		{c, "status=idle&foo=1", 200},
		{c, "status=idle&ping_only=true&foo=1", 200},
		{c, "status=idle&method=GET", 405},
	}
	for _, tc := range cases {
		f, err := parseQuery(tc.body)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := tw.post(tc.c, f)
		if d.status != tc.want {
			t.Errorf("%q: direct status %d, want %d", tc.body, d.status, tc.want)
		}
	}
}

// TestRateLimitReachesClient: the server's 429, with its Retry-After,
// reaches the client unchanged.
func TestRateLimitReachesClient(t *testing.T) {
	tw := newTwin(t, Handler{})
	tw.Both(func(r *zuliptest.Realm) {
		s := r.Settings()
		s.RateLimit = true
		r.SetSettings(s)
	})
	u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	c := tw.apiClient("script", u)
	f := form("status", "active", "last_update_id", "-1")
	for range 200 {
		tw.post(c, f)
	}
	d := tw.serveDirect(c.request(false, f))
	p, _ := tw.serveProxied(c.request(true, f))
	if d.status != http.StatusTooManyRequests {
		t.Fatalf("direct status %d, want 429", d.status)
	}
	if err := sameAnswer(d, p, false); err != nil {
		t.Fatal(err)
	}
	if p.header.Get("Retry-After") != d.header.Get("Retry-After") {
		t.Fatalf("Retry-After %q, want %q", p.header.Get("Retry-After"), d.header.Get("Retry-After"))
	}
}

// TestDevicesShareTheRow: Zulip's 55-second rule is per user, not per
// session. A user's phone, browser and terminal ping at random through the
// module; after every request the server's row must be what a direct run
// stores, and the module must still answer some pings itself.
func TestDevicesShareTheRow(t *testing.T) {
	tw := newTwin(t, Handler{})
	u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	devices := []*client{tw.apiClient("phone", u), tw.browser("browser", u), tw.apiClient("terminal", u)}
	rng := rand.New(rand.NewPCG(3, 9))
	local := 0
	for range 300 {
		tw.Clock.Advance(time.Duration(rng.IntN(25_000)) * time.Millisecond)
		c := devices[rng.IntN(len(devices))]
		status := []string{"active", "idle"}[rng.IntN(3)/2]
		if _, n := tw.post(c, form("status", status, "ping_only", "true")); n == 0 {
			local++
		}
		tw.sameRows(u)
	}
	t.Logf("%d of 300 pings answered locally", local)
	if local < 100 {
		t.Fatalf("only %d of 300 pings answered locally", local)
	}
}

// TestPassThroughWritesReachTheRow: a request the handler passes through
// untouched (here a script's unknown parameter) still writes the user's
// row on the server; the gate must not take a later no-op for a write.
func TestPassThroughWritesReachTheRow(t *testing.T) {
	tw := newTwin(t, Handler{})
	u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	script, browser, phone := tw.apiClient("script", u), tw.browser("browser", u), tw.apiClient("phone", u)
	rng := rand.New(rand.NewPCG(5, 1))
	for range 300 {
		tw.Clock.Advance(time.Duration(rng.IntN(20_000)) * time.Millisecond)
		switch rng.IntN(4) {
		case 0:
			tw.post(script, form("status", "active", "note", "cron"))
		case 1:
			tw.post(browser, form("status", "idle", "ping_only", "false", "last_update_id", "-1"))
		default:
			c := []*client{browser, phone}[rng.IntN(2)]
			tw.post(c, form("status", []string{"active", "idle"}[rng.IntN(2)], "ping_only", "true"))
		}
		tw.sameRows(u)
	}
}

package caddymodule

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// specStep is one step of a behavioural case: a realm change made on both
// sides, or a request of one client, checked against the direct answer
// under the shared-mode contract, then a pause.
type specStep struct {
	realm  func(r *zuliptest.Realm, u []twinUser)
	client int // index into the case's clients
	// form is a POST /users/me/presence body; "last_update_id=cursor"
	// stands for the id the client's previous answer gave it.
	form  string
	get   string // a GET path instead, such as /api/v1/users/2/presence
	after time.Duration
}

// TestSharedModeSpecCases runs the behavioural cases of
// docs/zulip-presence.md §7 (the numbers are the spec's) through a handler
// in shared mode, each a few times over so that the view is made, fed and
// used: every answer must be the server's under the shared-mode contract,
// and every row the same on both sides after every step.
func TestSharedModeSpecCases(t *testing.T) {
	old := func(u int, age time.Duration) func(r *zuliptest.Realm, us []twinUser) {
		return func(r *zuliptest.Realm, us []twinUser) {
			at := r.Now().Add(-age)
			r.SetPresenceRow(us[u].id, at, at)
		}
	}
	settings := func(change func(s *zuliptest.Settings)) func(r *zuliptest.Realm, _ []twinUser) {
		return func(r *zuliptest.Realm, _ []twinUser) {
			s := r.Settings()
			change(&s)
			r.SetSettings(s)
		}
	}
	invisible := func(u int, on bool) func(r *zuliptest.Realm, us []twinUser) {
		return func(r *zuliptest.Realm, us []twinUser) { r.SetPresenceEnabled(us[u].id, !on) }
	}
	// Clients 0–3 are members' phones (Basic), 4 a member's browser, 5 a
	// guest's phone, 6 a bot's script, 7 a member's multipart script.
	cases := []struct {
		name  string
		steps []specStep
	}{
		{"01 invalid status", []specStep{{client: 0, form: "status=foo"}, {client: 4, form: "status=foo&slim_presence=true"}}},
		{"02 ping only", []specStep{{client: 0, form: "status=active&ping_only=true"}, {client: 4, form: "status=idle&ping_only=true"}}},
		{"03-04 legacy idle, then slim keys", []specStep{
			{realm: old(1, 20*24*time.Hour)}, {client: 0, form: "status=idle"}, {client: 1, form: "status=idle&slim_presence=true", after: time.Second},
		}},
		{"05, 27 active vs idle, legacy derivation", []specStep{
			{client: 0, form: "status=idle&slim_presence=true"}, {client: 0, form: "status=active", after: 60 * time.Second},
			{client: 1, form: "status=idle", after: 140 * time.Second}, {client: 2, form: "status=active"},
		}},
		{"16 NULL timestamps", []specStep{
			{realm: func(r *zuliptest.Realm, us []twinUser) {
				r.SetPresenceRow(us[2].id, r.Now().Add(-time.Hour), time.Time{})
			}},
			{client: 0, form: "status=active"}, {client: 1, form: "status=active&slim_presence=true"},
		}},
		{"06-07 empty rows", []specStep{{client: 2, form: "status=active&slim_presence=true&history_limit_days=0"}, {client: 3, form: "status=active"}}},
		{"08-13 last_update_id sequence", []specStep{
			{client: 4, form: "status=active&last_update_id=-1"}, {client: 4, form: "status=active&last_update_id=0"},
			{client: 4, form: "status=active&last_update_id=1"}, {client: 4, form: "status=active&last_update_id=999999"},
			{client: 4, form: "status=active&last_update_id=-5"}, {client: 4, form: "status=active&slim_presence=false&last_update_id=2"},
		}},
		{"08-13 a web app tab's cursor", []specStep{
			{client: 4, form: "status=active&last_update_id=cursor"}, {client: 1, form: "status=idle&slim_presence=true", after: 61 * time.Second},
			{client: 4, form: "status=active&last_update_id=cursor"}, {client: 4, form: "status=idle&last_update_id=cursor&ping_only=true"},
			{client: 4, form: "status=idle&last_update_id=cursor", after: 5 * time.Second},
		}},
		{"14 history_limit_days", []specStep{
			{realm: old(2, 10*24*time.Hour)},
			{client: 0, form: "status=active&slim_presence=true&history_limit_days=1"}, {client: 0, form: "status=active&slim_presence=true&history_limit_days=30"},
			{client: 0, form: "status=active&history_limit_days=365000"}, {client: 0, form: "status=active&history_limit_days=-1"},
		}},
		{"15 default window", []specStep{{realm: old(3, 15*24*time.Hour)}, {client: 0, form: "status=active&slim_presence=true"}}},
		{"17-18 invisible user's POST, then enabled again", []specStep{
			{realm: invisible(0, true)}, {client: 0, form: "status=active&slim_presence=true"}, {client: 1, form: "status=active", after: 70 * time.Second},
			{realm: invisible(0, false)}, {client: 1, form: "status=active&slim_presence=true"},
		}},
		{"19-20 disable with recent and old rows", []specStep{
			{realm: old(2, 30*24*time.Hour)}, {realm: invisible(1, true)}, {realm: invisible(2, true)},
			{client: 0, form: "status=active&slim_presence=true"}, {client: 4, form: "status=active&last_update_id=1"},
		}},
		{"21 guest restriction", []specStep{
			{realm: settings(func(s *zuliptest.Settings) {
				s.RestrictGuestUserAccess, s.CanAccessAllUsersGroupLimitsPresence = true, true
			})},
			{client: 5, form: "status=active&slim_presence=true"}, {client: 0, form: "status=active&slim_presence=true"},
			{realm: func(r *zuliptest.Realm, us []twinUser) { r.ShareAccess(us[5].id, us[1].id) }},
			{client: 5, form: "status=active"}, {client: 1, form: "status=active&slim_presence=true"},
		}},
		{"22 bots", []specStep{{client: 6, form: "status=active"}, {client: 6, form: "status=active&slim_presence=true&ping_only=true"}}},
		{"23-24 write throttling", []specStep{
			{client: 0, form: "status=active&ping_only=true", after: 30 * time.Second}, {client: 0, form: "status=active&ping_only=true", after: 26 * time.Second},
			{client: 0, form: "status=idle&ping_only=true"},
		}},
		{"25 mixed", []specStep{
			{client: 7, form: "status=active&slim_presence=true&new_user_input=true"}, {client: 4, form: "status=idle&last_update_id=3&new_user_input=false"},
			{client: 2, form: "status=active", after: 2 * time.Second},
		}},
		{"26, 29 single-user GET", []specStep{{get: "/api/v1/users/2/presence"}, {get: "/api/v1/users/999/presence"}, {get: "/api/v1/users/user1@zulip.example/presence"}}},
		{"28 first idle creates half a row", []specStep{{client: 3, form: "status=idle&ping_only=true"}, {client: 0, form: "status=idle&slim_presence=true"}}},
		{"30 ignored params", []specStep{{client: 0, form: "status=idle&slim_presence=true&foo=1"}, {client: 4, form: "status=active&last_update_id=1&zzz=2&aaa=3"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tw, users, clients := sharedRealm(t, Handler{}, 4)
			guest := tw.addUser("guest@zulip.example", zuliptest.RoleGuest)
			bot := tw.addUser("bot@zulip.example", zuliptest.RoleBot)
			users = append(users, guest, bot)
			clients = append(clients, tw.browser("browser", users[0]), tw.apiClient("guest", guest), tw.apiClient("bot", bot))
			script := tw.apiClient("script", users[1])
			script.multipart = true
			clients = append(clients, script)
			// Each case runs three times a minute apart, after a round
			// of the phones, so that the view exists and is fed.
			cursors := make([]int64, len(clients))
			for round := range 3 {
				for _, c := range clients[:4] {
					tw.postShared(c, form("status", "active", "slim_presence", "true"), 10*time.Second)
				}
				for i, s := range tc.steps {
					runSpecStep(t, tw, users, clients, cursors, s, fmt.Sprintf("round %d step %d", round, i))
				}
				tw.Clock.Advance(time.Minute)
			}
		})
	}
}

func runSpecStep(t *testing.T, tw *twin, users []twinUser, clients []*client, cursors []int64, s specStep, where string) {
	t.Helper()
	switch {
	case s.realm != nil:
		tw.Both(func(r *zuliptest.Realm) { s.realm(r, users) })
	case s.get != "":
		c := clients[s.client]
		req := func(proxied bool) *http.Request {
			r := httptest.NewRequest(http.MethodGet, "http://zulip.example"+s.get, nil)
			r.Header = c.request(proxied, nil).Header.Clone()
			r.Header.Del("Content-Type")
			return r
		}
		d := tw.serveDirect(req(false))
		p, _ := tw.serveProxied(req(true))
		if d.status != p.status || !bytes.Equal(d.body, p.body) {
			t.Fatalf("%s: GET %s: direct %d %s, proxied %d %s", where, s.get, d.status, d.body, p.status, p.body)
		}
	default:
		f, err := parseQuery(s.form)
		if err != nil {
			t.Fatal(err)
		}
		if f.Get("last_update_id") == "cursor" {
			if cursors[s.client] == 0 {
				cursors[s.client] = tw.Direct.DefaultRealm().LastUpdateID() // the page load's
			}
			f.Set("last_update_id", itoa(cursors[s.client]))
		}
		d, _ := tw.postShared(clients[s.client], f, 10*time.Second)
		if id, ok := cursorIn(d.body); ok && f.Get("ping_only") != "true" {
			cursors[s.client] = id
		}
	}
	tw.sameRows(users...)
	tw.Clock.Advance(s.after)
}

package caddymodule

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// postAs sends the client's request to both sides with extra request
// headers, and returns both answers and how many presence requests
// reached the proxied server.
func (tw *twin) postAs(c *client, f url.Values, hdr http.Header) (d, p answer, n int) {
	tw.t.Helper()
	rd, rp := c.request(false, f), c.request(true, f)
	for k, v := range hdr {
		rd.Header[k], rp.Header[k] = v, v
	}
	d = tw.serveDirect(rd)
	p, n = tw.serveProxied(rp)
	return d, p, n
}

// TestLocalPingHeadersPerSession: Zulip's answers vary with the request
// (Vary: Accept-Language, Cookie; Content-Language from the
// django_language cookie or Accept-Language), so a ping answered locally
// carries what the server gave this session's last answer, never another
// user's (issue 13, point 8).
func TestLocalPingHeadersPerSession(t *testing.T) {
	for _, mode := range []string{modeSession, modeShared} {
		t.Run(mode, func(t *testing.T) {
			tw := newTwin(t, Handler{Mode: mode})
			tw.Clock.Advance(time.Hour)
			de := tw.apiClient("de", tw.addUser("hamlet@zulip.example", zuliptest.RoleMember))
			fr := tw.apiClient("fr", tw.addUser("othello@zulip.example", zuliptest.RoleMember))
			langs := map[*client]http.Header{
				de: {"Accept-Language": {"de-DE,de;q=0.9"}},
				fr: {"Accept-Language": {"fr"}},
			}
			local := map[*client]int{}
			for i := range 12 {
				// Alternate who pings first, so that each user's local
				// answers follow the other's forwarded one.
				order := []*client{de, fr}
				if i%2 == 1 {
					order = []*client{fr, de}
				}
				for _, c := range order {
					d, p, n := tw.postAs(c, form("status", "active", "ping_only", "true"), langs[c])
					if err := sameAnswer(d, p, false); err != nil {
						t.Fatalf("%s ping %d: %v", c.name, i, err)
					}
					for _, k := range []string{"Content-Language", "Vary", "Cache-Control", "Content-Type"} {
						if dv, pv := d.header.Values(k), p.header.Values(k); !slices.Equal(dv, pv) {
							t.Fatalf("%s ping %d (%d upstream): %s: direct %q, proxied %q", c.name, i, n, k, dv, pv)
						}
					}
					if n == 0 {
						local[c]++
					}
				}
				tw.Clock.Advance(10 * time.Second)
			}
			if local[de] == 0 || local[fr] == 0 {
				t.Fatalf("local answers: de %d, fr %d; want some of each", local[de], local[fr])
			}
			t.Logf("local answers: de %d, fr %d of 12 each", local[de], local[fr])
		})
	}
}

// TestLocalPingHeadersPerLanguage: the clients of one user share its API
// key, so one session, but not a language: a phone set to German and a
// script asking nothing get their own Content-Language from Zulip, and a
// ping answered locally carries the one the server gave a request asking
// the same.
func TestLocalPingHeadersPerLanguage(t *testing.T) {
	for _, mode := range []string{modeSession, modeShared} {
		t.Run(mode, func(t *testing.T) {
			tw := newTwin(t, Handler{Mode: mode})
			tw.Clock.Advance(time.Hour)
			u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
			phone, script, browser := tw.apiClient("phone", u), tw.apiClient("script", u), tw.apiClient("cookie", u)
			langs := map[*client]http.Header{
				phone:   {"Accept-Language": {"de-DE,de;q=0.9"}},
				script:  {},
				browser: {"Cookie": {"csrftoken=x; django_language=fr"}, "Accept-Language": {"de"}},
			}
			local := map[*client]int{}
			for i := range 12 {
				for _, c := range []*client{phone, phone, script, script, browser} {
					d, p, n := tw.postAs(c, form("status", "active", "ping_only", "true"), langs[c])
					if err := sameAnswer(d, p, false); err != nil {
						t.Fatalf("%s ping %d: %v", c.name, i, err)
					}
					if dv, pv := d.header.Values("Content-Language"), p.header.Values("Content-Language"); !slices.Equal(dv, pv) {
						t.Fatalf("%s ping %d (%d upstream): Content-Language: direct %q, proxied %q", c.name, i, n, dv, pv)
					}
					if n == 0 {
						local[c]++
					}
				}
				tw.Clock.Advance(10 * time.Second)
			}
			if local[phone] == 0 || local[script] == 0 {
				t.Fatalf("local answers: phone %d, script %d; want some of each", local[phone], local[script])
			}
			t.Logf("local answers: phone %d, script %d, browser %d", local[phone], local[script], local[browser])
		})
	}
}

// rateLimitedTwin is a twin whose two servers enforce Zulip's rate limit,
// with one user an hour into the realm's life.
func rateLimitedTwin(t *testing.T, mode string) (*twin, twinUser) {
	tw := newTwin(t, Handler{Mode: mode})
	tw.Both(func(r *zuliptest.Realm) {
		s := r.Settings()
		s.RateLimit = true
		r.SetSettings(s)
	})
	u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	tw.Clock.Advance(time.Hour)
	return tw, u
}

// TestNoEarlyRateLimit: Zulip counts the handler's own requests (GET
// /users/me, row reads, GET /users) against the user's 200 a minute. A
// client driven near and past the limit, with the handler reading the
// user's row often, never gets a 429 through the handler that it would
// not have got from Zulip directly (issue 13, point 9; design §7.6).
func TestNoEarlyRateLimit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		json   bool
		period time.Duration // between the client's requests
		polls  int           // one request in polls is a poll
	}{
		{"api/near", false, 320 * time.Millisecond, 7}, // 188 a minute
		{"api/past", false, 200 * time.Millisecond, 7}, // 300 a minute
		{"json/past", true, 150 * time.Millisecond, 7}, // 400 a minute
		// Mostly polls, which reach the server: the handler's own
		// requests would take the client to the limit early.
		{"api/polls-near", false, 300 * time.Millisecond, 2}, // 200 a minute
		{"json/polls-past", true, 200 * time.Millisecond, 2}, // 300 a minute
	} {
		t.Run(tc.name, func(t *testing.T) {
			tw, u := rateLimitedTwin(t, modeSession)
			c := tw.apiClient("api", u)
			if tc.json {
				c = tw.browser("web", u)
			}
			var early, direct429, proxied429, local int
			for i := range 1500 {
				// Mostly no-op pings (which the handler may answer
				// locally), with a poll and a reported input now and
				// then (which it must forward), so that the row is read
				// again and again.
				f := form("status", "idle", "ping_only", "true")
				switch {
				case i%tc.polls == 1:
					f = form("status", "active", "last_update_id", "-1")
				case i%11 == 5:
					f = form("status", "active", "ping_only", "true", "new_user_input", "true")
				}
				d, p, n := tw.postAs(c, f, nil)
				if d.status == http.StatusTooManyRequests {
					direct429++
				}
				if p.status == http.StatusTooManyRequests {
					proxied429++
					if d.status != http.StatusTooManyRequests {
						early++
						t.Errorf("request %d (%s) at %s: 429 through the handler, %d directly", i, f.Encode(), tw.Clock.Now().Format(time.TimeOnly), d.status)
					}
				}
				if n == 0 && p.status == http.StatusOK {
					local++
				}
				tw.Clock.Advance(tc.period)
			}
			got := tw.Proxied.DefaultRealm().Stats().Requests
			t.Logf("1500 requests: direct 429s %d, proxied 429s %d, early %d; answered locally %d; upstream %v", direct429, proxied429, early, local, got)
		})
	}
}

// TestNoSpendingNearTheLimit: a browser session whose tab has spent
// nearly all of its user's 200 requests a minute on incremental polls
// (forwarded, so nothing saved) pings; answering that ping locally needs
// the session's user and row (GET /users/me, a row read), two requests
// Zulip would count. With so little left, the handler must not make them
// (design §7.6): the ping is forwarded, and the tab's last requests of the
// minute succeed through the handler as they do directly. Without the
// reserve the handler spends them and the tab gets its 429s early.
func TestNoSpendingNearTheLimit(t *testing.T) {
	for _, mode := range []string{modeSession, modeShared} {
		t.Run(mode, func(t *testing.T) {
			tw, u := rateLimitedTwin(t, mode)
			c := tw.browser("web", u)
			var early, direct429 int
			var upstream int
			send := func(i int, f url.Values) {
				d, p, n := tw.postAs(c, f, nil)
				upstream += n
				if d.status == http.StatusTooManyRequests {
					direct429++
				}
				if p.status == http.StatusTooManyRequests && d.status != http.StatusTooManyRequests {
					early++
					t.Errorf("request %d (%s): 429 through the handler, %d directly", i, f.Encode(), d.status)
				}
				tw.Clock.Advance(200 * time.Millisecond)
			}
			// 196 polls in 39 s: each writes and reaches the server.
			for i := range 196 {
				send(i, form("status", "active", "last_update_id", "-1"))
			}
			// Two pings the handler could answer locally only after
			// learning the user and reading the row, then the polls
			// that fill the minute's 200.
			send(196, form("status", "idle", "ping_only", "true"))
			send(197, form("status", "idle", "ping_only", "true"))
			send(198, form("status", "active", "last_update_id", "-1"))
			send(199, form("status", "active", "last_update_id", "-1"))
			if direct429 != 0 {
				t.Fatalf("%d requests were refused directly; the scenario is to stay within the limit", direct429)
			}
			t.Logf("200 requests in 40 s: upstream %d (%v); early 429s %d", upstream, tw.Proxied.DefaultRealm().Stats().Requests, early)
		})
	}
}

// TestLongLanguageIsForwarded: a header template is kept with the
// language its request asked for, so that request's strings live as long
// as the template; one asking more than maxLanguageBytes gets no
// template, and its pings go to the server.
func TestLongLanguageIsForwarded(t *testing.T) {
	tw := newTwin(t, Handler{})
	u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	tw.Clock.Advance(time.Hour)
	c := tw.apiClient("phone", u)
	long := http.Header{"Accept-Language": {"de;q=0.9, " + strings.Repeat("x-abcdefgh, ", 30) + "en"}}
	short := http.Header{"Accept-Language": {"de"}}
	for _, tc := range []struct {
		name   string
		h      http.Header
		locals bool
	}{{"long", long, false}, {"short", short, true}} {
		local := 0
		for range 6 {
			d, p, n := tw.postAs(c, form("status", "active", "ping_only", "true"), tc.h)
			if err := sameAnswer(d, p, false); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if n == 0 {
				local++
			}
			tw.Clock.Advance(5 * time.Second)
		}
		if (local > 0) != tc.locals {
			t.Errorf("%s Accept-Language: %d of 6 pings answered locally", tc.name, local)
		}
	}
}

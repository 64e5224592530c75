package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zulip-presence/caddy-zulip-presence/caddymodule"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// TestGateAcrossSessions is the lost write the benchmark found in R2k and
// R10k while the write gate (cache/gate.go) kept its times per session:
// Zulip's 55 s rule is per user row, so a browser write that Zulip ignores
// because the user's phone wrote 30 s earlier must not count as a write,
// or the gate answers locally the write Zulip makes 30 s later. Since the
// gate mirrors each user's row, it passes; it stays as a regression test.
func TestGateAcrossSessions(t *testing.T) {
	tw := newTwin(Spec{Name: "gate", Minutes: 1})
	id := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	var phone, browser [numSides]http.Header
	for s := range numSides {
		sid, csrf := tw.realm(side(s)).NewSession(id)
		phone[s] = http.Header{"Authorization": {tw.realm(side(s)).BasicAuth(id)}}
		browser[s] = http.Header{"Cookie": {"sessionid=" + sid + "; csrftoken=" + csrf}, "X-Csrftoken": {csrf}}
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &caddymodule.Handler{CacheName: t.Name()}
	if err := quietly(func() error { return h.Provision(ctx) }); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	h.SetClock(tw.clk.Now)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		tw.srv[sideModule].ServeHTTP(w, r)
		return nil
	})
	ping := func(path string, hdr [numSides]http.Header) {
		for s := range numSides {
			r := httptest.NewRequest(http.MethodPost, "http://zulip.example"+path, strings.NewReader("status=active&ping_only=true"))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			for k, v := range hdr[s] {
				r.Header[k] = v
			}
			if side(s) == sideDirect {
				tw.srv[sideDirect].ServeHTTP(httptest.NewRecorder(), r)
			} else if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
				t.Fatal(err)
			}
		}
	}
	ping(apiPresencePath, phone) // t=0: the phone writes the row
	tw.clk.Advance(30 * time.Second)
	ping(jsonPresencePath, browser) // t=30: a no-op for Zulip, recorded by the gate
	tw.clk.Advance(30 * time.Second)
	ping(jsonPresencePath, browser) // t=60: Zulip writes; the module answers locally
	d, m := tw.realm(sideDirect).PresenceRow(id), tw.realm(sideModule).PresenceRow(id)
	if !d.LastConnected.Equal(m.LastConnected) {
		t.Fatalf("lost write: last_connected_time %s direct, %s through the module", d.LastConnected.Format(time.TimeOnly), m.LastConnected.Format(time.TimeOnly))
	}
}

// TestPassThroughWrites is the lost write the full benchmark found in R10k
// with the first per-user gate: a user's script sends a parameter the
// handler does not know, so its requests pass through untouched, and the
// row mirror (cache/row.go) did not hear of their writes. A browser poll
// forwarded 8 s after such a write is a no-op for Zulip, but the mirror,
// whose last known write was more than 55 s older, took it for a write
// that surely happened; 50 s later it answered locally a ping Zulip
// writes. The schedule is the one traced in R10k (user 3688). Pass-through
// writes now count as writes of unknown outcome; it stays as a regression
// test.
func TestPassThroughWrites(t *testing.T) {
	spec := Spec{Name: "passthrough", Minutes: 6}
	tw := newTwin(spec)
	wl := newWorkload(spec, 1, tw)
	u := &simUser{id: tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)}
	for s := range numSides {
		u.basic[s] = tw.realm(side(s)).BasicAuth(u.id)
	}
	script := &client{wl: wl, kind: KindScript, user: u, alive: true, script: scriptStyle{extra: true}}
	web := &client{wl: wl, kind: KindWeb, user: u, alive: true}
	for s := range numSides {
		web.session[s], web.csrf[s] = tw.realm(side(s)).NewSession(u.id)
	}
	for sec := 40; sec < 360; sec += 60 {
		wl.at(sec, func() { script.send(nil, form("status", "active", "note", "cron")) })
	}
	for i, offset := range []int{43, 45, 48} {
		tb := &tab{}
		web.tabs = append(web.tabs, tb)
		status := map[bool]string{true: "active", false: "idle"}[i == 2]
		wl.at(offset, func() {
			wl.loadPage(tb)
			web.send(tb, form("status", status, "ping_only", "true", "new_user_input", "false"))
		})
		for sec := offset + 60; sec < 300; sec += 60 {
			wl.at(sec, func() {
				web.send(tb, form("status", status, "ping_only", "false", "new_user_input", strconv.FormatBool(i == 2)))
			})
		}
	}
	wl.at(338, func() {
		web.send(web.tabs[2], form("status", "active", "ping_only", "true", "new_user_input", "true"))
	})
	if err := tw.run(wl, func(int) {}); err != nil {
		t.Fatal(err)
	}
	if r := tw.res; r.LostWrites != 0 || r.Violations != 0 {
		t.Fatalf("%d lost writes, %d fidelity violations; first: %v", r.LostWrites, r.Violations, r.Samples)
	}
}

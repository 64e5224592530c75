package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// TestUpstreamErrorsReachClient: a 5xx answer to a converted poll or a
// forwarded ping reaches the client exactly as the upstream wrote it, and
// a transport failure comes back as the same error plain reverse_proxy
// would return. Neither is learned as a write.
func TestUpstreamErrorsReachClient(t *testing.T) {
	tw := newTwin(t, Handler{})
	u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	c := tw.apiClient("flutter", u)
	const body = `{"result":"error","msg":"Internal server error"}` + "\n"
	broken := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "yes")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte(body))
		return nil
	})
	for _, f := range []map[string]string{{"slim_presence": "true"}, {"ping_only": "true"}, {}} {
		vals := form("status", "active")
		for k, v := range f {
			vals.Set(k, v)
		}
		rec := httptest.NewRecorder()
		if err := tw.h.ServeHTTP(rec, c.request(true, vals), broken); err != nil {
			t.Fatal(err)
		}
		if rec.Code != http.StatusBadGateway || rec.Body.String() != body || rec.Header().Get("X-Upstream") != "yes" {
			t.Fatalf("%v: got %d %q %v", vals, rec.Code, rec.Body.String(), rec.Header())
		}
	}
	down := errors.New("dial tcp: connection refused")
	failing := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return down })
	for _, f := range []string{"true", "false"} {
		err := tw.h.ServeHTTP(httptest.NewRecorder(), c.request(true, form("status", "active", "ping_only", f)), failing)
		if !errors.Is(err, down) {
			t.Fatalf("ping_only=%s: error %v, want the upstream's", f, err)
		}
	}
	// None of that was a write: the next ping must still be forwarded.
	if _, n := tw.serveProxied(c.request(true, form("status", "active", "ping_only", "true"))); n != 1 {
		t.Fatal("a failed write was taken as done")
	}
}

// TestEvictionCostsOnlyRequests: with a store far too small for the
// sessions, ristretto evicts and drops entries; every answer must still be
// the server's, and no write may be lost.
func TestEvictionCostsOnlyRequests(t *testing.T) {
	tw := newTwin(t, Handler{CacheSize: 1 << 20})
	var clients []*client
	var users []twinUser
	for i := range 40 {
		u := tw.addUser(fmt.Sprintf("user%d@zulip.example", i), zuliptest.RoleMember)
		users = append(users, u)
		clients = append(clients, tw.apiClient(u.email, u))
	}
	for minute := range 10 {
		// A flood of one-off credentials competes for the store.
		for i := range 150 {
			u := tw.addUser(fmt.Sprintf("flood%d-%d@zulip.example", minute, i), zuliptest.RoleMember)
			tw.post(tw.apiClient(u.email, u), form("status", "idle", "ping_only", "true"))
		}
		for i, c := range clients {
			switch i % 3 {
			case 0:
				tw.post(c, form("status", "active", "slim_presence", "true"))
			case 1:
				tw.post(c, form("status", "active"))
			}
			tw.post(c, form("status", "active", "ping_only", "true"))
			tw.Clock.Advance(time.Second)
		}
		tw.Clock.Advance(20 * time.Second)
	}
	tw.sameRows(users...)
	if d, p := tw.Direct.DefaultRealm().Stats(), tw.Proxied.DefaultRealm().Stats(); d.RowsWritten != p.RowsWritten {
		t.Fatalf("rows written %d through the module, %d direct", p.RowsWritten, d.RowsWritten)
	}
	if used := tw.h.store.Used(); used > 1<<20 {
		t.Fatalf("the store holds %d bytes, over its 1MiB budget", used)
	}
}

package caddymodule

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// answeringUpstream is a simulated Zulip that keeps its answer to every
// presence POST, by request body, so that a test can tell what the server
// answered the request a client sent.
type answeringUpstream struct {
	sim *zuliptest.Server
	srv *httptest.Server
	mu  sync.Mutex
	ans map[string][]string // request body → the answers given to it, in order
}

func newAnsweringUpstream(t *testing.T) *answeringUpstream {
	u := &answeringUpstream{sim: zuliptest.New(nil), ans: map[string][]string{}}
	u.sim.SetGzipLevel(0)
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		u.sim.ServeHTTP(rec, r)
		if r.Method == http.MethodPost {
			u.mu.Lock()
			u.ans[string(body)] = append(u.ans[string(body)], fmt.Sprintf("%d %s", rec.Code, rec.Body.String()))
			u.mu.Unlock()
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// answered reports whether the server gave this answer to this body.
func (u *answeringUpstream) answered(body, answer string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, a := range u.ans[body] {
		if a == answer {
			return true
		}
	}
	return false
}

// TestIntegrationShadowMode: through real Caddy in shadow mode, every
// client answer is one the server gave that very request, byte for byte,
// and the healthy handler, comparing what it would have answered, finds
// no mismatch.
func TestIntegrationShadowMode(t *testing.T) {
	up := newAnsweringUpstream(t)
	realm := up.sim.DefaultRealm()
	users := []zuliptest.User{
		realm.AddUser("hamlet@zulip.example", "Hamlet", zuliptest.RoleMember),
		realm.AddUser("iago@zulip.example", "Iago", zuliptest.RoleMember),
	}
	tester := caddytest.NewTester(t)
	tester.InitServer(globalOptions+fmt.Sprintf(`
http://:9080 {
	zulip_presence {
		shadow
		cache_name %s
	}
	reverse_proxy %s
}
`, t.Name(), up.srv.Listener.Addr().String()), "caddyfile")
	before := verifyCounts()
	bodies := []string{
		"status=active&ping_only=true",
		"status=active&slim_presence=true",
		"status=active",
		"status=idle&ping_only=true",
		"status=active&slim_presence=true&history_limit_days=30",
	}
	for round := range 6 {
		for i, body := range bodies {
			u := users[(round+i)%len(users)]
			r := presenceReq(t, 9080, realm.BasicAuth(u.ID), "", strings.NewReader(body), "application/x-www-form-urlencoded")
			status, text := do(t, tester, r)
			if !up.answered(body, fmt.Sprintf("%d %s", status, text)) {
				t.Fatalf("round %d, %s: the client got %d %s, which the server never answered it", round, body, status, text)
			}
		}
	}
	got := countsSince(before)
	t.Logf("verify_total: %v", got)
	if got[verifyMismatch] != 0 {
		t.Errorf("%v mismatches: %+v", got[verifyMismatch], recentMismatches())
	}
	if got[verifyMatch] == 0 {
		t.Error("nothing was compared")
	}
}

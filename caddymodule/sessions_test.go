package caddymodule

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// The tests in this file each hold one defect found by trying the handler
// as an adversary would; each failed before its fix.

// serveCounting runs r through the handler in front of next (the proxied
// server when nil) and counts every request that reached it, the
// handler's own reads included. A panic of the handler is returned.
func (tw *twin) serveCounting(r *http.Request, next http.Handler) (a answer, upstream int, panicked any) {
	if next == nil {
		next = tw.Proxied
	}
	var n atomic.Int64
	counting := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		n.Add(1)
		next.ServeHTTP(w, r)
		return nil
	})
	rec := httptest.NewRecorder()
	func() {
		defer func() { panicked = recover() }()
		if err := tw.h.ServeHTTP(rec, r, counting); err != nil {
			tw.t.Fatalf("ServeHTTP: %v", err)
		}
	}()
	return answer{rec.Code, rec.Header(), rec.Body.Bytes()}, int(n.Load()), panicked
}

// established is a user who joined long ago and a client whose session the
// server accepted and whose row the handler has read.
func (tw *twin) established(email string) (twinUser, *client) {
	tw.t.Helper()
	u := tw.addUser(email, zuliptest.RoleMember)
	tw.Clock.Advance(time.Hour) // Zulip shows date_joined for a NULL time
	c := tw.apiClient(email, u)
	tw.establish(c)
	return u, c
}

// establish has the server accept the client's session and the handler
// read the user's row.
func (tw *twin) establish(c *client) {
	tw.t.Helper()
	ping := form("status", "active", "ping_only", "true")
	tw.post(c, ping)
	tw.Clock.Advance(5 * time.Second)
	if _, n := tw.post(c, ping); n != 0 {
		tw.t.Fatal("the second ping of an established session was forwarded")
	}
}

// abortMidBody is an upstream whose answer is cut off after the headers and
// a few bytes, the way reverse_proxy ends it: panic(http.ErrAbortHandler).
var abortMidBody = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(`{"result":"succ`))
	panic(http.ErrAbortHandler)
})

// TestAbortedAnswerReleasesTheSession (defect 1): an answer cut off
// mid-body leaves nothing reserved; the session's next ping neither waits
// nor is refused, and the abort reaches the client as with plain
// reverse_proxy.
func TestAbortedAnswerReleasesTheSession(t *testing.T) {
	kinds := map[string][]string{
		"ping":   {"status", "active", "ping_only", "true"},
		"modern": {"status", "active", "last_update_id", "-1"},
		"slim":   {"status", "active", "slim_presence", "true"},
		"legacy": {"status", "active"},
	}
	for name, kv := range kinds {
		t.Run(name, func(t *testing.T) {
			tw := newTwin(t, Handler{})
			u := tw.addUser(name+"@zulip.example", zuliptest.RoleMember)
			tw.Clock.Advance(time.Hour)
			c := tw.apiClient(name, u)
			// The session is stored (accepted once), so that what the
			// abort leaves reserved would stay.
			tw.post(c, form("status", "active", "ping_only", "true"))
			tw.Clock.Advance(time.Minute)
			if _, _, p := tw.serveCounting(c.request(true, form(kv...)), abortMidBody); p != http.ErrAbortHandler {
				t.Fatalf("the aborted answer ended with %v, want panic(http.ErrAbortHandler) as plain reverse_proxy", p)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var waited atomic.Bool
			watch := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				waited.Store(r.Context().Err() != nil)
				tw.Proxied.ServeHTTP(w, r)
			})
			r := c.request(true, form("status", "active", "ping_only", "true")).WithContext(ctx)
			a, _, _ := tw.serveCounting(r, watch)
			if waited.Load() || ctx.Err() != nil {
				t.Fatal("the next ping waited for the aborted request")
			}
			if a.status != http.StatusOK {
				t.Fatalf("the next ping: status %d", a.status)
			}
			// A full poll of the session takes its conversion lock.
			polled := make(chan struct{})
			go func() {
				defer close(polled)
				tw.serveCounting(c.request(true, form("status", "active", "slim_presence", "true")), nil)
			}()
			select {
			case <-polled:
			case <-time.After(5 * time.Second):
				t.Fatal("the next full poll waited for the aborted request's conversion")
			}
			if st := tw.h.store.Pending(); st != 0 {
				t.Fatalf("%d sessions still held after every request ended", st)
			}
		})
	}
}

// TestSnapshotIsChargedAtOnce (defect 2a): the rows a converted poll
// brings count against cache_size as soon as they are held.
func TestSnapshotIsChargedAtOnce(t *testing.T) {
	tw := newTwin(t, Handler{})
	tw.Both(func(r *zuliptest.Realm) {
		for i := range 2000 {
			u := r.AddUser(fmt.Sprintf("user%d@zulip.example", i), "x", zuliptest.RoleMember)
			r.SetPresenceRow(u.ID, r.Now(), r.Now())
		}
	})
	u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	before := tw.h.store.Used()
	tw.post(tw.apiClient("flutter", u), form("status", "active", "slim_presence", "true"))
	if grown := tw.h.store.Used() - before; grown < 2000*24 {
		t.Fatalf("the store grew by %d bytes for a 2000-row snapshot", grown)
	}
}

// TestSpellingsOfOneKeyShareASession (defect 2b): Zulip accepts the email
// of Basic credentials in any case and the scheme in any case with any
// spacing; every such spelling is one session, not a new one each.
func TestSpellingsOfOneKeyShareASession(t *testing.T) {
	tw := newTwin(t, Handler{})
	u, c := tw.established("Hamlet@zulip.example")
	key := strings.TrimPrefix(c.authP, "Basic ")
	raw, _ := base64.StdEncoding.DecodeString(key)
	_, apiKey, _ := strings.Cut(string(raw), ":")
	used := tw.h.store.Used()
	for i, spelling := range []string{"HAMLET@ZULIP.EXAMPLE", "hamlet@Zulip.Example", "hAmLeT@zulip.example"} {
		for j, scheme := range []string{"Basic ", "BASIC ", "basic   ", "bAsIc\t"} {
			v := *c
			v.authP = scheme + base64.StdEncoding.EncodeToString([]byte(spelling+":"+apiKey))
			v.authD = strings.Replace(v.authP, apiKey, strings.TrimPrefix(string(mustDecode(c.authD)), u.email+":"), 1)
			if _, n := tw.post(&v, form("status", "active", "ping_only", "true")); n != 0 {
				t.Fatalf("spelling %d/%d was not answered from the session's trust", i, j)
			}
		}
	}
	if grown := tw.h.store.Used() - used; grown != 0 {
		t.Fatalf("spellings of one key grew the store by %d bytes", grown)
	}
}

func mustDecode(basic string) []byte {
	b, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(basic, "Basic "))
	return b
}

// TestRefusedCredentialsCostNothing (defect 3): a flood of credentials the
// server never accepts (made-up emails, wrong keys, bad cookies) leaves
// nothing in the store, and the warm sessions of real users stay warm.
func TestRefusedCredentialsCostNothing(t *testing.T) {
	tw := newTwin(t, Handler{CacheSize: 1 << 20})
	var warm []*client
	for i := range 20 {
		u := tw.addUser(fmt.Sprintf("user%d@zulip.example", i), zuliptest.RoleMember)
		warm = append(warm, tw.apiClient(u.email, u))
	}
	tw.Clock.Advance(time.Hour)
	for _, c := range warm {
		tw.post(c, form("status", "active", "ping_only", "true"))
	}
	used := tw.h.store.Used()
	for i := range 3000 {
		bogus := &client{name: "bogus", json: i%2 == 1}
		bogus.authP = "Basic " + base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "nobody%d@zulip.example:%032d", i, i))
		if bogus.json {
			bogus.authP, bogus.csrfP = fmt.Sprintf("session%d", i), "csrf"
		}
		tw.serveProxied(bogus.request(true, form("status", "active", "slim_presence", "true")))
	}
	if got := tw.h.store.Used(); got != used || tw.h.store.Pending() != 0 {
		t.Fatalf("refused credentials left %d bytes and %d sessions", got-used, tw.h.store.Pending())
	}
	tw.Clock.Advance(5 * time.Second)
	for i, c := range warm {
		// The user's id and row are read, then the ping is answered
		// locally, as it would have been without the flood.
		if _, n, _ := tw.serveCounting(c.request(true, form("status", "active", "ping_only", "true")), nil); n != 2 {
			t.Fatalf("warm user %d cost %d upstream requests after the flood, want 2 (GET users/me and the row)", i, n)
		}
	}
}

// TestBadCookieCostsOneRequest (defect 4): a /json request with a cookie
// the server refuses reaches it once, as through plain reverse_proxy; the
// handler does not ask whose session it is first.
func TestBadCookieCostsOneRequest(t *testing.T) {
	tw := newTwin(t, Handler{})
	for i := range 50 {
		bad := &client{name: "bad", json: true, authP: fmt.Sprintf("nosuchsession%d", i), csrfP: "csrf"}
		for _, f := range [][]string{{"status", "active", "ping_only", "true"}, {"status", "active", "slim_presence", "true"}} {
			if _, n, _ := tw.serveCounting(bad.request(true, form(f...)), nil); n != 1 {
				t.Fatalf("a refused cookie cost %d upstream requests, want 1", n)
			}
		}
	}
}

// htmlOK is a misbehaving upstream: 200 with an HTML page.
var htmlOK = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("<html><body>Maintenance</body></html>\n"))
})

// TestOnlyZulipSuccessIsTrusted (defect 5): a 200 that is not Zulip's JSON
// success proves nothing: a wrong key that got one is still forwarded
// afterwards (and refused), the real user's state is untouched, and a
// converted poll during the episode costs one upstream request.
func TestOnlyZulipSuccessIsTrusted(t *testing.T) {
	tw := newTwin(t, Handler{})
	u, _ := tw.established("hamlet@zulip.example")
	wrong := &client{name: "wrong key", user: u}
	wrong.authP = "Basic " + base64.StdEncoding.EncodeToString([]byte(u.email+":"+strings.Repeat("x", 32)))
	wrong.authD = wrong.authP
	ping := form("status", "active", "ping_only", "true")
	if a, n, _ := tw.serveCounting(wrong.request(true, ping), htmlOK); n != 1 || a.status != 200 {
		t.Fatalf("during the episode: %d upstream requests, status %d", n, a.status)
	}
	if _, n, _ := tw.serveCounting(wrong.request(true, form("status", "active", "slim_presence", "true")), htmlOK); n != 1 {
		t.Fatalf("a converted poll during the episode cost %d upstream requests", n)
	}
	for range 3 {
		tw.Clock.Advance(10 * time.Second)
		if d, n := tw.post(wrong, ping); n != 1 || d.status != http.StatusUnauthorized {
			t.Fatalf("after the episode the wrong key got %d with %d upstream requests", d.status, n)
		}
	}
}

// TestBurstOfANewUser (defect 6): concurrent pings of a brand-new user cost
// one write and one read of the row, not one of each per ping.
func TestBurstOfANewUser(t *testing.T) {
	tw := newTwin(t, Handler{})
	u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	tw.Clock.Advance(time.Hour)
	for _, c := range []*client{tw.apiClient("phone", u), tw.browser("web", u)} {
		var total atomic.Int64
		var wg sync.WaitGroup
		for range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a, n, _ := tw.serveCounting(c.request(true, form("status", "active", "ping_only", "true")), nil)
				if a.status != http.StatusOK {
					t.Errorf("status %d", a.status)
				}
				total.Add(int64(n))
			}()
		}
		wg.Wait()
		// The write; GET /users/me (to name the user or learn its id);
		// GET /users/{id}/presence. Plain reverse_proxy: 200.
		if n := total.Load(); n > 3 {
			t.Fatalf("%s: 200 concurrent pings cost %d upstream requests, want at most 3", c.name, n)
		}
		tw.Clock.Advance(2 * time.Minute)
	}
}

// TestPingDoesNotWaitForASlowPoll (defect 7): a ping that is a no-op
// whatever a slow poll of its session brings is answered at once.
func TestPingDoesNotWaitForASlowPoll(t *testing.T) {
	tw := newTwin(t, Handler{})
	_, c := tw.established("hamlet@zulip.example")
	release := make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		tw.Proxied.ServeHTTP(w, r)
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tw.serveCounting(c.request(true, form("status", "active", "last_update_id", "-1")), slow)
	}()
	defer func() { close(release); <-done }()
	time.Sleep(10 * time.Millisecond) // let the poll reserve its write
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r := c.request(true, form("status", "active", "ping_only", "true")).WithContext(ctx)
	if _, n, _ := tw.serveCounting(r, slow); n != 0 || ctx.Err() != nil {
		t.Fatalf("the ping waited for the slow poll (%d upstream requests)", n)
	}
}

// TestStrangersCannotMoveAVictimsState (defect 9): requests with a
// victim's email, a wrong key and a body the server fails on cost the
// victim nothing: its next ping is still answered locally.
func TestStrangersCannotMoveAVictimsState(t *testing.T) {
	tw := newTwin(t, Handler{})
	u, c := tw.established("hamlet@zulip.example")
	stranger := "Basic " + base64.StdEncoding.EncodeToString([]byte(u.email+":"+strings.Repeat("y", 32)))
	for range 5 {
		r := httptest.NewRequest(http.MethodPost, "http://zulip.example"+apiPresencePath, strings.NewReader("--x\r\nbroken"))
		r.Header.Set("Content-Type", "multipart/form-data; boundary=x")
		r.Header.Set("Authorization", stranger)
		tw.serveCounting(r, nil)
	}
	tw.Clock.Advance(5 * time.Second)
	if _, n, _ := tw.serveCounting(c.request(true, form("status", "active", "ping_only", "true")), nil); n != 0 {
		t.Fatalf("the victim's ping cost %d upstream requests after a stranger's", n)
	}
}

// TestClockSkewLosesNoWrite (defect 10): with Caddy's clock a minute
// behind or ahead of Zulip's, three tabs and a phone pinging out of phase
// leave the rows a direct run writes.
func TestClockSkewLosesNoWrite(t *testing.T) {
	for _, skew := range []time.Duration{-60 * time.Second, -7 * time.Second, 3 * time.Second, 60 * time.Second} {
		t.Run(skew.String(), func(t *testing.T) {
			tw := newTwin(t, Handler{})
			tw.h.SetClock(func() time.Time { return tw.Clock.Now().Add(skew) })
			u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
			tw.Clock.Advance(time.Hour)
			b, phone := tw.browser("web", u), tw.apiClient("phone", u)
			sched, local := schedule{}, 0
			for tab := range 4 {
				c := b
				if tab == 3 {
					c = phone
				}
				for sec := tab * 17; sec < 1800; sec += 60 {
					sched.at(sec, func() {
						status := []string{"active", "idle"}[sec/300%2]
						if _, n := tw.post(c, form("status", status, "ping_only", "true")); n == 0 {
							local++
						}
						tw.sameRows(u)
					})
				}
			}
			sched.run(tw, 1800)
			if d, p := tw.Direct.DefaultRealm().Stats(), tw.Proxied.DefaultRealm().Stats(); d.RowsWritten != p.RowsWritten {
				t.Fatalf("rows written %d through the module, %d direct", p.RowsWritten, d.RowsWritten)
			}
			if local < 40 {
				t.Fatalf("only %d of 120 pings answered locally", local)
			}
		})
	}
}

// TestLocalPingHasZulipsHeaders (defect 14): a ping answered locally
// carries the headers a client or a cache relies on, as Zulip sends them.
func TestLocalPingHasZulipsHeaders(t *testing.T) {
	tw := newTwin(t, Handler{})
	_, c := tw.established("hamlet@zulip.example")
	tw.Clock.Advance(5 * time.Second)
	ping := form("status", "active", "ping_only", "true")
	d := tw.serveDirect(c.request(false, ping))
	p, n := tw.serveProxied(c.request(true, ping))
	if n != 0 {
		t.Fatal("the ping was forwarded")
	}
	for _, k := range []string{"Content-Type", "Cache-Control", "Expires", "Date"} {
		if got, want := p.header.Get(k), d.header.Get(k); got != want {
			t.Errorf("%s: %q, Zulip sends %q", k, got, want)
		}
	}
}
